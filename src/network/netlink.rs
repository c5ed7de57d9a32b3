//! A small rtnetlink client on a NETLINK_ROUTE socket: just what container networking needs
//! (bridges, veth pairs, addresses, routes), written against libc because the rtnetlink crates
//! change their APIs often. Every request asks for an ACK; an NLMSG_ERROR with a non-zero code
//! becomes an `io::Error` carrying that errno and the operation's name.
//!
//! A socket works in the network namespace of the thread that created it, so callers create a
//! [`Netlink`] inside [`super::netns::with_netns`].

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

// linux/if_link.h, veth.h, rtnetlink.h constants (stable kernel ABI)
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFA_FLAGS: u16 = 8;
/// No duplicate address detection: the address is usable at once, not "tentative".
const IFA_F_NODAD: u32 = 0x02;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const NLA_F_NESTED: u16 = 1 << 15;

/// Rounds up to the 4-byte netlink alignment.
fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one netlink message: header, fixed family header, attributes (nesting supported).
#[derive(Debug, Clone)]
pub struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    /// Starts a request of `ty` with `flags` (NLM_F_REQUEST|NLM_F_ACK are added).
    pub fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        let f = flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16;
        buf[6..8].copy_from_slice(&f.to_ne_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    /// Appends raw bytes (a family header), padded to alignment.
    pub fn raw(mut self, b: &[u8]) -> Msg {
        self.buf.extend_from_slice(b);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Appends an `ifinfomsg`.
    pub fn ifinfo(self, index: i32, flags: u32, change: u32) -> Msg {
        self.raw(&ifinfomsg(index, flags, change))
    }

    /// Appends one attribute.
    pub fn attr(mut self, ty: u16, payload: &[u8]) -> Msg {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Appends a NUL-terminated string attribute.
    pub fn attr_str(self, ty: u16, s: &str) -> Msg {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.attr(ty, &b)
    }

    /// Opens a nested attribute; close it with [`Msg::end`].
    pub fn nest(mut self, ty: u16) -> Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Closes the innermost nested attribute.
    pub fn end(mut self) -> Msg {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// Finishes the message with its sequence number.
    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut b = [0u8; IFINFOMSG_LEN];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// The outcome of parsing a reply buffer for the request `seq`.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// ACK (error code 0).
    Ack,
    /// The kernel refused with this errno.
    Errno(i32),
    /// Nothing for us in this buffer yet.
    More,
}

/// Looks for the NLMSG_ERROR answering `seq` in a buffer of netlink messages.
pub fn parse_ack(buf: &[u8], seq: u32) -> Reply {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let s = u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]);
        if ty == libc::NLMSG_ERROR as u16 && s == seq && len >= NLMSG_HDRLEN + 4 {
            let p = off + NLMSG_HDRLEN;
            let code = i32::from_ne_bytes([buf[p], buf[p + 1], buf[p + 2], buf[p + 3]]);
            return if code == 0 {
                Reply::Ack
            } else {
                Reply::Errno(-code)
            };
        }
        off += align(len);
    }
    Reply::More
}

/// A NETLINK_ROUTE socket bound to the network namespace it was opened in.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2) call; the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink { fd, seq: 1 })
    }

    /// Sends one request and waits for its ACK; `what` names the operation in errors.
    pub fn request(&mut self, msg: Msg, what: &str) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // SAFETY: sockaddr_nl is plain data; zeroed means "the kernel".
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: bytes and sa are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: buf is a valid writable buffer of the given length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
            }
            match parse_ack(&buf[..n as usize], seq) {
                Reply::Ack => return Ok(()),
                Reply::Errno(code) => {
                    let e = io::Error::from_raw_os_error(code);
                    return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
                }
                Reply::More => continue,
            }
        }
    }

    /// Creates a bridge named `name` with `mtu`.
    pub fn create_bridge(&mut self, name: &str, mtu: u32) -> io::Result<()> {
        let m = Msg::new(
            libc::RTM_NEWLINK,
            (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        )
        .ifinfo(0, 0, 0)
        .attr_str(IFLA_IFNAME, name)
        .attr(IFLA_MTU, &mtu.to_ne_bytes())
        .nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "bridge")
        .end();
        self.request(m, &format!("creating bridge {name}"))
    }

    /// Creates a veth pair: `host` here, `peer` directly inside the network namespace open as
    /// `peer_netns` (or here when None), both with `mtu`.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: Option<RawFd>,
        mtu: u32,
    ) -> io::Result<()> {
        let mut m = Msg::new(
            libc::RTM_NEWLINK,
            (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        )
        .ifinfo(0, 0, 0)
        .attr_str(IFLA_IFNAME, host)
        .attr(IFLA_MTU, &mtu.to_ne_bytes())
        .nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "veth")
        .nest(IFLA_INFO_DATA)
        .nest(VETH_INFO_PEER)
        .raw(&ifinfomsg(0, 0, 0))
        .attr_str(IFLA_IFNAME, peer)
        .attr(IFLA_MTU, &mtu.to_ne_bytes());
        if let Some(fd) = peer_netns {
            m = m.attr(IFLA_NET_NS_FD, &(fd as u32).to_ne_bytes());
        }
        let m = m.end().end().end();
        self.request(m, &format!("creating veth pair {host}/{peer}"))
    }

    /// Index of a link in this namespace.
    pub fn index(&self, name: &str) -> io::Result<i32> {
        let c = std::ffi::CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in link name"))?;
        // The ioctl inside if_nametoindex uses a socket of the calling thread's namespace,
        // the same as this netlink socket.
        // SAFETY: c is a valid NUL-terminated string.
        let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if i == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no network interface {name}"),
            ));
        }
        Ok(i as i32)
    }

    /// Whether a link exists.
    pub fn exists(&self, name: &str) -> bool {
        self.index(name).is_ok()
    }

    /// Attaches `link` to bridge `master`.
    pub fn set_master(&mut self, link: &str, master: &str) -> io::Result<()> {
        let (i, mi) = (self.index(link)?, self.index(master)?);
        let m = Msg::new(libc::RTM_NEWLINK, 0)
            .ifinfo(i, 0, 0)
            .attr(IFLA_MASTER, &(mi as u32).to_ne_bytes());
        self.request(m, &format!("attaching {link} to {master}"))
    }

    /// Sets a link up.
    pub fn set_up(&mut self, link: &str) -> io::Result<()> {
        let i = self.index(link)?;
        let up = libc::IFF_UP as u32;
        let m = Msg::new(libc::RTM_NEWLINK, 0).ifinfo(i, up, up);
        self.request(m, &format!("setting {link} up"))
    }

    /// Sets a link's MTU.
    pub fn set_mtu(&mut self, link: &str, mtu: u32) -> io::Result<()> {
        let i = self.index(link)?;
        let m = Msg::new(libc::RTM_NEWLINK, 0)
            .ifinfo(i, 0, 0)
            .attr(IFLA_MTU, &mtu.to_ne_bytes());
        self.request(m, &format!("setting the MTU of {link}"))
    }

    /// Sets a link's MAC address.
    pub fn set_mac(&mut self, link: &str, mac: [u8; 6]) -> io::Result<()> {
        let i = self.index(link)?;
        let m = Msg::new(libc::RTM_NEWLINK, 0)
            .ifinfo(i, 0, 0)
            .attr(IFLA_ADDRESS, &mac);
        self.request(m, &format!("setting the MAC address of {link}"))
    }

    /// Adds `addr/prefix` to a link; EEXIST is not an error. IPv4 addresses get their broadcast
    /// address; IPv6 ones are usable at once (no duplicate address detection: the addresses come
    /// from nook's own allocation).
    pub fn add_addr(&mut self, link: &str, addr: impl Into<IpAddr>, prefix: u8) -> io::Result<()> {
        let addr = addr.into();
        let i = self.index(link)?;
        let mut hdr = [0u8; 8];
        hdr[0] = family(addr);
        hdr[1] = prefix;
        hdr[3] = libc::RT_SCOPE_UNIVERSE;
        hdr[4..8].copy_from_slice(&(i as u32).to_ne_bytes());
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let m = match addr {
            IpAddr::V4(a) => Msg::new(libc::RTM_NEWADDR, flags)
                .raw(&hdr)
                .attr(IFA_LOCAL, &a.octets())
                .attr(IFA_ADDRESS, &a.octets())
                .attr(IFA_BROADCAST, &broadcast(a, prefix).octets()),
            IpAddr::V6(a) => {
                hdr[2] = IFA_F_NODAD as u8;
                Msg::new(libc::RTM_NEWADDR, flags)
                    .raw(&hdr)
                    .attr(IFA_LOCAL, &a.octets())
                    .attr(IFA_ADDRESS, &a.octets())
                    .attr(IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes())
            }
        };
        match self.request(m, &format!("adding {addr}/{prefix} to {link}")) {
            Err(e)
                if e.raw_os_error() == Some(libc::EEXIST)
                    || e.kind() == io::ErrorKind::AlreadyExists =>
            {
                Ok(())
            }
            r => r,
        }
    }

    /// Adds the default route (IPv4 or IPv6, by the gateway's family) via `gateway` out of `link`.
    pub fn add_default_route(&mut self, link: &str, gateway: impl Into<IpAddr>) -> io::Result<()> {
        let gateway = gateway.into();
        let i = self.index(link)?;
        let mut rt = [0u8; 12];
        rt[0] = family(gateway);
        rt[4] = libc::RT_TABLE_MAIN;
        rt[5] = libc::RTPROT_BOOT;
        rt[6] = libc::RT_SCOPE_UNIVERSE;
        rt[7] = libc::RTN_UNICAST;
        let gw = match gateway {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let m = Msg::new(
            libc::RTM_NEWROUTE,
            (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        )
        .raw(&rt)
        .attr(RTA_GATEWAY, &gw)
        .attr(RTA_OIF, &(i as u32).to_ne_bytes());
        self.request(m, &format!("adding the default route via {gateway}"))
    }

    /// Deletes a link (and, for a veth, its peer). NotFound when it does not exist.
    pub fn delete_link(&mut self, link: &str) -> io::Result<()> {
        let i = self.index(link)?;
        let m = Msg::new(libc::RTM_DELLINK, 0).ifinfo(i, 0, 0);
        self.request(m, &format!("deleting {link}"))
    }
}

/// The address family byte of `a` (AF_INET or AF_INET6).
fn family(a: IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// The broadcast address of `addr/prefix`.
pub fn broadcast(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(u32::from(addr) | !mask)
}

/// Names of the links in the calling thread's network namespace.
pub fn links() -> io::Result<Vec<String>> {
    let t = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    Ok(t.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_and_nesting() {
        let m = Msg::new(libc::RTM_NEWLINK, 0)
            .ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, "br0")
            .nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "bridge")
            .end()
            .finish(7);
        // header 16 + ifinfo 16 + ifname (4+4) + linkinfo (4 + kind 4+7 -> 12) = 56
        assert_eq!(m.len(), 56);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 56);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        let flags = u16::from_ne_bytes(m[6..8].try_into().unwrap());
        assert_ne!(flags & libc::NLM_F_ACK as u16, 0);
        // ifname attribute
        assert_eq!(u16::from_ne_bytes(m[32..34].try_into().unwrap()), 8);
        assert_eq!(&m[36..40], b"br0\0");
        // nested linkinfo: len 4 + 11 (unpadded kind) padded -> the nest length covers the
        // padded child
        let nl = u16::from_ne_bytes(m[40..42].try_into().unwrap());
        assert_eq!(nl, 16);
        let nt = u16::from_ne_bytes(m[42..44].try_into().unwrap());
        assert_eq!(nt, IFLA_LINKINFO | NLA_F_NESTED);
        assert_eq!(&m[48..55], b"bridge\0");
    }

    #[test]
    fn parses_acks_and_errors() {
        let mut b = vec![0u8; 36];
        b[0..4].copy_from_slice(&36u32.to_ne_bytes());
        b[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        b[8..12].copy_from_slice(&5u32.to_ne_bytes());
        assert_eq!(parse_ack(&b, 5), Reply::Ack);
        assert_eq!(parse_ack(&b, 6), Reply::More);
        b[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(parse_ack(&b, 5), Reply::Errno(libc::EEXIST));
        assert_eq!(parse_ack(&b[..10], 5), Reply::More);
    }

    #[test]
    fn broadcast_addresses() {
        assert_eq!(
            broadcast("10.88.0.1".parse().unwrap(), 16),
            "10.88.255.255".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(
            broadcast("192.168.1.7".parse().unwrap(), 24),
            "192.168.1.255".parse::<Ipv4Addr>().unwrap()
        );
    }

    /// The real thing, as root: a bridge in one namespace, a veth pair with its peer created
    /// directly in another, addresses, a default route, and a TCP connection across.
    #[test]
    fn bridge_veth_route_connect() {
        use crate::network::netns::{create_netns, remove_netns, with_netns};
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        create_netns(&a).unwrap();
        create_netns(&b).unwrap();
        let bp = b.clone();
        with_netns(&a, move || {
            let mut nl = Netlink::open()?;
            nl.create_bridge("tbr0", 1500)?;
            assert!(nl.create_bridge("tbr0", 1500).is_err());
            nl.add_addr("tbr0", Ipv4Addr::new(10, 77, 0, 1), 24)?;
            nl.add_addr("tbr0", Ipv4Addr::new(10, 77, 0, 1), 24)?; // EEXIST tolerated
            nl.set_up("tbr0")?;
            let ns = std::fs::File::open(&bp)?;
            nl.create_veth("nktest", "eth0", Some(ns.as_raw_fd()), 1400)?;
            nl.set_master("nktest", "tbr0")?;
            nl.set_up("nktest")?;
            assert!(links()?.contains(&"nktest".to_string()));
            assert!(!links()?.contains(&"eth0".to_string()));
            Ok(())
        })
        .unwrap();
        let l = with_netns(&a, || std::net::TcpListener::bind("10.77.0.1:0")).unwrap();
        let port = l.local_addr().unwrap().port();
        let peer = with_netns(&b, move || {
            let mut nl = Netlink::open()?;
            nl.add_addr("eth0", Ipv4Addr::new(10, 77, 0, 2), 24)?;
            nl.set_up("eth0")?;
            nl.add_default_route("eth0", Ipv4Addr::new(10, 77, 0, 1))?;
            let mtu = std::fs::read_to_string("/proc/thread-self/net/dev")?;
            assert!(mtu.contains("eth0"));
            let s = std::net::TcpStream::connect(("10.77.0.1", port))?;
            s.local_addr()
        })
        .unwrap();
        let (_c, from) = l.accept().unwrap();
        assert_eq!(from, peer);
        assert_eq!(from.ip(), std::net::IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)));
        // deleting the host side removes the pair
        with_netns(&a, || Netlink::open()?.delete_link("nktest")).unwrap();
        assert!(!with_netns(&b, links).unwrap().contains(&"eth0".to_string()));
        assert!(with_netns(&a, || Netlink::open()?.delete_link("nktest")).is_err());
        remove_netns(&a).unwrap();
        remove_netns(&b).unwrap();
    }
}
