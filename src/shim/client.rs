//! nookd's side of the shim protocol: one connection per request over `<bundle>/shim.sock`.
//!
//! Bundle paths can be longer than a unix socket address allows (108 bytes), so the client
//! connects through `/proc/self/fd/<dirfd>/shim.sock`, a short name for the same socket.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::{files, Event, ExitInfo, Input, Request, Response, TaskState};
use crate::error::{Error, Result};

/// A handle on one task's shim.
#[derive(Debug, Clone)]
pub struct ShimClient {
    bundle: PathBuf,
}

/// A streaming connection (attach or exec).
pub struct ShimStream {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    w: OwnedWriteHalf,
}

impl ShimStream {
    /// The next output or exit event; None when the shim closed the stream.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        match self.lines.next_line().await {
            Ok(Some(l)) => serde_json::from_str(&l)
                .map(Some)
                .map_err(|e| Error::Internal(format!("shim sent a bad line: {e}"))),
            Ok(None) => Ok(None),
            Err(e) => Err(Error::io("reading from the shim", e)),
        }
    }

    /// Sends input to the process.
    pub async fn send(&mut self, input: &Input) -> Result<()> {
        let mut line = serde_json::to_vec(input)?;
        line.push(b'\n');
        self.w
            .write_all(&line)
            .await
            .map_err(|e| Error::io("writing to the shim", e))
    }

    /// Sends stdin bytes.
    pub async fn stdin(&mut self, data: &[u8]) -> Result<()> {
        let data = base64::engine::general_purpose::STANDARD.encode(data);
        self.send(&Input::Stdin { data }).await
    }

    /// Splits into the event reader and the input writer, to drive both at once.
    pub fn split(self) -> (ShimEvents, ShimInput) {
        (ShimEvents { lines: self.lines }, ShimInput { w: self.w })
    }
}

/// The reading half of a [`ShimStream`].
pub struct ShimEvents {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
}

impl ShimEvents {
    /// The next event; None at the end.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        match self.lines.next_line().await {
            Ok(Some(l)) => serde_json::from_str(&l)
                .map(Some)
                .map_err(|e| Error::Internal(format!("shim sent a bad line: {e}"))),
            Ok(None) => Ok(None),
            Err(e) => Err(Error::io("reading from the shim", e)),
        }
    }
}

/// The writing half of a [`ShimStream`].
pub struct ShimInput {
    w: OwnedWriteHalf,
}

impl ShimInput {
    /// Sends input to the process.
    pub async fn send(&mut self, input: &Input) -> Result<()> {
        let mut line = serde_json::to_vec(input)?;
        line.push(b'\n');
        self.w
            .write_all(&line)
            .await
            .map_err(|e| Error::io("writing to the shim", e))
    }
}

/// Decodes an [`Event::Out`] payload.
pub fn decode(data: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap_or_default()
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
        let mut lines = BufReader::new(r).lines();
        let resp = match lines.next_line().await {
            Ok(Some(l)) => serde_json::from_str::<Response>(&l)
                .map_err(|e| Error::Internal(format!("shim sent a bad answer: {e}")))?,
            Ok(None) => {
                return Err(Error::Unavailable(
                    "the shim closed the connection without answering".into(),
                ))
            }
            Err(e) => return Err(Error::io("reading from the shim", e)),
        };
        if let Response::Error { message } = resp {
            return Err(Error::Precondition(message));
        }
        Ok((ShimStream { lines, w }, resp))
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
        match self.call(&Request::Wait { exec_id }).await? {
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
        self.open(&Request::Attach { stdin, start })
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
            })
            .await?;
        match r {
            Response::Started { pid } => Ok((pid, s)),
            other => Err(unexpected(other)),
        }
    }

    /// The recorded exit of the container's init, if it exited.
    pub fn recorded_exit(&self) -> Option<ExitInfo> {
        let b = std::fs::read(self.bundle.join(files::EXIT)).ok()?;
        serde_json::from_slice(&b).ok()
    }
}

fn unexpected(r: Response) -> Error {
    Error::Internal(format!("unexpected answer from the shim: {r:?}"))
}
