//! Detaching `nook-shim` from nookd before anything else runs: descriptors it must not keep are
//! closed, stdin and stderr go to /dev/null and `shim.log`, and a double fork with setsid makes
//! it nobody's child but init's, so that it outlives nookd.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use super::files;

/// Closes every inherited descriptor above stderr but those in `keep`.
pub(super) fn close_inherited(keep: &[i32]) {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2 && !keep.contains(fd))
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: runs before anything else opened a descriptor we own (the directory handle
        // of the listing above is already closed); closing an inherited fd no one uses.
        unsafe { libc::close(fd) };
    }
}

/// Detaches: stdin from /dev/null, stderr to `<bundle>/shim.log`, double fork with setsid in
/// between. Stdout (nookd's readiness pipe) stays open until [`ready`]. Must run before any
/// thread exists.
pub(super) fn daemonize(bundle: &Path, keep: &[i32]) -> std::io::Result<()> {
    use nix::unistd::{dup2_stderr, dup2_stdin, fork, setsid, ForkResult};
    close_inherited(keep);
    let null = File::open("/dev/null")?;
    dup2_stdin(null.as_fd())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(bundle.join(files::SHIM_LOG))?;
    dup2_stderr(log.as_fd())?;
    // SAFETY: single-threaded here (no runtime yet); the parent only calls _exit.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {
            // SAFETY: _exit is async-signal-safe and skips atexit handlers meant for the child.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Child => {}
    }
    setsid()?;
    // SAFETY: as above, still single-threaded.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Child => {}
    }
    Ok(())
}
