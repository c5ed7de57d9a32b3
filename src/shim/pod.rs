//! The pod holder: the small process of nook's own that holds a pod's shared namespaces, in
//! place of Kubernetes' pause image. `nook-shim --pod-holder ID NETNS HOSTNAME` joins the
//! pod's network namespace (made and wired by the network subsystem), makes new IPC, UTS and
//! PID namespaces, sets the hostname, and forks the holder: pid 1 of the new PID namespace,
//! named `nook-pod`, reaping whatever is orphaned into it and otherwise sleeping. The first
//! process prints the holder's pid and exits, so the holder is nobody's child but init's and
//! outlives nookd; containers join its namespaces through `/proc/PID/ns/*`.

use std::io::Write;
use std::os::fd::AsFd;

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{fork, ForkResult};

/// The first argument of `nook-shim` that selects the pod holder.
pub const HOLDER_ARG: &str = "--pod-holder";

/// The holder's process name (`/proc/PID/comm`).
pub const HOLDER_COMM: &str = "nook-pod";

/// `nook-shim --pod-holder ID NETNS HOSTNAME`: prints the holder's pid (or `E<error>`) on
/// stdout and returns the exit code. Runs single-threaded, in nook's user namespace.
pub fn main(args: &[std::ffi::OsString]) -> i32 {
    let [_id, netns, hostname] = args else {
        println!("Eusage: nook-shim {HOLDER_ARG} ID NETNS HOSTNAME");
        return 2;
    };
    let setup = || -> Result<(), String> {
        let f = std::fs::File::open(netns)
            .map_err(|e| format!("opening the pod's network namespace {netns:?}: {e}"))?;
        setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("joining the pod's network namespace: {e}"))?;
        unshare(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("unshare(ipc, uts, pid): {e}"))?;
        let h = hostname.to_string_lossy();
        if !h.is_empty() {
            nix::unistd::sethostname(h.as_ref()).map_err(|e| format!("sethostname: {e}"))?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        println!("E{e}");
        return 1;
    }
    let _ = std::io::stdout().flush();
    // SAFETY: nook-shim is single-threaded here; the child only makes async-signal-safe calls
    // and plain syscalls before it sleeps.
    match unsafe { fork() } {
        Err(e) => {
            println!("Efork: {e}");
            1
        }
        Ok(ForkResult::Parent { child }) => {
            println!("{child}");
            let _ = std::io::stdout().flush();
            0
        }
        Ok(ForkResult::Child) => holder(),
    }
}

extern "C" fn on_sigchld(_: libc::c_int) {}

/// Pid 1 of the pod's PID namespace: detached, stdio on /dev/null, reaping until killed.
fn holder() -> ! {
    let _ = nix::sys::prctl::set_name(c"nook-pod");
    let _ = nix::unistd::setsid();
    if let Ok(null) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto our own stdio descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    crate::bootstrap::close_fds_from(3);
    let _ = std::env::set_current_dir("/");
    // SAFETY: plain signal-mask and handler set-up of this single-threaded process; the
    // handler does nothing (it only wakes sigsuspend).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigchld as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &block, std::ptr::null_mut());
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            libc::sigsuspend(&none);
        }
    }
}

/// Whether `pid` is the holder of pod `id` (its name and command line say so): a recorded pid
/// that was reused by another process is not taken for the holder.
pub fn alive(pid: i32, id: &str) -> bool {
    if pid <= 0 {
        return false;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != HOLDER_COMM {
        return false;
    }
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmd.split(|b| *b == 0).any(|a| a == id.as_bytes())
}
