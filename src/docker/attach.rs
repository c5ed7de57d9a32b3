//! Hijacked connections (attach, exec start): Docker's `101 UPGRADED` and its multiplexed
//! stream framing, pumping a shim's output out and the client's bytes in as stdin.

use bytes::Bytes;
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::containers::{find, manager};
use super::{ApiError, Req, Res, NS};
use crate::shim::client::{ShimEvents, ShimInput};
use crate::shim::{Event, Input};

/// A frame of Docker's multiplexed stream: stream type (1 stdout, 2 stderr), size, payload.
pub fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + data.len());
    b.extend_from_slice(&[stream, 0, 0, 0]);
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Answers `101 UPGRADED` and hands the raw connection to `pump` once hyper let go of it.
pub fn hijack<F, Fut>(r: &mut Req, tty: bool, pump: F) -> Res
where
    F: FnOnce(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let wants = r
        .header("Upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("tcp"));
    if !wants {
        return Err(ApiError::bad(
            "this endpoint needs a hijacked connection: send Connection: Upgrade and Upgrade: tcp",
        ));
    }
    let Some(on) = r.parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ApiError::bad("the connection cannot be upgraded"));
    };
    tokio::spawn(async move {
        match on.await {
            Ok(up) => pump(hyper_util::rt::TokioIo::new(up)).await,
            Err(e) => tracing::debug!("docker API hijack: {e}"),
        }
    });
    let ct = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    hyper::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("Content-Type", ct)
        .header("Connection", "Upgrade")
        .header("Upgrade", "tcp")
        .body(super::full(Vec::new()))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Pumps a shim stream over a hijacked connection: output out (framed unless `tty`), the
/// client's bytes in as stdin (EOF closes stdin). Returns the exit code when the process ended.
pub async fn pump<IO>(
    io: IO,
    mut events: ShimEvents,
    mut input: Option<ShimInput>,
    tty: bool,
    (want_out, want_err): (bool, bool),
) -> Option<i32>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let feeder = input.take().map(|mut input| {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = input.send(&Input::CloseStdin).await;
                        // keep the shim's input open (closing it may end the stream)
                        std::future::pending::<()>().await;
                    }
                    Ok(n) => {
                        let data = Bytes::copy_from_slice(&buf[..n]);
                        if input.send(&Input::Stdin(data)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
    });
    let mut code = None;
    loop {
        match events.next().await {
            Ok(Some(Event::Out { stderr, data })) => {
                let bytes = data.to_vec();
                let s = if stderr { 2 } else { 1 };
                if (s == 1 && !want_out) || (s == 2 && !want_err) {
                    continue;
                }
                let b = if tty { bytes } else { frame(s, &bytes) };
                if wr.write_all(&b).await.is_err() {
                    break;
                }
                let _ = wr.flush().await;
            }
            Ok(Some(Event::Exit(e))) => {
                code = Some(e.exit_code);
                break;
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
    if let Some(f) = feeder {
        f.abort();
    }
    code
}

pub async fn attach(r: &mut Req, id: &str) -> Res {
    let d = r.d.clone();
    let rec = find(&d, id)?;
    if r.flag("logs") && !r.flag("stream") {
        return super::containers::logs(r, id).await;
    }
    if r.flag("logs") {
        return Err(ApiError::unsupported("attach with logs=1 and stream=1"));
    }
    let m = manager(&d)?;
    let st = m.status(NS, rec.clone()).await;
    // attached before the start (docker run): make the task now, started later, its first
    // output held for this client
    if !st.running() && st.task.as_ref().map(|t| t.status.as_str()) != Some("created") {
        if let Err(e) = m.create_task(NS, &rec, false, true).await {
            // as dockerd: the attach succeeds, and the start that follows reports the error
            // (and, with --rm, removes the container)
            tracing::debug!(container = %rec.id, "attach before start: {e}");
            return hijack(r, rec.tty, |io| async move {
                let (_, mut wr) = tokio::io::split(io);
                let _ = wr.shutdown().await;
            });
        }
    }
    let stdin = r.flag("stdin") && rec.stdin;
    let stream = m.tasks.client(NS, &rec.id).attach(stdin, false).await?;
    let (events, input) = stream.split();
    let tty = rec.tty;
    let wants = (r.flag("stdout"), r.flag("stderr"));
    hijack(r, tty, move |io| async move {
        pump(io, events, stdin.then_some(input), tty, wants).await;
    })
}
