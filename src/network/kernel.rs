//! The seam between the network manager and the kernel: every link, namespace and firewall
//! operation [`super::Manager`] makes goes through [`NetKernel`]. [`RealKernel`] does them with
//! netlink, bind-mounted namespaces and `nft`; the unit tests give the manager an in-memory
//! fake (`kernel::fake`) that records the kernel's state and fails on the Nth call, so the
//! manager's rollback and reconcile logic is tested without root.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::forward::SocketFactory;
use super::netlink::{self, Netlink};
use super::netns::{self, with_netns};

/// A bridge as [`NetKernel::ensure_bridge`] makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bridge {
    pub name: String,
    pub mtu: u32,
    /// Set when the bridge is created (a bridge otherwise takes its ports' lowest MAC).
    pub mac: [u8; 6],
    /// Addresses (with prefix lengths) it gets, created or not.
    pub addrs: Vec<(IpAddr, u8)>,
}

/// The container's side of its veth pair, as [`NetKernel::configure_peer`] sets it up.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    pub ifname: String,
    pub addrs: Vec<(IpAddr, u8)>,
    /// Default routes through these gateways.
    pub gateways: Vec<IpAddr>,
}

/// The kernel operations of container networking. `netns` arguments are network namespace
/// files (`/proc/PID/ns/net` or a bind mount made by [`NetKernel::create_netns`]). All calls
/// block.
pub trait NetKernel: Send + Sync {
    /// Creates bridge `b` in `netns` if it is missing; gives it its addresses; sets it up.
    fn ensure_bridge(&self, netns: &Path, b: &Bridge) -> io::Result<()>;
    /// Creates a network namespace kept alive by a bind mount on `path`, with `lo` up. On
    /// error nothing is left.
    fn create_netns(&self, path: &Path) -> io::Result<()>;
    /// Unmounts and deletes a namespace file; a missing one is fine.
    fn remove_netns(&self, path: &Path) -> io::Result<()>;
    /// Whether `path` is a mounted network namespace.
    fn is_netns(&self, path: &Path) -> bool;
    /// Creates veth pair `veth` in `netns` (replacing one of that name) with its peer
    /// `peer_if` inside `peer_netns`, enslaves `veth` to `bridge` and sets it up.
    fn add_veth(
        &self,
        netns: &Path,
        veth: &str,
        bridge: &str,
        peer_netns: &Path,
        peer_if: &str,
        mtu: u32,
    ) -> io::Result<()>;
    /// Inside `netns`: gives the interface its addresses, sets it up, adds default routes.
    fn configure_peer(&self, netns: &Path, c: &PeerConfig) -> io::Result<()>;
    /// Whether [`NetKernel::configure_peer`] finished for `c` in `netns`: the interface has a
    /// default route of each gateway's family (its last step).
    fn peer_configured(&self, netns: &Path, c: &PeerConfig) -> bool;
    /// Whether `link` exists in `netns`.
    fn link_exists(&self, netns: &Path, link: &str) -> bool;
    /// Deletes `link` (a veth with its peer) in `netns`; `NotFound` when it does not exist.
    fn delete_link(&self, netns: &Path, link: &str) -> io::Result<()>;
    /// The names of the links of `netns`.
    fn links(&self, netns: &Path) -> io::Result<Vec<String>>;
    /// Forwarding, NAT out of the link and transparent-proxy routing in the containers'
    /// namespace; returns whether transparent proxying is in place.
    fn setup_namespace(&self, netns: &Path) -> io::Result<bool>;
    /// Loads an nft script in `netns`.
    fn nft(&self, netns: &Path, script: &str) -> io::Result<()>;
    /// Starts the thread that makes sockets inside `netns` for the port relays.
    fn socket_factory(&self, netns: &Path) -> io::Result<SocketFactory>;
}

/// The kernel itself: netlink, bind-mounted namespaces, `nft` and `ip`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealKernel;

impl NetKernel for RealKernel {
    fn ensure_bridge(&self, netns: &Path, b: &Bridge) -> io::Result<()> {
        let b = b.clone();
        with_netns(netns, move || {
            let mut nl = Netlink::open()?;
            if !nl.exists(&b.name) {
                nl.create_bridge(&b.name, b.mtu)?;
                nl.set_mac(&b.name, b.mac)?;
            }
            for (a, p) in &b.addrs {
                nl.add_addr(&b.name, *a, *p)?;
            }
            nl.set_up(&b.name)
        })
    }

    fn create_netns(&self, path: &Path) -> io::Result<()> {
        netns::create_netns(path)
    }

    fn remove_netns(&self, path: &Path) -> io::Result<()> {
        netns::remove_netns(path)
    }

    fn is_netns(&self, path: &Path) -> bool {
        netns::is_netns(path)
    }

    fn add_veth(
        &self,
        netns: &Path,
        veth: &str,
        bridge: &str,
        peer_netns: &Path,
        peer_if: &str,
        mtu: u32,
    ) -> io::Result<()> {
        let (veth, br, peer_if) = (veth.to_string(), bridge.to_string(), peer_if.to_string());
        let target = peer_netns.to_path_buf();
        with_netns(netns, move || {
            let ns = std::fs::File::open(&target)?;
            let mut nl = Netlink::open()?;
            if nl.exists(&veth) {
                nl.delete_link(&veth)?;
            }
            nl.create_veth(&veth, &peer_if, Some(ns.as_raw_fd()), mtu)?;
            nl.set_master(&veth, &br)?;
            nl.set_up(&veth)
        })
    }

    fn configure_peer(&self, netns: &Path, c: &PeerConfig) -> io::Result<()> {
        let c = c.clone();
        with_netns(netns, move || {
            let mut nl = Netlink::open()?;
            for (a, p) in &c.addrs {
                nl.add_addr(&c.ifname, *a, *p)?;
            }
            nl.set_up(&c.ifname)?;
            for g in &c.gateways {
                nl.add_default_route(&c.ifname, *g)?;
            }
            Ok(())
        })
    }

    fn peer_configured(&self, netns: &Path, c: &PeerConfig) -> bool {
        let c = c.clone();
        with_netns(netns, move || {
            let v4 = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
            let v6 =
                std::fs::read_to_string("/proc/thread-self/net/ipv6_route").unwrap_or_default();
            Ok(c.gateways.iter().all(|g| match g {
                IpAddr::V4(_) => v4.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 1 && f[0] == c.ifname && f[1] == "00000000"
                }),
                IpAddr::V6(_) => v6.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() == 10
                        && f[0].bytes().all(|b| b == b'0')
                        && f[1] == "00"
                        && f[9] == c.ifname
                }),
            }))
        })
        .unwrap_or(false)
    }

    fn link_exists(&self, netns: &Path, link: &str) -> bool {
        let link = link.to_string();
        with_netns(netns, move || Ok(Netlink::open()?.exists(&link))).unwrap_or(false)
    }

    fn delete_link(&self, netns: &Path, link: &str) -> io::Result<()> {
        let link = link.to_string();
        with_netns(netns, move || Netlink::open()?.delete_link(&link))
    }

    fn links(&self, netns: &Path) -> io::Result<Vec<String>> {
        with_netns(netns, netlink::links)
    }

    fn setup_namespace(&self, netns: &Path) -> io::Result<bool> {
        with_netns(netns, super::firewall::setup_namespace)
    }

    fn nft(&self, netns: &Path, script: &str) -> io::Result<()> {
        let script = script.to_string();
        with_netns(netns, move || {
            super::firewall::run_stdin("nft", &["-f", "-"], &script)
        })
    }

    fn socket_factory(&self, netns: &Path) -> io::Result<SocketFactory> {
        SocketFactory::start(netns)
    }
}

#[cfg(test)]
pub mod fake;
