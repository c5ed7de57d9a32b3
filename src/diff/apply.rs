//! Applying one layer (a tar stream) to a directory, safely.
//!
//! Every entry's path is resolved inside the target root without ever following a symlink out of
//! it: `..` that climbs above the root, absolute or escaping symlinked parents, and hard links
//! whose target leaves the root make the whole layer fail with an error naming the entry, before
//! anything is written outside. Parent symlinks that stay inside the root (`lib -> usr/lib`) are
//! followed, as a rootfs would.
//!
//! Two whiteout representations:
//! * [`Whiteouts::Overlay`]: the target is an (empty) overlay upper dir over `lowers`; a whiteout
//!   becomes a character device 0/0 (allowed without CAP_MKNOD since Linux 5.8, also inside a
//!   user namespace) and an opaque directory gets the `<prefix>.overlay.opaque=y` xattr — the
//!   format both the kernel overlay (with `userxattr`: `user.`) and fuse-overlayfs read.
//! * [`Whiteouts::Direct`]: the target is a full copy of the lower layers (native snapshotter);
//!   whiteouts delete, opaque directories lose every child the layer did not write itself.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::error::{Error, IoContext, Result};
use crate::fsmeta::{get_xattr, lchown, set_mtime, set_xattr};

pub use crate::snapshot::Whiteouts;

/// What an apply did.
#[derive(Debug, Clone, Default)]
pub struct ApplyStats {
    /// Tar entries read.
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub file_bytes: u64,
    /// Entries skipped with a warning (device nodes).
    pub skipped: u64,
}

const WH_PREFIX: &str = ".wh.";
const WH_OPAQUE: &str = ".wh..wh..opq";
const MAX_LINK_HOPS: u32 = 40;
/// The most hole bytes a sparse tar entry may expand to (holes stay holes on disk, but reading
/// them still costs time).
const MAX_SPARSE_HOLES: u64 = 16 << 30;
const SPARSE_CHUNK: usize = 1 << 20;
static ZEROS: [u8; SPARSE_CHUNK] = [0; SPARSE_CHUNK];

/// Copies a sparse entry, leaving holes where its content is zeros (as GNU tar extracts it), so
/// a small layer cannot fill the disk with a huge declared size.
fn copy_sparse(mut from: impl Read, to: &mut fs::File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let mut buf = vec![0u8; SPARSE_CHUNK];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf[..n] == ZEROS[..n] {
            to.seek(SeekFrom::Current(n as i64))?;
        } else {
            to.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    to.set_len(total)?;
    Ok(total)
}

/// Applies a tar stream to `root`. On error the directory may hold part of the layer; the caller
/// discards it (removes the active snapshot).
pub fn apply_tar<R: Read>(reader: R, root: &Path, whiteouts: &Whiteouts) -> Result<ApplyStats> {
    let mut archive = tar::Archive::new(reader);
    let mut ap = Applier {
        root: root.to_path_buf(),
        whiteouts,
        written: HashSet::new(),
        known_dirs: HashSet::new(),
        dir_times: Vec::new(),
        stats: ApplyStats::default(),
    };
    let entries = archive
        .entries()
        .map_err(|e| Error::InvalidArgument(format!("reading layer: {e}")))?;
    for entry in entries {
        let mut entry = entry
            .map_err(|e| Error::InvalidArgument(format!("layer is corrupt or truncated: {e}")))?;
        ap.stats.entries += 1;
        ap.entry(&mut entry)?;
    }
    // Directory mtimes last: writing children changed them.
    for (rel, mtime) in std::mem::take(&mut ap.dir_times).into_iter().rev() {
        let p = ap.root.join(&rel);
        set_mtime(&p, mtime).ctx(|| format!("setting mtime of {}", p.display()))?;
    }
    Ok(ap.stats)
}

/// Cleans an entry path lexically: absolute paths become relative, `.` vanishes, `..` pops;
/// `None` when `..` climbs above the root.
pub fn clean_path(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

/// Where an entry path leads.
enum Resolved {
    /// The root directory itself (`./`).
    Root,
    /// A parent directory does not exist (and was not to be created).
    Missing,
    /// (resolved parent directory, file name), relative to the root.
    At(PathBuf, PathBuf),
}

struct Applier<'a> {
    root: PathBuf,
    whiteouts: &'a Whiteouts,
    /// Paths (resolved, relative) this layer wrote: kept by an opaque marker in Direct mode.
    written: HashSet<PathBuf>,
    /// Resolved relative paths known to be real directories in the target.
    known_dirs: HashSet<PathBuf>,
    dir_times: Vec<(PathBuf, i64)>,
    stats: ApplyStats,
}

fn escape(entry: &Path, why: &str) -> Error {
    Error::InvalidArgument(format!(
        "layer rejected: entry {:?} {why}; the layer is unsafe, nothing outside the snapshot was written",
        entry.display().to_string()
    ))
}

fn lstat(p: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_whiteout_dev(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

impl Applier<'_> {
    fn lowers(&self) -> &[PathBuf] {
        match self.whiteouts {
            Whiteouts::Overlay { lowers, .. } => lowers,
            Whiteouts::Direct => &[],
        }
    }

    /// The merged view of `rel` in the lower layers: the first layer holding it (a whiteout or
    /// an opaque ancestor hides it).
    fn lookup_lower(&self, rel: &Path) -> io::Result<Option<(PathBuf, fs::Metadata)>> {
        for lower in self.lowers() {
            let p = lower.join(rel);
            if let Some(m) = lstat(&p)? {
                if is_whiteout_dev(&m) {
                    return Ok(None);
                }
                return Ok(Some((p, m)));
            }
            if self.opaque_ancestor(lower, rel) {
                return Ok(None);
            }
        }
        Ok(None)
    }

    fn opaque_ancestor(&self, lower: &Path, rel: &Path) -> bool {
        let Whiteouts::Overlay { xattr_prefix, .. } = self.whiteouts else {
            return false;
        };
        let name = format!("{xattr_prefix}.overlay.opaque");
        let mut a = rel.parent();
        while let Some(d) = a {
            if d.as_os_str().is_empty() {
                break;
            }
            if get_xattr(&lower.join(d), &name).as_deref() == Some(b"y") {
                return true;
            }
            a = d.parent();
        }
        false
    }

    /// Resolves the directory `rel` (cleaned, relative) to a real directory inside the root,
    /// creating missing components (copying a lower layer's directory metadata when there is
    /// one) and following in-root relative symlinks.
    fn resolve_dir(&mut self, rel: &Path, entry: &Path, create: bool) -> Result<Option<PathBuf>> {
        if rel.as_os_str().is_empty() || self.known_dirs.contains(rel) {
            return Ok(Some(rel.to_path_buf()));
        }
        let mut todo: Vec<PathBuf> = rel
            .components()
            .rev()
            .map(|c| PathBuf::from(c.as_os_str()))
            .collect();
        let mut cur = PathBuf::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            let next = cur.join(&c);
            if self.known_dirs.contains(&next) {
                cur = next;
                continue;
            }
            let abs = self.root.join(&next);
            let meta = lstat(&abs).ctx(|| format!("inspecting {}", abs.display()))?;
            let mut replaces_whiteout = false;
            let (link_src, kind) = match meta {
                Some(m) if m.is_dir() => {
                    self.known_dirs.insert(next.clone());
                    cur = next;
                    continue;
                }
                Some(m) if m.file_type().is_symlink() => (Some(abs.clone()), Some(m)),
                Some(m) if is_whiteout_dev(&m) => {
                    // A whiteout in the upper dir: the directory is new in this layer.
                    fs::remove_file(&abs).ctx(|| format!("removing {}", abs.display()))?;
                    replaces_whiteout = true;
                    (None, None)
                }
                Some(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "layer entry {:?}: parent {:?} is not a directory",
                        entry.display().to_string(),
                        next.display().to_string()
                    )))
                }
                None => match self
                    .lookup_lower(&next)
                    .ctx(|| format!("inspecting lower layers for {}", next.display()))?
                {
                    Some((p, m)) if m.file_type().is_symlink() => (Some(p), Some(m)),
                    Some((_, m)) if m.is_dir() => (None, Some(m)),
                    Some(_) => {
                        return Err(Error::InvalidArgument(format!(
                            "layer entry {:?}: parent {:?} is not a directory in a lower layer",
                            entry.display().to_string(),
                            next.display().to_string()
                        )))
                    }
                    None if !create => return Ok(None),
                    None => (None, None),
                },
            };
            if let Some(src) = link_src {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(escape(entry, "passes through too many symlinks"));
                }
                let target = fs::read_link(&src).ctx(|| format!("reading {}", src.display()))?;
                if target.is_absolute() {
                    return Err(escape(
                        entry,
                        &format!(
                            "has a parent {:?} that is a symlink to the absolute path {:?}",
                            next.display().to_string(),
                            target.display().to_string()
                        ),
                    ));
                }
                let Some(joined) = clean_path(&cur.join(&target)) else {
                    return Err(escape(
                        entry,
                        &format!(
                            "has a parent {:?} that is a symlink pointing outside the root ({:?})",
                            next.display().to_string(),
                            target.display().to_string()
                        ),
                    ));
                };
                for comp in joined.components().rev() {
                    todo.push(PathBuf::from(comp.as_os_str()));
                }
                cur = PathBuf::new();
                continue;
            }
            // Create the directory, like overlay's copy-up of a lower directory.
            fs::create_dir(&abs).ctx(|| format!("creating {}", abs.display()))?;
            if replaces_whiteout {
                self.mark_opaque(&abs, entry)?;
            }
            if let Some(m) = kind {
                lchown(&abs, m.uid(), m.gid()).ctx(|| format!("chown {}", abs.display()))?;
                self.dir_times.push((next.clone(), m.mtime()));
                fs::set_permissions(&abs, fs::Permissions::from_mode(m.mode() & 0o7777))
                    .ctx(|| format!("chmod {}", abs.display()))?;
            } else {
                fs::set_permissions(&abs, fs::Permissions::from_mode(0o755))
                    .ctx(|| format!("chmod {}", abs.display()))?;
            }
            self.known_dirs.insert(next.clone());
            cur = next;
        }
        Ok(Some(cur))
    }

    /// Resolves an entry path to (resolved parent, file name).
    /// Resolves an entry path. With `create` false, missing parents are not made (whiteouts and
    /// hard-link targets): [`Resolved::Missing`].
    fn resolve(&mut self, raw: &Path, create: bool) -> Result<Resolved> {
        let Some(rel) = clean_path(raw) else {
            return Err(escape(raw, "climbs out of the root with '..'"));
        };
        let Some(name) = rel.file_name().map(PathBuf::from) else {
            return Ok(Resolved::Root);
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok(match self.resolve_dir(parent, raw, create)? {
            Some(p) => Resolved::At(p, name),
            None => Resolved::Missing,
        })
    }

    /// Removes whatever is at `abs` (a directory recursively).
    fn remove_existing(&mut self, rel: &Path) -> Result<()> {
        let abs = self.root.join(rel);
        if let Some(m) = lstat(&abs).ctx(|| format!("inspecting {}", abs.display()))? {
            if m.is_dir() {
                fs::remove_dir_all(&abs).ctx(|| format!("removing {}", abs.display()))?;
                self.known_dirs.clear();
            } else {
                fs::remove_file(&abs).ctx(|| format!("removing {}", abs.display()))?;
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry
            .path()
            .map_err(|e| Error::InvalidArgument(format!("layer entry with a bad path: {e}")))?
            .into_owned();
        let hdr = entry.header().clone();
        let etype = hdr.entry_type();
        let is_whiteout = raw
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(WH_PREFIX.as_bytes()));
        let (parent, name) = match self.resolve(&raw, !is_whiteout)? {
            Resolved::At(p, n) => (p, n),
            // A whiteout in a directory that exists nowhere has nothing to hide.
            Resolved::Missing => return Ok(()),
            Resolved::Root => {
                // "./": the root directory's own metadata.
                if etype.is_dir() {
                    let root = self.root.clone();
                    self.metadata(entry, &root, &raw, false)?;
                    if let Ok(m) = hdr.mtime() {
                        self.dir_times.push((PathBuf::new(), m as i64));
                    }
                }
                return Ok(());
            }
        };
        let name_s = name.as_os_str().as_bytes();

        // Whiteouts.
        if name_s == WH_OPAQUE.as_bytes() {
            return self.opaque(&parent, &raw);
        }
        if let Some(hidden) = name_s.strip_prefix(WH_PREFIX.as_bytes()) {
            if hidden.starts_with(WH_PREFIX.as_bytes()) || hidden.is_empty() {
                return Ok(()); // AUFS metadata (.wh..wh.plnk and friends)
            }
            let rel = parent.join(OsStr::from_bytes(hidden));
            return self.whiteout(&rel);
        }

        let rel = parent.join(&name);
        let abs = self.root.join(&rel);
        match etype {
            EntryType::Directory => {
                match lstat(&abs).ctx(|| format!("inspecting {}", abs.display()))? {
                    Some(m) if m.is_dir() => {}
                    existing => {
                        let was_whiteout = existing.as_ref().is_some_and(is_whiteout_dev);
                        self.remove_existing(&rel)?;
                        fs::create_dir(&abs).ctx(|| format!("creating {}", abs.display()))?;
                        if was_whiteout {
                            // A directory replacing a deleted one must not show the lower's
                            // content: overlay's own rule.
                            self.mark_opaque(&abs, &raw)?;
                        }
                    }
                }
                self.known_dirs.insert(rel.clone());
                self.metadata(entry, &abs, &raw, false)?;
                if let Ok(m) = hdr.mtime() {
                    self.dir_times.push((rel.clone(), m as i64));
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.remove_existing(&rel)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&abs)
                    .ctx(|| format!("creating {}", abs.display()))?;
                let n = if etype == EntryType::GNUSparse {
                    // A few hundred bytes of sparse map can declare an exabyte of holes.
                    let holes = entry.size().saturating_sub(hdr.entry_size().unwrap_or(0));
                    if holes > MAX_SPARSE_HOLES {
                        return Err(Error::InvalidArgument(format!(
                            "layer entry {:?} is a sparse file with {holes} bytes of holes, more than the {} GiB nook unpacks; the layer is unsafe",
                            raw.display().to_string(),
                            MAX_SPARSE_HOLES >> 30
                        )));
                    }
                    copy_sparse(&mut *entry, &mut f)
                } else {
                    io::copy(entry, &mut f)
                }
                .map_err(|e| {
                    if crate::error::is_no_space(&e) {
                        return Error::io(format!("writing {}", abs.display()), e);
                    }
                    Error::InvalidArgument(format!(
                        "layer is corrupt or truncated (in entry {:?}): {e}",
                        raw.display().to_string()
                    ))
                })?;
                self.stats.file_bytes += n;
                drop(f);
                self.metadata(entry, &abs, &raw, false)?;
                set_mtime(&abs, hdr.mtime().unwrap_or(0) as i64)
                    .ctx(|| format!("setting mtime of {}", abs.display()))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::InvalidArgument(format!("bad symlink entry: {e}")))?
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "layer entry {:?}: symlink without a target",
                            raw.display().to_string()
                        ))
                    })?
                    .into_owned();
                self.remove_existing(&rel)?;
                std::os::unix::fs::symlink(&target, &abs)
                    .ctx(|| format!("creating symlink {}", abs.display()))?;
                self.metadata(entry, &abs, &raw, true)?;
                set_mtime(&abs, hdr.mtime().unwrap_or(0) as i64)
                    .ctx(|| format!("setting mtime of {}", abs.display()))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::InvalidArgument(format!("bad hard link entry: {e}")))?
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "layer entry {:?}: hard link without a target",
                            raw.display().to_string()
                        ))
                    })?
                    .into_owned();
                let resolved = self.resolve(&target, false).map_err(|e| match e {
                    Error::InvalidArgument(m) => Error::InvalidArgument(format!(
                        "layer rejected: hard link {:?} -> {:?}: {m}",
                        raw.display().to_string(),
                        target.display().to_string()
                    )),
                    e => e,
                })?;
                let (tparent, tname) = match resolved {
                    Resolved::At(p, n) => (p, n),
                    Resolved::Root => {
                        return Err(escape(&raw, "is a hard link to the root directory"))
                    }
                    Resolved::Missing => {
                        return Err(Error::InvalidArgument(format!(
                            "layer entry {:?}: hard link target {:?} does not exist",
                            raw.display().to_string(),
                            target.display().to_string()
                        )))
                    }
                };
                let trel = tparent.join(tname);
                let tabs = self.root.join(&trel);
                if trel == rel {
                    return Ok(());
                }
                let tmeta = lstat(&tabs).ctx(|| format!("inspecting {}", tabs.display()))?;
                match tmeta {
                    Some(m) if m.is_dir() => {
                        return Err(escape(&raw, "is a hard link to a directory"));
                    }
                    Some(m) if is_whiteout_dev(&m) => {
                        return Err(Error::InvalidArgument(format!(
                            "layer entry {:?}: hard link target {:?} was deleted",
                            raw.display().to_string(),
                            target.display().to_string()
                        )));
                    }
                    Some(_) => {}
                    None => self.copy_up(&trel, &raw, &target)?,
                }
                self.remove_existing(&rel)?;
                fs::hard_link(&tabs, &abs)
                    .ctx(|| format!("linking {} to {}", abs.display(), tabs.display()))?;
            }
            EntryType::Char
                if hdr.device_major().ok().flatten() == Some(0)
                    && hdr.device_minor().ok().flatten() == Some(0) =>
            {
                // An overlay-style whiteout written into the tar.
                return self.whiteout(&rel);
            }
            EntryType::Char | EntryType::Block => {
                tracing::warn!(
                    entry = %raw.display(),
                    "skipping device node: an unprivileged user cannot create device nodes"
                );
                self.stats.skipped += 1;
                return Ok(());
            }
            EntryType::Fifo => {
                self.remove_existing(&rel)?;
                nix::unistd::mkfifo(&abs, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| Error::io(format!("mkfifo {}", abs.display()), e.into()))?;
                self.metadata(entry, &abs, &raw, false)?;
                set_mtime(&abs, hdr.mtime().unwrap_or(0) as i64)
                    .ctx(|| format!("setting mtime of {}", abs.display()))?;
            }
            EntryType::XGlobalHeader | EntryType::XHeader => return Ok(()),
            other => {
                tracing::warn!(entry = %raw.display(), kind = ?other, "skipping tar entry of unsupported type");
                self.stats.skipped += 1;
                return Ok(());
            }
        }
        if matches!(self.whiteouts, Whiteouts::Direct) {
            let mut cur = Some(rel.as_path());
            while let Some(c) = cur {
                if c.as_os_str().is_empty() || !self.written.insert(c.to_path_buf()) {
                    break;
                }
                cur = c.parent();
            }
        }
        Ok(())
    }

    /// Copies a hard-link target from a lower layer into the upper dir (as overlay would).
    fn copy_up(&mut self, trel: &Path, raw: &Path, target: &Path) -> Result<()> {
        let Some((src, m)) = self
            .lookup_lower(trel)
            .ctx(|| format!("inspecting lower layers for {}", trel.display()))?
        else {
            return Err(Error::InvalidArgument(format!(
                "layer entry {:?}: hard link target {:?} does not exist",
                raw.display().to_string(),
                target.display().to_string()
            )));
        };
        if !m.is_file() {
            return Err(Error::InvalidArgument(format!(
                "layer entry {:?}: hard link target {:?} in a lower layer is not a regular file",
                raw.display().to_string(),
                target.display().to_string()
            )));
        }
        let dst = self.root.join(trel);
        fs::copy(&src, &dst).ctx(|| format!("copying {} up", src.display()))?;
        lchown(&dst, m.uid(), m.gid()).ctx(|| format!("chown {}", dst.display()))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777))
            .ctx(|| format!("chmod {}", dst.display()))?;
        set_mtime(&dst, m.mtime()).ctx(|| format!("setting mtime of {}", dst.display()))?;
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path) -> Result<()> {
        self.remove_existing(rel)?;
        if let Whiteouts::Overlay { .. } = self.whiteouts {
            let abs = self.root.join(rel);
            nix::sys::stat::mknod(
                &abs,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .map_err(|e| Error::io(format!("creating whiteout {}", abs.display()), e.into()))?;
        }
        Ok(())
    }

    fn mark_opaque(&self, abs: &Path, raw: &Path) -> Result<()> {
        if let Whiteouts::Overlay { xattr_prefix, .. } = self.whiteouts {
            set_xattr(abs, &format!("{xattr_prefix}.overlay.opaque"), b"y").ctx(|| {
                format!(
                    "marking {} opaque (entry {:?})",
                    abs.display(),
                    raw.display().to_string()
                )
            })?;
        }
        Ok(())
    }

    fn opaque(&mut self, dir: &Path, raw: &Path) -> Result<()> {
        let abs = self.root.join(dir);
        match self.whiteouts {
            Whiteouts::Overlay { xattr_prefix, .. } => {
                set_xattr(&abs, &format!("{xattr_prefix}.overlay.opaque"), b"y").ctx(|| {
                    format!(
                        "marking {} opaque (entry {:?})",
                        abs.display(),
                        raw.display().to_string()
                    )
                })?;
            }
            Whiteouts::Direct => {
                self.clear_unwritten(dir)?;
                self.known_dirs.clear();
            }
        }
        Ok(())
    }

    /// Removes everything under `dir` this layer did not write.
    fn clear_unwritten(&self, dir: &Path) -> Result<()> {
        let abs = self.root.join(dir);
        for e in fs::read_dir(&abs).ctx(|| format!("reading {}", abs.display()))? {
            let e = e.ctx(|| format!("reading {}", abs.display()))?;
            let rel = dir.join(e.file_name());
            let p = e.path();
            let ft = e
                .file_type()
                .ctx(|| format!("inspecting {}", p.display()))?;
            if self.written.contains(&rel) {
                if ft.is_dir() {
                    self.clear_unwritten(&rel)?;
                }
            } else if ft.is_dir() {
                fs::remove_dir_all(&p).ctx(|| format!("removing {}", p.display()))?;
            } else {
                fs::remove_file(&p).ctx(|| format!("removing {}", p.display()))?;
            }
        }
        Ok(())
    }

    /// Ownership, mode (after chown: chown clears setuid) and xattrs of a created entry.
    fn metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        abs: &Path,
        raw: &Path,
        symlink: bool,
    ) -> Result<()> {
        let hdr = entry.header();
        let mut uid = hdr.uid().unwrap_or(0) as u32;
        let mut gid = hdr.gid().unwrap_or(0) as u32;
        let mode = hdr.mode().unwrap_or(0o644) & 0o7777;
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let Ok(key) = ext.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                } else if key == "uid" {
                    uid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(uid);
                } else if key == "gid" {
                    gid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(gid);
                }
            }
        }
        lchown(abs, uid, gid).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EINVAL) {
                " (the id is not mapped in this user namespace: give the user a subordinate id range of 65536 in /etc/subuid and /etc/subgid)"
            } else {
                ""
            };
            Error::io(
                format!(
                    "layer entry {:?}: chown to {uid}:{gid}{hint}",
                    raw.display().to_string()
                ),
                e,
            )
        })?;
        if !symlink {
            fs::set_permissions(abs, fs::Permissions::from_mode(mode))
                .ctx(|| format!("chmod {}", abs.display()))?;
        }
        for (name, value) in xattrs {
            if symlink && name.starts_with("user.") {
                continue; // user xattrs are not allowed on symlinks
            }
            if let Err(e) = set_xattr(abs, &name, &value) {
                tracing::warn!(entry = %raw.display(), xattr = %name, error = %e, "skipping xattr the kernel refused");
            }
        }
        Ok(())
    }
}
