//! The client side of the API: a tonic channel over nookd's unix socket, with the namespace
//! sent on every request, and one-line errors when nookd cannot be reached.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A connection to nookd.
#[derive(Clone)]
pub struct Client {
    pub channel: Channel,
    pub namespace: String,
    pub address: PathBuf,
}

/// Turns a failed connect into the one line a user needs.
fn connect_error(address: &std::path::Path, e: &std::io::Error) -> anyhow::Error {
    let a = address.display();
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "nookd is not running (no socket at {a}): start it with `systemctl --user start nook` or run `nookd &`"
        ),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "permission denied connecting to {a}: that socket belongs to another user; nook is per-user, so start your own nookd (`systemctl --user start nook`) and unset NOOK_ADDRESS"
        ),
        _ => anyhow::anyhow!("cannot connect to nookd at {a}: {e}"),
    }
}

impl Client {
    /// Connects to `address` (or the default socket) for namespace `ns`.
    pub async fn connect(address: Option<PathBuf>, ns: &str) -> anyhow::Result<Client> {
        let address = match address {
            Some(a) => a,
            None => crate::config::default_address().ok_or_else(|| {
                anyhow::anyhow!(
                    "XDG_RUNTIME_DIR is not set, so the socket cannot be found: export XDG_RUNTIME_DIR=/run/user/$(id -u) or pass --address"
                )
            })?,
        };
        // Try the socket once ourselves, so the error is specific (tonic's is generic).
        if let Err(e) = tokio::net::UnixStream::connect(&address).await {
            return Err(connect_error(&address, &e));
        }
        let path = address.clone();
        let channel = Endpoint::try_from("http://nookd.local")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }))
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot connect to nookd at {}: {e}", address.display())
            })?;
        Ok(Client {
            channel,
            namespace: ns.to_string(),
            address,
        })
    }

    /// Wraps a message into a request carrying the namespace.
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Ok(v) = self.namespace.parse() {
            r.metadata_mut().insert("nook-namespace", v);
        }
        r
    }
}

/// Formats a gRPC error as the daemon's one-line message.
pub fn status_message(s: &tonic::Status) -> String {
    match s.code() {
        tonic::Code::Unavailable if s.message().contains("transport") => {
            "lost the connection to nookd (did it stop?)".into()
        }
        _ => s.message().to_string(),
    }
}

/// `?`-friendly conversion of tonic errors into one-line anyhow errors.
pub trait StatusExt<T> {
    fn or_fail(self) -> anyhow::Result<T>;
}

impl<T> StatusExt<T> for Result<tonic::Response<T>, tonic::Status> {
    fn or_fail(self) -> anyhow::Result<T> {
        self.map(|r| r.into_inner())
            .map_err(|s| match exit_code_of(&s) {
                Some(code) => anyhow::Error::new(ExitWith {
                    code,
                    message: status_message(&s),
                }),
                None => anyhow::anyhow!(status_message(&s)),
            })
    }
}

/// An error that ends `nook` with a given exit status instead of 1: a container command that
/// could not be started (127 not found, 126 not executable), as docker exits.
#[derive(Debug)]
pub struct ExitWith {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitWith {}

/// The exit status nookd attached to an error ([`crate::error::EXIT_CODE_KEY`]).
fn exit_code_of(s: &tonic::Status) -> Option<u8> {
    s.metadata()
        .get(crate::error::EXIT_CODE_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
