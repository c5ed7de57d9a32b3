//! The integration-test harness: every test starts its own real nookd **as the unprivileged
//! user `nooktest`**, with its own root, state directory, socket and config under a temporary
//! directory, and drives it through the real `nook` CLI run as that user.
//!
//! The tests themselves run as root (CI does), only to create those directories and to switch
//! to the test user with `setpriv`. Binaries are copied to a directory the test user can read
//! (the build tree may live under /root, which is 0700).

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The unprivileged user the daemons under test run as.
pub const USER: &str = "nooktest";

/// uid and gid of a user, from `id`.
pub fn ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let o = Command::new("id")
            .args([flag, user])
            .output()
            .expect("running id");
        assert!(
            o.status.success(),
            "user {user} does not exist: create it as .ci/run does (useradd -m {user})"
        );
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// Where the test binaries are, readable by every user.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        assert!(
            nix::unistd::getuid().is_root(),
            "integration tests run as root (they start nookd as the unprivileged user {USER}): run them through .ci/run or sudo"
        );
        // directories of earlier runs whose test process is gone
        if let Ok(rd) = std::fs::read_dir("/tmp") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(pid) = name.strip_prefix("nook-test-bin-") {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = PathBuf::from(format!("/tmp/nook-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, src) in [
            ("nookd", env!("CARGO_BIN_EXE_nookd")),
            ("nook", env!("CARGO_BIN_EXE_nook")),
            ("nook-shim", env!("CARGO_BIN_EXE_nook-shim")),
        ] {
            let dst = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            // a hard link costs nothing; copy only across filesystems
            if std::fs::hard_link(src, &tmp).is_err() {
                std::fs::copy(src, &tmp).unwrap();
            }
            std::fs::rename(&tmp, &dst).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    })
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

/// A command run as `user` with a clean environment (HOME, USER, PATH with the test binaries,
/// XDG_* from `env`).
pub fn as_user(user: &str, env: &[(&str, String)], program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        "--reset-env",
        "env",
    ]);
    c.arg(format!("HOME=/home/{user}"));
    c.arg(format!("USER={user}"));
    c.arg(format!(
        "PATH={}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        bin_dir().display()
    ));
    for (k, v) in env {
        c.arg(format!("{k}={v}"));
    }
    c.arg(program);
    c
}

/// The result of a command, with helpers that fail the test with its output.
pub struct Run {
    pub out: Output,
    pub what: String,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).to_string()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).to_string()
    }
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> String {
        assert!(
            self.out.status.success(),
            "`{}` failed ({}):\nstdout: {}\nstderr: {}",
            self.what,
            self.out.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }
    /// Asserts failure and returns stderr.
    pub fn fails(&self) -> String {
        assert!(
            !self.out.status.success(),
            "`{}` should have failed:\nstdout: {}\nstderr: {}",
            self.what,
            self.stdout(),
            self.stderr()
        );
        self.stderr()
    }
}

/// A nookd under test, with its own directories.
pub struct Nookd {
    pub base: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub runtime_dir: PathBuf,
    pub config: PathBuf,
    pub address: PathBuf,
    pub log: PathBuf,
    pub user: String,
    child: Option<Child>,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Nookd {
    /// Prepares directories and a config (`extra_config` is appended) without starting.
    pub fn prepare(extra_config: &str) -> Nookd {
        Self::prepare_for(USER, extra_config)
    }

    /// Prepares a daemon for another user.
    pub fn prepare_for(user: &str, extra_config: &str) -> Nookd {
        let _ = bin_dir();
        let (uid, gid) = ids(user);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let base = PathBuf::from(format!("/tmp/nook-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let runtime_dir = base.join("run");
        let root = base.join("root");
        let xdg_config = base.join("config");
        for d in [&runtime_dir, &xdg_config, &base.join("data")] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
            chown(d, uid, gid);
        }
        chown(&base, uid, gid);
        let config = base.join("config.toml");
        std::fs::write(&config, extra_config).unwrap();
        chown(&config, uid, gid);
        let state = runtime_dir.join("nook");
        Nookd {
            address: state.join("nook.sock"),
            log: base.join("nookd.log"),
            base,
            root,
            state,
            runtime_dir,
            config,
            user: user.to_string(),
            child: None,
        }
    }

    /// Starts a daemon with the default config and waits until its socket answers.
    pub fn start() -> Nookd {
        Self::start_with("")
    }

    /// Starts a daemon with extra config text.
    pub fn start_with(extra_config: &str) -> Nookd {
        let mut d = Self::prepare(extra_config);
        d.spawn();
        d.wait_ready();
        d
    }

    /// The environment the test user's commands get.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("XDG_RUNTIME_DIR", self.runtime_dir.display().to_string()),
            (
                "XDG_CONFIG_HOME",
                self.base.join("config").display().to_string(),
            ),
            (
                "XDG_DATA_HOME",
                self.base.join("data").display().to_string(),
            ),
            ("NOOK_ADDRESS", self.address.display().to_string()),
        ]
    }

    /// The nookd command line for this daemon, as the test user.
    pub fn nookd_cmd(&self) -> Command {
        let mut c = as_user(&self.user, &self.env(), "nookd");
        c.arg("--config")
            .arg(&self.config)
            .arg("--root")
            .arg(&self.root)
            .arg("--log-level")
            .arg("debug");
        c
    }

    /// Spawns nookd (logging to `self.log`).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .nookd_cmd()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning nookd");
        self.child = Some(child);
    }

    /// Waits until `nook version` answers (or fails the test with the daemon's log).
    pub fn wait_ready(&mut self) {
        let t0 = Instant::now();
        loop {
            if self.address.exists() && self.nook(&["version"]).out.status.success() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "nookd exited ({st}) before it was ready:\n{}",
                        self.log_text()
                    );
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "nookd not ready after 20 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Adopts a nookd started by the test itself (with an environment of its own), to be
    /// stopped and cleaned up as [`Nookd::spawn`]'s is.
    pub fn set_child(&mut self, child: Child) {
        self.child = Some(child);
    }

    /// nookd's pid (on the host).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not started").id()
    }

    /// The pause process holding the namespaces.
    pub fn pause_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.state.join("pause.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Runs `nook ARGS` as the test user against this daemon.
    pub fn nook(&self, args: &[&str]) -> Run {
        let mut c = as_user(&self.user, &self.env(), "nook");
        c.args(args).stdin(Stdio::null());
        let out = c.output().expect("running nook");
        Run {
            out,
            what: format!("nook {}", args.join(" ")),
        }
    }

    /// Runs `nook ARGS` with `input` on stdin.
    pub fn nook_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut c = as_user(&self.user, &self.env(), "nook");
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut ch = c.spawn().expect("running nook");
        let mut si = ch.stdin.take().unwrap();
        let input = input.to_vec();
        let w = std::thread::spawn(move || {
            let _ = si.write_all(&input);
        });
        let out = ch.wait_with_output().unwrap();
        let _ = w.join();
        Run {
            out,
            what: format!("nook {}", args.join(" ")),
        }
    }

    /// Runs a shell command as the test user inside nookd's user and mount namespaces.
    pub fn in_ns(&self, script: &str) -> Run {
        let pause = self.pause_pid().expect("no pause process");
        let mut c = as_user(&self.user, &self.env(), "nsenter");
        c.args([
            "--preserve-credentials",
            "-U",
            "-m",
            "-t",
            &pause.to_string(),
            "sh",
            "-c",
            script,
        ]);
        let out = c.output().expect("running nsenter");
        Run {
            out,
            what: format!("(in ns) {script}"),
        }
    }

    /// Sends a signal to nookd and waits for it to exit; returns its exit status.
    pub fn signal_and_wait(&mut self, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon not running");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "nookd did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs nookd (containers, shims and the pause process stay).
    pub fn kill9(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGKILL);
    }

    /// Starts nookd again on the same directories.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
        }
        self.spawn();
        self.wait_ready();
    }

    fn kill_pidfile(path: &Path) {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Nookd {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
        }
        // whatever outlived the daemon: shims, containers, link, pause
        if let Ok(o) = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "find {} -name shim.pid -o -name '*.pid' 2>/dev/null",
                self.state.display()
            ))
            .output()
        {
            for p in String::from_utf8_lossy(&o.stdout).lines() {
                Self::kill_pidfile(Path::new(p));
            }
        }
        // container processes left in the pause's namespaces die with the namespaces' holders
        if let Some(p) = self.pause_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if std::env::var_os("NOOK_KEEP_TEST_DIRS").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

/// A TCP proxy that slows responses down so a pull can be interrupted, and can be stopped.
pub struct SlowProxy {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowProxy {
    pub fn start(port: u16, upstream: u16, bytes_per_sec: usize) -> SlowProxy {
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<std::net::TcpStream> = Vec::new();
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        conns.push(c.try_clone().unwrap());
                        conns.push(up.try_clone().unwrap());
                        let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                        let (mut c3, mut up3) = (c, up);
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut c2, &mut up2);
                            let _ = up2.shutdown(std::net::Shutdown::Write);
                        });
                        std::thread::spawn(move || {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                match std::io::Read::read(&mut up3, &mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if std::io::Write::write_all(&mut c3, &buf[..n]).is_err() {
                                            break;
                                        }
                                        std::thread::sleep(Duration::from_secs_f64(
                                            n as f64 / bytes_per_sec as f64,
                                        ));
                                    }
                                }
                            }
                            let _ = c3.shutdown(std::net::Shutdown::Both);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for c in conns {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        });
        SlowProxy {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small tmpfs mounted on a daemon's root before it starts, to fill its disk in tests;
/// unmounted on drop (declare it before the [`Nookd`], so the daemon stops first).
pub struct SmallDisk {
    pub path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mb` MiB, owned by the daemon's user, on `d.root` (not started yet).
    pub fn mount(d: &Nookd, mb: u64) -> SmallDisk {
        let (uid, gid) = ids(&d.user);
        std::fs::create_dir_all(&d.root).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={mb}m,mode=0700,uid={uid},gid={gid}"))
            .arg("tmpfs")
            .arg(&d.root)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs on {}", d.root.display());
        SmallDisk {
            path: d.root.clone(),
        }
    }

    /// Grows (or shrinks) the tmpfs; the daemon's mount namespace sees the same filesystem.
    pub fn resize(&self, mb: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={mb}m")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "resizing the tmpfs on {}",
            self.path.display()
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        if let Some(base) = self.path.parent() {
            if std::env::var_os("NOOK_KEEP_TEST_DIRS").is_none() && !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(base);
            }
        }
    }
}

/// The one root step that delegates cgroups to the test user (`nook-rootless-setuptool.sh
/// delegate`; idempotent, once per test binary), for tests whose figures need the cgroup
/// (CRI metrics, critest's metrics specs).
pub fn delegate_cgroups() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let o = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("setuptool/nook-rootless-setuptool.sh"))
            .args(["delegate", "--no-boot-unit", USER])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "delegate {USER}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    });
}

/// A free TCP port on the host's loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) when the test lets go of it, a failed one too.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
