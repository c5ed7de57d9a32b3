//! `nook check`: verifies the store (fsck) and, with repair, fixes what it can.
//!
//! Checked: every blob's bytes against its digest; every content record points at a blob;
//! every image's target (and the manifests/configs it needs) is present; every snapshot's
//! parent exists and its directory is on disk; every container's snapshot exists; no ingest
//! is left over from a crash. Repair removes what is broken: corrupt blobs, records without
//! data, images whose content is gone, snapshots without their directory (children first),
//! stale ingests.

use std::collections::BTreeSet;
use std::io::Read;

use serde::Serialize;

use crate::content::{ContentRecord, ContentStore, Digest, Hasher};
use crate::error::Result;
use crate::image::ImageRecord;
use crate::metadata::{Store, CONTAINERS, CONTENT, IMAGES, SNAPSHOTS};
use crate::snapshot::{Record as SnapRecord, Snapshotter, Snapshotters};

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    /// blob | content | image | snapshot | container | ingest
    pub kind: String,
    /// What it concerns (`ns/key` or a digest).
    pub subject: String,
    pub problem: String,
    /// Whether --repair fixed it.
    pub repaired: bool,
}

/// What a check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub records_checked: u64,
    pub problems: Vec<Problem>,
}

fn verify_blob(cs: &ContentStore, d: &Digest) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(cs.blob_path(d))?;
    let mut h = Hasher::new(d.algorithm());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(&h.finish() == d)
}

/// Runs the check; with `repair`, fixes what it finds.
pub fn check(
    store: &Store,
    cs: &ContentStore,
    snapshotters: &Snapshotters,
    repair: bool,
) -> Result<CheckReport> {
    let mut rep = CheckReport::default();
    let push =
        |rep: &mut CheckReport, kind: &str, subject: String, problem: String, repaired: bool| {
            rep.problems.push(Problem {
                kind: kind.into(),
                subject,
                problem,
                repaired,
            })
        };
    // 1. blobs
    let mut good: BTreeSet<String> = BTreeSet::new();
    for (d, size) in cs.blobs()? {
        rep.blobs_checked += 1;
        rep.bytes_checked += size;
        match verify_blob(cs, &d) {
            Ok(true) => {
                good.insert(d.to_string());
            }
            Ok(false) => {
                let fixed = repair && cs.remove_blob(&d).unwrap_or(false);
                push(
                    &mut rep,
                    "blob",
                    d.to_string(),
                    "bytes do not match the digest (corrupt)".into(),
                    fixed,
                );
            }
            Err(e) => push(
                &mut rep,
                "blob",
                d.to_string(),
                format!("unreadable: {e}"),
                false,
            ),
        }
    }
    // 2. interrupted ingests are not damage (the next pull of the blob resumes them, and
    // import names them per run); with repair they are dropped, and reported as such
    if repair {
        for ing in cs.ingests()? {
            if cs.abort(&ing.reference).is_ok() {
                push(
                    &mut rep,
                    "ingest",
                    ing.reference.clone(),
                    format!("interrupted write of {} bytes dropped", ing.offset),
                    true,
                );
            }
        }
    }
    // 3. content records
    for (key, _) in store.list_all::<ContentRecord>(CONTENT)? {
        rep.records_checked += 1;
        let digest = key.split_once('/').map(|(_, d)| d).unwrap_or(&key);
        if !good.contains(digest) {
            let fixed = repair && store.write(|tx| tx.delete_raw(CONTENT, &key)).is_ok();
            push(
                &mut rep,
                "content",
                key.clone(),
                "references a blob that is missing or corrupt".into(),
                fixed,
            );
        }
    }
    // 4. images
    for (key, img) in store.list_all::<ImageRecord>(IMAGES)? {
        rep.records_checked += 1;
        let Some((ns, _)) = key.split_once('/') else {
            continue;
        };
        let missing = if !good.contains(&img.target.digest.to_string()) {
            Some(format!("target {} is missing", img.target.digest))
        } else {
            crate::image::resolve(
                cs,
                store,
                ns,
                &img.target,
                &crate::image::manifest::PlatformSelector::All,
            )
            .err()
            .map(|e| e.to_string())
        };
        if let Some(why) = missing {
            let fixed = repair && store.write(|tx| tx.delete_raw(IMAGES, &key)).is_ok();
            push(&mut rep, "image", key.clone(), why, fixed);
        }
    }
    // 5. snapshots: parent exists, directory exists
    let snaps: Vec<(String, SnapRecord)> = store.list_all::<SnapRecord>(SNAPSHOTS)?;
    let keys: BTreeSet<&str> = snaps.iter().map(|(k, _)| k.as_str()).collect();
    let mut broken: Vec<(String, String, String)> = Vec::new(); // (ns, snapshotter, key)
    for (full, rec) in &snaps {
        rep.records_checked += 1;
        let mut parts = full.splitn(3, '/');
        let (Some(ns), Some(sn), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if let Some(p) = &rec.parent {
            if !keys.contains(format!("{ns}/{sn}/{p}").as_str()) {
                push(
                    &mut rep,
                    "snapshot",
                    full.clone(),
                    format!("parent {p:?} is missing"),
                    false,
                );
                broken.push((ns.into(), sn.into(), key.into()));
                continue;
            }
        }
        let dir = snapshotters
            .get(Some(sn))
            .ok()
            .map(|s| s.root().join(rec.id.to_string()));
        if let Some(dir) = dir {
            if !dir.exists() {
                push(
                    &mut rep,
                    "snapshot",
                    full.clone(),
                    format!("directory {} is missing", dir.display()),
                    false,
                );
                broken.push((ns.into(), sn.into(), key.into()));
            }
        }
    }
    if repair {
        // remove broken snapshots and their descendants, children first
        let mut doomed: BTreeSet<(String, String, String)> = broken.iter().cloned().collect();
        loop {
            let before = doomed.len();
            for (full, rec) in &snaps {
                let mut parts = full.splitn(3, '/');
                let (Some(ns), Some(sn), Some(key)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if let Some(p) = &rec.parent {
                    if doomed.contains(&(ns.into(), sn.into(), p.clone())) {
                        doomed.insert((ns.into(), sn.into(), key.into()));
                    }
                }
            }
            if doomed.len() == before {
                break;
            }
        }
        let mut left: Vec<_> = doomed.into_iter().collect();
        while !left.is_empty() {
            let n = left.len();
            left.retain(|(ns, sn, key)| {
                let removed = snapshotters
                    .get(Some(sn))
                    .map(|s| s.remove(ns, key).is_ok())
                    .unwrap_or(false)
                    || store
                        .write(|tx| tx.delete(SNAPSHOTS, ns, &format!("{sn}/{key}")))
                        .unwrap_or(false);
                !removed
            });
            if left.len() == n {
                break;
            }
        }
        for p in rep.problems.iter_mut().filter(|p| p.kind == "snapshot") {
            p.repaired = !store
                .list_all::<SnapRecord>(SNAPSHOTS)?
                .iter()
                .any(|(k, _)| k == &p.subject);
        }
    }
    // 6. containers' snapshots
    for (key, c) in store.list_all::<serde_json::Value>(CONTAINERS)? {
        rep.records_checked += 1;
        let Some((ns, _)) = key.split_once('/') else {
            continue;
        };
        let sn = c.get("snapshotter").and_then(|v| v.as_str());
        let sk = c
            .get("snapshot_key")
            .or_else(|| c.get("snapshot"))
            .and_then(|v| v.as_str());
        if let (Some(sn), Some(sk)) = (sn, sk) {
            if !sk.is_empty()
                && store
                    .get::<SnapRecord>(SNAPSHOTS, ns, &format!("{sn}/{sk}"))?
                    .is_none()
            {
                push(&mut rep, "container", key.clone(), format!("its snapshot {sk:?} ({sn}) is missing; remove the container with `nook rm`"), false);
            }
        }
    }
    Ok(rep)
}
