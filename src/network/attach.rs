//! Connecting a container: its address from the network's pool, its own network namespace
//! with a veth pair to the network's bridge (made again if a reboot took it), and undoing all
//! of it when the container is removed.

use std::net::{IpAddr, Ipv4Addr};

use super::kernel::{Bridge, PeerConfig};
use super::manager::*;
use crate::error::{Error, Result};
use crate::metadata::{NETWORKS, SYSTEM};

impl Manager {
    /// Creates the bridge of `n` if it is missing, with its gateway address, up.
    pub(super) fn ensure_bridge(&self, n: &NetworkRecord) -> Result<()> {
        // a fixed MAC: a bridge otherwise takes its ports' lowest and changes with them
        let o = n.gateway.octets();
        let mut addrs = vec![(IpAddr::V4(n.gateway), n.subnet.prefix)];
        if let Some(s6) = n.subnet6 {
            addrs.push((IpAddr::V6(s6.gateway()), s6.prefix));
        }
        let b = Bridge {
            name: n.bridge.clone(),
            mtu: self.s.mtu,
            mac: [0x02, 0x6e, o[0], o[1], o[2], o[3]],
            addrs,
        };
        self.kernel
            .ensure_bridge(&self.s.netns, &b)
            .map_err(io_err(&format!("setting up bridge {}", n.bridge)))
    }

    pub(super) fn view(&self, a: &AttachmentRecord) -> Result<Attachment> {
        let all = self.attachments()?;
        Ok(Attachment {
            netns_path: a.netns_path.clone(),
            ip: a.ip,
            gateway: a.gateway,
            mode: a.mode.clone(),
            network: a.network.clone(),
            resolv_conf: self.resolv(&a.mode),
            hosts: self.hosts_for(a, &all),
        })
    }

    /// Gives container `ns/id` its network: a namespace (its own, or nookd's for host), and on
    /// a bridge network an address and a veth pair. Idempotent. Blocking.
    pub fn attach(&self, ns: &str, id: &str, req: &AttachRequest) -> Result<Attachment> {
        let _g = self.lock();
        if let Some(a) = self.attachment(ns, id)? {
            if a.mode == Mode::Host || self.kernel.is_netns(&a.netns_path) {
                return self.view(&a);
            }
            // left over from a crash or a restarted pause process: start again
            self.detach_locked(ns, id, true)?;
        }
        let network = match req.network.as_str() {
            "" | "default" | "bridge" => DEFAULT_NETWORK,
            n => n,
        };
        let own_ns = self.s.netns_dir.join(ns).join(id);
        let hostname = if req.hostname.is_empty() {
            id.chars().take(12).collect()
        } else {
            req.hostname.clone()
        };
        let mut rec = AttachmentRecord {
            namespace: ns.into(),
            container_id: id.into(),
            name: req.container_name.clone(),
            hostname,
            mode: Mode::Bridge,
            network: network.into(),
            netns_path: own_ns.clone(),
            ip: None,
            prefix: 0,
            gateway: None,
            ip6: None,
            prefix6: 0,
            gateway6: None,
            veth: None,
            hosts_path: req.hosts_path.clone(),
            ports: req.ports.clone(),
            direct: req.direct,
            published: Vec::new(),
            aliases: req.aliases.clone(),
            extra: Vec::new(),
        };
        super::endpoints::validate_aliases(&req.aliases)?;
        if !req.aliases.is_empty() && ["host", "none"].contains(&network) {
            return Err(Error::InvalidArgument(format!(
                "network aliases need a bridge network, not --network {network}"
            )));
        }
        match network {
            "host" => {
                rec.mode = Mode::Host;
                rec.netns_path = self.s.netns.clone();
                self.store.write(|tx| tx.put(NETWORKS, ns, id, &rec))?;
                return self.view(&rec);
            }
            "none" => {
                rec.mode = Mode::None;
                if !req.ports.is_empty() {
                    return Err(Error::InvalidArgument(
                        "--network none cannot publish ports".into(),
                    ));
                }
                self.store.write(|tx| tx.put(NETWORKS, ns, id, &rec))?;
                if let Err(e) = self.kernel.create_netns(&own_ns) {
                    let _ = self.store.write(|tx| tx.delete(NETWORKS, ns, id));
                    return Err(Error::io("creating the container's network namespace", e));
                }
                return self.view(&rec);
            }
            _ => {}
        }
        // bridge: allocate and record first (reconcile cleans up after a crash from here on)
        let h = holder(ns, id);
        let veth = veth_name(ns, id);
        let net = self.store.write(|tx| {
            let mut net: NetworkRecord =
                tx.get_raw(SYSTEM, &net_key(network))?.ok_or_else(|| {
                    Error::NotFound(format!(
                        "network {network:?} not found: create it with `nook network create {network}` (or use host or none)"
                    ))
                })?;
            let ip = net.pool.allocate(&h)?;
            tx.put_raw(SYSTEM, &net_key(network), &net)?;
            rec.ip = Some(ip);
            rec.prefix = net.subnet.prefix;
            rec.gateway = Some(net.gateway);
            if let Some(s6) = net.subnet6 {
                rec.ip6 = Some(s6.matching(&net.subnet, ip));
                rec.prefix6 = s6.prefix;
                rec.gateway6 = Some(s6.gateway());
            }
            rec.veth = Some(veth.clone());
            tx.put(NETWORKS, ns, id, &rec)?;
            Ok(net)
        })?;
        if let Err(e) = self.plumb(&net, &rec) {
            let _ = self.detach_locked(ns, id, true);
            return Err(e);
        }
        self.events.publish(
            ns,
            "/networks/connect",
            &[
                ("network", network.to_string()),
                ("container", id.to_string()),
                ("name", rec.name.clone()),
                ("ip", rec.ip.map(|i| i.to_string()).unwrap_or_default()),
            ],
        );
        self.refresh_hosts(network);
        self.view(&rec)
    }

    pub(super) fn plumb(&self, net: &NetworkRecord, rec: &AttachmentRecord) -> Result<()> {
        self.ensure_bridge(net)?;
        self.kernel
            .create_netns(&rec.netns_path)
            .map_err(io_err("creating the container's network namespace"))?;
        self.kernel
            .add_veth(
                &self.s.netns,
                rec.veth.as_deref().unwrap_or_default(),
                &net.bridge,
                &rec.netns_path,
                CONTAINER_IF,
                self.s.mtu,
            )
            .map_err(io_err("creating the container's veth pair"))?;
        self.kernel
            .configure_peer(&rec.netns_path, &peer_config(rec))
            .map_err(io_err("configuring the container's eth0"))
    }

    /// The attachment of a container as the runtime needs it (namespace, /etc files).
    pub fn view_of(&self, ns: &str, id: &str) -> Result<Option<Attachment>> {
        match self.attachment(ns, id)? {
            Some(a) => self.view(&a).map(Some),
            None => Ok(None),
        }
    }

    /// Makes the container's network whole again if its namespace is gone (a reboot emptied
    /// the state directory, or the pause process was replaced): same path, same address.
    /// Blocking.
    pub fn ensure(&self, ns: &str, id: &str) -> Result<()> {
        let _g = self.lock();
        let Some(a) = self.attachment(ns, id)? else {
            return Ok(());
        };
        match a.mode {
            Mode::Host => Ok(()),
            Mode::None => {
                if self.kernel.is_netns(&a.netns_path) {
                    return Ok(());
                }
                let _ = self.kernel.remove_netns(&a.netns_path);
                self.kernel
                    .create_netns(&a.netns_path)
                    .map_err(io_err("creating the container's network namespace"))?;
                self.plumb_extras(&a)
            }
            Mode::Bridge => {
                let veth_ok = a
                    .veth
                    .as_deref()
                    .is_some_and(|v| self.kernel.link_exists(&self.s.netns, v));
                // eth0's routes are plumbing's last step: a crash before them left a
                // namespace and a veth without a working eth0
                if self.kernel.is_netns(&a.netns_path)
                    && veth_ok
                    && self.kernel.peer_configured(&a.netns_path, &peer_config(&a))
                {
                    return Ok(());
                }
                let net: NetworkRecord = self
                    .store
                    .get_raw(SYSTEM, &net_key(&a.network))?
                    .ok_or_else(|| {
                        Error::NotFound(format!(
                            "network {:?} of this container was removed: recreate it",
                            a.network
                        ))
                    })?;
                let _ = self.kernel.remove_netns(&a.netns_path);
                self.plumb(&net, &a)?;
                self.plumb_extras(&a)
            }
        }
    }

    /// Undoes [`Manager::attach`]: closes published ports, deletes the veth pair and the
    /// namespace, releases the address, drops the record. A container never attached is fine.
    pub fn detach(&self, ns: &str, id: &str) -> Result<()> {
        let _g = self.lock();
        self.detach_locked(ns, id, false)
    }

    /// `wait_veth`: delete the veth pair before returning (its name is about to be used
    /// again). Otherwise it goes on a thread of its own: deleting a link waits for the
    /// kernel's RCU grace periods (10-17 ms here, most of a `nook rm`), and nothing needs it
    /// gone at once (the name is the container's alone; a crash leaves it to `reconcile`).
    pub(super) fn detach_locked(&self, ns: &str, id: &str, wait_veth: bool) -> Result<()> {
        self.unpublish(ns, id);
        let Some(a) = self.attachment(ns, id)? else {
            return Ok(());
        };
        let veths: Vec<String> = a
            .veth
            .iter()
            .cloned()
            .chain(a.extra.iter().map(|e| e.veth.clone()))
            .collect();
        if !veths.is_empty() {
            let (netns, what) = (self.s.netns.clone(), format!("{ns}/{id}"));
            let kernel = self.kernel.clone();
            let delete = move || {
                for v in veths {
                    match kernel.delete_link(&netns, &v) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            tracing::warn!("deleting veth of {what}: {e}")
                        }
                        _ => {}
                    }
                }
            };
            if wait_veth {
                delete();
            } else if let Err(e) = std::thread::Builder::new()
                .name("nook-veth-rm".into())
                .spawn(delete)
            {
                tracing::warn!("deleting veth of {ns}/{id}: {e}");
            }
        }
        if a.mode != Mode::Host {
            self.kernel
                .remove_netns(&a.netns_path)
                .map_err(io_err("removing the container's network namespace"))?;
        }
        let h = holder(ns, id);
        let nets: Vec<String> = a.endpoints().into_iter().map(|(n, _, _)| n).collect();
        self.store.write(|tx| {
            for n in &nets {
                if let Some(mut net) = tx.get_raw::<NetworkRecord>(SYSTEM, &net_key(n))? {
                    if net.pool.release(&h) {
                        tx.put_raw(SYSTEM, &net_key(n), &net)?;
                    }
                }
            }
            tx.delete(NETWORKS, ns, id)?;
            Ok(())
        })?;
        for n in nets {
            self.events.publish(
                ns,
                "/networks/disconnect",
                &[
                    ("network", n.clone()),
                    ("container", id.to_string()),
                    ("name", a.name.clone()),
                ],
            );
            self.refresh_hosts(&n);
        }
        Ok(())
    }
}

/// How the container's eth0 is set up: its addresses and default routes.
fn peer_config(rec: &AttachmentRecord) -> PeerConfig {
    let mut c = PeerConfig {
        ifname: CONTAINER_IF.into(),
        addrs: vec![(
            IpAddr::V4(rec.ip.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            rec.prefix,
        )],
        gateways: vec![IpAddr::V4(rec.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED))],
    };
    if let Some((ip6, gw6)) = rec.ip6.zip(rec.gateway6) {
        c.addrs.push((IpAddr::V6(ip6), rec.prefix6));
        c.gateways.push(IpAddr::V6(gw6));
    }
    c
}
