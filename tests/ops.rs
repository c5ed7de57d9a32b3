//! Operations end to end: `nook events`, `nook system info`, restart policies and their counts,
//! `nook save` of every image. A real nookd as the unprivileged test user, runc, a busybox
//! image built from /bin/busybox.

mod common;

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, Nookd};
use nook::image::fixture::{docker_archive, FileSpec, TestImage};

const IMG: &str = "bb:latest";

/// A busybox image with a shell and a few applets.
fn image() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut base = vec![
        FileSpec::dir("bin"),
        FileSpec::exec("bin/busybox", bb),
        FileSpec::dir("tmp"),
    ];
    for a in ["sh", "sleep", "echo", "true", "kill", "cat"] {
        base.push(FileSpec::symlink(&format!("bin/{a}"), "busybox"));
    }
    let img = TestImage::build(&[base], false, &["sh"]);
    docker_archive(&[(&[IMG], &img)])
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `nook events ARGS` running in the background; its stdout lines arrive on a channel.
struct Events {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Events {
    fn start(d: &Nookd, args: &[&str]) -> Events {
        let mut c = common::as_user(&d.user, &d.env(), "nook");
        c.arg("events")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("starting nook events");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Events {
            child,
            lines: rx,
            seen: vec![],
        }
    }

    /// Reads lines until one satisfies `f` (returned), or fails the test after `secs`.
    fn until(&mut self, secs: u64, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if f(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no event {what} within {secs} s; got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Lines read so far, parsed as JSON.
    fn json(&self) -> Vec<serde_json::Value> {
        self.seen
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Subscribers see the life of a container and an image, in order, with exit codes; filters
/// narrow the stream; the human format is docker-like; a nookd shutdown ends the stream.
#[test]
fn events_follow_a_container_and_an_image() {
    let mut d = Nookd::start();
    let mut all = Events::start(&d, &["--format", "json"]);
    let mut tasks = Events::start(&d, &["--filter", "topic=/tasks/*"]);
    // the subscriptions are live once a namespace creation is seen by both
    wait_until("the subscriptions are live", 20, || {
        d.nook(&["namespaces", "create", &format!("ev{}", rand_suffix())])
            .ok();
        all.lines
            .recv_timeout(Duration::from_millis(300))
            .map(|l| all.seen.push(l))
            .is_ok()
    });
    all.seen.clear();
    d.nook_stdin(&["load"], &image()).ok();
    let r = d.nook(&["run", "--name", "ev", IMG, "sh", "-c", "exit 3"]);
    assert_eq!(r.code(), 3, "{}", r.stderr());
    d.nook(&["rm", "ev"]).ok();
    d.nook(&["rmi", IMG]).ok();
    all.until(20, "/images/delete", |l| l.contains("\"/images/delete\""));
    let ev = all.json();
    let topics: Vec<&str> = ev.iter().map(|e| e["topic"].as_str().unwrap()).collect();
    let id = ev
        .iter()
        .find(|e| e["topic"] == "/containers/create")
        .map(|e| e["attributes"]["id"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no /containers/create in {topics:?}"));
    // every event of that container, in order
    let mine: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["attributes"]["id"] == id.as_str() || e["attributes"]["key"] == id.as_str())
        .collect();
    let mine_topics: Vec<&str> = mine.iter().map(|e| e["topic"].as_str().unwrap()).collect();
    assert_eq!(
        mine_topics,
        [
            "/snapshot/prepare",
            "/containers/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete",
            "/containers/delete",
            "/snapshot/remove",
        ],
        "all events: {topics:?}"
    );
    let exit = mine[3];
    assert_eq!(exit["attributes"]["exit_code"], "3");
    assert_eq!(exit["attributes"]["name"], "ev");
    assert_eq!(exit["namespace"], "default");
    assert!(
        exit["attributes"]["pid"]
            .as_str()
            .unwrap()
            .parse::<i32>()
            .unwrap()
            > 0
    );
    let create = mine[1];
    assert_eq!(create["attributes"]["image"], "docker.io/library/bb:latest");
    // the image: created by the load (with its layers committed), deleted at the end
    let pos = |t: &str| topics.iter().position(|x| *x == t);
    assert!(
        pos("/images/create") < pos("/containers/create"),
        "{topics:?}"
    );
    assert!(
        pos("/snapshot/commit") < pos("/containers/create"),
        "{topics:?}"
    );
    assert_eq!(topics.last(), Some(&"/images/delete"));
    let img_del = ev.last().unwrap();
    assert_eq!(img_del["attributes"]["name"], "docker.io/library/bb:latest");
    // timestamps: RFC 3339 UTC with milliseconds, never going back
    let ts: Vec<&str> = ev.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(
        ts.iter().all(|t| t.len() == 24 && t.ends_with('Z')),
        "{ts:?}"
    );
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");

    // the filtered, human-format subscriber saw only task events, one line each
    let exit_line = tasks.until(10, "/tasks/delete", |l| l.contains(" /tasks/delete "));
    assert!(
        exit_line.contains(&format!("ns=default id={id} name=ev")),
        "{exit_line}"
    );
    let lines = tasks.seen.clone();
    assert!(
        lines
            .iter()
            .all(|l| l.split(' ').nth(1).unwrap().starts_with("/tasks/")),
        "{lines:?}"
    );
    let exit_line = lines.iter().find(|l| l.contains(" /tasks/exit ")).unwrap();
    let t = exit_line.split(' ').next().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(t).is_ok(),
        "{exit_line}"
    );
    assert!(exit_line.contains(" exit_code=3 "), "{exit_line}");

    // a bad filter is refused with a one-line reason
    let e = d.nook(&["events", "--filter", "colour=red"]).fails();
    assert!(e.contains("unknown filter key"), "{e}");

    // nookd's shutdown ends the streams (it does not wait for the subscribers)
    let t0 = Instant::now();
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let st = all.child.wait().unwrap();
    assert!(!st.success());
    let mut err = String::new();
    std::io::Read::read_to_string(all.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("closed the event stream"), "{err}");
}

fn rand_suffix() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

/// First line of `PROGRAM --version` run on the host.
fn version_line(program: &str) -> String {
    let o = std::process::Command::new(program)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    // the line naming the program (fuse-overlayfs prints fusermount3's version first)
    let name = program.rsplit('/').next().unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .find(|l| l.starts_with(name))
        .or(lines.first())
        .unwrap_or(&"")
        .to_string()
}

/// The version of the Debian package holding `path`.
fn package_version(path: &str) -> String {
    let real = std::fs::canonicalize(path).unwrap();
    let o = std::process::Command::new("dpkg-query")
        .arg("-S")
        .arg(&real)
        .output()
        .unwrap();
    let owner = String::from_utf8_lossy(&o.stdout);
    let pkg = owner.split(':').next().unwrap().trim().to_string();
    let o = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", &pkg])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `nook system info` (= `nook info`) reports the helpers' real versions and paths and the
/// kernel's real settings.
#[test]
fn system_info_reports_versions_and_kernel_features() {
    let d = Nookd::start();
    let t0 = Instant::now();
    let v: serde_json::Value =
        serde_json::from_str(&d.nook(&["system", "info", "--format", "json"]).ok()).unwrap();
    eprintln!("nook system info took {:?}", t0.elapsed());
    let v2: serde_json::Value =
        serde_json::from_str(&d.nook(&["info", "--format", "json"]).ok()).unwrap();
    assert_eq!(v["components"], v2["components"]);
    assert_eq!(v["features"], v2["features"]);
    let comp = |name: &str| -> serde_json::Value {
        v["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no component {name} in {v:#}"))
            .clone()
    };
    let nookd = comp("nookd");
    assert_eq!(nookd["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        nookd["path"].as_str().unwrap().ends_with("/nookd"),
        "{nookd}"
    );
    for name in ["runc", "crun", "slirp4netns", "fuse-overlayfs", "pasta"] {
        let c = comp(name);
        let path = c["path"].as_str().unwrap();
        assert!(path.starts_with('/'), "{name}: {c}");
        // the same binary, asked by the test: the same first line, and the number in it
        let line = version_line(path);
        assert_eq!(c["version_line"], line.as_str(), "{name}: {c}");
        let ver = c["version"].as_str().unwrap();
        if c["error"] == "" {
            assert!(!ver.is_empty() && line.contains(ver), "{name}: {c}");
        } else {
            // Debian's pasta says "pasta unknown version": the package's version instead
            assert_eq!(ver, package_version(path), "{name}: {c}");
        }
    }
    assert!(comp("runc")["version_line"]
        .as_str()
        .unwrap()
        .starts_with("runc version "));
    assert!(comp("fuse-overlayfs")["version_line"]
        .as_str()
        .unwrap()
        .starts_with("fuse-overlayfs"));
    // newuidmap prints no version: said, and its package's version given
    let nu = comp("newuidmap");
    assert!(nu["path"].as_str().unwrap().ends_with("/newuidmap"), "{nu}");
    assert!(nu["error"].as_str().unwrap().contains("uidmap"), "{nu}");
    assert_eq!(
        nu["version"],
        package_version("/usr/bin/newuidmap").as_str()
    );

    let feat = |name: &str| -> String {
        v["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no feature {name} in {v:#}"))["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let read = |p: &str| std::fs::read_to_string(p).unwrap().trim().to_string();
    assert_eq!(feat("kernel"), read("/proc/sys/kernel/osrelease"));
    assert_eq!(
        feat("max_user_namespaces"),
        read("/proc/sys/user/max_user_namespaces")
    );
    assert_eq!(
        feat("ip_unprivileged_port_start"),
        read("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    );
    // this machine: overlay mounts work in a user namespace, seccomp is there, and the test
    // user's v2 cgroup is not delegated (nookd runs outside systemd here); its v1 ones are
    // where `nook-rootless-setuptool.sh delegate` ran (tests/limits.rs does)
    assert_eq!(feat("overlayfs_in_userns"), "yes");
    assert_eq!(feat("seccomp"), "yes");
    assert_eq!(feat("idmapped_mounts"), "yes");
    assert!(feat("cgroup").starts_with("hybrid"), "{}", feat("cgroup"));
    assert_eq!(feat("cgroup_delegated"), "no");
    let (uid, _) = common::ids(common::USER);
    if std::path::Path::new(&format!("/sys/fs/cgroup/memory/nook/user-{uid}")).exists() {
        let v1 = feat("cgroup_v1_delegated");
        assert!(v1.contains("memory") && v1.contains("pids"), "{v1}");
    } else {
        assert_eq!(feat("cgroup_v1_delegated"), "none");
    }
    // the human form shows the same (versions are remembered: asked again only when the
    // binary changes)
    let t0 = Instant::now();
    let text = d.nook(&["system", "info"]).ok();
    eprintln!("nook system info again took {:?}", t0.elapsed());
    assert!(
        text.contains("Components:") && text.contains("Kernel features:"),
        "{text}"
    );
    let runc_row = text
        .lines()
        .find(|l| l.trim_start().starts_with("runc "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        runc_row.contains(comp("runc")["version"].as_str().unwrap())
            && runc_row.contains(comp("runc")["path"].as_str().unwrap()),
        "{runc_row}"
    );
}

/// `nook inspect NAME` as JSON (the first element).
fn inspect(d: &Nookd, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&d.nook(&["inspect", name]).ok()).unwrap();
    v[0].clone()
}

fn status_of(v: &serde_json::Value) -> (String, u64, i64) {
    (
        v["State"]["Status"].as_str().unwrap_or("").to_string(),
        v["RestartCount"].as_u64().unwrap_or(u64::MAX),
        v["State"]["Pid"].as_i64().unwrap_or(0),
    )
}

/// The per-container restart gauge, scraped from the host and parsed as Prometheus text.
fn restarts_metric(port: u16, id: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{port}/v1/metrics");
    let o = std::process::Command::new("curl")
        .args(["-sS", "-f", &url])
        .output()
        .unwrap();
    assert!(o.status.success(), "curl {url}");
    let body = String::from_utf8_lossy(&o.stdout).to_string();
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("the metrics do not parse: {e}\n{body}"));
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "nook_container_restarts"
                && s.labels.get("container") == Some(id)
                && s.labels.get("namespace") == Some("default")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Restart policies: on-failure:N stops after N restarts; always brings back a container whose
/// process was killed, but not one the user stopped; counts show in inspect, ps and metrics;
/// at nookd's start, always containers whose task is gone run again.
#[test]
fn restart_policies_and_counts() {
    let port = free_port();
    let mut d = Nookd::start_with(&format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n"));
    d.nook_stdin(&["load"], &image()).ok();
    let e = d.nook(&["create", "--restart", "sometimes", IMG]).fails();
    assert!(e.contains("invalid restart policy \"sometimes\""), "{e}");
    let e = d
        .nook(&["run", "--rm", "--restart", "always", IMG, "true"])
        .fails();
    assert!(e.contains("--rm"), "{e}");

    // on-failure:3 with a command that always fails: 1 run + 3 restarts, then it stays exited
    let t0 = Instant::now();
    let of = d
        .nook(&[
            "run",
            "-d",
            "--name",
            "of",
            "--restart",
            "on-failure:3",
            IMG,
            "sh",
            "-c",
            "exit 1",
        ])
        .ok()
        .trim()
        .to_string();
    wait_until("3 restarts", 30, || {
        let (st, n, _) = status_of(&inspect(&d, "of"));
        st == "exited" && n == 3
    });
    eprintln!("on-failure:3 done after {:?}", t0.elapsed());
    // the delays 100 + 200 + 400 ms were waited
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let v = inspect(&d, "of");
    assert_eq!(status_of(&v).0, "exited");
    assert_eq!(v["RestartCount"], 3);
    assert_eq!(v["State"]["ExitCode"], 1);
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
    let ps: serde_json::Value =
        serde_json::from_str(&d.nook(&["ps", "-a", "--format", "json"]).ok()).unwrap();
    let row = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "of")
        .unwrap()
        .clone();
    assert_eq!(row["restart_count"], 3, "{row}");
    assert_eq!(row["restart_policy"], "on-failure:3", "{row}");
    assert_eq!(restarts_metric(port, &of), Some(3.0));

    // always: its process killed from outside → started again, counted
    d.nook(&[
        "run",
        "-d",
        "--name",
        "al",
        "--restart",
        "always",
        IMG,
        "sleep",
        "1000",
    ])
    .ok();
    let al = inspect(&d, "al")["Id"].as_str().unwrap().to_string();
    let (_, _, pid1) = status_of(&inspect(&d, "al"));
    assert!(pid1 > 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid1 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("al restarted", 20, || {
        let (st, n, pid) = status_of(&inspect(&d, "al"));
        st == "running" && n == 1 && pid > 0 && pid != pid1
    });
    assert_eq!(restarts_metric(port, &al), Some(1.0));
    // stopped by the user: stays stopped
    d.nook(&["stop", "-t", "1", "al"]).ok();
    std::thread::sleep(Duration::from_millis(1500));
    let (st, n, _) = status_of(&inspect(&d, "al"));
    assert_eq!((st.as_str(), n), ("exited", 1));
    // unless-stopped, killed by the user: stays stopped, also across a nookd restart
    d.nook(&[
        "run",
        "-d",
        "--name",
        "us",
        "--restart",
        "unless-stopped",
        IMG,
        "sleep",
        "1000",
    ])
    .ok();
    d.nook(&["kill", "us"]).ok();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status_of(&inspect(&d, "us")).0, "exited");

    // nookd restarts: `always` comes back (as with docker), `unless-stopped` does not
    d.restart();
    wait_until("al running after nookd's restart", 20, || {
        status_of(&inspect(&d, "al")).0 == "running"
    });
    assert_eq!(status_of(&inspect(&d, "us")).0, "exited");
    assert_eq!(status_of(&inspect(&d, "of")).0, "exited");

    // its process dies while nookd is away: running again when nookd starts
    let (_, _, pid2) = status_of(&inspect(&d, "al"));
    d.kill9();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid2 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the old process is gone", 10, || {
        !std::path::Path::new(&format!("/proc/{pid2}")).exists()
    });
    d.spawn();
    d.wait_ready();
    wait_until("al running again", 20, || {
        let (st, _, pid) = status_of(&inspect(&d, "al"));
        st == "running" && pid != pid2
    });

    // `nook start` by the user starts the count over
    d.nook(&["start", "of"]).ok();
    wait_until("of failed 3 more times", 30, || {
        let (st, n, _) = status_of(&inspect(&d, "of"));
        st == "exited" && n == 3
    });
    d.nook(&["rm", "-f", "al", "us", "of"]).ok();
    assert_eq!(d.nook(&["ps", "-a", "-q"]).ok(), "");

    // removal never races a restart: a container that dies at once under `always` is removed
    // for good, with nothing left running or recorded
    for i in 0..5 {
        let name = format!("flap{i}");
        d.nook(&[
            "run",
            "-d",
            "--name",
            &name,
            "--restart",
            "always",
            IMG,
            "true",
        ])
        .ok();
        std::thread::sleep(Duration::from_millis(100 * i));
        d.nook(&["rm", "-f", &name]).ok();
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.nook(&["ps", "-a", "-q"]).ok(), "");
}

/// `nook images ls --format json` as (name, digest), sorted.
fn images(d: &Nookd) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&d.nook(&["images", "ls", "--format", "json"]).ok()).unwrap();
    let mut out: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// `nook save -o FILE` without names writes every image of the namespace, with every name, in
/// one archive (OCI layout + docker manifest.json); a fresh nookd loads it back whole.
#[test]
fn save_of_every_image_round_trips() {
    let d = Nookd::start();
    // two images, one with several names (tags and another repository)
    let bb = std::fs::read("/bin/busybox").unwrap();
    let app = TestImage::build(
        &[vec![
            FileSpec::dir("bin"),
            FileSpec::exec("bin/busybox", bb),
            FileSpec::symlink("bin/cat", "busybox"),
            FileSpec::file("hello", "from app\n"),
        ]],
        true,
        &["cat", "/hello"],
    );
    d.nook_stdin(&["load"], &image()).ok();
    d.nook_stdin(&["load"], &docker_archive(&[(&["other/app:1"], &app)]))
        .ok();
    d.nook(&["tag", IMG, "bb:v2"]).ok();
    d.nook(&["tag", IMG, "registry.example:5000/team/bb:3"])
        .ok();
    let before = images(&d);
    assert_eq!(before.len(), 4, "{before:?}");
    // nothing to save in an empty namespace: said so
    d.nook(&["namespaces", "create", "empty"]).ok();
    let e = d.nook(&["-n", "empty", "save", "-o", "/tmp/x.tar"]).fails();
    assert!(e.contains("no images"), "{e}");

    let file = d.base.join("all.tar");
    let f = file.to_str().unwrap();
    d.nook(&["save", "-o", f]).ok();
    // the archive: an OCI layout naming all four, and docker's manifest.json with every tag
    let mut names = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&file).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().to_string();
        let mut s = String::new();
        if p == "index.json" || p == "manifest.json" || p == "oci-layout" {
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            names.insert(p, s);
        }
    }
    assert!(names.contains_key("oci-layout"), "{:?}", names.keys());
    let manifest: serde_json::Value = serde_json::from_str(&names["manifest.json"]).unwrap();
    let mut tags: Vec<String> = manifest
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["RepoTags"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            "bb:latest",
            "bb:v2",
            "other/app:1",
            "registry.example:5000/team/bb:3"
        ]
    );
    assert_eq!(manifest.as_array().unwrap().len(), 2, "one entry per image");
    let index: serde_json::Value = serde_json::from_str(&names["index.json"]).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 4);

    // a fresh daemon: everything back, same names and digests, and it runs
    let d2 = Nookd::start();
    d2.nook(&["load", "-i", f]).ok();
    assert_eq!(images(&d2), before);
    assert_eq!(d2.nook(&["run", "--rm", "other/app:1"]).ok(), "from app\n");
    assert_eq!(
        d2.nook(&[
            "run",
            "--rm",
            "registry.example:5000/team/bb:3",
            "echo",
            "ok"
        ])
        .ok(),
        "ok\n"
    );
    // names still select some images only
    d.nook(&["save", "-o", f, "other/app:1"]).ok();
    let d3 = Nookd::start();
    d3.nook(&["load", "-i", f]).ok();
    assert_eq!(images(&d3).len(), 1);
}

/// SIGTERM ends nookd within its grace period even while `logs -f` and an attached `run`
/// stream; the attached client then ends, `logs -f` waits for the next nookd (and ends when
/// the container is removed), and the containers keep running for the next nookd.
#[test]
fn shutdown_is_bounded_with_open_streams() {
    let mut d = Nookd::start();
    d.nook_stdin(&["load"], &image()).ok();
    d.nook(&[
        "run",
        "-d",
        "--name",
        "lf",
        IMG,
        "sh",
        "-c",
        "echo up; sleep 1000",
    ])
    .ok();
    let spawn = |args: &[&str]| {
        let mut c = common::as_user(&d.user, &d.env(), "nook");
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let mut logs = spawn(&["logs", "-f", "lf"]);
    let mut fg = spawn(&["run", "--name", "fg", IMG, "sleep", "1000"]);
    wait_until("fg runs", 20, || d.nook(&["ps"]).stdout().contains(" fg"));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    let took = t0.elapsed();
    eprintln!("nookd stopped {took:?} after SIGTERM with two open streams");
    assert!(
        took >= Duration::from_secs(4),
        "{took:?}: the streams got no grace"
    );
    assert!(took < Duration::from_secs(9), "{took:?}");
    // the attached client is told: its stream ends
    let t = Instant::now();
    while fg.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(5), "run still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    // `logs -f` waits for the next nookd instead (it resumes: tests/containers.rs)
    std::thread::sleep(Duration::from_millis(500));
    assert!(logs.try_wait().unwrap().is_none(), "logs -f gave up");
    // the containers did not go down with nookd
    d.spawn();
    d.wait_ready();
    let ps = d.nook(&["ps"]).ok();
    assert!(ps.contains(" lf") && ps.contains(" fg"), "{ps}");
    // removing the container ends the followed stream, with nothing repeated
    d.nook(&["rm", "-f", "lf", "fg"]).ok();
    let t = Instant::now();
    while logs.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(20), "logs -f still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = logs.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("up\n")
            && !String::from_utf8_lossy(&out.stdout)[3..].contains("up"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Network events: a user network's creation, a container joining and leaving it, and its
/// removal, in order, with the container's name and address.
#[test]
fn events_follow_a_network() {
    let d = Nookd::start();
    d.nook_stdin(&["load"], &image()).ok();
    let mut ev = Events::start(&d, &["--filter", "topic=/networks/*", "--format", "json"]);
    // live once a network creation is seen (each try makes a new one)
    let mut net = String::new();
    wait_until("the subscription is live", 20, || {
        net = format!("evnet{}", rand_suffix());
        d.nook(&["network", "create", &net]).ok();
        ev.lines
            .recv_timeout(Duration::from_millis(300))
            .map(|l| ev.seen.push(l))
            .is_ok()
    });
    d.nook(&[
        "run",
        "--rm",
        "--name",
        "evc",
        "--network",
        &net,
        IMG,
        "true",
    ])
    .ok();
    d.nook(&["network", "rm", &net]).ok();
    ev.until(20, "/networks/delete", |l| {
        l.contains("\"/networks/delete\"") && l.contains(&net)
    });
    let mine: Vec<serde_json::Value> = ev
        .json()
        .into_iter()
        .filter(|e| {
            e["attributes"]["name"] == net.as_str() || e["attributes"]["network"] == net.as_str()
        })
        .collect();
    let topics: Vec<&str> = mine.iter().map(|e| e["topic"].as_str().unwrap()).collect();
    assert_eq!(
        topics,
        [
            "/networks/create",
            "/networks/connect",
            "/networks/disconnect",
            "/networks/delete"
        ],
        "{mine:?}"
    );
    assert!(mine[0]["attributes"]["subnet"]
        .as_str()
        .unwrap()
        .contains('/'));
    assert_eq!(mine[1]["attributes"]["name"], "evc");
    assert_eq!(mine[1]["namespace"], "default");
    let ip: std::net::Ipv4Addr = mine[1]["attributes"]["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(!ip.is_unspecified());
    assert_eq!(
        mine[2]["attributes"]["container"],
        mine[1]["attributes"]["container"]
    );
}
