//! The docker CLI as the test user against a nookd's docker.sock: shared by the tests of the
//! Docker Engine API door (tests/docker_api.rs, docker_networks.rs, compose.rs, docker_sdk.rs).
//! Include with `#[path = "common/docker.rs"] mod docker;` beside `mod common;`.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::{self, as_user, Nookd, Run};
use nook::image::fixture::{self, TestImage};

/// The docker CLI, or None (the test then says why it cannot run).
pub fn docker_cli() -> Option<PathBuf> {
    for p in ["/usr/local/bin/docker", "/usr/bin/docker"] {
        if std::path::Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    eprintln!(
        "SKIP: no docker CLI on this machine (install Debian's docker.io client, never its daemon)"
    );
    None
}

pub struct Docker<'a> {
    pub d: &'a Nookd,
    pub cfg: PathBuf,
}

impl<'a> Docker<'a> {
    pub fn new(d: &'a Nookd) -> Docker<'a> {
        let cfg = d.base.join("docker-config");
        std::fs::create_dir_all(&cfg).unwrap();
        let (uid, gid) = common::ids(&d.user);
        std::os::unix::fs::chown(&cfg, Some(uid), Some(gid)).unwrap();
        Docker { d, cfg }
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.d.state.join("docker.sock").display())
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut env = self.d.env();
        env.push(("DOCKER_HOST", self.host()));
        env.push(("DOCKER_CONFIG", self.cfg.display().to_string()));
        let mut c = as_user(&self.d.user, &env, "docker");
        c.args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self
            .cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("running docker");
        Run {
            out,
            what: format!("docker {}", args.join(" ")),
        }
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut c = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        let out = c.wait_with_output().unwrap();
        Run {
            out,
            what: format!("docker {}", args.join(" ")),
        }
    }
}

/// A busybox image loaded with `docker load` as `busybox:latest`.
pub fn load_busybox(dk: &Docker) {
    let img = TestImage::busybox("dk", true).unwrap();
    let tar = fixture::docker_archive(&[(&["busybox:latest"], &img)]);
    let out = dk.run_stdin(&["load"], &tar).ok();
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
}
