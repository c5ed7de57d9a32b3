//! containerd's API on nook's socket, driven by the real `ctr` (Debian's containerd package,
//! /usr/bin/ctr 1.6) as the unprivileged test user against a nookd of that user, pulling from
//! Debian's `docker-registry` on 127.0.0.1. What ctr does is checked through ctr and through
//! `nook` (one store, two doors).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{as_user, Nookd, Run};
use nook::image::fixture::{self, TestImage, TestRegistry, TestRegistryOptions};

const CTR: &str = "/usr/bin/ctr";

/// Whether ctr is installed; a test without it says so in one line and passes.
fn have_ctr() -> bool {
    if Path::new(CTR).exists() {
        return true;
    }
    eprintln!("SKIP: {CTR} is missing (apt-get install containerd, as .ci/run does)");
    false
}

fn scratch(name: &str) -> PathBuf {
    let p = PathBuf::from(format!("/tmp/nook-ctr-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    p
}

/// Runs `ctr --address <nook's socket> ARGS` as the test user (outside nookd's namespaces:
/// what needs no mount on the client's side).
fn ctr(d: &Nookd, args: &[&str]) -> Run {
    let mut c = as_user(&d.user, &d.env(), CTR);
    c.arg("--address").arg(&d.address).args(args);
    c.stdin(Stdio::null());
    let out = c.output().expect("running ctr");
    Run {
        out,
        what: format!("ctr {}", args.join(" ")),
    }
}

/// A local registry with busybox pushed as `<host>/test/bb:1`.
fn registry_with_busybox(dir: &Path, d: &Nookd) -> (TestRegistry, String) {
    let reg = TestRegistry::start(&dir.join("reg"), &TestRegistryOptions::default()).unwrap();
    let img = TestImage::busybox("ctr", true).unwrap();
    let tar = fixture::oci_layout(&[("local/bb:1", &img)]);
    d.nook_stdin(&["images", "import", "-"], &tar).ok();
    let name = format!("{}/test/bb:1", reg.host());
    d.nook(&["push", "local/bb:1", &name]).ok();
    d.nook(&["images", "rm", "local/bb:1"]).ok();
    (reg, name)
}

#[test]
fn ctr_version_namespaces_plugins() {
    if !have_ctr() {
        return;
    }
    let d = Nookd::start();
    let out = ctr(&d, &["version"]).ok();
    assert!(out.contains("Server:") && out.contains("nook-"), "{out}");

    ctr(&d, &["namespaces", "create", "prod", "team=a"]).ok();
    let ls = ctr(&d, &["namespaces", "ls"]).ok();
    assert!(ls.contains("prod") && ls.contains("team=a"), "{ls}");
    assert!(ls.contains("default"), "{ls}");
    // the same namespace in nook's own door
    assert!(d.nook(&["namespaces", "ls"]).ok().contains("prod"));
    ctr(&d, &["namespaces", "label", "prod", "team="]).ok();
    assert!(!ctr(&d, &["namespaces", "ls"]).ok().contains("team=a"));
    let q = ctr(&d, &["namespaces", "ls", "-q"]).ok();
    assert!(q.lines().any(|l| l == "prod"), "{q}");
    ctr(&d, &["namespaces", "rm", "prod"]).ok();
    assert!(!ctr(&d, &["namespaces", "ls", "-q"]).ok().contains("prod"));

    let p = ctr(&d, &["plugins", "ls"]).ok();
    assert!(
        p.lines()
            .any(|l| l.starts_with("io.containerd.snapshotter.v1") && l.contains("native")),
        "{p}"
    );
    assert!(p.contains("io.containerd.grpc.v1"), "{p}");
    // every line has a status containerd's way
    for l in p.lines().skip(1) {
        assert!(
            l.contains(" ok") || l.contains(" skip") || l.contains(" error"),
            "{l}"
        );
    }
}

#[test]
fn ctr_pull_images_content_snapshots_leases() {
    if !have_ctr() {
        return;
    }
    let dir = scratch("pull");
    let d = Nookd::start();
    let (_reg, name) = registry_with_busybox(&dir, &d);

    // ctr pulls (and unpacks through the Diff service) over nook's containerd API
    let out = ctr(&d, &["images", "pull", "--plain-http", &name]).ok();
    assert!(out.contains("unpacking"), "{out}");
    let ls = ctr(&d, &["images", "ls", "-q"]).ok();
    assert_eq!(ls.trim(), name, "{ls}");
    let ls = ctr(&d, &["images", "ls"]).ok();
    assert!(ls.contains(&name), "{ls}");
    // the same image through nook's door
    let nls = d.nook(&["images", "ls", "-q"]).ok();
    assert!(nls.contains(&name) || !nls.trim().is_empty(), "{nls}");
    assert!(d.nook(&["images", "ls"]).ok().contains("test/bb"));
    // and nook runs it on the snapshots ctr unpacked (the whiteout of layer 3 applied)
    let o = d.nook(&["run", "--rm", &name, "cat", "/etc/extra"]).ok();
    assert_eq!(o, "ctr");
    let o = d.nook(&["run", "--rm", &name, "ls", "/etc"]).ok();
    assert!(o.contains("hostname") && !o.contains("motd"), "{o}");

    // content: ls, get by digest (the manifest is the image's target)
    let content = ctr(&d, &["content", "ls"]).ok();
    assert!(content.lines().count() >= 4, "{content}");
    let manifest_digest = ctr(&d, &["images", "ls"])
        .ok()
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    assert!(manifest_digest.starts_with("sha256:"), "{manifest_digest}");
    let m = ctr(&d, &["content", "get", &manifest_digest]).ok();
    assert!(m.contains("\"layers\""), "{m}");

    // snapshots: the unpacked layers, and prepare/info/rm of a new one
    let s = ctr(&d, &["snapshots", "ls"]).ok();
    assert!(s.contains("Committed"), "{s}");
    ctr(&d, &["snapshots", "prepare", "mysnapshot"]).ok();
    let info = ctr(&d, &["snapshots", "info", "mysnapshot"]).ok();
    assert!(info.contains("\"Kind\": \"Active\""), "{info}");
    ctr(&d, &["snapshots", "rm", "mysnapshot"]).ok();
    assert!(!ctr(&d, &["snapshots", "ls"]).ok().contains("mysnapshot"));

    // leases
    ctr(&d, &["leases", "create", "--id", "l1"]).ok();
    assert!(ctr(&d, &["leases", "ls"]).ok().contains("l1"));
    ctr(&d, &["leases", "rm", "l1"]).ok();
    assert!(!ctr(&d, &["leases", "ls"]).ok().contains("l1"));

    // export, rm, import: the image comes back with the same digest
    let tar = dir.join("images.tar");
    ctr(&d, &["images", "export", tar.to_str().unwrap(), &name]).ok();
    ctr(&d, &["images", "rm", &name]).ok();
    assert!(ctr(&d, &["images", "ls", "-q"]).ok().trim().is_empty());
    ctr(&d, &["images", "import", tar.to_str().unwrap()]).ok();
    let ls = ctr(&d, &["images", "ls"]).ok();
    assert!(ls.contains(&name) && ls.contains(&manifest_digest), "{ls}");

    // another namespace springs into being on first use, as in containerd
    ctr(&d, &["-n", "prod", "images", "pull", "--plain-http", &name]).ok();
    assert!(d
        .nook(&["-n", "prod", "images", "ls"])
        .ok()
        .contains("test/bb"));
}
