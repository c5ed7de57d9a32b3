//! The Docker Engine API: a front door over HTTP/1.1 on its own unix socket
//! (`<state>/docker.sock`), for the `docker` CLI, docker-compose and the Docker SDKs.
//!
//! Thin like nook's gRPC door: each handler translates the request, calls the subsystems nook's
//! own API calls, and translates the answer (Docker's JSON shapes, its error body
//! `{"message": ...}`, its stream framings). One file per endpoint group; what is served and
//! what is refused is listed in docs/docker-api.md.

mod archive;
mod attach;
mod containers;
mod create;
mod exec;
mod images;
mod networks;
mod ops;
mod system;
mod volumes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, StatusCode};

use crate::daemon::Daemon;
use crate::error::Error;

/// The oldest API version served (docker CLI 1.12 and later negotiate down to it at most).
pub const MIN_API: (u32, u32) = (1, 24);
/// The newest API version served; an unversioned request is served as this one.
pub const MAX_API: (u32, u32) = (1, 47);
/// The nook namespace the Docker API works in (so `nook ps` shows docker's containers).
pub const NS: &str = "default";
/// The largest JSON request body read (bytes).
const MAX_JSON: usize = 4 << 20;

/// A response body: whole or streamed.
pub type Body = BoxBody<Bytes, Infallible>;
pub type Resp = hyper::Response<Body>;
/// What a handler returns.
pub type Res = Result<Resp, ApiError>;

/// An error as Docker reports it: a status code and `{"message": ...}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    /// An option nook does not support: named, never silently ignored.
    pub fn unsupported(option: &str) -> ApiError {
        ApiError::bad(format!(
            "{option} is not supported by nook's Docker API yet (see docs/docker-api.md)"
        ))
    }
    pub fn not_implemented(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_IMPLEMENTED, message)
    }

    fn response(&self) -> Resp {
        json(self.status, &serde_json::json!({ "message": self.message }))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_) => StatusCode::CONFLICT,
            Error::InvalidArgument(_) | Error::Config(_) => StatusCode::BAD_REQUEST,
            Error::Precondition(_) => StatusCode::CONFLICT,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // the command cannot run (not found, not executable): the request's fault
            Error::Exec { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> ApiError {
        ApiError::bad(format!("invalid JSON in the request body: {e}"))
    }
}

/// A JSON response.
pub fn json(status: StatusCode, v: &impl serde::Serialize) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    hyper::Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(full(body))
        .unwrap_or_else(|_| hyper::Response::new(full(Vec::new())))
}

/// 200 with a JSON body.
pub fn ok_json(v: &impl serde::Serialize) -> Res {
    Ok(json(StatusCode::OK, v))
}

/// A status with an empty body (204, 304, ...).
pub fn empty(status: StatusCode) -> Res {
    let mut r = hyper::Response::new(full(Vec::new()));
    *r.status_mut() = status;
    Ok(r)
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A streamed body fed by a channel; the stream ends when the sender is dropped.
pub fn streamed(content_type: &str, rx: tokio::sync::mpsc::Receiver<Bytes>) -> Resp {
    use tokio_stream::StreamExt;
    let s = tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok(Frame::data(b)));
    hyper::Response::builder()
        .header("Content-Type", content_type)
        .body(BodyExt::boxed(StreamBody::new(s)))
        .unwrap_or_else(|_| hyper::Response::new(full(Vec::new())))
}

/// What the Docker door keeps between requests.
#[derive(Default)]
pub struct State {
    pub execs: exec::Execs,
}

/// A request, parsed: the version it asked for, its path segments and query.
pub struct Req {
    pub d: Arc<Daemon>,
    /// The Docker door's own state (execs).
    pub st: Arc<State>,
    pub version: (u32, u32),
    pub method: Method,
    pub segs: Vec<String>,
    pub query: HashMap<String, String>,
    pub parts: hyper::http::request::Parts,
    body: Option<Incoming>,
}

impl Req {
    /// A query parameter's value.
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
    /// A boolean query parameter as Docker reads them (1, true, True; absent = false).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("1" | "true" | "True" | "TRUE"))
    }
    /// An integer query parameter.
    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.q(k) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad(format!("invalid value for {k}: {v:?} is not a number"))
            }),
        }
    }
    /// The `filters` parameter: `{"name": ["a", "b"]}` (or the old `{"name": {"a": true}}`).
    pub fn filters(&self) -> Result<HashMap<String, Vec<String>>, ApiError> {
        let Some(f) = self.q("filters").filter(|f| !f.is_empty()) else {
            return Ok(HashMap::new());
        };
        let v: serde_json::Value = serde_json::from_str(f)
            .map_err(|e| ApiError::bad(format!("invalid filters {f:?}: {e}")))?;
        let mut out = HashMap::new();
        if let Some(m) = v.as_object() {
            for (k, vals) in m {
                let list = match vals {
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                    serde_json::Value::Object(o) => o
                        .iter()
                        .filter(|(_, t)| t.as_bool().unwrap_or(false))
                        .map(|(k, _)| k.clone())
                        .collect(),
                    _ => Vec::new(),
                };
                out.insert(k.clone(), list);
            }
        }
        Ok(out)
    }
    /// The whole body, at most `max` bytes.
    pub async fn body(&mut self, max: usize) -> Result<Bytes, ApiError> {
        let Some(body) = self.body.take() else {
            return Ok(Bytes::new());
        };
        let limited = http_body_util::Limited::new(body, max);
        match limited.collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) => Err(ApiError::bad(format!(
                "reading the request body (at most {max} bytes): {e}"
            ))),
        }
    }
    /// The body as a stream of chunks (archives: `docker load`).
    pub fn take_body(&mut self) -> Option<Incoming> {
        self.body.take()
    }
    /// A request header.
    pub fn header(&self, k: &str) -> Option<&str> {
        self.parts.headers.get(k).and_then(|v| v.to_str().ok())
    }
    /// The body as JSON (an empty body is `null`).
    pub async fn json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        let b = self.body(MAX_JSON).await?;
        if b.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::from_slice(b"null")?);
        }
        Ok(serde_json::from_slice(&b)?)
    }
    /// The path segment `i` (after the version).
    pub fn seg(&self, i: usize) -> &str {
        self.segs.get(i).map(String::as_str).unwrap_or("")
    }
    /// Whether the request version is at least `v`.
    pub fn at_least(&self, v: (u32, u32)) -> bool {
        self.version >= v
    }
}

/// Parses `/v1.47/...` into the version and the rest.
fn split_version(path: &str) -> (Option<(u32, u32)>, &str) {
    let Some(rest) = path.strip_prefix("/v") else {
        return (None, path);
    };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let Some((ma, mi)) = ver.split_once('.') else {
        return (None, path);
    };
    match (ma.parse::<u32>(), mi.parse::<u32>()) {
        (Ok(a), Ok(b)) => (Some((a, b)), tail),
        _ => (None, path),
    }
}

fn fmt_ver(v: (u32, u32)) -> String {
    format!("{}.{}", v.0, v.1)
}

/// Starts serving the Docker API on `d.paths.docker` (when enabled); returns its path.
pub fn spawn(d: &Arc<Daemon>) -> crate::error::Result<Option<PathBuf>> {
    let Some(path) = d.paths.docker.clone() else {
        return Ok(None);
    };
    let listener = crate::daemon::bind_socket(&path)?;
    tracing::info!(address = %path.display(), "serving the Docker Engine API");
    let d = d.clone();
    let st = Arc::new(State::default());
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("Docker API socket: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (d, st) = (d.clone(), st.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(d.clone(), st.clone(), req));
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .with_upgrades()
                    .await
                {
                    tracing::debug!("Docker API connection: {e}");
                }
            });
        }
    });
    Ok(Some(path))
}

async fn handle(
    d: Arc<Daemon>,
    st: Arc<State>,
    req: hyper::Request<Incoming>,
) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t0 = std::time::Instant::now();
    let mut resp = match route(d, st, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!("docker API {method} {path}: {}", e.message);
            }
            e.response()
        }
    };
    tracing::debug!(
        "docker API {method} {path} -> {} ({} ms)",
        resp.status().as_u16(),
        t0.elapsed().as_millis()
    );
    let h = resp.headers_mut();
    for (k, v) in [
        ("Api-Version", fmt_ver(MAX_API)),
        ("Docker-Experimental", "false".into()),
        ("Ostype", "linux".into()),
        ("Server", format!("nook/{} (linux)", crate::VERSION)),
    ] {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    Ok(resp)
}

async fn route(d: Arc<Daemon>, st: Arc<State>, inner: hyper::Request<Incoming>) -> Res {
    let path = inner.uri().path().to_string();
    let (ver, rest) = split_version(&path);
    if let Some(v) = ver {
        if v > MAX_API {
            return Err(ApiError::bad(format!(
                "client version {} is too new. Maximum supported API version is {}",
                fmt_ver(v),
                fmt_ver(MAX_API)
            )));
        }
        if v < MIN_API {
            return Err(ApiError::bad(format!(
                "client version {} is too old. Minimum supported API version is {}, please upgrade your client to a newer version",
                fmt_ver(v),
                fmt_ver(MIN_API)
            )));
        }
    }
    let query: HashMap<String, String> = inner
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let (parts, body) = inner.into_parts();
    let req = Req {
        d,
        st,
        version: ver.unwrap_or(MAX_API),
        method: parts.method.clone(),
        segs,
        query,
        parts,
        body: Some(body),
    };
    let first = req.seg(0).to_string();
    match first.as_str() {
        "_ping" | "version" | "info" | "events" | "system" | "auth" => system::route(req).await,
        "images" | "build" | "commit" => images::route(req).await,
        "containers" | "exec" => containers::route(req).await,
        "networks" => networks::route(req).await,
        "volumes" => volumes::route(req).await,
        "swarm" | "services" | "nodes" | "tasks" | "secrets" | "configs" | "plugins"
        | "distribution" | "session" | "grpc" => Err(ApiError::not_implemented(format!(
            "/{first} is not served by nook's Docker API yet (see docs/docker-api.md)"
        ))),
        _ => Err(ApiError::not_found(format!(
            "page not found: {} {}",
            req.method, path
        ))),
    }
}

fn percent_decode(s: &str) -> String {
    // path segments: %XX escapes only ('+' stays '+')
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error for a method the path does not serve.
pub fn no_route(r: &Req) -> ApiError {
    ApiError::not_found(format!(
        "page not found: {} /{}",
        r.method,
        r.segs.join("/")
    ))
}

/// RFC 3339 with nanoseconds, as Docker prints times; the zero time for none.
pub fn docker_time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_split() {
        assert_eq!(
            split_version("/v1.47/containers/json"),
            (Some((1, 47)), "/containers/json")
        );
        assert_eq!(split_version("/_ping"), (None, "/_ping"));
        assert_eq!(split_version("/v1.24"), (Some((1, 24)), ""));
        assert_eq!(split_version("/volumes/x"), (None, "/volumes/x"));
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn errors_map_to_docker_statuses() {
        let e: ApiError = Error::NotFound("no such container: x".into()).into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e: ApiError = Error::AlreadyExists("name in use".into()).into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        let e: ApiError = Error::InvalidArgument("bad".into()).into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
