//! The spine, end to end: nookd as the unprivileged test user, its user namespace, the lock,
//! the socket's permissions, namespaces through the CLI, config errors, preflight errors.

mod common;

use common::{as_user, Nookd};
use std::process::Stdio;

#[test]
fn daemon_maps_the_whole_subuid_range() {
    let d = Nookd::start();
    let (uid, gid) = common::ids(common::USER);
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    let line = subuid
        .lines()
        .find(|l| l.starts_with(&format!("{}:", common::USER)))
        .expect("test user has a subuid entry");
    let parts: Vec<&str> = line.split(':').collect();
    let uid_map = std::fs::read_to_string(format!("/proc/{}/uid_map", d.pid())).unwrap();
    let rows: Vec<Vec<String>> = uid_map
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert!(
        rows.contains(&vec!["0".into(), uid.to_string(), "1".into()]),
        "{uid_map}"
    );
    assert!(
        rows.contains(&vec!["1".into(), parts[1].into(), parts[2].into()]),
        "uid_map lacks the full subuid range {line}: {uid_map}"
    );
    let gid_map = std::fs::read_to_string(format!("/proc/{}/gid_map", d.pid())).unwrap();
    assert!(gid_map.contains(&gid.to_string()), "{gid_map}");
    // nookd itself runs as the user on the host, never as root
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .all(|f| f == "Uid:" || f == uid.to_string()),
        "{uid_line}"
    );
    // and `nook info` reports the same map
    let info: serde_json::Value =
        serde_json::from_str(&d.nook(&["info", "--format", "json"]).ok()).unwrap();
    assert_eq!(
        info["uid_map"][1][2].as_u64().unwrap(),
        parts[2].parse::<u64>().unwrap()
    );
    assert_eq!(info["host_uid"].as_u64().unwrap(), uid as u64);
}

#[test]
fn namespaces_round_trip() {
    let d = Nookd::start();
    d.nook(&["namespaces", "create", "dev", "--label", "team=a"])
        .ok();
    let ls = d.nook(&["ns", "ls", "-q"]).ok();
    assert_eq!(ls.lines().collect::<Vec<_>>(), vec!["default", "dev"]);
    let json: serde_json::Value =
        serde_json::from_str(&d.nook(&["ns", "ls", "--format", "json"]).ok()).unwrap();
    assert_eq!(json[1]["labels"]["team"], "a");
    let err = d.nook(&["ns", "create", "dev"]).fails();
    assert!(err.contains("already exists"), "{err}");
    let err = d.nook(&["ns", "create", "bad/name"]).fails();
    assert!(err.contains("invalid namespace name"), "{err}");
    d.nook(&["ns", "rm", "dev"]).ok();
    assert_eq!(d.nook(&["ns", "ls", "-q"]).ok().trim(), "default");
    let err = d.nook(&["ns", "rm", "dev"]).fails();
    assert!(err.contains("does not exist"), "{err}");
    // state survives a restart (redb on disk)
    d.nook(&["ns", "create", "kept"]).ok();
    let mut d = d;
    d.restart();
    assert!(d.nook(&["ns", "ls", "-q"]).ok().contains("kept"));
}

#[test]
fn second_daemon_on_the_same_root_is_refused() {
    let d = Nookd::start();
    let out = d.nookd_cmd().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("another nookd (pid {})", d.pid())),
        "second daemon said: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // the first one is unharmed
    d.nook(&["version"]).ok();
}

#[test]
fn another_user_cannot_use_the_socket() {
    let d = Nookd::start();
    let meta = std::fs::metadata(&d.address).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(d.address.parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    let out = as_user(
        "nookother",
        &[("NOOK_ADDRESS", d.address.display().to_string())],
        "nook",
    )
    .arg("version")
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut d = Nookd::start();
    let pause = d.pause_pid().expect("pause process");
    let st = d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(st.success(), "{st}");
    assert!(!d.address.exists(), "socket left behind");
    // with no containers, the namespaces' pause process goes too
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stat = std::fs::read_to_string(format!("/proc/{pause}/stat")).unwrap_or_default();
    let gone = stat.is_empty() || stat.split(") ").nth(1).is_some_and(|r| r.starts_with('Z'));
    assert!(gone, "pause process still alive: {stat}");
    let err = d.nook(&["version"]).fails();
    assert!(err.contains("nookd is not running"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn unknown_config_key_is_named() {
    let d = Nookd::prepare("[debug]\nlevel = \"info\"\nfrobnicate = true\n");
    let out = d.nookd_cmd().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("frobnicate"), "{err}");
    assert!(err.contains("config.toml:3"), "names the line: {err}");
    let d = Nookd::prepare("[network]\nmtu = 9\n");
    let err = String::from_utf8_lossy(&d.nookd_cmd().output().unwrap().stderr).to_string();
    assert!(err.contains("network.mtu"), "{err}");
}

#[test]
fn default_config_round_trips_through_stdin() {
    let d = Nookd::prepare("");
    let default = d.nook(&["config", "default"]).ok();
    assert!(default.contains("[gc]") && default.contains("pause_threshold"));
    let mut c = common::as_user(common::USER, &d.env(), "nookd");
    c.args(["--config", "/dev/stdin", "--root"])
        .arg(&d.root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut si = child.stdin.take().unwrap();
        si.write_all(default.as_bytes()).unwrap();
    }
    let t0 = std::time::Instant::now();
    while !d.nook(&["version"]).out.status.success() {
        if let Ok(Some(st)) = child.try_wait() {
            let mut e = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            panic!("nookd with the default config exited ({st}): {e}");
        }
        assert!(t0.elapsed().as_secs() < 20, "not ready");
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn user_without_subuid_gets_one_line() {
    let d = Nookd::prepare_for("nooknosub", "");
    let out = d.nookd_cmd().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no entry for user nooknosub in /etc/subuid"),
        "{err}"
    );
    assert!(
        err.contains("usermod --add-subuids"),
        "says how to fix: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn root_and_missing_runtime_dir_are_explained() {
    let out = std::process::Command::new(common::bin_dir().join("nookd"))
        .arg("--check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rootful mode is not supported yet"), "{err}");
    // XDG_RUNTIME_DIR unset (as after a plain `su`)
    let out = as_user(common::USER, &[], "nookd")
        .arg("--check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("XDG_RUNTIME_DIR is not set"), "{err}");
    // XDG_RUNTIME_DIR owned by someone else
    let out = as_user(common::USER, &[("XDG_RUNTIME_DIR", "/tmp".into())], "nookd")
        .arg("--check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is owned by uid 0, not by you"), "{err}");
}

#[test]
fn plugins_and_info_tell_the_truth() {
    let d = Nookd::start();
    let v: serde_json::Value =
        serde_json::from_str(&d.nook(&["plugins", "ls", "--format", "json"]).ok()).unwrap();
    let find = |t: &str, id: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|p| p["type"] == t && p["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no plugin {t} {id} in {v}"))
    };
    assert_eq!(find("nook.runtime.v1", "runc")["status"], "ok");
    let link = find("nook.network.v1", "link");
    assert_eq!(link["status"], "ok", "{link}");
    // the link really exists: tap0 in the containers' network namespace
    let pause = d.pause_pid().unwrap();
    let dev = std::fs::read_to_string(format!("/proc/{pause}/net/dev")).unwrap();
    assert!(dev.contains("tap0"), "{dev}");
    let table = d.nook(&["plugins", "ls"]).ok();
    assert!(table.starts_with("TYPE"), "{table}");
}

#[test]
fn slirp4netns_driver_links_the_namespace() {
    let d = Nookd::start_with("[network]\ndriver = \"slirp4netns\"\n");
    let info: serde_json::Value =
        serde_json::from_str(&d.nook(&["info", "--format", "json"]).ok()).unwrap();
    assert_eq!(info["network_driver"], "slirp4netns", "{info}");
    let pause = d.pause_pid().unwrap();
    let route = std::fs::read_to_string(format!("/proc/{pause}/net/route")).unwrap();
    // default route through slirp's 10.0.2.2 (0202000A little-endian) on tap0
    assert!(
        route
            .lines()
            .any(|l| l.starts_with("tap0\t00000000\t0202000A")),
        "{route}"
    );
}

#[test]
fn leases_and_non_empty_namespace() {
    let d = Nookd::start();
    d.nook(&["ns", "create", "work"]).ok();
    let id = d
        .nook(&[
            "-n",
            "work",
            "leases",
            "create",
            "--id",
            "hold-1",
            "--expires-in",
            "60",
        ])
        .ok();
    assert_eq!(id.trim(), "hold-1");
    let v: serde_json::Value = serde_json::from_str(
        &d.nook(&["-n", "work", "leases", "ls", "--format", "json"])
            .ok(),
    )
    .unwrap();
    assert_eq!(v[0]["id"], "hold-1");
    assert!(v[0]["expires_at"].as_i64().unwrap() > 0);
    // the lease lives in "work" only
    assert!(d.nook(&["leases", "ls", "-q"]).ok().trim().is_empty());
    let err = d.nook(&["ns", "rm", "work"]).fails();
    assert!(err.contains("not empty") && err.contains("leases"), "{err}");
    d.nook(&["-n", "work", "leases", "rm", "hold-1"]).ok();
    d.nook(&["ns", "rm", "work"]).ok();
    let err = d.nook(&["-n", "nope", "leases", "create"]).fails();
    assert!(err.contains("namespace \"nope\" does not exist"), "{err}");
}
