//! Unit tests of layer application (run as root on the host, like CI).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::*;

/// A tar built entry by entry, with raw (unvalidated) names so malicious layers can be made.
pub(crate) struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    pub(crate) fn new() -> Self {
        TarBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let nb = name.as_bytes();
        h.as_old_mut().name[..nb.len()].copy_from_slice(nb);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }

    pub(crate) fn dir(mut self, name: &str, mode: u32) -> Self {
        let mut h = Self::header(name, tar::EntryType::Directory, mode, 0);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub(crate) fn file(self, name: &str, data: &[u8]) -> Self {
        self.file_owned(name, data, 0o644, 0, 0)
    }

    pub(crate) fn file_owned(
        mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Self {
        let mut h = Self::header(name, tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub(crate) fn link(mut self, name: &str, kind: tar::EntryType, target: &str) -> Self {
        let mut h = Self::header(name, kind, 0o777, 0);
        let tb = target.as_bytes();
        h.as_old_mut().linkname[..tb.len()].copy_from_slice(tb);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub(crate) fn chardev(mut self, name: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(name, tar::EntryType::Char, 0o600, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub(crate) fn file_xattr(mut self, name: &str, data: &[u8], key: &str, value: &[u8]) -> Self {
        let rec = pax_record(&format!("SCHILY.xattr.{key}"), value);
        let mut ph = Self::header(
            "././@PaxHeader",
            tar::EntryType::XHeader,
            0o644,
            rec.len() as u64,
        );
        ph.set_cksum();
        self.b.append(&ph, rec.as_slice()).unwrap();
        self.file(name, data)
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len = len.to_string().len() + body_len;
    }
    let mut v = format!("{len} {key}=").into_bytes();
    v.extend_from_slice(value);
    v.push(b'\n');
    v
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn apply(tar: &[u8], root: &Path, w: &Whiteouts) -> Result<Applied> {
    apply_layer(tar, "", root, w, None)
}

/// A temp dir with `root/` (the snapshot) and `outside/canary`.
fn sandbox() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("a/b/c/root");
    fs::create_dir_all(&root).unwrap();
    let outside = t.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("canary"), b"canary").unwrap();
    (t, root, outside)
}

fn assert_outside_untouched(outside: &Path) {
    let names: Vec<_> = fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "something was written outside: {names:?}");
    assert_eq!(fs::read(outside.join("canary")).unwrap(), b"canary");
}

#[test]
fn clean_path_cases() {
    assert_eq!(
        clean_path(Path::new("/etc/passwd")).unwrap(),
        Path::new("etc/passwd")
    );
    assert_eq!(
        clean_path(Path::new("./a/./b/../c")).unwrap(),
        Path::new("a/c")
    );
    assert!(clean_path(Path::new("../x")).is_none());
    assert!(clean_path(Path::new("a/../../x")).is_none());
    assert_eq!(clean_path(Path::new("./")).unwrap(), Path::new(""));
}

#[test]
fn dotdot_escape_is_rejected() {
    let (_t, root, outside) = sandbox();
    let tar = TarBuilder::new()
        .file("ok", b"1")
        .file("../../../../outside/canary", b"pwned")
        .file("../../../../outside/new", b"pwned")
        .finish();
    let err = apply(&tar, &root, &Whiteouts::Direct)
        .unwrap_err()
        .to_string();
    assert!(err.contains("../../../../outside/canary"), "{err}");
    assert!(err.contains("rejected"), "{err}");
    assert_outside_untouched(&outside);
}

#[test]
fn absolute_paths_land_inside() {
    let (_t, root, outside) = sandbox();
    let abs = outside.join("canary");
    let tar = TarBuilder::new()
        .file(abs.to_str().unwrap(), b"inside")
        .finish();
    apply(&tar, &root, &Whiteouts::Direct).unwrap();
    let inner = root.join(abs.strip_prefix("/").unwrap());
    assert_eq!(fs::read(inner).unwrap(), b"inside");
    assert_outside_untouched(&outside);
}

#[test]
fn symlinked_parent_escape_is_rejected() {
    let (_t, root, outside) = sandbox();
    // absolute symlink to the outside directory
    let tar = TarBuilder::new()
        .link("evil", tar::EntryType::Symlink, outside.to_str().unwrap())
        .file("evil/pwned", b"x")
        .finish();
    let err = apply(&tar, &root, &Whiteouts::Direct)
        .unwrap_err()
        .to_string();
    assert!(err.contains("evil/pwned"), "{err}");
    assert_outside_untouched(&outside);

    // relative symlink climbing out
    let (_t2, root, outside) = sandbox();
    let tar = TarBuilder::new()
        .link("evil", tar::EntryType::Symlink, "../../../../outside")
        .file("evil/pwned", b"x")
        .finish();
    let err = apply(&tar, &root, &Whiteouts::Direct)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("evil/pwned") && err.contains("outside the root"),
        "{err}"
    );
    assert_outside_untouched(&outside);

    // through the overlay lowers: the symlink is in a lower layer
    let (_t3, root, outside) = sandbox();
    let lower = root.parent().unwrap().join("lower");
    fs::create_dir(&lower).unwrap();
    std::os::unix::fs::symlink(&outside, lower.join("evil")).unwrap();
    let tar = TarBuilder::new().file("evil/pwned", b"x").finish();
    let w = Whiteouts::Overlay {
        lowers: vec![lower],
        xattr_prefix: "user".into(),
    };
    let err = apply(&tar, &root, &w).unwrap_err().to_string();
    assert!(err.contains("evil/pwned"), "{err}");
    assert_outside_untouched(&outside);
}

#[test]
fn in_root_symlinked_parent_is_followed() {
    let (_t, root, _o) = sandbox();
    let tar = TarBuilder::new()
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .link("lib", tar::EntryType::Symlink, "usr/lib")
        .file("lib/libx.so", b"elf")
        .finish();
    apply(&tar, &root, &Whiteouts::Direct).unwrap();
    assert_eq!(fs::read(root.join("usr/lib/libx.so")).unwrap(), b"elf");
    assert!(fs::symlink_metadata(root.join("lib"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn hardlink_outside_is_rejected() {
    let (_t, root, outside) = sandbox();
    let before = fs::metadata("/etc/passwd").unwrap().nlink();
    for target in [
        "/etc/passwd",
        "../../../../../../../../etc/passwd",
        "../../../../outside/canary",
    ] {
        let tar = TarBuilder::new()
            .link("passwd", tar::EntryType::Link, target)
            .finish();
        let err = apply(&tar, &root, &Whiteouts::Direct)
            .unwrap_err()
            .to_string();
        assert!(err.contains("passwd"), "{err}");
        assert!(!root.join("passwd").exists());
    }
    // hard link through an escaping symlink
    let tar = TarBuilder::new()
        .link("out", tar::EntryType::Symlink, outside.to_str().unwrap())
        .link("c", tar::EntryType::Link, "out/canary")
        .finish();
    assert!(apply(&tar, &root, &Whiteouts::Direct).is_err());
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), before);
    assert_eq!(fs::metadata(outside.join("canary")).unwrap().nlink(), 1);
    assert_outside_untouched(&outside);
}

#[test]
fn file_kinds_modes_and_ownership() {
    let (_t, root, _o) = sandbox();
    let tar = TarBuilder::new()
        .dir("bin", 0o755)
        .file_owned("bin/su", b"suid", 0o4755, 0, 0)
        .file_owned("bin/sg", b"sgid", 0o2755, 0, 0)
        .dir("tmp", 0o1777)
        .file_owned("www/index.html", b"hi", 0o640, 33, 33)
        .link("bin/su2", tar::EntryType::Link, "bin/su")
        .link("bin/sh", tar::EntryType::Symlink, "busybox")
        .chardev("dev/null", 1, 3)
        .file_xattr("cap", b"c", "user.nook", b"v")
        .finish();
    let a = apply(&tar, &root, &Whiteouts::Direct).unwrap();
    assert_eq!(a.stats.skipped, 1);
    let su = fs::metadata(root.join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    assert_eq!(
        fs::metadata(root.join("bin/sg")).unwrap().mode() & 0o7777,
        0o2755
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let w = fs::metadata(root.join("www/index.html")).unwrap();
    assert_eq!((w.uid(), w.gid(), w.mode() & 0o777), (33, 33, 0o640));
    // implicit parent
    assert_eq!(
        fs::metadata(root.join("www")).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let su2 = fs::metadata(root.join("bin/su2")).unwrap();
    assert_eq!(su.ino(), su2.ino());
    assert_eq!(su2.nlink(), 2);
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(!root.join("dev/null").exists());
    assert_eq!(su.mtime(), 1_600_000_000);
    assert_eq!(
        fs::metadata(root.join("bin")).unwrap().mtime(),
        1_600_000_000
    );
    assert_eq!(
        crate::fsmeta::get_xattr(&root.join("cap"), "user.nook").as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn direct_whiteouts_and_opaque() {
    let (_t, root, _o) = sandbox();
    let base = TarBuilder::new()
        .file("a", b"a")
        .file("d/x", b"x")
        .file("o/old", b"old")
        .file("o/sub/deep", b"deep")
        .finish();
    apply(&base, &root, &Whiteouts::Direct).unwrap();
    let top = TarBuilder::new()
        .file("o/sub/new", b"n") // written before the opaque marker: kept
        .file(".wh.a", b"")
        .file("d/.wh.x", b"")
        .file("o/.wh..wh..opq", b"")
        .file("o/fresh", b"f")
        .file("nowhere/deep/.wh.x", b"")
        .finish();
    apply(&top, &root, &Whiteouts::Direct).unwrap();
    assert!(!root.join("nowhere").exists());
    assert!(!root.join("a").exists());
    assert!(!root.join("d/x").exists() && root.join("d").is_dir());
    assert!(!root.join("o/old").exists());
    assert!(!root.join("o/sub/deep").exists());
    assert!(root.join("o/sub/new").exists());
    assert!(root.join("o/fresh").exists());
    assert!(!root.join(".wh.a").exists());
}

#[test]
fn overlay_whiteouts_and_opaque() {
    let (t, upper, _o) = sandbox();
    let lower = t.path().join("lower");
    fs::create_dir(&lower).unwrap();
    apply(
        &TarBuilder::new()
            .file("a", b"a")
            .file("o/old", b"old")
            .file("r/old", b"old")
            .file_owned("keep/f", b"f", 0o644, 0, 0)
            .finish(),
        &lower,
        &Whiteouts::Direct,
    )
    .unwrap();
    fs::set_permissions(lower.join("keep"), fs::Permissions::from_mode(0o700)).unwrap();
    let w = Whiteouts::Overlay {
        lowers: vec![lower.clone()],
        xattr_prefix: "user".into(),
    };
    apply(
        &TarBuilder::new()
            .file(".wh.a", b"")
            .file("o/.wh..wh..opq", b"")
            .file("o/new", b"n")
            .file("keep/g", b"g")
            .link("hl", tar::EntryType::Link, "keep/f")
            .file(".wh.r", b"")
            .dir("r", 0o755)
            .file("r/new", b"n")
            .file("nowhere/.wh.x", b"")
            .finish(),
        &upper,
        &w,
    )
    .unwrap();
    let m = fs::symlink_metadata(upper.join("a")).unwrap();
    assert!(m.file_type().is_char_device() && m.rdev() == 0);
    assert_eq!(
        crate::fsmeta::get_xattr(&upper.join("o"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(upper.join("o/new").exists());
    assert!(!upper.join("nowhere").exists());
    assert_eq!(
        crate::fsmeta::get_xattr(&upper.join("r"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    // implicit dir copied the lower dir's mode
    assert_eq!(
        fs::metadata(upper.join("keep")).unwrap().mode() & 0o777,
        0o700
    );
    // hard link to a lower file: copied up, then linked
    let f = fs::metadata(upper.join("keep/f")).unwrap();
    assert_eq!(f.ino(), fs::metadata(upper.join("hl")).unwrap().ino());
}

#[test]
fn compressed_layers_and_diff_id() {
    let tar = TarBuilder::new().file("hello", b"world").finish();
    let want = sha(&tar);
    for (blob, mt) in [
        (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
        (gzip(&tar), "application/vnd.oci.image.layer.v1.tar+gzip"),
        (
            zstd::encode_all(&tar[..], 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        // media type says plain, bytes say gzip: the bytes win
        (gzip(&tar), "application/vnd.docker.image.rootfs.diff.tar"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let a = apply_layer(&blob[..], mt, d.path(), &Whiteouts::Direct, Some(&want)).unwrap();
        assert_eq!(a.diff_id, want);
        assert_eq!(a.size, tar.len() as u64);
        assert_eq!(fs::read(d.path().join("hello")).unwrap(), b"world");
    }
    let d = tempfile::tempdir().unwrap();
    let err = apply_layer(
        &tar[..],
        "",
        d.path(),
        &Whiteouts::Direct,
        Some("sha256:00"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("diff ID"), "{err}");
    assert!(apply_layer(
        &tar[..],
        "application/x-bzip2",
        d.path(),
        &Whiteouts::Direct,
        None
    )
    .is_err());
}

#[test]
fn truncated_gzip_fails() {
    let mut tb = TarBuilder::new();
    for i in 0..50 {
        tb = tb.file(&format!("f{i}"), &vec![i as u8; 10_000]);
    }
    let gz = gzip(&tb.finish());
    let d = tempfile::tempdir().unwrap();
    let cut = &gz[..gz.len() - 100];
    assert!(apply_layer(cut, "", d.path(), &Whiteouts::Direct, None).is_err());
    let cut = &gz[..gz.len() / 2];
    assert!(apply_layer(cut, "", d.path(), &Whiteouts::Direct, None).is_err());
}

#[test]
fn sparse_files_keep_their_holes_and_huge_ones_are_refused() {
    let (_t, root, outside) = sandbox();
    let real = 64 << 20;
    apply(
        &super::fixture::sparse_tar("s", real),
        &root,
        &Whiteouts::Direct,
    )
    .unwrap();
    let m = fs::metadata(root.join("s")).unwrap();
    assert_eq!(m.len(), real);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "holes were written: {} blocks",
        m.blocks()
    );
    let data = fs::read(root.join("s")).unwrap();
    assert!(data[..real as usize - 512].iter().all(|b| *b == 0));
    assert!(data[real as usize - 512..].iter().all(|b| *b == b'x'));
    // 1.5 KB declaring an exabyte: refused at once, nothing written
    let t0 = std::time::Instant::now();
    let e = apply(
        &super::fixture::sparse_tar("huge", 1 << 60),
        &root,
        &Whiteouts::Direct,
    )
    .unwrap_err();
    assert!(e.to_string().contains("sparse file"), "{e}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    assert_outside_untouched(&outside);
}

#[test]
fn chain_ids_follow_the_spec() {
    let d = [
        "sha256:aa".to_string(),
        "sha256:bb".to_string(),
        "sha256:cc".to_string(),
    ];
    let c = chain_ids(&d);
    assert_eq!(c[0], "sha256:aa");
    assert_eq!(c[1], sha(b"sha256:aa sha256:bb"));
    assert_eq!(c[2], sha(format!("{} sha256:cc", c[1]).as_bytes()));
    assert_eq!(chain_id(None, "sha256:aa"), c[0]);
}

/// Timing probe for the unpack benchmark: NOOK_BENCH_LAYER=/path/to/layer.tar.
#[test]
#[ignore]
fn bench_apply_phases() {
    let Some(p) = std::env::var_os("NOOK_BENCH_LAYER") else {
        return;
    };
    let t = std::time::Instant::now();
    let mut h = HashingReader::new(decompress(fs::File::open(&p).unwrap(), "").unwrap());
    std::io::copy(&mut h, &mut std::io::sink()).unwrap();
    eprintln!("hash only: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let mut a = tar::Archive::new(decompress(fs::File::open(&p).unwrap(), "").unwrap());
    let mut n = 0;
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        std::io::copy(&mut e, &mut std::io::sink()).unwrap();
        n += 1;
    }
    eprintln!("tar parse only ({n} entries): {:?}", t.elapsed());
    let d = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    apply_layer(
        fs::File::open(&p).unwrap(),
        "",
        d.path(),
        &Whiteouts::Direct,
        None,
    )
    .unwrap();
    eprintln!("full apply: {:?}", t.elapsed());
}
