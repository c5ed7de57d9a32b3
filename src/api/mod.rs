//! The gRPC façade: thin services that translate requests into calls on the subsystems.
//! Each subsystem's service lives in its own file and is added to [`router`].

pub mod containerd;
pub mod containers;
pub mod content;
mod cri;
pub mod events;
mod gc;
pub mod images;
mod leases;
pub mod limits;
pub mod networks;
mod serve;
mod snapshots;
mod spine;
pub mod volumes;

use std::sync::Arc;

use tonic::transport::server::Router;

use crate::daemon::Daemon;

pub use serve::serve;

/// Largest request or response message (bytes). Larger ones are refused with a clear error.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Largest label key or value (bytes), as containerd: labels are for small facts.
pub const MAX_LABEL: usize = 4096;

/// Refuses empty keys and keys or values over [`MAX_LABEL`], naming the label.
pub fn check_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), crate::error::Error> {
    for (k, v) in labels {
        if k.is_empty() || k.len() > MAX_LABEL || v.len() > MAX_LABEL {
            let shown: String = k.chars().take(64).collect();
            return Err(crate::error::Error::InvalidArgument(format!(
                "invalid label {shown:?} ({} byte key, {} byte value): keys must be 1..{MAX_LABEL} bytes and values at most {MAX_LABEL}",
                k.len(),
                v.len()
            )));
        }
    }
    Ok(())
}

/// The layers around every service: request counting for the metrics.
pub type ApiLayers =
    tower::layer::util::Stack<crate::daemon::metrics::ApiLayer, tower::layer::util::Identity>;

/// Builds the server with every service.
pub fn router(d: Arc<Daemon>) -> Router<ApiLayers> {
    let router = tonic::transport::Server::builder()
        .layer(crate::daemon::metrics::ApiLayer::global())
        .add_service(spine::version(d.clone()))
        .add_service(spine::namespaces(d.clone()))
        .add_service(spine::introspection(d.clone()))
        .add_service(leases::service(d.clone()))
        .add_service(networks::service(d.clone()))
        .add_service(volumes::service(d.clone()))
        .add_service(gc::service(d.clone()))
        .add_service(gc::check_service(d.clone()))
        .add_optional_service(optional("images", images::service(d.clone())))
        .add_optional_service(optional("content", content::service(d.clone())))
        .add_service(snapshots::service(d.clone()))
        .add_service(containers::service(d.clone()))
        .add_service(events::service(d.clone()))
        .add_service(cri::runtime_service(d.clone()))
        .add_service(cri::image_service(d.clone()));
    containerd::add(router, d)
}

/// A service that could not start is left out, with its error in the log.
fn optional<S>(what: &str, s: crate::error::Result<S>) -> Option<S> {
    match s {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!("{what} service unavailable: {e}");
            None
        }
    }
}

/// Runs blocking subsystem work off the async threads; a panic inside becomes an Internal
/// error instead of taking the daemon down.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, tonic::Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => {
            tracing::error!("request handler panicked: {e}");
            Err(tonic::Status::internal(format!("internal error: {e}")))
        }
    }
}

/// The namespace a request names in its `nook-namespace` metadata header (default `default`).
pub fn namespace<T>(req: &tonic::Request<T>) -> Result<String, tonic::Status> {
    let ns = req
        .metadata()
        .get("nook-namespace")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("default")
        .to_string();
    crate::metadata::validate_namespace(&ns)?;
    Ok(ns)
}
