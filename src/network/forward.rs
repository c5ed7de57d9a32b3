//! Published ports: listeners in the host's network namespace whose connections are relayed
//! into the containers' namespace. nookd binds them ([`bind`]) and hands them to the
//! container's shim, which serves them ([`serve_all`]) for as long as the container runs:
//! the shim outlives nookd, so a daemon restart cuts no connection and refuses none.
//!
//! TCP connections are relayed with splice(2), so the bytes never enter user space: by two
//! threads per connection doing blocking splice (the fastest way measured), or, beyond
//! [`MAX_THREADED`] concurrent connections, by a tokio task waiting for readiness.
//!
//! Sockets keep the network namespace they were created in, so one long-lived thread that
//! joined the containers' namespace ([`SocketFactory`]) creates the inside sockets on request,
//! and the tokio tasks in the host namespace use them.
//!
//! Source addresses: for TCP the inside socket is bound with IP_TRANSPARENT to the client's own
//! address, so the container sees the real peer. Replies from the container go to its gateway
//! (the bridge in the containers' namespace), where an nft rule marks packets that belong to a
//! transparent socket and a policy route (`fwmark 1 → table 100: local 0.0.0.0/0 dev lo`)
//! delivers them locally, as in TPROXY setups. Clients on the host's loopback appear as
//! 10.0.2.2, the host's address as seen through slirp4netns/pasta. If that setup is missing or
//! a bind fails, the connection is made without it and the container sees its gateway address.
//! UDP is relayed per client address with plain sockets: the container sees its gateway.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::ports::{PortMapping, Proto};
use crate::error::{Error, Result};

/// The address the host's loopback is known by inside the containers' namespace.
pub const HOST_LOOPBACK_ALIAS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// How long an idle UDP session is kept.
pub const UDP_IDLE: Duration = Duration::from_secs(60);

struct SockReq {
    proto: Proto,
    transparent: Option<SocketAddrV4>,
    reply: tokio::sync::oneshot::Sender<io::Result<OwnedFd>>,
}

/// A thread living in a network namespace that creates sockets there.
pub struct SocketFactory {
    tx: Mutex<std::sync::mpsc::Sender<SockReq>>,
    /// Whether the transparent-proxy routing is in place in that namespace.
    pub transparent: AtomicBool,
}

fn new_socket(proto: Proto, transparent: Option<SocketAddrV4>) -> io::Result<OwnedFd> {
    let ty = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: plain socket(2); the result is checked and owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Some(src) = transparent {
        let one: libc::c_int = 1;
        // SAFETY: valid fd and option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_IP,
                libc::IP_TRANSPARENT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: src.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*src.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sa is a valid sockaddr_in for the length given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

impl SocketFactory {
    /// Starts the thread in the namespace at `netns`.
    pub fn start(netns: &Path) -> io::Result<SocketFactory> {
        Self::spawn(Some(std::fs::File::open(netns)?))
    }

    /// A factory that makes its sockets in the caller's own namespace (for the unit tests'
    /// fake kernel).
    #[cfg(test)]
    pub fn here() -> io::Result<SocketFactory> {
        Self::spawn(None)
    }

    fn spawn(ns: Option<std::fs::File>) -> io::Result<SocketFactory> {
        let (tx, rx) = std::sync::mpsc::channel::<SockReq>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        std::thread::Builder::new()
            .name("nook-sockets".into())
            .spawn(move || {
                if let Some(ns) = ns {
                    // SAFETY: setns on a valid namespace fd; only this thread changes
                    // namespace and it stays there for its whole life.
                    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                        let _ = ready_tx.send(Err(io::Error::last_os_error()));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(()));
                while let Ok(r) = rx.recv() {
                    let _ = r.reply.send(new_socket(r.proto, r.transparent));
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the socket thread died"))??;
        Ok(SocketFactory {
            tx: Mutex::new(tx),
            transparent: AtomicBool::new(false),
        })
    }

    async fn socket(&self, proto: Proto, transparent: Option<SocketAddrV4>) -> io::Result<OwnedFd> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(SockReq {
                proto,
                transparent,
                reply,
            })
            .map_err(|_| {
                io::Error::other("the socket thread of the containers' network is gone")
            })?;
        rx.await
            .map_err(|_| io::Error::other("the socket thread of the containers' network is gone"))?
    }

    /// Connects to `to` from inside the namespace, as `from` when transparent proxying works.
    pub async fn connect(&self, to: SocketAddr, from: Option<SocketAddr>) -> io::Result<TcpStream> {
        // a loopback target (--network host) drops packets from a foreign source: plain then
        let src = if self.transparent.load(Ordering::Relaxed) && !to.ip().is_loopback() {
            match from {
                Some(SocketAddr::V4(a)) if a.ip().is_loopback() => {
                    Some(SocketAddrV4::new(HOST_LOOPBACK_ALIAS, a.port()))
                }
                Some(SocketAddr::V4(a)) if !a.ip().is_unspecified() => Some(a),
                _ => None,
            }
        } else {
            None
        };
        if let Some(src) = src {
            match self.connect_from(to, Some(src)).await {
                Ok(s) => return Ok(s),
                Err(e) => tracing::debug!("transparent connect as {src} failed ({e}); plain"),
            }
        }
        self.connect_from(to, None).await
    }

    async fn connect_from(
        &self,
        to: SocketAddr,
        src: Option<SocketAddrV4>,
    ) -> io::Result<TcpStream> {
        let fd = self.socket(Proto::Tcp, src).await?;
        let std = std::net::TcpStream::from(fd);
        let s = TcpSocket::from_std_stream(std);
        s.connect(to).await
    }

    /// A UDP socket inside the namespace, connected to `to`.
    pub async fn udp(&self, to: SocketAddr) -> io::Result<UdpSocket> {
        let fd = self.socket(Proto::Udp, None).await?;
        let s = UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
        s.connect(to).await?;
        Ok(s)
    }
}

/// A bound host socket waiting to be served.
pub enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl Bound {
    /// A bound host socket of protocol `proto` from its descriptor (passed from nookd).
    pub fn from_fd(proto: Proto, fd: OwnedFd) -> Bound {
        match proto {
            Proto::Tcp => Bound::Tcp(fd.into()),
            Proto::Udp => Bound::Udp(fd.into()),
        }
    }
}

impl From<Bound> for OwnedFd {
    fn from(b: Bound) -> OwnedFd {
        match b {
            Bound::Tcp(l) => l.into(),
            Bound::Udp(u) => u.into(),
        }
    }
}

/// Where a container's relayed ports go: handed to its shim with the bound host sockets, so
/// the relay lives as long as the container, not as long as nookd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTarget {
    /// The containers' network namespace (a bind mount of the pause process's).
    pub netns: PathBuf,
    /// The container's address there (127.0.0.1 for `--network host`).
    pub ip: IpAddr,
    /// Whether the transparent-proxy routing is in place (the container sees the client).
    pub transparent: bool,
}

/// Serves bound host sockets (`ports`, as published) by relaying them to `ip` through `f`.
/// All or nothing: on error the tasks started are aborted.
pub fn serve_all(
    handle: &tokio::runtime::Handle,
    ports: Vec<(PortMapping, OwnedFd)>,
    ip: IpAddr,
    f: &Arc<SocketFactory>,
) -> Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for (m, fd) in ports {
        match serve(
            handle,
            Bound::from_fd(m.proto, fd),
            target(ip, m.container_port),
            f.clone(),
        ) {
            Ok(t) => tasks.push(t),
            Err(e) => {
                tasks.iter().for_each(|t| t.abort());
                return Err(e);
            }
        }
    }
    Ok(tasks)
}

/// Binds the host side of `m` (in the calling thread's namespace: the host's), resolving a
/// host port 0 to the port the kernel picked. Errors say what is wrong and what to do.
pub fn bind(m: &PortMapping) -> Result<(Bound, PortMapping)> {
    let addr = SocketAddr::new(m.host_ip, m.host_port);
    let res = match m.proto {
        Proto::Tcp => std::net::TcpListener::bind(addr).map(Bound::Tcp),
        Proto::Udp => std::net::UdpSocket::bind(addr).map(Bound::Udp),
    };
    let b = res.map_err(|e| bind_error(m, e))?;
    let local = match &b {
        Bound::Tcp(l) => l.local_addr(),
        Bound::Udp(u) => u.local_addr(),
    }
    .map_err(|e| Error::io("reading a bound address", e))?;
    let mut out = m.clone();
    out.host_port = local.port();
    Ok((b, out))
}

/// Reserves the host side of `m` for a direct port: bound like [`bind`] (same errors), but a
/// TCP socket does not listen, so until the container takes the port over, connections are
/// refused rather than left waiting.
pub fn reserve(m: &PortMapping) -> Result<(OwnedFd, PortMapping)> {
    use socket2::{Domain, Socket, Type};
    let addr = SocketAddr::new(m.host_ip, m.host_port);
    let ty = match m.proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    let s = Socket::new(Domain::for_address(addr), ty, None)
        .map_err(|e| Error::io("making a socket", e))?;
    if m.proto == Proto::Tcp {
        // as std's listeners: a port in TIME_WAIT from the last run is not "in use"
        s.set_reuse_address(true)
            .map_err(|e| Error::io("SO_REUSEADDR", e))?;
    }
    s.bind(&addr.into()).map_err(|e| bind_error(m, e))?;
    if m.proto == Proto::Tcp {
        // bound: now nobody else may bind an overlapping address, SO_REUSEADDR or not (a
        // socket that does not listen is otherwise shared with any SO_REUSEADDR binder)
        s.set_reuse_address(false)
            .map_err(|e| Error::io("SO_REUSEADDR", e))?;
    }
    let local = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| Error::Internal("reading a bound address".into()))?;
    let mut out = m.clone();
    out.host_port = local.port();
    Ok((s.into(), out))
}

fn bind_error(m: &PortMapping, e: io::Error) -> Error {
    let start = super::ports::unprivileged_port_start();
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => Error::Precondition(format!(
            "port {} is already in use on {} ({}): stop what listens there or publish another host port",
            m.host_port, m.host_ip, m.proto
        )),
        Some(libc::EACCES) if m.host_port < start => Error::Precondition(format!(
            "port {} is below net.ipv4.ip_unprivileged_port_start ({start}), which rootless nook cannot bind: publish a port >= {start}, or lower it with `sudo sysctl net.ipv4.ip_unprivileged_port_start={}`",
            m.host_port, m.host_port
        )),
        Some(libc::EADDRNOTAVAIL) => Error::InvalidArgument(format!(
            "cannot publish on {}: it is not an address of this host",
            m.host_ip
        )),
        _ => Error::io(format!("binding {}:{}/{}", m.host_ip, m.host_port, m.proto), e),
    }
}

/// Serves a bound host socket: relays to `target` through `f`. Returns the task; aborting it
/// closes the listener and every relayed connection.
pub fn serve(
    handle: &tokio::runtime::Handle,
    bound: Bound,
    target: SocketAddr,
    f: Arc<SocketFactory>,
) -> Result<JoinHandle<()>> {
    let _g = handle.enter();
    match bound {
        Bound::Tcp(l) => {
            l.set_nonblocking(true)
                .map_err(|e| Error::io("listener", e))?;
            let l = TcpListener::from_std(l).map_err(|e| Error::io("listener", e))?;
            Ok(handle.spawn(serve_tcp(l, target, f)))
        }
        Bound::Udp(u) => {
            u.set_nonblocking(true)
                .map_err(|e| Error::io("udp socket", e))?;
            let u = UdpSocket::from_std(u).map_err(|e| Error::io("udp socket", e))?;
            Ok(handle.spawn(serve_udp(Arc::new(u), target, f)))
        }
    }
}

async fn serve_tcp(l: TcpListener, target: SocketAddr, f: Arc<SocketFactory>) {
    // connections live in a JoinSet owned by this task: aborting the task drops them all
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((c, peer)) => {
                    let f = f.clone();
                    conns.spawn(async move {
                        let inside = match f.connect(target, Some(peer)).await {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::debug!("port forward to {target}: {e}");
                                return;
                            }
                        };
                        let _ = c.set_nodelay(true);
                        let _ = inside.set_nodelay(true);
                        let res = match ThreadSlot::take() {
                            Some(slot) => relay_threads(c, inside, slot).await,
                            None => relay(&c, &inside).await,
                        };
                        if let Err(e) = res {
                            tracing::debug!("relay to {target}: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accept on a published port: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_udp(host: Arc<UdpSocket>, target: SocketAddr, f: Arc<SocketFactory>) {
    let sessions: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = host.recv_from(&mut buf) => {
                let (n, peer) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!("udp recv on a published port: {e}");
                        continue;
                    }
                };
                let existing = sessions.lock().unwrap_or_else(|e| e.into_inner()).get(&peer).cloned();
                let inside = match existing {
                    Some(s) => s,
                    None => {
                        let s = match f.udp(target).await {
                            Ok(s) => Arc::new(s),
                            Err(e) => {
                                tracing::debug!("udp forward to {target}: {e}");
                                continue;
                            }
                        };
                        sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, s.clone());
                        let (host, s2, sessions) = (host.clone(), s.clone(), sessions.clone());
                        tasks.spawn(async move {
                            let mut b = vec![0u8; 65536];
                            while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, s2.recv(&mut b)).await {
                                let _ = host.send_to(&b[..n], peer).await;
                            }
                            sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
                        });
                        s
                    }
                };
                let _ = inside.send(&buf[..n]).await;
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// A pipe for splice(2), as large as the system allows (up to 1 MiB).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a valid pipe fd; failure (a lower limit) is harmless.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    Ok((r, w))
}

/// One splice(2) between two descriptors, with no offsets.
fn splice_with(from: i32, to: i32, len: usize, flags: libc::c_uint) -> io::Result<usize> {
    // SAFETY: splice between two valid descriptors with no offsets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    splice_with(from, to, len, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
}

/// Moves bytes from `from` to `to` through a pipe with splice(2), never copying them through
/// user space, until EOF; then shuts down `to`'s write side.
async fn splice_one(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    use tokio::io::Interest;
    let (pr, pw) = pipe()?;
    let (fd_from, fd_to) = (from.as_raw_fd(), to.as_raw_fd());
    loop {
        from.readable().await?;
        let n = match from.try_io(Interest::READABLE, || {
            splice(fd_from, pw.as_raw_fd(), 1 << 20)
        }) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || splice(pr.as_raw_fd(), fd_to, left)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
    // SAFETY: shutdown of the write half of a valid socket.
    unsafe { libc::shutdown(fd_to, libc::SHUT_WR) };
    Ok(())
}

/// Relays both directions of a connection with splice(2) until both ends are done.
async fn relay(a: &TcpStream, b: &TcpStream) -> io::Result<()> {
    let (x, y) = tokio::join!(splice_one(a, b), splice_one(b, a));
    x.and(y)
}

fn splice_blocking(from: i32, to: i32, len: usize, flags: libc::c_uint) -> io::Result<usize> {
    loop {
        match splice_with(from, to, len, flags) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// One direction on a thread of its own, with blocking sockets and a blocking pipe.
fn splice_thread(from: &std::net::TcpStream, to: &std::net::TcpStream) -> io::Result<()> {
    let (pr, pw) = pipe()?;
    for fd in [pr.as_raw_fd(), pw.as_raw_fd()] {
        // SAFETY: fcntl on a valid pipe fd.
        unsafe { libc::fcntl(fd, libc::F_SETFL, 0) };
    }
    let (fd_from, fd_to) = (from.as_raw_fd(), to.as_raw_fd());
    let res = (|| loop {
        let n = splice_blocking(fd_from, pw.as_raw_fd(), 1 << 20, libc::SPLICE_F_MOVE)?;
        if n == 0 {
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            left -= splice_blocking(
                pr.as_raw_fd(),
                fd_to,
                left,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
            )?;
        }
    })();
    let _ = to.shutdown(std::net::Shutdown::Write);
    res
}

/// Starts both directions of a connection (blocking sockets), each on a relay thread of its
/// own; `done` gets each direction's result as it ends, and is dropped when both have.
fn spawn_directions(
    a: &Arc<std::net::TcpStream>,
    b: &Arc<std::net::TcpStream>,
    done: impl Fn(io::Result<()>) + Send + Sync + 'static,
) -> io::Result<()> {
    a.set_nonblocking(false)?;
    b.set_nonblocking(false)?;
    let done = Arc::new(done);
    for (from, to) in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
        let done = done.clone();
        std::thread::Builder::new()
            .name("nook-relay".into())
            .stack_size(RELAY_STACK)
            .spawn(move || done(splice_thread(&from, &to)))?;
    }
    Ok(())
}

/// Relays a connection both ways, each direction on a thread of its own with blocking splice,
/// for callers without a tokio runtime (the shim). Returns once the threads are started.
pub fn relay_detached(a: std::net::TcpStream, b: std::net::TcpStream) -> io::Result<()> {
    spawn_directions(&Arc::new(a), &Arc::new(b), |_| {})
}

/// Shuts both sockets down when dropped (the task was aborted): the blocked threads wake up.
struct ShutdownOnDrop(Arc<std::net::TcpStream>, Arc<std::net::TcpStream>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
        let _ = self.1.shutdown(std::net::Shutdown::Both);
    }
}

/// Connections relayed by threads of their own right now (two threads each).
static THREADED: AtomicUsize = AtomicUsize::new(0);
/// Beyond this many concurrent connections, the others are relayed by the tokio tasks.
const MAX_THREADED: usize = 128;

/// The relay threads only loop over splice(2).
const RELAY_STACK: usize = 64 << 10;

/// A place among the [`MAX_THREADED`] thread-relayed connections, given back when dropped.
struct ThreadSlot;

impl ThreadSlot {
    fn take() -> Option<ThreadSlot> {
        if THREADED.fetch_add(1, Ordering::AcqRel) < MAX_THREADED {
            Some(ThreadSlot)
        } else {
            THREADED.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        THREADED.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Relays both directions of a connection, each on a thread of its own with blocking splice:
/// the fastest way measured (bench/net.sh: 15-40% more throughput than the tokio readiness
/// loop of [`relay`], which pays an epoll round trip per pipe-full). The threads hold the
/// slot until both directions are done.
async fn relay_threads(a: TcpStream, b: TcpStream, slot: ThreadSlot) -> io::Result<()> {
    let (a, b) = (Arc::new(a.into_std()?), Arc::new(b.into_std()?));
    let _guard = ShutdownOnDrop(a.clone(), b.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // the slot goes with `done`, that is once both threads are done
    spawn_directions(&a, &b, move |r| {
        let _held = &slot;
        let _ = tx.send(r);
    })?;
    let died = || Err(io::Error::other("relay thread died"));
    let x = rx.recv().await.unwrap_or_else(died);
    let y = rx.recv().await.unwrap_or_else(died);
    x.and(y)
}

/// The container address to relay to.
pub fn target(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}
