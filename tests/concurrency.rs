//! Many clients at once against one nookd (as the unprivileged user): concurrent imports of
//! the same image store each blob once and all succeed; containers created and started
//! concurrently all run.

mod common;

use common::Nookd;
use nook::image::fixture::{
    docker_archive, oci_layout, FileSpec, TestImage, TestRegistry, TestRegistryOptions,
};
use std::process::Stdio;

fn image() -> (TestImage, Vec<u8>) {
    let mut layers =
        nook::image::fixture::busybox_layers(std::fs::read("/bin/busybox").unwrap(), "c\n");
    layers[0].push(FileSpec::symlink("bin/sleep", "busybox"));
    let img = TestImage::build(&layers, false, &["sh"]);
    let tar = docker_archive(&[(&["conc/img:1"], &img)]);
    (img, tar)
}

/// Runs one `nook` client per argument list, all at once, and asserts that every one succeeded.
fn all_at_once(d: &Nookd, what: &str, args: Vec<Vec<String>>) {
    let clients: Vec<_> = args
        .iter()
        .map(|a| {
            common::as_user(common::USER, &d.env(), "nook")
                .args(a)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in clients {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "a concurrent {what} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn ten_concurrent_imports_store_each_blob_once() {
    let d = Nookd::start();
    let (img, tar) = image();
    let path = d.base.join("img.tar");
    std::fs::write(&path, &tar).unwrap();
    std::os::unix::fs::chown(&path, Some(common::ids(common::USER).0), None).unwrap();
    let import = vec![
        "images".into(),
        "import".into(),
        path.to_str().unwrap().to_string(),
    ];
    all_at_once(&d, "import", vec![import; 10]);
    for (desc, _) in &img.layers {
        let hex = desc.digest.to_string();
        let hex = hex.trim_start_matches("sha256:");
        assert!(d.root.join("content/blobs/sha256").join(hex).exists());
    }
    // exactly one copy of each: manifest, config, 3 layers
    let n = std::fs::read_dir(d.root.join("content/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(n, 5, "blobs on disk");
    assert!(std::fs::read_dir(d.root.join("content/ingest"))
        .unwrap()
        .next()
        .is_none());
    let chk: serde_json::Value =
        serde_json::from_str(&d.nook(&["check", "--format", "json"]).ok()).unwrap();
    assert_eq!(chk["consistent"], true, "{chk}");
}

#[test]
fn fifty_containers_started_concurrently_all_run() {
    let d = Nookd::start();
    d.nook_stdin(&["load"], &image().1).ok();
    let n = 50;
    let t0 = std::time::Instant::now();
    let runs = (0..n)
        .map(|i| {
            [
                "run",
                "-d",
                "--name",
                &format!("p{i}"),
                "conc/img:1",
                "sh",
                "-c",
                &format!("echo up-{i} > /tmp/up; exec sleep 1000"),
            ]
            .map(String::from)
            .to_vec()
        })
        .collect();
    all_at_once(&d, "run", runs);
    let ps: serde_json::Value =
        serde_json::from_str(&d.nook(&["ps", "--format", "json"]).ok()).unwrap();
    let ps = ps.as_array().unwrap();
    assert_eq!(ps.len(), n, "{ps:?}");
    eprintln!("{n} containers up in {:?}", t0.elapsed());
    let mut ips = std::collections::BTreeSet::new();
    for c in ps {
        assert_eq!(c["status"], "running", "{c}");
        // on the default bridge network: each its own address (no IPAM race)
        let ip = c["ip"].as_str().unwrap_or("");
        assert!(!ip.is_empty() && ips.insert(ip.to_string()), "{c}");
    }
    // each really runs its own process in its own filesystem
    for i in (0..n).step_by(7) {
        let out = d.nook(&["exec", &format!("p{i}"), "cat", "/tmp/up"]).ok();
        assert_eq!(out.trim(), format!("up-{i}"));
    }
    let mut rm = vec!["rm".to_string(), "-f".to_string()];
    rm.extend((0..n).map(|i| format!("p{i}")));
    d.nook(&rm.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    assert!(d.nook(&["ps", "-a", "-q"]).ok().trim().is_empty());
}

/// A busybox image with an extra incompressible layer of `mb` MiB (so downloads overlap).
fn big_image(tag: &str, mb: usize) -> TestImage {
    let mut big = vec![0u8; mb << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15 ^ mb as u64;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut layers =
        nook::image::fixture::busybox_layers(std::fs::read("/bin/busybox").unwrap(), tag);
    layers[0].push(FileSpec::symlink("bin/sleep", "busybox"));
    layers.push(vec![FileSpec::file("big.bin", big)]);
    TestImage::build(&layers, true, &["sh"])
}

/// A registry (Debian's docker-registry on 127.0.0.1) holding `img` as `test/big:1`.
fn registry_with(img: &TestImage) -> (tempfile::TempDir, TestRegistry, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = TestRegistry::start(dir.path(), &TestRegistryOptions::default()).unwrap();
    let name = format!("{}/test/big:1", reg.host());
    let d = Nookd::start();
    d.nook_stdin(&["load"], &oci_layout(&[("local/big:1", img)]))
        .ok();
    d.nook(&["push", "local/big:1", &name]).ok();
    // count from here on: the log starts empty
    reg.restart().unwrap();
    (dir, reg, name)
}

#[test]
fn ten_concurrent_registry_pulls_download_each_blob_once() {
    let img = big_image("ten", 24);
    let (_dir, reg, name) = registry_with(&img);
    let d = Nookd::start();
    let pull = vec!["pull".to_string(), "-q".into(), name.clone()];
    all_at_once(&d, "pull", vec![pull; 10]);
    let ls = d.nook(&["images", "ls", "--format", "json"]).ok();
    assert!(
        ls.contains(&img.manifest_descriptor.digest.to_string()),
        "{ls}"
    );
    let gets = reg.blob_gets();
    let mut want: Vec<String> = img
        .layers
        .iter()
        .map(|(l, _)| l.digest.to_string())
        .collect();
    want.push(img.config_descriptor.digest.to_string());
    for w in &want {
        assert_eq!(gets.get(w), Some(&1), "GETs of {w}: {gets:?}");
    }
    assert_eq!(gets.len(), want.len(), "{gets:?}");
    assert!(std::fs::read_dir(d.root.join("content/ingest"))
        .unwrap()
        .next()
        .is_none());
    let chk: serde_json::Value =
        serde_json::from_str(&d.nook(&["check", "--format", "json"]).ok()).unwrap();
    assert_eq!(chk["consistent"], true, "{chk}");
    assert_eq!(
        d.nook(&["run", "--rm", &name, "sh", "-c", "wc -c < /big.bin"])
            .ok()
            .trim(),
        (24usize << 20).to_string()
    );
}

/// The live `nook-shim`s of this nookd (its state directory on their command line).
fn shims_of(d: &Nookd) -> Vec<String> {
    let state = d.state.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("nook-shim") && c.contains(&state))
        .collect()
}

/// The entries of a directory (none when it does not exist).
fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rm_f_racing_a_foreground_run_leaves_nothing_behind() {
    let d = Nookd::start();
    d.nook_stdin(&["load"], &image().1).ok();
    let t0 = std::time::Instant::now();
    let rounds = 30;
    for i in 0..rounds {
        let name = format!("race{i}");
        let mut run = common::as_user(common::USER, &d.env(), "nook")
            .args(["run", "--name", &name, "conc/img:1", "sleep", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // `rm -f` as soon as the record exists (inside the run's create → start window), or a
        // little later (a few milliseconds more each round)
        std::thread::sleep(std::time::Duration::from_millis((i % 5) * 15));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if d.nook(&["rm", "-f", &name]).code() == 0 {
                break;
            }
            if run.try_wait().unwrap().is_some() && d.nook(&["inspect", &name]).code() != 0 {
                break; // the run failed on its own and left no container
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {i}: rm -f never took"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // the run ends: its container was killed, or its start found the record gone
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while run.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "round {i}: nook run still running after rm -f"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let ps = d.nook(&["ps", "-a", "--format", "json"]).ok();
        assert!(!ps.contains(&name), "round {i}: {ps}");
    }
    // let any start that lost the race finish what it would do, then: no record, no bundle,
    // no runtime state, no shim
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(d.nook(&["ps", "-a", "-q"]).ok().trim().is_empty());
    let bundles = entries(&d.state.join("tasks/default"));
    assert!(bundles.is_empty(), "bundles left after rm -f: {bundles:?}");
    for rt in entries(&d.state.join("runtime")) {
        let dir = d.state.join("runtime").join(&rt);
        let left: Vec<String> = entries(&dir)
            .into_iter()
            .filter(|e| dir.join(e).is_dir())
            .collect();
        assert!(left.is_empty(), "{rt} still has containers: {left:?}");
    }
    let shims = shims_of(&d);
    assert!(shims.is_empty(), "shims without a container: {shims:?}");
    eprintln!("{rounds} rounds of rm -f against run in {:?}", t0.elapsed());
    assert!(t0.elapsed() < std::time::Duration::from_secs(240));
}
