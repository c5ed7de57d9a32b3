//! The shim's one reaper: it never calls `waitpid` on a specific child; one SIGCHLD-driven
//! loop collects every exit (runtime invocations, the container's init, exec'd processes,
//! orphans adopted as a subreaper) and hands it to whoever registered the pid; exits nobody
//! registered yet are kept until someone does.

use std::collections::HashMap;
use std::sync::Mutex;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::io::lock;

/// Collects exits of every child (and adopted orphan).
#[derive(Default)]
pub(super) struct Reaper {
    pub(super) waiters: Mutex<HashMap<i32, oneshot::Sender<WaitStatus>>>,
    pub(super) unclaimed: Mutex<HashMap<i32, WaitStatus>>,
}

impl Reaper {
    /// A receiver that resolves when `pid` has exited (at once if it already has).
    pub(super) fn wait_for(&self, pid: i32) -> oneshot::Receiver<WaitStatus> {
        let (tx, rx) = oneshot::channel();
        if let Some(st) = lock(&self.unclaimed).remove(&pid) {
            let _ = tx.send(st);
        } else {
            lock(&self.waiters).insert(pid, tx);
        }
        rx
    }

    pub(super) fn reap(&self) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(st) => {
                    let Some(pid) = st.pid() else { continue };
                    if !matches!(st, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                        continue;
                    }
                    let pid = pid.as_raw();
                    match lock(&self.waiters).remove(&pid) {
                        Some(tx) => {
                            let _ = tx.send(st);
                        }
                        None => {
                            lock(&self.unclaimed).insert(pid, st);
                        }
                    }
                }
            }
        }
    }
}
