//! `nook image prune`, `nook container prune`, `nook system prune` against a real nookd (as the
//! unprivileged user): what they remove, what they keep, the space they report, confirmation,
//! and pruning while containers are being created and started.

mod common;

use common::Nookd;
use nook::image::fixture::{docker_archive, FileSpec, TestImage};
use std::process::Stdio;

fn image(extra: &str) -> TestImage {
    let mut layers =
        nook::image::fixture::busybox_layers(std::fs::read("/bin/busybox").unwrap(), extra);
    layers[0].push(FileSpec::symlink("bin/sleep", "busybox"));
    layers[0].push(FileSpec::symlink("bin/true", "busybox"));
    TestImage::build(&layers, false, &["sh"])
}

fn json(d: &Nookd, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&d.nook(args).ok()).unwrap()
}

fn names(v: &serde_json::Value, key: &str) -> Vec<String> {
    let mut n: Vec<String> = v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

fn images(d: &Nookd) -> Vec<String> {
    let mut v: Vec<String> = d
        .nook(&["images", "ls", "-q"])
        .ok()
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

fn blob(d: &Nookd, digest: &nook::content::Digest) -> std::path::PathBuf {
    d.root.join("content/blobs/sha256").join(digest.hex())
}

fn consistent(d: &Nookd) {
    let chk = json(d, &["check", "--format", "json"]);
    assert_eq!(chk["consistent"], true, "{chk}");
}

#[test]
fn prune_images_containers_and_system() {
    let d = Nookd::start();
    let (a, b) = (image("a\n"), image("b\n"));
    d.nook_stdin(
        &["load"],
        &docker_archive(&[(&["test/a:1"], &a), (&["test/b:1"], &b)]),
    )
    .ok();
    // an untagged (digest-only) name of a
    let a_digest = format!("docker.io/test/a@{}", a.manifest_descriptor.digest);
    d.nook(&["tag", "test/a:1", &a_digest]).ok();
    // a stopped container of b and a running one of b
    d.nook(&["run", "--name", "done", "test/b:1", "true"]).ok();
    d.nook(&["run", "-d", "--name", "up", "test/b:1", "sleep", "1000"])
        .ok();

    // without a terminal and without -f: refused, nothing removed
    let err = d.nook(&["image", "prune"]).fails();
    assert!(err.contains("pass -f"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(images(&d).len(), 3);

    // on a terminal it asks: "n" keeps everything, "y" prunes
    let on_tty = |answer: &str| {
        let mut c = common::as_user(common::USER, &d.env(), "script");
        c.args(["-qec", "nook image prune", "/dev/null"]);
        let out = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = out;
        use std::io::Write;
        out.stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let o = out.wait_with_output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let (ok, out) = on_tty("n\n");
    assert!(!ok && out.contains("Are you sure"), "{out}");
    assert_eq!(images(&d).len(), 3);
    let (ok, out) = on_tty("y\n");
    assert!(ok, "{out}");
    // dangling only: the digest-only name goes; a's content stays (test/a:1 holds it)
    assert!(out.contains(&a_digest), "{out}");
    assert_eq!(
        images(&d),
        ["docker.io/test/a:1", "docker.io/test/b:1"],
        "{out}"
    );
    assert!(blob(&d, &a.layers[2].0.digest).exists());

    // -a: every image no container uses; b is used (by both containers)
    let r = json(&d, &["images", "prune", "-a", "-f", "--format", "json"]);
    assert_eq!(names(&r, "images"), ["docker.io/test/a:1"], "{r}");
    assert!(r["reclaimed_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(
        !blob(&d, &a.layers[2].0.digest).exists(),
        "a's own layer is collected"
    );
    assert!(blob(&d, &b.layers[2].0.digest).exists());
    assert!(
        blob(&d, &b.layers[0].0.digest).exists(),
        "the shared layer stays"
    );
    consistent(&d);

    // containers: the stopped one goes, the running one stays
    let out = d.nook(&["container", "prune", "-f"]).ok();
    assert!(
        out.contains("done") && out.contains("Total reclaimed space:"),
        "{out}"
    );
    let ps = d.nook(&["ps", "-a", "-q"]).ok();
    assert_eq!(ps.lines().count(), 1, "{ps}");
    assert_eq!(
        d.nook(&["exec", "up", "cat", "/etc/extra"]).ok(),
        "b\n",
        "the running container is untouched"
    );

    // system prune -a: nothing stopped left, b still used by the running container
    let r = json(&d, &["system", "prune", "-a", "-f", "--format", "json"]);
    assert!(r["containers"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["images"].as_array().unwrap().is_empty(), "{r}");
    // once it is stopped, system prune -a takes container and image
    d.nook(&["rm", "-f", "up"]).ok();
    d.nook(&["create", "--name", "idle", "test/b:1", "true"])
        .ok();
    d.nook(&["run", "--name", "ran", "test/b:1", "true"]).ok();
    let r = json(&d, &["system", "prune", "-a", "-f", "--format", "json"]);
    // "idle" was created a moment ago and never started: a `nook run` may be about to start it
    assert_eq!(names(&r, "containers"), ["ran"], "{r}");
    assert!(
        r["images"].as_array().unwrap().is_empty(),
        "idle uses b: {r}"
    );
    d.nook(&["rm", "idle"]).ok();
    let r = json(&d, &["system", "prune", "-a", "-f", "--format", "json"]);
    assert_eq!(names(&r, "images"), ["docker.io/test/b:1"], "{r}");
    assert!(r["reclaimed_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(images(&d).is_empty());
    assert_eq!(
        std::fs::read_dir(d.root.join("content/blobs/sha256"))
            .unwrap()
            .count(),
        0,
        "every blob is collected"
    );
    consistent(&d);
    let out = d.nook(&["system", "prune", "-f"]).ok();
    assert!(out.contains("Total reclaimed space: 0 B"), "{out}");
}

#[test]
fn prune_racing_container_starts_is_safe() {
    let d = Nookd::start();
    let img = image("race\n");
    d.nook_stdin(&["load"], &docker_archive(&[(&["test/r:1"], &img)]))
        .ok();
    let runs: Vec<_> = (0..12)
        .map(|i| {
            common::as_user(common::USER, &d.env(), "nook")
                .args([
                    "run",
                    "-d",
                    "--name",
                    &format!("r{i}"),
                    "test/r:1",
                    "sleep",
                    "1000",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // prune everything prunable, repeatedly, while they are created and started
    for _ in 0..4 {
        d.nook(&["system", "prune", "-a", "-f"]).ok();
    }
    let mut started = 0;
    for c in runs {
        let o = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            started += 1;
        } else {
            // the image was pruned before this container was created: a clean error
            assert!(
                err.contains("no such image") || err.contains("not found"),
                "{err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
    }
    eprintln!("{started} of 12 started while pruning");
    // every container that started runs, none was removed under it
    let ps = json(&d, &["ps", "-a", "--format", "json"]);
    let ps = ps.as_array().unwrap();
    assert_eq!(ps.len(), started, "{ps:?}");
    for c in ps {
        assert_eq!(c["status"], "running", "{c}");
    }
    if started > 0 {
        assert!(images(&d).contains(&"docker.io/test/r:1".to_string()));
    }
    consistent(&d);
    let r = json(&d, &["system", "prune", "-a", "-f", "--format", "json"]);
    assert!(r["containers"].as_array().unwrap().is_empty(), "{r}");
}
