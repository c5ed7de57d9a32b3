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

/// Incompressible bytes (so a throttled download takes a while).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u64 = 0x9e3779b97f4a7c15 ^ seed;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    v
}

#[test]
fn pull_racing_gcs_completes() {
    use nook::image::fixture::{self, FileSpec, TestRegistry, TestRegistryOptions};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    // an image with two 6 MiB layers on busybox, in a registry behind a slow proxy
    let mut layers = fixture::busybox_layers(std::fs::read("/bin/busybox").unwrap(), "race");
    layers.push(vec![FileSpec::file("one.bin", noise(6 << 20, 1))]);
    layers.push(vec![FileSpec::file("two.bin", noise(6 << 20, 2))]);
    let img = TestImage::build(&layers, false, &["sh"]);
    let rdir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(rdir.path(), &TestRegistryOptions::default()).unwrap();
    let pusher = Nookd::start();
    pusher
        .nook_stdin(&["load"], &fixture::oci_layout(&[("local/race:1", &img)]))
        .ok();
    pusher
        .nook(&[
            "push",
            "local/race:1",
            &format!("{}/test/race:1", reg.host()),
        ])
        .ok();
    drop(pusher);
    let pport = fixture::free_port().unwrap();
    let _proxy = common::SlowProxy::start(pport, reg.port, 3 << 20);
    let name = format!("127.0.0.1:{pport}/test/race:1");

    // a daemon whose scheduler collects after every mutation and deletion
    let d = Nookd::start_with(
        "[gc]\nmutation_threshold = 1\ndeletion_threshold = 1\npause_threshold = 0.5\nschedule_delay = \"0ms\"\nstartup_delay = \"0ms\"\n",
    );
    let junk = TestImage::busybox("junk\n", false).unwrap();
    let junk_tar = docker_archive(&[(&["test/junk:1"], &junk)]);

    let mut pull = common::as_user(common::USER, &d.env(), "nook")
        .args(["pull", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let (mut gcs_during_pull, mut swept) = (0, 0);
    let status = loop {
        if let Some(st) = pull.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(50), "the pull hangs");
        // garbage for the collections to find, and mutations for the scheduler
        d.nook_stdin(&["images", "import", "-"], &junk_tar).ok();
        d.nook(&["images", "rm", "test/junk:1"]).ok();
        let r: serde_json::Value =
            serde_json::from_str(&d.nook(&["gc", "--format", "json"]).ok()).unwrap();
        swept += r["blobs"].as_array().map(Vec::len).unwrap_or(0);
        if pull.try_wait().unwrap().is_none() {
            gcs_during_pull += 1;
        }
    };
    let out = pull.wait_with_output().unwrap();
    assert!(
        status.success(),
        "the pull failed: {}\nnookd's log ends:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // collections really ran (and swept) while the pull was downloading
    assert!(
        gcs_during_pull >= 2,
        "only {gcs_during_pull} GCs during the pull"
    );
    assert!(swept > 0, "the GCs swept nothing");
    // the image is whole and runs; the store is consistent, also after one more GC
    let out = d
        .nook(&[
            "run",
            "--rm",
            &name,
            "sh",
            "-c",
            "wc -c < /one.bin; wc -c < /two.bin",
        ])
        .ok();
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        [(6 << 20).to_string(), (6 << 20).to_string()]
    );
    for l in &img.layers {
        assert!(blob_path(&d, &l.0.digest.to_string()).exists());
    }
    d.nook(&["gc"]).ok();
    let chk: serde_json::Value =
        serde_json::from_str(&d.nook(&["check", "--format", "json"]).ok()).unwrap();
    assert_eq!(chk["consistent"], true, "{chk}");
    assert_eq!(
        d.nook(&["run", "--rm", &name, "cat", "/etc/extra"]).ok(),
        "race"
    );
    eprintln!("{gcs_during_pull} GCs during the pull swept {swept} blobs");
}
