//! `nook-shim`: one small process per task, detached from nookd, that drives the OCI runtime
//! binary, holds the container's stdio, writes its log, reaps it and records its exit status.
//!
//! nookd and the shim speak over `<bundle>/shim.sock`, one connection per request: the client
//! sends one JSON [`Request`] line and gets one JSON [`Response`] line; `attach` and `exec`
//! connections then carry binary [`frame`]s: [`Event`]s (output, then the exit) to the client,
//! [`Input`]s (stdin, close, resize) from it. Output is never dropped: a client that does not
//! read holds the process (see `server`), and the exit event always follows the last byte.
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
mod crilog;
mod detach;
pub mod direct;
mod io;
pub mod pod;
mod reaper;
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
    /// Also write the init's output in the CRI log format at this path (a CRI container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cri_log: Option<String>,
    /// Lines longer than this are cut into partial (`P`) CRI log lines.
    #[serde(default)]
    pub cri_log_max_line: usize,
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
    /// Every byte of the init's output is in the log (false while a stopped container's last
    /// output is still being read; shims older than this field always said true).
    #[serde(default = "yes")]
    pub drained: bool,
}

fn yes() -> bool {
    true
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
    /// Answer when the process has exited; with `drained`, only once its output is drained
    /// and every client streaming it has its exit event (whoever removes the container on
    /// this answer, a `--rm` watcher, then cuts no stream short).
    Wait {
        #[serde(default)]
        exec_id: Option<String>,
        #[serde(default)]
        drained: bool,
    },
    /// Stream the container's output (and take stdin); with `start`, start it once attached so
    /// that no output is missed.
    Attach {
        #[serde(default)]
        stdin: bool,
        #[serde(default)]
        start: bool,
        /// Stream in [`frame`]s (shims older than frames ignore this and answer `ok`, then
        /// stream [`lines`]).
        #[serde(default)]
        frames: bool,
    },
    /// Run an extra process (an OCI `process` object) in the container and stream it.
    Exec {
        exec_id: String,
        process: serde_json::Value,
        #[serde(default)]
        tty: bool,
        #[serde(default)]
        stdin: bool,
        /// As for `attach`.
        #[serde(default)]
        frames: bool,
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
    /// Open the CRI log again (it was rotated).
    ReopenLog,
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
    /// The answer to an `attach` or `exec` asking for frames: the process (its pid), whose
    /// [`frame`]s follow.
    Stream {
        pid: i32,
    },
}

/// What the shim streams on `attach` and `exec` connections after the response.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Output of the process: stderr, or stdout.
    Out { stderr: bool, data: bytes::Bytes },
    /// The process exited and every byte of its output was sent before this: the last event.
    Exit(ExitInfo),
}

/// What the client sends on `attach` and `exec` connections.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Stdin(bytes::Bytes),
    CloseStdin,
    Resize { width: u16, height: u16 },
}

/// The binary framing of [`Event`]s and [`Input`]s on `attach` and `exec` connections, after
/// the JSON request and response lines.
///
/// A frame is one kind byte, a 4-byte big-endian payload length and the payload. Output is
/// sent as it was read, without the base64-in-JSON of the older [`lines`]: encoding and
/// decoding 50 MB in 64 KiB chunks took 8.1 s as JSON lines with base64 against 0.16 s as
/// frames (a debug build, as the tests run; the `framing_cost` test measures it).
pub mod frame {
    use super::{Event, ExitInfo, Input};
    use bytes::Bytes;
    use tokio::io::{AsyncRead, AsyncReadExt};

    /// Shim to client.
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// Payload: [`ExitInfo`] as JSON.
    pub const EXIT: u8 = 3;
    /// Client to shim.
    pub const STDIN: u8 = 1;
    pub const CLOSE_STDIN: u8 = 2;
    /// Payload: width and height, 2 bytes each, big-endian.
    pub const RESIZE: u8 = 3;

    /// The largest payload accepted (output is read in smaller pieces).
    pub const MAX: usize = 1 << 20;

    fn header(kind: u8, len: usize, out: &mut Vec<u8>) {
        out.push(kind);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }

    /// The frame header of an event, and its payload (output data is not copied).
    pub fn event(ev: &Event) -> (Vec<u8>, Bytes) {
        let mut h = Vec::with_capacity(5);
        match ev {
            Event::Out { stderr, data } => {
                header(if *stderr { STDERR } else { STDOUT }, data.len(), &mut h);
                (h, data.clone())
            }
            Event::Exit(info) => {
                let body = serde_json::to_vec(info).unwrap_or_default();
                header(EXIT, body.len(), &mut h);
                (h, Bytes::from(body))
            }
        }
    }

    /// An input as one frame.
    pub fn input(i: &Input) -> Vec<u8> {
        let mut out = Vec::new();
        match i {
            Input::Stdin(d) => {
                header(STDIN, d.len(), &mut out);
                out.extend_from_slice(d);
            }
            Input::CloseStdin => header(CLOSE_STDIN, 0, &mut out),
            Input::Resize { width, height } => {
                header(RESIZE, 4, &mut out);
                out.extend_from_slice(&width.to_be_bytes());
                out.extend_from_slice(&height.to_be_bytes());
            }
        }
        out
    }

    /// Reads one frame: None at a clean end of stream (before a frame started).
    async fn read<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        let mut h = [0u8; 5];
        match r.read_exact(&mut h[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        r.read_exact(&mut h[1..]).await?;
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        if len > MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes (at most {MAX})"),
            ));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        Ok(Some((h[0], body)))
    }

    fn bad(what: String) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, what)
    }

    /// Reads the next event; None when the stream ended cleanly.
    pub async fn read_event<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Event>> {
        let Some((kind, body)) = read(r).await? else {
            return Ok(None);
        };
        Ok(Some(match kind {
            STDOUT | STDERR => Event::Out {
                stderr: kind == STDERR,
                data: Bytes::from(body),
            },
            EXIT => Event::Exit(
                serde_json::from_slice::<ExitInfo>(&body)
                    .map_err(|e| bad(format!("an exit frame: {e}")))?,
            ),
            k => return Err(bad(format!("an event frame of unknown kind {k}"))),
        }))
    }

    /// Reads the next input; None when the client closed its side.
    pub async fn read_input<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Input>> {
        let Some((kind, body)) = read(r).await? else {
            return Ok(None);
        };
        Ok(Some(match kind {
            STDIN => Input::Stdin(Bytes::from(body)),
            CLOSE_STDIN => Input::CloseStdin,
            RESIZE if body.len() == 4 => Input::Resize {
                width: u16::from_be_bytes([body[0], body[1]]),
                height: u16::from_be_bytes([body[2], body[3]]),
            },
            k => return Err(bad(format!("an input frame of unknown kind {k}"))),
        }))
    }
}

/// The JSON lines that older shims stream instead of frames (a shim outlives an upgrade of
/// nookd; nook 0.1's shims speak only these). Output data is base64.
pub mod lines {
    use base64::Engine;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(tag = "ev", rename_all = "snake_case")]
    pub enum LineEvent {
        Out { stream: String, data: String },
        Exit(super::ExitInfo),
    }

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(tag = "in", rename_all = "snake_case")]
    pub enum LineInput {
        Stdin { data: String },
        CloseStdin,
        Resize { width: u16, height: u16 },
    }

    fn b64() -> base64::engine::general_purpose::GeneralPurpose {
        base64::engine::general_purpose::STANDARD
    }

    /// Parses an event line.
    pub fn event(line: &str) -> Result<super::Event, String> {
        match serde_json::from_str::<LineEvent>(line).map_err(|e| e.to_string())? {
            LineEvent::Out { stream, data } => Ok(super::Event::Out {
                stderr: stream == "stderr",
                data: b64().decode(data).map_err(|e| e.to_string())?.into(),
            }),
            LineEvent::Exit(i) => Ok(super::Event::Exit(i)),
        }
    }

    /// An input as one line (with its newline).
    pub fn input(i: &super::Input) -> Vec<u8> {
        let l = match i {
            super::Input::Stdin(d) => LineInput::Stdin {
                data: b64().encode(d),
            },
            super::Input::CloseStdin => LineInput::CloseStdin,
            super::Input::Resize { width, height } => LineInput::Resize {
                width: *width,
                height: *height,
            },
        };
        let mut v = serde_json::to_vec(&l).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// One docker json-file log line.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogLine {
    /// The text (as docker writes it: bytes that are not UTF-8 become U+FFFD).
    pub log: String,
    pub stream: String,
    pub time: String,
    /// The exact bytes, base64, when they are not UTF-8 (docker's readers ignore it; nook's
    /// use it, so that `nook logs` gives back binary output byte for byte).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

impl LogLine {
    /// The entry for `bytes` written to `stream` now.
    pub fn new(stream: &str, bytes: &[u8]) -> LogLine {
        use base64::Engine;
        let (log, raw) = match std::str::from_utf8(bytes) {
            Ok(s) => (s.to_string(), None),
            Err(_) => (
                String::from_utf8_lossy(bytes).into_owned(),
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        };
        LogLine {
            log,
            stream: stream.to_string(),
            time: now_rfc3339(),
            raw,
        }
    }

    /// Appends the JSON line (with its newline) of `bytes` written to `stream` at `time` to
    /// `out`: what serde writes for [`LogLine::new`], without its cost per line (a million
    /// short lines are a million entries).
    pub fn write(stream: &str, bytes: &[u8], time: &str, out: &mut Vec<u8>) {
        use base64::Engine;
        let (text, raw) = match std::str::from_utf8(bytes) {
            Ok(t) => (std::borrow::Cow::Borrowed(t), None),
            Err(_) => (
                String::from_utf8_lossy(bytes),
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        };
        out.extend_from_slice(b"{\"log\":\"");
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let b = text.as_bytes();
        let (mut start, mut i) = (0, 0);
        while i < b.len() {
            let c = b[i];
            if c >= 0x20 && c != b'"' && c != b'\\' {
                i += 1;
                continue;
            }
            out.extend_from_slice(&b[start..i]);
            match c {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(c >> 4) as usize],
                    HEX[(c & 15) as usize],
                ]),
            }
            i += 1;
            start = i;
        }
        out.extend_from_slice(&b[start..]);
        out.extend_from_slice(b"\",\"stream\":\"");
        out.extend_from_slice(stream.as_bytes());
        out.extend_from_slice(b"\",\"time\":\"");
        out.extend_from_slice(time.as_bytes());
        if let Some(raw) = raw {
            out.extend_from_slice(b"\",\"raw\":\"");
            out.extend_from_slice(raw.as_bytes());
        }
        out.extend_from_slice(b"\"}\n");
    }

    /// Parses one line of the log: the lines [`LogLine::write`] writes without serde's cost
    /// per line, any other (docker's own, or with `raw`) with serde.
    pub fn parse(line: &[u8]) -> Option<LogLine> {
        fn string(b: &[u8], mut i: usize) -> Option<(String, usize)> {
            let mut out = Vec::new();
            let mut start = i;
            loop {
                match *b.get(i)? {
                    b'"' => {
                        out.extend_from_slice(&b[start..i]);
                        return Some((String::from_utf8(out).ok()?, i + 1));
                    }
                    b'\\' => {
                        out.extend_from_slice(&b[start..i]);
                        let c = match *b.get(i + 1)? {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'"' => b'"',
                            b'\\' => b'\\',
                            b'/' => b'/',
                            b'b' => 8,
                            b'f' => 12,
                            b'u' => {
                                let hex = std::str::from_utf8(b.get(i + 2..i + 6)?).ok()?;
                                let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                                let mut buf = [0u8; 4];
                                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                                i += 6;
                                start = i;
                                continue;
                            }
                            _ => return None,
                        };
                        out.push(c);
                        i += 2;
                        start = i;
                    }
                    _ => i += 1,
                }
            }
        }
        let fast = || -> Option<LogLine> {
            let b = line.strip_suffix(b"\n").unwrap_or(line);
            let rest = b.strip_prefix(b"{\"log\":\"")?;
            let (log, i) = string(rest, 0)?;
            let rest = rest[i..].strip_prefix(b",\"stream\":\"")?;
            let (stream, i) = string(rest, 0)?;
            let rest = rest[i..].strip_prefix(b",\"time\":\"")?;
            let (time, i) = string(rest, 0)?;
            let (raw, rest) = match rest[i..].strip_prefix(b",\"raw\":\"") {
                Some(r) => {
                    let (raw, i) = string(r, 0)?;
                    (Some(raw), &r[i..])
                }
                None => (None, &rest[i..]),
            };
            (rest == b"}").then_some(LogLine {
                log,
                stream,
                time,
                raw,
            })
        };
        fast().or_else(|| serde_json::from_slice(line).ok())
    }

    /// The bytes the container wrote.
    pub fn bytes(self) -> Vec<u8> {
        use base64::Engine;
        match self
            .raw
            .and_then(|r| base64::engine::general_purpose::STANDARD.decode(r).ok())
        {
            Some(b) => b,
            None => self.log.into_bytes(),
        }
    }
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
    fn log_lines_written_fast_read_back_exact() {
        let mut every: Vec<u8> = (0..=255u8).collect();
        every.extend(b"\n");
        let cases: Vec<Vec<u8>> = vec![
            b"plain line\n".to_vec(),
            b"quote \" back\\slash \t\r\x00\x01\x1f\x7f\n".to_vec(),
            "ünïcødé €\n".as_bytes().to_vec(),
            every,
            b"\xff\xfe invalid".to_vec(),
            Vec::new(),
        ];
        for c in cases {
            let mut out = Vec::new();
            LogLine::write("stderr", &c, "2026-01-01T00:00:00.000000000Z", &mut out);
            assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "{out:?}");
            let l: LogLine = serde_json::from_slice(&out).unwrap();
            assert_eq!(LogLine::parse(&out).as_ref(), Some(&l));
            assert_eq!(l.stream, "stderr");
            assert_eq!(l.time, "2026-01-01T00:00:00.000000000Z");
            // what serde itself would have written
            let mut want = LogLine::new("stderr", &c);
            want.time = l.time.clone();
            assert_eq!(l, want);
            assert_eq!(l.bytes(), c);
        }
    }

    /// The cost of the two framings for 50 MB of output in 64 KiB chunks, encoded by the shim
    /// and decoded by nookd: `cargo test --release --lib framing_cost -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore]
    async fn framing_cost() {
        let chunk = bytes::Bytes::from((0..64 * 1024).map(|i| (i * 7) as u8).collect::<Vec<_>>());
        let n = 50 * 16;
        let t0 = std::time::Instant::now();
        let mut wire = Vec::new();
        for _ in 0..n {
            use base64::Engine;
            let ev = lines::LineEvent::Out {
                stream: "stdout".into(),
                data: base64::engine::general_purpose::STANDARD.encode(&chunk),
            };
            serde_json::to_writer(&mut wire, &ev).unwrap();
            wire.push(b'\n');
        }
        let mut total = 0;
        for l in wire.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Event::Out { data, .. } = lines::event(std::str::from_utf8(l).unwrap()).unwrap()
            {
                total += data.len();
            }
        }
        let json = t0.elapsed();
        assert_eq!(total, n * chunk.len());
        let t0 = std::time::Instant::now();
        let mut wire = Vec::new();
        for _ in 0..n {
            let (h, b) = frame::event(&Event::Out {
                stderr: false,
                data: chunk.clone(),
            });
            wire.extend_from_slice(&h);
            wire.extend_from_slice(&b);
        }
        let mut r = &wire[..];
        let mut total = 0;
        while let Some(Event::Out { data, .. }) = frame::read_event(&mut r).await.unwrap() {
            total += data.len();
        }
        let frames = t0.elapsed();
        assert_eq!(total, n * chunk.len());
        eprintln!("50 MB: JSON lines with base64 {json:?}, frames {frames:?}");
    }

    #[test]
    fn log_lines_of_docker_parse() {
        // Go escapes <, > and & too; field order and extra fields vary
        let l = LogLine::parse(
            br#"{"log":"\u003cb\u003e \u0026 \ud83d\ude00\n","stream":"stdout","time":"t"}"#,
        )
        .unwrap();
        assert_eq!(l.log, "<b> & \u{1f600}\n");
        let l = LogLine::parse(br#"{"stream":"stderr","log":"x","time":"t","attrs":{}}"#).unwrap();
        assert_eq!((l.log.as_str(), l.stream.as_str()), ("x", "stderr"));
        assert!(LogLine::parse(b"{\"log\":\"cut").is_none());
    }

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
                frames: true,
            },
            Request::Exec {
                exec_id: "e1".into(),
                process: serde_json::json!({"args": ["ls"]}),
                tty: false,
                stdin: false,
                frames: true,
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
        // an older shim's lines
        assert_eq!(
            lines::event(r#"{"ev":"out","stream":"stderr","data":"AP8K"}"#).unwrap(),
            Event::Out {
                stderr: true,
                data: vec![0, 255, 10].into()
            }
        );
    }

    #[tokio::test]
    async fn frames_roundtrip() {
        let all: Vec<u8> = (0..=255u8).collect();
        let events = vec![
            Event::Out {
                stderr: false,
                data: all.clone().into(),
            },
            Event::Out {
                stderr: true,
                data: bytes::Bytes::new(),
            },
            Event::Exit(ExitInfo {
                pid: 3,
                exit_code: 137,
                exited_at: now_rfc3339(),
            }),
        ];
        let mut wire = Vec::new();
        for e in &events {
            let (h, body) = frame::event(e);
            wire.extend_from_slice(&h);
            wire.extend_from_slice(&body);
        }
        let mut r = &wire[..];
        for e in &events {
            assert_eq!(frame::read_event(&mut r).await.unwrap().as_ref(), Some(e));
        }
        assert_eq!(frame::read_event(&mut r).await.unwrap(), None);
        // a frame cut in the middle is an error, not a short event
        let mut cut = &wire[..wire.len() - 3];
        frame::read_event(&mut cut).await.unwrap();
        frame::read_event(&mut cut).await.unwrap();
        assert!(frame::read_event(&mut cut).await.is_err());

        let inputs = vec![
            Input::Stdin(all.into()),
            Input::CloseStdin,
            Input::Resize {
                width: 300,
                height: 2,
            },
        ];
        let wire: Vec<u8> = inputs.iter().flat_map(frame::input).collect();
        let mut r = &wire[..];
        for i in &inputs {
            assert_eq!(frame::read_input(&mut r).await.unwrap().as_ref(), Some(i));
        }
        assert_eq!(frame::read_input(&mut r).await.unwrap(), None);
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
