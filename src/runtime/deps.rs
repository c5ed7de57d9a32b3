//! What the containers' manager works with, handed in by the daemon when it builds the manager
//! (no process-wide state): configuration and paths, the metadata and content stores, the
//! snapshotters, the network, the collector's lock and the event publisher.

use std::sync::Arc;

use crate::cgroup::Cgroups;
use crate::config::{Config, Paths};
use crate::content::ContentStore;
use crate::events::Publisher;
use crate::gc::GcState;
use crate::metadata::Store;
use crate::network::Manager as Network;
use crate::snapshot::mount::Mounter;
use crate::snapshot::Snapshotters;

/// The containers' manager's dependencies.
pub struct Deps {
    pub config: Config,
    pub paths: Paths,
    pub store: Arc<Store>,
    /// Blobs, for unpacking images into snapshots.
    pub content: Arc<ContentStore>,
    pub snapshotters: Arc<Snapshotters>,
    pub network: Arc<Network>,
    /// Held for reading while a container is created or removed, so a collection waits.
    pub gc: Arc<GcState>,
    pub events: Publisher,
    /// The cgroups delegated to the user (limits, stats, OOM verdicts).
    pub cgroups: Arc<Cgroups>,
    /// Mounts containers' root filesystems ([`crate::snapshot::mount::RealMounter`]).
    pub mounts: Arc<dyn Mounter>,
    /// Named volumes (`-v NAME:/path`).
    pub volumes: Arc<crate::volumes::Volumes>,
}

/// Runs blocking work (removals, unmounts, redb transactions) on tokio's blocking threads, so
/// that the two async worker threads keep answering the API; a panic inside becomes an
/// Internal error.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> crate::error::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::error::Error::Internal(format!("blocking task failed: {e}")))?
}
