//! The shim process itself (`nook-shim <bundle>`).
//!
//! Started by nookd, it detaches (double fork + setsid, so it is nobody's child but init's and
//! survives nookd), becomes a child subreaper (so the container's init, orphaned when the
//! runtime's `create` exits, becomes its child and it can reap it), creates the container with
//! the runtime, tells nookd on its inherited stdout that it is ready (one JSON line), and serves
//! requests on `<bundle>/shim.sock` with a single-threaded tokio runtime. This file answers
//! requests; the OCI runtime is driven in `server::oci`, the streams are in `io`, exits in
//! `reaper`, detaching in `detach`, the relayed and direct published ports in `direct`.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod oci;
#[cfg(test)]
mod tests;

use nix::unistd::Pid;
use oci::{read_pid, OciRuntime, RuntimeBinary, Stdio3};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use super::detach::daemonize;
use super::io::{
    async_fd, install_master, lock, pipe, read_fd, set_winsize, stream, Proc, Subscription,
    HOLD_FOR,
};
use super::reaper::Reaper;
use super::{exit_code, files, now_rfc3339, ExitInfo, Request, Response, ShimConfig, TaskState};

/// The shim's whole state.
struct Shim {
    cfg: ShimConfig,
    bundle: PathBuf,
    reaper: Reaper,
    init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    status: Mutex<&'static str>,
    started_at: Mutex<Option<String>>,
    /// Connections that stream or wait: the shim stays until they are answered.
    active: AtomicUsize,
    /// The runtime deleted the container: the shim exits once its clients are answered.
    deleted: AtomicBool,
    quit: Notify,
    /// Counter for console socket names.
    seq: AtomicUsize,
    /// The OCI runtime it drives.
    oci: Arc<dyn OciRuntime>,
}

impl Shim {
    fn new(
        cfg: ShimConfig,
        bundle: PathBuf,
        log: Option<std::fs::File>,
        cri_log: Option<super::crilog::CriLog>,
        oci: Arc<dyn OciRuntime>,
    ) -> Arc<Shim> {
        let hold = cfg.hold_output;
        Arc::new(Shim {
            cfg,
            bundle,
            reaper: Reaper::default(),
            init: Proc::new(log, cri_log, hold, false),
            execs: Mutex::new(HashMap::new()),
            status: Mutex::new("created"),
            started_at: Mutex::new(None),
            active: AtomicUsize::new(0),
            deleted: AtomicBool::new(false),
            quit: Notify::new(),
            seq: AtomicUsize::new(0),
            oci,
        })
    }

    /// Creates the container; when that fails, deletes what the runtime left of it (a
    /// half-made container keeps its id taken) and returns the create's error.
    async fn create_or_delete(self: &Arc<Self>) -> Result<i32, String> {
        match self.create().await {
            Ok(pid) => Ok(pid),
            Err(e) => {
                let _ = self
                    .runtime(&["delete", "--force", &self.cfg.id], Stdio3::null(), false)
                    .await;
                Err(e)
            }
        }
    }

    /// `runtime create`: the container exists, its init waits for `start`.
    async fn create(self: &Arc<Self>) -> Result<i32, String> {
        let bundle = self.bundle.to_string_lossy().into_owned();
        let io = self
            .stdio_for(&self.init, self.cfg.tty, self.cfg.stdin)
            .map_err(|e| format!("stdio pipes: {e}"))?;
        let console = if self.cfg.tty {
            Some(self.console_listener()?)
        } else {
            None
        };
        let verb: &[&str] = if self.cfg.start {
            &["run", "--detach"]
        } else {
            &["create"]
        };
        let mut args = verb.to_vec();
        args.extend(["--bundle", &bundle, "--pid-file", files::INIT_PID]);
        if let Some((_, name)) = &console {
            args.push("--console-socket");
            args.push(name);
        }
        args.push(&self.cfg.id);
        let res = self
            .runtime_with_console(&args, io, console.as_ref().map(|(l, _)| (l, &self.init)))
            .await;
        if let Some((_, name)) = &console {
            let _ = std::fs::remove_file(name);
        }
        res?;
        let pid = read_pid(&self.bundle.join(files::INIT_PID))?;
        *lock(&self.init.pid) = pid;
        if self.cfg.start {
            *lock(&self.status) = "running";
            *lock(&self.started_at) = Some(now_rfc3339());
        }
        let exited = self.reaper.wait_for(pid);
        let me = self.clone();
        tokio::spawn(async move {
            let st = exited.await;
            let code = st.ok().and_then(exit_code).unwrap_or(255);
            let info = ExitInfo {
                pid,
                exit_code: code,
                exited_at: now_rfc3339(),
            };
            let started = lock(&me.started_at).clone();
            if let Err(e) = write_exit(&me.bundle, &info, started.as_deref()) {
                eprintln!("nook-shim: recording the exit: {e}");
            }
            *lock(&me.status) = "stopped";
            me.init.finish(info).await;
            me.maybe_quit();
        });
        if lock(&self.init.held).is_some() {
            // output held for a client that never came: give up on it after a while
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(HOLD_FOR).await;
                me.init.release_held();
                me.maybe_quit();
            });
        }
        Ok(pid)
    }

    async fn start(&self) -> Result<(), String> {
        let st = *lock(&self.status);
        if st != "created" {
            return Err(format!(
                "container is {st}, not created: it cannot be started"
            ));
        }
        // stamped before `runtime start`: a process that exits at once is recorded with it
        *lock(&self.started_at) = Some(now_rfc3339());
        if let Err(e) = self
            .runtime(&["start", &self.cfg.id], Stdio3::null(), false)
            .await
        {
            *lock(&self.started_at) = None;
            return Err(e);
        }
        let mut s = lock(&self.status);
        if *s == "created" {
            *s = "running";
        }
        Ok(())
    }

    fn state(&self) -> TaskState {
        TaskState {
            id: self.cfg.id.clone(),
            pid: self.init.pid(),
            status: super::TaskStatus::from_name(&lock(&self.status)),
            started_at: lock(&self.started_at).clone(),
            exit: self.init.exit.borrow().clone(),
            shim_pid: std::process::id() as i32,
            drained: self.init.exit.borrow().is_none() || self.init.done.borrow().is_some(),
        }
    }

    fn proc(&self, exec_id: &Option<String>) -> Result<Arc<Proc>, String> {
        match exec_id {
            None => Ok(self.init.clone()),
            Some(id) => lock(&self.execs)
                .get(id)
                .cloned()
                .ok_or_else(|| format!("no exec {id:?} in this container")),
        }
    }

    async fn kill(&self, signal: i32, all: bool, exec_id: &Option<String>) -> Result<(), String> {
        let p = self.proc(exec_id)?;
        if p.exit.borrow().is_some() {
            return Err("the process is not running".into());
        }
        if all && exec_id.is_none() {
            let sig = signal.to_string();
            return self
                .runtime(
                    &["kill", "--all", &self.cfg.id, &sig],
                    Stdio3::null(),
                    false,
                )
                .await
                .map(|_| ());
        }
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| format!("invalid signal {signal}"))?;
        nix::sys::signal::kill(Pid::from_raw(p.pid()), sig).map_err(|e| format!("kill: {e}"))
    }

    fn resize(&self, exec_id: &Option<String>, width: u16, height: u16) -> Result<(), String> {
        let p = self.proc(exec_id)?;
        let master = lock(&p.master).clone();
        match master {
            Some(m) => set_winsize(m.get_ref().as_raw_fd(), width, height),
            None => Err("the process has no terminal".into()),
        }
    }

    async fn exec(
        self: &Arc<Self>,
        exec_id: &str,
        mut process: serde_json::Value,
        tty: bool,
        stdin: bool,
    ) -> Result<(Arc<Proc>, Subscription), String> {
        if *lock(&self.status) != "running" {
            return Err("the container is not running".into());
        }
        if exec_id.is_empty()
            || !exec_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("invalid exec id {exec_id:?}"));
        }
        if lock(&self.execs).contains_key(exec_id) {
            return Err(format!("exec id {exec_id:?} is in use"));
        }
        if let Some(obj) = process.as_object_mut() {
            obj.insert("terminal".into(), serde_json::Value::Bool(tty));
        }
        let proc = Proc::new(None, None, false, true);
        let size = &process["consoleSize"];
        if let (Some(w), Some(h)) = (size["width"].as_u64(), size["height"].as_u64()) {
            *lock(&proc.console_size) = Some((w as u16, h as u16));
        }
        lock(&self.execs).insert(exec_id.to_string(), proc.clone());
        let rx = proc.subscribe();
        let res = self.exec_inner(exec_id, &process, tty, stdin, &proc).await;
        match res {
            Ok(pid) => {
                *lock(&proc.pid) = pid;
                let exited = self.reaper.wait_for(pid);
                let me = self.clone();
                let p = proc.clone();
                let id = exec_id.to_string();
                tokio::spawn(async move {
                    let st = exited.await;
                    let info = ExitInfo {
                        pid,
                        exit_code: st.ok().and_then(exit_code).unwrap_or(255),
                        exited_at: now_rfc3339(),
                    };
                    p.finish(info).await;
                    lock(&me.execs).remove(&id);
                });
                Ok((proc, rx))
            }
            Err(e) => {
                lock(&self.execs).remove(exec_id);
                Err(e)
            }
        }
    }

    async fn exec_inner(
        &self,
        exec_id: &str,
        process: &serde_json::Value,
        tty: bool,
        stdin: bool,
        proc: &Arc<Proc>,
    ) -> Result<i32, String> {
        let spec_file = format!("exec-{exec_id}.json");
        let pid_file = format!("exec-{exec_id}.pid");
        std::fs::write(
            self.bundle.join(&spec_file),
            serde_json::to_vec(process).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("writing {spec_file}: {e}"))?;
        let io = self
            .stdio_for(proc, tty, stdin)
            .map_err(|e| format!("stdio pipes: {e}"))?;
        let console = if tty {
            Some(self.console_listener()?)
        } else {
            None
        };
        let mut args = vec![
            "exec",
            "--detach",
            "--pid-file",
            &pid_file,
            "--process",
            &spec_file,
        ];
        if let Some((_, name)) = &console {
            args.push("--console-socket");
            args.push(name);
        }
        args.push(&self.cfg.id);
        let res = self
            .runtime_with_console(&args, io, console.as_ref().map(|(l, _)| (l, proc)))
            .await;
        if let Some((_, name)) = &console {
            let _ = std::fs::remove_file(name);
        }
        let _ = std::fs::remove_file(self.bundle.join(&spec_file));
        res?;
        let pid = read_pid(&self.bundle.join(&pid_file));
        let _ = std::fs::remove_file(self.bundle.join(&pid_file));
        pid
    }

    fn maybe_quit(&self) {
        if self.active.load(Ordering::SeqCst) > 0 {
            return;
        }
        if self.deleted.load(Ordering::SeqCst)
            || (*lock(&self.status) == "stopped"
                && self.init.done.borrow().is_some()
                // output held for a client that has not attached yet
                && lock(&self.init.held).is_none())
        {
            self.quit.notify_one();
        }
    }
}

/// The processes sharing `pid`'s pid namespace (the container's), by scanning /proc.
fn pids_in_namespace_of(pid: i32) -> Option<Vec<i32>> {
    if pid <= 0 {
        return None;
    }
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l == ns))
        .collect();
    pids.sort_unstable();
    Some(pids)
}

/// Records the init's exit, with when it started: once the shim is gone this record is all
/// that tells of the task (`Tasks::state`).
fn write_exit(bundle: &Path, info: &ExitInfo, started_at: Option<&str>) -> std::io::Result<()> {
    let tmp = bundle.join(".exit.json.tmp");
    let mut v = serde_json::to_value(info)?;
    if let Some(t) = started_at {
        v["started_at"] = t.into();
    }
    std::fs::write(&tmp, serde_json::to_vec(&v)?)?;
    std::fs::rename(&tmp, bundle.join(files::EXIT))
}

async fn send<T: serde::Serialize>(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    v: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v)?;
    line.push(b'\n');
    w.write_all(&line).await
}

async fn handle(shim: Arc<Shim>, conn: UnixStream) {
    let (r, mut w) = conn.into_split();
    // the reader keeps what follows the request line: the client's first input frames
    let mut r = BufReader::with_capacity(256 << 10, r);
    let mut first = String::new();
    if r.read_line(&mut first).await.unwrap_or(0) == 0 {
        return;
    }
    let req: Request = match serde_json::from_str(&first) {
        Ok(r) => r,
        Err(e) => {
            let _ = send(
                &mut w,
                &Response::Error {
                    message: format!("bad request: {e}"),
                },
            )
            .await;
            return;
        }
    };
    let err = |m: String| Response::Error { message: m };
    let resp = match req {
        Request::State => Response::State(shim.state()),
        Request::Start => {
            // a process that exits at once (`true`) may be reaped and drained before start's
            // answer is sent: the answer holds the shim up like a stream does, or the shim
            // could quit with the caller still waiting for it
            shim.active.fetch_add(1, Ordering::SeqCst);
            let resp = match shim.start().await {
                Ok(()) => Response::Ok,
                Err(e) => err(e),
            };
            let _ = send(&mut w, &resp).await;
            shim.active.fetch_sub(1, Ordering::SeqCst);
            shim.maybe_quit();
            return;
        }
        Request::Kill {
            signal,
            all,
            exec_id,
        } => match shim.kill(signal, all, &exec_id).await {
            Ok(()) => Response::Ok,
            Err(e) => err(e),
        },
        Request::Resize {
            exec_id,
            width,
            height,
        } => match shim.resize(&exec_id, width, height) {
            Ok(()) => Response::Ok,
            Err(e) => err(e),
        },
        Request::ReopenLog => match shim.init.cri_log.as_ref().map(|l| l.reopen()) {
            None => err("the container has no CRI log".into()),
            Some(Ok(())) => Response::Ok,
            Some(Err(e)) => err(format!("reopening the CRI log: {e}")),
        },
        Request::Pids => match shim
            .runtime(
                &["ps", "--format", "json", &shim.cfg.id],
                Stdio3::null(),
                true,
            )
            .await
        {
            Ok(out) => match serde_json::from_slice::<Option<Vec<i32>>>(&out) {
                Ok(p) => Response::Pids {
                    pids: p.unwrap_or_default(),
                },
                Err(e) => err(format!("runtime ps: {e}")),
            },
            // without cgroups the runtime cannot list processes: the pid namespace can
            Err(e) => match pids_in_namespace_of(shim.init.pid()) {
                Some(pids) if shim.init.exit.borrow().is_none() => Response::Pids { pids },
                _ => err(e),
            },
        },
        Request::Pause | Request::Resume => {
            let verb = if req == Request::Pause {
                "pause"
            } else {
                "resume"
            };
            match shim
                .runtime(&[verb, &shim.cfg.id], Stdio3::null(), false)
                .await
            {
                Ok(_) => {
                    *lock(&shim.status) = if verb == "pause" { "paused" } else { "running" };
                    Response::Ok
                }
                Err(e) => err(e),
            }
        }
        Request::Delete { force } => {
            let mut args = vec!["delete"];
            if force {
                args.push("--force");
            }
            args.push(&shim.cfg.id);
            let r = shim.runtime(&args, Stdio3::null(), false).await;
            let ok = r.is_ok();
            let _ = send(&mut w, &r.map(|_| Response::Ok).unwrap_or_else(err)).await;
            if ok {
                // clients still streaming get what is queued for them (a --rm attach gets its
                // exit after the last byte), a stuck one is not waited for long
                shim.deleted.store(true, Ordering::SeqCst);
                shim.maybe_quit();
                let me = shim.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    me.quit.notify_one();
                });
            }
            return;
        }
        Request::Shutdown => {
            let _ = send(&mut w, &Response::Ok).await;
            shim.quit.notify_one();
            return;
        }
        Request::Wait { exec_id, drained } => {
            let p = match shim.proc(&exec_id) {
                Ok(p) => p,
                Err(e) => {
                    let _ = send(&mut w, &err(e)).await;
                    return;
                }
            };
            shim.active.fetch_add(1, Ordering::SeqCst);
            let mut rx = if drained {
                p.done.subscribe()
            } else {
                p.exit.subscribe()
            };
            let info = rx
                .wait_for(|e| e.is_some())
                .await
                .ok()
                .and_then(|e| e.clone());
            if drained {
                let _ = p.streams.subscribe().wait_for(|n| *n == 0).await;
            }
            let resp = match info {
                Some(i) => Response::Exit(i),
                None => err("wait lost".into()),
            };
            let _ = send(&mut w, &resp).await;
            shim.active.fetch_sub(1, Ordering::SeqCst);
            shim.maybe_quit();
            return;
        }
        Request::Attach { frames: false, .. } | Request::Exec { frames: false, .. } => err(
            "this shim streams in frames only (nookd is older than the shim): restart nookd".into(),
        ),
        Request::Attach { stdin, start, .. } => {
            shim.active.fetch_add(1, Ordering::SeqCst);
            let sub = shim.init.subscribe();
            let resp = if start && *lock(&shim.status) == "created" {
                match shim.start().await {
                    Ok(()) => Response::Ok,
                    Err(e) => err(e),
                }
            } else {
                Response::Ok
            };
            let ok = resp == Response::Ok;
            let resp = if ok {
                Response::Stream {
                    pid: shim.init.pid(),
                }
            } else {
                resp
            };
            if ok {
                if send(&mut w, &resp).await.is_ok() {
                    stream(shim.init.clone(), sub, r, w, stdin).await;
                } else if stdin {
                    // gone before it heard of the stream: as if it left during it
                    shim.init.client_gone();
                }
            } else {
                let _ = send(&mut w, &resp).await;
            }
            shim.active.fetch_sub(1, Ordering::SeqCst);
            shim.maybe_quit();
            return;
        }
        Request::Exec {
            exec_id,
            process,
            tty,
            stdin,
            ..
        } => {
            shim.active.fetch_add(1, Ordering::SeqCst);
            match shim.exec(&exec_id, process, tty, stdin).await {
                Ok((proc, sub)) => {
                    let pid = proc.pid();
                    if send(&mut w, &Response::Stream { pid }).await.is_ok() {
                        stream(proc, sub, r, w, stdin).await;
                    } else {
                        // nookd dropped the request (its client died while the process
                        // started): nobody will ever write to its stdin or close it
                        proc.client_gone();
                    }
                }
                Err(e) => {
                    let _ = send(&mut w, &err(e)).await;
                }
            }
            shim.active.fetch_sub(1, Ordering::SeqCst);
            shim.maybe_quit();
            return;
        }
    };
    let _ = send(&mut w, &resp).await;
}

/// The readiness line nookd reads from the shim's stdout.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Ready {
    pub ok: bool,
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub error: String,
}

/// Writes the readiness line and detaches stdout.
fn ready(r: &Ready) {
    if let Ok(mut line) = serde_json::to_vec(r) {
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null.as_fd());
    }
}

/// The entry point of `nook-shim <bundle>`: returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--version") {
        println!("nook-shim {}", crate::VERSION);
        return 0;
    }
    let Some(bundle) = args.get(1).map(PathBuf::from) else {
        eprintln!("usage: nook-shim BUNDLE (started by nookd)");
        return 2;
    };
    let fail = |error: String| {
        ready(&Ready {
            ok: false,
            pid: 0,
            error: error.clone(),
        });
        eprintln!("nook-shim: {error}");
        1
    };
    let cfg: ShimConfig = match std::fs::read(bundle.join(files::CONFIG))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "reading {}: {e}",
                bundle.join(files::CONFIG).display()
            ))
        }
    };
    if let Err(e) = daemonize(&bundle, &cfg.port_fds) {
        return fail(format!("detaching: {e}"));
    }
    for fd in &cfg.port_fds {
        // close-on-exec: the runtime, started next, must not hold a port (nor give it on)
        // SAFETY: fcntl on a descriptor nookd passed to this process.
        unsafe { libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    if let Err(e) = std::env::set_current_dir(&bundle) {
        return fail(format!("entering {}: {e}", bundle.display()));
    }
    let _ = std::fs::write(files::PID, std::process::id().to_string());
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return fail(format!("becoming a subreaper: {e}"));
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("runtime: {e}")),
    };
    rt.block_on(run(cfg, bundle))
}

async fn run(cfg: ShimConfig, bundle: PathBuf) -> i32 {
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            ready(&Ready {
                ok: false,
                pid: 0,
                error: format!("SIGCHLD handler: {e}"),
            });
            return 1;
        }
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(bundle.join(files::LOG));
    let log = match log {
        Ok(l) => l,
        Err(e) => {
            ready(&Ready {
                ok: false,
                pid: 0,
                error: format!("opening the container log: {e}"),
            });
            return 1;
        }
    };
    let cri_log = match &cfg.cri_log {
        None => None,
        Some(p) => match super::crilog::CriLog::open(p.into(), cfg.cri_log_max_line) {
            Ok(l) => Some(l),
            Err(e) => {
                ready(&Ready {
                    ok: false,
                    pid: 0,
                    error: format!("opening the CRI log {p}: {e}"),
                });
                return 1;
            }
        },
    };
    let shim = Shim::new(cfg, bundle, Some(log), cri_log, Arc::new(RuntimeBinary));
    let reaper = shim.clone();
    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            reaper.reaper.reap();
        }
    });
    let _ = std::fs::remove_file(files::SOCKET);
    let listener = match UnixListener::bind(files::SOCKET) {
        Ok(l) => l,
        Err(e) => {
            ready(&Ready {
                ok: false,
                pid: 0,
                error: format!("binding {}: {e}", files::SOCKET),
            });
            return 1;
        }
    };
    if !shim.cfg.ports.is_empty() && shim.cfg.relay.is_none() {
        let ports = super::direct::Ports::new(shim.cfg.ports.clone(), &shim.cfg.port_fds);
        if let Err(e) = super::direct::serve(Arc::new(ports)) {
            ready(&Ready {
                ok: false,
                pid: 0,
                error: format!("listening for the container's bind calls: {e}"),
            });
            return 1;
        }
    }
    let pid = match shim.create_or_delete().await {
        Ok(pid) => pid,
        Err(e) => {
            ready(&Ready {
                ok: false,
                pid: 0,
                error: e,
            });
            let _ = std::fs::remove_file(files::SOCKET);
            return 1;
        }
    };
    ready(&Ready {
        ok: true,
        pid,
        error: String::new(),
    });
    // after the readiness line, to keep it off the start's path: until then, connections
    // wait in the listeners' backlog
    let _relays = match super::direct::relay_ports(&shim.cfg) {
        Ok(tasks) => tasks,
        Err(e) => {
            // the container runs, but its ports would hang: say so where nookd looks
            eprintln!("nook-shim: relaying the published ports: {e}");
            Vec::new()
        }
    };
    loop {
        tokio::select! {
            conn = listener.accept() => {
                if let Ok((c, _)) = conn {
                    tokio::spawn(handle(shim.clone(), c));
                }
            }
            _ = shim.quit.notified() => break,
        }
    }
    let _ = std::fs::remove_file(files::SOCKET);
    0
}
