//! The daemon's garbage collector: the scheduler loop and manual runs, both under the GC lock.

use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gc::collect::{self, Report, GRACE};
use crate::gc::scheduler::Policy;

use super::Daemon;

/// GC state kept by the daemon.
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

impl Daemon {
    /// Tells the GC scheduler that something changed (`deletion`: something was removed).
    pub fn mutated(&self, deletion: bool) {
        self.gc
            .policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mutated(deletion, Instant::now());
        self.gc.wake.notify_one();
    }
}

async fn run_once(d: &Arc<Daemon>, grace: std::time::Duration) -> Result<Report> {
    let _w = d.gc.lock.write().await;
    let t0 = Instant::now();
    let d2 = d.clone();
    let r = tokio::task::spawn_blocking(move || {
        collect::collect(&d2.store, &d2.content, &d2.snapshotters, grace)
    })
    .await
    .map_err(|e| Error::Internal(format!("gc panicked: {e}")))??;
    d.gc.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::daemon::metrics::global().gc_run(t0.elapsed());
    d.gc.policy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ran(std::time::Duration::from_millis(r.pause_ms), Instant::now());
    if !r.blobs.is_empty() || !r.snapshots.is_empty() || !r.content_records.is_empty() {
        tracing::info!(
            blobs = r.blobs.len(),
            bytes = r.bytes_freed,
            snapshots = r.snapshots.len(),
            records = r.content_records.len(),
            pause_ms = r.pause_ms,
            "garbage collected"
        );
    }
    Ok(r)
}

/// Runs a collection now (`nook gc`): waits for in-flight work, spares nothing by age.
pub async fn collect_now(d: &Arc<Daemon>) -> Result<Report> {
    run_once(d, std::time::Duration::ZERO).await
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
                if let Err(e) = run_once(&d, GRACE).await {
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

/// Bytes on disk now (content, snapshots, container state); prunes report what they freed as
/// the difference.
pub async fn disk_total(d: &Arc<Daemon>) -> u64 {
    let d = d.clone();
    tokio::task::spawn_blocking(move || {
        disk_usage(&d)
            .map(|v| v.iter().map(|(_, _, b)| b).sum())
            .unwrap_or(0)
    })
    .await
    .unwrap_or(0)
}

/// Disk use: (kind, count, bytes) for content, each snapshotter, and container state.
pub fn disk_usage(d: &Daemon) -> Result<Vec<(String, u64, u64)>> {
    let blobs = d.content.blobs()?;
    let mut out = vec![(
        "content".to_string(),
        blobs.len() as u64,
        blobs.iter().map(|(_, s)| s).sum(),
    )];
    for st in d.snapshotters.status() {
        if st.error.is_some() {
            continue;
        }
        let dir = d.paths.root.join("snapshots").join(&st.name);
        let (n, bytes) = match crate::snapshot::copy::disk_usage(&dir) {
            Ok(u) => {
                // a snapshot is a directory named by its numeric id: not the overlay probe's
                // stamp (.probe-ok) nor a probe in progress
                let n = std::fs::read_dir(&dir)
                    .map(|r| {
                        r.flatten()
                            .filter(|e| e.file_name().to_string_lossy().parse::<u64>().is_ok())
                            .count() as u64
                    })
                    .unwrap_or(0);
                (n, u.size)
            }
            Err(_) => (0, 0),
        };
        out.push((format!("snapshots/{}", st.name), n, bytes));
    }
    let tasks = d.paths.state.join("tasks");
    let n = d
        .store
        .list_all::<serde_json::Value>(crate::metadata::CONTAINERS)?
        .len() as u64;
    let bytes = crate::snapshot::copy::disk_usage(&tasks)
        .map(|u| u.size)
        .unwrap_or(0);
    out.push(("containers".to_string(), n, bytes));
    Ok(out)
}
