//! The daemon's garbage collector: the scheduler loop; each run goes through the GC service
//! ([`crate::services::Gc`]), under the GC lock like manual runs.

use std::sync::Arc;
use std::time::Instant;

use crate::gc::collect::GRACE;

use super::Daemon;

pub use crate::gc::GcState;

impl Daemon {
    /// Tells the GC scheduler that something changed (`deletion`: something was removed).
    pub fn mutated(&self, deletion: bool) {
        self.gc.mutated(deletion);
    }
}

/// The scheduler loop.
pub async fn scheduler(d: Arc<Daemon>) {
    loop {
        let next =
            d.gc.policy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .next_run();
        match next {
            None => d.gc.wake.notified().await,
            Some(at) => {
                let now = Instant::now();
                if at > now {
                    tokio::select! {
                        _ = tokio::time::sleep(at - now) => {}
                        _ = d.gc.wake.notified() => continue,
                    }
                }
                if let Err(e) = d.collector.run(GRACE).await {
                    tracing::warn!("scheduled gc: {e}");
                    d.gc.policy
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .ran(std::time::Duration::from_secs(1), Instant::now());
                }
            }
        }
    }
}
