//! One garbage collection: mark from the roots, sweep the rest.
//!
//! Roots, per namespace: images (their index/manifests/configs/layers, found by parsing and by
//! `containerd.io/gc.ref.content*` labels, and their unpacked snapshots by chain ID in every
//! snapshotter), containers (their snapshot), unexpired leases (what they hold), and anything
//! labelled `containerd.io/gc.root`. Snapshots a user made through `nook snapshots` (every
//! snapshot not named by a chain ID) are roots too, except unpack leftovers (`extract-*`)
//! older than an hour. A marked snapshot marks its
//! parents; a content record's `gc.ref.content` labels mark their targets.
//!
//! Sweep: unmarked content records (one write transaction), then unmarked snapshots (children
//! first), then blobs no namespace records any more.
//!
//! In-flight work (pull, import, unpack, container creation) holds the daemon's GC lock for
//! reading, and a collection holds it for writing, so a collection never sees half-recorded
//! work. As a second guard, the scheduled collections also spare anything younger than
//! [`GRACE`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::content::{ContentRecord, ContentStore};
use crate::error::Result;
use crate::image::manifest::PlatformSelector;
use crate::image::ImageRecord;
use crate::leases::Lease;
use crate::metadata::{Store, CONTAINERS, CONTENT, IMAGES, LEASES, SNAPSHOTS};
use crate::snapshot::{Kind, Record as SnapRecord, Snapshotter, Snapshotters};

/// Label that makes a content record or snapshot a root.
pub const ROOT_LABEL: &str = "containerd.io/gc.root";
/// Prefix of labels that reference content.
pub const REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// Prefix of labels that reference snapshots (`…snapshot.<snapshotter>` = key).
pub const REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";

/// Label on a container's own snapshot (the container id): only the container record keeps it.
pub const CONTAINER_LABEL: &str = "nook.container";

/// What is never collected, however unreferenced: the window between writing something and
/// recording what refers to it.
pub const GRACE: Duration = Duration::from_secs(60);

/// What one collection did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Content records removed (`ns/digest`).
    pub content_records: Vec<String>,
    /// Blobs deleted from disk, and the bytes they held.
    pub blobs: Vec<String>,
    pub bytes_freed: u64,
    /// Snapshots removed (`ns/snapshotter/key`).
    pub snapshots: Vec<String>,
    /// How long the metadata database was held (the pause), and the whole run.
    pub pause_ms: u64,
    pub total_ms: u64,
}

#[derive(Default)]
struct Marks {
    /// (ns, digest)
    content: HashSet<(String, String)>,
    /// (ns, "snapshotter/key")
    snapshots: HashSet<(String, String)>,
    /// What existed when marking started: only these may be swept (anything newer belongs to
    /// work that raced the collection).
    seen_content: HashSet<(String, String)>,
    seen_snapshots: HashSet<(String, String)>,
}

fn namespaces_with_data(store: &Store) -> Result<BTreeSet<String>> {
    Ok(store.namespaces()?.into_iter().map(|n| n.name).collect())
}

/// Reads the fields of a container record that reference a snapshot, whatever else it holds.
fn container_snapshot(v: &serde_json::Value) -> Option<(String, String)> {
    let sn = v.get("snapshotter")?.as_str()?.to_string();
    let key = v
        .get("snapshot_key")
        .or_else(|| v.get("snapshot"))?
        .as_str()?
        .to_string();
    Some((sn, key))
}

fn mark(
    store: &Store,
    cs: &ContentStore,
    snapshotters: &Snapshotters,
    now_unix: i64,
    grace: Duration,
) -> Result<Marks> {
    let mut m = Marks::default();
    for ns in namespaces_with_data(store)? {
        for (digest, _) in store.list::<ContentRecord>(CONTENT, &ns)? {
            m.seen_content.insert((ns.clone(), digest));
        }
        for (key, _) in store.list::<SnapRecord>(SNAPSHOTS, &ns)? {
            m.seen_snapshots.insert((ns.clone(), key));
        }
    }
    for ns in namespaces_with_data(store)? {
        // images: their blobs and their unpacked snapshots
        for (_, img) in store.list::<ImageRecord>(IMAGES, &ns)? {
            m.content
                .insert((ns.clone(), img.target.digest.to_string()));
            if let Ok(blobs) = crate::image::blobs_of(cs, store, &ns, &img.target) {
                for b in blobs {
                    m.content.insert((ns.clone(), b.digest.to_string()));
                }
            }
            if let Ok(imgs) =
                crate::image::resolve(cs, store, &ns, &img.target, &PlatformSelector::All)
            {
                for pi in imgs {
                    for chain in pi.chain_ids() {
                        for st in snapshotters.status() {
                            m.snapshots
                                .insert((ns.clone(), format!("{}/{}", st.name, chain)));
                        }
                    }
                }
            }
        }
        // containers
        for (_, c) in store.list::<serde_json::Value>(CONTAINERS, &ns)? {
            if let Some((sn, key)) = container_snapshot(&c) {
                m.snapshots.insert((ns.clone(), format!("{sn}/{key}")));
            }
            // and its image volumes' views
            for v in c["image_volumes"].as_array().into_iter().flatten() {
                if let (Some(sn), Some(key)) =
                    (v["snapshotter"].as_str(), v["snapshot_key"].as_str())
                {
                    m.snapshots.insert((ns.clone(), format!("{sn}/{key}")));
                }
            }
        }
        // leases
        for (_, l) in store.list::<Lease>(LEASES, &ns)? {
            if l.expired(now_unix) {
                continue;
            }
            for r in &l.resources {
                if r.kind == "content" {
                    m.content.insert((ns.clone(), r.id.clone()));
                } else if let Some(sn) = r.kind.strip_prefix("snapshots/") {
                    m.snapshots.insert((ns.clone(), format!("{sn}/{}", r.id)));
                }
            }
        }
        // labelled roots and label references
        for (digest, rec) in store.list::<ContentRecord>(CONTENT, &ns)? {
            if rec.labels.contains_key(ROOT_LABEL) {
                m.content.insert((ns.clone(), digest.clone()));
            }
        }
        for (key, rec) in store.list::<SnapRecord>(SNAPSHOTS, &ns)? {
            let young = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|n| n.as_secs() as i64 - rec.created_at.timestamp() < grace.as_secs() as i64)
                .unwrap_or(true);
            let name = key.split_once('/').map(|(_, k)| k).unwrap_or(&key);
            let leftover =
                name.starts_with("extract-") && now_unix - rec.created_at.timestamp() > 3600;
            // unpacked layers are committed under their chain ID (`sha256:…`); anything else a
            // user made through `nook snapshots` and keeps until they remove it
            let unpacked_layer = rec.kind == Kind::Committed && name.starts_with("sha256:");
            // a container's snapshot lives exactly as long as its container record
            let containers_own = rec.labels.contains_key(CONTAINER_LABEL);
            let user_made = !unpacked_layer && !leftover && !containers_own;
            if young || user_made || rec.labels.contains_key(ROOT_LABEL) {
                m.snapshots.insert((ns.clone(), key.clone()));
            }
        }
    }
    // propagate: content label references, snapshot parents and snapshot→content labels
    loop {
        let before = (m.content.len(), m.snapshots.len());
        for ns in namespaces_with_data(store)? {
            for (digest, rec) in store.list::<ContentRecord>(CONTENT, &ns)? {
                if !m.content.contains(&(ns.clone(), digest.clone())) {
                    continue;
                }
                for (k, v) in &rec.labels {
                    if k.starts_with(REF_CONTENT) {
                        m.content.insert((ns.clone(), v.clone()));
                    } else if let Some(sn) = k.strip_prefix(REF_SNAPSHOT) {
                        m.snapshots.insert((ns.clone(), format!("{sn}/{v}")));
                    }
                }
            }
            for (key, rec) in store.list::<SnapRecord>(SNAPSHOTS, &ns)? {
                if !m.snapshots.contains(&(ns.clone(), key.clone())) {
                    continue;
                }
                if let (Some(parent), Some((sn, _))) = (&rec.parent, key.split_once('/')) {
                    m.snapshots.insert((ns.clone(), format!("{sn}/{parent}")));
                }
                for (k, v) in &rec.labels {
                    if k.starts_with(REF_CONTENT) {
                        m.content.insert((ns.clone(), v.clone()));
                    }
                }
            }
        }
        if (m.content.len(), m.snapshots.len()) == before {
            break;
        }
    }
    Ok(m)
}

fn young_file(p: &std::path::Path, grace: Duration) -> bool {
    !grace.is_zero()
        && std::fs::metadata(p)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().map(|e| e < grace).unwrap_or(true))
            .unwrap_or(false)
}

/// Runs one collection, sparing what is younger than `grace`. The caller holds the GC lock
/// for writing.
pub fn collect(
    store: &Store,
    cs: &ContentStore,
    snapshotters: &Snapshotters,
    grace: Duration,
) -> Result<Report> {
    let t0 = Instant::now();
    let now_unix = chrono::Utc::now().timestamp();
    let mut report = Report::default();
    let marks = mark(store, cs, snapshotters, now_unix, grace)?;

    // 1. content records: one write transaction (the pause)
    let tp = Instant::now();
    report.content_records = store.write(|tx| {
        let mut removed = Vec::new();
        for (key, rec) in tx.list_all::<ContentRecord>(CONTENT)? {
            let Some((ns, digest)) = key.split_once('/') else {
                continue;
            };
            if marks
                .content
                .contains(&(ns.to_string(), digest.to_string()))
            {
                continue;
            }
            if now_unix - rec.created_at.max(rec.updated_at) < grace.as_secs() as i64 {
                continue;
            }
            tx.delete_raw(CONTENT, &key)?;
            removed.push(key);
        }
        Ok(removed)
    })?;
    report.pause_ms = tp.elapsed().as_millis() as u64;

    // 2. snapshots, children first
    let mut victims: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
    for ns in namespaces_with_data(store)? {
        for (key, rec) in store.list::<SnapRecord>(SNAPSHOTS, &ns)? {
            let id = (ns.clone(), key.clone());
            if !marks.snapshots.contains(&id) && marks.seen_snapshots.contains(&id) {
                victims.insert((ns.clone(), key), rec.parent);
            }
        }
    }
    loop {
        let mut progressed = false;
        let keys: Vec<(String, String)> = victims.keys().cloned().collect();
        for (ns, key) in keys {
            let Some((sn, name)) = key.split_once('/') else {
                continue;
            };
            let has_child = victims.iter().any(|((n2, k2), p)| {
                n2 == &ns
                    && p.as_deref() == Some(name)
                    && k2.split_once('/').map(|x| x.0) == Some(sn)
            });
            if has_child {
                continue;
            }
            victims.remove(&(ns.clone(), key.clone()));
            progressed = true;
            let Ok(s) = snapshotters.get(Some(sn)) else {
                continue;
            };
            match s.remove(&ns, name) {
                Ok(()) => report.snapshots.push(format!("{ns}/{key}")),
                Err(e) => tracing::warn!(ns, key, error = %e, "gc: removing snapshot"),
            }
        }
        if !progressed {
            break;
        }
    }

    // 3. blobs no namespace records
    let recorded: HashSet<String> = store
        .list_all::<ContentRecord>(CONTENT)?
        .into_iter()
        .filter_map(|(k, _)| k.split_once('/').map(|(_, d)| d.to_string()))
        .collect();
    for (digest, size) in cs.blobs()? {
        let ds = digest.to_string();
        if recorded.contains(&ds) || young_file(&cs.blob_path(&digest), grace) {
            continue;
        }
        if cs.remove_blob(&digest)? {
            report.blobs.push(ds);
            report.bytes_freed += size;
        }
    }
    report.total_ms = t0.elapsed().as_millis() as u64;
    Ok(report)
}
