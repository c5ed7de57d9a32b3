//! Port forwarding (`portforward.k8s.io` over SPDY): for each connection the client accepts
//! locally it opens a pair of streams, `error` and `data`, with the same `port` and
//! `requestID` headers. Once both are there, a TCP connection to localhost:port is made inside
//! the pod's network namespace (a socket created on a thread that joined it, as published
//! ports reach containers) and bytes are relayed both ways; a failure to connect is written on
//! the error stream, which the client prints. The client's FIN on the data stream half-closes
//! the connection; the target's EOF ends the data stream, then the error stream.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::spdy::header;
use super::spdy_conn::{self, Incoming, Writer};

/// How long connecting inside the pod may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A pair of streams being opened.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
}

/// What the client sends on a data stream: bytes, or None for its FIN.
type Up = Option<Bytes>;

/// Serves one port-forwarding connection until the client closes it.
pub async fn serve<IO>(io: IO, netns: PathBuf)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut events, w) = spdy_conn::start(io);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut routes: HashMap<u32, mpsc::Sender<Up>> = HashMap::new();
    while let Some(ev) = events.recv().await {
        match ev {
            Incoming::Open { id, headers } => {
                let kind = header(&headers, "streamtype").unwrap_or_default();
                let port = header(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                // clients before requestID (kubectl < 1.6) open a pair as consecutive streams
                let rid = header(&headers, "requestid")
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        let first = if kind == "error" {
                            id
                        } else {
                            id.saturating_sub(2)
                        };
                        first.to_string()
                    });
                let Some(port) = port.filter(|p| *p > 0) else {
                    tracing::debug!("CRI port-forward: stream {id} without a valid port");
                    if kind == "error" {
                        let msg = format!(
                            "invalid port {:?}: a port 1-65535 is required",
                            header(&headers, "port").unwrap_or_default()
                        );
                        w.data(id, msg.as_bytes()).await;
                    }
                    w.fin(id).await;
                    continue;
                };
                let p = pairs.entry(rid.clone()).or_default();
                p.port = port;
                match kind {
                    "error" => p.error = Some(id),
                    "data" => p.data = Some(id),
                    other => {
                        tracing::debug!("CRI port-forward: refusing a stream of type {other:?}");
                        w.reset(id, super::spdy::rst::INVALID_STREAM).await;
                        continue;
                    }
                }
                if let (Some(error), Some(data)) = (p.error, p.data) {
                    let port = p.port;
                    pairs.remove(&rid);
                    let (tx, rx) = mpsc::channel(16);
                    routes.insert(data, tx);
                    let (w, netns) = (w.clone(), netns.clone());
                    tokio::spawn(async move {
                        forward(w, netns, port, error, data, rx).await;
                    });
                }
            }
            Incoming::Data { id, data } => {
                if let Some(tx) = routes.get(&id) {
                    if tx.send(Some(data)).await.is_err() {
                        routes.remove(&id);
                    }
                }
            }
            Incoming::Fin { id } => {
                if let Some(tx) = routes.remove(&id) {
                    let _ = tx.send(None).await;
                }
            }
            // the sender dropped without a FIN: the forwarder drops the connection
            Incoming::Reset { id } => {
                routes.remove(&id);
            }
            Incoming::Gone => break,
        }
    }
}

/// Relays one connection to `port` inside `netns`.
async fn forward(
    w: Writer,
    netns: PathBuf,
    port: u16,
    error: u32,
    data: u32,
    mut rx: mpsc::Receiver<Up>,
) {
    let conn = match dial(netns, port).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("failed to connect to localhost:{port} inside the pod: {e}");
            w.data(error, msg.as_bytes()).await;
            w.fin(error).await;
            w.fin(data).await;
            return;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    // client → target: true when the client finished sending, false when it reset
    let mut up = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            match m {
                Some(b) => {
                    if wr.write_all(&b).await.is_err() {
                        return false;
                    }
                }
                None => {
                    let _ = wr.shutdown().await;
                    return true;
                }
            }
        }
        false
    });
    let w2 = w.clone();
    let down = async move {
        let mut buf = vec![0u8; spdy_conn::CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !w2.data(data, &buf[..n]).await {
                        break;
                    }
                }
            }
        }
        w2.fin(data).await;
    };
    tokio::pin!(down);
    tokio::select! {
        _ = &mut down => {}
        r = &mut up => {
            if r.unwrap_or(false) {
                // the client is done sending; the target's answer still comes
                down.await;
            }
        }
    }
    w.fin(error).await;
    up.abort();
}

/// A TCP connection to localhost:`port` made inside the network namespace at `netns`.
async fn dial(netns: PathBuf, port: u16) -> io::Result<TcpStream> {
    let s = tokio::task::spawn_blocking(move || {
        crate::network::netns::with_netns(&netns, move || {
            let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v4, DIAL_TIMEOUT).or_else(|e4| {
                let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
                std::net::TcpStream::connect_timeout(&v6, DIAL_TIMEOUT).map_err(|_| e4)
            })
        })
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))??;
    s.set_nonblocking(true)?;
    TcpStream::from_std(s)
}
