//! Mount specs and mounting them (inside nookd's user and mount namespaces).

use std::path::Path;
use std::process::Command;

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One mount, as containerd describes it: `type`, `source`, `options`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// `bind`, `overlay` or `fuse3.fuse-overlayfs`.
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

impl Mount {
    /// Whether the mount is read-only.
    pub fn readonly(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    /// The `key=value` option `key`.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    }
}

/// The mounts nookd makes for containers: a snapshot's mounts on a container's rootfs, and
/// undoing them. [`RealMounter`] calls the kernel; the unit tests use an in-memory fake
/// (`mount::fake`) that fails on the Nth call, to drive the create pipeline's rollback.
pub trait Mounter: Send + Sync {
    /// Mounts `mounts` (in order) on `target`, an existing directory.
    fn mount_all(&self, mounts: &[Mount], target: &Path) -> Result<()>;
    /// Unmounts `target`.
    fn unmount(&self, target: &Path) -> Result<()>;
    /// Whether `target` is a mount point.
    fn is_mounted(&self, target: &Path) -> bool;
}

/// Mounting with mount(2), the new mount API and fuse-overlayfs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealMounter;

impl Mounter for RealMounter {
    fn mount_all(&self, mounts: &[Mount], target: &Path) -> Result<()> {
        mount_all(mounts, target)
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        unmount(target)
    }

    fn is_mounted(&self, target: &Path) -> bool {
        is_mountpoint(target)
    }
}

/// Mounts `mounts` (in order) on `target`, an existing directory.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for m in mounts {
        mount_one(m, target)?;
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let err = |e: nix::Error| {
        Error::io(
            format!("mounting {} ({}) on {}", m.source, m.kind, target.display()),
            e.into(),
        )
    };
    match m.kind.as_str() {
        "bind" => {
            let mut flags = MsFlags::MS_BIND;
            if m.options.iter().any(|o| o == "rbind") {
                flags |= MsFlags::MS_REC;
            }
            nix::mount::mount(
                Some(m.source.as_str()),
                target,
                None::<&str>,
                flags,
                None::<&str>,
            )
            .map_err(err)?;
            if m.readonly() {
                nix::mount::mount(
                    None::<&str>,
                    target,
                    None::<&str>,
                    flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(err)?;
            }
            Ok(())
        }
        "overlay" => {
            let mut flags = MsFlags::empty();
            let mut data = Vec::new();
            for o in &m.options {
                match o.as_str() {
                    "ro" => flags |= MsFlags::MS_RDONLY,
                    "rw" => {}
                    o => data.push(o),
                }
            }
            let data = data.join(",");
            if data.len() >= LEGACY_DATA_MAX {
                // Too many layers for mount(2)'s one-page option string: the new mount API
                // takes the lower layers one by one (Linux >= 6.8).
                return mount_overlay_fsconfig(m, target).map_err(|e| {
                    Error::io(
                        format!(
                            "mounting an overlay of {} bytes of options on {} (many layers need Linux >= 6.8)",
                            data.len(),
                            target.display()
                        ),
                        e,
                    )
                });
            }
            nix::mount::mount(
                Some("overlay"),
                target,
                Some("overlay"),
                flags,
                Some(data.as_str()),
            )
            .map_err(err)
        }
        "fuse3.fuse-overlayfs" | "fuse.fuse-overlayfs" => {
            let opts: Vec<&str> = m
                .options
                .iter()
                .map(String::as_str)
                .filter(|o| *o != "rw")
                .collect();
            let out = Command::new("fuse-overlayfs")
                .arg("-o")
                .arg(opts.join(","))
                .arg(target)
                .output()
                .map_err(|e| Error::io("running fuse-overlayfs (is it installed?)", e))?;
            if !out.status.success() {
                return Err(Error::Unavailable(format!(
                    "fuse-overlayfs failed to mount {}: {}",
                    target.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(())
        }
        other => Err(Error::InvalidArgument(format!(
            "unsupported mount type {other:?}"
        ))),
    }
}

/// Longest option string handed to mount(2) (the kernel copies one page, NUL included).
const LEGACY_DATA_MAX: usize = 4000;

fn cstr(s: &str) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Closes a file descriptor on drop.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor was returned by the kernel and is owned by this guard alone.
        unsafe { libc::close(self.0) };
    }
}

fn check(r: libc::c_long) -> std::io::Result<libc::c_long> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An overlay mounted with fsopen/fsconfig/fsmount/move_mount: each lower layer is one
/// `lowerdir+` call, so there is no length limit and no escaping of ':' or ','.
pub fn mount_overlay_fsconfig(m: &Mount, target: &Path) -> std::io::Result<()> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let fstype = cstr("overlay")?;
    // SAFETY: fsopen takes a NUL-terminated name and flags; the result is checked.
    let fd = Fd(
        check(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?
            as libc::c_int,
    );
    let set = |key: &str, value: Option<&str>| -> std::io::Result<()> {
        let k = cstr(key)?;
        let v = value.map(cstr).transpose()?;
        let (cmd, vp) = match &v {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: fd is an fs context; key and value are NUL-terminated and outlive the call.
        check(unsafe { libc::syscall(libc::SYS_fsconfig, fd.0, cmd, k.as_ptr(), vp, 0) })?;
        Ok(())
    };
    let mut ro = false;
    for o in &m.options {
        match o.split_once('=') {
            Some(("lowerdir", v)) => {
                for l in v.split(':').filter(|l| !l.is_empty()) {
                    set("lowerdir+", Some(l))?;
                }
            }
            Some((k, v)) => set(k, Some(v))?,
            None if o == "ro" => ro = true,
            None if o == "rw" => {}
            None => set(o, None)?,
        }
    }
    // SAFETY: fd is an fs context; the other arguments are unused for CMD_CREATE.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd.0,
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    let attrs = if ro { MOUNT_ATTR_RDONLY } else { 0 };
    // SAFETY: fd is a created fs context; the result is checked.
    let mfd = Fd(
        check(unsafe { libc::syscall(libc::SYS_fsmount, fd.0, FSMOUNT_CLOEXEC, attrs) })?
            as libc::c_int,
    );
    let empty = cstr("")?;
    let t = cstr(&target.to_string_lossy())?;
    // SAFETY: mfd is a detached mount; paths are NUL-terminated and outlive the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mfd.0,
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// Unmounts `target`; a FUSE mount the kernel refuses to unmount directly is unmounted with
/// `fusermount3 -u`.
pub fn unmount(target: &Path) -> Result<()> {
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(e) => {
            let out = Command::new("fusermount3").arg("-u").arg(target).output();
            match out {
                Ok(o) if o.status.success() => Ok(()),
                _ => Err(Error::io(
                    format!("unmounting {}", target.display()),
                    e.into(),
                )),
            }
        }
    }
}

/// Whether `path` is a mount point (listed in /proc/self/mountinfo).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|m| {
                m.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\134", "\\")
            })
            .is_some_and(|m| m == want)
    })
}

#[cfg(test)]
pub mod fake;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints() {
        assert!(is_mountpoint(Path::new("/proc")));
        assert!(!is_mountpoint(Path::new("/proc/self")));
    }
}
