//! Blocking work runs off nookd's async threads: while two containers whose writable layers
//! hold many files are being removed (seconds of remove_dir_all each), `nook ps` and
//! `nook version` still answer at once. Before, each removal held one of the two tokio worker
//! threads and every API call waited behind them.

mod common;

use std::time::{Duration, Instant};

use common::Nookd;
use nook::image::fixture::{docker_archive, FileSpec, TestImage};

fn image() -> TestImage {
    let mut layers =
        nook::image::fixture::busybox_layers(std::fs::read("/bin/busybox").unwrap(), "");
    for tool in ["seq", "xargs", "touch", "mkdir"] {
        layers[0].push(FileSpec::symlink(&format!("bin/{tool}"), "busybox"));
    }
    TestImage::build(&layers, false, &["sh"])
}

/// How long `nook ARGS` takes, asserting it succeeds.
fn timed(d: &Nookd, args: &[&str]) -> Duration {
    let t0 = Instant::now();
    d.nook(args).ok();
    t0.elapsed()
}

#[test]
fn large_removals_do_not_stall_the_api() {
    let d = Nookd::start();
    d.nook_stdin(&["load"], &docker_archive(&[(&["test/many:1"], &image())]))
        .ok();
    const FILES: &str = "80000";
    for name in ["many1", "many2"] {
        d.nook(&[
            "run",
            "--name",
            name,
            "test/many:1",
            "sh",
            "-c",
            &format!("mkdir /m && cd /m && seq 1 {FILES} | xargs touch"),
        ])
        .ok();
    }
    let baseline = timed(&d, &["version"]).max(timed(&d, &["ps", "-a"]));
    let rms: Vec<_> = ["many1", "many2"]
        .into_iter()
        .map(|name| {
            let mut c = common::as_user(&d.user, &d.env(), "nook");
            c.args(["rm", name])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null());
            let t0 = Instant::now();
            (c.spawn().expect("starting nook rm"), t0)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut probes = Vec::new();
    let mut rms: Vec<_> = rms.into_iter().map(|(c, t0)| (c, t0, None)).collect();
    while rms.iter().any(|(_, _, done)| done.is_none()) {
        let both_running = rms.iter().all(|(_, _, done)| done.is_none());
        let v = timed(&d, &["version"]);
        let p = timed(&d, &["ps", "-a"]);
        if both_running {
            probes.push(v.max(p));
        }
        for (c, t0, done) in rms.iter_mut() {
            if done.is_none() {
                if let Some(st) = c.try_wait().unwrap() {
                    assert!(st.success(), "nook rm failed: {st}");
                    *done = Some(t0.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took: Vec<Duration> = rms.iter().map(|(_, _, d)| d.unwrap()).collect();
    eprintln!("baseline {baseline:?}, removals {took:?}, probes while both ran {probes:?}");
    assert!(
        !probes.is_empty(),
        "the removals ({took:?}) ended before a probe could run: make the layers larger"
    );
    let worst = probes.iter().max().unwrap();
    assert!(
        *worst < Duration::from_secs(1) + baseline,
        "ps/version took {worst:?} during the removals ({took:?}); baseline {baseline:?}"
    );
    let left = d.nook(&["ps", "-a", "-q"]).ok();
    assert!(left.trim().is_empty(), "containers left: {left}");
}
