//! Container networks inside the containers' network namespace (the pause process's, linked to
//! the outside by slirp4netns or pasta as `tap0`): bridges, per-container namespaces and veth
//! pairs, persistent IPAM, /etc/hosts upkeep, published ports, and clean-up after a crash.
//!
//! Records (see [`crate::metadata`]):
//! * SYSTEM `network/<name>`: a [`NetworkRecord`] with its address pool — networks are
//!   daemon-wide, like the bridges in the one namespace they live in;
//! * NETWORKS `<ns>/<container-id>`: an [`AttachmentRecord`] per container.
//!
//! Every mutation first commits its record, then changes the kernel; [`Manager::reconcile`]
//! removes what a crash left between the two.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::forward::{self, SocketFactory};
use super::ipam::{self, Pool, Subnet, Subnet6};
use super::netlink::{self, Netlink};
use super::netns::{create_netns, is_netns, remove_netns, with_netns};
use super::ports::PortMapping;
use super::TAP;
use crate::error::{Error, Result};
use crate::events::Publisher;
use crate::metadata::{Store, NETWORKS, SYSTEM};

/// The name of the default network.
pub const DEFAULT_NETWORK: &str = "nook";
/// The interface name of the container's side of its veth pair.
pub const CONTAINER_IF: &str = "eth0";
/// The routing table and firewall mark of transparent port forwarding.
const TPROXY_TABLE: &str = "100";

/// A bridge network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    /// The IPv6 subnet, when IPv6 is on (`[network] ipv6_subnet`).
    #[serde(default)]
    pub subnet6: Option<Subnet6>,
    pub created_at: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub pool: Pool,
}

/// How a container is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Its own namespace on a bridge network.
    Bridge,
    /// nookd's containers' namespace itself (with tap0).
    Host,
    /// Its own namespace with only `lo`.
    None,
}

/// A container's network, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub namespace: String,
    pub container_id: String,
    pub name: String,
    pub hostname: String,
    pub mode: Mode,
    /// The bridge network's name (Bridge mode).
    pub network: String,
    pub netns_path: PathBuf,
    pub ip: Option<Ipv4Addr>,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 address (prefix: the network's) and gateway, when the network has IPv6.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default)]
    pub prefix6: u8,
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    /// Host side of the veth pair (Bridge mode).
    pub veth: Option<String>,
    /// The container's /etc/hosts file nook keeps current (written in place).
    pub hosts_path: Option<PathBuf>,
    /// Requested port mappings (host port 0 = any).
    pub ports: Vec<PortMapping>,
    /// Mappings bound right now (while the container runs).
    #[serde(default)]
    pub published: Vec<PortMapping>,
    /// The ports are served by the container's own sockets, held by its shim
    /// (`--port-driver direct`), not relayed by nookd.
    #[serde(default)]
    pub direct: bool,
}

/// What the runtime needs to set a container up: the namespace to join and the /etc files.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub netns_path: PathBuf,
    pub ip: Option<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
    pub mode: Mode,
    pub network: String,
    /// /etc/resolv.conf content.
    pub resolv_conf: String,
    /// /etc/hosts content.
    pub hosts: String,
}

/// What to attach.
#[derive(Debug, Clone, Default)]
pub struct AttachRequest {
    pub container_name: String,
    pub hostname: String,
    /// "" or "default" (the default network), "host", "none", or a network name.
    pub network: String,
    /// Where the runtime keeps the container's /etc/hosts (nook rewrites it as peers change).
    pub hosts_path: Option<PathBuf>,
    pub ports: Vec<PortMapping>,
    /// Serve the ports with the container's own sockets (`--port-driver direct`).
    pub direct: bool,
}

/// A network and who is on it.
#[derive(Debug, Clone)]
pub struct NetworkInfo {
    pub record: NetworkRecord,
    pub default: bool,
    /// (namespace, container id, name, ip)
    pub members: Vec<(String, String, String, Ipv4Addr)>,
}

/// What [`Manager::reconcile`] cleaned.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reconciled {
    pub attachments: usize,
    pub veths: usize,
    pub netns: usize,
    pub addresses: usize,
}

/// Static settings of the manager.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The containers' network namespace (`/proc/<pause>/ns/net`).
    pub netns: PathBuf,
    /// Where per-container namespaces are bind-mounted (`<state>/netns`).
    pub netns_dir: PathBuf,
    /// The link driver in use (pasta, slirp4netns, none).
    pub driver: String,
    pub mtu: u32,
    pub bridge: String,
    pub subnet: String,
    /// IPv6 subnet of the default network ("" = no IPv6).
    pub subnet6: String,
    /// The host's resolv.conf text.
    pub host_resolv: String,
}

/// The network subsystem.
pub struct Manager {
    store: Arc<Store>,
    s: Settings,
    ops: Mutex<()>,
    factory: Mutex<Option<Arc<SocketFactory>>>,
    /// Why the last [`Manager::init`] failed (None: it has not failed).
    init_error: Mutex<Option<String>>,
    listeners: Mutex<HashMap<String, Vec<tokio::task::JoinHandle<()>>>>,
    /// Host sockets bound for direct ports, until the container's shim takes them.
    direct: Mutex<HashMap<String, Vec<(PortMapping, OwnedFd)>>>,
    handle: Option<tokio::runtime::Handle>,
    /// Where `/networks/*` events go.
    events: Publisher,
}

fn holder(ns: &str, id: &str) -> String {
    format!("{ns}/{id}")
}

fn net_key(name: &str) -> String {
    format!("network/{name}")
}

/// The host-side veth name of a container: `nk` + 12 hex digits of a hash of ns/id.
pub fn veth_name(ns: &str, id: &str) -> String {
    let h = sha2::Sha256::digest(holder(ns, id).as_bytes());
    format!("nk{}", &hex::encode(h)[..12])
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(what.to_string(), e)
}

/// Validates a network name: `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}`, not host/none/default.
pub fn validate_network_name(name: &str) -> Result<()> {
    if !crate::metadata::is_docker_name(name, 64) {
        return Err(Error::InvalidArgument(format!(
            "invalid network name {name:?}: use letters, digits, '_', '.', '-' (up to 64, starting with a letter or digit)"
        )));
    }
    if ["host", "none", "default", "bridge"].contains(&name) {
        return Err(Error::InvalidArgument(format!(
            "{name:?} is a reserved network name"
        )));
    }
    Ok(())
}

impl Manager {
    /// A manager; call [`Manager::init`] before use. Must be created inside a tokio runtime
    /// for ports to be published.
    pub fn new(store: Arc<Store>, s: Settings, events: Publisher) -> Manager {
        Manager {
            store,
            s,
            ops: Mutex::new(()),
            factory: Mutex::new(None),
            init_error: Mutex::new(None),
            listeners: Mutex::new(HashMap::new()),
            direct: Mutex::new(HashMap::new()),
            handle: tokio::runtime::Handle::try_current().ok(),
            events,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets up the containers' namespace (forwarding, NAT out of tap0, transparent-proxy
    /// routing), the default network and every bridge. Blocking. A failure is kept: what
    /// needs the subsystem later says why it is not there ([`Manager::not_initialized`]).
    pub fn init(&self) -> Result<()> {
        let res = self.init_inner();
        *self.init_error.lock().unwrap_or_else(|e| e.into_inner()) =
            res.as_ref().err().map(|e| e.to_string());
        res
    }

    /// The error of a request that needs the network subsystem when its set-up failed: the
    /// reason, and how to fix it.
    fn not_initialized(&self) -> Error {
        let why = self
            .init_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "its set-up has not finished".into());
        Error::Unavailable(format!(
            "the network subsystem is not initialized: {why}; fix that, then restart nookd \
             (systemctl --user restart nook); `nook plugins ls` shows the error, \
             docs/troubleshooting.md explains it; --network none works meanwhile"
        ))
    }

    fn init_inner(&self) -> Result<()> {
        let _g = self.lock();
        let subnet = Subnet::parse(&self.s.subnet)?;
        let subnet6 = match self.s.subnet6.trim() {
            "" => None,
            s => Some(Subnet6::parse(s)?),
        };
        self.store.write(|tx| {
            let rec: Option<NetworkRecord> = tx.get_raw(SYSTEM, &net_key(DEFAULT_NETWORK))?;
            let rec = match rec {
                Some(mut r) if r.subnet != subnet || r.bridge != self.s.bridge => {
                    if !r.pool.held.is_empty() {
                        tracing::warn!(
                            "[network] subnet/bridge changed while containers hold addresses on {}: keeping {} until they are removed",
                            DEFAULT_NETWORK,
                            r.subnet
                        );
                        r
                    } else {
                        r.subnet = subnet;
                        r.gateway = subnet.gateway();
                        r.subnet6 = subnet6;
                        r.bridge = self.s.bridge.clone();
                        r.pool = Pool::new(subnet);
                        r
                    }
                }
                Some(mut r) => {
                    // IPv6 turned on, off or moved: containers attached from now on follow
                    if r.subnet6 != subnet6 {
                        r.subnet6 = subnet6;
                    }
                    r
                }
                None => NetworkRecord {
                    name: DEFAULT_NETWORK.into(),
                    bridge: self.s.bridge.clone(),
                    subnet,
                    gateway: subnet.gateway(),
                    subnet6,
                    created_at: chrono::Utc::now().timestamp(),
                    labels: BTreeMap::new(),
                    pool: Pool::new(subnet),
                },
            };
            tx.put_raw(SYSTEM, &net_key(DEFAULT_NETWORK), &rec)
        })?;
        let tproxy = with_netns(&self.s.netns, setup_namespace).map_err(io_err(
            "setting up the containers' network namespace (forwarding, NAT)",
        ))?;
        for n in self.networks_raw()? {
            self.ensure_bridge(&n)?;
        }
        self.isolate()?;
        match SocketFactory::start(&self.s.netns) {
            Ok(f) => {
                f.transparent
                    .store(tproxy, std::sync::atomic::Ordering::Relaxed);
                *self.factory.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
            }
            Err(e) => return Err(Error::io("starting the port-forwarding socket thread", e)),
        }
        Ok(())
    }

    /// Whether published TCP ports preserve the client's address.
    pub fn transparent(&self) -> bool {
        self.factory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|f| f.transparent.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn networks_raw(&self) -> Result<Vec<NetworkRecord>> {
        Ok(self
            .store
            .list::<NetworkRecord>(SYSTEM, "network")?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    fn attachments(&self) -> Result<Vec<AttachmentRecord>> {
        Ok(self
            .store
            .list_all::<AttachmentRecord>(NETWORKS)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Creates the bridge of `n` if it is missing, with its gateway address, up.
    fn ensure_bridge(&self, n: &NetworkRecord) -> Result<()> {
        let (br, gw, prefix, mtu) = (n.bridge.clone(), n.gateway, n.subnet.prefix, self.s.mtu);
        let gw6 = n.subnet6.map(|s| (s.gateway(), s.prefix));
        with_netns(&self.s.netns, move || {
            let mut nl = Netlink::open()?;
            if !nl.exists(&br) {
                nl.create_bridge(&br, mtu)?;
                // a fixed MAC: a bridge otherwise takes its ports' lowest and changes with them
                let o = gw.octets();
                nl.set_mac(&br, [0x02, 0x6e, o[0], o[1], o[2], o[3]])?;
            }
            nl.add_addr(&br, gw, prefix)?;
            if let Some((gw6, prefix6)) = gw6 {
                nl.add_addr(&br, gw6, prefix6)?;
            }
            nl.set_up(&br)
        })
        .map_err(io_err(&format!("setting up bridge {}", n.bridge)))
    }

    /// Rewrites the firewall chain that keeps networks apart: a packet routed from one bridge
    /// to another is dropped; traffic within a bridge and to or from the link (`tap0`) passes.
    fn isolate(&self) -> Result<()> {
        let bridges: Vec<String> = self.networks_raw()?.into_iter().map(|n| n.bridge).collect();
        with_netns(&self.s.netns, move || {
            run_stdin("nft", &["-f", "-"], &isolate_rules(&bridges))
        })
        .map_err(io_err("keeping the networks apart (nft)"))
    }

    /// Lists the networks with their members.
    pub fn list(&self) -> Result<Vec<NetworkInfo>> {
        let atts = self.attachments()?;
        let mut out: Vec<NetworkInfo> = self
            .networks_raw()?
            .into_iter()
            .map(|record| {
                let members = atts
                    .iter()
                    .filter(|a| a.mode == Mode::Bridge && a.network == record.name)
                    .filter_map(|a| {
                        a.ip.map(|ip| {
                            (
                                a.namespace.clone(),
                                a.container_id.clone(),
                                a.name.clone(),
                                ip,
                            )
                        })
                    })
                    .collect();
                NetworkInfo {
                    default: record.name == DEFAULT_NETWORK,
                    record,
                    members,
                }
            })
            .collect();
        out.sort_by(|a, b| (!a.default, &a.record.name).cmp(&(!b.default, &b.record.name)));
        Ok(out)
    }

    /// One network by name.
    pub fn inspect(&self, name: &str) -> Result<NetworkInfo> {
        self.list()?
            .into_iter()
            .find(|n| n.record.name == name)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "network {name:?} not found (see `nook network ls`)"
                ))
            })
    }

    /// Creates a user network with its own bridge; `subnet` None picks a free 10.89.x.0/24.
    pub fn create(
        &self,
        name: &str,
        subnet: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<NetworkRecord> {
        validate_network_name(name)?;
        let _g = self.lock();
        let existing = self.networks_raw()?;
        if existing.iter().any(|n| n.name == name) {
            return Err(Error::AlreadyExists(format!(
                "network {name:?} already exists"
            )));
        }
        let taken: Vec<Subnet> = existing.iter().map(|n| n.subnet).collect();
        let subnet = match subnet {
            Some(s) if !s.is_empty() => {
                let s = Subnet::parse(s)?;
                if let Some(o) = existing.iter().find(|n| n.subnet.overlaps(&s)) {
                    return Err(Error::InvalidArgument(format!(
                        "subnet {s} overlaps network {:?} ({}): choose another --subnet",
                        o.name, o.subnet
                    )));
                }
                s
            }
            _ => ipam::pick_subnet(&taken)?,
        };
        let subnet6 = match self.s.subnet6.trim() {
            "" => None,
            base => {
                let base = Subnet6::parse(base)?;
                let taken6: HashSet<Subnet6> = existing.iter().filter_map(|n| n.subnet6).collect();
                (1..=u64::from(u16::MAX))
                    .map(|k| base.sibling(k))
                    .find(|s| !taken6.contains(s))
            }
        };
        let used: HashSet<&str> = existing.iter().map(|n| n.bridge.as_str()).collect();
        let bridge = (1..10000)
            .map(|i| format!("nook{i}"))
            .find(|b| !used.contains(b.as_str()))
            .ok_or_else(|| Error::Unavailable("no free bridge name".into()))?;
        let rec = NetworkRecord {
            name: name.into(),
            bridge,
            subnet,
            gateway: subnet.gateway(),
            subnet6,
            created_at: chrono::Utc::now().timestamp(),
            labels,
            pool: Pool::new(subnet),
        };
        self.store.write(|tx| {
            if tx
                .get_raw::<NetworkRecord>(SYSTEM, &net_key(name))?
                .is_some()
            {
                return Err(Error::AlreadyExists(format!(
                    "network {name:?} already exists"
                )));
            }
            tx.put_raw(SYSTEM, &net_key(name), &rec)
        })?;
        if let Err(e) = self.ensure_bridge(&rec).and_then(|()| self.isolate()) {
            let _ = self.store.write(|tx| tx.delete_raw(SYSTEM, &net_key(name)));
            let br = rec.bridge.clone();
            let _ = with_netns(&self.s.netns, move || Netlink::open()?.delete_link(&br));
            return Err(e);
        }
        let mut attrs = vec![
            ("name", name.to_string()),
            ("subnet", rec.subnet.to_string()),
        ];
        if let Some(s6) = &rec.subnet6 {
            attrs.push(("subnet6", s6.to_string()));
        }
        self.events.publish("", "/networks/create", &attrs);
        Ok(rec)
    }

    /// Removes a user network that no container uses.
    pub fn remove(&self, name: &str) -> Result<()> {
        if name == DEFAULT_NETWORK {
            return Err(Error::InvalidArgument(format!(
                "{DEFAULT_NETWORK:?} is the default network and cannot be removed"
            )));
        }
        let _g = self.lock();
        let info = self.inspect(name)?;
        if !info.members.is_empty() {
            let names: Vec<&str> = info.members.iter().map(|m| m.2.as_str()).collect();
            return Err(Error::Precondition(format!(
                "network {name:?} is used by {}: remove those containers first",
                names.join(", ")
            )));
        }
        let br = info.record.bridge.clone();
        match with_netns(&self.s.netns, move || Netlink::open()?.delete_link(&br)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(
                    format!("deleting bridge {}", info.record.bridge),
                    e,
                ))
            }
            _ => {}
        }
        self.store
            .write(|tx| tx.delete_raw(SYSTEM, &net_key(name)))?;
        if let Err(e) = self.isolate() {
            tracing::warn!("after removing network {name:?}: {e}");
        }
        self.events
            .publish("", "/networks/delete", &[("name", name.to_string())]);
        Ok(())
    }

    /// The recorded attachment of a container.
    pub fn attachment(&self, ns: &str, id: &str) -> Result<Option<AttachmentRecord>> {
        self.store.get(NETWORKS, ns, id)
    }

    fn resolv(&self, mode: &Mode) -> String {
        let driver = if *mode == Mode::None {
            "none"
        } else {
            self.s.driver.as_str()
        };
        super::dns::resolv_conf(driver, &self.s.host_resolv)
    }

    fn hosts_for(&self, a: &AttachmentRecord, all: &[AttachmentRecord]) -> String {
        let peers: Vec<(String, Ipv4Addr)> = if a.mode == Mode::Bridge {
            all.iter()
                .filter(|o| {
                    o.mode == Mode::Bridge
                        && o.network == a.network
                        && o.namespace == a.namespace
                        && o.container_id != a.container_id
                })
                .filter_map(|o| o.ip.map(|ip| (o.name.clone(), ip)))
                .collect()
        } else {
            Vec::new()
        };
        super::dns::hosts(&a.name, &a.hostname, a.ip, &peers)
    }

    fn view(&self, a: &AttachmentRecord) -> Result<Attachment> {
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

    /// Rewrites (in place, keeping bind mounts valid) the hosts files of `network`'s members.
    fn refresh_hosts(&self, network: &str) {
        let Ok(all) = self.attachments() else {
            return;
        };
        for a in all
            .iter()
            .filter(|a| a.mode == Mode::Bridge && a.network == network)
        {
            if let Some(p) = &a.hosts_path {
                if p.parent().is_some_and(|d| d.exists()) {
                    if let Err(e) = std::fs::write(p, self.hosts_for(a, &all)) {
                        tracing::warn!("updating {}: {e}", p.display());
                    }
                }
            }
        }
    }

    /// Gives container `ns/id` its network: a namespace (its own, or nookd's for host), and on
    /// a bridge network an address and a veth pair. Idempotent. Blocking.
    pub fn attach(&self, ns: &str, id: &str, req: &AttachRequest) -> Result<Attachment> {
        let _g = self.lock();
        if let Some(a) = self.attachment(ns, id)? {
            if a.mode == Mode::Host || is_netns(&a.netns_path) {
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
        };
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
                if let Err(e) = create_netns(&own_ns) {
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

    fn plumb(&self, net: &NetworkRecord, rec: &AttachmentRecord) -> Result<()> {
        self.ensure_bridge(net)?;
        create_netns(&rec.netns_path)
            .map_err(io_err("creating the container's network namespace"))?;
        let (veth, br, mtu) = (
            rec.veth.clone().unwrap_or_default(),
            net.bridge.clone(),
            self.s.mtu,
        );
        let target = rec.netns_path.clone();
        with_netns(&self.s.netns, move || {
            let ns = std::fs::File::open(&target)?;
            let mut nl = Netlink::open()?;
            if nl.exists(&veth) {
                nl.delete_link(&veth)?;
            }
            nl.create_veth(&veth, CONTAINER_IF, Some(ns.as_raw_fd()), mtu)?;
            nl.set_master(&veth, &br)?;
            nl.set_up(&veth)
        })
        .map_err(io_err("creating the container's veth pair"))?;
        let (ip, prefix, gw) = (
            rec.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            rec.prefix,
            rec.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED),
        );
        let v6 = rec.ip6.zip(rec.gateway6).map(|(a, g)| (a, rec.prefix6, g));
        with_netns(&rec.netns_path, move || {
            let mut nl = Netlink::open()?;
            nl.add_addr(CONTAINER_IF, ip, prefix)?;
            if let Some((ip6, prefix6, _)) = v6 {
                nl.add_addr(CONTAINER_IF, ip6, prefix6)?;
            }
            nl.set_up(CONTAINER_IF)?;
            nl.add_default_route(CONTAINER_IF, gw)?;
            if let Some((_, _, gw6)) = v6 {
                nl.add_default_route(CONTAINER_IF, gw6)?;
            }
            Ok(())
        })
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
                if is_netns(&a.netns_path) {
                    return Ok(());
                }
                let _ = remove_netns(&a.netns_path);
                create_netns(&a.netns_path)
                    .map_err(io_err("creating the container's network namespace"))
            }
            Mode::Bridge => {
                let veth_ok = a.veth.clone().is_some_and(|v| {
                    with_netns(&self.s.netns, move || Ok(Netlink::open()?.exists(&v)))
                        .unwrap_or(false)
                });
                if is_netns(&a.netns_path) && veth_ok {
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
                let _ = remove_netns(&a.netns_path);
                self.plumb(&net, &a)
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
    fn detach_locked(&self, ns: &str, id: &str, wait_veth: bool) -> Result<()> {
        self.unpublish(ns, id);
        let Some(a) = self.attachment(ns, id)? else {
            return Ok(());
        };
        if let Some(v) = a.veth.clone() {
            let (netns, what) = (self.s.netns.clone(), format!("{ns}/{id}"));
            let delete = move || match with_netns(&netns, move || Netlink::open()?.delete_link(&v))
            {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!("deleting veth of {what}: {e}")
                }
                _ => {}
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
            remove_netns(&a.netns_path)
                .map_err(io_err("removing the container's network namespace"))?;
        }
        let h = holder(ns, id);
        self.store.write(|tx| {
            if a.mode == Mode::Bridge {
                if let Some(mut net) = tx.get_raw::<NetworkRecord>(SYSTEM, &net_key(&a.network))? {
                    if net.pool.release(&h) {
                        tx.put_raw(SYSTEM, &net_key(&a.network), &net)?;
                    }
                }
            }
            tx.delete(NETWORKS, ns, id)?;
            Ok(())
        })?;
        if a.mode == Mode::Bridge {
            self.events.publish(
                ns,
                "/networks/disconnect",
                &[
                    ("network", a.network.clone()),
                    ("container", id.to_string()),
                    ("name", a.name.clone()),
                ],
            );
            self.refresh_hosts(&a.network);
        }
        Ok(())
    }

    /// Binds the container's published ports on the host and relays them to it. All or
    /// nothing: on error no port stays bound. Returns the mappings as bound (random host ports
    /// resolved). Blocking.
    pub fn publish(&self, ns: &str, id: &str) -> Result<Vec<PortMapping>> {
        let Some(mut a) = self.attachment(ns, id)? else {
            return Ok(Vec::new());
        };
        if a.ports.is_empty() {
            return Ok(Vec::new());
        }
        self.unpublish(ns, id);
        let target_ip: IpAddr = match (&a.mode, a.ip) {
            (Mode::Bridge, Some(ip)) => IpAddr::V4(ip),
            (Mode::Host, _) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => {
                return Err(Error::InvalidArgument(
                    "ports can only be published from a bridge or host network".into(),
                ))
            }
        };
        let handle = self.handle.clone().ok_or_else(|| {
            Error::Internal("port publishing needs the daemon's tokio runtime".into())
        })?;
        let f = self
            .factory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| self.not_initialized())?;
        let mut published = Vec::new();
        if a.direct {
            // the shim takes the bound sockets and hands them to the container's binds
            let mut held = Vec::new();
            for m in &a.ports {
                let (fd, m) = forward::reserve(m)?;
                published.push(m.clone());
                held.push((m, fd));
            }
            self.direct
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(holder(ns, id), held);
        } else {
            let mut bound = Vec::new();
            for m in &a.ports {
                bound.push(forward::bind(m)?);
            }
            let mut tasks = Vec::new();
            for (b, m) in bound {
                let t = forward::target(target_ip, m.container_port);
                match forward::serve(&handle, b, t, f.clone()) {
                    Ok(task) => tasks.push(task),
                    Err(e) => {
                        tasks.iter().for_each(|t| t.abort());
                        return Err(e);
                    }
                }
                published.push(m);
            }
            self.listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(holder(ns, id), tasks);
        }
        a.published = published.clone();
        self.store.write(|tx| {
            if tx.get::<AttachmentRecord>(NETWORKS, ns, id)?.is_some() {
                tx.put(NETWORKS, ns, id, &a)?;
            }
            Ok(())
        })?;
        Ok(published)
    }

    /// The host sockets bound for a direct-port container by [`Manager::publish`], for its
    /// shim (empty for relayed ports).
    pub fn take_direct(&self, ns: &str, id: &str) -> Vec<(PortMapping, OwnedFd)> {
        self.direct
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&holder(ns, id))
            .unwrap_or_default()
    }

    /// Closes the container's published ports (when it stops). Never fails.
    pub fn unpublish(&self, ns: &str, id: &str) {
        if let Some(tasks) = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&holder(ns, id))
        {
            for t in tasks {
                t.abort();
            }
        }
        self.take_direct(ns, id);
        let _ = self.store.write(|tx| {
            if let Some(mut a) = tx.get::<AttachmentRecord>(NETWORKS, ns, id)? {
                if !a.published.is_empty() {
                    a.published.clear();
                    tx.put(NETWORKS, ns, id, &a)?;
                }
            }
            Ok(())
        });
    }

    /// Finds a container's attachment in `ns` by id, unique id prefix, or name.
    pub fn find(&self, ns: &str, container: &str) -> Result<AttachmentRecord> {
        let all = self.store.list::<AttachmentRecord>(NETWORKS, ns)?;
        if let Some((_, a)) = all.iter().find(|(k, _)| k == container) {
            return Ok(a.clone());
        }
        if let Some((_, a)) = all.iter().find(|(_, a)| a.name == container) {
            return Ok(a.clone());
        }
        let m: Vec<&AttachmentRecord> = all
            .iter()
            .filter(|(k, _)| !container.is_empty() && k.starts_with(container))
            .map(|(_, a)| a)
            .collect();
        match m.as_slice() {
            [a] => Ok((*a).clone()),
            [] => Err(Error::NotFound(format!(
                "no container {container:?} with a network in namespace {ns:?}"
            ))),
            _ => Err(Error::InvalidArgument(format!(
                "{container:?} matches several containers: give more of the id"
            ))),
        }
    }

    /// The container's port mappings: as bound while it runs, else as requested.
    pub fn ports(&self, ns: &str, id: &str) -> Result<Vec<PortMapping>> {
        Ok(self
            .attachment(ns, id)?
            .map(|a| {
                if a.published.is_empty() {
                    a.ports
                } else {
                    a.published
                }
            })
            .unwrap_or_default())
    }

    /// After a start (or a crash): `state(ns, id)` says whether a container is gone (None),
    /// stopped (Some(false)) or running (Some(true)). Gone containers lose their network;
    /// running ones get their ports back; veths, namespace files and addresses nobody holds are
    /// removed. Blocking.
    pub fn reconcile(&self, state: impl Fn(&str, &str) -> Option<bool>) -> Result<Reconciled> {
        let mut out = Reconciled::default();
        let mut running = Vec::new();
        for a in self.attachments()? {
            match state(&a.namespace, &a.container_id) {
                None => {
                    self.detach(&a.namespace, &a.container_id)?;
                    out.attachments += 1;
                }
                Some(true) => running.push(a),
                Some(false) => {
                    if !a.published.is_empty() {
                        self.unpublish(&a.namespace, &a.container_id);
                    }
                }
            }
        }
        let _g = self.lock();
        let atts = self.attachments()?;
        let veths: HashSet<String> = atts.iter().filter_map(|a| a.veth.clone()).collect();
        let owned: HashSet<PathBuf> = atts.iter().map(|a| a.netns_path.clone()).collect();
        // stray veths in the containers' namespace
        let removed = with_netns(&self.s.netns, move || {
            let mut nl = Netlink::open()?;
            let mut n = 0;
            for l in netlink::links()? {
                if l.starts_with("nk")
                    && l.len() == 14
                    && !veths.contains(&l)
                    && nl.delete_link(&l).is_ok()
                {
                    n += 1;
                }
            }
            Ok(n)
        })
        .map_err(io_err("listing the containers' network links"))?;
        out.veths = removed;
        // stray namespace files
        if let Ok(rd) = std::fs::read_dir(&self.s.netns_dir) {
            for d in rd.flatten() {
                let Ok(inner) = std::fs::read_dir(d.path()) else {
                    continue;
                };
                for f in inner.flatten() {
                    if !owned.contains(&f.path()) && remove_netns(&f.path()).is_ok() {
                        out.netns += 1;
                    }
                }
            }
        }
        // addresses held by no attachment
        let holders: HashSet<String> = atts
            .iter()
            .filter(|a| a.mode == Mode::Bridge)
            .map(|a| holder(&a.namespace, &a.container_id))
            .collect();
        out.addresses = self.store.write(|tx| {
            let mut n = 0;
            for (k, mut net) in tx_networks(tx)? {
                let before = net.pool.held.len();
                net.pool.held.retain(|_, h| holders.contains(h));
                if net.pool.held.len() != before {
                    n += before - net.pool.held.len();
                    tx.put_raw(SYSTEM, &k, &net)?;
                }
            }
            Ok(n)
        })?;
        drop(_g);
        // bridges (a new pause process has none) and the running containers' plumbing
        for n in self.networks_raw()? {
            self.ensure_bridge(&n)?;
        }
        for a in running {
            // direct ports live in the container's sockets (held by its shim): nothing to do
            if !a.ports.is_empty() && !a.direct {
                if let Err(e) = self.publish(&a.namespace, &a.container_id) {
                    tracing::warn!(
                        "republishing the ports of {}/{}: {e}",
                        a.namespace,
                        a.container_id
                    );
                }
            }
        }
        Ok(out)
    }

    /// Closes every listener (daemon shutdown).
    pub fn shutdown(&self) {
        let all: Vec<_> = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (_, tasks) in all {
            tasks.iter().for_each(|t| t.abort());
        }
    }
}

fn tx_networks(tx: &crate::metadata::Tx) -> Result<Vec<(String, NetworkRecord)>> {
    Ok(tx
        .list::<NetworkRecord>(SYSTEM, "network")?
        .into_iter()
        .map(|(k, v)| (net_key(&k), v))
        .collect())
}

/// In the containers' namespace (called on a thread inside it): IPv4 forwarding, NAT of
/// everything leaving through tap0, and the transparent-proxy marking and routing. Returns
/// whether the transparent-proxy part is in place.
fn setup_namespace() -> std::io::Result<bool> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| std::io::Error::new(e.kind(), format!("enabling ip_forward: {e}")))?;
    let nat = format!(
        "table ip nook {{}}\nflush table ip nook\ntable ip nook {{\n  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; oifname \"{TAP}\" masquerade; }}\n}}\n"
    );
    run_stdin("nft", &["-f", "-"], &nat)?;
    // IPv6 where the kernel has it: forwarding, and NAT out of the link (pasta gives the
    // namespace IPv6 when the host has it, slirp4netns with --enable-ipv6)
    if std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").is_ok() {
        let nat6 = format!(
            "table ip6 nook {{}}\nflush table ip6 nook\ntable ip6 nook {{\n  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; oifname \"{TAP}\" masquerade; }}\n}}\n"
        );
        if let Err(e) = run_stdin("nft", &["-f", "-"], &nat6) {
            tracing::warn!("no IPv6 NAT out of the link: {e}");
        }
    }
    let tproxy = "table ip nook {\n  chain prerouting { type filter hook prerouting priority mangle; policy accept; meta l4proto tcp socket transparent 1 meta mark set 0x1; }\n}\n";
    if let Err(e) = run_stdin("nft", &["-f", "-"], tproxy) {
        tracing::warn!("transparent port forwarding unavailable (containers will see their gateway as the client): {e}");
        return Ok(false);
    }
    let rules = std::process::Command::new("ip")
        .args(["-4", "rule", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let res = (|| {
        if !rules.contains(&format!("fwmark 0x1 lookup {TPROXY_TABLE}")) {
            run_stdin(
                "ip",
                &["-4", "rule", "add", "fwmark", "1", "lookup", TPROXY_TABLE],
                "",
            )?;
        }
        run_stdin(
            "ip",
            &[
                "-4",
                "route",
                "replace",
                "local",
                "0.0.0.0/0",
                "dev",
                "lo",
                "table",
                TPROXY_TABLE,
            ],
            "",
        )
    })();
    match res {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::warn!("transparent port forwarding unavailable: {e}");
            Ok(false)
        }
    }
}

/// The nft script of [`Manager::isolate`]. With br_netfilter, traffic within a bridge also
/// passes the forward hook, with the bridge as both the input and the output interface.
fn isolate_rules(bridges: &[String]) -> String {
    let mut s = String::from(
        "table ip nook {\n  chain isolate { type filter hook forward priority filter; policy accept; }\n}\nflush chain ip nook isolate\n",
    );
    for b in bridges {
        s.push_str(&format!(
            "add rule ip nook isolate iifname \"{b}\" oifname != {{ \"{b}\", \"{TAP}\" }} drop\n"
        ));
    }
    s
}

fn run_stdin(prog: &str, args: &[&str], input: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut c = std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("running {prog}: {e} (install nftables and iproute2)"),
            )
        })?;
    if let Some(mut i) = c.stdin.take() {
        i.write_all(input.as_bytes())?;
    }
    let o = c.wait_with_output()?;
    if !o.status.success() {
        return Err(std::io::Error::other(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(())
}

/// A [`Settings`] for a daemon.
pub fn settings_for(
    cfg: &crate::config::NetworkConfig,
    pause_pid: i32,
    state: &Path,
    driver: &str,
) -> Settings {
    Settings {
        netns: PathBuf::from(format!("/proc/{pause_pid}/ns/net")),
        netns_dir: state.join("netns"),
        driver: driver.into(),
        mtu: cfg.mtu.min(65520),
        bridge: cfg.bridge.clone(),
        subnet: cfg.subnet.clone(),
        subnet6: cfg.ipv6_subnet.clone(),
        host_resolv: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ports::parse;
    use std::io::{Read, Write};

    #[test]
    fn names() {
        assert_eq!(veth_name("default", "abc").len(), 14);
        assert_ne!(veth_name("default", "abc"), veth_name("other", "abc"));
        assert!(validate_network_name("my-net_1.x").is_ok());
        for bad in ["", "host", "none", "-x", "a b", &"x".repeat(65)] {
            assert!(validate_network_name(bad).is_err(), "{bad}");
        }
    }

    fn manager(dir: &Path, store: Arc<Store>) -> Manager {
        Manager::new(
            store,
            Settings {
                netns: dir.join("pause"),
                netns_dir: dir.join("netns"),
                driver: "slirp4netns".into(),
                mtu: 65520,
                bridge: "nook0".into(),
                subnet: "10.88.0.0/16".into(),
                subnet6: "fd88::/64".into(),
                host_resolv: "nameserver 127.0.0.53\n".into(),
            },
            Publisher::discard(),
        )
    }

    /// The whole life of container networking, as root, in throwaway namespaces standing in
    /// for nookd's: bridge, two containers that reach each other, hosts files, a published
    /// port relayed with the client's address preserved, detach, crash clean-up, and no
    /// address reuse across a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attach_publish_detach_reconcile() {
        // SAFETY: geteuid has no side effects.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        create_netns(&d.join("pause")).unwrap();
        let store = Arc::new(Store::open(&d.join("meta.redb")).unwrap());
        let m = Arc::new(manager(&d, store.clone()));
        let m2 = m.clone();
        let (a, b, hosts_a) = tokio::task::spawn_blocking(move || {
            m2.init().unwrap();
            m2.init().unwrap(); // idempotent
            let hosts_a = d.join("a.hosts");
            std::fs::write(&hosts_a, "").unwrap();
            let a = m2
                .attach(
                    "default",
                    "aaaa",
                    &AttachRequest {
                        container_name: "web".into(),
                        hosts_path: Some(hosts_a.clone()),
                        ports: parse("127.0.0.1::80").unwrap(),
                        ..Default::default()
                    },
                )
                .unwrap();
            let b = m2
                .attach(
                    "default",
                    "bbbb",
                    &AttachRequest {
                        container_name: "client".into(),
                        ..Default::default()
                    },
                )
                .unwrap();
            (a, b, hosts_a)
        })
        .await
        .unwrap();
        assert_eq!(a.ip, Some(Ipv4Addr::new(10, 88, 0, 2)));
        assert_eq!(b.ip, Some(Ipv4Addr::new(10, 88, 0, 3)));
        assert_eq!(a.gateway, Some(Ipv4Addr::new(10, 88, 0, 1)));
        assert!(a.resolv_conf.contains("nameserver 10.0.2.3"));
        assert!(b.hosts.contains("10.88.0.2\tweb\n"), "{}", b.hosts);
        // a's hosts file was rewritten when b joined
        let h = std::fs::read_to_string(&hosts_a).unwrap();
        assert!(h.contains("10.88.0.3\tclient\n"), "{h}");
        // a listens; b connects to it across the bridge
        let listener = with_netns(&a.netns_path, || {
            let l = std::net::TcpListener::bind("0.0.0.0:80")?;
            let links = netlink::links()?;
            assert!(links.contains(&"eth0".to_string()) && links.contains(&"lo".to_string()));
            Ok(l)
        })
        .unwrap();
        let from_b = with_netns(&b.netns_path, || {
            std::net::TcpStream::connect("10.88.0.2:80")?.local_addr()
        })
        .unwrap();
        let (_s, peer) = listener.accept().unwrap();
        assert_eq!(peer, from_b);
        // publish a's port on the host's 127.0.0.1 and go through it
        let m2 = m.clone();
        let published = tokio::task::spawn_blocking(move || m2.publish("default", "aaaa"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(published.len(), 1);
        let port = published[0].host_port;
        assert_ne!(port, 0);
        assert_eq!(m.ports("default", "aaaa").unwrap(), published);
        let t = std::thread::spawn(move || {
            let (mut c, peer) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            c.write_all(b"pong!").unwrap();
            (peer, buf)
        });
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"ping!").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong!");
        let (peer, got) = t.join().unwrap();
        assert_eq!(&got, b"ping!");
        assert!(m.transparent());
        // the container saw the host's loopback client as 10.0.2.2 with the client's own port
        assert_eq!(peer.ip(), IpAddr::V4(forward::HOST_LOOPBACK_ALIAS));
        assert_eq!(peer.port(), c.local_addr().unwrap().port());
        // UDP: published and answered
        let m2 = m.clone();
        let ns_a = a.netns_path.clone();
        let echo = with_netns(&ns_a, || std::net::UdpSocket::bind("0.0.0.0:5353")).unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut b) {
                let _ = echo.send_to(&b[..n], from);
            }
        });
        let udp_port = tokio::task::spawn_blocking(move || {
            let mut a = m2.attachment("default", "aaaa").unwrap().unwrap();
            a.ports = parse("127.0.0.1::5353/udp").unwrap();
            m2.store
                .write(|tx| tx.put(NETWORKS, "default", "aaaa", &a))
                .unwrap();
            m2.publish("default", "aaaa").unwrap()[0].host_port
        })
        .await
        .unwrap();
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        u.send_to(b"marco", ("127.0.0.1", udp_port)).unwrap();
        let mut ub = [0u8; 16];
        let n = u.recv(&mut ub).unwrap();
        assert_eq!(&ub[..n], b"marco");
        // binding the same host port again fails clearly
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = forward::bind(
            &parse(&format!(
                "127.0.0.1:{}:80",
                busy.local_addr().unwrap().port()
            ))
            .unwrap()[0],
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("already in use on 127.0.0.1"), "{e}");
        drop(c);

        // unpublish frees the port
        m.unpublish("default", "aaaa");
        let m2 = m.clone();
        tokio::task::spawn_blocking(move || {
            let mut a = m2.attachment("default", "aaaa").unwrap().unwrap();
            a.ports = parse("127.0.0.1::80").unwrap();
            m2.store.write(|tx| tx.put(NETWORKS, "default", "aaaa", &a))
        })
        .await
        .unwrap()
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());

        // a crash: b's record vanishes with its container; reconcile removes its plumbing,
        // and a stray veth
        let m2 = m.clone();
        let pause = dir.path().join("pause");
        let b_ns = b.netns_path.clone();
        let r = tokio::task::spawn_blocking(move || {
            with_netns(&pause, || {
                Netlink::open()?.create_veth("nk0123456789ab", "strayp", None, 1500)
            })
            .unwrap();
            m2.reconcile(|_, id| (id == "aaaa").then_some(false))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(r.attachments, 1);
        assert_eq!(r.veths, 1);
        assert!(!b_ns.exists());
        let links = with_netns(&dir.path().join("pause"), netlink::links).unwrap();
        assert!(links.contains(&veth_name("default", "aaaa")));
        assert!(!links.contains(&veth_name("default", "bbbb")));
        assert!(!links.contains(&"nk0123456789ab".to_string()));
        let h = std::fs::read_to_string(&hosts_a).unwrap();
        assert!(!h.contains("client"), "{h}");

        // a restart: a new manager on the same store does not hand out b's old address
        // (nor a's, still held)
        drop(m);
        let m = Arc::new(manager(dir.path(), store.clone()));
        let m2 = m.clone();
        let dir2 = dir.path().to_path_buf();
        let c = tokio::task::spawn_blocking(move || {
            let dir = dir2;
            m2.init().unwrap();
            let c = m2
                .attach("default", "cccc", &AttachRequest::default())
                .unwrap();
            let n = m2
                .attach(
                    "default",
                    "nnnn",
                    &AttachRequest {
                        network: "none".into(),
                        ..Default::default()
                    },
                )
                .unwrap();
            let links = with_netns(&n.netns_path, netlink::links).unwrap();
            assert_eq!(links, vec!["lo".to_string()]);
            let h = m2
                .attach(
                    "default",
                    "hhhh",
                    &AttachRequest {
                        network: "host".into(),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(h.netns_path, dir.join("pause"));
            // user networks
            let net = m2.create("backend", None, BTreeMap::new()).unwrap();
            assert_eq!(net.bridge, "nook1");
            assert!(m2.create("backend", None, BTreeMap::new()).is_err());
            assert!(m2
                .create("clash", Some("10.88.5.0/24"), BTreeMap::new())
                .unwrap_err()
                .to_string()
                .contains("overlaps"));
            let u = m2
                .attach(
                    "default",
                    "uuuu",
                    &AttachRequest {
                        network: "backend".into(),
                        container_name: "u".into(),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(u.ip, Some(Ipv4Addr::new(10, 89, 0, 2)));
            assert!(m2
                .remove("backend")
                .unwrap_err()
                .to_string()
                .contains("used by u"));
            for id in ["aaaa", "cccc", "nnnn", "hhhh", "uuuu"] {
                m2.detach("default", id).unwrap();
            }
            m2.remove("backend").unwrap();
            assert!(m2
                .attach(
                    "default",
                    "x",
                    &AttachRequest {
                        network: "backend".into(),
                        ..Default::default()
                    }
                )
                .is_err());
            let left = std::fs::read_dir(dir.join("netns/default"))
                .unwrap()
                .count();
            assert_eq!(left, 0);
            let links = with_netns(&dir.join("pause"), netlink::links).unwrap();
            assert!(!links.iter().any(|l| l.starts_with("nk")), "{links:?}");
            c
        })
        .await
        .unwrap();
        assert_eq!(c.ip, Some(Ipv4Addr::new(10, 88, 0, 4)));
        let info = m.inspect(DEFAULT_NETWORK).unwrap();
        assert!(info.members.is_empty());
        assert!(info.record.pool.held.is_empty());
        remove_netns(&dir.path().join("pause")).unwrap();
    }
}

/// Throughput of the published-port relay (host 127.0.0.1 → container), as root in throwaway
/// namespaces: `cargo test --lib network::manager::bench -- --ignored --nocapture`.
#[cfg(test)]
mod bench {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn relay_throughput() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        create_netns(&d.join("pause")).unwrap();
        let store = Arc::new(Store::open(&d.join("meta.redb")).unwrap());
        let m = Arc::new(Manager::new(
            store,
            Settings {
                netns: d.join("pause"),
                netns_dir: d.join("netns"),
                driver: "slirp4netns".into(),
                mtu: 65520,
                bridge: "nook0".into(),
                subnet: "10.88.0.0/16".into(),
                subnet6: "fd88::/64".into(),
                host_resolv: String::new(),
            },
            Publisher::discard(),
        ));
        let m2 = m.clone();
        let (a, port) = tokio::task::spawn_blocking(move || {
            m2.init().unwrap();
            let a = m2
                .attach(
                    "default",
                    "iperf",
                    &AttachRequest {
                        ports: crate::network::ports::parse("127.0.0.1::5201").unwrap(),
                        ..Default::default()
                    },
                )
                .unwrap();
            let p = m2.publish("default", "iperf").unwrap()[0].host_port;
            (a, p)
        })
        .await
        .unwrap();
        let mut srv = std::process::Command::new("nsenter")
            .arg(format!("--net={}", a.netns_path.display()))
            .args(["iperf3", "-s", "-p", "5201"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        for (what, args) in [
            ("host -> container", vec![]),
            ("container -> host", vec!["-R"]),
        ] {
            let o = tokio::process::Command::new("iperf3")
                .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", "5", "-J"])
                .args(args)
                .output()
                .await
                .unwrap();
            let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let bps = j["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0);
            println!("published port {what}: {:.2} Gbit/s", bps / 1e9);
        }
        let _ = srv.kill();
        let _ = srv.wait();
        let m2 = m.clone();
        tokio::task::spawn_blocking(move || m2.detach("default", "iperf"))
            .await
            .unwrap()
            .unwrap();
        remove_netns(&d.join("pause")).unwrap();
    }
}
