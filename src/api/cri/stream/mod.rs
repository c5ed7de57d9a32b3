//! CRI's streaming server: Exec, Attach and PortForward answer with a one-time URL on an HTTP
//! server on 127.0.0.1 (as kubelet's streaming server does), and the client (crictl, a
//! kubelet proxying `kubectl exec`) upgrades a request to that URL to one of two transports:
//!
//! - SPDY/3.1 (`Upgrade: SPDY/3.1`, the protocol named by `X-Stream-Protocol-Version`):
//!   remotecommand v2 to v5 for exec and attach, `portforward.k8s.io` for port forwarding;
//!   [`spdy`] and [`spdy_conn`].
//! - WebSocket (`Upgrade: websocket`, the protocol in `Sec-WebSocket-Protocol`): the channel
//!   protocols `channel.k8s.io`, `base64.channel.k8s.io`, `v4.channel.k8s.io`,
//!   `v4.base64.channel.k8s.io` and `v5.channel.k8s.io`; [`ws`] and [`ws_conn`].
//!
//! A URL's token is random, used once, and expires a minute after the RPC. What runs behind it
//! is the one exec and attach path of nook's containers ([`remote`]), and for port forwarding a
//! connection made inside the pod's network namespace ([`portforward`]).

mod portforward;
mod remote;
mod spdy;
mod spdy_conn;
mod ws;
mod ws_conn;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::cri::v1 as cri;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming as Body;
use hyper::{Request, Response, StatusCode};
use tonic::Status;

use super::NAMESPACE;
use crate::daemon::Daemon;

/// How long a URL stays valid (kubelet's streaming server: one minute).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// The most URLs handed out and not yet used (kubelet: 1000).
pub const MAX_IN_FLIGHT: usize = 1000;
/// How long the client has to open the streams a request asks for (kubelet: 30 s).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// remotecommand's SPDY protocols served, newest first.
const SPDY_REMOTE: [&str; 4] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];
/// Port forwarding's protocol.
const PORT_FORWARD: &str = "portforward.k8s.io";

/// What a remote command does.
#[derive(Debug, Clone)]
pub enum Job {
    Exec {
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    Attach {
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
}

impl Job {
    /// (stdin, stdout, stderr, tty).
    pub fn wants(&self) -> (bool, bool, bool, bool) {
        match *self {
            Job::Exec {
                tty,
                stdin,
                stdout,
                stderr,
                ..
            }
            | Job::Attach {
                tty,
                stdin,
                stdout,
                stderr,
            } => (stdin, stdout, stderr, tty),
        }
    }
}

/// A remote command behind a URL.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub ns: String,
    /// The container's full id.
    pub container: String,
    pub job: Job,
}

enum Granted {
    Remote(Ticket),
    PortForward { netns: PathBuf },
}

/// The streaming server: its address and the URLs handed out.
pub struct Server {
    d: Arc<Daemon>,
    addr: Result<SocketAddr, String>,
    tokens: Mutex<HashMap<String, (Instant, Granted)>>,
}

/// The address configured for the streaming server.
fn configured_address(d: &Daemon) -> String {
    d.config.cri.stream_server_address.clone()
}

impl Server {
    /// Binds the server and serves it on the current tokio runtime. A bind that fails is
    /// logged, and the streaming RPCs then answer with that error.
    pub fn start(d: Arc<Daemon>) -> Arc<Server> {
        let want = configured_address(&d);
        let bound = std::net::TcpListener::bind(&want)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                let a = l.local_addr()?;
                Ok((tokio::net::TcpListener::from_std(l)?, a))
            })
            .map_err(|e| format!("the CRI streaming server cannot listen on {want}: {e}"));
        let (addr, listener) = match bound {
            Ok((l, a)) => (Ok(a), Some(l)),
            Err(e) => {
                tracing::error!("{e}");
                (Err(e), None)
            }
        };
        let s = Arc::new(Server {
            d,
            addr,
            tokens: Mutex::new(HashMap::new()),
        });
        if let Some(l) = listener {
            tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving CRI streams");
            let weak = Arc::downgrade(&s);
            tokio::spawn(async move {
                loop {
                    let (conn, _) = match l.accept().await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!("CRI streaming server: accept: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Some(s) = weak.upgrade() else { return };
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let s = s.clone();
                            async move { Ok::<_, std::convert::Infallible>(s.handle(req)) }
                        });
                        let io = hyper_util::rt::TokioIo::new(conn);
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .with_upgrades()
                            .await
                        {
                            tracing::debug!("CRI streaming connection: {e}");
                        }
                    });
                }
            });
        }
        s
    }

    /// Hands out a URL for `g`.
    fn grant(&self, what: &str, g: Granted) -> Result<String, Status> {
        let addr = self.addr.clone().map_err(Status::unavailable)?;
        let token = {
            use rand::Rng;
            let b: [u8; 16] = rand::rng().random();
            hex::encode(b)
        };
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|_, (at, _)| at.elapsed() < TOKEN_TTL);
        if t.len() >= MAX_IN_FLIGHT {
            return Err(Status::resource_exhausted(format!(
                "{MAX_IN_FLIGHT} streaming requests are waiting for their clients: try again in a minute"
            )));
        }
        t.insert(token.clone(), (Instant::now(), g));
        Ok(format!("http://{addr}/{what}/{token}"))
    }

    /// Takes the grant of `token` (once; none when unknown or expired).
    fn take(&self, token: &str) -> Option<Granted> {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let (at, g) = t.remove(token)?;
        (at.elapsed() < TOKEN_TTL).then_some(g)
    }

    /// The running container of a streaming request, by id or unique prefix.
    async fn running(
        &self,
        id: &str,
    ) -> Result<crate::runtime::containers::ContainerRecord, Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("container_id is required"));
        }
        let m = self.d.containers()?;
        let rec = m.find(NAMESPACE, id)?;
        if !m.status(NAMESPACE, rec.clone()).await.running() {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        Ok(rec)
    }

    /// The Exec RPC: validates and answers a URL.
    pub async fn exec(&self, r: cri::ExecRequest) -> Result<cri::ExecResponse, Status> {
        check_streams(r.tty, r.stdin, r.stdout, r.stderr)?;
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd must not be empty"));
        }
        let rec = self.running(&r.container_id).await?;
        let t = Ticket {
            ns: NAMESPACE.into(),
            container: rec.id,
            job: Job::Exec {
                cmd: r.cmd,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            },
        };
        let url = self.grant("exec", Granted::Remote(t))?;
        Ok(cri::ExecResponse { url })
    }

    /// The Attach RPC.
    pub async fn attach(&self, r: cri::AttachRequest) -> Result<cri::AttachResponse, Status> {
        check_streams(r.tty, r.stdin, r.stdout, r.stderr)?;
        let rec = self.running(&r.container_id).await?;
        if r.stdin && !rec.stdin {
            return Err(Status::invalid_argument(format!(
                "container {} was not created with stdin open: attach without stdin",
                rec.id
            )));
        }
        let t = Ticket {
            ns: NAMESPACE.into(),
            container: rec.id,
            job: Job::Attach {
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            },
        };
        let url = self.grant("attach", Granted::Remote(t))?;
        Ok(cri::AttachResponse { url })
    }

    /// The PortForward RPC: the pod's network namespace is resolved now.
    pub async fn port_forward(
        &self,
        r: cri::PortForwardRequest,
    ) -> Result<cri::PortForwardResponse, Status> {
        if let Some(p) = r.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!(
                "port {p} is out of range 1-65535"
            )));
        }
        let netns = self.pod_netns(&r.pod_sandbox_id).await?;
        let url = self.grant("portforward", Granted::PortForward { netns })?;
        Ok(cri::PortForwardResponse { url })
    }

    /// The network namespace port forwarding dials in: the pod's (a ready pod of the pods
    /// service); an id that names no pod may name a running container of the `k8s.io`
    /// namespace (one nook runs), whose namespace its network attachment records.
    async fn pod_netns(&self, id: &str) -> Result<PathBuf, Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("pod_sandbox_id is required"));
        }
        if let Ok(pods) = self.d.pods() {
            match pods.find(NAMESPACE, id) {
                Ok(p) if p.ready => return Ok(p.netns),
                Ok(p) => {
                    return Err(Status::failed_precondition(format!(
                        "pod {} is not ready (stopped): port forwarding needs a running pod",
                        p.id
                    )));
                }
                Err(crate::error::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let rec = self.running(id).await?;
        match self.d.network.attachment(NAMESPACE, &rec.id)? {
            Some(a) => Ok(a.netns_path),
            None => Err(Status::failed_precondition(format!(
                "{} has no network namespace to forward ports into",
                rec.id
            ))),
        }
    }

    /// Serves one HTTP request to a URL handed out.
    fn handle(self: &Arc<Self>, mut req: Request<Body>) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_start_matches('/').to_string();
        let Some((what, token)) = path.split_once('/') else {
            return plain(StatusCode::NOT_FOUND, "no such streaming URL".into());
        };
        let g = match (what, self.take(token)) {
            (_, None) => {
                return plain(
                    StatusCode::NOT_FOUND,
                    "streaming URL unknown, used or expired (they last a minute): ask again".into(),
                )
            }
            ("exec" | "attach", Some(g @ Granted::Remote(_))) => g,
            ("portforward", Some(g @ Granted::PortForward { .. })) => g,
            (_, Some(_)) => return plain(StatusCode::NOT_FOUND, "no such streaming URL".into()),
        };
        let header = |name: &str| -> Vec<String> {
            req.headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect()
        };
        let upgrade = header("upgrade");
        let is = |p: &str| upgrade.iter().any(|u| u.eq_ignore_ascii_case(p));
        if is("websocket") {
            let Some(key) = header("sec-websocket-key").into_iter().next() else {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "Sec-WebSocket-Key is missing".into(),
                );
            };
            let offered = header("sec-websocket-protocol").join(",");
            let t = match g {
                Granted::Remote(t) => t,
                Granted::PortForward { netns } => {
                    // SPDY tunneled through WebSocket (crictl port-forward -r websocket)
                    let tunneled = format!("{}+{PORT_FORWARD}", spdy::UPGRADE);
                    if !offered.split(',').any(|o| o.trim() == tunneled) {
                        return plain(
                            StatusCode::FORBIDDEN,
                            format!("unable to upgrade: port forwarding over WebSocket speaks {tunneled}, the client offered {offered:?}"),
                        );
                    }
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        match on.await {
                            Ok(up) => {
                                let io = ws_conn::tunnel(hyper_util::rt::TokioIo::new(up));
                                portforward::serve(io, netns).await
                            }
                            Err(e) => tracing::debug!("CRI WebSocket upgrade: {e}"),
                        }
                    });
                    return switching(&[
                        ("Upgrade", "websocket".into()),
                        ("Sec-WebSocket-Accept", ws::accept_key(&key)),
                        ("Sec-WebSocket-Protocol", tunneled),
                    ]);
                }
            };
            let Some(ch) = ws::Channels::negotiate(&offered) else {
                let served: Vec<&str> = ws::Channels::ALL.iter().map(|c| c.name()).collect();
                return plain(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: none of the protocols {offered:?} is served ({})",
                        served.join(", ")
                    ),
                );
            };
            let on = hyper::upgrade::on(&mut req);
            let d = self.d.clone();
            tokio::spawn(async move {
                match on.await {
                    Ok(up) => ws_remote(d, t, hyper_util::rt::TokioIo::new(up), ch).await,
                    Err(e) => tracing::debug!("CRI WebSocket upgrade: {e}"),
                }
            });
            return switching(&[
                ("Upgrade", "websocket".into()),
                ("Sec-WebSocket-Accept", ws::accept_key(&key)),
                ("Sec-WebSocket-Protocol", ch.name().into()),
            ]);
        }
        if is(spdy::UPGRADE) {
            let offered = header("x-stream-protocol-version");
            let served: &[&str] = match g {
                Granted::Remote(_) => &SPDY_REMOTE,
                Granted::PortForward { .. } => &[PORT_FORWARD],
            };
            let Some(proto) = offered
                .iter()
                .find(|o| served.contains(&o.as_str()))
                .cloned()
            else {
                let mut r = plain(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {served:?}"
                    ),
                );
                for s in served {
                    if let Ok(v) = s.parse() {
                        r.headers_mut()
                            .append("X-Accepted-Stream-Protocol-Versions", v);
                    }
                }
                return r;
            };
            let on = hyper::upgrade::on(&mut req);
            let d = self.d.clone();
            let p = proto.clone();
            tokio::spawn(async move {
                let io = match on.await {
                    Ok(up) => hyper_util::rt::TokioIo::new(up),
                    Err(e) => return tracing::debug!("CRI SPDY upgrade: {e}"),
                };
                match g {
                    Granted::Remote(t) => spdy_remote(d, t, io, &p).await,
                    Granted::PortForward { netns } => portforward::serve(io, netns).await,
                }
            });
            return switching(&[
                ("Upgrade", spdy::UPGRADE.into()),
                ("X-Stream-Protocol-Version", proto),
            ]);
        }
        plain(
            StatusCode::BAD_REQUEST,
            "this URL needs an upgraded connection: Upgrade: SPDY/3.1 or Upgrade: websocket".into(),
        )
    }
}

/// kubelet's rules for the streams a remote command asks for.
fn check_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), Status> {
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be true (a terminal has one output)",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    Ok(())
}

fn plain(status: StatusCode, msg: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(msg + "\n")));
    *r.status_mut() = status;
    if let Ok(v) = "text/plain; charset=utf-8".parse() {
        r.headers_mut().insert("Content-Type", v);
    }
    r
}

fn switching(headers: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    if let Ok(v) = "Upgrade".parse() {
        h.insert("Connection", v);
    }
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            k.parse::<hyper::header::HeaderName>(),
            v.parse::<hyper::header::HeaderValue>(),
        ) {
            h.insert(k, v);
        }
    }
    r
}

/// How long a finished session waits for the client to close its side (closing first with
/// unread input would reset the connection and could lose the last output).
const LINGER: Duration = Duration::from_secs(5);

/// A remote command over SPDY: wait for the client's streams, run, linger.
async fn spdy_remote<IO>(d: Arc<Daemon>, t: Ticket, io: IO, proto: &str)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut events, w) = spdy_conn::start(io);
    let rw = w.clone();
    let has_resize = proto != "v2.channel.k8s.io";
    let status_json = matches!(proto, "v4.channel.k8s.io" | "v5.channel.k8s.io");
    let (stx, mut srx) = tokio::sync::watch::channel(remote::Streams::default());
    let (ctx, crx) = tokio::sync::mpsc::channel(256);
    let router = tokio::spawn(async move {
        let mut s = remote::Streams::default();
        while let Some(ev) = events.recv().await {
            use remote::FromClient as C;
            use spdy_conn::Incoming as I;
            let msg = match ev {
                I::Open { id, headers } => {
                    let kind = spdy::header(&headers, "streamtype").unwrap_or_default();
                    if s.add(kind, id) {
                        stx.send_replace(s.clone());
                    } else {
                        tracing::debug!("CRI exec: refusing a stream of type {kind:?}");
                        rw.reset(id, spdy::rst::REFUSED_STREAM).await;
                    }
                    None
                }
                I::Data { id, data } if Some(id) == s.stdin => Some(C::Stdin(data)),
                I::Data { id, data } if Some(id) == s.resize => Some(C::Resize(data)),
                I::Fin { id } | I::Reset { id } if Some(id) == s.stdin => Some(C::StdinClosed),
                I::Gone => break,
                _ => None,
            };
            if let Some(m) = msg {
                // the session may be over: keep reading until the client closes
                let _ = ctx.send(m).await;
            }
        }
    });
    let ready = matches!(
        tokio::time::timeout(
            STREAM_CREATION_TIMEOUT,
            srx.wait_for(|s| s.complete(&t.job, has_resize)),
        )
        .await,
        Ok(Ok(_))
    );
    let streams = srx.borrow().clone();
    let tx = remote::Transport::Spdy {
        w,
        streams,
        status_json,
    };
    if !ready {
        tx.finish(
            &remote::Outcome::Failure(format!(
                "timed out waiting for the client's streams ({} s)",
                STREAM_CREATION_TIMEOUT.as_secs()
            )),
            &[],
        )
        .await;
    } else {
        remote::run(d, t, tx, crx).await;
    }
    linger(router).await;
}

/// A remote command over WebSocket.
async fn ws_remote<IO>(d: Arc<Daemon>, t: Ticket, io: IO, ch: ws::Channels)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut events, w) = ws_conn::start(io, ch);
    let (ctx, crx) = tokio::sync::mpsc::channel(256);
    let v5 = ch == ws::Channels::V5;
    let router = tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            use remote::FromClient as C;
            let msg = match ev {
                ws_conn::Incoming::Data { channel: 0, data } => Some(C::Stdin(data)),
                ws_conn::Incoming::Data { channel: 4, data } => Some(C::Resize(data)),
                ws_conn::Incoming::Data { channel: 255, data }
                    if v5 && data.first() == Some(&0) =>
                {
                    Some(C::StdinClosed)
                }
                ws_conn::Incoming::Data { .. } => None,
                ws_conn::Incoming::Gone => break,
            };
            if let Some(m) = msg {
                let _ = ctx.send(m).await;
            }
        }
    });
    remote::run(d, t, remote::Transport::Ws { w, channels: ch }, crx).await;
    linger(router).await;
}

/// Waits a little for the client to close after the session ended, then lets go.
async fn linger(router: tokio::task::JoinHandle<()>) {
    let abort = router.abort_handle();
    if tokio::time::timeout(LINGER, router).await.is_err() {
        abort.abort();
    }
}
