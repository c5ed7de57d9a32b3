//! The Kubernetes Container Runtime Interface (`runtime.v1`) on nook's socket: a thin front door
//! for crictl, critest and a kubelet. Its images, pods and containers live in the `k8s.io`
//! namespace, as containerd keeps them, and every call goes to the same services as nook's own
//! API. [`runtime`] (RuntimeService) delegates pod sandboxes to [`sandbox`] (the pods service)
//! and containers to [`containers`] (the containers service), stats and metrics to [`stats`]
//! and [`metrics`], container events to [`events`]; [`images`] is the ImageService.
//! Exec, Attach and PortForward hand out URLs of the streaming server in [`stream`].

mod containers;
mod events;
mod images;
mod metrics;
mod runtime;
mod sandbox;
mod stats;
mod stream;

/// CRI's messages and server traits, compiled from `proto/cri/api.proto` (Kubernetes'
/// cri-api v0.37.0) by build.rs.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

use std::sync::Arc;

use tonic::Status;
use v1::image_service_server::ImageServiceServer;
use v1::runtime_service_server::RuntimeServiceServer;

use crate::daemon::Daemon;

/// The namespace CRI's images and containers live in (containerd's, so tools agree).
pub const NAMESPACE: &str = "k8s.io";

/// The CRI API version this door speaks.
pub const API_VERSION: &str = "v1";

/// The RuntimeService.
pub fn runtime_service(d: Arc<Daemon>) -> RuntimeServiceServer<runtime::Runtime> {
    let stream = stream::Server::start(d.clone());
    RuntimeServiceServer::new(runtime::Runtime { d, stream })
        .max_decoding_message_size(super::MAX_MESSAGE)
        .max_encoding_message_size(super::MAX_MESSAGE)
}

/// The ImageService.
pub fn image_service(d: Arc<Daemon>) -> ImageServiceServer<images::Images> {
    ImageServiceServer::new(images::Images::new(d))
        .max_decoding_message_size(super::MAX_MESSAGE)
        .max_encoding_message_size(super::MAX_MESSAGE)
}

/// Makes the `k8s.io` namespace on first use (a kubelet never creates it).
async fn ensure_namespace(d: &Arc<Daemon>) -> Result<(), Status> {
    let d = d.clone();
    super::blocking(move || crate::metadata::namespaces::ensure(&d.store, &d.events, NAMESPACE))
        .await
}

/// The answer for what this door does not do yet, naming the call.
fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not implemented by nook's CRI yet (docs/kubernetes.md lists what works)"
    ))
}
