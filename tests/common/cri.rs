//! crictl (cri-tools v1.37.0, installed by .ci/run with `go install` into /var/tmp/go/bin) as
//! the test user against a nookd's socket, and the pieces CRI tests share: a busybox image
//! pulled into `k8s.io` from a local registry, config files the test user can read, waiting
//! for a container's state. Include with `#[path = "common/cri.rs"] mod cri;` beside
//! `mod common;`.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{as_user, Nookd, Run};
use nook::image::fixture::{self, TestImage, TestRegistry, TestRegistryOptions};

/// Where .ci/run installs crictl (`NOOK_CRICTL` overrides).
pub fn crictl_path() -> PathBuf {
    std::env::var_os("NOOK_CRICTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/go/bin/crictl"))
}

/// Whether crictl is installed; a test without it says so in one line and passes.
pub fn have_crictl() -> bool {
    let p = crictl_path();
    if p.exists() {
        return true;
    }
    eprintln!(
        "skipped: no crictl at {} (.ci/run installs it: GOBIN=/var/tmp/go/bin go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0)",
        p.display()
    );
    false
}

/// `crictl ARGS` as the test user against the daemon's socket, not yet run.
pub fn crictl_cmd(d: &Nookd, args: &[&str]) -> Command {
    let endpoint = format!("unix://{}", d.address.display());
    let mut c = as_user(&d.user, &d.env(), &crictl_path().display().to_string());
    c.args([
        "--runtime-endpoint",
        &endpoint,
        "--image-endpoint",
        &endpoint,
        "--timeout",
        "60s",
    ])
    .args(args)
    .stdin(Stdio::null());
    c
}

/// Runs `crictl ARGS` as the test user against the daemon's socket.
pub fn crictl(d: &Nookd, args: &[&str]) -> Run {
    let out = crictl_cmd(d, args).output().expect("running crictl");
    Run {
        out,
        what: format!("crictl {}", args.join(" ")),
    }
}

/// Runs `crictl ARGS` with `input` on its stdin (none: /dev/null).
pub fn crictl_stdin(d: &Nookd, args: &[&str], input: Option<&[u8]>) -> Run {
    let Some(input) = input else {
        return crictl(d, args);
    };
    let mut child = crictl_cmd(d, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running crictl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    Run {
        out: child.wait_with_output().unwrap(),
        what: format!("crictl {}", args.join(" ")),
    }
}

/// `crictl COMMAND -o json ARGS…`'s answer (crictl wants flags before arguments).
pub fn crictl_json(d: &Nookd, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.splice(1..1, ["-o", "json"]);
    let out = crictl(d, &a).ok();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("crictl {a:?}: {e}: {out}"))
}

/// A scratch directory readable by every user.
pub fn scratch(name: &str) -> PathBuf {
    let p = PathBuf::from(format!("/tmp/nook-cri-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    p
}

pub fn write_public(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Writes `v` where the test user can read it; its path.
pub fn write_json(p: &Path, v: &serde_json::Value) -> String {
    write_public(p, v.to_string().as_bytes());
    p.display().to_string()
}

/// Pulls a busybox image from a local registry into `k8s.io` (the registry is kept in
/// `reg_keep`); its name.
pub fn pulled_busybox(d: &Nookd, dir: &Path, reg_keep: &mut Vec<TestRegistry>) -> String {
    let reg = TestRegistry::start(&dir.join("reg"), &TestRegistryOptions::default()).unwrap();
    let a = TestImage::busybox("pod", true).unwrap();
    d.nook_stdin(&["load"], &fixture::oci_layout(&[("local/a:1", &a)]))
        .ok();
    let name = format!("{}/test/bb:1", reg.host());
    d.nook(&["push", "local/a:1", &name]).ok();
    crictl(d, &["pull", &name]).ok();
    reg_keep.push(reg);
    name
}

/// Polls `crictl inspect` until the container's state is `want` (at most 20 s).
pub fn wait_state(d: &Nookd, id: &str, want: &str) -> serde_json::Value {
    let t0 = std::time::Instant::now();
    loop {
        let st = crictl_json(d, &["inspect", id]);
        if st["status"]["state"] == want || t0.elapsed() > std::time::Duration::from_secs(20) {
            assert_eq!(st["status"]["state"], want, "{st}");
            return st;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A pod named `name` (labels `app=NAME`); its id and the config's path (crictl create
/// wants it too).
pub fn run_pod(d: &Nookd, dir: &Path, name: &str) -> (String, String) {
    let config = write_json(
        &dir.join(format!("{name}-pod.json")),
        &serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "attempt": 0},
            "log_directory": dir.join("logs"),
            "labels": {"app": name},
        }),
    );
    let id = crictl(d, &["runp", &config]).ok().trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    (id, config)
}

/// Creates container `name` running `sh -c SCRIPT` in the pod; its id.
pub fn create_in(
    d: &Nookd,
    dir: &Path,
    pod: &(String, String),
    image: &str,
    name: &str,
    script: &str,
) -> String {
    let config = write_json(
        &dir.join(format!("{name}.json")),
        &serde_json::json!({
            "metadata": {"name": name},
            "image": {"image": image},
            "command": ["sh", "-c", script],
            "log_path": format!("{name}.log"),
            "labels": {"role": name},
        }),
    );
    crictl(d, &["create", &pod.0, &config, &pod.1])
        .ok()
        .trim()
        .to_string()
}
