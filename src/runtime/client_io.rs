//! The stdio of processes a containerd client runs (containerd's Tasks.Create and Exec), in
//! containerd's forms: FIFO paths the client made (ctr makes them under /run/containerd/fifo),
//! `file://PATH` (stdout and stderr appended to that file) and `binary://PATH?ARGS` (a logging
//! binary started as containerd's shim starts it: stdout's and stderr's read ends as fds 3
//! and 4, a readiness pipe as fd 5, `CONTAINER_ID` and `CONTAINER_NAMESPACE` in its
//! environment). nookd bridges the process's shim stream (nook's own attach or exec, see
//! [`crate::shim::client`]) to them: output out, the stdin FIFO in (its end of file closes the
//! process's stdin, as does CloseIO), and keeps the process's state for the client's Wait, Get
//! and Delete ([`ClientProcs`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::shim::client::{ShimInput, ShimStream};
use crate::shim::{Event, ExitInfo, Input};

/// The client's stdio as it gave it: FIFO paths or URIs (empty: none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientStdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Where the process's output goes.
pub struct Outputs {
    out: Option<std::fs::File>,
    err: Option<std::fs::File>,
    /// The logging binary of a `binary://` URI, reaped once the output is closed.
    binary: Option<std::process::Child>,
}

/// How long a logging binary gets to finish its output once the process's output is closed
/// (containerd's shim waits as long).
const BINARY_GRACE: Duration = Duration::from_secs(10);

/// The scheme of a stdio string (`fifo` for a bare path).
fn scheme(s: &str) -> &str {
    s.split_once("://").map(|(s, _)| s).unwrap_or("fifo")
}

impl Outputs {
    /// Opens the client's stdout and stderr (`ns`/`id` name the container for a logging
    /// binary).
    pub fn open(io: &ClientStdio, ns: &str, id: &str) -> Result<Outputs> {
        match scheme(&io.stdout) {
            "fifo" => Ok(Outputs {
                out: open_fifo(&io.stdout)?,
                err: open_fifo(&io.stderr)?,
                binary: None,
            }),
            "file" => {
                let u = parse_uri(&io.stdout)?;
                let p = Path::new(u.path());
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| Error::io(format!("opening the log file {}", p.display()), e))?;
                let err = f
                    .try_clone()
                    .map_err(|e| Error::io("duplicating the log file", e))?;
                Ok(Outputs {
                    out: Some(f),
                    err: Some(err),
                    binary: None,
                })
            }
            "binary" => start_binary(&parse_uri(&io.stdout)?, ns, id),
            other => Err(Error::InvalidArgument(format!(
                "stdio {:?}: unknown scheme {other:?} (FIFO paths, fifo://, file:// and binary:// are supported)",
                io.stdout
            ))),
        }
    }

    /// Writes one chunk of output (off the async threads: a slow reader must not hold one);
    /// a reader that went away gets nothing from then on.
    async fn write(&mut self, stderr: bool, data: bytes::Bytes) {
        let slot = if stderr && self.err.is_some() {
            &mut self.err
        } else {
            &mut self.out
        };
        let Some(mut f) = slot.take() else { return };
        match tokio::task::spawn_blocking(move || {
            let r = f.write_all(&data);
            (f, r)
        })
        .await
        {
            Ok((f, Ok(()))) => *slot = Some(f),
            Ok((_, Err(e))) => tracing::debug!("writing a client's output: {e}"),
            Err(_) => {}
        }
    }

    /// Closes the output (the client's readers see its end) and lets a logging binary finish.
    /// A FIFO is closed once its reader took what it holds (at most [`DRAIN_WAIT`]): ctr
    /// closes its read ends as soon as it has the exit, and what is still in the pipe then
    /// would be lost.
    async fn close(mut self) {
        let fifos: Vec<std::fs::File> = [self.out.take(), self.err.take()]
            .into_iter()
            .flatten()
            .collect();
        if self.binary.is_none() {
            let _ = tokio::task::spawn_blocking(move || {
                let deadline = std::time::Instant::now() + DRAIN_WAIT;
                for f in &fifos {
                    while unread(f) > 0 && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
            .await;
        }
        if let Some(mut child) = self.binary.take() {
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + BINARY_GRACE;
                while std::time::Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            });
        }
    }
}

/// How long closing waits for a FIFO's reader to take what the FIFO holds.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Bytes in a pipe not read yet (0 for what is not a pipe).
fn unread(f: &std::fs::File) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r < 0 {
        0
    } else {
        n
    }
}

fn parse_uri(s: &str) -> Result<url::Url> {
    url::Url::parse(s).map_err(|e| Error::InvalidArgument(format!("stdio URI {s:?}: {e}")))
}

/// Opens a client's FIFO for writing without waiting for its reader (O_RDWR never blocks on
/// a FIFO; containerd's shim holds a read end too), refusing anything that is not a FIFO.
fn open_fifo(path: &str) -> Result<Option<std::fs::File>> {
    if path.is_empty() {
        return Ok(None);
    }
    let p = path.strip_prefix("fifo://").unwrap_or(path);
    use std::os::unix::fs::FileTypeExt;
    let m = std::fs::metadata(p).map_err(|e| Error::io(format!("stdio FIFO {p}"), e))?;
    if !m.file_type().is_fifo() {
        return Err(Error::InvalidArgument(format!("stdio {p} is not a FIFO")));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new(p))
        .map_err(|e| Error::io(format!("opening the stdio FIFO {p}"), e))?;
    Ok(Some(f))
}

/// A pipe whose ends are both close-on-exec.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("making a pipe", e.into()))
}

/// Starts the logging binary of a `binary://` URI as containerd's shim does: the URI's path
/// is the program, each query pair two arguments (key, value), fd 3 its stdout, fd 4 its
/// stderr, fd 5 a pipe it writes to (or closes) once ready; its environment is only
/// `CONTAINER_ID` and `CONTAINER_NAMESPACE`. Waits for it to be ready.
fn start_binary(u: &url::Url, ns: &str, id: &str) -> Result<Outputs> {
    let program = u.path().to_string();
    let mut args = Vec::new();
    for (k, v) in u.query_pairs() {
        args.push(k.into_owned());
        if !v.is_empty() {
            args.push(v.into_owned());
        }
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&args)
        .env_clear()
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", ns)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // out of the way of 3..5 first, then into place (dup2 clears close-on-exec)
            let mut tmp = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                tmp[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if tmp[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in tmp.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        Error::InvalidArgument(format!("starting the logging binary {program}: {e}"))
    })?;
    drop((out_r, err_r, ready_w));
    // ready: one byte, or the end of the pipe (a binary that closes fd 5 or exits)
    let mut ready = std::fs::File::from(ready_r);
    let fd = ready.as_raw_fd();
    let mut pfd = [nix::poll::PollFd::new(
        // SAFETY: `fd` belongs to `ready`, which outlives this poll.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(10_000u16)) {
        Ok(0) => {
            tracing::warn!(binary = %program, "the logging binary did not say it was ready within 10 s; going on")
        }
        _ => {
            let _ = ready.read(&mut [0u8; 1]);
        }
    }
    Ok(Outputs {
        out: Some(std::fs::File::from(out_w)),
        err: Some(std::fs::File::from(err_w)),
        binary: Some(child),
    })
}

/// A process's stage, as the client asks for it.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcState {
    /// Made (an exec before its Start), not running yet.
    Created,
    Running {
        pid: i32,
    },
    Exited(ExitInfo),
}

/// One process a client runs: the init of a container (`exec_id` empty) or an exec.
pub struct ClientProc {
    pub exec_id: String,
    pub io: ClientStdio,
    /// An exec's OCI `process` object, as the client gave it.
    pub process: serde_json::Value,
    state: watch::Sender<ProcState>,
    /// The stream's input half, for CloseIO and the stdin FIFO.
    input: tokio::sync::Mutex<Option<ShimInput>>,
    /// Whether a forwarder copies the stdin FIFO (true while it runs).
    forwarding: watch::Sender<bool>,
    /// CloseIO's request to that forwarder: finish what the FIFO holds, then close.
    close_req: tokio::sync::Notify,
}

impl ClientProc {
    pub fn new(exec_id: &str, io: ClientStdio, process: serde_json::Value) -> Arc<ClientProc> {
        Arc::new(ClientProc {
            exec_id: exec_id.to_string(),
            io,
            process,
            state: watch::Sender::new(ProcState::Created),
            input: tokio::sync::Mutex::new(None),
            forwarding: watch::Sender::new(false),
            close_req: tokio::sync::Notify::new(),
        })
    }

    pub fn state(&self) -> ProcState {
        self.state.borrow().clone()
    }

    pub fn set_running(&self, pid: i32) {
        self.state.send_if_modified(|s| {
            let created = *s == ProcState::Created;
            if created {
                *s = ProcState::Running { pid };
            }
            created
        });
    }

    /// Marks it exited (once).
    pub fn set_exited(&self, info: ExitInfo) {
        self.state.send_if_modified(|s| {
            let first = !matches!(s, ProcState::Exited(_));
            if first {
                *s = ProcState::Exited(info);
            }
            first
        });
    }

    /// Waits for its exit.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.state.subscribe();
        let st = rx
            .wait_for(|s| matches!(s, ProcState::Exited(_)))
            .await
            .map(|s| s.clone());
        match st {
            Ok(ProcState::Exited(e)) => e,
            _ => std::future::pending().await,
        }
    }

    /// Closes the process's stdin (CloseIO; a terminal has no half-close and keeps it). A
    /// client closes its stdin FIFO only after CloseIO returns (ctr calls it on its stdin's
    /// end): what the FIFO still holds goes to the process first.
    pub async fn close_stdin(&self) -> Result<()> {
        if *self.forwarding.borrow() {
            self.close_req.notify_one();
            let mut rx = self.forwarding.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|f| !*f)).await;
            return Ok(());
        }
        self.send_close().await
    }

    async fn send_close(&self) -> Result<()> {
        if let Some(i) = self.input.lock().await.as_mut() {
            i.send(&Input::CloseStdin).await?;
        }
        Ok(())
    }

    /// Sends stdin to the process; false when it can take no more.
    async fn send_stdin(&self, data: &[u8]) -> bool {
        let mut i = self.input.lock().await;
        match i.as_mut() {
            Some(i) => i
                .send(&Input::Stdin(bytes::Bytes::copy_from_slice(data)))
                .await
                .is_ok(),
            None => false,
        }
    }

    /// Bridges the process's shim stream to the client's stdio until it exits: output to
    /// `outputs`, the stdin FIFO (if the client gave one) to the process. Returns at once;
    /// the exit is recorded (see [`ClientProc::wait`]) once every byte of output was handed
    /// to the client and its output closed.
    pub fn bridge(self: &Arc<Self>, stream: ShimStream, outputs: Outputs, id: &str) {
        let (mut events, input) = stream.split();
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            *me.input.lock().await = Some(input);
            let stdin = (!me.io.stdin.is_empty() && scheme(&me.io.stdout) != "binary").then(|| {
                me.forwarding.send_replace(true);
                tokio::spawn(forward_stdin(me.clone(), me.io.stdin.clone()))
            });
            let mut outputs = outputs;
            let exit = loop {
                match events.next().await {
                    Ok(Some(Event::Out { stderr, data })) => outputs.write(stderr, data).await,
                    Ok(Some(Event::Exit(e))) => break Some(e),
                    Ok(None) => break None,
                    Err(e) => {
                        tracing::debug!(container = %id, exec = %me.exec_id, "the process's stream ended: {e}");
                        break None;
                    }
                }
            };
            outputs.close().await;
            if let Some(t) = stdin {
                t.abort();
                me.forwarding.send_replace(false);
            }
            if let Some(e) = exit {
                me.set_exited(e);
            }
            // the client's side of the stream goes last (the shim hangs up an exec's
            // terminal when its client goes)
            *me.input.lock().await = None;
        });
    }
}

/// Copies the client's stdin FIFO into the process; its end of file (the client closed it)
/// or CloseIO closes the process's stdin, as containerd's shim does.
async fn forward_stdin(p: Arc<ClientProc>, path: String) {
    let path = path.strip_prefix("fifo://").unwrap_or(&path).to_string();
    match tokio::net::unix::pipe::OpenOptions::new().open_receiver(&path) {
        Ok(rx) => copy_stdin(&p, rx).await,
        Err(e) => tracing::warn!(fifo = %path, "the client's stdin FIFO: {e}"),
    }
    let _ = p.send_close().await;
    p.forwarding.send_replace(false);
}

async fn copy_stdin(p: &ClientProc, mut rx: tokio::net::unix::pipe::Receiver) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        tokio::select! {
            r = rx.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !p.send_stdin(&buf[..n]).await {
                        return;
                    }
                }
            },
            _ = p.close_req.notified() => {
                // CloseIO: the client wrote everything before asking; take what is left
                loop {
                    match rx.try_read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if !p.send_stdin(&buf[..n]).await {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The processes clients run, by `<ns>/<container>/<exec id>` (an empty exec id: the init).
#[derive(Default)]
pub struct ClientProcs(Mutex<HashMap<String, Arc<ClientProc>>>);

fn key(ns: &str, id: &str, exec_id: &str) -> String {
    format!("{ns}/{id}/{exec_id}")
}

impl ClientProcs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ClientProc>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, ns: &str, id: &str, exec_id: &str) -> Option<Arc<ClientProc>> {
        self.map().get(&key(ns, id, exec_id)).cloned()
    }

    /// Adds `p`; false when the id is taken.
    pub fn insert(&self, ns: &str, id: &str, p: Arc<ClientProc>) -> bool {
        let k = key(ns, id, &p.exec_id);
        let mut m = self.map();
        if m.contains_key(&k) {
            return false;
        }
        m.insert(k, p);
        true
    }

    /// Sets `p` (replacing a previous run's).
    pub fn replace(&self, ns: &str, id: &str, p: Arc<ClientProc>) {
        self.map().insert(key(ns, id, &p.exec_id), p);
    }

    pub fn remove(&self, ns: &str, id: &str, exec_id: &str) -> Option<Arc<ClientProc>> {
        self.map().remove(&key(ns, id, exec_id))
    }

    /// Forgets every process of a container (its task was deleted).
    pub fn forget(&self, ns: &str, id: &str) {
        let prefix = key(ns, id, "");
        self.map().retain(|k, _| !k.starts_with(&prefix));
    }

    /// The execs of a container.
    pub fn execs(&self, ns: &str, id: &str) -> Vec<Arc<ClientProc>> {
        let prefix = key(ns, id, "");
        self.map()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && k.len() > prefix.len())
            .map(|(_, p)| p.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(scheme("/run/containerd/fifo/x-stdout"), "fifo");
        assert_eq!(scheme("fifo:///x"), "fifo");
        assert_eq!(scheme("file:///var/log/x"), "file");
        assert_eq!(scheme("binary:///bin/logger?a=b"), "binary");
    }

    #[test]
    fn keys_of_a_container_do_not_catch_another() {
        let m = ClientProcs::default();
        let p = |e: &str| ClientProc::new(e, ClientStdio::default(), serde_json::Value::Null);
        assert!(m.insert("default", "c1", p("")));
        assert!(m.insert("default", "c1", p("x")));
        assert!(!m.insert("default", "c1", p("x")));
        assert!(m.insert("default", "c10", p("x")));
        assert_eq!(m.execs("default", "c1").len(), 1);
        m.forget("default", "c1");
        assert!(m.get("default", "c1", "x").is_none());
        assert!(m.get("default", "c10", "x").is_some());
    }

    #[tokio::test]
    async fn a_file_uri_appends_stdout_and_stderr() {
        let dir = std::env::temp_dir().join(format!("nook-client-io-{}", std::process::id()));
        let f = dir.join("sub/log");
        let io = ClientStdio {
            stdout: format!("file://{}", f.display()),
            stderr: format!("file://{}", f.display()),
            ..Default::default()
        };
        let mut o = Outputs::open(&io, "default", "c1").unwrap();
        o.write(false, bytes::Bytes::from_static(b"out\n")).await;
        o.write(true, bytes::Bytes::from_static(b"err\n")).await;
        o.close().await;
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "out\nerr\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_binary_uri_gets_fds_3_4_and_its_environment() {
        let dir = std::env::temp_dir().join(format!("nook-client-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("logger");
        std::fs::write(
            &script,
            "#!/bin/sh\nexec 5>&-\n{ echo \"$CONTAINER_NAMESPACE/$CONTAINER_ID $*\"; cat <&3; cat <&4; } > \"$2\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.join("out");
        let io = ClientStdio {
            stdout: format!("binary://{}?out={}", script.display(), out.display()),
            ..Default::default()
        };
        let mut o = Outputs::open(&io, "ns1", "c1").unwrap();
        o.write(false, bytes::Bytes::from_static(b"hello\n")).await;
        o.write(true, bytes::Bytes::from_static(b"oops\n")).await;
        o.close().await;
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("oops") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(text, format!("ns1/c1 out {}\nhello\noops\n", out.display()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
