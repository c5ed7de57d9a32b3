//! The daemon lock: one nookd per root and per state directory.
//!
//! The lock is an `flock` on `<dir>/nookd.lock`, which also holds the pid of the nookd holding
//! it, so a second daemon can say which one is running.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

/// Takes the lock in `dir` (creating the directory, mode 0700) or says who holds it.
pub fn lock(dir: &Path, what: &str) -> Result<DaemonLock> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {what} {}", dir.display()), e))?;
    let path = dir.join("nookd.lock");
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = pid.trim();
        return Err(Error::Precondition(format!(
            "another nookd (pid {}) is already running with {what} {}: stop it first (`systemctl --user stop nook` or `kill {}`), or pass another --root/--state",
            if pid.is_empty() { "unknown" } else { pid },
            dir.display(),
            if pid.is_empty() { "<pid>" } else { pid },
        )));
    }
    file.set_len(0).ok();
    file.rewind().ok();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(DaemonLock { _file: file })
}

#[cfg(test)]
mod tests {
    #[test]
    fn second_lock_names_the_first() {
        let d = tempfile::tempdir().unwrap();
        let _l = super::lock(d.path(), "root").unwrap();
        // flock is per open file description: a second open in the same process conflicts too
        let e = super::lock(d.path(), "root").unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    }
}
