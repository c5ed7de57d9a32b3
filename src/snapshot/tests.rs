//! Unit tests of the snapshotters (as root on the host; overlay mounts use the host's mount
//! namespace and are undone at the end of each test).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use super::*;
use crate::diff::tests::TarBuilder;
use crate::diff::{chain_ids, unpack, Layer};

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

#[test]
fn lifecycle_native() {
    let (_t, _st, s) = setup(Driver::Native);
    let m = s.prepare("default", "base-a", None, labels()).unwrap();
    assert_eq!(m[0].kind, "bind");
    assert!(!m[0].readonly());
    let dir = fs_of(&s, "default", "base-a");
    fs::write(dir.join("hello"), b"hi").unwrap();
    s.commit("default", "base", "base-a", labels()).unwrap();
    assert_eq!(s.stat("default", "base").unwrap().kind, Kind::Committed);
    assert!(matches!(
        s.stat("default", "base-a"),
        Err(Error::NotFound(_))
    ));
    let u = s.usage("default", "base").unwrap();
    assert_eq!(u.inodes, 2);
    assert!(u.size > 0);

    // child sees parent's file (a copy)
    s.prepare("default", "child", Some("base"), labels())
        .unwrap();
    let cdir = fs_of(&s, "default", "child");
    assert_eq!(fs::read(cdir.join("hello")).unwrap(), b"hi");
    let vm = s.view("default", "v", Some("base"), labels()).unwrap();
    assert!(vm[0].readonly());

    // parent with children cannot be removed
    let err = s.remove("default", "base").unwrap_err();
    assert!(matches!(err, Error::Precondition(_)), "{err}");
    assert!(err.to_string().contains("child"), "{err}");

    // namespaces are separate
    assert!(s.stat("other", "base").is_err());
    assert_eq!(s.walk("default").unwrap().len(), 3);

    // prepare on an active parent is refused; duplicate key refused
    assert!(s.prepare("default", "x", Some("child"), labels()).is_err());
    assert!(matches!(
        s.prepare("default", "child", None, labels()),
        Err(Error::AlreadyExists(_))
    ));
    // labels
    let mut l = labels();
    l.insert("a".into(), "b".into());
    assert_eq!(s.update("default", "base", l.clone()).unwrap().labels, l);

    s.remove("default", "child").unwrap();
    s.remove("default", "v").unwrap();
    s.remove("default", "base").unwrap();
    assert!(s.walk("default").unwrap().is_empty());
    assert_eq!(fs::read_dir(s.root()).unwrap().count(), 0);
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
        crate::diff::apply::get_xattr(&b.join("x"), "user.k").as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn overlay_mount_specs() {
    let (_t, _st, s) = setup(Driver::Overlay);
    let m = s.prepare("default", "l0-a", None, labels()).unwrap();
    assert_eq!(m[0].kind, "bind");
    s.commit("default", "l0", "l0-a", labels()).unwrap();
    s.prepare("default", "l1-a", Some("l0"), labels()).unwrap();
    s.commit("default", "l1", "l1-a", labels()).unwrap();
    let m = s.prepare("default", "rw", Some("l1"), labels()).unwrap();
    assert_eq!(m[0].kind, "overlay");
    let lower = m[0].option("lowerdir").unwrap();
    assert_eq!(lower.split(':').count(), 2);
    assert!(m[0].option("upperdir").is_some() && m[0].option("workdir").is_some());
    assert!(m[0].options.iter().any(|o| o == "userxattr"));
    // view of one layer: read-only bind of it
    let v = s.view("default", "v1", Some("l0"), labels()).unwrap();
    assert_eq!(v[0].kind, "bind");
    assert!(v[0].readonly());
    // view of two layers: read-only overlay without upper
    let v = s.view("default", "v2", Some("l1"), labels()).unwrap();
    assert_eq!(v[0].kind, "overlay");
    assert!(v[0].readonly() && v[0].option("upperdir").is_none());

    let (_t, _st, f) = setup(Driver::FuseOverlay);
    f.prepare("default", "l0-a", None, labels()).unwrap();
    f.commit("default", "l0", "l0-a", labels()).unwrap();
    let m = f.prepare("default", "rw", Some("l0"), labels()).unwrap();
    assert_eq!(m[0].kind, "fuse3.fuse-overlayfs");
    assert!(!m[0].options.iter().any(|o| o == "userxattr"));
}

/// Crash safety: a directory without a record (SIGKILL between steps) is removed by cleanup;
/// recorded ones stay.
#[test]
fn cleanup_removes_unreferenced_dirs() {
    let (_t, _st, s) = setup(Driver::Overlay);
    s.prepare("default", "keep", None, labels()).unwrap();
    fs::create_dir_all(s.root().join("tmp-deadbeef/fs")).unwrap();
    fs::create_dir_all(s.root().join("rm-7/fs")).unwrap();
    fs::create_dir_all(s.root().join("99/fs")).unwrap();
    assert_eq!(s.cleanup().unwrap(), 3);
    assert!(fs_of(&s, "default", "keep").is_dir());
    assert_eq!(fs::read_dir(s.root()).unwrap().count(), 1);
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

#[test]
fn probe_results() {
    let t = tempfile::tempdir().unwrap();
    assert!(probe(Driver::Native, t.path()).is_ok());
    if nix::unistd::geteuid().is_root() {
        assert_eq!(probe(Driver::Overlay, t.path()), Ok(()));
    }
    // the probe leaves nothing behind
    let d = t.path().join("snapshots/overlayfs");
    // (but the stamp that remembers a successful overlay probe for this kernel)
    let left: Vec<_> = fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != ".probe-ok")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let store = Arc::new(Store::open(&t.path().join("meta.redb")).unwrap());
    let all =
        Snapshotters::new(t.path(), store, "auto", crate::events::Publisher::discard()).unwrap();
    assert_eq!(all.status().len(), 3);
    assert!(all.get(Some("native")).is_ok());
    assert!(all.get(Some("zfs")).is_err());
}

/// More layers than mount(2)'s one-page option string holds: mounted through fsconfig.
#[test]
fn overlay_with_many_long_layers() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let deep = t
        .path()
        .join("a-rather-long-directory-name-to-make-paths-long/and-longer-still");
    let store = Arc::new(Store::open(&t.path().join("meta.redb")).unwrap());
    let s = DirSnapshotter::new(Driver::Overlay, &deep, store)
        .unwrap()
        .with_trusted_xattrs();
    let mut parent: Option<String> = None;
    for i in 0..60 {
        let key = format!("l{i}");
        s.prepare("default", "work", parent.as_deref(), labels())
            .unwrap();
        let w = fs_of(&s, "default", "work");
        fs::write(w.join(format!("f{i}")), b"x").unwrap();
        fs::write(w.join("same"), i.to_string()).unwrap();
        s.commit("default", &key, "work", labels()).unwrap();
        parent = Some(key);
    }
    let m = s
        .prepare("default", "top", parent.as_deref(), labels())
        .unwrap();
    let len: usize = m[0].options.iter().map(|o| o.len() + 1).sum();
    assert!(len > 4096, "options are only {len} bytes");
    let target = t.path().join("mnt");
    fs::create_dir(&target).unwrap();
    mount_all(&m, &target).unwrap();
    let n = fs::read_dir(&target).map(|d| d.count());
    let same = fs::read_to_string(target.join("same"));
    fs::write(target.join("new"), b"n").unwrap();
    unmount(&target).unwrap();
    assert_eq!(n.unwrap(), 61);
    assert_eq!(same.unwrap(), "59", "the nearest layer must win");
    assert!(fs_of(&s, "default", "top").join("new").exists());
}
