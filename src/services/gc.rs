//! The GC service: collections now (`nook gc`, after prunes) and by the scheduler, both under
//! the collector's lock, and what the disk holds (`nook system df`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Paths;
use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::gc::collect::{self, Report};
use crate::gc::GcState;
use crate::metadata::Store;
use crate::snapshot::Snapshotters;

/// Disk use of one kind of thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskUse {
    /// `content`, `snapshots/<snapshotter>` or `containers`.
    pub kind: String,
    pub count: u64,
    pub bytes: u64,
}

/// Called after each collection with how long it took (the daemon counts it in its metrics).
pub type RunObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// Garbage collection over the stores.
pub struct Gc {
    store: Arc<Store>,
    content: Arc<ContentStore>,
    snapshotters: Arc<Snapshotters>,
    paths: Paths,
    state: Arc<GcState>,
    on_run: RunObserver,
}

impl Gc {
    pub fn new(
        store: Arc<Store>,
        content: Arc<ContentStore>,
        snapshotters: Arc<Snapshotters>,
        paths: Paths,
        state: Arc<GcState>,
        on_run: RunObserver,
    ) -> Gc {
        Gc {
            store,
            content,
            snapshotters,
            paths,
            state,
            on_run,
        }
    }

    /// The collector's lock, policy and counters.
    pub fn state(&self) -> &Arc<GcState> {
        &self.state
    }

    /// One collection under the write lock (waits for in-flight pulls and creations), sparing
    /// what is younger than `grace`; runs on a blocking thread.
    pub async fn run(self: &Arc<Self>, grace: Duration) -> Result<Report> {
        let _w = self.state.lock.write().await;
        let t0 = Instant::now();
        let me = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            collect::collect(&me.store, &me.content, &me.snapshotters, grace)
        })
        .await
        .map_err(|e| Error::Internal(format!("gc panicked: {e}")))??;
        self.state
            .runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (self.on_run)(t0.elapsed());
        self.state
            .policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ran(Duration::from_millis(r.pause_ms), Instant::now());
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
    pub async fn collect_now(self: &Arc<Self>) -> Result<Report> {
        self.run(Duration::ZERO).await
    }

    /// Bytes on disk now (content, snapshots, container state); prunes report what they
    /// freed as the difference. Walks the directories on a blocking thread.
    pub async fn disk_total(self: &Arc<Self>) -> u64 {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            me.disk_usage()
                .map(|v| v.iter().map(|u| u.bytes).sum())
                .unwrap_or(0)
        })
        .await
        .unwrap_or(0)
    }

    /// Disk use for content, each snapshotter, and container state. Blocking.
    pub fn disk_usage(&self) -> Result<Vec<DiskUse>> {
        let blobs = self.content.blobs()?;
        let mut out = vec![DiskUse {
            kind: "content".into(),
            count: blobs.len() as u64,
            bytes: blobs.iter().map(|(_, s)| s).sum(),
        }];
        for st in self.snapshotters.status() {
            if st.error.is_some() {
                continue;
            }
            let dir = self.paths.root.join("snapshots").join(&st.name);
            let (count, bytes) = match crate::snapshot::copy::disk_usage(&dir) {
                Ok(u) => {
                    // a snapshot is a directory named by its numeric id: not the overlay
                    // probe's stamp (.probe-ok) nor a probe in progress
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
            out.push(DiskUse {
                kind: format!("snapshots/{}", st.name),
                count,
                bytes,
            });
        }
        let tasks = self.paths.state.join("tasks");
        let count = self
            .store
            .list_all::<serde_json::Value>(crate::metadata::CONTAINERS)?
            .len() as u64;
        let bytes = crate::snapshot::copy::disk_usage(&tasks)
            .map(|u| u.size)
            .unwrap_or(0);
        out.push(DiskUse {
            kind: "containers".into(),
            count,
            bytes,
        });
        Ok(out)
    }
}
