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
