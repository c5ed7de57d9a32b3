//! The bodies of the `cargo fuzz` targets (`fuzz/fuzz_targets/*.rs`), kept in the library so the
//! regression test (`tests/fuzz_regressions.rs`) runs every stored input through exactly the same
//! code without libFuzzer.
//!
//! Each function takes arbitrary bytes, feeds them to a parser of hostile input, and panics only
//! when an invariant breaks: a parser's own panic, a parsed value that does not survive a round
//! trip, or — for layer tars — anything created or changed outside the snapshot directory.
//! Errors (`Err`) are the expected outcome for most inputs and are returned, not panicked on.

#![doc(hidden)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::content::Digest;
use crate::diff::{self, Whiteouts};
use crate::image::manifest::{self, Parsed, Platform, PlatformSelector};
use crate::image::reference::Reference;

/// Image references, platforms and digests: parse, and when accepted, the normalized form and the
/// familiar form parse back to the same reference.
pub fn reference(data: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(data) else {
        return false;
    };
    let _ = Digest::parse(s);
    let _ = Platform::parse(s);
    let _ = crate::image::auth::normalize_host(s);
    let Ok(r) = Reference::parse(s) else {
        return false;
    };
    let full = r.to_string();
    let again = Reference::parse(&full)
        .unwrap_or_else(|e| panic!("{s:?} normalized to {full:?}, which does not parse: {e}"));
    assert_eq!(again, r, "{s:?} -> {full:?} does not round-trip");
    let familiar = r.familiar();
    let back = Reference::parse(&familiar)
        .unwrap_or_else(|e| panic!("{s:?}: familiar form {familiar:?} does not parse: {e}"));
    assert_eq!(
        back, r,
        "{s:?}: familiar form {familiar:?} is another image"
    );
    assert!(!r.domain().is_empty() && !r.repository().is_empty());
    let _ = r.object();
    true
}

/// The media types a manifest may be declared with (the first input byte picks one).
const DECLARED: &[&str] = &[
    "",
    manifest::OCI_MANIFEST,
    manifest::OCI_INDEX,
    manifest::DOCKER_MANIFEST,
    manifest::DOCKER_LIST,
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json; charset=utf-8",
];

/// Manifests and indexes (OCI, Docker v2, Docker list): parse, then everything nook does with a
/// parsed one — gc labels, platform selection, layer media types — and a serialize/parse round
/// trip. Returns whether the document was accepted.
pub fn manifest(data: &[u8]) -> bool {
    let Some((&first, body)) = data.split_first() else {
        return false;
    };
    let declared = DECLARED[first as usize % DECLARED.len()];
    let Ok(parsed) = manifest::parse(declared, body) else {
        return false;
    };
    let _ = crate::image::gc_labels_for(&parsed);
    match &parsed {
        Parsed::Index(idx) => {
            let _ = PlatformSelector::All.select(idx);
            for p in [
                "linux/amd64",
                "linux/arm64",
                "linux/arm/v6",
                "windows/amd64",
            ] {
                if let Ok(sel) = PlatformSelector::from_args(Some(p), false) {
                    if let Ok(picked) = sel.select(idx) {
                        assert_eq!(picked.len(), 1, "one platform picks one manifest");
                    }
                }
            }
            for d in &idx.manifests {
                if let Some(p) = &d.platform {
                    let _ = p.to_string();
                    let _ = Platform::host().matches(p);
                }
            }
            let json = serde_json::to_vec(idx).expect("an index serializes");
            let back: manifest::Index = serde_json::from_slice(&json).expect("an index reparses");
            assert_eq!(&back, idx, "index round trip");
        }
        Parsed::Manifest(m) => {
            for l in &m.layers {
                let _ = manifest::is_layer(&l.media_type);
                let _ = diff::compression_of_media_type(&l.media_type);
            }
            let json = serde_json::to_vec(m).expect("a manifest serializes");
            let back: manifest::Manifest =
                serde_json::from_slice(&json).expect("a manifest reparses");
            assert_eq!(&back, m, "manifest round trip");
        }
    }
    true
}

/// A rootfs with /etc/passwd and /etc/group for resolving an image config's `User`.
fn config_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let d = scratch_base().join("config-rootfs");
        fs::create_dir_all(d.join("etc")).expect("creating the fuzz rootfs");
        fs::write(
            d.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www:/var/www:/usr/sbin/nologin\n\
             alice:x:1000:1000::/home/alice:/bin/sh\nbroken:x:notanumber\n",
        )
        .expect("writing the fuzz passwd");
        fs::write(
            d.join("etc/group"),
            "root:x:0:\nstaff:x:50:alice,www-data\nalice:x:1000:\n",
        )
        .expect("writing the fuzz group");
        d
    })
}

/// Image configs: what nook reads from one — platform and rootfs diff ids (pull, import,
/// unpack), then the process part (entrypoint, cmd, env, working dir, user) turned into an OCI
/// runtime spec as `nook run` does. Returns whether the config was accepted.
pub fn config(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(cfg) = manifest::parse_config(data) {
        accepted = true;
        let p = cfg.platform();
        let _ = p.to_string();
        let _ = PlatformSelector::default().accepts(&p);
        let chains = crate::image::chain_ids(cfg.rootfs.diff_ids.iter());
        assert_eq!(chains.len(), cfg.rootfs.diff_ids.len());
    }
    // The runtime reads the same bytes with oci-spec (containers::prepare_rootfs).
    let Ok(oci) = serde_json::from_slice::<oci_spec::image::ImageConfiguration>(data) else {
        return accepted;
    };
    let Some(c) = oci.config().as_ref() else {
        return accepted;
    };
    let img = crate::runtime::spec::ImageConfig::from(c);
    let mut o = crate::runtime::spec::SpecOptions::new("fuzz", config_rootfs());
    o.seccomp = crate::runtime::spec::SeccompChoice::Unconfined;
    if let Ok(spec) = crate::runtime::spec::build_spec(&img, &o) {
        let process = spec.process().as_ref().expect("a built spec has a process");
        assert!(!process.args().as_ref().is_none_or(Vec::is_empty));
        assert!(process.cwd().is_absolute());
        serde_json::to_vec(&spec).expect("a built spec serializes");
    }
    true
}

/// `WWW-Authenticate` challenges from a registry.
pub fn www_authenticate(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let (scheme, params) = crate::image::registry::parse_challenge(&s);
    assert!(!scheme.contains(' ') || s.trim().is_empty() || scheme.trim() == scheme);
    for k in params.keys() {
        assert_eq!(k, &k.to_ascii_lowercase());
    }
}

/// `nook image import` of a docker-archive or OCI-layout tar (index.json, manifest.json, links,
/// nested indexes) into one content and metadata store per process, then resolving every
/// imported image as `nook run` would. Returns how many images were imported.
pub fn archive(data: &[u8]) -> usize {
    use crate::content::ContentStore;
    use crate::metadata::Store;
    static STORES: OnceLock<(std::sync::Arc<ContentStore>, Store)> = OnceLock::new();
    let (cs, meta) = STORES.get_or_init(|| {
        let d = scratch_base().join(format!("archive-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("creating the fuzz store");
        (
            ContentStore::open(&d.join("content"), crate::events::Publisher::discard())
                .expect("opening the fuzz content store"),
            Store::open(&d.join("meta.redb")).expect("opening the fuzz metadata store"),
        )
    });
    let opts = crate::image::archive::ImportOptions::default();
    let Ok(images) = crate::image::archive::import(
        cs,
        meta,
        &crate::events::Publisher::discard(),
        "default",
        data,
        &opts,
    ) else {
        return 0;
    };
    for img in &images {
        assert!(
            Reference::parse(&img.name).is_ok(),
            "imported image has an invalid name {:?}",
            img.name
        );
        let _ = crate::image::resolve(cs, meta, "default", &img.target, &PlatformSelector::All);
    }
    images.len()
}

// ---------------------------------------------------------------------------------------------
// Layer tars

/// Where scratch directories go: `$NOOK_FUZZ_DIR`, else a per-process directory in the temp dir.
fn scratch_base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let b = match std::env::var_os("NOOK_FUZZ_DIR") {
            Some(d) => PathBuf::from(d),
            None => std::env::temp_dir().join(format!("nook-fuzz-{}", std::process::id())),
        };
        fs::create_dir_all(&b).expect("creating the fuzz scratch directory");
        b
    })
}

/// What applying one input did, in each whiteout mode.
#[derive(Debug)]
pub struct LayerOutcome {
    /// Applied onto a full copy of a lower layer (native snapshotter).
    pub direct: Result<(), String>,
    /// Applied as an overlay upper dir over that lower layer.
    pub overlay: Result<(), String>,
}

/// The state of one path that must not change.
#[derive(Debug, PartialEq)]
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    mtime: i64,
    size: u64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
}

/// Every path under a directory with its [`Stat`].
#[derive(Debug, PartialEq)]
struct Fingerprint {
    entries: BTreeMap<PathBuf, Stat>,
}

fn fingerprint(dir: &Path) -> Fingerprint {
    fn walk(base: &Path, rel: &Path, out: &mut Fingerprint) {
        let p = base.join(rel);
        let Ok(m) = fs::symlink_metadata(&p) else {
            return;
        };
        let content = m.is_file().then(|| fs::read(&p).unwrap_or_default());
        let link = m
            .file_type()
            .is_symlink()
            .then(|| fs::read_link(&p).unwrap_or_default());
        out.entries.insert(
            rel.to_path_buf(),
            Stat {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                nlink: m.nlink(),
                mtime: m.mtime(),
                size: if m.is_dir() { 0 } else { m.size() },
                content,
                link,
            },
        );
        if m.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&p)
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            names.sort();
            for n in names {
                walk(base, &rel.join(n), out);
            }
        }
    }
    let mut f = Fingerprint {
        entries: BTreeMap::new(),
    };
    walk(dir, Path::new(""), &mut f);
    f
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The lower layer both modes start from. Its symlinks lead inside (`lib`), out through `..`
/// (`up`, `out`) and to an absolute path outside (`abs`, into the watched `abs-target`).
fn populate_lower(dir: &Path, abs_target: &Path) {
    use std::os::unix::fs::symlink;
    let mk = |p: &str| fs::create_dir_all(dir.join(p)).expect("fuzz lower dir");
    mk("etc");
    mk("usr/lib");
    mk("usr/bin");
    mk("var/empty");
    fs::write(dir.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").expect("fuzz lower file");
    fs::write(dir.join("usr/lib/libc.so"), "lib").expect("fuzz lower file");
    fs::write(dir.join("usr/bin/sh"), "#!sh").expect("fuzz lower file");
    symlink("usr/lib", dir.join("lib")).expect("fuzz lower symlink");
    symlink("..", dir.join("up")).expect("fuzz lower symlink");
    symlink("../outside", dir.join("out")).expect("fuzz lower symlink");
    symlink("../../../../..", dir.join("usr/lib/deep")).expect("fuzz lower symlink");
    symlink(abs_target, dir.join("abs")).expect("fuzz lower symlink");
    symlink("/", dir.join("slash")).expect("fuzz lower symlink");
}

fn populate_outside(dir: &Path) {
    fs::create_dir_all(dir.join("sub")).expect("fuzz outside dir");
    fs::write(dir.join("sentinel"), "must not change").expect("fuzz sentinel");
    fs::write(dir.join("sub/sentinel"), "must not change either").expect("fuzz sentinel");
}

/// Removes a tree the applier may have made unreadable (mode 000 directories).
fn remove_tree(p: &Path) {
    if fs::remove_dir_all(p).is_ok() || !p.exists() {
        return;
    }
    fn open_up(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                if let Ok(rd) = fs::read_dir(p) {
                    for e in rd.flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
    }
    open_up(p);
    fs::remove_dir_all(p)
        .unwrap_or_else(|e| panic!("the applier left {} undeletable: {e}", p.display()));
}

static BOXES: AtomicU64 = AtomicU64::new(0);

/// Applies `data` as a layer (plain tar, or gzip/zstd as the applier detects from the magic
/// bytes), once onto a full directory and once as an overlay upper dir over a lower layer, in
/// fresh directories under `base`. Panics if anything outside the target directory was created
/// or changed: the watched `outside` sibling, the lower layer, the directory above, or the
/// directory an absolute symlink in the lower layer names.
pub fn layer_tar_in(base: &Path, data: &[u8]) -> LayerOutcome {
    let n = BOXES.fetch_add(1, Ordering::Relaxed);
    let bx = base.join(format!("box-{}-{n}", std::process::id()));
    let abs_target = bx.join("abs-target");
    let work = bx.join("a/b");
    let outside = work.join("outside");
    let lower = work.join("lower");
    let root = work.join("root");
    let upper = work.join("upper");
    for d in [&abs_target, &outside, &lower, &root, &upper] {
        fs::create_dir_all(d).expect("creating a fuzz directory");
    }
    populate_outside(&outside);
    populate_outside(&abs_target);
    populate_lower(&lower, &abs_target);
    populate_lower(&root, &abs_target);

    let watched = [&abs_target, &outside, &lower];
    let before: Vec<Fingerprint> = watched.iter().map(|d| fingerprint(d)).collect();
    let bx_names = names(&bx);
    let a_names = names(&bx.join("a"));
    let work_names = names(&work);

    let direct = diff::apply_layer(data, "", &root, &Whiteouts::Direct, None)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let overlay = diff::apply_layer(
        data,
        "",
        &upper,
        &Whiteouts::Overlay {
            lowers: vec![lower.clone()],
            xattr_prefix: "user".into(),
        },
        None,
    )
    .map(|_| ())
    .map_err(|e| e.to_string());

    let outcome = LayerOutcome { direct, overlay };
    assert_eq!(names(&bx), bx_names, "escape: {outcome:?}");
    assert_eq!(names(&bx.join("a")), a_names, "escape: {outcome:?}");
    assert_eq!(names(&work), work_names, "escape: {outcome:?}");
    for (d, b) in watched.iter().zip(&before) {
        let after = fingerprint(d);
        assert!(
            &after == b,
            "escape: {} changed while applying a layer ({outcome:?}):\nbefore {b:?}\nafter {after:?}",
            d.display()
        );
    }
    remove_tree(&bx);
    outcome
}

/// [`layer_tar_in`] in the process's scratch directory (`$NOOK_FUZZ_DIR` or the temp dir).
pub fn layer_tar(data: &[u8]) -> LayerOutcome {
    layer_tar_in(scratch_base(), data)
}
