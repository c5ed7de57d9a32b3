//! Making a layer from two trees (containerd's Diff.Diff, the "walking" differ): a double
//! walk of `lower` and `upper` writes, as an OCI layer tar, every entry of `upper` that is new
//! or changed (type, mode, owner, size, modification time or link target differ), with its
//! parent directories, and a whiteout (`.wh.NAME`) for every entry of `lower` that `upper`
//! lacks (one for a removed directory, not one per file under it). Symlinks are never
//! followed. Extended attributes and hard links are not carried (each link is a file).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

enum Change {
    /// Added or modified: the entry of `upper` at this path.
    Write(PathBuf),
    /// Removed: a whiteout at this path.
    Delete(PathBuf),
}

fn names(dir: &Path) -> Result<BTreeSet<std::ffi::OsString>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| {
                e.map(|e| e.file_name())
                    .map_err(|e| Error::io(format!("reading {}", dir.display()), e))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(Error::io(format!("reading {}", dir.display()), e)),
    }
}

fn same(a: &std::fs::Metadata, b: &std::fs::Metadata, pa: &Path, pb: &Path) -> bool {
    if a.file_type() != b.file_type()
        || a.mode() != b.mode()
        || a.uid() != b.uid()
        || a.gid() != b.gid()
    {
        return false;
    }
    if a.is_dir() {
        return true; // a directory's own changes show as changes under it
    }
    if a.file_type().is_symlink() {
        return std::fs::read_link(pa).ok() == std::fs::read_link(pb).ok();
    }
    a.size() == b.size() && a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec()
}

/// The changes under `rel`; `lower` None: nothing below `rel` existed before (a directory
/// that replaced a file).
fn walk(lower: Option<&Path>, upper: &Path, rel: &Path, out: &mut Vec<Change>) -> Result<()> {
    let ln = match lower {
        Some(l) => names(&l.join(rel))?,
        None => BTreeSet::new(),
    };
    let un = names(&upper.join(rel))?;
    for n in ln.union(&un) {
        let r = rel.join(n);
        let up = upper.join(&r);
        let lp = lower.map(|l| l.join(&r));
        let lm = lp.as_ref().and_then(|p| std::fs::symlink_metadata(p).ok());
        match std::fs::symlink_metadata(&up) {
            Err(_) => out.push(Change::Delete(r)),
            Ok(um) => {
                let changed = match (&lm, &lp) {
                    (Some(lm), Some(lp)) => !same(lm, &um, lp, &up),
                    _ => true,
                };
                if changed {
                    out.push(Change::Write(r.clone()));
                }
                if um.is_dir() {
                    let was_dir = lm.as_ref().is_some_and(|m| m.is_dir());
                    walk(lower.filter(|_| was_dir), upper, &r, out)?;
                }
            }
        }
    }
    Ok(())
}

/// Writes the changes from `lower` to `upper` as a tar stream into `w`.
pub fn write_diff(lower: &Path, upper: &Path, w: impl Write) -> Result<()> {
    let mut changes = Vec::new();
    walk(Some(lower), upper, Path::new(""), &mut changes)?;
    let mut tar = tar::Builder::new(w);
    tar.follow_symlinks(false);
    let mut written: BTreeSet<PathBuf> = BTreeSet::new();
    let io = |e: std::io::Error| Error::io("writing the layer", e);
    for c in changes {
        let path = match &c {
            Change::Write(p) | Change::Delete(p) => p.clone(),
        };
        // the parent directories first, as they are in `upper`
        let mut parents: Vec<PathBuf> = path.ancestors().skip(1).map(Path::to_path_buf).collect();
        parents.reverse();
        for p in parents {
            if p.as_os_str().is_empty() || written.contains(&p) {
                continue;
            }
            tar.append_path_with_name(upper.join(&p), &p).map_err(io)?;
            written.insert(p);
        }
        match c {
            Change::Write(p) => {
                if written.insert(p.clone()) {
                    tar.append_path_with_name(upper.join(&p), &p).map_err(io)?;
                }
            }
            Change::Delete(p) => {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                let wh = p.with_file_name(format!(".wh.{name}"));
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(0);
                h.set_mode(0o644);
                h.set_mtime(0);
                tar.append_data(&mut h, &wh, std::io::empty()).map_err(io)?;
            }
        }
    }
    tar.into_inner().map_err(io)?.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_changes_and_whiteouts_with_parents() {
        let t = std::env::temp_dir().join(format!("nook-changes-{}", std::process::id()));
        let (l, u) = (t.join("l"), t.join("u"));
        for d in [&l, &u] {
            std::fs::create_dir_all(d.join("etc/sub")).unwrap();
            std::fs::create_dir_all(d.join("gone")).unwrap();
            std::fs::write(d.join("etc/same"), "x").unwrap();
            std::fs::write(d.join("gone/f"), "x").unwrap();
        }
        // same mtimes on both sides for what is unchanged
        let src = std::fs::metadata(l.join("etc/same"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(u.join("etc/same"))
            .unwrap()
            .set_modified(src)
            .unwrap();
        std::fs::remove_dir_all(u.join("gone")).unwrap();
        std::fs::write(u.join("etc/sub/new"), "new").unwrap();
        std::os::unix::fs::symlink("/x", u.join("link")).unwrap();
        let mut out = Vec::new();
        write_diff(&l, &u, &mut out).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"etc/sub/new".to_string()), "{names:?}");
        assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
        assert!(names.contains(&"link".to_string()), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n.contains("same") || n.starts_with("gone/")),
            "{names:?}"
        );
        let i = |n: &str| names.iter().position(|x| x.trim_end_matches('/') == n);
        assert!(i("etc").unwrap() < i("etc/sub").unwrap());
        assert!(i("etc/sub").unwrap() < i("etc/sub/new").unwrap());
        let _ = std::fs::remove_dir_all(&t);
    }
}
