//! nookd's side of the shim protocol: one connection per request over `<bundle>/shim.sock`.
//!
//! Bundle paths can be longer than a unix socket address allows (108 bytes), so the client
//! connects through `/proc/self/fd/<dirfd>/shim.sock`, a short name for the same socket.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::{files, frame, lines, Event, ExitInfo, Input, Request, Response, TaskState};
use crate::error::{Error, Result};

/// A handle on one task's shim.
#[derive(Debug, Clone)]
pub struct ShimClient {
    bundle: PathBuf,
}

/// A streaming connection (attach or exec).
pub struct ShimStream {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    /// The shim streams [`frame`]s (else it is an older one, streaming [`lines`]).
    framed: bool,
}

impl ShimStream {
    /// Splits into the event reader and the input writer, to drive both at once.
    pub fn split(self) -> (ShimEvents, ShimInput) {
        (
            ShimEvents {
                r: self.r,
                framed: self.framed,
                line: String::new(),
            },
            ShimInput {
                w: self.w,
                framed: self.framed,
            },
        )
    }
}

/// The reading half of a [`ShimStream`].
pub struct ShimEvents {
    r: BufReader<OwnedReadHalf>,
    framed: bool,
    line: String,
}

impl ShimEvents {
    /// The next output or exit event; None when the shim closed the stream (an error when it
    /// closed it in the middle of an event).
    pub async fn next(&mut self) -> Result<Option<Event>> {
        if self.framed {
            return frame::read_event(&mut self.r)
                .await
                .map_err(|e| Error::io("reading from the shim", e));
        }
        self.line.clear();
        match self.r.read_line(&mut self.line).await {
            Ok(0) => Ok(None),
            Ok(_) if !self.line.ends_with('\n') => Err(Error::Unavailable(
                "the shim closed the stream in the middle of a line".into(),
            )),
            Ok(_) => lines::event(self.line.trim_end())
                .map(Some)
                .map_err(|e| Error::Internal(format!("shim sent a bad line: {e}"))),
            Err(e) => Err(Error::io("reading from the shim", e)),
        }
    }
}

/// The writing half of a [`ShimStream`]. Dropping it tells the shim that the client is gone
/// (it then closes the process's stdin): keep it until the exit event.
pub struct ShimInput {
    w: OwnedWriteHalf,
    framed: bool,
}

impl ShimInput {
    /// Sends input to the process (waits while the shim cannot take more: the process is not
    /// reading its stdin).
    pub async fn send(&mut self, input: &Input) -> Result<()> {
        let bytes = if self.framed {
            frame::input(input)
        } else {
            lines::input(input)
        };
        self.w
            .write_all(&bytes)
            .await
            .map_err(|e| Error::io("writing to the shim", e))
    }

    /// Tells the shim that the client is gone: it closes the process's stdin (an exec'd
    /// process on a terminal is hung up). The output still comes.
    pub async fn client_gone(&mut self) {
        let _ = self.w.shutdown().await;
    }
}

impl ShimClient {
    pub fn new(bundle: impl Into<PathBuf>) -> ShimClient {
        ShimClient {
            bundle: bundle.into(),
        }
    }

    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    /// Connects to the shim; `Unavailable` when no shim answers (exited, or killed).
    pub async fn connect(&self) -> Result<UnixStream> {
        let dir = std::fs::File::open(&self.bundle)
            .map_err(|e| Error::io(format!("opening {}", self.bundle.display()), e))?;
        let path = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), files::SOCKET);
        let r = UnixStream::connect(&path).await;
        drop(dir);
        r.map_err(|e| {
            Error::Unavailable(format!(
                "no shim answers for {} ({e})",
                self.bundle.display()
            ))
        })
    }

    async fn open(&self, req: &Request) -> Result<(ShimStream, Response)> {
        let conn = self.connect().await?;
        let (r, mut w) = conn.into_split();
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        w.write_all(&line)
            .await
            .map_err(|e| Error::io("writing to the shim", e))?;
        let mut r = BufReader::with_capacity(256 << 10, r);
        let mut l = String::new();
        let resp = match r.read_line(&mut l).await {
            Ok(0) => {
                return Err(Error::Unavailable(
                    "the shim closed the connection without answering".into(),
                ))
            }
            Ok(_) => serde_json::from_str::<Response>(&l)
                .map_err(|e| Error::Internal(format!("shim sent a bad answer: {e}")))?,
            Err(e) => return Err(Error::io("reading from the shim", e)),
        };
        if let Response::Error { message } = resp {
            return Err(Error::Precondition(message));
        }
        let framed = matches!(resp, Response::Stream { .. });
        Ok((ShimStream { r, w, framed }, resp))
    }

    /// One request, one answer.
    pub async fn call(&self, req: &Request) -> Result<Response> {
        self.open(req).await.map(|(_, r)| r)
    }

    pub async fn state(&self) -> Result<TaskState> {
        match self.call(&Request::State).await? {
            Response::State(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    pub async fn start(&self) -> Result<()> {
        self.call(&Request::Start).await.map(|_| ())
    }

    pub async fn kill(&self, signal: i32, all: bool, exec_id: Option<String>) -> Result<()> {
        self.call(&Request::Kill {
            signal,
            all,
            exec_id,
        })
        .await
        .map(|_| ())
    }

    /// Waits for the exit (of the init, or of an exec).
    pub async fn wait(&self, exec_id: Option<String>) -> Result<ExitInfo> {
        self.wait_for(exec_id, false).await
    }

    /// Waits for the exit (with `drained`: and for its output to reach every client).
    pub async fn wait_for(&self, exec_id: Option<String>, drained: bool) -> Result<ExitInfo> {
        match self.call(&Request::Wait { exec_id, drained }).await? {
            Response::Exit(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    pub async fn resize(&self, exec_id: Option<String>, width: u16, height: u16) -> Result<()> {
        self.call(&Request::Resize {
            exec_id,
            width,
            height,
        })
        .await
        .map(|_| ())
    }

    pub async fn pids(&self) -> Result<Vec<i32>> {
        match self.call(&Request::Pids).await? {
            Response::Pids { pids } => Ok(pids),
            other => Err(unexpected(other)),
        }
    }

    /// Opens the CRI log again (the client rotated it).
    pub async fn reopen_log(&self) -> Result<()> {
        match self.call(&Request::ReopenLog).await? {
            Response::Ok => Ok(()),
            Response::Error { message } => Err(Error::Precondition(message)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn pause(&self) -> Result<()> {
        self.call(&Request::Pause).await.map(|_| ())
    }

    pub async fn resume(&self) -> Result<()> {
        self.call(&Request::Resume).await.map(|_| ())
    }

    /// `runtime delete`; the shim exits afterwards.
    pub async fn delete(&self, force: bool) -> Result<()> {
        self.call(&Request::Delete { force }).await.map(|_| ())
    }

    pub async fn shutdown(&self) -> Result<()> {
        self.call(&Request::Shutdown).await.map(|_| ())
    }

    /// Attaches to the container's output (and stdin); with `start`, starts it once attached.
    pub async fn attach(&self, stdin: bool, start: bool) -> Result<ShimStream> {
        self.open(&Request::Attach {
            stdin,
            start,
            frames: true,
        })
        .await
        .map(|(s, _)| s)
    }

    /// Runs a process in the container; returns its pid and its stream.
    pub async fn exec(
        &self,
        exec_id: &str,
        process: serde_json::Value,
        tty: bool,
        stdin: bool,
    ) -> Result<(i32, ShimStream)> {
        let (s, r) = self
            .open(&Request::Exec {
                exec_id: exec_id.to_string(),
                process,
                tty,
                stdin,
                frames: true,
            })
            .await?;
        match r {
            Response::Started { pid } | Response::Stream { pid } => Ok((pid, s)),
            other => Err(unexpected(other)),
        }
    }

    /// The recorded exit of the container's init, if it exited.
    pub fn recorded_exit(&self) -> Option<ExitInfo> {
        let b = std::fs::read(self.bundle.join(files::EXIT)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// When the exited init had started, as its shim recorded with the exit (shims before
    /// this record did not say).
    pub fn recorded_start(&self) -> Option<String> {
        let b = std::fs::read(self.bundle.join(files::EXIT)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
        v["started_at"].as_str().map(String::from)
    }
}

fn unexpected(r: Response) -> Error {
    Error::Internal(format!("unexpected answer from the shim: {r:?}"))
}
