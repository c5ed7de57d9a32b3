//! What a container changed in its writable layer (`docker diff`): the entries of an overlay
//! upper directory compared with its lower directories. A whiteout (a 0/0 character device)
//! is a deletion; an entry a lower directory has is a change; any other an addition. An opaque
//! directory's contents are all additions (what the lower one held is gone).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::mount::Mount;
use crate::error::{Error, IoContext, Result};

/// Docker's kinds of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Modified = 0,
    Added = 1,
    Deleted = 2,
}

/// The upper and lower directories of an overlay mount (as the snapshotters make them).
pub fn layers(mounts: &[Mount]) -> Result<(PathBuf, Vec<PathBuf>)> {
    let opts = mounts
        .iter()
        .find(|m| m.options.iter().any(|o| o.starts_with("upperdir=")))
        .map(|m| &m.options)
        .ok_or_else(|| {
            Error::Precondition(
                "the container's snapshot has no separate writable layer (the native snapshotter copies the image): its changes cannot be listed".into(),
            )
        })?;
    let get = |k: &str| {
        opts.iter()
            .find_map(|o| o.strip_prefix(k).map(str::to_string))
            .unwrap_or_default()
    };
    let upper = PathBuf::from(get("upperdir="));
    let lowers = get("lowerdir=")
        .split(':')
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect();
    Ok((upper, lowers))
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|n| crate::fsmeta::get_xattr_full(p, n).is_ok_and(|v| v == b"y"))
}

/// The changes under `upper` against `lowers`, sorted by path (`/etc`, `/etc/passwd`, ...).
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<(String, Change)>> {
    let mut out = Vec::new();
    walk(upper, Path::new("/"), lowers, false, &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn walk(
    dir: &Path,
    rel: &Path,
    lowers: &[PathBuf],
    opaque: bool,
    out: &mut Vec<(String, Change)>,
) -> Result<()> {
    for e in std::fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let e = e.ctx(|| format!("reading {}", dir.display()))?;
        let path = rel.join(e.file_name());
        let m = std::fs::symlink_metadata(e.path())
            .ctx(|| format!("inspecting {}", e.path().display()))?;
        let shown = path.display().to_string();
        let inner = path.strip_prefix("/").unwrap_or(&path);
        let in_lower = !opaque
            && lowers
                .iter()
                .any(|l| std::fs::symlink_metadata(l.join(inner)).is_ok());
        if is_whiteout(&m) {
            if in_lower {
                out.push((shown, Change::Deleted));
            }
            continue;
        }
        out.push((
            shown,
            if in_lower {
                Change::Modified
            } else {
                Change::Added
            },
        ));
        if m.is_dir() {
            let opaque = opaque || !in_lower || is_opaque(&e.path());
            walk(&e.path(), &path, lowers, opaque, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_modified_and_opaque() {
        let t = tempfile::tempdir().unwrap();
        let (upper, lower) = (t.path().join("u"), t.path().join("l"));
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::write(lower.join("etc/passwd"), "x").unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/passwd"), "y").unwrap();
        std::fs::create_dir_all(upper.join("new/sub")).unwrap();
        let c = changes(&upper, &[lower]).unwrap();
        assert_eq!(
            c,
            [
                ("/etc".to_string(), Change::Modified),
                ("/etc/passwd".into(), Change::Modified),
                ("/new".into(), Change::Added),
                ("/new/sub".into(), Change::Added),
            ]
        );
    }
}
