//! Direct published ports (`--port-driver direct`): the container's own listening socket is
//! made in the host's network namespace, so connections to the published port reach it with
//! no relay in between (host-loopback speed, and the container sees the real peer address for
//! TCP and UDP alike).
//!
//! How: the container's seccomp filter sends its `bind(2)` calls to the shim
//! (`SCMP_ACT_NOTIFY`; the runtime hands the notification descriptor over on the socket named
//! by the spec's `listenerPath`). For a bind to a published container port (any address but
//! loopback), the shim makes a socket of the same family and type in the host's namespace
//! (where it lives), binds it to the published host address and port, copies the options that
//! matter, and puts it in place of the container's descriptor (`SECCOMP_IOCTL_NOTIF_ADDFD`
//! with `SETFD`); the bind then returns 0. Every other bind runs as usual.
//!
//! nookd binds the host ports before the container starts (so a port in use is an error at
//! `run`) and hands them to the shim as placeholders: a placeholder of the right family is
//! given to the container as is; otherwise it is closed and the port bound again with the
//! container's family (an IPv6 wildcard socket then serves IPv4 clients too, as the container
//! asked). The shim exits with the container, so the ports are released when it stops.
//!
//! Other containers still reach a published TCP port at the container's address: once the
//! container's socket has moved to the host, the shim listens on that port in the container's
//! namespace and relays those connections to the host port (they arrive from the host's
//! loopback). What changes for the container: `getsockname` shows the host port, and a
//! published UDP port answers only on the host.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};

use crate::network::ports::{PortMapping, Proto};
use std::sync::atomic::Ordering;

use super::ShimConfig;

/// The socket in the bundle where the runtime delivers the seccomp notification descriptors
/// (relative: the runtime runs in the bundle directory).
pub const LISTENER: &str = "seccomp.sock";

/// Whether this kernel can do it (seccomp's ADDFD came in Linux 5.9, pidfd_getfd in 5.6):
/// the reason if not.
pub fn unsupported() -> Option<String> {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = rel
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    ((major, minor) < (5, 9)).then(|| {
        format!(
            "--port-driver direct needs Linux 5.9 or later (seccomp descriptor hand-over); this is {}: use --port-driver relay",
            rel.trim()
        )
    })
}

/// The listener's path for the spec: absolute (crun insists), through the runtime's working
/// directory (the bundle) when the absolute path is too long for a socket address.
pub fn listener_path(bundle: &std::path::Path) -> String {
    let abs = bundle.join(LISTENER).to_string_lossy().into_owned();
    if abs.len() < 108 {
        abs
    } else {
        format!("/proc/self/cwd/{LISTENER}")
    }
}

/// The audit architecture of the filters' native syscalls.
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xC000_00B7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE_ARCH: u32 = 0;

/// The published ports served directly, and the host sockets nookd bound for them.
pub struct Ports {
    maps: Vec<PortMapping>,
    /// Placeholders by (host port, protocol): bound by nookd, not listening.
    held: Mutex<HashMap<(u16, Proto), OwnedFd>>,
    /// TCP mappings whose container port is relayed inside the container's namespace.
    inside: Mutex<std::collections::HashSet<u16>>,
}

impl Ports {
    /// `fds[i]` (inherited) holds `maps[i]`'s host port; missing ones are bound on demand.
    pub fn new(maps: Vec<PortMapping>, fds: &[RawFd]) -> Ports {
        let mut held = HashMap::new();
        for (m, fd) in maps.iter().zip(fds) {
            // close-on-exec: the runtime, started next, must not keep a placeholder open
            // after the shim gives its port to the container
            // SAFETY: fcntl on a descriptor nookd passed to this process.
            unsafe { libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            // SAFETY: nookd passed these descriptors to this process for it to own.
            held.insert((m.host_port, m.proto), unsafe { OwnedFd::from_raw_fd(*fd) });
        }
        Ports {
            maps,
            held: Mutex::new(held),
            inside: Mutex::default(),
        }
    }

    fn find(&self, port: u16, proto: Option<Proto>) -> Option<&PortMapping> {
        self.maps
            .iter()
            .find(|m| m.container_port == port && proto.is_none_or(|p| p == m.proto))
    }
}

/// Listens on [`LISTENER`] (in the current directory) for the runtime's notification
/// descriptors, each served on a thread of its own. Returns once listening.
pub fn serve(ports: Arc<Ports>) -> io::Result<()> {
    let _ = std::fs::remove_file(LISTENER);
    let l = UnixListener::bind(LISTENER)?;
    std::thread::Builder::new()
        .name("nook-seccomp".into())
        .spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                match super::recv_fds(conn.as_fd()) {
                    Ok(fds) => {
                        for fd in fds {
                            let ports = ports.clone();
                            let _ = std::thread::Builder::new()
                                .name("nook-notify".into())
                                .spawn(move || notify_loop(fd, &ports));
                        }
                    }
                    Err(e) => eprintln!("nook-shim: reading a seccomp descriptor: {e}"),
                }
            }
        })?;
    Ok(())
}

/// Answers one filter's notifications until every process using it is gone.
fn notify_loop(fd: OwnedFd, ports: &Ports) {
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if pfd.revents & libc::POLLIN == 0 {
            // POLLHUP: no process uses the filter any more
            return;
        }
        // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the ioctl fills `n`, a struct of the size it expects.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) } < 0 {
            // ENOENT: the caller died before we read it
            continue;
        }
        let resp = match handle(fd.as_raw_fd(), &n, ports) {
            Some(Answer::Done) => libc::seccomp_notif_resp {
                id: n.id,
                val: 0,
                error: 0,
                flags: 0,
            },
            Some(Answer::Fail(errno)) => libc::seccomp_notif_resp {
                id: n.id,
                val: 0,
                error: -errno,
                flags: 0,
            },
            Some(Answer::Continue) => libc::seccomp_notif_resp {
                id: n.id,
                val: 0,
                error: 0,
                flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            },
            None => continue,
        };
        // SAFETY: the ioctl reads `resp`, a struct of the size it expects. It fails only when
        // the caller is gone, which needs no answer.
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    }
}

enum Answer {
    /// The bind was done by the shim: return 0.
    Done,
    /// Return this errno.
    Fail(i32),
    /// Let the kernel run the bind as asked.
    Continue,
}

fn id_valid(nfd: RawFd, id: u64) -> bool {
    // SAFETY: the ioctl reads one u64.
    unsafe { libc::ioctl(nfd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
}

/// The address a bind asks for.
fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(..2)?.try_into().ok()?) as i32;
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let a: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    }
}

fn handle(nfd: RawFd, n: &libc::seccomp_notif, ports: &Ports) -> Option<Answer> {
    if n.data.nr != libc::SYS_bind as i32 || n.data.arch != NATIVE_ARCH {
        return Some(Answer::Continue);
    }
    let pid = n.pid as i32;
    let [sockfd, addr_ptr, addr_len, ..] = n.data.args;
    let len = (addr_len as usize).min(128);
    let mut buf = vec![0u8; len];
    let mem = File::open(format!("/proc/{pid}/mem")).ok();
    let netns = File::open(format!("/proc/{pid}/ns/net")).ok();
    // the pid may have been reused by now unless the notification is still pending
    if !id_valid(nfd, n.id) {
        return None;
    }
    let Some(mem) = mem else {
        return Some(Answer::Continue);
    };
    if mem.read_exact_at(&mut buf, addr_ptr).is_err() {
        return Some(Answer::Continue);
    }
    let Some(addr) = parse_sockaddr(&buf) else {
        return Some(Answer::Continue);
    };
    if is_loopback(addr.ip()) || ports.find(addr.port(), None).is_none() {
        return Some(Answer::Continue);
    }
    // the container's socket, to learn its type and options
    let theirs = match take_fd(pid, sockfd as i32) {
        Ok(fd) => fd,
        Err(_) => return Some(Answer::Continue),
    };
    let proto = match getsockopt_int(&theirs, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(libc::SOCK_STREAM) => Proto::Tcp,
        Ok(libc::SOCK_DGRAM) => Proto::Udp,
        _ => return Some(Answer::Continue),
    };
    let ty = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    let Some(m) = ports.find(addr.port(), Some(proto)) else {
        return Some(Answer::Continue);
    };
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let Some(host) = host_addr(m, family) else {
        // an IPv6 host address for an IPv4 socket: no way; the bind stays inside
        return Some(Answer::Continue);
    };
    let ours = match host_socket(ports, m, &theirs, family, ty, host) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!(
                "nook-shim: publishing {}: binding {host}: {e}",
                m.container_port
            );
            return Some(Answer::Fail(e.raw_os_error().unwrap_or(libc::EADDRINUSE)));
        }
    };
    // the descriptor's close-on-exec flag, as the container set it
    let cloexec = fd_cloexec(pid, sockfd as i32);
    let add = libc::seccomp_notif_addfd {
        id: n.id,
        flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
        srcfd: ours.as_raw_fd() as u32,
        newfd: sockfd as u32,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: the ioctl reads `add`, a struct of the size it expects.
    if unsafe { libc::ioctl(nfd, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &add) } < 0 {
        let e = io::Error::last_os_error();
        eprintln!("nook-shim: handing the host socket for {m} to the container: {e}");
        return Some(Answer::Continue);
    }
    if m.proto == Proto::Tcp {
        if let Some(ns) = netns {
            relay_inside(ports, m, &ours, ns);
        }
    }
    Some(Answer::Done)
}

/// Listens on the container port in the container's namespace (once per mapping) and relays
/// what arrives there to the host socket now serving it, so that other containers reach the
/// port at the container's address as before.
fn relay_inside(ports: &Ports, m: &PortMapping, ours: &OwnedFd, netns: File) {
    if !ports
        .inside
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(m.container_port)
    {
        return;
    }
    // the host socket's own address, as a client reaches it
    let target = match socket2::SockRef::from(ours).local_addr().and_then(|a| {
        a.as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }) {
        Ok(SocketAddr::V4(a)) if a.ip().is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        Ok(SocketAddr::V6(a)) if a.ip().is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        Ok(a) => a,
        Err(_) => return,
    };
    let port = m.container_port;
    // sockets belong to the namespace they are made in: a short-lived thread makes the
    // listener inside, the accepting thread stays in the host's namespace
    let made = std::thread::spawn(move || -> io::Result<std::net::TcpListener> {
        // SAFETY: setns on a valid namespace descriptor, for this thread only.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        std::net::TcpListener::bind(("::", port))
            .or_else(|_| std::net::TcpListener::bind(("0.0.0.0", port)))
    })
    .join();
    let l = match made {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            eprintln!("nook-shim: listening on {port} in the container's namespace: {e}");
            return;
        }
        Err(_) => return,
    };
    let _ = std::thread::Builder::new()
        .name("nook-inside".into())
        .spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                match std::net::TcpStream::connect(target) {
                    Ok(h) => {
                        let _ = crate::network::forward::relay_detached(c, h);
                    }
                    Err(e) => eprintln!("nook-shim: relaying to {target}: {e}"),
                }
            }
        });
}

/// The host address for a container socket of `family`: an IPv4 wildcard host address serves
/// an IPv6 socket as `[::]` (dual-stack unless the container made it IPv6-only), and a
/// specific IPv4 address as its IPv4-mapped form.
fn host_addr(m: &PortMapping, family: i32) -> Option<SocketAddr> {
    let ip = match (m.host_ip, family) {
        (IpAddr::V4(a), libc::AF_INET) => IpAddr::V4(a),
        (IpAddr::V4(a), _) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (IpAddr::V4(a), _) => IpAddr::V6(a.to_ipv6_mapped()),
        (IpAddr::V6(a), libc::AF_INET6) => IpAddr::V6(a),
        _ => return None,
    };
    Some(SocketAddr::new(ip, m.host_port))
}

/// The container's descriptor `fd`, duplicated into this process.
fn take_fd(pid: i32, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open and pidfd_getfd return new descriptors or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: as above.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// Whether the container's descriptor `fd` is close-on-exec (from /proc/PID/fdinfo).
fn fd_cloexec(pid: i32, fd: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|v| i64::from_str_radix(v.trim(), 8).ok())
        })
        .is_some_and(|f| f & libc::O_CLOEXEC as i64 != 0)
}

fn getsockopt_int(fd: &OwnedFd, level: i32, opt: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for an int option.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

fn setsockopt_int(fd: &OwnedFd, level: i32, opt: i32, v: i32) -> io::Result<()> {
    // SAFETY: v is a valid int option value.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The socket options copied from the container's socket (those that matter before bind or
/// are inherited by accepted connections).
const COPIED: &[(i32, i32)] = &[
    (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::SOL_SOCKET, libc::SO_BROADCAST),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
];

/// The host socket for `m`: the placeholder when its family fits, else a new one bound to
/// `host`; with the container socket's options and blocking mode.
fn host_socket(
    ports: &Ports,
    m: &PortMapping,
    theirs: &OwnedFd,
    family: i32,
    ty: i32,
    host: SocketAddr,
) -> io::Result<OwnedFd> {
    let mut held = ports.held.lock().unwrap_or_else(|e| e.into_inner());
    let placeholder = held.remove(&(m.host_port, m.proto));
    let reuse = match &placeholder {
        Some(p) => getsockopt_int(p, libc::SOL_SOCKET, libc::SO_DOMAIN)? == family,
        None => false,
    };
    let fd = if reuse {
        placeholder.expect("checked above")
    } else {
        // the port is free again once the placeholder is closed
        drop(placeholder);
        // SAFETY: socket(2) returns a new descriptor or -1.
        let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        if family == libc::AF_INET6 {
            let v6only = match host.ip() {
                IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => 0,
                _ => getsockopt_int(theirs, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).unwrap_or(0),
            };
            setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v6only)?;
        }
        if let Ok(v) = getsockopt_int(theirs, libc::SOL_SOCKET, libc::SO_REUSEPORT) {
            let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, v);
        }
        let sa = socket2::SockAddr::from(host);
        // a copy of the placeholder may still be closing elsewhere: give it a moment
        let mut tries = 0;
        // SAFETY: sa holds a valid sockaddr of the length given.
        while unsafe { libc::bind(fd.as_raw_fd(), sa.as_ptr().cast(), sa.len()) } < 0 {
            let e = io::Error::last_os_error();
            tries += 1;
            if e.raw_os_error() != Some(libc::EADDRINUSE) || tries > 40 {
                return Err(e);
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        fd
    };
    for &(level, opt) in COPIED {
        if let Ok(v) = getsockopt_int(theirs, level, opt) {
            let _ = setsockopt_int(&fd, level, opt, v);
        }
    }
    // O_NONBLOCK lives in the open file: take the container's
    // SAFETY: fcntl on valid descriptors.
    unsafe {
        let theirs_fl = libc::fcntl(theirs.as_raw_fd(), libc::F_GETFL);
        let ours_fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if theirs_fl >= 0 && ours_fl >= 0 {
            let fl = (ours_fl & !libc::O_NONBLOCK) | (theirs_fl & libc::O_NONBLOCK);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl);
        }
    }
    Ok(fd)
}

/// Relays the published ports (`cfg.relay`), on tasks of this process's runtime, from a
/// socket thread in the containers' network namespace ([`forward::SocketFactory`]).
pub(super) fn relay_ports(cfg: &ShimConfig) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
    use crate::network::forward;
    let Some(relay) = &cfg.relay else {
        return Ok(Vec::new());
    };
    let f = forward::SocketFactory::start(&relay.netns)?;
    f.transparent.store(relay.transparent, Ordering::Relaxed);
    let ports = cfg
        .ports
        .iter()
        .zip(&cfg.port_fds)
        .map(|(m, fd)| {
            // SAFETY: nookd passed these descriptors to this process for it to own.
            (m.clone(), unsafe { OwnedFd::from_raw_fd(*fd) })
        })
        .collect();
    forward::serve_all(
        &tokio::runtime::Handle::current(),
        ports,
        relay.ip,
        &Arc::new(f),
    )
    .map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(host_ip: &str, host_port: u16, container_port: u16) -> PortMapping {
        PortMapping {
            host_ip: host_ip.parse().unwrap(),
            host_port,
            container_port,
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn host_address_follows_the_container_socket_family() {
        let any = map("0.0.0.0", 8080, 80);
        assert_eq!(
            host_addr(&any, libc::AF_INET).unwrap().to_string(),
            "0.0.0.0:8080"
        );
        assert_eq!(
            host_addr(&any, libc::AF_INET6).unwrap().to_string(),
            "[::]:8080"
        );
        let lo = map("127.0.0.1", 8080, 80);
        assert_eq!(
            host_addr(&lo, libc::AF_INET6).unwrap().to_string(),
            "[::ffff:127.0.0.1]:8080"
        );
        let v6 = map("::1", 8080, 80);
        assert!(host_addr(&v6, libc::AF_INET).is_none());
        assert_eq!(
            host_addr(&v6, libc::AF_INET6).unwrap().to_string(),
            "[::1]:8080"
        );
    }

    #[test]
    fn sockaddrs_parse_and_roundtrip() {
        for s in ["0.0.0.0:80", "10.88.0.5:8080", "[::]:80", "[fd88::5]:443"] {
            let a: SocketAddr = s.parse().unwrap();
            let sa = socket2::SockAddr::from(a);
            // SAFETY: the bytes of a valid sockaddr of that length.
            let b =
                unsafe { std::slice::from_raw_parts(sa.as_ptr().cast::<u8>(), sa.len() as usize) };
            assert_eq!(parse_sockaddr(b), Some(a));
        }
        assert_eq!(parse_sockaddr(&[1, 0, 0, 0]), None, "AF_UNIX is not ours");
        assert_eq!(parse_sockaddr(&[2, 0]), None, "too short");
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("::".parse().unwrap()));
    }
}
