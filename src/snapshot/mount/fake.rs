//! An in-memory [`Mounter`] for unit tests: it records what is mounted where, counts and logs
//! every call through [`Faults`], and fails the call a test chooses. A `mount_all` of several
//! mounts makes one call per mount, so a failure part-way leaves the first ones mounted, as
//! the kernel would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Mount, Mounter};
use crate::error::{Error, Result};
use crate::testing::Faults;

#[derive(Debug, Default)]
pub struct FakeMounter {
    pub faults: Faults,
    /// Target → the mounts stacked on it, in order.
    mounted: Mutex<BTreeMap<PathBuf, Vec<Mount>>>,
}

impl FakeMounter {
    /// What is mounted now.
    pub fn mounted(&self) -> BTreeMap<PathBuf, Vec<Mount>> {
        self.mounted.lock().unwrap().clone()
    }
}

impl Mounter for FakeMounter {
    fn mount_all(&self, mounts: &[Mount], target: &Path) -> Result<()> {
        for m in mounts {
            self.faults
                .call("mount", &format!("{} {}", m.kind, target.display()))
                .map_err(|e| Error::io(format!("mounting {}", target.display()), e))?;
            if !target.is_dir() {
                return Err(Error::io(
                    format!("mounting on {}", target.display()),
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
            self.mounted
                .lock()
                .unwrap()
                .entry(target.to_path_buf())
                .or_default()
                .push(m.clone());
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        self.faults
            .call("unmount", &target.display().to_string())
            .map_err(|e| Error::io(format!("unmounting {}", target.display()), e))?;
        let mut all = self.mounted.lock().unwrap();
        let stack = all.get_mut(target).ok_or_else(|| {
            Error::io(
                format!("unmounting {}", target.display()),
                std::io::Error::from_raw_os_error(libc::EINVAL),
            )
        })?;
        stack.pop();
        if stack.is_empty() {
            all.remove(target);
        }
        Ok(())
    }

    fn is_mounted(&self, target: &Path) -> bool {
        self.mounted.lock().unwrap().contains_key(target)
    }
}
