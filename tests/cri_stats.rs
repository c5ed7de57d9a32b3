//! CRI's stats, metrics and events driven by the real crictl as the unprivileged test user:
//! `crictl statsp` (ListPodSandboxStats: a pod's CPU, memory, process count and network with
//! its containers' stats inside, with the cgroups delegated and without them), `crictl
//! metricdescs` / `metricsp`, `crictl events` following a container from creation to
//! removal, and `crictl inspect` keeping a container's real start time after it exited.

mod common;
#[path = "common/cri.rs"]
mod cri;

use std::io::BufReader;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Nookd;
use cri::{
    create_in, crictl, crictl_cmd, crictl_json, have_crictl, pulled_busybox, run_pod, scratch,
    wait_state,
};

/// A user without cgroup delegation (tests/limits.rs removes any it was given).
const OTHER: &str = "nookother";

/// A protobuf JSON uint64 (crictl prints them as strings).
fn num(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The stats of pod `id` in `crictl statsp`'s answer.
fn pod_stats(s: &serde_json::Value, id: &str) -> serde_json::Value {
    s["stats"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["attributes"]["id"] == id))
        .unwrap_or_else(|| panic!("no stats of pod {id}: {s}"))
        .clone()
}

fn count(s: &serde_json::Value) -> usize {
    s["stats"].as_array().map(Vec::len).unwrap_or(0)
}

/// What every statsp answer for a pod with one running container `c` shows.
fn check_running_pod(d: &Nookd, pod: &str, c: &str) -> serde_json::Value {
    let s = pod_stats(&crictl_json(d, &["statsp"]), pod);
    let l = &s["linux"];
    assert!(
        num(&l["memory"]["workingSetBytes"]["value"]).unwrap_or(0) > 0,
        "{s}"
    );
    assert!(
        num(&l["memory"]["usageBytes"]["value"]).unwrap_or(0) > 0,
        "{s}"
    );
    assert!(
        num(&l["cpu"]["usageCoreNanoSeconds"]["value"]).is_some(),
        "{s}"
    );
    assert!(
        num(&l["process"]["processCount"]["value"]).unwrap_or(0) >= 1,
        "{s}"
    );
    let cs = l["containers"].as_array().expect("containers in the pod");
    let mine = cs
        .iter()
        .find(|x| x["attributes"]["id"] == c)
        .unwrap_or_else(|| panic!("container {c} not in {s}"));
    assert!(
        num(&mine["memory"]["workingSetBytes"]["value"]).unwrap_or(0) > 0,
        "{s}"
    );
    // the pod's network: its own eth0 on nook's bridge when it has an address
    let ip = crictl_json(d, &["inspectp", pod])["status"]["network"]["ip"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if !ip.is_empty() {
        let n = &l["network"];
        assert_eq!(n["defaultInterface"]["name"], "eth0", "{s}");
        assert!(
            num(&n["defaultInterface"]["rxBytes"]["value"]).is_some(),
            "{s}"
        );
        assert!(
            num(&n["defaultInterface"]["txErrors"]["value"]).is_some(),
            "{s}"
        );
    }
    s
}

/// With cgroups delegated: statsp (JSON, table and filters) shows the pod with its running
/// container's figures from its cgroup; metricdescs and metricsp name the same figures; a
/// container that exited keeps its real start time in `crictl inspect`.
#[test]
fn crictl_statsp_metrics_and_started_at() {
    if !have_crictl() {
        return;
    }
    common::delegate_cgroups();
    let dir = scratch("statsp");
    let d = Nookd::start();
    let mut regs = Vec::new();
    let image = pulled_busybox(&d, &dir, &mut regs);
    let pod = run_pod(&d, &dir, "statspod");
    let worker = create_in(&d, &dir, &pod, &image, "worker", "exec busybox sleep 600");
    crictl(&d, &["start", &worker]).ok();
    wait_state(&d, &worker, "CONTAINER_RUNNING");

    let s = check_running_pod(&d, &pod.0, &worker);
    assert_eq!(s["attributes"]["metadata"]["name"], "statspod", "{s}");
    assert_eq!(s["attributes"]["labels"]["app"], "statspod", "{s}");
    // the figures are the container's cgroup's: ContainerStats agrees on what it counts
    let cs = crictl_json(&d, &["stats", &worker]);
    assert!(
        num(&cs["stats"][0]["memory"]["workingSetBytes"]["value"]).unwrap_or(0) > 0,
        "{cs}"
    );
    // filters: label, id prefix (also as the argument)
    assert_eq!(
        count(&crictl_json(&d, &["statsp", "--label", "app=statspod"])),
        1
    );
    assert_eq!(
        count(&crictl_json(&d, &["statsp", "--label", "app=none"])),
        0
    );
    assert_eq!(
        count(&crictl_json(&d, &["statsp", "--id", &pod.0[..12]])),
        1
    );
    assert_eq!(count(&crictl_json(&d, &["statsp", &pod.0[..12]])), 1);
    assert_eq!(count(&crictl_json(&d, &["statsp", "--id", "ffffffff"])), 0);
    // the table crictl computes from two samples a second apart
    let table = crictl(&d, &["statsp"]).ok();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("statspod") && l.contains(&pod.0[..13])),
        "{table}"
    );

    // metrics: the descriptors, and the pod's and container's values under those names
    let descs = crictl_json(&d, &["metricdescs"]);
    let names: Vec<&str> = descs["descriptors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    for n in [
        "container_cpu_usage_seconds_total",
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
    ] {
        assert!(names.contains(&n), "{n} not in {descs}");
    }
    let m = crictl_json(&d, &["metricsp"]);
    let pm = m["podMetrics"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["podSandboxId"] == pod.0.as_str()))
        .unwrap_or_else(|| panic!("no metrics of the pod: {m}"));
    let cm = pm["containerMetrics"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["containerId"] == worker.as_str()))
        .unwrap_or_else(|| panic!("no metrics of the container: {m}"));
    let ws = cm["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "container_memory_working_set_bytes")
        .unwrap_or_else(|| panic!("no working set: {m}"));
    assert!(num(&ws["value"]["value"]).unwrap_or(0) > 0, "{m}");
    assert_eq!(ws["labelValues"][0], "worker", "{m}");
    assert_eq!(ws["labelValues"][4], "statspod", "{m}");
    // cAdvisor's finer figures, with cgroups delegated: the start time, the one thread, the
    // writable layer's filesystem, the memory breakdown
    let value = |n: &str| {
        cm["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .and_then(|x| num(&x["value"]["value"]))
            .unwrap_or_else(|| panic!("no {n}: {cm}"))
    };
    let started = value("container_start_time_seconds") as i64;
    assert!(
        (chrono::Utc::now().timestamp() - started).abs() < 600,
        "{cm}"
    );
    assert_eq!(value("container_threads"), 1, "{cm}");
    assert!(value("container_fs_inodes_total") >= value("container_fs_inodes_free"));
    assert!(value("container_fs_limit_bytes") > 0, "{cm}");
    value("container_memory_cache");
    value("container_cpu_cfs_periods_total");
    // every descriptor's labels match the values sent under its name
    for x in cm["metrics"].as_array().unwrap() {
        let desc = descs["descriptors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|dsc| dsc["name"] == x["name"])
            .unwrap_or_else(|| panic!("{} not described", x["name"]));
        assert_eq!(
            desc["labelKeys"].as_array().unwrap().len(),
            x["labelValues"].as_array().unwrap().len(),
            "{x}"
        );
    }
    if pm["metrics"].as_array().is_some_and(|a| !a.is_empty()) {
        assert!(
            pm["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == "container_network_receive_bytes_total"
                    && x["labelValues"][0] == "eth0"),
            "{m}"
        );
    }

    // a container that ran and exited: its real start and finish times, also once its shim
    // is gone (the exit record is then all that tells of it)
    let quick = create_in(&d, &dir, &pod, &image, "quick", "busybox sleep 1; exit 3");
    let before = chrono::Utc::now();
    crictl(&d, &["start", &quick]).ok();
    wait_state(&d, &quick, "CONTAINER_EXITED");
    for wait in [0, 3] {
        std::thread::sleep(Duration::from_secs(wait));
        let st = crictl_json(&d, &["inspect", &quick]);
        let t = |k: &str| {
            chrono::DateTime::parse_from_rfc3339(st["status"][k].as_str().unwrap())
                .unwrap_or_else(|e| panic!("{k}: {e}: {st}"))
        };
        let (started, finished) = (t("startedAt"), t("finishedAt"));
        assert!(
            started >= before - chrono::Duration::seconds(2),
            "startedAt {started} before the start ({before}): {st}"
        );
        assert!(
            finished - started >= chrono::Duration::milliseconds(900),
            "ran {started} .. {finished}: {st}"
        );
        assert_eq!(st["status"]["exitCode"], 3, "{st}");
    }
    // an exited container is in its pod's stats without figures
    let s = pod_stats(&crictl_json(&d, &["statsp"]), &pod.0);
    let q = s["linux"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["attributes"]["id"] == quick.as_str())
        .unwrap_or_else(|| panic!("{s}"))
        .clone();
    assert!(q["memory"].is_null(), "{q}");

    crictl(&d, &["stopp", &pod.0]).ok();
    crictl(&d, &["rmp", &pod.0]).ok();
    assert_eq!(count(&crictl_json(&d, &["statsp"])), 0);
}

/// Without cgroup delegation a pod's figures are its processes' (from /proc), as
/// ContainerStats' are: statsp still shows memory and a process count.
#[test]
fn crictl_statsp_without_delegation() {
    if !have_crictl() {
        return;
    }
    let (uid, _) = common::ids(OTHER);
    if std::path::Path::new(&format!("/sys/fs/cgroup/memory/nook/user-{uid}")).exists() {
        eprintln!("skipped: {OTHER} has delegated cgroups here (tests/limits.rs removes them)");
        return;
    }
    let dir = scratch("statsp-other");
    let mut d = Nookd::prepare_for(OTHER, "");
    d.spawn();
    d.wait_ready();
    let mut regs = Vec::new();
    let image = pulled_busybox(&d, &dir, &mut regs);
    let pod = run_pod(&d, &dir, "plain");
    let c = create_in(&d, &dir, &pod, &image, "sleeper", "exec busybox sleep 600");
    crictl(&d, &["start", &c]).ok();
    wait_state(&d, &c, "CONTAINER_RUNNING");
    let s = check_running_pod(&d, &pod.0, &c);
    assert_eq!(
        num(&s["linux"]["process"]["processCount"]["value"]),
        Some(1),
        "{s}"
    );
    // the pod's one process: the sleeper (not the holder, which shares its PID namespace);
    // resident memory is what /proc tells
    assert!(
        num(&s["linux"]["memory"]["rssBytes"]["value"]).unwrap_or(0) > 0,
        "{s}"
    );
    // metrics: what /proc tells is there, what only a cgroup could tell is left out
    let m = crictl_json(&d, &["metricsp"]);
    let names: Vec<&str> = m["podMetrics"][0]["containerMetrics"][0]["metrics"]
        .as_array()
        .unwrap_or_else(|| panic!("{m}"))
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert!(names.contains(&"container_memory_working_set_bytes"), "{m}");
    assert!(names.contains(&"container_threads"), "{m}");
    assert!(!names.contains(&"container_memory_cache"), "{m}");
    crictl(&d, &["rmp", "-f", &pod.0]).ok();
}

/// `crictl events` follows a container of a pod: created, started, stopped and deleted, each
/// with the pod's status and its containers' statuses; when crictl goes away, nookd's stream
/// ends.
#[test]
fn crictl_events_follow_a_container() {
    if !have_crictl() {
        return;
    }
    let dir = scratch("events");
    let d = Nookd::start();
    let mut regs = Vec::new();
    let image = pulled_busybox(&d, &dir, &mut regs);
    let pod = run_pod(&d, &dir, "evpod");

    let mut child = crictl_cmd(&d, &["events", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning crictl events");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = serde_json::Deserializer::from_reader(BufReader::new(out));
        for v in r.into_iter::<serde_json::Value>().flatten() {
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    let followed = |what: &str| {
        let t0 = Instant::now();
        while !d.log_text().contains(what) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no {what:?} in nookd's log"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    followed("GetContainerEvents: a client follows");

    let c = create_in(&d, &dir, &pod, &image, "ev", "busybox sleep 2");
    crictl(&d, &["start", &c]).ok();
    wait_state(&d, &c, "CONTAINER_EXITED");
    crictl(&d, &["rm", &c]).ok();

    let want = [
        "CONTAINER_CREATED_EVENT",
        "CONTAINER_STARTED_EVENT",
        "CONTAINER_STOPPED_EVENT",
        "CONTAINER_DELETED_EVENT",
    ];
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let t0 = Instant::now();
    while seen.len() < want.len() && t0.elapsed() < Duration::from_secs(30) {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(500)) {
            if v["containerId"] == c.as_str() {
                seen.push(v);
            }
        }
    }
    let kinds: Vec<&str> = seen
        .iter()
        .map(|e| {
            e["containerEventType"]
                .as_str()
                .unwrap_or("CONTAINER_CREATED_EVENT")
        })
        .collect();
    assert_eq!(kinds, want, "{seen:?}");
    let state_of = |e: &serde_json::Value| {
        e["containersStatuses"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == c.as_str()))
            .map(|s| {
                s["state"]
                    .as_str()
                    .unwrap_or("CONTAINER_CREATED")
                    .to_string()
            })
    };
    for e in &seen {
        assert_eq!(e["podSandboxStatus"]["id"], pod.0.as_str(), "{e}");
        assert_eq!(e["podSandboxStatus"]["metadata"]["name"], "evpod", "{e}");
        assert!(num(&e["createdAt"]).unwrap_or(0) > 0, "{e}");
    }
    assert_eq!(state_of(&seen[0]).as_deref(), Some("CONTAINER_CREATED"));
    assert_eq!(state_of(&seen[1]).as_deref(), Some("CONTAINER_RUNNING"));
    assert_eq!(state_of(&seen[2]).as_deref(), Some("CONTAINER_EXITED"));
    assert_eq!(state_of(&seen[3]), None, "{}", seen[3]);

    // the client goes away: the stream ends in nookd, which goes on serving
    child.kill().unwrap();
    child.wait().unwrap();
    followed("GetContainerEvents: the stream ended");
    crictl(&d, &["rmp", "-f", &pod.0]).ok();
    assert_eq!(crictl(&d, &["pods", "-q"]).ok().trim(), "");
}
