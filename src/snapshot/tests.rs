//! Unit tests of the snapshotters (as root on the host; overlay mounts use the host's mount
//! namespace and are undone at the end of each test).

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;

use super::*;
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
