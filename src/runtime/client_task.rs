//! Tasks of containers a containerd client made (containerd's Tasks.Create): the task is
//! nook's own (a shim running the OCI runtime on the record's spec), and nookd pumps its
//! output into the stdio FIFOs the client created (ctr makes them under /run/containerd/fifo,
//! inside nookd's mount namespace when run through `nook-rootless-setuptool.sh nsenter`).

use super::containers::{ContainerRecord, Manager};
use crate::error::{Error, Result};
use crate::shim::Event;
use std::io::Write;
use std::path::Path;

/// The client's stdio: FIFO paths (empty: none).
#[derive(Debug, Clone, Default)]
pub struct ClientStdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Opens a client's FIFO for writing without waiting for its reader (O_RDWR never blocks on
/// a FIFO), refusing anything that is not a FIFO.
fn open_fifo(path: &str) -> Result<Option<std::fs::File>> {
    if path.is_empty() {
        return Ok(None);
    }
    let p = path.strip_prefix("fifo://").unwrap_or(path);
    if p.contains("://") {
        return Err(Error::InvalidArgument(format!(
            "stdio {path:?}: nook takes FIFO paths only (binary:// and file:// loggers are not supported)"
        )));
    }
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

impl Manager {
    /// Creates (does not start) the task of a container a containerd client made, its output
    /// going to the client's FIFOs; returns the init's pid.
    pub async fn create_client_task(
        &self,
        ns: &str,
        r: &ContainerRecord,
        io: ClientStdio,
    ) -> Result<i32> {
        if !io.stdin.is_empty() {
            tracing::debug!(container = %r.id, "the client's stdin FIFO is not read: nook's tasks made through containerd's API get no stdin");
        }
        let (out, err) = (open_fifo(&io.stdout)?, open_fifo(&io.stderr)?);
        if !self.create_task(ns, r, false, true).await? {
            return Err(Error::AlreadyExists(format!(
                "task {} already exists",
                r.id
            )));
        }
        let c = self.tasks.client(ns, &r.id);
        let pid = c.state().await.map(|s| s.pid).unwrap_or(0);
        let stream = c.attach(false, false).await?;
        let id = r.id.clone();
        tokio::spawn(async move {
            let (mut events, _input) = stream.split();
            let (mut out, mut err) = (out, err);
            while let Ok(Some(ev)) = events.next().await {
                match ev {
                    Event::Out { stderr, data } => {
                        let bytes = data.to_vec();
                        let slot = if stderr && err.is_some() {
                            &mut err
                        } else {
                            &mut out
                        };
                        let Some(mut f) = slot.take() else { continue };
                        // a slow reader must not hold an async thread
                        let written = tokio::task::spawn_blocking(move || {
                            let r = f.write_all(&bytes);
                            (f, r)
                        })
                        .await;
                        match written {
                            Ok((f, Ok(()))) => *slot = Some(f),
                            // that reader is gone: its output is dropped from now on
                            Ok((_, Err(e))) => {
                                tracing::debug!(container = %id, "writing to the client's FIFO: {e}")
                            }
                            Err(_) => return,
                        }
                    }
                    Event::Exit(_) => break,
                }
            }
            // closing the write ends tells the client its output is complete
            drop(out);
            drop(err);
        });
        Ok(pid)
    }
}
