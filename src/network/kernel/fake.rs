//! An in-memory [`NetKernel`] for unit tests: namespaces, links, addresses, routes and nft
//! scripts are records in a map, every call is counted and logged by [`Faults`], and the call
//! a test chooses fails (or panics, standing in for a crash). A failed call leaves what the
//! real kernel would leave half-way: a veth pair made but not enslaved, a bridge made but down,
//! an interface with only its first address. Namespace files are real files (under a test's
//! temporary directory), as reconcile looks for them on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{Bridge, NetKernel, PeerConfig};
use crate::network::forward::SocketFactory;
use crate::testing::Faults;

/// What a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Loopback,
    Bridge,
    Veth,
}

/// One link of a namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub kind: Kind,
    pub up: bool,
    pub master: Option<String>,
    pub addrs: Vec<(IpAddr, u8)>,
    /// The other end of a veth pair: (namespace, name).
    pub peer: Option<(PathBuf, String)>,
}

/// The fake kernel's state.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Namespaces and their links by name.
    pub namespaces: BTreeMap<PathBuf, BTreeMap<String, Link>>,
    /// Default routes per namespace.
    pub routes: BTreeMap<PathBuf, Vec<IpAddr>>,
    /// The nft scripts loaded per namespace, in order.
    pub nft: BTreeMap<PathBuf, Vec<String>>,
    /// Namespaces whose forwarding and NAT were set up.
    pub set_up: BTreeSet<PathBuf>,
}

impl State {
    /// The links of `netns` (none when it does not exist).
    pub fn links(&self, netns: &Path) -> Vec<String> {
        self.namespaces
            .get(netns)
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn ns(&mut self, netns: &Path) -> io::Result<&mut BTreeMap<String, Link>> {
        self.namespaces.get_mut(netns).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "opening network namespace {}: no such namespace",
                    netns.display()
                ),
            )
        })
    }

    /// Deletes a link and a veth's peer.
    fn delete(&mut self, netns: &Path, name: &str) -> io::Result<()> {
        let l = self.ns(netns)?.remove(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no network interface {name}"),
            )
        })?;
        if let Some((pns, pname)) = l.peer {
            if let Some(links) = self.namespaces.get_mut(&pns) {
                links.remove(&pname);
            }
        }
        Ok(())
    }
}

/// The fake. `host` is the containers' namespace (the pause process's), which exists from the
/// start.
#[derive(Debug)]
pub struct FakeKernel {
    pub faults: Faults,
    state: Mutex<State>,
}

impl FakeKernel {
    /// A kernel where only `host` (the containers' namespace, with `lo`) exists.
    pub fn new(host: &Path) -> FakeKernel {
        let mut s = State::default();
        s.namespaces.insert(host.to_path_buf(), lo());
        FakeKernel {
            faults: Faults::default(),
            state: Mutex::new(s),
        }
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn lo() -> BTreeMap<String, Link> {
    let mut m = BTreeMap::new();
    m.insert(
        "lo".to_string(),
        Link {
            kind: Kind::Loopback,
            up: true,
            master: None,
            addrs: Vec::new(),
            peer: None,
        },
    );
    m
}

impl NetKernel for FakeKernel {
    fn ensure_bridge(&self, netns: &Path, b: &Bridge) -> io::Result<()> {
        let fault = self.faults.call("ensure_bridge", &b.name);
        let mut s = self.lock();
        let links = s.ns(netns)?;
        let l = links.entry(b.name.clone()).or_insert(Link {
            kind: Kind::Bridge,
            up: false,
            master: None,
            addrs: Vec::new(),
            peer: None,
        });
        // a failure after the bridge was made: down, without its addresses
        fault?;
        for a in &b.addrs {
            if !l.addrs.contains(a) {
                l.addrs.push(*a);
            }
        }
        l.up = true;
        Ok(())
    }

    fn create_netns(&self, path: &Path) -> io::Result<()> {
        self.faults
            .call("create_netns", &path.display().to_string())?;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::File::create(path)?;
        self.lock().namespaces.insert(path.to_path_buf(), lo());
        Ok(())
    }

    fn remove_netns(&self, path: &Path) -> io::Result<()> {
        self.faults
            .call("remove_netns", &path.display().to_string())?;
        let mut s = self.lock();
        if let Some(links) = s.namespaces.remove(path) {
            // the kernel deletes a veth pair whose one end's namespace goes
            for (_, l) in links {
                if let Some((pns, pname)) = l.peer {
                    if let Some(pl) = s.namespaces.get_mut(&pns) {
                        pl.remove(&pname);
                    }
                }
            }
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn is_netns(&self, path: &Path) -> bool {
        self.lock().namespaces.contains_key(path)
    }

    fn add_veth(
        &self,
        netns: &Path,
        veth: &str,
        bridge: &str,
        peer_netns: &Path,
        peer_if: &str,
        _mtu: u32,
    ) -> io::Result<()> {
        let fault = self.faults.call("add_veth", veth);
        let mut s = self.lock();
        s.ns(peer_netns)?;
        if s.ns(netns)?.contains_key(veth) {
            s.delete(netns, veth)?;
        }
        if s.ns(peer_netns)?.contains_key(peer_if) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("creating veth pair {veth}/{peer_if}: File exists"),
            ));
        }
        let link = |peer: (PathBuf, String)| Link {
            kind: Kind::Veth,
            up: false,
            master: None,
            addrs: Vec::new(),
            peer: Some(peer),
        };
        s.ns(netns)?.insert(
            veth.into(),
            link((peer_netns.to_path_buf(), peer_if.into())),
        );
        s.ns(peer_netns)?
            .insert(peer_if.into(), link((netns.to_path_buf(), veth.into())));
        // a failure after the pair was made: not on the bridge, down
        fault?;
        let links = s.ns(netns)?;
        if links.get(bridge).map(|l| l.kind) != Some(Kind::Bridge) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no bridge {bridge}"),
            ));
        }
        let l = links.get_mut(veth).expect("made above");
        l.master = Some(bridge.into());
        l.up = true;
        Ok(())
    }

    fn configure_peer(&self, netns: &Path, c: &PeerConfig) -> io::Result<()> {
        let fault = self.faults.call("configure_peer", &c.ifname);
        let mut s = self.lock();
        let l = s.ns(netns)?.get_mut(&c.ifname).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no network interface {}", c.ifname),
            )
        })?;
        if fault.is_err() {
            // a failure part-way: the first address only
            l.addrs.extend(c.addrs.first().copied());
            return fault;
        }
        l.addrs.extend(c.addrs.iter().copied());
        l.up = true;
        s.routes
            .entry(netns.to_path_buf())
            .or_default()
            .extend(c.gateways.iter().copied());
        Ok(())
    }

    fn peer_configured(&self, netns: &Path, c: &PeerConfig) -> bool {
        let s = self.lock();
        let routes = s.routes.get(netns).cloned().unwrap_or_default();
        s.namespaces
            .get(netns)
            .and_then(|l| l.get(&c.ifname))
            .is_some_and(|l| l.up)
            && c.gateways.iter().all(|g| routes.contains(g))
    }

    fn link_exists(&self, netns: &Path, link: &str) -> bool {
        self.lock()
            .namespaces
            .get(netns)
            .is_some_and(|l| l.contains_key(link))
    }

    fn delete_link(&self, netns: &Path, link: &str) -> io::Result<()> {
        self.faults.call("delete_link", link)?;
        self.lock().delete(netns, link)
    }

    fn links(&self, netns: &Path) -> io::Result<Vec<String>> {
        self.faults.call("links", &netns.display().to_string())?;
        let mut s = self.lock();
        Ok(s.ns(netns)?.keys().cloned().collect())
    }

    fn setup_namespace(&self, netns: &Path) -> io::Result<bool> {
        self.faults.call("setup_namespace", "")?;
        let mut s = self.lock();
        s.ns(netns)?;
        s.set_up.insert(netns.to_path_buf());
        Ok(false)
    }

    fn nft(&self, netns: &Path, script: &str) -> io::Result<()> {
        self.faults.call("nft", "")?;
        let mut s = self.lock();
        s.ns(netns)?;
        s.nft
            .entry(netns.to_path_buf())
            .or_default()
            .push(script.to_string());
        Ok(())
    }

    fn socket_factory(&self, _netns: &Path) -> io::Result<SocketFactory> {
        self.faults.call("socket_factory", "")?;
        SocketFactory::here()
    }
}
