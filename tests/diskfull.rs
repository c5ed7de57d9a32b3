//! A full disk during a pull fails it cleanly: nookd (as the unprivileged user) keeps its root on
//! a small tmpfs; a pull that does not fit ends with one line saying the disk is full and what
//! to do, leaves no partial download, image or snapshot behind, and succeeds once there is room.

mod common;

use common::{Nookd, SmallDisk};
use nook::image::fixture::{self, FileSpec, TestImage, TestRegistry, TestRegistryOptions};

/// Incompressible bytes.
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

fn image_with(tag: &str, mb: usize) -> TestImage {
    let mut layers = fixture::busybox_layers(std::fs::read("/bin/busybox").unwrap(), tag);
    layers.push(vec![FileSpec::file("big.bin", noise(mb << 20, mb as u64))]);
    TestImage::build(&layers, true, &["sh"])
}

fn assert_clean(d: &Nookd) {
    let ingests: Vec<_> = std::fs::read_dir(d.root.join("content/ingest"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(ingests.is_empty(), "no partial write may stay: {ingests:?}");
    assert!(d.nook(&["images", "ls", "-q"]).ok().trim().is_empty());
    let chk: serde_json::Value =
        serde_json::from_str(&d.nook(&["check", "--format", "json"]).ok()).unwrap();
    assert_eq!(chk["consistent"], true, "{chk}");
}

fn assert_disk_full_error(err: &str) {
    // (progress lines come before it on stderr)
    let err = err.trim().lines().last().unwrap_or_default();
    assert!(err.starts_with("nook: "), "{err}");
    assert!(err.contains("no space left on device"), "{err}");
    assert!(err.contains("free disk space"), "{err}");
}

#[test]
fn disk_full_during_pull_fails_cleanly_then_succeeds_with_room() {
    // too big to download (40 MiB layer), and one that downloads but cannot be unpacked
    // (20 MiB layer: 20 MiB blob + 20 MiB unpacked) on a 32 MiB disk
    let big = image_with("big", 40);
    let mid = image_with("mid", 20);
    let rdir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(rdir.path(), &TestRegistryOptions::default()).unwrap();
    let (big_name, mid_name) = (
        format!("{}/test/big:1", reg.host()),
        format!("{}/test/mid:1", reg.host()),
    );
    {
        let p = Nookd::start();
        p.nook_stdin(
            &["load"],
            &fixture::oci_layout(&[("local/big:1", &big), ("local/mid:1", &mid)]),
        )
        .ok();
        p.nook(&["push", "local/big:1", &big_name]).ok();
        p.nook(&["push", "local/mid:1", &mid_name]).ok();
    }

    let mut d = Nookd::prepare("");
    let disk = SmallDisk::mount(&d, 32);
    d.spawn();
    d.wait_ready();

    let err = d.nook(&["pull", &big_name]).fails();
    assert_disk_full_error(&err);
    assert_clean(&d);

    let err = d.nook(&["pull", &mid_name]).fails();
    assert_disk_full_error(&err);
    assert_clean(&d);
    let snaps = d.nook(&["snapshots", "ls", "--format", "json"]).ok();
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&snaps).unwrap();
    assert!(
        snaps.iter().all(|s| s["kind"] != "active"),
        "no half-applied snapshot may stay: {snaps:?}"
    );

    // an import that does not fit either
    let err = d
        .nook_stdin(
            &["images", "import", "-"],
            &fixture::oci_layout(&[("local/big:1", &big)]),
        )
        .fails();
    assert_disk_full_error(&err);
    assert_clean(&d);

    // room again: the same pulls succeed and run
    disk.resize(160);
    d.nook(&["pull", &big_name]).ok();
    d.nook(&["pull", &mid_name]).ok();
    for (name, mb) in [(&big_name, 40usize), (&mid_name, 20)] {
        let out = d
            .nook(&["run", "--rm", name, "sh", "-c", "wc -c < /big.bin"])
            .ok();
        assert_eq!(out.trim(), (mb << 20).to_string());
    }
    let chk: serde_json::Value =
        serde_json::from_str(&d.nook(&["check", "--format", "json"]).ok()).unwrap();
    assert_eq!(chk["consistent"], true, "{chk}");
    drop(d);
}
