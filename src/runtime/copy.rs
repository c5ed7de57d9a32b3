//! `nook cp`: files into and out of a container's root filesystem as tar streams, resolved
//! inside that root: a symlink in the container (absolute or climbing with `..`) never leads
//! out of it, as if the container had `chroot`ed.
//!
//! Paths are resolved with `openat2(RESOLVE_IN_ROOT)` from a descriptor of the root, and a tree
//! is walked with `openat(O_NOFOLLOW)` one component at a time, so a container that swaps a
//! directory for a symlink while a copy runs still cannot point it outside. Writing uses the
//! layer applier ([`crate::diff::apply::apply_tar`]), which refuses entries that would land
//! outside the target directory.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

use crate::error::{Error, Result};

/// What a path in a container is (docker's `HEAD /containers/ID/archive`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathInfo {
    pub exists: bool,
    pub dir: bool,
    pub name: String,
    pub mode: u32,
    pub size: u64,
    pub link_target: String,
}

fn errno(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    move |e| Error::io(what, std::io::Error::from(e))
}

/// A path given by the user, as components inside the root (`..` cannot climb above it, as in
/// the kernel's own resolution at `/`).
fn components(path: &str) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn join(c: &[OsString]) -> PathBuf {
    let mut p = PathBuf::from(".");
    for x in c {
        p.push(x);
    }
    p
}

fn open_root(root: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(format!("opening {}", root.display())))
}

/// Opens directory `rel` (components) of the root, following symlinks as if the root were `/`.
fn open_dir_in_root(root: &OwnedFd, rel: &[OsString], shown: &str) -> Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    nix::fcntl::openat2(root.as_fd(), &join(rel), how).map_err(|e| match e {
        nix::Error::ENOENT => {
            Error::NotFound(format!("no such directory in the container: {shown}"))
        }
        nix::Error::ENOTDIR => {
            Error::InvalidArgument(format!("{shown} is not a directory in the container"))
        }
        e => Error::io(format!("resolving {shown} in the container"), e.into()),
    })
}

/// The parent directory of `path` (resolved in the root) and the last name (None for `/`).
fn parent_and_name(root: &OwnedFd, path: &str) -> Result<(OwnedFd, Option<OsString>)> {
    let mut c = components(path);
    let name = c.pop();
    let parent = open_dir_in_root(root, &c, path)?;
    Ok((parent, name))
}

fn lstat_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<FileStat> {
    fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// What `path` is in the container rooted at `root` (a last symlink is not followed).
pub fn stat(root: &Path, path: &str) -> Result<PathInfo> {
    let r = open_root(root)?;
    let (dir, name) = match parent_and_name(&r, path) {
        Ok(x) => x,
        Err(Error::NotFound(_)) => return Ok(PathInfo::default()),
        Err(e) => return Err(e),
    };
    let Some(name) = name else {
        return Ok(PathInfo {
            exists: true,
            dir: true,
            name: "/".into(),
            mode: 0o755,
            ..Default::default()
        });
    };
    let st = match lstat_at(&dir, &name) {
        Ok(s) => s,
        Err(nix::Error::ENOENT) => return Ok(PathInfo::default()),
        Err(e) => return Err(errno(format!("inspecting {path}"))(e)),
    };
    let link_target = if kind(&st) == SFlag::S_IFLNK {
        nix::fcntl::readlinkat(dir.as_fd(), name.as_os_str())
            .map(|t| t.to_string_lossy().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    // a symlink to a directory counts as one (docker cp copies into it)
    let dir_too = kind(&st) == SFlag::S_IFDIR
        || (kind(&st) == SFlag::S_IFLNK && open_dir_in_root(&r, &components(path), path).is_ok());
    Ok(PathInfo {
        exists: true,
        dir: dir_too,
        name: name.to_string_lossy().to_string(),
        mode: st.st_mode & 0o7777,
        size: st.st_size as u64,
        link_target,
    })
}

fn header_for(st: &FileStat) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid.into());
    h.set_gid(st.st_gid.into());
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

/// Writes `path` of the container rooted at `root` to `out` as a tar stream whose top entry
/// is named `top` (docker cp renames this way), or, when `path` ends in `/.`, the contents of
/// that directory at the top. A last symlink is archived as a symlink.
pub fn tar_out<W: Write>(root: &Path, path: &str, top: &str, out: W) -> Result<()> {
    let r = open_root(root)?;
    let mut b = tar::Builder::new(out);
    let contents = path.ends_with("/.") || path == ".";
    if contents {
        let dir = open_dir_in_root(&r, &components(path), path)?;
        add_children(&mut b, &dir, Path::new(""))?;
    } else {
        let (dir, name) = parent_and_name(&r, path)?;
        match name {
            Some(name) => {
                if let Err(nix::Error::ENOENT) = lstat_at(&dir, &name) {
                    return Err(Error::NotFound(format!(
                        "no such file or directory in the container: {path}"
                    )));
                }
                add(&mut b, &dir, &name, Path::new(top))?;
            }
            None => {
                // `/`: the root directory itself, named `top`
                let st = nix::sys::stat::fstat(dir.as_fd()).map_err(errno("inspecting /"))?;
                let mut h = header_for(&st);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, top, std::io::empty())
                    .map_err(|e| Error::io("writing the archive", e))?;
                add_children(&mut b, &dir, Path::new(top))?;
            }
        }
    }
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| Error::io("writing the archive", e))?;
    Ok(())
}

fn add_children<W: Write>(b: &mut tar::Builder<W>, dir: &OwnedFd, at: &Path) -> Result<()> {
    let rd = nix::fcntl::openat(
        dir.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(format!("opening {}", at.display())))?;
    let mut d = nix::dir::Dir::from_fd(rd).map_err(errno(format!("reading {}", at.display())))?;
    let mut names: Vec<OsString> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    for n in names {
        add(b, dir, &n, &at.join(&n))?;
    }
    Ok(())
}

/// Archives `name` in `dir` as `tar_path`, and a directory's tree below it.
fn add<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &OsStr,
    tar_path: &Path,
) -> Result<()> {
    let shown = tar_path.display().to_string();
    let st = match lstat_at(dir, name) {
        Ok(s) => s,
        Err(nix::Error::ENOENT) => return Ok(()), // removed while we walked
        Err(e) => return Err(errno(format!("inspecting {shown}"))(e)),
    };
    let mut h = header_for(&st);
    let werr = |e| Error::io("writing the archive", e);
    match kind(&st) {
        SFlag::S_IFDIR => {
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, tar_path, std::io::empty())
                .map_err(werr)?;
            let child = nix::fcntl::openat(
                dir.as_fd(),
                name,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno(format!("opening {shown}")))?;
            add_children(b, &child, tar_path)?;
        }
        SFlag::S_IFREG => {
            let fd = nix::fcntl::openat(
                dir.as_fd(),
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno(format!("opening {shown}")))?;
            let f = File::from(fd);
            let size = st.st_size.max(0) as u64;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(size);
            // exactly `size` bytes even if the file changes under a running container
            let body = (&f).take(size).chain(std::io::repeat(0)).take(size);
            b.append_data(&mut h, tar_path, body).map_err(werr)?;
        }
        SFlag::S_IFLNK => {
            let target = nix::fcntl::readlinkat(dir.as_fd(), name)
                .map_err(errno(format!("reading the link {shown}")))?;
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, tar_path, PathBuf::from(target))
                .map_err(werr)?;
        }
        SFlag::S_IFIFO => {
            h.set_entry_type(tar::EntryType::Fifo);
            b.append_data(&mut h, tar_path, std::io::empty())
                .map_err(werr)?;
        }
        SFlag::S_IFCHR | SFlag::S_IFBLK => {
            h.set_entry_type(if kind(&st) == SFlag::S_IFCHR {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let _ = h.set_device_major(nix::sys::stat::major(st.st_rdev) as u32);
            let _ = h.set_device_minor(nix::sys::stat::minor(st.st_rdev) as u32);
            b.append_data(&mut h, tar_path, std::io::empty())
                .map_err(werr)?;
        }
        _ => tracing::debug!(path = %shown, "cp: skipping a socket"),
    }
    Ok(())
}

/// Extracts the tar stream `input` into directory `dir` of the container rooted at `root`
/// (which must exist there; symlinks on the way are followed inside the root). Entries that
/// would land outside `dir` fail the copy.
pub fn tar_in<R: Read>(root: &Path, dir: &str, input: R) -> Result<()> {
    let r = open_root(root)?;
    let d = open_dir_in_root(&r, &components(dir), dir)?;
    // the applier works on paths: the descriptor's own path, which a rename in the container
    // cannot move elsewhere
    let at = PathBuf::from(format!("/proc/self/fd/{}", d.as_raw_fd()));
    crate::diff::apply::apply_tar(input, &at, &crate::diff::apply::Whiteouts::Direct)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar_bytes: &[u8]) -> Vec<(String, String)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                (e.path().unwrap().display().to_string(), link)
            })
            .collect()
    }

    fn rootfs() -> (tempfile::TempDir, tempfile::TempDir) {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc/sub")).unwrap();
        std::fs::write(r.join("etc/hostname"), "box\n").unwrap();
        std::fs::write(r.join("etc/sub/f"), "f").unwrap();
        std::fs::write(outside.path().join("secret"), "host secret").unwrap();
        // symlinks that would leave the root if followed on the host
        std::os::unix::fs::symlink(outside.path(), r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../..", r.join("up")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("etclink")).unwrap();
        (t, outside)
    }

    #[test]
    fn out_resolves_in_the_root_and_keeps_symlinks() {
        let (t, outside) = rootfs();
        let r = t.path();
        let mut buf = Vec::new();
        tar_out(r, "/etc", "etc", &mut buf).unwrap();
        let n = names(&buf);
        assert!(n.contains(&("etc/hostname".into(), String::new())), "{n:?}");
        assert!(n.contains(&("etc/sub/f".into(), String::new())), "{n:?}");
        // /etclink/hostname is the container's /etc/hostname
        let mut buf = Vec::new();
        tar_out(r, "/etclink/hostname", "h", &mut buf).unwrap();
        let mut a = tar::Archive::new(&buf[..]);
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        assert_eq!(s, "box\n");
        // an absolute symlink to the host's directory is the container's path of that name
        let e = tar_out(r, "/abs/secret", "s", Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such"), "{e}");
        let e = tar_out(r, "/up/etc/passwd", "p", Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such"), "{e}");
        // a symlink itself is archived as a symlink, not followed
        let mut buf = Vec::new();
        tar_out(r, "/abs", "abs", &mut buf).unwrap();
        assert_eq!(
            names(&buf),
            [("abs".into(), outside.path().display().to_string())]
        );
        // the contents form
        let mut buf = Vec::new();
        tar_out(r, "/etc/sub/.", ".", &mut buf).unwrap();
        assert_eq!(names(&buf), [("f".into(), String::new())]);
    }

    #[test]
    fn in_never_writes_outside() {
        let (t, outside) = rootfs();
        let r = t.path();
        let tar_of = |path: &str, data: &[u8]| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`: write the name bytes directly
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, data).unwrap();
            b.into_inner().unwrap()
        };
        // through the absolute symlink: lands in the container's /abs... refused, not the host's
        let e = tar_in(r, "/abs", &tar_of("x", b"x")[..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such directory"), "{e}");
        assert!(!outside.path().join("x").exists());
        // `..` in an entry
        assert!(tar_in(r, "/etc", &tar_of("../../x", b"x")[..]).is_err());
        assert!(!r.parent().unwrap().join("x").exists());
        // an entry through a symlink that leaves the root
        assert!(tar_in(r, "/", &tar_of("abs/y", b"y")[..]).is_err());
        assert!(!outside.path().join("y").exists());
        // and a normal copy, through an in-root symlink to a directory
        tar_in(r, "/etclink", &tar_of("new", b"new")[..]).unwrap();
        assert_eq!(std::fs::read_to_string(r.join("etc/new")).unwrap(), "new");
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "host secret"
        );
    }

    #[test]
    fn stat_paths() {
        let (t, _o) = rootfs();
        let r = t.path();
        assert!(stat(r, "/etc").unwrap().dir);
        assert!(stat(r, "/etclink").unwrap().dir);
        let f = stat(r, "/etc/hostname").unwrap();
        assert!(f.exists && !f.dir && f.size == 4);
        assert!(!stat(r, "/nope/x").unwrap().exists);
        assert!(!stat(r, "/abs/secret").unwrap().exists);
        assert!(stat(r, "/").unwrap().dir);
    }
}
