//! Copying a directory tree with its metadata (the native snapshotter's prepare), and
//! measuring disk usage.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::fsmeta::{get_xattr_full, lchown, list_xattrs, set_mtime, set_xattr};

use super::Usage;

/// Copies `src` into the existing directory `dst`: ownership, modes (setuid kept), xattrs,
/// hard links (within the tree), symlinks, fifos and mtimes. Device nodes are skipped with a
/// warning.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    copy_dir(src, dst, &mut links, &mut dirs)?;
    let m = fs::symlink_metadata(src).ctx(|| format!("inspecting {}", src.display()))?;
    copy_meta(src, dst, &m, false)?;
    dirs.push((dst.to_path_buf(), m.mtime()));
    for (d, t) in dirs.into_iter().rev() {
        set_mtime(&d, t).ctx(|| format!("setting mtime of {}", d.display()))?;
    }
    Ok(())
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
    dirs: &mut Vec<(std::path::PathBuf, i64)>,
) -> Result<()> {
    for e in fs::read_dir(src).ctx(|| format!("reading {}", src.display()))? {
        let e = e.ctx(|| format!("reading {}", src.display()))?;
        let s = e.path();
        let d = dst.join(e.file_name());
        let m = fs::symlink_metadata(&s).ctx(|| format!("inspecting {}", s.display()))?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&d).ctx(|| format!("creating {}", d.display()))?;
            copy_dir(&s, &d, links, dirs)?;
            copy_meta(&s, &d, &m, false)?;
            dirs.push((d, m.mtime()));
            continue;
        }
        if m.nlink() > 1 && !ft.is_dir() {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, &d).ctx(|| format!("linking {}", d.display()))?;
                continue;
            }
            links.insert((m.dev(), m.ino()), d.clone());
        }
        if ft.is_symlink() {
            let t = fs::read_link(&s).ctx(|| format!("reading {}", s.display()))?;
            std::os::unix::fs::symlink(&t, &d).ctx(|| format!("creating {}", d.display()))?;
            copy_meta(&s, &d, &m, true)?;
        } else if ft.is_file() {
            fs::copy(&s, &d).ctx(|| format!("copying {}", s.display()))?;
            copy_meta(&s, &d, &m, false)?;
        } else if ft.is_fifo() {
            nix::unistd::mkfifo(&d, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
                |e| crate::error::Error::io(format!("mkfifo {}", d.display()), e.into()),
            )?;
            copy_meta(&s, &d, &m, false)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                nix::sys::stat::SFlag::S_IFCHR
            } else {
                nix::sys::stat::SFlag::S_IFBLK
            };
            if nix::sys::stat::mknod(
                &d,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                m.rdev(),
            )
            .is_err()
            {
                tracing::warn!(path = %s.display(), "skipping device node: cannot create it here");
                continue;
            }
            copy_meta(&s, &d, &m, false)?;
        } else {
            tracing::warn!(path = %s.display(), "skipping socket");
            continue;
        }
        set_mtime(&d, m.mtime()).ctx(|| format!("setting mtime of {}", d.display()))?;
    }
    Ok(())
}

fn copy_meta(src: &Path, dst: &Path, m: &fs::Metadata, symlink: bool) -> Result<()> {
    lchown(dst, m.uid(), m.gid()).ctx(|| format!("chown {}", dst.display()))?;
    if !symlink {
        fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))
            .ctx(|| format!("chmod {}", dst.display()))?;
    }
    if let Ok(names) = list_xattrs(src) {
        for n in names {
            if let Ok(v) = get_xattr_full(src, &n) {
                if let Err(e) = set_xattr(dst, &n, &v) {
                    tracing::warn!(path = %dst.display(), xattr = %n, error = %e, "skipping xattr");
                }
            }
        }
    }
    Ok(())
}

/// Disk usage of a tree: allocated bytes and inodes, hard links counted once.
pub fn disk_usage(root: &Path) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut u = Usage::default();
    fn walk(p: &Path, seen: &mut HashSet<(u64, u64)>, u: &mut Usage) -> Result<()> {
        let m = match fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(crate::error::Error::io(
                    format!("inspecting {}", p.display()),
                    e,
                ))
            }
        };
        if seen.insert((m.dev(), m.ino())) {
            u.inodes += 1;
            u.size += m.blocks() * 512;
        }
        if m.is_dir() {
            for e in fs::read_dir(p).ctx(|| format!("reading {}", p.display()))? {
                let e = e.ctx(|| format!("reading {}", p.display()))?;
                walk(&e.path(), seen, u)?;
            }
        }
        Ok(())
    }
    walk(root, &mut seen, &mut u)?;
    Ok(u)
}
