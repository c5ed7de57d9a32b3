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
            if data.len() >= 4096 {
                return Err(Error::InvalidArgument(format!(
                    "overlay mount options are {} bytes, over the kernel's page limit: too many layers for one mount (use a shorter root path)",
                    data.len()
                )));
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
