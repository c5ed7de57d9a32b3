//! Crash safety: SIGKILL nookd at random moments of a pull/import/unpack workload, restart it,
//! and check that nothing is corrupted: `nook check` finds a consistent store, every listed
//! image is complete, and nothing the workload finished is lost.

mod common;

use common::Nookd;
use nook::image::fixture::{docker_archive, TestImage};
use std::process::Stdio;
use std::time::Duration;

const ROUNDS: usize = 20;

#[test]
fn sigkill_during_import_and_unpack_loses_nothing() {
    let mut d = Nookd::start();
    let base = TestImage::busybox("round base\n", true).unwrap();
    d.nook_stdin(
        &["images", "import", "-"],
        &docker_archive(&[(&["crash/base:1"], &base)]),
    )
    .ok();
    let mut finished: Vec<String> = vec!["docker.io/crash/base:1".into()];
    for round in 0..ROUNDS {
        // each round imports a new image (own top layer, shared base) in the background
        let img = TestImage::busybox(
            &format!("round {round}\n{}", "x".repeat(round * 50_000)),
            true,
        )
        .unwrap();
        let name = format!("crash/r{round}:1");
        let tar = docker_archive(&[(&[name.as_str()], &img)]);
        let path = d.base.join(format!("r{round}.tar"));
        std::fs::write(&path, &tar).unwrap();
        std::os::unix::fs::chown(&path, Some(common::ids(common::USER).0), None).unwrap();
        let mut c = common::as_user(common::USER, &d.env(), "nook");
        c.args(["images", "import", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut client = c.spawn().unwrap();
        let delay = rand::random::<u64>() % 120;
        std::thread::sleep(Duration::from_millis(delay));
        d.kill9();
        let ok = client.wait().unwrap().success();
        if ok {
            finished.push(format!("docker.io/{name}"));
        }
        d.restart();
        let rep: serde_json::Value =
            serde_json::from_str(&d.nook(&["check", "--format", "json"]).ok()).unwrap_or_else(
                |e| panic!("round {round} (killed after {delay} ms): check output unparsable: {e}"),
            );
        assert_eq!(
            rep["consistent"],
            true,
            "round {round} (killed after {delay} ms): {rep}\n{}",
            d.log_text()
        );
        // nothing that finished is lost
        let images = d.nook(&["images", "ls", "-q"]).ok();
        for f in &finished {
            assert!(
                images.contains(f.as_str()),
                "round {round}: {f} lost: {images}"
            );
        }
        // no unpack leftovers: every snapshot is committed
        let snaps: serde_json::Value =
            serde_json::from_str(&d.nook(&["snapshots", "ls", "--format", "json"]).ok()).unwrap();
        for s in snaps.as_array().unwrap() {
            assert_eq!(s["kind"], "committed", "round {round}: leftover {s}");
        }
    }
    // a GC after all that still leaves a consistent store with every image
    d.nook(&["gc"]).ok();
    d.nook(&["check"]).ok();
}

/// The container half of the workload: run -d / rm -f with SIGKILLs in between. Containers
/// whose `run -d` succeeded are never lost, running ones keep running, and every image still
/// runs a container afterwards.
#[test]
fn sigkill_during_run_and_rm_loses_no_container() {
    let mut d = Nookd::start();
    let mut layers =
        nook::image::fixture::busybox_layers(std::fs::read("/bin/busybox").unwrap(), "run\n");
    for a in ["sleep", "echo"] {
        layers[0].push(nook::image::fixture::FileSpec::symlink(
            &format!("bin/{a}"),
            "busybox",
        ));
    }
    let img = TestImage::build(&layers, false, &["sh"]);
    d.nook_stdin(&["load"], &docker_archive(&[(&["crash/run:1"], &img)]))
        .ok();
    let mut created: Vec<String> = Vec::new();
    let mut targeted: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let name = format!("c{round}");
        let mut c = common::as_user(common::USER, &d.env(), "nook");
        c.args(["run", "-d", "--name", &name, "crash/run:1", "sleep", "1000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut client = c.spawn().unwrap();
        // remove an older container at the same time
        let mut rm = (round >= 2).then(|| {
            let victim = format!("c{}", round - 2);
            targeted.push(victim.clone());
            let mut r = common::as_user(common::USER, &d.env(), "nook");
            r.args(["rm", "-f", &victim])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            (victim, r.spawn().unwrap())
        });
        let delay = rand::random::<u64>() % 250;
        std::thread::sleep(Duration::from_millis(delay));
        d.kill9();
        if client.wait().unwrap().success() {
            created.push(name);
        }
        if let Some((victim, mut p)) = rm.take() {
            // a removal the kill interrupted may or may not have happened (the record goes
            // first, then the answer): either is fine, so the victim is no longer expected
            let _ = p.wait();
            created.retain(|n| n != &victim);
        }
        d.restart();
        let ps = d.nook(&["ps", "-a", "--format", "json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&ps).unwrap();
        let names: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect();
        for n in &created {
            assert!(
                names.contains(n),
                "round {round} (killed after {delay} ms): container {n} lost: {names:?}\n{}",
                d.log_text()
            );
        }
        let rep: serde_json::Value =
            serde_json::from_str(&d.nook(&["check", "--format", "json"]).ok()).unwrap();
        assert_eq!(rep["consistent"], true, "round {round}: {rep}");
    }
    // every container whose run succeeded and that no `rm` touched is still running
    let running: serde_json::Value =
        serde_json::from_str(&d.nook(&["ps", "--format", "json"]).ok()).unwrap();
    let running: Vec<&str> = running
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for n in created.iter().filter(|n| !targeted.contains(n)) {
        assert!(
            running.contains(&n.as_str()),
            "{n} should be running: {running:?}"
        );
    }
    // and the image still runs
    let out = d
        .nook(&["run", "--rm", "crash/run:1", "echo", "alive"])
        .ok();
    assert_eq!(out.trim(), "alive");
    if !created.is_empty() {
        let mut rm = vec!["rm", "-f"];
        rm.extend(created.iter().map(String::as_str));
        d.nook(&rm).ok();
    }
}
