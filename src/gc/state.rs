//! The collector's state shared between the scheduler loop, manual runs and the subsystems
//! that hold the collector off while they build (pulls, unpacks, container creation).

use std::time::Instant;

use super::scheduler::Policy;

/// The collector's shared state: held by the daemon and handed to whoever creates or removes
/// what the collector sweeps (the containers' manager among them).
pub struct GcState {
    /// Held for reading by in-flight pulls, imports, unpacks and container creations; for
    /// writing by a collection.
    pub lock: tokio::sync::RwLock<()>,
    pub policy: std::sync::Mutex<Policy>,
    pub wake: tokio::sync::Notify,
    pub runs: std::sync::atomic::AtomicU64,
}

impl GcState {
    pub fn new(cfg: &crate::config::GcConfig) -> GcState {
        GcState {
            lock: tokio::sync::RwLock::new(()),
            policy: std::sync::Mutex::new(Policy::new(cfg, Instant::now())),
            wake: tokio::sync::Notify::new(),
            runs: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl GcState {
    /// Tells the GC scheduler that something changed (`deletion`: something was removed).
    pub fn mutated(&self, deletion: bool) {
        self.policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mutated(deletion, Instant::now());
        self.wake.notify_one();
    }
}
