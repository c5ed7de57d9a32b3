//! The host link of the containers' network namespace: slirp4netns (or pasta), started by nookd
//! from the host's user namespace (just before it joins its own; pasta cannot enter the
//! namespace from inside it) and detached (own session), so that containers keep their network
//! while nookd restarts. nookd records its pid in `<state>/netlink.pid` and adopts a live one on
//! start; if the link dies, `nook plugins ls` says so and the next nookd start makes a new one.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::config::NetworkConfig;
use crate::error::{Error, Result};

pub use crate::network::TAP;

/// Which link driver is in use, and its process.
#[derive(Debug, Clone)]
pub struct Link {
    pub driver: String,
    pub pid: i32,
}

/// Resolves `auto` to a concrete driver name.
pub fn resolve_driver(cfg: &NetworkConfig) -> String {
    match cfg.driver.as_str() {
        "auto" => {
            if super::preflight::which("pasta").is_some() {
                "pasta".into()
            } else {
                "slirp4netns".into()
            }
        }
        d => d.to_string(),
    }
}

fn pid_file(state: &Path) -> PathBuf {
    state.join("netlink.pid")
}

/// Whether `pid` lives and its command name starts with one of `comms` (pasta re-executes
/// itself as `passt.avx2` and the like).
fn alive_with_comm(pid: i32, comms: &[&str]) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| comms.iter().any(|p| c.trim().starts_with(p)))
        .unwrap_or(false)
}

/// Returns the live link process recorded under `state`, if any.
pub fn adopt(state: &Path) -> Option<Link> {
    let text = std::fs::read_to_string(pid_file(state)).ok()?;
    let mut it = text.split_whitespace();
    let pid: i32 = it.next()?.parse().ok()?;
    let driver = it.next()?.to_string();
    let comm: &[&str] = if driver == "pasta" {
        &["pasta", "passt"]
    } else {
        &["slirp4netns"]
    };
    alive_with_comm(pid, comm).then_some(Link { driver, pid })
}

/// Starts the link for the pause process's network namespace and waits until it is configured.
/// Returns the child process too: the caller must reap it (we must not start a thread here,
/// because the process is about to join a user namespace, which needs a single thread).
pub fn start(
    cfg: &NetworkConfig,
    state: &Path,
    pause_pid: i32,
) -> Result<(Link, std::process::Child)> {
    let driver = resolve_driver(cfg);
    let mut cmd;
    let (ready_r, ready_w) =
        nix::unistd::pipe().map_err(|e| Error::Internal(format!("pipe: {e}")))?;
    use std::os::fd::{AsRawFd, IntoRawFd};
    let ready_w_raw = ready_w.as_raw_fd();
    match driver.as_str() {
        "slirp4netns" => {
            cmd = Command::new("slirp4netns");
            cmd.arg("--configure")
                .arg(format!("--mtu={}", cfg.mtu))
                .arg(format!("--ready-fd={ready_w_raw}"))
                .arg(format!(
                    "--api-socket={}",
                    state.join("slirp4netns.sock").display()
                ));
            if cfg.disable_host_loopback {
                cmd.arg("--disable-host-loopback");
            }
            if !cfg.ipv6_subnet.trim().is_empty() {
                // IPv6 out of the link (fd00::/64 on tap0, NATed by slirp4netns)
                cmd.arg("--enable-ipv6");
            }
            let _ = std::fs::remove_file(state.join("slirp4netns.sock"));
            cmd.arg(pause_pid.to_string()).arg(TAP);
        }
        "pasta" => {
            cmd = Command::new("pasta");
            cmd.args(["--config-net", "-q", "--foreground", "--no-map-gw"])
                .arg("--mtu")
                .arg(cfg.mtu.min(65520).to_string())
                .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
                .args(["--ns-ifname", TAP])
                // DNS at 10.0.2.3 as with slirp4netns: pasta forwards it to the host's first
                // resolver, which works even when that is a loopback one (127.0.0.53)
                .args(["--dns-forward", "10.0.2.3"]);
            if !cfg.disable_host_loopback {
                cmd.arg("--map-host-loopback").arg("10.0.2.2");
            }
            cmd.arg(pause_pid.to_string());
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown network driver {other:?}"
            )))
        }
    }
    let log = std::fs::File::create(state.join(format!("{driver}.log")))
        .map_err(|e| Error::io("creating the network link's log", e))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::io("log", e))?)
        .stderr(log);
    // SAFETY: setsid and fcntl are async-signal-safe; the closure runs in the forked child
    // before exec and touches no allocator.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // keep the ready pipe's write end open across exec
            let flags = libc::fcntl(ready_w_raw, libc::F_GETFD);
            libc::fcntl(ready_w_raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting {driver}"), e))?;
    drop(ready_w);
    let pid = child.id() as i32;
    if driver == "slirp4netns" {
        // slirp4netns writes "1" to the ready fd once the tap is configured
        let fd = ready_r.into_raw_fd();
        // SAFETY: fd is an owned pipe read end we just took out of its OwnedFd.
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut b = [0u8; 1];
        use std::io::Read;
        if f.read(&mut b).unwrap_or(0) == 0 {
            let msg = std::fs::read_to_string(state.join("slirp4netns.log")).unwrap_or_default();
            return Err(Error::Unavailable(format!(
                "slirp4netns exited before it was ready: {}",
                msg.lines().last().unwrap_or("no output").trim()
            )));
        }
    } else {
        drop(ready_r);
        // pasta --foreground configures before it daemonizes; wait for tap0 to appear
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if !alive_with_comm(pid, &["pasta", "passt"]) {
                let msg = std::fs::read_to_string(state.join("pasta.log")).unwrap_or_default();
                return Err(Error::Unavailable(format!(
                    "pasta exited before it was ready: {}",
                    msg.lines().last().unwrap_or("no output").trim()
                )));
            }
            if crate::network::link_exists_in(pause_pid, TAP) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::fs::write(pid_file(state), format!("{pid} {driver}\n"))
        .map_err(|e| Error::io("writing netlink.pid", e))?;
    Ok((Link { driver, pid }, child))
}

/// Stops the link process recorded under `state`.
pub fn stop(state: &Path) {
    if let Some(l) = adopt(state) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(l.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = std::fs::remove_file(pid_file(state));
}
