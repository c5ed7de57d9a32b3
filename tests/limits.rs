//! Resource limits, stats and pause, rootless, on this machine's cgroups: the one root step
//! (`nook-rootless-setuptool.sh delegate nooktest`) runs in the set-up, nookd runs as
//! `nooktest`, and every limit is checked by what the container could do (an allocation killed,
//! forks refused, CPU time bounded) or by what its cgroup counted. Without delegation
//! (`nookother`) each flag is refused in one line.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

use common::Nookd;
use nook::image::fixture::{docker_archive, FileSpec, TestImage};

const IMG: &str = "bb:latest";
/// A user with subordinate ids but no cgroup delegation.
const OTHER: &str = "nookother";

const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "sleep", "dd", "seq", "true", "head", "wc", "ps", "grep",
];

fn image() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut base = vec![
        FileSpec::dir("bin"),
        FileSpec::exec("bin/busybox", bb),
        FileSpec::dir("tmp"),
        FileSpec::dir("dev"),
    ];
    for a in APPLETS {
        base.push(FileSpec::symlink(&format!("bin/{a}"), "busybox"));
    }
    let img = TestImage::build(&[base], false, &["sh"]);
    docker_archive(&[(&[IMG], &img)])
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The one root step, for the test user (idempotent: every test file and run may do it), and
/// none for `nookother` (what an earlier run may have left is removed).
fn delegate() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let o = std::process::Command::new("bash")
            .arg(repo().join("setuptool/nook-rootless-setuptool.sh"))
            .args(["delegate", "--no-boot-unit", common::USER])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "delegate {}: {}{}",
            common::USER,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let (uid, _) = common::ids(OTHER);
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let d = h.path().join(format!("nook/user-{uid}"));
            if d.exists() {
                remove_cgroup_tree(&d);
            }
        }
    });
}

fn remove_cgroup_tree(d: &Path) {
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(d);
}

fn daemon() -> Nookd {
    delegate();
    let d = Nookd::start();
    d.nook_stdin(&["load"], &image()).ok();
    d
}

fn inspect(d: &Nookd, name: &str) -> serde_json::Value {
    let out = d.nook(&["inspect", name]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    if v.is_array() {
        v[0].clone()
    } else {
        v
    }
}

/// The container's cgroup directory in a v1 hierarchy (as root reads it).
fn cgroup_dir(d: &Nookd, name: &str, controller: &str) -> PathBuf {
    let v = inspect(d, name);
    let p = v["Spec"]["linux"]["cgroupsPath"]
        .as_str()
        .unwrap_or_else(|| panic!("no cgroupsPath in the spec of {name}: {v}"))
        .to_string();
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(p.trim_start_matches('/'))
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `nook events` in the background.
struct Events {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Events {
    fn start(d: &Nookd, args: &[&str]) -> Events {
        let mut c = common::as_user(&d.user, &d.env(), "nook");
        c.arg("events")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        // the subscription is live once nookd answers another request after it
        std::thread::sleep(Duration::from_millis(300));
        Events { child, lines: rx }
    }

    fn until(&self, secs: u64, f: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if f(&l) {
                return Some(l);
            }
        }
        None
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A container allocating past `--memory 64m` is killed by the kernel: exit 137, OOMKilled in
/// `inspect`, a `/tasks/oom` event; the same allocation under a larger limit succeeds.
#[test]
fn memory_limit_kills_with_oom() {
    let d = daemon();
    let ev = Events::start(&d, &["--filter", "topic=/tasks/oom", "--format", "json"]);
    let t0 = Instant::now();
    let r = d.nook(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "64m",
        IMG,
        "sh",
        "-c",
        "exec dd if=/dev/zero of=/dev/null bs=100M count=1",
    ]);
    eprintln!(
        "--memory 64m, a 100 MiB buffer: exit {} after {:?}",
        r.code(),
        t0.elapsed()
    );
    assert_eq!(r.code(), 137, "stdout {} stderr {}", r.stdout(), r.stderr());
    let v = inspect(&d, "hog");
    assert_eq!(v["State"]["OOMKilled"], true, "{}", v["State"]);
    assert_eq!(v["State"]["ExitCode"], 137);
    assert_eq!(v["HostConfig"]["Resources"]["Memory"], 64 << 20);
    assert_eq!(v["Spec"]["linux"]["resources"]["memory"]["limit"], 64 << 20);
    let e = ev
        .until(10, |l| l.contains("/tasks/oom"))
        .expect("a /tasks/oom event");
    assert!(e.contains("hog"), "{e}");

    // the same under 256m completes, and is not reported as an OOM kill
    let r = d.nook(&[
        "run",
        "--name",
        "fits",
        "--memory",
        "256m",
        IMG,
        "sh",
        "-c",
        "exec dd if=/dev/zero of=/dev/null bs=100M count=1",
    ]);
    assert_eq!(r.code(), 0, "{}", r.stderr());
    assert_eq!(inspect(&d, "fits")["State"]["OOMKilled"], false);
    // runc enforces it the same way
    let r = d.nook(&[
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--memory",
        "64m",
        IMG,
        "sh",
        "-c",
        "exec dd if=/dev/zero of=/dev/null bs=100M count=1",
    ]);
    assert_eq!(r.code(), 137, "runc: {}", r.stderr());
    // removing the container removes its cgroup
    let cg = cgroup_dir(&d, "hog", "memory");
    assert!(cg.exists(), "{} should exist until rm", cg.display());
    d.nook(&["rm", "hog"]).ok();
    assert!(!cg.exists(), "{} left behind", cg.display());
}

/// `--pids-limit 20` bounds a loop starting 50 background processes; `nook update` raises it.
#[test]
fn pids_limit_bounds_a_fork_loop() {
    let d = daemon();
    d.nook(&[
        "run",
        "-d",
        "--name",
        "forks",
        "--pids-limit",
        "20",
        IMG,
        "sh",
        "-c",
        "(for i in $(seq 1 50); do sleep 300 & done) 2>&1; echo loop-done; exec sleep 300",
    ])
    .ok();
    let pids = cgroup_dir(&d, "forks", "pids");
    assert_eq!(
        std::fs::read_to_string(pids.join("pids.max"))
            .unwrap()
            .trim(),
        "20"
    );
    wait_until("the loop to end", 20, || {
        d.nook(&["logs", "forks"]).stdout().contains("loop-done")
    });
    let current: u64 = std::fs::read_to_string(pids.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let logs = d.nook(&["logs", "forks"]).stdout();
    eprintln!("--pids-limit 20, 50 forks tried: {current} processes in the cgroup");
    assert!((10..=20).contains(&current), "{current} processes");
    assert!(logs.contains("fork"), "no fork failure reported: {logs}");
    // stats count the same
    let s = d
        .nook(&["stats", "--no-stream", "--format", "json", "forks"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert!(v[0]["pids"].as_u64().unwrap() <= 20, "{v}");
    // update changes the running container's limit
    d.nook(&["update", "--pids-limit", "100", "forks"]).ok();
    assert_eq!(
        std::fs::read_to_string(pids.join("pids.max"))
            .unwrap()
            .trim(),
        "100"
    );
    assert_eq!(
        inspect(&d, "forks")["HostConfig"]["Resources"]["PidsLimit"],
        100
    );
    d.nook(&["rm", "-f", "forks"]).ok();
}

/// `--cpus 0.5` holds two busy loops (which could use both CPUs) to about half a CPU, measured
/// by the cgroup's CPU time.
#[test]
fn cpus_bound_a_busy_loop() {
    let d = daemon();
    d.nook(&[
        "run",
        "-d",
        "--name",
        "spin",
        "--cpus",
        "0.5",
        IMG,
        "sh",
        "-c",
        "while :; do :; done & while :; do :; done",
    ])
    .ok();
    let acct = cgroup_dir(&d, "spin", "cpuacct").join("cpuacct.usage");
    let quota = cgroup_dir(&d, "spin", "cpu").join("cpu.cfs_quota_us");
    assert_eq!(std::fs::read_to_string(quota).unwrap().trim(), "50000");
    let read = || -> u64 {
        std::fs::read_to_string(&acct)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(500));
    let (c0, t0) = (read(), Instant::now());
    std::thread::sleep(Duration::from_secs(4));
    let (c1, t1) = (read(), Instant::now());
    let share = (c1 - c0) as f64 / (t1 - t0).as_nanos() as f64;
    eprintln!("--cpus 0.5, two busy loops: {share:.3} CPUs over 4 s");
    // the upper bound is the limit; the lower one only proves it ran (the box is shared, so
    // the quota is shown at work by the periods the kernel throttled it in)
    assert!(share <= 0.6, "used {share:.3} CPUs with --cpus 0.5");
    assert!(share >= 0.05, "used only {share:.3} CPUs");
    let stat = std::fs::read_to_string(cgroup_dir(&d, "spin", "cpu").join("cpu.stat")).unwrap();
    let throttled: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    eprintln!("  throttled in {throttled} periods");
    // a loaded box may give the loops less than the quota; otherwise the kernel throttled them
    assert!(
        throttled > 0 || share < 0.4,
        "{share:.3} CPUs and never throttled: {stat}"
    );
    // `update --cpus 0.1` on the running container: a quota below what even this box gives
    // the loops, so the kernel must throttle them, and they get about a tenth of a CPU
    d.nook(&["update", "--cpus", "0.1", "spin"]).ok();
    let quota = cgroup_dir(&d, "spin", "cpu").join("cpu.cfs_quota_us");
    assert_eq!(std::fs::read_to_string(quota).unwrap().trim(), "10000");
    let (c0, t0) = (read(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (c1, t1) = (read(), Instant::now());
    let share = (c1 - c0) as f64 / (t1 - t0).as_nanos() as f64;
    let stat = std::fs::read_to_string(cgroup_dir(&d, "spin", "cpu").join("cpu.stat")).unwrap();
    let throttled_after: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    eprintln!(
        "--cpus 0.1 (nook update): {share:.3} CPUs over 3 s, throttled in {} more periods",
        throttled_after - throttled
    );
    assert!(share <= 0.15, "used {share:.3} CPUs with --cpus 0.1");
    assert!(throttled_after > throttled + 5, "{stat}");
    d.nook(&["rm", "-f", "spin"]).ok();
}

/// `nook stats` shows the memory a container holds (100 MiB in its /dev/shm, sized with
/// --shm-size), its limit and its processes; the metrics endpoint has the same.
#[test]
fn stats_show_memory_held() {
    delegate();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Nookd::start_with(&format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n"));
    d.nook_stdin(&["load"], &image()).ok();
    // the io weight, where the kernel's io scheduler has one (BFQ's blkio.bfq.weight, CFQ's
    // blkio.weight; mq-deadline has none): then runc writes it and crun is refused in one line
    // rather than failing or ignoring it; without one, the option is refused, naming why
    let blkio_root = Path::new("/sys/fs/cgroup/blkio/nook");
    let has_weight = ["blkio.bfq.weight", "blkio.weight"]
        .iter()
        .any(|f| blkio_root.join(f).exists());
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "holder",
        "--memory",
        "512m",
        "--shm-size",
        "256m",
        "--runtime",
        "runc",
    ];
    if has_weight {
        args.extend(["--blkio-weight", "300"]);
    } else {
        let e = d
            .nook(&["run", "--rm", "--blkio-weight", "300", IMG, "true"])
            .fails();
        assert!(e.contains("io scheduler with weights"), "{e}");
        eprintln!(
            "NOTE: no io scheduler with weights here: --blkio-weight refused, as it should be"
        );
    }
    args.extend([
        IMG,
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/shm/x bs=1M count=100 2>/dev/null; echo held; exec sleep 300",
    ]);
    d.nook(&args).ok();
    wait_until("the memory to be held", 20, || {
        d.nook(&["logs", "holder"]).stdout().contains("held")
    });
    if has_weight {
        let blkio_weight_file = cgroup_dir(&d, "holder", "blkio").join("blkio.weight");
        if !blkio_weight_file.exists() {
            let e = d
                .nook(&[
                    "run",
                    "--rm",
                    "--runtime",
                    "crun",
                    "--blkio-weight",
                    "300",
                    IMG,
                    "true",
                ])
                .fails();
            assert!(e.contains("--runtime runc"), "{e}");
        }
        let blkio = cgroup_dir(&d, "holder", "blkio");
        let weight = ["blkio.bfq.weight", "blkio.weight"]
            .iter()
            .find_map(|f| std::fs::read_to_string(blkio.join(f)).ok())
            .expect("a blkio weight file");
        assert!(weight.split_whitespace().any(|w| w == "300"), "{weight}");
    }
    let s = d
        .nook(&["stats", "--no-stream", "--format", "json", "holder"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    let row = &v[0];
    eprintln!("stats of a container holding 100 MiB: {row}");
    let mem = row["memory_usage"].as_u64().unwrap();
    assert!((100 << 20..=200 << 20).contains(&mem), "memory_usage {mem}");
    assert_eq!(row["memory_limit"], 512u64 << 20);
    assert_eq!(row["name"], "holder");
    assert!(row["pids"].as_u64().unwrap() >= 1);
    // the table has the columns people know
    let t = d.nook(&["stats", "--no-stream", "holder"]).ok();
    assert!(
        t.contains("MEM USAGE / LIMIT") && t.contains("holder") && t.contains("512.00MiB"),
        "{t}"
    );
    // the metrics endpoint: the same figures per container
    let id = row["id"].as_str().unwrap().to_string();
    let o = std::process::Command::new("curl")
        .args(["-sS", "-f", &format!("http://127.0.0.1:{port}/v1/metrics")])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&o.stdout).to_string();
    let metric = |name: &str| -> Option<f64> {
        body.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&id))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        metric("nook_container_memory_limit_bytes"),
        Some((512u64 << 20) as f64),
        "{body}"
    );
    assert!(metric("nook_container_memory_bytes").unwrap_or(0.0) >= (100u64 << 20) as f64);
    assert!(
        metric("nook_container_pids").unwrap_or(0.0) >= 1.0,
        "{body}"
    );
    assert!(
        metric("nook_container_network_receive_bytes").is_some(),
        "{body}"
    );
    // update (runc here) lowers the memory limit of the running container
    d.nook(&["update", "--memory", "256m", "holder"]).ok();
    let mem = cgroup_dir(&d, "holder", "memory");
    assert_eq!(
        std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        (256u64 << 20).to_string()
    );
    let e = d.nook(&["update", "--memory", "1m", "holder"]).fails();
    assert!(e.contains("6m"), "{e}");
    d.nook(&["rm", "-f", "holder"]).ok();
}

/// `nook pause` freezes a counter, `exec` into it is refused at once, `unpause` thaws it.
#[test]
fn pause_stops_a_counter_and_unpause_resumes_it() {
    let d = daemon();
    d.nook(&[
        "run",
        "-d",
        "--name",
        "counter",
        IMG,
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done",
    ])
    .ok();
    let count = || d.nook(&["logs", "counter"]).stdout().lines().count();
    wait_until("the counter to count", 20, || count() > 3);
    d.nook(&["pause", "counter"]).ok();
    let ps = d.nook(&["ps"]).ok();
    assert!(ps.contains("Paused"), "{ps}");
    std::thread::sleep(Duration::from_millis(300));
    let n1 = count();
    std::thread::sleep(Duration::from_secs(2));
    let n2 = count();
    assert!(
        n2 <= n1 + 1,
        "the counter went on while paused: {n1} -> {n2}"
    );
    let t0 = Instant::now();
    let e = d.nook(&["exec", "counter", "true"]).fails();
    assert!(t0.elapsed() < Duration::from_secs(5), "exec hung");
    assert!(e.contains("paused") && e.contains("unpause"), "{e}");
    d.nook(&["unpause", "counter"]).ok();
    wait_until("the counter to go on", 10, || count() > n2 + 3);
    d.nook(&["rm", "-f", "counter"]).ok();
}

/// Without delegation every flag that needs a controller is refused in one line naming it and
/// the `delegate` command; `--shm-size` and `--oom-score-adj` need none and work.
#[test]
fn limits_refused_without_delegation() {
    delegate(); // removes any delegation of nookother left by earlier runs
    let mut d = Nookd::prepare_for(OTHER, "");
    d.spawn();
    d.wait_ready();
    d.nook_stdin(&["load"], &image()).ok();
    for (flag, value, controller) in [
        ("--memory", "64m", "memory"),
        ("--pids-limit", "20", "pids"),
        ("--cpus", "0.5", "cpu"),
        ("--cpu-shares", "512", "cpu"),
        ("--cpuset-cpus", "0", "cpuset"),
        ("--memory-reservation", "32m", "memory"),
    ] {
        let e = d.nook(&["run", "--rm", flag, value, IMG, "true"]).fails();
        assert_eq!(e.trim().lines().count(), 1, "{flag}: not one line: {e}");
        assert!(
            e.contains(&format!("{flag} needs the {controller} cgroup controller"))
                && e.contains(&format!("nook-rootless-setuptool.sh delegate {OTHER}")),
            "{flag}: {e}"
        );
    }
    // nothing was made
    let ps = d.nook(&["ps", "-a"]).ok();
    assert_eq!(ps.lines().count(), 1, "{ps}");
    let r = d.nook(&[
        "run",
        "--rm",
        "--shm-size",
        "16m",
        "--oom-score-adj",
        "300",
        IMG,
        "sh",
        "-c",
        "cat /proc/self/oom_score_adj; grep /dev/shm /proc/mounts",
    ]);
    let out = r.ok();
    assert!(out.starts_with("300\n"), "{out}");
    assert!(out.contains("size=16384k"), "{out}");
    // stats need cgroups
    let e = d.nook(&["stats", "--no-stream"]).fails();
    assert!(e.contains("delegate nookother"), "{e}");
    // pause needs the freezer
    d.nook(&["run", "-d", "--name", "p", IMG, "sleep", "60"])
        .ok();
    let e = d.nook(&["pause", "p"]).fails();
    assert!(e.contains("freezer") && e.contains("delegate"), "{e}");
    d.nook(&["rm", "-f", "p"]).ok();
}
