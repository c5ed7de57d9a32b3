//! A process's standard streams inside the shim: the output pumps (pipe or pty to the log and
//! to every client, with backpressure: a client that does not read holds the process, and
//! nothing is dropped), the held output of `nook run`, the exit event after the last byte, and
//! the framed attach/exec connections (`stream`). Kept apart from the server, which drives
//! the runtime and answers requests, because this is where bytes can be lost or reordered.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch, Notify};

use super::{frame, now_rfc3339, Event, ExitInfo, Input, LogLine};

/// Locks a mutex, ignoring poisoning (the shim is single-threaded; a poisoned lock only means a
/// task panicked, and the data is still consistent enough to keep serving).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An async, non-blocking file descriptor (pipe end or pty master).
pub(super) type Fd = Arc<AsyncFd<OwnedFd>>;

pub(super) fn async_fd(fd: OwnedFd) -> std::io::Result<Fd> {
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    // SAFETY: the OwnedFd is a valid descriptor, owned by the AsyncFd from here on, and never
    // closed or replaced while registered.
    Ok(Arc::new(unsafe { AsyncFd::register(fd)? }))
}

pub(super) async fn read_fd(fd: &Fd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard
            .try_io(|inner| nix::unistd::read(inner.get_ref(), buf).map_err(std::io::Error::from))
        {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

pub(super) async fn write_fd(fd: &Fd, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard
            .try_io(|inner| nix::unistd::write(inner.get_ref(), data).map_err(std::io::Error::from))
        {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

pub(super) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Output read from a process's pipe (or pty) at a time.
pub(super) const READ_CHUNK: usize = 64 * 1024;
/// Events a client may be behind before the output pumps wait for it: a slow client slows the
/// container (its writes block once the pipe is full), as with docker; nothing is dropped.
pub(super) const SUB_QUEUE: usize = 16;
/// Output kept for the first client of `nook run` (see [`ShimConfig::hold_output`]) before
/// the container waits for it, and how long it is kept for a client that never comes.
pub(super) const HOLD_MAX: usize = 4 << 20;
pub(super) const HOLD_FOR: Duration = Duration::from_secs(30);
/// After a process exited, output pipes that stay open (a background process holds them) are
/// read until they were silent this long.
pub(super) const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// A json-file log entry holds at most this many bytes (docker's 16 KiB): longer lines are
/// split, and `nook logs` joins the pieces back.
pub(super) const LOG_ENTRY_MAX: usize = 16 * 1024;

/// A client's view of a process's output: what was held for it, then the live events.
pub(super) struct Subscription {
    pub(super) held: std::collections::VecDeque<Event>,
    pub(super) rx: mpsc::Receiver<Event>,
}

impl Subscription {
    pub(super) async fn recv(&mut self) -> Option<Event> {
        match self.held.pop_front() {
            Some(e) => Some(e),
            None => self.rx.recv().await,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty() && self.rx.is_empty()
    }
}

/// Output kept until the first client comes.
pub(super) struct Held {
    pub(super) events: Vec<Event>,
    pub(super) size: usize,
}

/// A process of the container: its init or an exec'd one.
pub(super) struct Proc {
    pub(super) pid: Mutex<i32>,
    /// An exec'd process (hung up when its terminal's client goes away), not the init.
    pub(super) exec: bool,
    /// Where stdin goes (pipe write end, or the pty master).
    pub(super) stdin: Mutex<Option<Fd>>,
    /// The pty master (for resize).
    pub(super) master: Mutex<Option<Fd>>,
    /// The terminal's size to set as soon as the master arrives (the process's consoleSize:
    /// the runtime does not always set it before the process asks).
    pub(super) console_size: Mutex<Option<(u16, u16)>>,
    /// Every client's queue: each event goes to all, in order, waiting for room.
    pub(super) subs: Mutex<Vec<mpsc::Sender<Event>>>,
    /// Output kept for the first subscriber (see [`ShimConfig::hold_output`]).
    pub(super) held: Mutex<Option<Held>>,
    /// Wakes pumps waiting for room in `held` (a client came, or the hold was given up).
    pub(super) held_room: Notify,
    /// Set when reaped.
    pub(super) exit: watch::Sender<Option<ExitInfo>>,
    /// Set when reaped and the output is drained: the moment to send [`Event::Exit`].
    pub(super) done: watch::Sender<Option<ExitInfo>>,
    /// Output pumps still running.
    pub(super) pumps: watch::Sender<usize>,
    /// Pumps waiting for their pipe to become readable, and the bytes read so far: tell a pipe
    /// that is open but silent after the exit from one still carrying output.
    pub(super) idle_pumps: AtomicUsize,
    pub(super) read_bytes: AtomicU64,
    /// Set to stop reading pipes held open by someone else after the exit (see [`DRAIN_IDLE`]).
    pub(super) abandon: watch::Sender<bool>,
    /// Client connections streaming this process.
    pub(super) streams: watch::Sender<usize>,
    /// The json-file log (the init only).
    pub(super) log: Option<Mutex<std::io::BufWriter<File>>>,
    /// The CRI log at the client's path (the init of a CRI container only).
    pub(super) cri_log: Option<super::crilog::CriLog>,
}

impl Proc {
    pub(super) fn new(
        log: Option<File>,
        cri_log: Option<super::crilog::CriLog>,
        hold: bool,
        exec: bool,
    ) -> Arc<Proc> {
        Arc::new(Proc {
            held: Mutex::new(hold.then(|| Held {
                events: Vec::new(),
                size: 0,
            })),
            held_room: Notify::new(),
            exec,
            pid: Mutex::new(0),
            stdin: Mutex::new(None),
            master: Mutex::new(None),
            console_size: Mutex::new(None),
            subs: Mutex::new(Vec::new()),
            exit: watch::channel(None).0,
            done: watch::channel(None).0,
            pumps: watch::channel(0).0,
            idle_pumps: AtomicUsize::new(0),
            read_bytes: AtomicU64::new(0),
            abandon: watch::channel(false).0,
            streams: watch::channel(0).0,
            log: log.map(|f| Mutex::new(std::io::BufWriter::with_capacity(256 << 10, f))),
            cri_log,
        })
    }

    pub(super) fn pid(&self) -> i32 {
        *lock(&self.pid)
    }

    /// Subscribes to output and the final exit event.
    pub(super) fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel(SUB_QUEUE);
        let held = lock(&self.held)
            .take()
            .map(|h| h.events)
            .unwrap_or_default();
        self.held_room.notify_waiters();
        if let Some(info) = self.done.borrow().clone() {
            let _ = tx.try_send(Event::Exit(info));
        } else {
            lock(&self.subs).push(tx);
        }
        Subscription {
            held: held.into(),
            rx,
        }
    }

    /// Stops holding output for a first client (it did not come in time).
    pub(super) fn release_held(&self) {
        *lock(&self.held) = None;
        self.held_room.notify_waiters();
    }

    /// Hands one event to every client, in order, waiting while a client's queue (or the held
    /// output) is full.
    pub(super) async fn deliver(&self, ev: Event) {
        let len = match &ev {
            Event::Out { data, .. } => data.len(),
            Event::Exit(_) => 0,
        };
        loop {
            let room = self.held_room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut held = lock(&self.held);
                match held.as_mut() {
                    None => break,
                    Some(h) if h.size < HOLD_MAX => {
                        h.size += len;
                        h.events.push(ev);
                        return;
                    }
                    Some(_) => {}
                }
            }
            room.await;
        }
        let subs: Vec<_> = lock(&self.subs).clone();
        let mut gone = false;
        for s in &subs {
            gone |= s.send(ev.clone()).await.is_err();
        }
        if gone {
            lock(&self.subs).retain(|s| !s.is_closed());
        }
    }

    /// Appends entries to the json-file log (and the CRI log); `eof`: the last entry ends the
    /// stream.
    pub(super) fn write_log(&self, stream: &str, entries: &[&[u8]], eof: bool) {
        let Some(log) = &self.log else { return };
        // one time for what one read brought
        let time = now_rfc3339();
        if let Some(cri) = &self.cri_log {
            cri.write(stream, &time, entries, eof);
        }
        let mut text = Vec::new();
        for e in entries {
            LogLine::write(stream, e, &time, &mut text);
        }
        let mut log = lock(log);
        if let Err(e) = log.write_all(&text).and_then(|_| log.flush()) {
            eprintln!("nook-shim: writing the container log: {e}");
        }
    }

    /// Logs `chunk`: complete lines (and pieces of at most [`LOG_ENTRY_MAX`]) as entries, the
    /// rest kept in `pending` for the next chunk.
    pub(super) fn log_output(&self, stream: &str, pending: &mut Vec<u8>, chunk: &[u8]) {
        pending.extend_from_slice(chunk);
        let mut entries: Vec<&[u8]> = Vec::new();
        let mut rest: &[u8] = pending;
        loop {
            let end = match rest.iter().position(|b| *b == b'\n') {
                Some(i) if i < LOG_ENTRY_MAX => i + 1,
                _ if rest.len() >= LOG_ENTRY_MAX => utf8_cut(&rest[..LOG_ENTRY_MAX]),
                _ => break,
            };
            entries.push(&rest[..end]);
            rest = &rest[end..];
        }
        if entries.is_empty() {
            return;
        }
        self.write_log(stream, &entries, false);
        let used = pending.len() - rest.len();
        pending.drain(..used);
    }

    /// Reads `fd` until EOF (or EIO: the pty's other side closed), logging complete lines and
    /// handing every chunk to the clients.
    pub(super) fn pump(self: &Arc<Self>, fd: Fd, stderr: bool) {
        self.pumps.send_modify(|n| *n += 1);
        let me = self.clone();
        let mut abandon = self.abandon.subscribe();
        tokio::spawn(async move {
            let stream = if stderr { "stderr" } else { "stdout" };
            let mut buf = vec![0u8; READ_CHUNK];
            let mut pending: Vec<u8> = Vec::new();
            loop {
                me.idle_pumps.fetch_add(1, Ordering::SeqCst);
                let r = tokio::select! {
                    r = read_fd(&fd, &mut buf) => r,
                    _ = abandon.wait_for(|a| *a) => Ok(0),
                };
                me.idle_pumps.fetch_sub(1, Ordering::SeqCst);
                let n = match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                me.read_bytes.fetch_add(n as u64, Ordering::SeqCst);
                let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
                if me.log.is_some() {
                    me.log_output(stream, &mut pending, &chunk);
                }
                me.deliver(Event::Out {
                    stderr,
                    data: chunk,
                })
                .await;
            }
            if !pending.is_empty() {
                me.write_log(stream, &[&pending], true);
            }
            me.pumps.send_modify(|n| *n -= 1);
        });
    }

    /// Records the exit, waits for the output to drain (every byte handed to every client),
    /// then tells the clients: the exit always comes after the last byte.
    pub(super) async fn finish(self: &Arc<Self>, info: ExitInfo) {
        self.exit.send_replace(Some(info.clone()));
        let mut pumps = self.pumps.subscribe();
        loop {
            let before = self.read_bytes.load(Ordering::SeqCst);
            if tokio::time::timeout(DRAIN_IDLE, pumps.wait_for(|n| *n == 0))
                .await
                .is_ok()
            {
                break;
            }
            // pipes kept open by a process that outlived this one, silent since: stop there
            // (pumps waiting for a slow client are not idle and go on)
            let n = *self.pumps.borrow();
            if self.read_bytes.load(Ordering::SeqCst) == before
                && self.idle_pumps.load(Ordering::SeqCst) == n
            {
                self.abandon.send_replace(true);
            }
        }
        // no more input can go anywhere
        *lock(&self.stdin) = None;
        *lock(&self.master) = None;
        self.done.send_replace(Some(info.clone()));
        let subs: Vec<_> = std::mem::take(&mut *lock(&self.subs));
        let exit = Event::Exit(info);
        futures::future::join_all(subs.iter().map(|s| s.send(exit.clone()))).await;
    }

    /// The client that held this process's stdin went away without closing it: close it (as
    /// docker does), so that nothing waits for ever on input that cannot come; an exec'd
    /// process on a terminal is hung up (SIGHUP to its process group), as a shell is when its
    /// terminal goes away.
    pub(super) fn client_gone(&self) {
        if lock(&self.master).is_none() {
            *lock(&self.stdin) = None;
        } else if self.exec && self.exit.borrow().is_none() {
            let pid = self.pid();
            if pid > 0 {
                let _ = nix::sys::signal::killpg(Pid::from_raw(pid), nix::sys::signal::SIGHUP);
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGHUP);
            }
        }
    }
}

/// Where to cut `buf` (a full log entry) so that a UTF-8 character is not split: before an
/// incomplete character at its end, else at its end.
pub(super) fn utf8_cut(buf: &[u8]) -> usize {
    match std::str::from_utf8(buf) {
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => e.valid_up_to(),
        _ => buf.len(),
    }
}

pub(super) fn set_winsize(fd: RawFd, width: u16, height: u16) -> Result<(), String> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` from the pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(format!("resize: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Receives the pty master the runtime sends (SCM_RIGHTS) and installs it on `proc`.
pub(super) fn install_master(s: UnixStream, proc: &Arc<Proc>) -> Result<(), String> {
    let s = s.into_std().map_err(|e| e.to_string())?;
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    // never empty: recv_fds fails on a message without descriptors
    let master = super::recv_fds(s.as_fd())
        .map_err(|e| format!("receiving the pty: {e}"))?
        .swap_remove(0);
    if let Some((w, h)) = *lock(&proc.console_size) {
        let _ = set_winsize(master.as_raw_fd(), w, h);
    }
    let dup = master.try_clone().map_err(|e| e.to_string())?;
    let reader = async_fd(master).map_err(|e| e.to_string())?;
    let writer = async_fd(dup).map_err(|e| e.to_string())?;
    *lock(&proc.master) = Some(reader.clone());
    *lock(&proc.stdin) = Some(writer);
    proc.pump(reader, false);
    Ok(())
}

/// Streams `sub` to the client in [`frame`]s and feeds its input frames to `proc`, until the
/// exit event. A client that goes away before it (its connection closed, or a write failed)
/// is [`Proc::client_gone`] when it held stdin; the other clients never notice.
pub(super) async fn stream(
    proc: Arc<Proc>,
    mut sub: Subscription,
    mut r: BufReader<tokio::net::unix::OwnedReadHalf>,
    w: tokio::net::unix::OwnedWriteHalf,
    take_stdin: bool,
) {
    proc.streams.send_modify(|n| *n += 1);
    let input = async {
        loop {
            match frame::read_input(&mut r).await {
                Ok(Some(Input::Stdin(bytes))) if take_stdin => {
                    let fd = lock(&proc.stdin).clone();
                    if let Some(fd) = fd {
                        let _ = write_fd(&fd, &bytes).await;
                    }
                }
                // a pty has no half-close: leave it; a pipe is closed for EOF
                Ok(Some(Input::CloseStdin)) if take_stdin && lock(&proc.master).is_none() => {
                    *lock(&proc.stdin) = None;
                }
                Ok(Some(Input::Resize { width, height })) => {
                    if let Some(m) = lock(&proc.master).clone() {
                        let _ = set_winsize(m.get_ref().as_raw_fd(), width, height);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        // the client went away (it keeps its side open until the exit event otherwise); the
        // output goes on until writing it fails
        if take_stdin || proc.exec {
            proc.client_gone();
        }
        std::future::pending::<()>().await
    };
    let output = async {
        let mut w = BufWriter::with_capacity(256 << 10, w);
        while let Some(ev) = sub.recv().await {
            let last = matches!(ev, Event::Exit(_));
            let (head, body) = frame::event(&ev);
            let mut res = w.write_all(&head).await;
            if res.is_ok() {
                res = w.write_all(&body).await;
            }
            // one write for what is queued, not one per event
            if res.is_ok() && (last || sub.is_empty()) {
                res = w.flush().await;
            }
            if res.is_err() {
                return false;
            }
            if last {
                break;
            }
        }
        let _ = w.shutdown().await;
        true
    };
    tokio::select! {
        _ = input => {}
        delivered = output => {
            if !delivered && (take_stdin || proc.exec) {
                proc.client_gone();
            }
        }
    }
    proc.streams.send_modify(|n| *n -= 1);
}
