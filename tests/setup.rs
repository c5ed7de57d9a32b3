//! Setup and operations, tested for real: `nook-rootless-setuptool.sh` driving a real
//! `systemd --user` of an unprivileged user (install → active → restart → uninstall), `check` for a
//! user without subordinate ids, shellcheck on the scripts, and the docs held against the code
//! (every config key in docs/config.md, exactly the CLI's commands in docs/cli.md).
//!
//! The tests run as root (as CI does) only to create users and to start that user's
//! `systemd --user` the way DESIGN.md describes (a delegated cgroup, `/run/user/UID`); every
//! nook command runs as the user.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The user whose `systemd --user` the install test drives (its own, so that its unit and
/// default directories do not collide with the daemons other tests start as `nooktest`).
const SETUP_USER: &str = "nooksetup";
/// A user without /etc/subuid and /etc/subgid entries.
const NOSUB_USER: &str = "nooknosub";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool() -> PathBuf {
    repo().join("setuptool/nook-rootless-setuptool.sh")
}

fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

fn need_root() {
    assert!(
        is_root(),
        "this test runs as root (it creates users and starts their systemd --user): run it through .ci/run or sudo"
    );
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {c:?}: {e}"))
}

/// uid of a user, creating it (`useradd -m ARGS NAME`) if missing.
fn ensure_user(name: &str, args: &[&str]) -> u32 {
    let id = |n: &str| -> Option<u32> {
        let o = Command::new("id").args(["-u", n]).output().ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .flatten()
    };
    if let Some(uid) = id(name) {
        return uid;
    }
    let o = run(Command::new("useradd").arg("-m").args(args).arg(name));
    assert!(o.status.success(), "useradd {name}: {}", text(&o));
    id(name).expect("the user just created")
}

fn has_subid(user: &str, file: &str) -> bool {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').next() == Some(user))
}

/// A command run as `user` with a clean login-like environment.
fn as_user(user: &str, uid: u32, path_prefix: &str, program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        "--reset-env",
        "env",
        &format!("HOME=/home/{user}"),
        &format!("USER={user}"),
        &format!("LOGNAME={user}"),
        &format!("XDG_RUNTIME_DIR=/run/user/{uid}"),
        &format!("DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus"),
        &format!("PATH={path_prefix}/usr/local/bin:/usr/bin:/bin"),
        program,
    ]);
    c
}

// ------------------------------------------------------------------------------------------------
// Scripts

#[test]
fn shellcheck_passes_on_the_scripts() {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(repo().join("setuptool"))
        .expect("setuptool/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    scripts.push(repo().join("docs/gen-cli.sh"));
    assert!(scripts
        .iter()
        .any(|p| p.ends_with("nook-rootless-setuptool.sh")));
    let o = Command::new("shellcheck")
        .arg("--shell=bash")
        .args(&scripts)
        .output()
        .expect("shellcheck is installed (apt-get install shellcheck)");
    assert!(o.status.success(), "shellcheck: {}", text(&o));
}

#[test]
fn setuptool_help_and_bad_arguments() {
    let o = run(Command::new("bash").arg(tool()).arg("--help"));
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for w in ["check", "install", "uninstall", "--purge", "delegate"] {
        assert!(out.contains(w), "--help does not mention {w}: {out}");
    }
    let o = run(Command::new("bash").arg(tool()).arg("frobnicate"));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown argument 'frobnicate'"),
        "{}",
        text(&o)
    );
}

#[test]
fn setuptool_refuses_root() {
    if !is_root() {
        return;
    }
    for cmd in ["check", "install", "uninstall"] {
        let o = run(Command::new("bash").arg(tool()).arg(cmd));
        assert!(!o.status.success(), "{cmd} as root should fail");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("do not run this as root"),
            "{}",
            text(&o)
        );
    }
}

/// `delegate USER`, the one root step: refused for an ordinary user and without a user; as root it
/// gives the user a cgroup subtree in every v1 hierarchy of this hybrid host (owned by the user,
/// cpusets copied) or, on cgroup v2, the `user@.service` drop-in; running it again changes
/// nothing; the boot unit makes it again at boot. `check` then reports the controllers, and tells
/// a user without them the command.
#[test]
fn delegate_gives_cgroups_and_check_reports_them() {
    need_root();
    let user = "nooktest";
    let uid = ensure_user(user, &[]);
    let dir = copy_tool_for(user);
    let script = dir.join("setuptool/nook-rootless-setuptool.sh");
    let o = run(as_user(user, uid, "", "bash")
        .arg(&script)
        .args(["delegate", user]));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("run it as root"),
        "{}",
        text(&o)
    );
    let o = run(Command::new("bash").arg(tool()).arg("delegate"));
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("needs the user"));
    let o = run(Command::new("bash")
        .arg(tool())
        .args(["delegate", "no-such-user-x"]));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no such user"),
        "{}",
        text(&o)
    );
    for _ in 0..2 {
        let o = run(Command::new("bash").arg(tool()).args(["delegate", user]));
        assert!(o.status.success(), "{}", text(&o));
    }
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let conf =
            std::fs::read_to_string("/etc/systemd/system/user@.service.d/delegate.conf").unwrap();
        assert!(
            conf.contains("Delegate=cpu cpuset io memory pids"),
            "{conf}"
        );
    } else {
        use std::os::unix::fs::MetadataExt;
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let mut n = 0;
        for l in mounts.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2") {
                let sub = PathBuf::from(f[1]).join(format!("nook/user-{uid}"));
                let m =
                    std::fs::metadata(&sub).unwrap_or_else(|e| panic!("{}: {e}", sub.display()));
                assert_eq!(m.uid(), uid, "{} not the user's", sub.display());
                assert_eq!(
                    std::fs::metadata(sub.join("cgroup.procs")).unwrap().uid(),
                    uid
                );
                if sub.join("cpuset.cpus").exists() {
                    let cpus = std::fs::read_to_string(sub.join("cpuset.cpus")).unwrap();
                    assert!(!cpus.trim().is_empty(), "cpuset.cpus not copied");
                }
                n += 1;
            }
        }
        assert!(n >= 5, "only {n} hierarchies delegated");
        let unit =
            std::fs::read_to_string("/etc/systemd/system/nook-cgroup-delegate@.service").unwrap();
        assert!(unit.contains("delegate --no-boot-unit %i"), "{unit}");
        // the boot unit's command (as systemd would run it) works
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap()
            .replace("%i", user);
        let o = run(Command::new("sh").arg("-c").arg(&exec));
        assert!(o.status.success(), "{exec}: {}", text(&o));
    }
    let o = run(as_user(user, uid, "", "bash").arg(&script).arg("check"));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let line = out
        .lines()
        .find(|l| l.contains("controllers delegated to you"))
        .unwrap_or_else(|| panic!("no delegated line:\n{out}"));
    assert!(
        line.starts_with("[OK]") && line.contains("memory") && line.contains("pids"),
        "{line}"
    );
    // a user without delegation is told the command
    let other = "nookother";
    let ouid = ensure_user(other, &[]);
    let odir = copy_tool_for(other);
    let o = run(as_user(other, ouid, "", "bash")
        .arg(odir.join("setuptool/nook-rootless-setuptool.sh"))
        .arg("check"));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    if !out.contains("controllers delegated to you") {
        let line = out
            .lines()
            .find(|l| l.contains("not delegated to nookother"))
            .unwrap_or_else(|| panic!("no cgroup line:\n{out}"));
        assert!(
            line.starts_with("[WARN]") && line.contains("delegate nookother"),
            "{line}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(odir);
}

/// `check` for a user without subordinate ids names the file, the user and the usermod command,
/// and exits non-zero.
#[test]
fn check_without_subuid_names_the_problem() {
    need_root();
    let uid = ensure_user(
        NOSUB_USER,
        &["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"],
    );
    assert!(
        !has_subid(NOSUB_USER, "/etc/subuid") && !has_subid(NOSUB_USER, "/etc/subgid"),
        "{NOSUB_USER} must have no /etc/subuid or /etc/subgid entry (.ci/setup-users removes them)"
    );
    let dir = copy_tool_for(NOSUB_USER);
    let o = run(as_user(NOSUB_USER, uid, "", "bash")
        .arg(dir.join("setuptool/nook-rootless-setuptool.sh"))
        .arg("check"));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for file in ["/etc/subuid", "/etc/subgid"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("[FAIL] no entry for {NOSUB_USER} in {file}")))
            .unwrap_or_else(|| panic!("no [FAIL] line for {file}:\n{out}"));
        let opt = if file.ends_with("subuid") {
            "--add-subuids"
        } else {
            "--add-subgids"
        };
        assert!(
            line.contains(&format!("-> sudo usermod {opt} "))
                && line.contains(&format!(" {NOSUB_USER}   (adds the line \"{NOSUB_USER}:"))
                && line.ends_with(":65536\")"),
            "the fix is not the exact usermod command: {line}"
        );
    }
    assert!(out.contains("must-have prerequisite(s) failed"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Copies setuptool/ and systemd-user/ where `user` can read them (the tree may be under /root).
fn copy_tool_for(user: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/nook-setuptool-{user}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["setuptool", "systemd-user", "scripts"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(repo().join(sub)).unwrap().flatten() {
            let dst = dir.join(sub).join(e.file_name());
            std::fs::copy(e.path(), &dst).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(dir.join(sub), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

// ------------------------------------------------------------------------------------------------
// systemd --user

/// A running `systemd --user` of a user, started as DESIGN.md describes; stopped on drop if we
/// started it.
struct UserManager {
    user: String,
    uid: u32,
    child: Option<Child>,
}

impl UserManager {
    fn runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/user/{}", self.uid))
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        run(as_user(&self.user, self.uid, "", "systemctl")
            .arg("--user")
            .args(args))
    }

    fn answers(&self) -> bool {
        self.runtime_dir().join("systemd/private").exists()
            && self.systemctl(&["show-environment"]).status.success()
    }

    fn start(user: &str, uid: u32) -> UserManager {
        let mut m = UserManager {
            user: user.into(),
            uid,
            child: None,
        };
        if m.answers() {
            return m;
        }
        std::fs::create_dir_all("/run/systemd/system").unwrap();
        let rt = m.runtime_dir();
        std::fs::create_dir_all(&rt).unwrap();
        std::os::unix::fs::chown(&rt, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
        // a cgroup the manager may write (v2: unified on hybrid hosts, else the root)
        let base = if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
            "/sys/fs/cgroup/unified"
        } else {
            "/sys/fs/cgroup"
        };
        let cg = format!("{base}/user.slice/user-{uid}.slice/user@{uid}.service");
        std::fs::create_dir_all(&cg).unwrap();
        let o = run(Command::new("chown").args(["-R", &format!("{user}:"), &cg]));
        assert!(o.status.success(), "chown {cg}: {}", text(&o));
        let script = format!(
            "echo $$ > {cg}/cgroup.procs && exec setpriv --reuid={uid} --regid={uid} --init-groups env -i HOME=/home/{user} USER={user} LOGNAME={user} XDG_RUNTIME_DIR={rt} PATH=/usr/bin:/bin /lib/systemd/systemd --user",
            rt = rt.display()
        );
        let log = std::fs::File::create(format!("/tmp/nook-systemd-{user}.log")).unwrap();
        let child = Command::new("setsid")
            .args(["bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting systemd --user");
        m.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !m.answers() {
            assert!(
                Instant::now() < deadline,
                "systemd --user of {user} did not come up: {}",
                std::fs::read_to_string(format!("/tmp/nook-systemd-{user}.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = self.systemctl(&["exit"]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Pids of the processes of `uid` whose /proc/PID/comm is `comm`.
fn pids_of(uid: u32, comm: &str) -> Vec<i32> {
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(c) = std::fs::read_to_string(e.path().join("comm")) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let owner = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        if c.trim() == comm && owner == Some(uid) && !zombie {
            v.push(pid);
        }
    }
    v
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// install → the unit is active, `nook version` answers and `nook run --rm busybox echo ok` prints
/// ok → a second install is harmless → `systemctl --user restart nook` gives a new nookd while a
/// running container keeps running (same process, `nook ps`, `nook exec`) → uninstall stops
/// nookd and removes the unit but keeps data and containers → `uninstall --purge` ends them.
#[test]
fn setuptool_install_restart_uninstall_with_real_systemd_user() {
    need_root();
    let uid = ensure_user(SETUP_USER, &[]);
    assert!(
        has_subid(SETUP_USER, "/etc/subuid") && has_subid(SETUP_USER, "/etc/subgid"),
        "{SETUP_USER} needs /etc/subuid and /etc/subgid entries (useradd -m adds them on Debian; .ci/setup-users makes sure)"
    );
    // the binaries where README's install puts them: ~/.local/bin, owned by the user
    let home = PathBuf::from(format!("/home/{SETUP_USER}"));
    let bin = home.join(".local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, src) in [
        ("nookd", env!("CARGO_BIN_EXE_nookd")),
        ("nook", env!("CARGO_BIN_EXE_nook")),
        ("nook-shim", env!("CARGO_BIN_EXE_nook-shim")),
    ] {
        let tmp = bin.join(format!(".{name}.tmp"));
        std::fs::copy(src, &tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, bin.join(name)).unwrap();
    }
    let o = run(Command::new("chown").args([
        "-R",
        &format!("{SETUP_USER}:"),
        home.join(".local").to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", text(&o));
    let src = copy_tool_for(SETUP_USER);
    let setuptool = src.join("setuptool/nook-rootless-setuptool.sh");
    let path_prefix = format!("{}:", bin.display());
    let mgr = UserManager::start(SETUP_USER, uid);
    let user_cmd = |program: &str| as_user(SETUP_USER, uid, &path_prefix, program);
    // start from a clean slate (a previous run may have left the unit)
    let _ = run(user_cmd("bash")
        .arg(&setuptool)
        .args(["uninstall", "--purge"]));

    // install
    let t0 = Instant::now();
    let o = run(user_cmd("bash").arg(&setuptool).arg("install"));
    let install_secs = t0.elapsed().as_secs_f64();
    assert!(o.status.success(), "install: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("nook is running"), "{out}");
    assert!(
        out.contains("export DOCKER_HOST=unix://") && out.contains("/nook/docker.sock"),
        "install prints the DOCKER_HOST line: {out}"
    );
    eprintln!("setuptool install took {install_secs:.2}s (check included)");
    let unit = home.join(".config/systemd/user/nook.service");
    let unit_text = std::fs::read_to_string(&unit).expect("the unit was written");
    assert!(
        unit_text.contains(&format!("ExecStart={}/nookd\n", bin.display())),
        "{unit_text}"
    );
    assert!(unit_text.contains("KillMode=process") && unit_text.contains("Type=notify"));
    let active = mgr.systemctl(&["is-active", "nook"]);
    assert_eq!(
        String::from_utf8_lossy(&active.stdout).trim(),
        "active",
        "{}",
        text(&active)
    );
    let enabled = mgr.systemctl(&["is-enabled", "nook"]);
    assert_eq!(
        String::from_utf8_lossy(&enabled.stdout).trim(),
        "enabled",
        "{}",
        text(&enabled)
    );
    let v = run(user_cmd("nook").arg("version"));
    assert!(v.status.success(), "nook version: {}", text(&v));
    let vout = String::from_utf8_lossy(&v.stdout).to_string();
    assert!(vout.contains("Server: nookd"), "{vout}");
    let main_pid = |m: &UserManager| -> i32 {
        let o = m.systemctl(&["show", "-p", "MainPID", "--value", "nook"]);
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let pid1 = main_pid(&mgr);
    assert!(
        pid1 > 0 && vout.contains(&format!("pid {pid1}")),
        "{vout} vs MainPID {pid1}"
    );
    // the daemon runs in its own user namespace with the subordinate range mapped
    let uid_map = std::fs::read_to_string(format!("/proc/{pid1}/uid_map")).unwrap();
    assert!(
        uid_map
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("65536")),
        "nookd's uid_map lacks the subordinate range: {uid_map}"
    );

    // a container runs under the systemd-managed daemon: the README's busybox image, loaded
    let load = format!(
        "{} | nook load",
        src.join("scripts/busybox-image.sh").display()
    );
    let o = run(user_cmd("bash").args(["-c", &load]));
    assert!(o.status.success(), "loading busybox: {}", text(&o));
    let o = run(user_cmd("nook").args(["run", "--rm", "busybox", "echo", "ok"]));
    assert!(
        o.status.success(),
        "nook run --rm busybox echo ok: {}",
        text(&o)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "ok",
        "{}",
        text(&o)
    );
    // and one keeps running, to outlive a restart
    let o =
        run(user_cmd("nook").args(["run", "-d", "--name", "keep", "busybox", "sleep", "31337"]));
    assert!(o.status.success(), "nook run -d: {}", text(&o));
    let sleeper = || -> Vec<i32> {
        let mut v = vec![];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if cmd == b"sleep\x0031337\x00" {
                v.push(pid);
            }
        }
        v
    };
    wait_until("the container's sleep to start", 20, || {
        sleeper().len() == 1
    });
    let container_pid = sleeper()[0];

    // a second install is harmless
    let o = run(user_cmd("bash").arg(&setuptool).arg("install"));
    assert!(o.status.success(), "second install: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("is up to date"),
        "{}",
        text(&o)
    );
    assert_eq!(
        main_pid(&mgr),
        pid1,
        "a second install must not restart an unchanged daemon"
    );

    // restart: a new nookd, answering again
    let t0 = Instant::now();
    let o = mgr.systemctl(&["restart", "nook"]);
    assert!(o.status.success(), "restart: {}", text(&o));
    let restart_secs = t0.elapsed().as_secs_f64();
    eprintln!("systemctl --user restart nook with a running container took {restart_secs:.2}s");
    assert!(
        restart_secs < 20.0,
        "restart took {restart_secs:.1}s: nookd did not exit promptly on SIGTERM (systemd killed it at its stop timeout)"
    );
    let pid2 = main_pid(&mgr);
    assert!(
        pid2 > 0 && pid2 != pid1,
        "restart did not replace nookd ({pid1} → {pid2})"
    );
    let v = run(user_cmd("nook").arg("version"));
    assert!(
        v.status.success() && String::from_utf8_lossy(&v.stdout).contains(&format!("pid {pid2}")),
        "after restart: {}",
        text(&v)
    );
    // the container survived the restart: same process, still listed running, still reachable
    assert_eq!(
        sleeper(),
        vec![container_pid],
        "the container did not survive `systemctl --user restart nook`"
    );
    let o = run(user_cmd("nook").args(["ps", "-q", "--no-trunc"]));
    assert!(o.status.success(), "nook ps: {}", text(&o));
    let o = run(user_cmd("nook").args(["ps", "--format", "json"]));
    let ps = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        ps.contains("keep") && ps.to_lowercase().contains("running"),
        "after restart, nook ps: {ps}"
    );
    let o = run(user_cmd("nook").args(["exec", "keep", "echo", "alive"]));
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "alive",
        "nook exec after restart: {}",
        text(&o)
    );

    // uninstall: stopped, unit gone, socket gone, no nookd left
    let t0 = Instant::now();
    let o = run(user_cmd("bash").arg(&setuptool).arg("uninstall"));
    assert!(o.status.success(), "uninstall: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    // it names what it keeps only when it is there, and how to remove the binaries
    assert_eq!(
        out.contains("the configuration in"),
        home.join(".config/nook").exists(),
        "{out}"
    );
    assert!(
        out.contains("cargo uninstall --root ~/.local nook"),
        "{out}"
    );
    eprintln!(
        "setuptool uninstall took {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    assert!(!unit.exists(), "the unit is still there after uninstall");
    let active = mgr.systemctl(&["is-active", "nook"]);
    assert_ne!(String::from_utf8_lossy(&active.stdout).trim(), "active");
    wait_until("nookd to exit", 10, || pids_of(uid, "nookd").is_empty());
    assert!(!Path::new(&format!("/run/user/{uid}/nook/nook.sock")).exists());
    let v = run(user_cmd("nook").arg("version"));
    assert!(!v.status.success());
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("nookd is not running"),
        "{}",
        text(&v)
    );
    // data and the running container are kept without --purge
    assert!(home.join(".local/share/nook/meta.redb").exists());
    assert_eq!(
        sleeper(),
        vec![container_pid],
        "uninstall without --purge killed the container"
    );
    let o = run(user_cmd("bash")
        .arg(&setuptool)
        .args(["uninstall", "--purge"]));
    assert!(o.status.success(), "uninstall --purge: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains("deletes:") && out.contains("/.local/share/nook"),
        "{out}"
    );
    assert!(!home.join(".local/share/nook").exists());
    // crun's state directory goes when nothing is left in it
    let crun = PathBuf::from(format!("/run/user/{uid}/crun"));
    assert!(
        !crun.exists() || std::fs::read_dir(&crun).unwrap().next().is_some(),
        "an empty {} is left behind",
        crun.display()
    );
    assert!(
        pids_of(uid, "nook-pause").is_empty(),
        "the pause process survived --purge"
    );
    wait_until("the container to die with --purge", 10, || {
        sleeper().is_empty()
    });
    assert!(
        pids_of(uid, "nook-shim").is_empty(),
        "a shim survived --purge"
    );
    drop(mgr);
    let _ = std::fs::remove_dir_all(src);
}

// ------------------------------------------------------------------------------------------------
// Docs held against the code

/// Every key of src/config/default.toml appears in docs/config.md.
#[test]
fn config_md_documents_every_key() {
    let doc = std::fs::read_to_string(repo().join("docs/config.md")).unwrap();
    let value: toml::Value = toml::from_str(nook::config::DEFAULT_CONFIG).unwrap();
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                // runtimes.<name>.* is documented once, as runtimes.NAME.*
                let key = if prefix == "runtimes" {
                    "NAME".to_string()
                } else {
                    k.clone()
                };
                let full = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                if v.is_table() {
                    walk(&full, v, out);
                } else {
                    out.push(full);
                }
            }
        }
    }
    let mut keys = vec![];
    walk("", &value, &mut keys);
    assert!(keys.len() > 15, "{keys:?}");
    // [registry."host"] is commented out in the default file; its keys must be documented too
    for k in ["mirrors", "insecure", "ca_file", "cert_file", "key_file"] {
        keys.push(format!("registry.HOST.{k}"));
    }
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/config.md lacks the keys {missing:?}"
    );
}

/// The subcommand paths of the `nook` binary, from its --help output.
fn cli_commands(prefix: &[String], out: &mut Vec<String>) {
    let o = Command::new(env!("CARGO_BIN_EXE_nook"))
        .args(prefix)
        .arg("--help")
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let help = String::from_utf8_lossy(&o.stdout).to_string();
    let mut on = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            on = true;
            continue;
        }
        if on && !line.starts_with(' ') {
            on = false;
        }
        if on
            && line.starts_with("  ")
            && line.chars().nth(2).is_some_and(|c| c.is_ascii_lowercase())
        {
            let name = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            if name == "help" {
                continue;
            }
            let mut p = prefix.to_vec();
            p.push(name);
            out.push(p.join(" "));
            cli_commands(&p, out);
        }
    }
}

/// docs/cli.md lists exactly the commands the `nook` binary has (regenerate it with
/// docs/gen-cli.sh when commands change).
#[test]
fn cli_md_lists_exactly_the_commands() {
    let doc = std::fs::read_to_string(repo().join("docs/cli.md")).unwrap();
    let mut cmds = vec![];
    cli_commands(&[], &mut cmds);
    assert!(cmds.iter().any(|c| c == "version"), "{cmds:?}");
    let documented: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| l.split("`nook ").nth(1))
        .map(|s| s.trim_end_matches('`').to_string())
        .collect();
    let missing: Vec<&String> = cmds.iter().filter(|c| !documented.contains(c)).collect();
    let extra: Vec<&String> = documented.iter().filter(|c| !cmds.contains(c)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/cli.md is out of date (run docs/gen-cli.sh): commands missing there {missing:?}, documented but not in nook {extra:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// Metrics

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// `[metrics] address` serves Prometheus text at /v1/metrics, reachable from the host's shell
/// (curl as root, outside nook's namespaces), counting API requests and errors by method.
#[test]
fn metrics_are_served_to_the_host_and_parse() {
    need_root();
    let port = common::free_port();
    let d = common::Nookd::start_with(&format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n"));
    d.nook(&["namespaces", "create", "metrics-a"]).ok();
    d.nook(&["namespaces", "create", "metrics-b"]).ok();
    d.nook(&["namespaces", "ls"]).ok();
    d.nook(&["namespaces", "create", "metrics-a"]).fails();
    // a failed pull and a GC run are counted
    d.nook(&["pull", "127.0.0.1:1/nothing/here:1"]).fails();
    d.nook(&["gc"]).ok();
    // a running container, counted by state
    let image = run(Command::new("bash").arg(repo().join("scripts/busybox-image.sh")));
    assert!(image.status.success(), "busybox-image.sh: {}", text(&image));
    d.nook_stdin(&["load"], &image.stdout).ok();
    d.nook(&["run", "-d", "--name", "m1", "busybox", "sleep", "1000"])
        .ok();
    let url = format!("http://127.0.0.1:{port}/v1/metrics");
    let o = run(Command::new("curl").args(["-sS", "-f", "-D", "-", &url]));
    assert!(o.status.success(), "curl {url}: {}", text(&o));
    let resp = String::from_utf8_lossy(&o.stdout).to_string();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("the metrics do not parse: {e}\n{body}"));
    let create = [("method", "/nook.v1.Namespaces/Create")];
    assert_eq!(
        value(&scrape, "nook_api_requests_total", &create),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        value(
            &scrape,
            "nook_api_errors_total",
            &[
                ("method", "/nook.v1.Namespaces/Create"),
                ("code", "AlreadyExists")
            ]
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &scrape,
            "nook_api_requests_total",
            &[("method", "/nook.v1.Namespaces/List")]
        ),
        Some(1.0),
        "{body}"
    );
    assert!(
        value(
            &scrape,
            "nook_api_requests_total",
            &[("method", "/nook.v1.Version/Version")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    let up = value(&scrape, "nook_uptime_seconds", &[]).expect("uptime");
    assert!(up > 0.0 && up < 600.0, "uptime {up}");
    assert_eq!(
        value(&scrape, "nook_containers", &[("state", "running")]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(&scrape, "nook_containers", &[("state", "exited")]),
        Some(0.0),
        "{body}"
    );
    d.nook(&["rm", "-f", "m1"]).ok();
    assert!(
        value(&scrape, "nook_disk_bytes", &[("store", "content")]).is_some(),
        "{body}"
    );
    assert!(
        value(&scrape, "nook_disk_bytes", &[("store", "snapshots")]).is_some(),
        "{body}"
    );
    assert!(
        value(&scrape, "nook_gc_runs_total", &[]).unwrap_or(0.0) >= 1.0,
        "{body}"
    );
    assert_eq!(
        value(&scrape, "nook_image_pulls_total", &[("result", "error")]),
        Some(1.0),
        "{body}"
    );
    // anything else is a 404 that names the path
    let o = run(Command::new("curl").args(["-sS", &format!("http://127.0.0.1:{port}/metrics")]));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("/v1/metrics"),
        "{}",
        text(&o)
    );
    // a busy port stops nookd with a clear line
    let second = common::Nookd::prepare(&format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n"));
    let errf = second.base.join("second.stderr");
    let mut child = second
        .nookd_cmd()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errf).unwrap())
        .spawn()
        .unwrap();
    let want = format!("cannot listen for metrics on 127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut exited = None;
    loop {
        let e = std::fs::read_to_string(&errf).unwrap_or_default();
        if e.contains(&want) {
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            exited = Some(st);
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = std::fs::read_to_string(&errf).unwrap_or_default();
    // the second daemon may have left its link and pause process: the harness kills them
    drop(second);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        exited.is_none_or(|st| !st.success()),
        "a second nookd on a busy metrics port started"
    );
    assert!(err.contains(&want), "{err}");
}
