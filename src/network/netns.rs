//! Network namespaces from a multi-threaded process: the network namespace is per thread, so
//! every operation runs on a fresh OS thread that joins (or creates) the namespace and exits
//! afterwards; no tokio worker ever changes namespace. Only the network namespace changes (nookd
//! is already in its user namespace, which a multi-threaded process could not join).

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Runs `f` on a new OS thread inside the network namespace at `path` (a /proc/PID/ns/net or a
/// bind-mounted namespace file) and returns its result.
pub fn with_netns<T, F>(path: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let ns = std::fs::File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("opening network namespace {}: {e}", path.display()),
        )
    })?;
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("nook-netns".into())
        .spawn(move || {
            // SAFETY: setns on a valid namespace fd; affects only this thread, which exits
            // when f returns.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("joining network namespace {shown}: {e}"),
                ));
            }
            drop(ns);
            f()
        })
        .map_err(|e| io::Error::new(e.kind(), format!("spawning a thread: {e}")))?
        .join()
        .map_err(|_| io::Error::other("a network namespace thread panicked"))?
}

/// Creates a new network namespace (owned by the caller's user namespace) kept alive by a bind
/// mount on `path`, with `lo` up.
pub fn create_netns(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::create(path)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
    let p = path.to_path_buf();
    let res = std::thread::Builder::new()
        .name("nook-netns".into())
        .spawn(move || -> io::Result<()> {
            // SAFETY: unshare of the network namespace affects only this thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("creating a network namespace: {e}"),
                ));
            }
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &p,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                io::Error::from_raw_os_error(e as i32)
                    .with_context(&format!("bind-mounting the namespace on {}", p.display()))
            })?;
            super::loopback_up()
        })
        .map_err(|e| io::Error::new(e.kind(), format!("spawning a thread: {e}")))?
        .join()
        .map_err(|_| io::Error::other("a network namespace thread panicked"))?;
    if res.is_err() {
        let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(path);
    }
    res
}

/// Unmounts and deletes a namespace file made by [`create_netns`]; a missing file is fine.
pub fn remove_netns(path: &Path) -> io::Result<()> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(io::Error::from_raw_os_error(e as i32)
                .with_context(&format!("unmounting {}", path.display())))
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether `path` is a mounted network namespace (a bind mount made by [`create_netns`]).
pub fn is_netns(path: &Path) -> bool {
    // nsfs files report their inode type via the magic of the filesystem they live on
    match nix::sys::statfs::statfs(path) {
        Ok(s) => s.filesystem_type().0 == 0x6e736673, // NSFS_MAGIC
        Err(_) => false,
    }
}

trait Context {
    fn with_context(self, what: &str) -> io::Error;
}

impl Context for io::Error {
    fn with_context(self, what: &str) -> io::Error {
        io::Error::new(self.kind(), format!("{what}: {self}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn create_join_remove() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("netns/a");
        create_netns(&p).unwrap();
        assert!(is_netns(&p));
        let links = with_netns(&p, super::super::netlink::links).unwrap();
        assert_eq!(links, vec!["lo".to_string()]);
        // a different namespace from ours
        let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let there = with_netns(&p, || std::fs::read_link("/proc/thread-self/ns/net")).unwrap();
        assert_ne!(here, there);
        remove_netns(&p).unwrap();
        assert!(!p.exists());
        remove_netns(&p).unwrap();
    }
}
