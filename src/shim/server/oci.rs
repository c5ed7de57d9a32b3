//! The OCI runtime driver of the shim: runtime command lines, their stdio (pipes or a console
//! socket that receives the pty master), and the runtime's own error from its JSON log.
//!
//! Every runtime invocation goes through [`OciRuntime`]: [`RuntimeBinary`] runs runc or crun;
//! the unit tests give the shim an in-memory runtime (`oci::fake`) that fails on the Nth call.

use std::future::Future;
use std::pin::Pin;

use super::*;

/// A runtime invocation in progress.
pub(super) type Invocation<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;

/// The OCI runtime as the shim drives it: one invocation per call (`create`, `run`, `start`,
/// `kill`, `ps`, `pause`, `resume`, `delete`, `exec`), the child's stdio given; its stdout
/// returned when `capture`. An error is the runtime's own last message.
pub(super) trait OciRuntime: Send + Sync {
    fn invoke<'a>(
        &'a self,
        shim: &'a Shim,
        args: &'a [&'a str],
        io: Stdio3,
        capture: bool,
    ) -> Invocation<'a>;
}

/// The configured runtime binary (runc, crun), run in the bundle with a JSON log.
pub(super) struct RuntimeBinary;

impl OciRuntime for RuntimeBinary {
    fn invoke<'a>(
        &'a self,
        shim: &'a Shim,
        args: &'a [&'a str],
        io: Stdio3,
        capture: bool,
    ) -> Invocation<'a> {
        Box::pin(shim.run_binary(args, io, capture))
    }
}

/// Standard streams of a process being created.
pub(super) struct Stdio3 {
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
}

impl Stdio3 {
    pub(super) fn null() -> Stdio3 {
        Stdio3 {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

impl Shim {
    fn runtime_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cfg.runtime);
        c.args(&self.cfg.runtime_args)
            .arg("--root")
            .arg(&self.cfg.runtime_root)
            .arg("--log")
            .arg(self.bundle.join(files::RUNTIME_LOG))
            .arg("--log-format")
            .arg("json")
            .args(args)
            .current_dir(&self.bundle);
        c
    }

    /// Runs the runtime; on failure the error is the runtime's own last error message.
    pub(super) async fn runtime(
        &self,
        args: &[&str],
        io: Stdio3,
        capture: bool,
    ) -> Result<Vec<u8>, String> {
        self.oci.invoke(self, args, io, capture).await
    }

    /// [`RuntimeBinary`]'s invocation.
    async fn run_binary(
        &self,
        args: &[&str],
        io: Stdio3,
        capture: bool,
    ) -> Result<Vec<u8>, String> {
        let log = self.bundle.join(files::RUNTIME_LOG);
        let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.runtime_cmd(args);
        cmd.stdin(io.stdin).stderr(io.stderr);
        let mut out_reader = None;
        if capture {
            let (r, w) = pipe().map_err(|e| format!("pipe: {e}"))?;
            cmd.stdout(Stdio::from(w));
            out_reader = Some(async_fd(r).map_err(|e| format!("pipe: {e}"))?);
        } else {
            cmd.stdout(io.stdout);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.cfg.runtime))?;
        let exited = self.reaper.wait_for(child.id() as i32);
        drop(cmd); // closes our copies of the child's stdio
        let mut out = Vec::new();
        if let Some(r) = out_reader {
            let mut buf = [0u8; 8192];
            while let Ok(n) = read_fd(&r, &mut buf).await {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
        let st = exited.await.map_err(|_| "runtime wait lost".to_string())?;
        match exit_code(st) {
            Some(0) => Ok(out),
            code => Err(runtime_error(&log, log_start).unwrap_or_else(|| {
                format!(
                    "{} {} failed (exit status {})",
                    self.cfg.runtime,
                    args.first().unwrap_or(&""),
                    code.unwrap_or(-1)
                )
            })),
        }
    }

    /// Creates the stdio of a new process: pipes (or /dev/null stdin), or a console socket whose
    /// received pty master the returned future installs on `proc`.
    pub(super) fn stdio_for(
        &self,
        proc: &Arc<Proc>,
        tty: bool,
        stdin: bool,
    ) -> std::io::Result<Stdio3> {
        if tty {
            return Ok(Stdio3::null());
        }
        let stdin_io = if stdin {
            let (r, w) = pipe()?;
            *lock(&proc.stdin) = Some(async_fd(w)?);
            Stdio::from(r)
        } else {
            Stdio::null()
        };
        let (or, ow) = pipe()?;
        let (er, ew) = pipe()?;
        proc.pump(async_fd(or)?, false);
        proc.pump(async_fd(er)?, true);
        Ok(Stdio3 {
            stdin: stdin_io,
            stdout: Stdio::from(ow),
            stderr: Stdio::from(ew),
        })
    }

    /// Runs a runtime command that may hand over a pty master on `console` (a socket name in the
    /// bundle); installs the master on `proc`.
    pub(super) async fn runtime_with_console(
        &self,
        args: &[&str],
        io: Stdio3,
        console: Option<(&UnixListener, &Arc<Proc>)>,
    ) -> Result<(), String> {
        let Some((listener, proc)) = console else {
            return self.runtime(args, io, false).await.map(|_| ());
        };
        let run = self.runtime(args, io, false);
        tokio::pin!(run);
        let mut got_master = false;
        loop {
            tokio::select! {
                res = &mut run => {
                    res?;
                    if !got_master {
                        // the runtime finished: its connection, if any, is queued
                        match tokio::time::timeout(Duration::from_millis(500), listener.accept()).await {
                            Ok(Ok((s, _))) => install_master(s, proc)?,
                            _ => return Err("the runtime sent no pty (console socket)".into()),
                        }
                    }
                    return Ok(());
                }
                conn = listener.accept(), if !got_master => {
                    let (s, _) = conn.map_err(|e| format!("console socket: {e}"))?;
                    install_master(s, proc)?;
                    got_master = true;
                }
            }
        }
    }

    pub(super) fn console_listener(&self) -> Result<(UnixListener, String), String> {
        let name = format!("console-{}.sock", self.seq.fetch_add(1, Ordering::Relaxed));
        let _ = std::fs::remove_file(self.bundle.join(&name));
        // relative: the runtime runs in the bundle directory, and the absolute path may be
        // longer than a socket address allows
        let l = UnixListener::bind(&name).map_err(|e| format!("console socket: {e}"))?;
        Ok((l, name))
    }
}

pub(super) fn read_pid(path: &Path) -> Result<i32, String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("the runtime wrote no pid to {}", path.display()))
}

/// The last error message the runtime logged after byte `from` of its JSON log.
fn runtime_error(log: &Path, from: u64) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(text.get(from as usize..)?).into_owned();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error" || v["level"] == "fatal")
        .and_then(|v| v["msg"].as_str().map(str::to_string))
}

#[cfg(test)]
pub(super) mod fake;
