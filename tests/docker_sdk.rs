//! The Docker SDK for Python (`docker` 7.x from PyPI, in the venv .ci/run makes under /var/tmp)
//! against nookd's docker.sock, as the test user: tests/sdk/flows.py runs containers.run/logs/
//! exec_run/remove, images.pull from the local registry, networks and volumes, and the flows
//! testcontainers relies on (wait for a log line, mapped port lookup, removal).

mod common;
#[path = "common/docker.rs"]
mod docker;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{as_user, Nookd, Run};
use docker::{docker_cli, load_busybox, Docker};
use nook::image::fixture::{TestRegistry, TestRegistryOptions};

const VENV: &str = "/var/tmp/nook-pydocker";

#[test]
fn python_sdk_flows() {
    let Some(_) = docker_cli() else { return };
    let python = Path::new(VENV).join("bin/python3");
    if !python.exists() {
        eprintln!("SKIP: the Docker SDK for Python is not installed (.ci/run makes {VENV})");
        return;
    }
    let dir = PathBuf::from(format!("/tmp/nook-sdk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let reg = TestRegistry::start(&dir.join("reg"), &TestRegistryOptions::default()).unwrap();
    let d = Nookd::start();
    let dk = Docker::new(&d);
    load_busybox(&dk);
    // an image in the registry to pull: pushed by nook, removed, pulled by the SDK
    let reference = format!("{}/sdk/bb:1", reg.host());
    dk.run(&["tag", "busybox", &reference]).ok();
    d.nook(&["push", &reference]).ok();
    dk.run(&["rmi", &reference]).ok();

    let script = dir.join("flows.py");
    std::fs::write(&script, include_str!("sdk/flows.py")).unwrap();
    let mut env = d.env();
    env.push(("DOCKER_HOST", dk.host()));
    env.push(("DOCKER_CONFIG", dk.cfg.display().to_string()));
    let mut c = as_user(&d.user, &env, python.to_str().unwrap());
    c.arg(&script).arg(&reference);
    let run = Run {
        out: c.output().expect("running python"),
        what: "python3 tests/sdk/flows.py".into(),
    };
    let out = run.ok();
    eprint!("{out}");
    assert!(out.ends_with("SDK OK\n"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
