//! The daemon side of tasks: bundles on disk, starting `nook-shim`, talking to it, and finding
//! the shims of a previous nookd after a restart.
//!
//! A task's bundle is `<state>/tasks/<ns>/<id>/`: `config.json` (the OCI spec), `shim.json`,
//! the container's `hostname`, `hosts` and `resolv.conf`, the log and the shim's files (see
//! [`crate::shim`]). The runtime's own state lives in `<state>/runtime/<runtime-name>/`.
//! Everything is under the runtime state directory (`$XDG_RUNTIME_DIR`), which outlives nookd
//! but not a reboot — like the processes it describes.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::Spec;
use tokio::io::AsyncBufReadExt;

use super::plugin::RuntimeBinary;
use crate::error::{Error, IoContext, Result};
use crate::network::manager::HeldPorts;
use crate::shim::client::ShimClient;
use crate::shim::server::Ready;
use crate::shim::{files, ExitInfo, ShimConfig, TaskState};

/// Task bookkeeping rooted at nookd's state directory.
#[derive(Debug, Clone)]
pub struct Tasks {
    state: PathBuf,
    shim: PathBuf,
}

/// The contents of the container's /etc/hostname, /etc/hosts and /etc/resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcFiles {
    pub hostname: String,
    pub hosts: String,
    pub resolv: String,
}

impl EtcFiles {
    /// Defaults for a container called `hostname`: loopback hosts entries, and the host's
    /// resolv.conf minus loopback nameservers (unreachable from the container's network
    /// namespace), with `fallback_dns` (e.g. slirp4netns's 10.0.2.3) when none remain.
    pub fn defaults(hostname: &str, host_resolv: &str, fallback_dns: Option<&str>) -> EtcFiles {
        let hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        );
        let mut resolv = String::new();
        let mut servers = 0;
        for l in host_resolv.lines() {
            let t = l.trim();
            if let Some(ns) = t.strip_prefix("nameserver") {
                let ns = ns.trim();
                if ns.starts_with("127.") || ns == "::1" {
                    continue;
                }
                servers += 1;
            }
            resolv.push_str(l);
            resolv.push('\n');
        }
        if servers == 0 {
            if let Some(dns) = fallback_dns {
                resolv.push_str(&format!("nameserver {dns}\n"));
            }
        }
        EtcFiles {
            hostname: format!("{hostname}\n"),
            hosts,
            resolv,
        }
    }
}

/// File names of the /etc files inside a bundle.
pub const HOSTNAME_FILE: &str = "hostname";
pub const HOSTS_FILE: &str = "hosts";
pub const RESOLV_FILE: &str = "resolv.conf";

/// Finds `nook-shim`: next to the running executable, then in PATH.
pub fn find_shim() -> Result<PathBuf> {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join("nook-shim");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    crate::bootstrap::preflight::which("nook-shim").ok_or_else(|| {
        Error::Precondition(
            "nook-shim not found next to nookd or in PATH: install it beside nookd".into(),
        )
    })
}

fn check_name(what: &str, s: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 128
        || s.starts_with('.')
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::InvalidArgument(format!(
            "invalid {what} {s:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

impl Tasks {
    /// Tasks under `state` (nookd's runtime state directory), shims from `shim`.
    pub fn new(state: impl Into<PathBuf>, shim: impl Into<PathBuf>) -> Tasks {
        Tasks {
            state: state.into(),
            shim: shim.into(),
        }
    }

    /// `<state>/tasks/<ns>/<id>`.
    pub fn bundle_dir(&self, ns: &str, id: &str) -> PathBuf {
        self.state.join("tasks").join(ns).join(id)
    }

    /// Waits (up to `limit`) until the shim of the container's previous run has exited: it
    /// holds that run's published ports until then, and the next run binds them again.
    pub async fn wait_shim_gone(&self, ns: &str, id: &str, limit: Duration) {
        let Some(pid) = std::fs::read_to_string(self.bundle_dir(ns, id).join(files::PID))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            return;
        };
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "nook-shim")
        };
        let t0 = std::time::Instant::now();
        while alive() && t0.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The runtime's `--root`: `<state>/runtime/<name>`.
    pub fn runtime_root(&self, runtime: &str) -> PathBuf {
        self.state.join("runtime").join(runtime)
    }

    /// A client for the task's shim.
    pub fn client(&self, ns: &str, id: &str) -> ShimClient {
        ShimClient::new(self.bundle_dir(ns, id))
    }

    /// Creates the bundle directory (0700), with the /etc files; returns its path. The spec is
    /// written by [`Tasks::write_spec`] once built (it refers to the /etc files' paths).
    pub fn prepare_bundle(&self, ns: &str, id: &str, etc: &EtcFiles) -> Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        check_name("namespace", ns)?;
        check_name("container id", id)?;
        let dir = self.bundle_dir(ns, id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .ctx(|| format!("creating {}", dir.display()))?;
        // the container reads these as any uid: world-readable files in a private directory
        // reached only through bind mounts
        for (name, text) in [
            (HOSTNAME_FILE, &etc.hostname),
            (HOSTS_FILE, &etc.hosts),
            (RESOLV_FILE, &etc.resolv),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).ctx(|| format!("writing {}", p.display()))?;
        }
        Ok(dir)
    }

    /// Writes `config.json`.
    pub fn write_spec(&self, bundle: &Path, spec: &Spec) -> Result<()> {
        let p = bundle.join("config.json");
        let data = serde_json::to_vec_pretty(spec)?;
        std::fs::write(&p, data).ctx(|| format!("writing {}", p.display()))
    }

    /// Starts the task's shim, which creates the container (not started yet). Returns the
    /// client and the container's init pid. On failure, the runtime's own message is the error.
    #[allow(clippy::too_many_arguments)]
    pub async fn spawn(
        &self,
        ns: &str,
        id: &str,
        rt: &RuntimeBinary,
        tty: bool,
        stdin: bool,
        start: bool,
        hold_output: bool,
        held: HeldPorts,
        cri_log: Option<(String, usize)>,
    ) -> Result<(ShimClient, i32)> {
        let bundle = self.bundle_dir(ns, id);
        let root = self.runtime_root(&rt.name);
        std::fs::create_dir_all(&root).ctx(|| format!("creating {}", root.display()))?;
        // a previous run of this container: its runtime state and files must go
        let _ = std::fs::remove_file(bundle.join(files::EXIT));
        let cfg = ShimConfig {
            id: id.to_string(),
            runtime: rt.path.to_string_lossy().into_owned(),
            runtime_args: rt.args.clone(),
            runtime_root: root.to_string_lossy().into_owned(),
            tty,
            stdin,
            start,
            hold_output,
            ports: held.ports.iter().map(|(m, _)| m.clone()).collect(),
            // the shim finds them at 3, 4, ...
            port_fds: (0..held.ports.len() as i32).map(|i| 3 + i).collect(),
            relay: held.relay.clone(),
            cri_log_max_line: cri_log.as_ref().map(|c| c.1).unwrap_or(0),
            cri_log: cri_log.map(|c| c.0),
        };
        let p = bundle.join(files::CONFIG);
        std::fs::write(&p, serde_json::to_vec(&cfg)?).ctx(|| format!("writing {}", p.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(bundle.join(files::SHIM_LOG))
            .ctx(|| "opening the shim log".into())?;
        let mut cmd = tokio::process::Command::new(&self.shim);
        if !held.ports.is_empty() {
            let fds: Vec<i32> = held.ports.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
            // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    // first out of the way of the target numbers, then into place (dup2
                    // clears close-on-exec)
                    let mut tmp = Vec::with_capacity(fds.len());
                    for fd in &fds {
                        let t = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 1000);
                        if t < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        tmp.push(t);
                    }
                    for (i, t) in tmp.iter().enumerate() {
                        if libc::dup2(*t, 3 + i as i32) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .arg(&bundle)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(false)
            .spawn()
            .ctx(|| format!("starting {}", self.shim.display()))?;
        // the shim has its copies: ours must not keep the ports bound when it hands them on
        drop(held);
        let out = child
            .stdout
            .take()
            .ok_or_else(|| Error::Internal("shim stdout missing".into()))?;
        let mut lines = tokio::io::BufReader::new(out).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        // the first process exits at once (it forks the real shim); reap it
        let _ = child.wait().await;
        let line = match line {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) | Ok(Err(_)) => {
                return Err(Error::Internal(format!(
                    "the shim exited without a word: see {}",
                    bundle.join(files::SHIM_LOG).display()
                )))
            }
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "the shim did not get ready within 60s: see {}",
                    bundle.join(files::SHIM_LOG).display()
                )))
            }
        };
        let ready: Ready = serde_json::from_str(&line)
            .map_err(|e| Error::Internal(format!("shim readiness line {line:?}: {e}")))?;
        if !ready.ok {
            return Err(create_failure(&rt.name, &ready.error));
        }
        Ok((ShimClient::new(bundle), ready.pid))
    }

    /// The task's state: from its shim, or — when none answers — from the recorded exit.
    /// `None` when there is no task (no bundle, or no shim and no exit record).
    pub async fn state(&self, ns: &str, id: &str) -> Option<TaskState> {
        let c = self.client(ns, id);
        if !c.bundle().exists() {
            return None;
        }
        match c.state().await {
            Ok(s) => Some(s),
            Err(_) => {
                let exit: Option<ExitInfo> = c.recorded_exit();
                exit.map(|e| TaskState {
                    id: id.to_string(),
                    pid: e.pid,
                    status: crate::shim::TaskStatus::Stopped,
                    started_at: c.recorded_start(),
                    exit: Some(e),
                    shim_pid: 0,
                    drained: true,
                })
            }
        }
    }

    /// Removes the runtime's state of a container whose shim is gone (`runtime delete --force`).
    pub async fn runtime_delete(&self, rt: &RuntimeBinary, id: &str) -> Result<()> {
        let out = tokio::process::Command::new(&rt.path)
            .args(&rt.args)
            .arg("--root")
            .arg(self.runtime_root(&rt.name))
            .args(["delete", "--force", id])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .ctx(|| format!("running {}", rt.path.display()))?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || err.contains("does not exist") || err.contains("not exist") {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "{} delete {id}: {}",
                rt.name,
                err.trim()
            )))
        }
    }

    /// Deletes the bundle directory.
    pub fn remove_bundle(&self, ns: &str, id: &str) -> Result<()> {
        let dir = self.bundle_dir(ns, id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("removing {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Every bundle on disk, as (namespace, id): what a restarted nookd reconnects to.
    pub fn list(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Ok(nss) = std::fs::read_dir(self.state.join("tasks")) else {
            return out;
        };
        for ns in nss.flatten() {
            let Ok(ids) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for id in ids.flatten() {
                if id.path().join("config.json").exists() {
                    out.push((
                        ns.file_name().to_string_lossy().into_owned(),
                        id.file_name().to_string_lossy().into_owned(),
                    ));
                }
            }
        }
        out.sort();
        out
    }
}

/// Reads a container's json-file log: the last `tail` entries (all when None), each with the
/// byte offset just after it, and the offset just after the last complete line (where following
/// the log goes on: a line still being written is left for the next read).
/// It reads through a handle opened beforehand (`None`: there is no log yet), so that a log
/// removed since (with its container) is still read whole.
#[allow(clippy::type_complexity)]
pub fn read_open_log(
    f: Option<&std::fs::File>,
    tail: Option<usize>,
) -> Result<(Vec<(crate::shim::LogLine, u64)>, u64)> {
    use std::io::{Read, Seek};
    let mut text = Vec::new();
    if let Some(mut f) = f {
        f.seek(std::io::SeekFrom::Start(0))
            .and_then(|_| f.read_to_end(&mut text))
            .map_err(|e| Error::io("reading the container log", e))?;
    }
    Ok(parse_log(text, tail))
}

/// The complete lines of a log's text, each with the offset after it, and where the last one
/// ends.
fn parse_log(mut text: Vec<u8>, tail: Option<usize>) -> (Vec<(crate::shim::LogLine, u64)>, u64) {
    let end = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    text.truncate(end);
    let mut lines: Vec<(&[u8], u64)> = Vec::new();
    let mut off = 0u64;
    for l in text.split_inclusive(|b| *b == b'\n') {
        off += l.len() as u64;
        if l.len() > 1 {
            lines.push((&l[..l.len() - 1], off));
        }
    }
    if let Some(n) = tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let entries = lines
        .into_iter()
        .filter_map(|(l, off)| Some((crate::shim::LogLine::parse(l)?, off)))
        .collect();
    (entries, end as u64)
}

/// The error for a runtime that could not create the container. A command that is not there
/// or cannot be executed gets docker's exit status (127, 126) and a message saying which; the
/// runtime's own words follow. runc says `exec: "x": executable file not found in $PATH`,
/// `exec: "/x": stat /x: no such file or directory`, `exec: "/x": permission denied`; crun
/// `executable file `x` not found in $PATH: No such file or directory`, `open executable:
/// Permission denied`.
pub fn create_failure(runtime: &str, error: &str) -> Error {
    let e = error.to_ascii_lowercase();
    let about_exec = e.contains("exec");
    let code = if e.contains("executable file not found")
        || (e.contains("executable file") && e.contains("not found"))
        || (about_exec && e.contains("no such file or directory"))
    {
        Some((127, "the command was not found in the container"))
    } else if about_exec && (e.contains("permission denied") || e.contains("is a directory")) {
        Some((
            126,
            "the command cannot be executed (not an executable file)",
        ))
    } else {
        None
    };
    match code {
        Some((code, what)) => Error::Exec {
            code,
            message: format!("{what}: {runtime}: {error}"),
        },
        None => Error::Precondition(format!("{runtime} could not create the container: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etc_defaults() {
        let e = EtcFiles::defaults(
            "web",
            "# x\nnameserver 127.0.0.53\nsearch lan\n",
            Some("10.0.2.3"),
        );
        assert_eq!(e.hostname, "web\n");
        assert!(e.hosts.contains("127.0.0.1\tlocalhost") && e.hosts.contains("\tweb\n"));
        assert!(!e.resolv.contains("127.0.0.53"));
        assert!(e.resolv.contains("search lan") && e.resolv.contains("nameserver 10.0.2.3"));
        let e = EtcFiles::defaults("a", "nameserver 1.1.1.1\n", Some("10.0.2.3"));
        assert_eq!(e.resolv, "nameserver 1.1.1.1\n");
    }

    #[test]
    fn bundles_and_listing() {
        let d = tempfile::tempdir().unwrap();
        let t = Tasks::new(d.path(), "/nonexistent/nook-shim");
        let etc = EtcFiles::defaults("c1", "", None);
        let b = t.prepare_bundle("default", "c1", &etc).unwrap();
        assert_eq!(b, d.path().join("tasks/default/c1"));
        assert_eq!(std::fs::read_to_string(b.join("hostname")).unwrap(), "c1\n");
        let spec = Spec::default();
        t.write_spec(&b, &spec).unwrap();
        t.prepare_bundle("other", "c2", &etc).unwrap();
        t.write_spec(&t.bundle_dir("other", "c2"), &spec).unwrap();
        assert_eq!(
            t.list(),
            vec![
                ("default".to_string(), "c1".to_string()),
                ("other".to_string(), "c2".to_string())
            ]
        );
        assert!(t.prepare_bundle("default", "../x", &etc).is_err());
        assert!(t.prepare_bundle("..", "x", &etc).is_err());
        t.remove_bundle("other", "c2").unwrap();
        t.remove_bundle("other", "c2").unwrap();
        assert_eq!(t.list().len(), 1);
    }

    #[tokio::test]
    async fn state_falls_back_to_the_exit_record() {
        let d = tempfile::tempdir().unwrap();
        let t = Tasks::new(d.path(), "/nonexistent/nook-shim");
        assert!(t.state("default", "none").await.is_none());
        let b = t
            .prepare_bundle("default", "gone", &EtcFiles::default())
            .unwrap();
        assert!(t.state("default", "gone").await.is_none());
        std::fs::write(
            b.join(files::EXIT),
            r#"{"pid":42,"exit_code":3,"exited_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let s = t.state("default", "gone").await.unwrap();
        assert_eq!(s.status, crate::shim::TaskStatus::Stopped);
        assert_eq!(s.exit.unwrap().exit_code, 3);
        assert_eq!(s.started_at, None);
        // the shim records when the init started beside its exit: a stopped task keeps it
        std::fs::write(
            b.join(files::EXIT),
            r#"{"pid":42,"exit_code":0,"exited_at":"2026-01-01T00:00:02Z","started_at":"2026-01-01T00:00:01Z"}"#,
        )
        .unwrap();
        let s = t.state("default", "gone").await.unwrap();
        assert_eq!(s.started_at.as_deref(), Some("2026-01-01T00:00:01Z"));
        assert_eq!(s.exit.unwrap().exited_at, "2026-01-01T00:00:02Z");
    }

    #[test]
    fn exec_failures_get_dockers_exit_codes() {
        let code = |rt: &str, e: &str| match create_failure(rt, e) {
            Error::Exec { code, message } => {
                assert!(message.contains(e) && message.contains(rt), "{message}");
                code
            }
            other => {
                assert!(other.to_string().contains(e));
                1
            }
        };
        assert_eq!(
            code(
                "runc",
                r#"runc run failed: unable to start container process: exec: "nosuch": executable file not found in $PATH"#
            ),
            127
        );
        assert_eq!(
            code(
                "runc",
                r#"unable to start container process: exec: "/nosuch": stat /nosuch: no such file or directory"#
            ),
            127
        );
        assert_eq!(
            code(
                "crun",
                "executable file `nosuch` not found in $PATH: No such file or directory"
            ),
            127
        );
        assert_eq!(
            code(
                "runc",
                r#"unable to start container process: exec: "/etc/x": permission denied"#
            ),
            126
        );
        assert_eq!(code("crun", "open executable: Permission denied"), 126);
        assert_eq!(code("crun", "mount `/x` to `/y`: Permission denied"), 1);
    }

    #[test]
    fn log_tail() {
        let d = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..5 {
            text.push_str(&format!(
                "{{\"log\":\"l{i}\\n\",\"stream\":\"stdout\",\"time\":\"t\"}}\n"
            ));
        }
        // a line being written is left for later
        text.push_str("{\"log\":\"l5");
        std::fs::write(d.path().join(files::LOG), &text).unwrap();
        let open = || std::fs::File::open(d.path().join(files::LOG)).ok();
        let (all, end) = read_open_log(open().as_ref(), None).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(end as usize, text.len() - "{\"log\":\"l5".len());
        // each line carries the offset just after it: the last complete line's is the end
        assert_eq!(all[4].1, end);
        assert_eq!(all[0].1 as usize, text.find('\n').unwrap() + 1);
        let (t, end2) = read_open_log(open().as_ref(), Some(2)).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(end2, end);
        assert_eq!(t[0].0.log, "l3\n");
        let nope = std::fs::File::open(d.path().join("nope")).ok();
        assert!(read_open_log(nope.as_ref(), Some(1)).unwrap().0.is_empty());
        // a log opened before its container (and bundle) went is still read whole
        let f = std::fs::File::open(d.path().join(files::LOG)).unwrap();
        std::fs::remove_file(d.path().join(files::LOG)).unwrap();
        let (open, end3) = read_open_log(Some(&f), Some(2)).unwrap();
        assert_eq!((open.len(), end3), (2, end));
        assert_eq!(open[1].0.log, "l4\n");
        assert!(read_open_log(None, None).unwrap().0.is_empty());
    }
}
