//! Garbage collection, `nook check` and disk usage, with the daemon as the unprivileged user:
//! shared layers survive the removal of one image, the rest is swept from disk.

mod common;

use common::Nookd;
use nook::image::fixture::{docker_archive, TestImage};

fn blob_path(d: &Nookd, digest: &str) -> std::path::PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    d.root.join("content/blobs").join(alg).join(hex)
}

fn snapshot_keys(d: &Nookd) -> Vec<String> {
    d.nook(&["snapshots", "ls", "-q"])
        .ok()
        .lines()
        .map(String::from)
        .collect()
}

fn chain_ids(img: &TestImage) -> Vec<String> {
    let ids: Vec<nook::content::Digest> = img
        .diffs
        .iter()
        .map(|d| nook::content::Digest::sha256(d))
        .collect();
    nook::image::chain_ids(ids.iter())
        .into_iter()
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn gc_keeps_shared_layers_and_sweeps_the_rest() {
    let d = Nookd::start();
    let a = TestImage::busybox("image a\n", false).unwrap();
    let b = TestImage::busybox("image b\n", false).unwrap();
    // the two share their lower layers
    assert_eq!(a.layers[0].0.digest, b.layers[0].0.digest);
    assert_ne!(a.layers[2].0.digest, b.layers[2].0.digest);
    let tar = docker_archive(&[(&["test/a:1"], &a), (&["test/b:1"], &b)]);
    d.nook_stdin(&["images", "import", "-"], &tar).ok();
    let ls = d.nook(&["images", "ls", "-q"]).ok();
    assert!(ls.contains("test/a:1") && ls.contains("test/b:1"), "{ls}");

    // the shared base layer is stored once
    let shared = a.layers[0].0.digest.to_string();
    assert!(blob_path(&d, &shared).exists());
    let blobs = std::fs::read_dir(d.root.join("content/blobs/sha256"))
        .unwrap()
        .count();
    // docker-archive layers are stored as they come (uncompressed tars):
    // 2 manifests + 2 configs + 2 shared layers + 1 own layer each
    assert_eq!(blobs, 2 + 2 + 2 + 2, "blobs on disk");

    // both images are unpacked, sharing the snapshots of their common layers
    let (ca, cb) = (chain_ids(&a), chain_ids(&b));
    let keys = snapshot_keys(&d);
    for c in ca.iter().chain(cb.iter()) {
        assert!(keys.contains(c), "snapshot {c} missing from {keys:?}");
    }
    assert_eq!(keys.len(), 4, "{keys:?}");

    // removing an image keeps its blobs until GC
    d.nook(&["images", "rm", "test/a:1"]).ok();
    let own_layer = a.layers[2].0.digest.to_string();
    assert!(blob_path(&d, &own_layer).exists());

    let out = d.nook(&["gc", "--format", "json"]).ok();
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["blobs"].as_array().unwrap().len(), 3, "{r}"); // manifest, config, own layer
    assert_eq!(r["snapshots"].as_array().unwrap().len(), 1, "{r}");
    assert!(
        !blob_path(&d, &own_layer).exists(),
        "a's own layer should be gone"
    );
    assert!(
        blob_path(&d, &shared).exists(),
        "the shared layer must stay"
    );
    for l in &b.layers {
        assert!(blob_path(&d, &l.0.digest.to_string()).exists());
    }
    let keys = snapshot_keys(&d);
    assert!(
        !keys.contains(&ca[2]),
        "a's top snapshot should be gone: {keys:?}"
    );
    for c in &cb {
        assert!(keys.contains(c), "b's snapshot {c} must stay: {keys:?}");
    }
    // b still works and the store is consistent
    let chk: serde_json::Value =
        serde_json::from_str(&d.nook(&["check", "--format", "json"]).ok()).unwrap();
    assert_eq!(chk["consistent"], true, "{chk}");
    // a second GC finds nothing
    let r: serde_json::Value =
        serde_json::from_str(&d.nook(&["gc", "--format", "json"]).ok()).unwrap();
    assert!(r["blobs"].as_array().unwrap().is_empty(), "{r}");

    let df: serde_json::Value =
        serde_json::from_str(&d.nook(&["system", "df", "--format", "json"]).ok()).unwrap();
    assert_eq!(df[0]["kind"], "content");
    assert_eq!(df[0]["count"], 5, "{df}");
}

#[test]
fn check_finds_and_repairs_a_corrupt_blob() {
    let d = Nookd::start();
    let a = TestImage::busybox("x\n", false).unwrap();
    d.nook_stdin(
        &["images", "import", "-"],
        &docker_archive(&[(&["test/c:1"], &a)]),
    )
    .ok();
    d.nook(&["check"]).ok();
    // flip bytes of a layer blob behind nook's back
    let p = blob_path(&d, &a.layers[1].0.digest.to_string());
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();
    let run = d.nook(&["check"]);
    let err = run.out.status.success();
    assert!(!err, "check must fail on a corrupt blob");
    assert!(run.stdout().contains("corrupt"), "{}", run.stdout());
    let rep: serde_json::Value =
        serde_json::from_str(&d.nook(&["check", "--repair", "--format", "json"]).ok()).unwrap();
    assert!(
        rep["problems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["repaired"] == true),
        "{rep}"
    );
    assert!(!p.exists(), "the corrupt blob is removed");
    // after repair the store is consistent (the image whose layer was lost is dropped)
    d.nook(&["check"]).ok();
}
