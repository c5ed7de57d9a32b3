//! What the containers' manager works with, handed in by the daemon when it builds the manager
//! (no process-wide state): configuration and paths, the metadata and content stores, the
//! snapshotters, the network, the collector's lock and the event publisher.

use std::sync::Arc;

use crate::config::{Config, Paths};
use crate::content::ContentStore;
use crate::events::Publisher;
use crate::gc::GcState;
use crate::metadata::Store;
use crate::network::Manager as Network;
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
}
