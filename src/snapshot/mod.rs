//! Snapshots: containerd's model of filesystem layers.
//!
//! A snapshot is *committed* (read-only, maybe with a parent), *active* (writable, from
//! [`Snapshotter::prepare`]) or a *view* (read-only, from [`Snapshotter::view`]). Keys are per
//! namespace. Three implementations share one on-disk layout and record format
//! ([`DirSnapshotter`]) and differ in how a snapshot is mounted and prepared:
//!
//! * `overlayfs` — kernel overlay with `userxattr` (works inside nookd's user namespace);
//! * `fuse-overlayfs` — the fuse-overlayfs binary with the same directories;
//! * `native` — a full copy of the parent on prepare, mounted with a bind mount.
//!
//! Layout: `<root>/snapshots/<snapshotter>/<id>/fs` (and `work` for the overlays); records in
//! the metadata bucket SNAPSHOTS at `<ns>/<snapshotter>/<key>`. Every change is one metadata
//! transaction that also renames the directory into (or out of) place, so a SIGKILL never
//! leaves a half-made snapshot visible; [`Snapshotter::cleanup`] removes directories no record
//! references.

pub mod changes;
pub mod copy;
pub mod mount;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use mount::{mount_all, unmount, Mount};

use crate::error::{Error, IoContext, Result};
use crate::events::Publisher;
use crate::metadata::{Store, SNAPSHOTS, SYSTEM};

/// The snapshotters nook knows, in the order the default is chosen.
pub const SNAPSHOTTERS: &[&str] = &["overlayfs", "fuse-overlayfs", "native"];

/// Kind of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Active,
    View,
    Committed,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        })
    }
}

/// Disk usage of one snapshot's own layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Allocated bytes.
    pub size: u64,
    pub inodes: u64,
}

/// A snapshot as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub name: String,
    pub parent: Option<String>,
    pub kind: Kind,
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The stored record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub kind: Kind,
    pub parent: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Measured at commit.
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl Record {
    fn info(&self, name: &str) -> Info {
        Info {
            name: name.to_string(),
            parent: self.parent.clone(),
            kind: self.kind,
            labels: self.labels.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// How whiteouts and opaque directories are written.
#[derive(Debug, Clone)]
pub enum Whiteouts {
    /// Overlay upper dir: char 0/0 whiteouts, `<xattr_prefix>.overlay.opaque` on opaque dirs.
    /// `lowers` are the parent layers, nearest first (used to resolve parent directories and
    /// to copy up hard-link targets that live in a lower layer).
    Overlay {
        lowers: Vec<PathBuf>,
        /// `user` (userxattr, rootless) or `trusted` (privileged overlay).
        xattr_prefix: String,
    },
    /// Full directory: whiteouts remove.
    Direct,
}

/// containerd's Snapshotter interface, namespaced.
pub trait Snapshotter: Send + Sync {
    /// The snapshotter's name (`overlayfs`, `fuse-overlayfs`, `native`).
    fn name(&self) -> &str;
    fn stat(&self, ns: &str, key: &str) -> Result<Info>;
    /// Replaces the labels.
    fn update(&self, ns: &str, key: &str, labels: BTreeMap<String, String>) -> Result<Info>;
    fn usage(&self, ns: &str, key: &str) -> Result<Usage>;
    /// How to mount an active snapshot or a view.
    fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>>;
    /// Creates an active (writable) snapshot on top of the committed `parent`.
    fn prepare(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>>;
    /// Creates a read-only view of the committed `parent`.
    fn view(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>>;
    /// Turns the active snapshot `key` into the committed snapshot `name`.
    fn commit(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()>;
    /// Removes a snapshot; refused while it has children.
    fn remove(&self, ns: &str, key: &str) -> Result<()>;
    /// Every snapshot of a namespace.
    fn walk(&self, ns: &str) -> Result<Vec<Info>>;
    /// Where a layer is applied to the active snapshot `key`, without mounting it, and how
    /// whiteouts are written there.
    fn apply_target(&self, ns: &str, key: &str) -> Result<(PathBuf, Whiteouts)>;
    /// Removes directories that no record references (run at start, before serving).
    fn cleanup(&self) -> Result<usize>;
}

/// Which mount mechanism a [`DirSnapshotter`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Overlay,
    FuseOverlay,
    Native,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlayfs",
            Driver::FuseOverlay => "fuse-overlayfs",
            Driver::Native => "native",
        }
    }

    pub fn from_name(name: &str) -> Option<Driver> {
        match name {
            "overlayfs" | "overlay" => Some(Driver::Overlay),
            "fuse-overlayfs" => Some(Driver::FuseOverlay),
            "native" => Some(Driver::Native),
            _ => None,
        }
    }
}

/// The directory-backed snapshotter (all three kinds).
pub struct DirSnapshotter {
    driver: Driver,
    root: PathBuf,
    store: Arc<Store>,
    /// overlay xattr namespace for opaque dirs: `user` (userxattr) or `trusted`.
    xattr_prefix: String,
    /// Where `/snapshot/*` events go.
    events: Publisher,
}

/// Checks a snapshot key or name.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 1024 || key.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidArgument(format!(
            "invalid snapshot key {key:?}: use 1 to 1024 printable characters"
        )));
    }
    Ok(())
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

impl DirSnapshotter {
    /// A snapshotter storing under `<nook root>/snapshots/<name>/`.
    pub fn new(driver: Driver, nook_root: &Path, store: Arc<Store>) -> Result<DirSnapshotter> {
        let root = nook_root.join("snapshots").join(driver.name());
        fs::create_dir_all(&root).ctx(|| format!("creating {}", root.display()))?;
        Ok(DirSnapshotter {
            driver,
            root,
            store,
            xattr_prefix: "user".into(),
            events: Publisher::discard(),
        })
    }

    /// Publishes its events (prepare, view, commit, remove) through `events`.
    pub fn with_events(mut self, events: Publisher) -> Self {
        self.events = events;
        self
    }

    /// Uses `trusted.overlay.*` xattrs (privileged overlay without `userxattr`).
    pub fn with_trusted_xattrs(mut self) -> Self {
        self.xattr_prefix = "trusted".into();
        self
    }

    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// `<root>/snapshots/<name>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Publishes a `/snapshot/prepare` or `/snapshot/view` event.
    fn publish(&self, ns: &str, topic: &str, key: &str, parent: Option<&str>) {
        let mut a = vec![("key", key.to_string())];
        if let Some(p) = parent {
            a.push(("parent", p.to_string()));
        }
        a.push(("snapshotter", self.driver.name().to_string()));
        self.events.publish(ns, topic, &a);
    }

    fn rkey(&self, key: &str) -> String {
        format!("{}/{}", self.driver.name(), key)
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn get(&self, ns: &str, key: &str) -> Result<Record> {
        validate_key(key)?;
        self.store
            .get::<Record>(SNAPSHOTS, ns, &self.rkey(key))?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "snapshot {key:?} does not exist in namespace {ns:?} ({} snapshotter)",
                    self.driver.name()
                ))
            })
    }

    /// Records of the namespace for this snapshotter.
    fn records(&self, ns: &str) -> Result<Vec<(String, Record)>> {
        let prefix = format!("{}/", self.driver.name());
        Ok(self
            .store
            .list::<Record>(SNAPSHOTS, ns)?
            .into_iter()
            .filter_map(|(k, r)| k.strip_prefix(&prefix).map(|k| (k.to_string(), r)))
            .collect())
    }

    /// fs dirs of `parent` and its ancestors, nearest first.
    fn chain(&self, ns: &str, parent: Option<&str>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut cur = parent.map(str::to_string);
        while let Some(k) = cur {
            let r = self.get(ns, &k)?;
            out.push(self.fs_dir(r.id));
            cur = r.parent;
            if out.len() > 500 {
                return Err(Error::Internal(format!(
                    "snapshot chain of {k:?} is too long or cyclic"
                )));
            }
        }
        Ok(out)
    }

    fn create(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        validate_key(key)?;
        if let Some(p) = parent {
            let pr = self.get(ns, p)?;
            if pr.kind != Kind::Committed {
                return Err(Error::InvalidArgument(format!(
                    "parent snapshot {p:?} is {}, not committed: commit it first",
                    pr.kind
                )));
            }
        }
        if self
            .store
            .get::<Record>(SNAPSHOTS, ns, &self.rkey(key))?
            .is_some()
        {
            return Err(Error::AlreadyExists(format!(
                "snapshot {key:?} already exists in namespace {ns:?}"
            )));
        }
        let tmp = tempdir_in(&self.root, "tmp-")?;
        let made = (|| -> Result<()> {
            fs::create_dir(tmp.join("fs")).ctx(|| format!("creating {}", tmp.display()))?;
            if self.driver != Driver::Native {
                fs::create_dir(tmp.join("work")).ctx(|| format!("creating {}", tmp.display()))?;
            }
            if self.driver == Driver::Native {
                if let Some(p) = parent {
                    let src = self.fs_dir(self.get(ns, p)?.id);
                    copy::copy_tree(&src, &tmp.join("fs"))?;
                }
            }
            let t = now();
            let rkey = self.rkey(key);
            let idkey = format!("snapshots/{}/next-id", self.driver.name());
            self.store.write(|tx| {
                if let Some(p) = parent {
                    if tx.get::<Record>(SNAPSHOTS, ns, &self.rkey(p))?.is_none() {
                        return Err(Error::NotFound(format!(
                            "parent snapshot {p:?} was removed"
                        )));
                    }
                }
                let id: u64 = tx.get_raw::<u64>(SYSTEM, &idkey)?.unwrap_or(1);
                tx.put_raw(SYSTEM, &idkey, &(id + 1))?;
                tx.create(
                    SNAPSHOTS,
                    ns,
                    &rkey,
                    "snapshot",
                    &Record {
                        id,
                        kind,
                        parent: parent.map(str::to_string),
                        labels,
                        created_at: t,
                        updated_at: t,
                        usage: None,
                    },
                )?;
                let dst = self.dir(id);
                if dst.exists() {
                    // A leftover of a crash: no record references it.
                    fs::remove_dir_all(&dst).ctx(|| format!("removing {}", dst.display()))?;
                }
                fs::rename(&tmp, &dst).ctx(|| format!("moving {} into place", dst.display()))?;
                Ok(())
            })
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        self.mounts(ns, key)
    }

    fn bind(&self, dir: &Path, ro: bool) -> Mount {
        Mount {
            kind: "bind".into(),
            source: dir.display().to_string(),
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        }
    }
}

/// Creates a fresh directory `<parent>/<prefix><random>`.
fn tempdir_in(parent: &Path, prefix: &str) -> Result<PathBuf> {
    for _ in 0..16 {
        let p = parent.join(format!("{prefix}{:016x}", rand::random::<u64>()));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("creating {}", p.display()), e)),
        }
    }
    Err(Error::Internal(format!(
        "cannot create a temporary directory in {}",
        parent.display()
    )))
}

impl Snapshotter for DirSnapshotter {
    fn name(&self) -> &str {
        self.driver.name()
    }

    fn stat(&self, ns: &str, key: &str) -> Result<Info> {
        Ok(self.get(ns, key)?.info(key))
    }

    fn update(&self, ns: &str, key: &str, labels: BTreeMap<String, String>) -> Result<Info> {
        validate_key(key)?;
        let rkey = self.rkey(key);
        self.store.write(|tx| {
            let mut r: Record = tx.get(SNAPSHOTS, ns, &rkey)?.ok_or_else(|| {
                Error::NotFound(format!(
                    "snapshot {key:?} does not exist in namespace {ns:?}"
                ))
            })?;
            r.labels = labels;
            r.updated_at = now();
            tx.put(SNAPSHOTS, ns, &rkey, &r)?;
            Ok(r.info(key))
        })
    }

    fn usage(&self, ns: &str, key: &str) -> Result<Usage> {
        let r = self.get(ns, key)?;
        match (r.kind, r.usage) {
            (Kind::Committed, Some(u)) => Ok(u),
            _ => copy::disk_usage(&self.fs_dir(r.id)),
        }
    }

    fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>> {
        let r = self.get(ns, key)?;
        let fsd = self.fs_dir(r.id);
        let ro = r.kind != Kind::Active;
        if self.driver == Driver::Native {
            return Ok(vec![self.bind(&fsd, ro)]);
        }
        let lowers = self.chain(ns, r.parent.as_deref())?;
        let lowerdir = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let (kind, source) = match self.driver {
            Driver::Overlay => ("overlay", "overlay"),
            _ => ("fuse3.fuse-overlayfs", "fuse-overlayfs"),
        };
        let mut options = Vec::new();
        match (r.kind, lowers.len()) {
            (_, 0) => return Ok(vec![self.bind(&fsd, ro)]),
            (Kind::Active, _) => {
                options.push(format!("lowerdir={lowerdir}"));
                options.push(format!("upperdir={}", fsd.display()));
                options.push(format!("workdir={}", self.dir(r.id).join("work").display()));
            }
            (_, 1) => return Ok(vec![self.bind(&lowers[0], true)]),
            _ => {
                options.push("ro".into());
                options.push(format!("lowerdir={lowerdir}"));
            }
        }
        if self.driver == Driver::Overlay && self.xattr_prefix == "user" {
            options.push("userxattr".into());
        }
        Ok(vec![Mount {
            kind: kind.into(),
            source: source.into(),
            options,
        }])
    }

    fn prepare(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let m = self.create(ns, key, parent, Kind::Active, labels)?;
        self.publish(ns, "/snapshot/prepare", key, parent);
        Ok(m)
    }

    fn view(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let m = self.create(ns, key, parent, Kind::View, labels)?;
        self.publish(ns, "/snapshot/view", key, parent);
        Ok(m)
    }

    fn commit(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        validate_key(name)?;
        let r = self.get(ns, key)?;
        if r.kind != Kind::Active {
            return Err(Error::InvalidArgument(format!(
                "snapshot {key:?} is {}: only active snapshots can be committed",
                r.kind
            )));
        }
        let usage = copy::disk_usage(&self.fs_dir(r.id))?;
        let (rkey, rname) = (self.rkey(key), self.rkey(name));
        self.store.write(|tx| {
            let cur: Record = tx
                .get(SNAPSHOTS, ns, &rkey)?
                .ok_or_else(|| Error::NotFound(format!("snapshot {key:?} was removed")))?;
            if cur.id != r.id || cur.kind != Kind::Active {
                return Err(Error::Precondition(format!(
                    "snapshot {key:?} changed while committing; retry"
                )));
            }
            let t = now();
            tx.create(
                SNAPSHOTS,
                ns,
                &rname,
                "snapshot",
                &Record {
                    id: cur.id,
                    kind: Kind::Committed,
                    parent: cur.parent.clone(),
                    labels,
                    created_at: t,
                    updated_at: t,
                    usage: Some(usage),
                },
            )?;
            tx.delete(SNAPSHOTS, ns, &rkey)?;
            Ok(())
        })?;
        // The overlay work dir is only needed while active.
        let work = self.dir(r.id).join("work");
        if work.exists() {
            let _ = fs::remove_dir_all(&work);
            let _ = fs::create_dir(&work);
        }
        self.events.publish(
            ns,
            "/snapshot/commit",
            &[
                ("key", name.to_string()),
                ("active", key.to_string()),
                ("snapshotter", self.driver.name().to_string()),
            ],
        );
        Ok(())
    }

    fn remove(&self, ns: &str, key: &str) -> Result<()> {
        validate_key(key)?;
        let rkey = self.rkey(key);
        let prefix = format!("{}/", self.driver.name());
        let trash = self.store.write(|tx| {
            let r: Record = tx.get(SNAPSHOTS, ns, &rkey)?.ok_or_else(|| {
                Error::NotFound(format!(
                    "snapshot {key:?} does not exist in namespace {ns:?} ({} snapshotter)",
                    self.driver.name()
                ))
            })?;
            for (k, c) in tx.list::<Record>(SNAPSHOTS, ns)? {
                if let Some(child) = k.strip_prefix(&prefix) {
                    if c.parent.as_deref() == Some(key) {
                        return Err(Error::Precondition(format!(
                            "snapshot {key:?} has a child snapshot {child:?}: remove the child first"
                        )));
                    }
                }
            }
            tx.delete(SNAPSHOTS, ns, &rkey)?;
            Ok(r.id)
        })?;
        // The record is gone (committed) before the directory goes: a crash in between leaves
        // an unreferenced directory, which cleanup() removes at the next start, never a record
        // without its directory.
        let dir = self.dir(trash);
        let trash = self.root.join(format!("rm-{trash}"));
        if dir.exists() {
            fs::rename(&dir, &trash).ctx(|| format!("moving {} away", dir.display()))?;
        }
        self.events.publish(
            ns,
            "/snapshot/remove",
            &[
                ("key", key.to_string()),
                ("snapshotter", self.driver.name().to_string()),
            ],
        );
        if trash.exists() {
            fs::remove_dir_all(&trash).ctx(|| format!("removing {}", trash.display()))?;
        }
        Ok(())
    }

    fn walk(&self, ns: &str) -> Result<Vec<Info>> {
        Ok(self
            .records(ns)?
            .into_iter()
            .map(|(k, r)| r.info(&k))
            .collect())
    }

    fn apply_target(&self, ns: &str, key: &str) -> Result<(PathBuf, Whiteouts)> {
        let r = self.get(ns, key)?;
        if r.kind != Kind::Active {
            return Err(Error::InvalidArgument(format!(
                "snapshot {key:?} is {}: layers are applied to active snapshots",
                r.kind
            )));
        }
        let w = match self.driver {
            Driver::Native => Whiteouts::Direct,
            _ => Whiteouts::Overlay {
                lowers: self.chain(ns, r.parent.as_deref())?,
                xattr_prefix: self.xattr_prefix.clone(),
            },
        };
        Ok((self.fs_dir(r.id), w))
    }

    fn cleanup(&self) -> Result<usize> {
        let prefix = format!("/{}/", self.driver.name());
        let mut used = HashSet::new();
        for (k, r) in self.store.list_all::<Record>(SNAPSHOTS)? {
            // keys are <ns>/<snapshotter>/<key>
            if let Some(i) = k.find('/') {
                if k[i..].starts_with(&prefix) {
                    used.insert(r.id.to_string());
                }
            }
        }
        let mut removed = 0;
        for e in fs::read_dir(&self.root).ctx(|| format!("reading {}", self.root.display()))? {
            let e = e.ctx(|| format!("reading {}", self.root.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if used.contains(&name) || name == ".probe-ok" {
                continue;
            }
            let p = e.path();
            tracing::info!(path = %p.display(), "removing unreferenced snapshot directory");
            if p.is_dir() {
                fs::remove_dir_all(&p).ctx(|| format!("removing {}", p.display()))?;
            } else {
                fs::remove_file(&p).ctx(|| format!("removing {}", p.display()))?;
            }
            removed += 1;
        }
        Ok(removed)
    }
}

/// Whether a snapshotter can work here, and why not.
pub fn probe(driver: Driver, nook_root: &Path) -> std::result::Result<(), String> {
    match driver {
        Driver::Native => Ok(()),
        Driver::FuseOverlay => {
            if find_in_path("fuse-overlayfs").is_none() {
                return Err(
                    "the fuse-overlayfs binary is not in PATH (install the fuse-overlayfs package)"
                        .into(),
                );
            }
            if let Err(e) = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/fuse")
            {
                return Err(format!(
                    "/dev/fuse cannot be opened ({e}): load the fuse module and make /dev/fuse mode 0666"
                ));
            }
            Ok(())
        }
        Driver::Overlay => probe_overlay(nook_root),
    }
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// A trial overlay mount (`userxattr`, two lowers, a whiteout) in a temp dir under the root.
fn probe_overlay(nook_root: &Path) -> std::result::Result<(), String> {
    let base = nook_root.join("snapshots").join("overlayfs");
    fs::create_dir_all(&base).map_err(|e| format!("creating {}: {e}", base.display()))?;
    // A trial mount costs a few hundred milliseconds of start-up; its success is remembered
    // per kernel release, so later starts on the same kernel skip it.
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().to_string())
        .unwrap_or_default();
    let stamp = base.join(".probe-ok");
    if !kernel.is_empty() && fs::read_to_string(&stamp).is_ok_and(|k| k == kernel) {
        return Ok(());
    }
    let r = probe_overlay_mount(&base);
    if r.is_ok() && !kernel.is_empty() {
        let _ = fs::write(&stamp, &kernel);
    }
    r
}

fn probe_overlay_mount(base: &Path) -> std::result::Result<(), String> {
    let dir = tempdir_in(base, "probe-").map_err(|e| e.to_string())?;
    let r = (|| -> std::result::Result<(), String> {
        for d in ["l1", "l2", "upper", "work", "merged"] {
            fs::create_dir(dir.join(d)).map_err(|e| e.to_string())?;
        }
        fs::write(dir.join("l2/gone"), b"x").map_err(|e| e.to_string())?;
        nix::sys::stat::mknod(
            &dir.join("upper/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .map_err(|e| format!("cannot create an overlay whiteout (char device 0/0): {e}"))?;
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!(
                    "lowerdir={}:{}",
                    dir.join("l1").display(),
                    dir.join("l2").display()
                ),
                format!("upperdir={}", dir.join("upper").display()),
                format!("workdir={}", dir.join("work").display()),
                "userxattr".into(),
            ],
        };
        let target = dir.join("merged");
        mount_all(&[m], &target).map_err(|e| {
            format!("trial overlay mount failed ({e}); kernel overlay with userxattr needs Linux >= 5.11 and a filesystem that allows it")
        })?;
        let hidden = !target.join("gone").exists();
        unmount(&target).map_err(|e| e.to_string())?;
        if !hidden {
            return Err("trial overlay mount did not honour a whiteout".into());
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&dir);
    r
}

/// Status of one snapshotter plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub name: String,
    /// None when usable; the reason otherwise.
    pub error: Option<String>,
}

/// The snapshotters of a daemon, probed, with the default chosen.
pub struct Snapshotters {
    map: BTreeMap<String, Arc<DirSnapshotter>>,
    status: Vec<PluginStatus>,
    default: String,
}

impl Snapshotters {
    /// Probes every snapshotter. `configured` is `auto` or a snapshotter name; a configured
    /// snapshotter that does not work here is an error saying why. Each publishes its events
    /// through `events`.
    pub fn new(
        nook_root: &Path,
        store: Arc<Store>,
        configured: &str,
        events: Publisher,
    ) -> Result<Snapshotters> {
        let mut map = BTreeMap::new();
        let mut status = Vec::new();
        for name in SNAPSHOTTERS {
            let driver =
                Driver::from_name(name).ok_or_else(|| Error::Internal(name.to_string()))?;
            let error = probe(driver, nook_root).err();
            if let Some(e) = &error {
                tracing::info!(snapshotter = name, reason = %e, "snapshotter skipped");
            } else {
                let s = DirSnapshotter::new(driver, nook_root, store.clone())?
                    .with_events(events.clone());
                if let Err(e) = s.cleanup() {
                    tracing::warn!(snapshotter = name, error = %e, "snapshot cleanup failed");
                }
                map.insert(name.to_string(), Arc::new(s));
            }
            status.push(PluginStatus {
                name: name.to_string(),
                error,
            });
        }
        let default = if configured.is_empty() || configured == "auto" {
            SNAPSHOTTERS
                .iter()
                .find(|n| map.contains_key(**n))
                .map(|s| s.to_string())
                .unwrap_or_else(|| "native".into())
        } else {
            let d = Driver::from_name(configured).ok_or_else(|| {
                Error::Config(format!(
                    "unknown snapshotter {configured:?}: use auto, overlayfs, fuse-overlayfs or native"
                ))
            })?;
            d.name().to_string()
        };
        Ok(Snapshotters {
            map,
            status,
            default,
        })
    }

    /// The snapshotter named `name` (the default when None or empty).
    pub fn get(&self, name: Option<&str>) -> Result<Arc<DirSnapshotter>> {
        let n = match name {
            Some(n) if !n.is_empty() => {
                Driver::from_name(n).map(|d| d.name()).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "unknown snapshotter {n:?}: use overlayfs, fuse-overlayfs or native"
                    ))
                })?
            }
            _ => self.default.as_str(),
        };
        if let Some(s) = self.map.get(n) {
            return Ok(s.clone());
        }
        let why = self
            .status
            .iter()
            .find(|s| s.name == n)
            .and_then(|s| s.error.clone())
            .unwrap_or_default();
        Err(Error::Unavailable(format!(
            "snapshotter {n:?} is not usable here: {why}"
        )))
    }

    /// The default snapshotter's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Every snapshotter with its status, for `nook plugins ls`.
    pub fn status(&self) -> &[PluginStatus] {
        &self.status
    }
}

#[cfg(test)]
mod tests;
