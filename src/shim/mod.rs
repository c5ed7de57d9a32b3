//! `nook-shim`: one small process per task, detached from nookd, that drives the OCI runtime
//! binary, holds the container's stdio, writes its log, reaps it and records its exit status.
//!
//! nookd and the shim speak a line-delimited JSON protocol over `<bundle>/shim.sock`: each
//! connection sends one [`Request`] line and gets one [`Response`] line; `attach` and `exec`
//! connections then stream [`Event`] lines (output, exit) to the client while the client sends
//! [`Input`] lines (stdin, resize, close).
//!
//! Files in the bundle directory (`<state>/tasks/<ns>/<id>/`):
//! `shim.json` ([`ShimConfig`]), `config.json` (the OCI spec), `shim.sock`, `shim.pid`,
//! `init.pid`, `container.log` (docker json-file lines), `exit.json` ([`ExitInfo`], written
//! atomically when the container's init exits), `shim.log` (the shim's own messages),
//! `runtime.log` (the runtime's JSON log).
//!
//! The shim exits by itself once the container has exited and every client that was streaming
//! or waiting has been answered; `exit.json` then tells nookd how it ended.

pub mod client;
pub mod direct;
pub mod server;

use serde::{Deserialize, Serialize};

/// Receives the descriptors a runtime sends over a unix socket (SCM_RIGHTS): the pty master of
/// `--console-socket`, the seccomp notification descriptor of `listenerPath`. The message's
/// bytes (crun's and runc's container state) are not needed. Retries when a signal interrupts
/// it (SIGCHLD arrives here often; a socket with a receive timeout is never restarted).
pub(crate) fn recv_fds(
    sock: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<Vec<std::os::fd::OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut buf = vec![0u8; 64 << 10];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => r.map_err(std::io::Error::from)?,
        };
        let mut out = Vec::new();
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: received with SCM_RIGHTS: new descriptors of this process, owned
                    // by nobody else.
                    out.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if out.is_empty() {
            return Err(std::io::Error::other("the runtime sent no descriptor"));
        }
        return Ok(out);
    }
}

/// `<bundle>/shim.json`: what the shim runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShimConfig {
    /// The container id given to the runtime.
    pub id: String,
    /// The runtime binary (absolute).
    pub runtime: String,
    /// Extra global runtime arguments (before the subcommand).
    #[serde(default)]
    pub runtime_args: Vec<String>,
    /// The runtime's `--root` state directory.
    pub runtime_root: String,
    /// Allocate a pty (`-t`).
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open (`-i`).
    #[serde(default)]
    pub stdin: bool,
    /// Start at once (`runtime run --detach`: one runtime invocation instead of create+start).
    #[serde(default)]
    pub start: bool,
    /// Keep the init's output in memory until the first client attaches (`nook run` attaches
    /// just after the start, and must not miss the first lines).
    #[serde(default)]
    pub hold_output: bool,
    /// The container's published ports, host port resolved: relayed by the shim when
    /// `relay` is set, else served directly by the container's own sockets ([`direct`]).
    #[serde(default)]
    pub ports: Vec<crate::network::ports::PortMapping>,
    /// The inherited descriptors holding those host ports, one per entry of `ports`.
    #[serde(default)]
    pub port_fds: Vec<i32>,
    /// Where to relay `ports` ([`crate::network::forward`]): the shim outlives nookd, so
    /// relayed connections survive a daemon restart, and the ports stay open meanwhile.
    #[serde(default)]
    pub relay: Option<crate::network::forward::RelayTarget>,
}

/// How a process ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitInfo {
    pub pid: i32,
    /// The exit code, or 128 + the signal that killed it.
    pub exit_code: i32,
    /// RFC 3339 with nanoseconds, UTC.
    pub exited_at: String,
}

/// A task's life stage as the shim reports it; on the wire, the lowercase name (`created`,
/// `running`, `paused`, `stopped`), so shims of older nookd versions still parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Created,
    Running,
    Paused,
    Stopped,
    /// A name this version does not know.
    #[serde(other)]
    Unknown,
}

impl TaskStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Created => "created",
            TaskStatus::Running => "running",
            TaskStatus::Paused => "paused",
            TaskStatus::Stopped => "stopped",
            TaskStatus::Unknown => "unknown",
        }
    }

    /// The status named `s` (`Unknown` for any other name).
    pub fn from_name(s: &str) -> TaskStatus {
        match s {
            "created" => TaskStatus::Created,
            "running" => TaskStatus::Running,
            "paused" => TaskStatus::Paused,
            "stopped" => TaskStatus::Stopped,
            _ => TaskStatus::Unknown,
        }
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task's state as the shim sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskState {
    pub id: String,
    /// The container's init process (host pid as seen in nookd's namespaces).
    pub pid: i32,
    pub status: TaskStatus,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub exit: Option<ExitInfo>,
    /// The shim's own pid.
    #[serde(default)]
    pub shim_pid: i32,
}

/// A request: the first line of every connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    State,
    /// Start the created container (`runtime start`).
    Start,
    /// Signal the init process (`all`: every process of the container), or an exec'd one.
    Kill {
        signal: i32,
        #[serde(default)]
        all: bool,
        #[serde(default)]
        exec_id: Option<String>,
    },
    /// Answer when the process has exited.
    Wait {
        #[serde(default)]
        exec_id: Option<String>,
    },
    /// Stream the container's output (and take stdin); with `start`, start it once attached so
    /// that no output is missed.
    Attach {
        #[serde(default)]
        stdin: bool,
        #[serde(default)]
        start: bool,
    },
    /// Run an extra process (an OCI `process` object) in the container and stream it.
    Exec {
        exec_id: String,
        process: serde_json::Value,
        #[serde(default)]
        tty: bool,
        #[serde(default)]
        stdin: bool,
    },
    /// Set a pty's window size.
    Resize {
        #[serde(default)]
        exec_id: Option<String>,
        width: u16,
        height: u16,
    },
    /// The container's processes (`runtime ps`).
    Pids,
    Pause,
    Resume,
    /// `runtime delete` (with `force`, kills first); the shim then exits.
    Delete {
        #[serde(default)]
        force: bool,
    },
    /// Exit the shim now (the container, if any, is left to the runtime).
    Shutdown,
}

/// The answer line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Error {
        message: String,
    },
    State(TaskState),
    Exit(ExitInfo),
    Pids {
        pids: Vec<i32>,
    },
    /// An exec started: its pid.
    Started {
        pid: i32,
    },
}

/// Lines the shim streams on `attach` and `exec` connections after the response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// Output: `stream` is `stdout` or `stderr`, `data` base64.
    Out { stream: String, data: String },
    /// The process exited and its output is drained: the last line.
    Exit(ExitInfo),
}

/// Lines the client sends on `attach` and `exec` connections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "in", rename_all = "snake_case")]
pub enum Input {
    Stdin { data: String },
    CloseStdin,
    Resize { width: u16, height: u16 },
}

/// One docker json-file log line.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogLine {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Now, as RFC 3339 with nanoseconds (docker's log and event timestamps).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Exit code of a wait status: the code, or 128 + signal.
pub fn exit_code(status: nix::sys::wait::WaitStatus) -> Option<i32> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// File names inside a bundle.
pub mod files {
    pub const CONFIG: &str = "shim.json";
    pub const SOCKET: &str = "shim.sock";
    pub const PID: &str = "shim.pid";
    pub const INIT_PID: &str = "init.pid";
    pub const LOG: &str = "container.log";
    pub const EXIT: &str = "exit.json";
    pub const SHIM_LOG: &str = "shim.log";
    pub const RUNTIME_LOG: &str = "runtime.log";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_roundtrip() {
        let reqs = vec![
            Request::State,
            Request::Kill {
                signal: 9,
                all: true,
                exec_id: None,
            },
            Request::Attach {
                stdin: true,
                start: true,
            },
            Request::Exec {
                exec_id: "e1".into(),
                process: serde_json::json!({"args": ["ls"]}),
                tty: false,
                stdin: false,
            },
        ];
        for r in reqs {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        }
        // short forms parse with defaults
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"kill","signal":15}"#).unwrap(),
            Request::Kill {
                signal: 15,
                all: false,
                exec_id: None
            }
        );
        let ev = Event::Exit(ExitInfo {
            pid: 3,
            exit_code: 137,
            exited_at: now_rfc3339(),
        });
        let line = serde_json::to_string(&ev).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), ev);
    }

    #[test]
    fn exit_codes() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        use nix::unistd::Pid;
        let p = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Exited(p, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some(137)
        );
        assert!(now_rfc3339().ends_with('Z'));
    }
}
