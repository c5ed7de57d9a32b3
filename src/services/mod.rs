//! Local services: one per subsystem, with a typed Rust API, built by the daemon from explicit
//! dependencies (stores, snapshotters, the containers' manager, the event publisher) and held
//! by it — containerd's `plugins/services/*/local.go` idea. Front doors (nook's gRPC API today;
//! containerd's API, CRI and the Docker API later) translate a request, call one service method
//! and translate the answer back; what a second front door would otherwise copy (following a
//! log, the restart-policy decision of a kill, pause/resume's cgroup diagnosis, which images
//! are in use, prune followed by a collection) lives here.
//!
//! This module sits above the subsystems (runtime, image, gc, network, …) and below `daemon`
//! and `api`.

pub mod archive;
pub mod containers;
pub mod detail;
pub mod gc;
pub mod images;
pub mod pods;
pub mod stats;
pub mod volumes;

pub use containers::Containers;
pub use gc::Gc;
pub use images::Images;
pub use pods::Pods;
pub use volumes::Volumes;

/// What a prune removed and the disk space that freed (content and snapshots collected).
#[derive(Debug, Clone)]
pub struct Pruned<T> {
    pub removed: Vec<T>,
    pub reclaimed_bytes: u64,
}
