//! How an ordinary user's `nookd` becomes "root" without root.
//!
//! 1. [`preflight`] checks every prerequisite and turns each missing one into a one-line error
//!    that says what to do: /etc/subuid and /etc/subgid entries, setuid newuidmap/newgidmap,
//!    XDG_RUNTIME_DIR, the network helper and /dev/net/tun.
//! 2. [`enter`] puts the calling process (which must still be single-threaded: no tokio yet)
//!    into nook's user and mount namespaces. They are held by a small *pause process*
//!    (`nook-pause`, as podman does), created on first start: it unshares a user namespace
//!    (whose maps the parent writes with newuidmap/newgidmap: the user → 0, the subordinate range
//!    → 1..N), a mount namespace with private propagation and the containers' network namespace.
//!    nookd joins only the user and mount namespaces and stays in the host's network namespace,
//!    so pulls reach 127.0.0.1 and published ports listen on the host. Because the pause process
//!    outlives nookd, a restarted nookd (after SIGKILL, or `systemctl --user restart nook`)
//!    joins the *same* namespaces and finds its shims, containers and mounts where it left them.

pub mod lock;
pub mod preflight;
pub mod slirp;

pub use preflight::{preflight, Preflight};

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{fork, ForkResult, Pid};

use crate::error::{Error, Result};

/// The process name of the pause process (`/proc/PID/comm`).
pub const PAUSE_COMM: &str = "nook-pause";

/// What [`enter`] did.
#[derive(Debug, Clone)]
pub struct Entered {
    /// The pause process holding the namespaces.
    pub pause_pid: i32,
    /// Whether the namespaces were created now (false: joined existing ones).
    pub created: bool,
}

/// `<state>/pause.pid`.
pub fn pause_pid_file(state: &Path) -> PathBuf {
    state.join("pause.pid")
}

/// Returns the pid of a live pause process recorded under `state`, if any.
pub fn live_pause(state: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pause_pid_file(state))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim() != PAUSE_COMM {
        return None;
    }
    // it must be ours: same owner as us
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid_line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let real: u32 = uid_line.split_whitespace().nth(1)?.parse().ok()?;
    (real == nix::unistd::getuid().as_raw()).then_some(pid)
}

/// Enters nook's namespaces, creating them (and the pause process) if needed.
///
/// Must be called while the process is single-threaded: `setns(CLONE_NEWUSER)` refuses
/// multi-threaded callers.
///
/// `host_side` runs with the pause process's pid while still in the host's user namespace,
/// just before joining: helpers that must live outside (the network link) start there.
pub fn enter(pre: &Preflight, state: &Path, host_side: impl FnOnce(i32)) -> Result<Entered> {
    if let Some(pid) = live_pause(state) {
        host_side(pid);
        join(pid)?;
        return Ok(Entered {
            pause_pid: pid,
            created: false,
        });
    }
    let pid = create_pause(pre)?;
    std::fs::write(pause_pid_file(state), format!("{pid}\n"))
        .map_err(|e| Error::io(format!("writing {}", pause_pid_file(state).display()), e))?;
    host_side(pid);
    join(pid)?;
    Ok(Entered {
        pause_pid: pid,
        created: true,
    })
}

fn join(pid: i32) -> Result<()> {
    let open = |ns: &str| {
        File::open(format!("/proc/{pid}/ns/{ns}"))
            .map_err(|e| Error::io(format!("opening /proc/{pid}/ns/{ns}"), e))
    };
    let user = open("user")?;
    let mnt = open("mnt")?;
    setns(user.as_fd(), CloneFlags::CLONE_NEWUSER).map_err(|e| {
        Error::Internal(format!(
            "cannot join nook's user namespace (pause process {pid}): {e}"
        ))
    })?;
    setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS).map_err(|e| {
        Error::Internal(format!(
            "cannot join nook's mount namespace (pause process {pid}): {e}"
        ))
    })?;
    // We now are uid 0 inside; make the gid 0 too and drop the host's supplementary groups,
    // which are unmapped here.
    let _ = nix::unistd::setgroups(&[]);
    nix::unistd::setresgid(0.into(), 0.into(), 0.into())
        .map_err(|e| Error::Internal(format!("setresgid(0) in the user namespace: {e}")))?;
    nix::unistd::setresuid(0.into(), 0.into(), 0.into())
        .map_err(|e| Error::Internal(format!("setresuid(0) in the user namespace: {e}")))?;
    std::env::set_current_dir("/").ok();
    Ok(())
}

fn pipe() -> Result<(File, File)> {
    let (r, w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe().map_err(|e| Error::Internal(format!("pipe: {e}")))?;
    Ok((File::from(r), File::from(w)))
}

/// Forks the pause process, maps its user namespace and waits until it holds all namespaces.
fn create_pause(pre: &Preflight) -> Result<i32> {
    let (mut c2p_r, c2p_w) = pipe()?;
    let (p2c_r, mut p2c_w) = pipe()?;
    // SAFETY: nookd is single-threaded at this point (called before any runtime or thread is
    // started), so the child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| Error::Internal(format!("fork: {e}")))? {
        ForkResult::Child => {
            drop(c2p_r);
            drop(p2c_w);
            let code = pause_child(c2p_w, p2c_r);
            // SAFETY: _exit is always safe; we must not run the parent's destructors here.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(c2p_w);
            drop(p2c_r);
            let fail = |msg: String| -> Error {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                Error::Precondition(msg)
            };
            let mut b = [0u8; 1];
            if c2p_r.read_exact(&mut b).is_err() || b[0] != b'U' {
                let mut rest = String::new();
                let _ = c2p_r.read_to_string(&mut rest);
                return Err(fail(format!(
                    "cannot create a user namespace: {} (check `sysctl user.max_user_namespaces` and, on Ubuntu, kernel.apparmor_restrict_unprivileged_userns)",
                    rest.trim()
                )));
            }
            if let Err(e) = write_maps(pre, child) {
                return Err(fail(e.to_string()));
            }
            let _ = p2c_w.write_all(b"M");
            let mut rest = String::new();
            let _ = c2p_r.read_to_string(&mut rest);
            // warnings (lines starting with W) come before the final R or E<error>
            let (notes, end) = match rest.rfind('\n') {
                Some(i) => rest.split_at(i + 1),
                None => ("", rest.as_str()),
            };
            for w in notes.lines().filter_map(|l| l.strip_prefix('W')) {
                tracing::warn!("{w}");
            }
            if end != "R" {
                return Err(fail(format!(
                    "setting up nook's namespaces failed: {}",
                    end.trim_start_matches('E').trim()
                )));
            }
            Ok(child.as_raw())
        }
    }
}

fn write_maps(pre: &Preflight, child: Pid) -> Result<()> {
    let run = |tool: &Path, id: u32, range: &preflight::SubRange, file: &str| -> Result<()> {
        let out = Command::new(tool)
            .arg(child.as_raw().to_string())
            .args(["0", &id.to_string(), "1"])
            .args(["1", &range.start.to_string(), &range.count.to_string()])
            .output()
            .map_err(|e| Error::io(format!("running {}", tool.display()), e))?;
        if !out.status.success() {
            return Err(Error::Precondition(format!(
                "{} failed ({}): {} — check the {} line for {} and that {} is setuid root",
                tool.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                file,
                pre.user,
                tool.display()
            )));
        }
        Ok(())
    };
    run(&pre.newuidmap, pre.uid, &pre.subuid, "/etc/subuid")?;
    run(&pre.newgidmap, pre.gid, &pre.subgid, "/etc/subgid")?;
    Ok(())
}

/// The pause process's life: unshare, wait for maps, finish the namespaces, then sleep forever.
fn pause_child(mut to_parent: File, mut from_parent: File) -> i32 {
    let _ = nix::sys::prctl::set_name(c"nook-pause");
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        let _ = write!(to_parent, "E{e}");
        return 1;
    }
    let _ = to_parent.write_all(b"U");
    let mut b = [0u8; 1];
    if from_parent.read_exact(&mut b).is_err() || b[0] != b'M' {
        return 1;
    }
    let mut setup = || -> std::result::Result<(), String> {
        nix::unistd::setgroups(&[]).ok();
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setresgid: {e}"))?;
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setresuid: {e}"))?;
        unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare(mount, network): {e}"))?;
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("making / private: {e}"))?;
        // a writable /run, as rootlesskit's copy-up gives: containerd's clients run here (see
        // `nook-rootless-setuptool.sh nsenter`) make their FIFOs under /run/containerd
        if let Err(e) = copy_up_run() {
            let _ = writeln!(to_parent, "W/run stays read-only in nookd's namespace: {e}");
        }
        crate::network::loopback_up().map_err(|e| format!("bringing up lo: {e}"))?;
        Ok(())
    };
    if let Err(e) = setup() {
        let _ = write!(to_parent, "E{e}");
        return 1;
    }
    let _ = to_parent.write_all(b"R");
    drop(to_parent);
    drop(from_parent);
    let _ = nix::unistd::setsid();
    // Close every inherited descriptor except stdio-as-/dev/null: the pause holds nothing.
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto stdio descriptors of our own process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    close_fds_from(3);
    let _ = std::env::set_current_dir("/");
    loop {
        nix::unistd::pause();
    }
}

/// Makes /run writable inside the new mount namespace without hiding anything: a tmpfs
/// holding a bind of every directory and file of the old /run (symlinks copied) is moved onto
/// /run. Runs in the single-threaded pause child, as root of the new user namespace.
fn copy_up_run() -> std::result::Result<(), String> {
    use nix::mount::{mount, MsFlags};
    let stage = std::path::PathBuf::from(format!("/tmp/.nook-run-{}", std::process::id()));
    std::fs::create_dir(&stage).map_err(|e| format!("mkdir {}: {e}", stage.display()))?;
    let res = (|| {
        mount(
            Some("tmpfs"),
            &stage,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=755"),
        )
        .map_err(|e| format!("tmpfs: {e}"))?;
        for e in std::fs::read_dir("/run").map_err(|e| format!("reading /run: {e}"))? {
            let e = e.map_err(|e| format!("reading /run: {e}"))?;
            let (from, to) = (e.path(), stage.join(e.file_name()));
            let ft = e
                .file_type()
                .map_err(|e| format!("{}: {e}", from.display()))?;
            if ft.is_symlink() {
                if let Ok(t) = std::fs::read_link(&from) {
                    let _ = std::os::unix::fs::symlink(t, &to);
                }
                continue;
            }
            let made = if ft.is_dir() {
                std::fs::create_dir(&to)
            } else {
                std::fs::File::create(&to).map(|_| ())
            };
            if made.is_err() {
                continue;
            }
            // an entry that cannot be bound (gone meanwhile) is left out, not fatal
            let _ = mount(
                Some(&from),
                &to,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            );
        }
        mount(
            Some(&stage),
            "/run",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|e| format!("moving the tmpfs onto /run: {e}"))
    })();
    if res.is_err() {
        let _ = nix::mount::umount2(&stage, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(&stage);
    res
}

/// Closes every descriptor >= `from` (used after fork, before living on).
pub fn close_fds_from(from: i32) {
    // SAFETY: close_range only closes descriptors of this process; nothing else holds them
    // in the single-threaded child.
    unsafe {
        libc::syscall(libc::SYS_close_range, from as libc::c_uint, u32::MAX, 0u32);
    }
}

/// Reads `/proc/<pid>/uid_map` (or gid_map) as (inside, outside, count) triples.
pub fn read_id_map(pid: &str, which: &str) -> Vec<(u32, u32, u32)> {
    std::fs::read_to_string(format!("/proc/{pid}/{which}"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: Vec<u32> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 3).then(|| (v[0], v[1], v[2]))
        })
        .collect()
}

/// Stops the pause process (and so the namespaces, once nothing else is in them).
pub fn stop_pause(state: &Path) {
    if let Some(pid) = live_pause(state) {
        let pid = Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        // reap it if it is our child (the nookd that created it); ECHILD otherwise
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    let _ = std::fs::remove_file(pause_pid_file(state));
}
