//! A container on several networks, and by several names: `nook network connect / disconnect`
//! of a created, running or stopped container (a veth pair from that network's bridge into the
//! container's namespace, made or removed live), and network aliases (`--network-alias`), which
//! peers on the same network resolve through the /etc/hosts files nook keeps.
//!
//! The first network stays in the [`AttachmentRecord`]'s own fields (eth0, the default route,
//! published ports); each further one is an [`Endpoint`] (eth1, eth2, …, no default route).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::kernel::PeerConfig;
use super::manager::*;
use crate::error::{Error, Result};
use crate::metadata::{NETWORKS, SYSTEM};

impl AttachmentRecord {
    /// Every bridge network the container is on, its first one first: (network, address,
    /// aliases on it).
    pub fn endpoints(&self) -> Vec<(String, Ipv4Addr, Vec<String>)> {
        let mut out = Vec::new();
        if self.mode == Mode::Bridge {
            if let Some(ip) = self.ip {
                out.push((self.network.clone(), ip, self.aliases.clone()));
            }
        }
        out.extend(
            self.extra
                .iter()
                .map(|e| (e.network.clone(), e.ip, e.aliases.clone())),
        );
        out
    }
}

/// Checks network aliases: host names (letters, digits, '.', '-', '_'), at most 253 bytes.
pub fn validate_aliases(aliases: &[String]) -> Result<()> {
    for a in aliases {
        if !crate::metadata::is_docker_name(a, 253) {
            return Err(Error::InvalidArgument(format!(
                "invalid network alias {a:?}: use letters, digits, '.', '-', '_' (starting with a letter or digit)"
            )));
        }
    }
    Ok(())
}

/// The network a request names: "", "default" and "bridge" are the default network.
fn network_name(n: &str) -> &str {
    match n {
        "" | "default" | "bridge" => DEFAULT_NETWORK,
        n => n,
    }
}

impl Manager {
    /// Connects container `ns/id` to `network` as well, reachable there by its name and
    /// `aliases`. A container that was disconnected from every network gets it as its first
    /// (eth0 and the default route). Blocking.
    pub fn connect(&self, ns: &str, id: &str, network: &str, aliases: &[String]) -> Result<()> {
        validate_aliases(aliases)?;
        let network = network_name(network);
        if ["host", "none"].contains(&network) {
            return Err(Error::InvalidArgument(format!(
                "a container cannot be connected to the {network} network after it was created: create it with --network {network}"
            )));
        }
        let _g = self.lock();
        let mut a = self
            .attachment(ns, id)?
            .ok_or_else(|| Error::NotFound(format!("container {id} has no network record")))?;
        match a.mode {
            Mode::Host => {
                return Err(Error::Precondition(format!(
                    "container {} uses the host network and cannot be connected to {network:?}",
                    a.name
                )))
            }
            Mode::None if !a.network.is_empty() => {
                return Err(Error::Precondition(format!(
                    "container {} was created with --network none and cannot be connected to {network:?}",
                    a.name
                )))
            }
            _ => {}
        }
        if a.endpoints().iter().any(|(n, _, _)| n == network) {
            return Err(Error::AlreadyExists(format!(
                "container {} is already connected to network {network:?}",
                a.name
            )));
        }
        let first = a.mode == Mode::None;
        let used: Vec<&str> = a.extra.iter().map(|e| e.ifname.as_str()).collect();
        let ifname = if first {
            CONTAINER_IF.to_string()
        } else {
            (1..)
                .map(|i| format!("eth{i}"))
                .find(|n| !used.contains(&n.as_str()))
                .unwrap_or_default()
        };
        let veth = if first {
            veth_name(ns, id)
        } else {
            veth_name(ns, &format!("{id}/{network}"))
        };
        let h = holder(ns, id);
        let net = self.store.write(|tx| {
            let mut net: NetworkRecord =
                tx.get_raw(SYSTEM, &net_key(network))?.ok_or_else(|| {
                    Error::NotFound(format!(
                        "network {network:?} not found (see `nook network ls`)"
                    ))
                })?;
            let ip = net.pool.allocate(&h)?;
            tx.put_raw(SYSTEM, &net_key(network), &net)?;
            if first {
                a.mode = Mode::Bridge;
                a.network = network.into();
                a.ip = Some(ip);
                a.prefix = net.subnet.prefix;
                a.gateway = Some(net.gateway);
                a.veth = Some(veth.clone());
                a.aliases = aliases.to_vec();
            } else {
                a.extra.push(Endpoint {
                    network: network.into(),
                    ip,
                    prefix: net.subnet.prefix,
                    gateway: net.gateway,
                    veth: veth.clone(),
                    ifname: ifname.clone(),
                    aliases: aliases.to_vec(),
                });
            }
            tx.put(NETWORKS, ns, id, &a)?;
            Ok(net)
        })?;
        let ep = a
            .extra
            .last()
            .cloned()
            .filter(|_| !first)
            .unwrap_or(Endpoint {
                network: network.into(),
                ip: a.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                prefix: net.subnet.prefix,
                gateway: net.gateway,
                veth,
                ifname,
                aliases: aliases.to_vec(),
            });
        let plumbed = self
            .ensure_bridge(&net)
            .and_then(|()| self.plumb_endpoint(&a.netns_path, &net.bridge, &ep, first));
        if let Err(e) = plumbed {
            let _ = self.unplumb(&ep.veth);
            let _ = self.store.write(|tx| {
                if let Some(mut n) = tx.get_raw::<NetworkRecord>(SYSTEM, &net_key(network))? {
                    n.pool.release(&h);
                    tx.put_raw(SYSTEM, &net_key(network), &n)?;
                }
                if let Some(mut r) = tx.get::<AttachmentRecord>(NETWORKS, ns, id)? {
                    r.extra.retain(|e| e.network != network);
                    if first {
                        clear_first(&mut r);
                    }
                    tx.put(NETWORKS, ns, id, &r)?;
                }
                Ok(())
            });
            return Err(e);
        }
        self.events.publish(
            ns,
            "/networks/connect",
            &[
                ("network", network.to_string()),
                ("container", id.to_string()),
                ("name", a.name.clone()),
                ("ip", ep.ip.to_string()),
            ],
        );
        self.refresh_hosts(network);
        Ok(())
    }

    /// Disconnects container `ns/id` from `network`. Its first network may go too (unless its
    /// ports are published through it right now): the next one takes its place (and the
    /// default route), or the container is left with only `lo`. docker-compose 1.29 does
    /// that to every container before starting it, to connect it again with its aliases.
    /// Blocking.
    pub fn disconnect(&self, ns: &str, id: &str, network: &str) -> Result<()> {
        let network = network_name(network);
        let _g = self.lock();
        let mut a = self
            .attachment(ns, id)?
            .ok_or_else(|| Error::NotFound(format!("container {id} has no network record")))?;
        let veth = if let Some(i) = a.extra.iter().position(|e| e.network == network) {
            a.extra.remove(i).veth
        } else if a.mode == Mode::Bridge && a.network == network {
            if !a.published.is_empty() {
                return Err(Error::Precondition(format!(
                    "container {} publishes ports through network {network:?} while it runs: stop it first",
                    a.name
                )));
            }
            let old = a.veth.clone().unwrap_or_default();
            if a.extra.is_empty() {
                clear_first(&mut a);
            } else {
                let next = a.extra.remove(0);
                a.network = next.network.clone();
                a.ip = Some(next.ip);
                a.prefix = next.prefix;
                a.gateway = Some(next.gateway);
                (a.ip6, a.prefix6, a.gateway6) = (None, 0, None);
                a.veth = Some(next.veth.clone());
                a.aliases = next.aliases.clone();
                // its address is there already: configuring it again adds the default route
                let c = PeerConfig {
                    ifname: next.ifname.clone(),
                    addrs: Vec::new(),
                    gateways: vec![IpAddr::V4(next.gateway)],
                };
                if let Err(e) = self.kernel.configure_peer(&a.netns_path, &c) {
                    tracing::warn!("moving the default route of {}: {e}", a.name);
                }
            }
            old
        } else {
            return Err(Error::NotFound(format!(
                "container {} is not connected to network {network:?}",
                a.name
            )));
        };
        self.unplumb(&veth)?;
        let h = holder(ns, id);
        self.store.write(|tx| {
            if let Some(mut n) = tx.get_raw::<NetworkRecord>(SYSTEM, &net_key(network))? {
                if n.pool.release(&h) {
                    tx.put_raw(SYSTEM, &net_key(network), &n)?;
                }
            }
            tx.put(NETWORKS, ns, id, &a)
        })?;
        self.events.publish(
            ns,
            "/networks/disconnect",
            &[
                ("network", network.to_string()),
                ("container", id.to_string()),
                ("name", a.name.clone()),
            ],
        );
        self.refresh_hosts(network);
        // its own file: the peers of the network it left are gone from it
        if let Some(p) = &a.hosts_path {
            if p.parent().is_some_and(|d| d.exists()) {
                if let Ok(all) = self.attachments() {
                    let _ = std::fs::write(p, self.hosts_for(&a, &all));
                }
            }
        }
        Ok(())
    }

    /// A veth pair from `bridge` into the namespace at `netns`, named `ep.ifname` there, with
    /// the endpoint's address (and the default route for a container's first network).
    pub(super) fn plumb_endpoint(
        &self,
        netns: &Path,
        bridge: &str,
        ep: &Endpoint,
        default_route: bool,
    ) -> Result<()> {
        self.kernel
            .add_veth(
                &self.s.netns,
                &ep.veth,
                bridge,
                netns,
                &ep.ifname,
                self.s.mtu,
            )
            .map_err(io_err("creating the container's veth pair"))?;
        let c = PeerConfig {
            ifname: ep.ifname.clone(),
            addrs: vec![(IpAddr::V4(ep.ip), ep.prefix)],
            gateways: if default_route {
                vec![IpAddr::V4(ep.gateway)]
            } else {
                Vec::new()
            },
        };
        self.kernel
            .configure_peer(netns, &c)
            .map_err(io_err(&format!(
                "configuring the container's {}",
                ep.ifname
            )))
    }

    /// Re-creates the further networks' veth pairs of `a` (after its namespace was made anew).
    pub(super) fn plumb_extras(&self, a: &AttachmentRecord) -> Result<()> {
        for ep in &a.extra {
            let net: NetworkRecord = self
                .store
                .get_raw(SYSTEM, &net_key(&ep.network))?
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "network {:?} of container {} was removed: recreate it",
                        ep.network, a.name
                    ))
                })?;
            self.ensure_bridge(&net)?;
            self.plumb_endpoint(&a.netns_path, &net.bridge, ep, false)?;
        }
        Ok(())
    }

    /// Deletes a host-side veth (its peer in the container goes with it); gone already is fine.
    fn unplumb(&self, veth: &str) -> Result<()> {
        if veth.is_empty() {
            return Ok(());
        }
        match self.kernel.delete_link(&self.s.netns, veth) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("deleting veth {veth}"), e))
            }
            _ => Ok(()),
        }
    }
}

/// A container left with no network: only `lo` in its namespace, ready to be connected again.
fn clear_first(a: &mut AttachmentRecord) {
    a.mode = Mode::None;
    a.network = String::new();
    a.ip = None;
    a.prefix = 0;
    a.gateway = None;
    (a.ip6, a.prefix6, a.gateway6) = (None, 0, None);
    a.veth = None;
    a.aliases.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_list_the_first_network_then_the_others() {
        let mut a = AttachmentRecord {
            namespace: "default".into(),
            container_id: "c1".into(),
            name: "web".into(),
            hostname: "c1".into(),
            mode: Mode::Bridge,
            network: "front".into(),
            netns_path: "/x".into(),
            ip: Some(Ipv4Addr::new(10, 89, 0, 2)),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 89, 0, 1)),
            ip6: None,
            prefix6: 0,
            gateway6: None,
            veth: Some("nk0".into()),
            hosts_path: None,
            ports: Vec::new(),
            published: Vec::new(),
            direct: false,
            aliases: vec!["www".into()],
            extra: vec![Endpoint {
                network: "back".into(),
                ip: Ipv4Addr::new(10, 89, 1, 2),
                prefix: 24,
                gateway: Ipv4Addr::new(10, 89, 1, 1),
                veth: "nk1".into(),
                ifname: "eth1".into(),
                aliases: vec!["api".into()],
            }],
        };
        let e = a.endpoints();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].0.as_str(), e[0].2.clone()),
            ("front", vec!["www".into()])
        );
        assert_eq!(
            (e[1].0.as_str(), e[1].1),
            ("back", Ipv4Addr::new(10, 89, 1, 2))
        );
        // disconnected from its first network with none left: only the others
        clear_first(&mut a);
        assert_eq!(a.endpoints().len(), 1);
        assert_eq!(a.mode, Mode::None);
        assert!(a.network.is_empty() && a.aliases.is_empty() && a.veth.is_none());
    }

    #[test]
    fn aliases_are_host_names() {
        assert!(validate_aliases(&["db".into(), "db.internal".into(), "a_b-1".into()]).is_ok());
        for bad in ["", "-x", "a b", "x/y"] {
            assert!(validate_aliases(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
