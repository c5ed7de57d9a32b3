//! Unit tests of layers applied into real snapshotters (unpack, chain sharing, overlay mounts
//! of unpacked layers). They live with diff, which sits above snapshot: the snapshotters' own
//! tests (src/snapshot/tests.rs) need no layer code. Run as root on the host, like CI.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use super::tests::TarBuilder;
use super::{chain_ids, unpack, Layer};
use crate::error::{Error, Result};
use crate::metadata::Store;
use crate::snapshot::*;

fn setup(driver: Driver) -> (tempfile::TempDir, Arc<Store>, DirSnapshotter) {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&t.path().join("meta.redb")).unwrap());
    let s = DirSnapshotter::new(driver, t.path(), store.clone()).unwrap();
    (t, store, s)
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn fs_of(s: &DirSnapshotter, ns: &str, key: &str) -> std::path::PathBuf {
    s.apply_target(ns, key).unwrap().0
}

fn layer(tar: &[u8]) -> (Layer, Vec<u8>) {
    use sha2::Digest;
    let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(tar)));
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, tar).unwrap();
    let gz = e.finish().unwrap();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&gz)));
    (
        Layer {
            digest,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            diff_id,
        },
        gz,
    )
}

fn opener(
    blobs: Vec<(Layer, Vec<u8>)>,
) -> impl FnMut(&str) -> Result<Box<dyn std::io::Read + Send>> {
    move |d: &str| {
        let b = blobs
            .iter()
            .find(|(l, _)| l.digest == d)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| Error::NotFound(d.to_string()))?;
        Ok(Box::new(std::io::Cursor::new(b)) as Box<dyn std::io::Read + Send>)
    }
}

#[test]
fn native_copy_preserves_metadata() {
    let (_t, _st, s) = setup(Driver::Native);
    s.prepare("default", "a", None, labels()).unwrap();
    let d = fs_of(&s, "default", "a");
    let tar = TarBuilder::new()
        .file_owned("www/f", b"x", 0o4750, 33, 33)
        .link("www/g", tar::EntryType::Link, "www/f")
        .link("l", tar::EntryType::Symlink, "www/f")
        .file_xattr("x", b"x", "user.k", b"v")
        .finish();
    crate::diff::apply_layer(&tar[..], "", &d, &crate::diff::Whiteouts::Direct, None).unwrap();
    s.commit("default", "c", "a", labels()).unwrap();
    s.prepare("default", "b", Some("c"), labels()).unwrap();
    let b = fs_of(&s, "default", "b");
    let f = fs::metadata(b.join("www/f")).unwrap();
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (33, 33, 0o4750));
    assert_eq!(f.ino(), fs::metadata(b.join("www/g")).unwrap().ino());
    assert_eq!(f.mtime(), 1_600_000_000);
    assert_eq!(
        fs::read_link(b.join("l")).unwrap(),
        std::path::Path::new("www/f")
    );
    assert_eq!(
        crate::fsmeta::get_xattr(&b.join("x"), "user.k").as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn unpack_shares_chain_snapshots_and_cleans_failures() {
    for driver in [Driver::Native, Driver::Overlay] {
        let (_t, _st, s) = setup(driver);
        let l0 = layer(
            &TarBuilder::new()
                .file("base", b"0")
                .file("gone", b"g")
                .finish(),
        );
        let l1 = layer(
            &TarBuilder::new()
                .file("top", b"1")
                .file(".wh.gone", b"")
                .finish(),
        );
        let layers = vec![l0.0.clone(), l1.0.clone()];
        let st = unpack(&s, "default", &layers, opener(vec![l0.clone(), l1.clone()])).unwrap();
        let chain = chain_ids(&[l0.0.diff_id.clone(), l1.0.diff_id.clone()]);
        assert_eq!(st.chain_id, chain[1]);
        assert_eq!((st.applied, st.reused), (2, 0));
        let info = s.stat("default", &chain[1]).unwrap();
        assert_eq!(info.parent.as_deref(), Some(chain[0].as_str()));
        assert_eq!(info.kind, Kind::Committed);

        // a second image sharing the base layer reuses it
        let l2 = layer(&TarBuilder::new().file("other", b"2").finish());
        let st = unpack(
            &s,
            "default",
            &[l0.0.clone(), l2.0.clone()],
            opener(vec![l0.clone(), l2.clone()]),
        )
        .unwrap();
        assert_eq!((st.applied, st.reused), (1, 1));

        // a truncated layer fails and leaves no snapshot but the committed ones
        let (l3, gz) = layer(&TarBuilder::new().file("big", &vec![7u8; 200_000]).finish());
        let cut = gz[..gz.len() / 2].to_vec();
        let before = s.walk("default").unwrap().len();
        let err = unpack(
            &s,
            "default",
            &[l0.0.clone(), l3.clone()],
            opener(vec![l0.clone(), (l3, cut)]),
        );
        assert!(err.is_err());
        let after = s.walk("default").unwrap();
        assert_eq!(after.len(), before, "{after:?}");
        assert!(after.iter().all(|i| i.kind == Kind::Committed));
        // and no directory is left over
        let dirs = fs::read_dir(s.root()).unwrap().count();
        assert_eq!(dirs, before);
    }
}

/// The overlay snapshotter's layout really mounts (root on the host can mount overlay; the
/// `trusted.` xattr flavour is used there since `userxattr` is for user namespaces).
#[test]
fn overlay_unpack_mounts_correctly() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&t.path().join("meta.redb")).unwrap());
    let s = DirSnapshotter::new(Driver::Overlay, t.path(), store)
        .unwrap()
        .with_trusted_xattrs();
    let l0 = layer(
        &TarBuilder::new()
            .file("a", b"a")
            .file("o/old", b"old")
            .file_owned("www/f", b"f", 0o4755, 33, 33)
            .finish(),
    );
    let l1 = layer(
        &TarBuilder::new()
            .file(".wh.a", b"")
            .file("o/.wh..wh..opq", b"")
            .file("o/new", b"n")
            .link("www/h", tar::EntryType::Link, "www/f")
            .finish(),
    );
    let st = unpack(
        &s,
        "default",
        &[l0.0.clone(), l1.0.clone()],
        opener(vec![l0, l1]),
    )
    .unwrap();
    let mounts = s
        .prepare("default", "ctr", Some(&st.chain_id), labels())
        .unwrap();
    let target = t.path().join("mnt");
    fs::create_dir(&target).unwrap();
    mount_all(&mounts, &target).unwrap();
    let f = fs::metadata(target.join("www/f"));
    let h = fs::metadata(target.join("www/h"));
    let seen = (
        target.join("a").exists(),
        target.join("o/old").exists(),
        target.join("o/new").exists(),
    );
    unmount(&target).unwrap();
    assert_eq!(seen, (false, false, true));
    let f = f.unwrap();
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (33, 33, 0o4755));
    assert_eq!(f.ino(), h.unwrap().ino());
}
