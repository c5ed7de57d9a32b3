//! docker's `run` semantics, end to end through the CLI with a real nookd as the unprivileged
//! test user: exit statuses of commands that cannot start, `--rm` after a failed start,
//! supplementary groups, setuid programs and no-new-privileges, process limits, the container's
//! own /sys, no /dev/core, `-P`, relative `-v` sources and `--init`. Each check runs under both
//! runtimes where the runtime does the work (crun is the default, runc is named).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::Nookd;
use nook::image::fixture::{docker_archive, FileSpec, TestImage};
use nook::image::manifest::Platform;

const IMG: &str = "rs:latest";
const RUNTIMES: &[&str] = &["crun", "runc"];

const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "id", "sleep", "grep", "touch", "mkdir", "ps", "whoami", "httpd",
    "wc", "test", "true",
];

/// A busybox image: a second copy of busybox setuid-root (with a busybox.conf that lets its
/// `whoami` keep the effective uid it gained), a file that is not executable, a web root and
/// two EXPOSEd ports.
fn image() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut base = vec![
        FileSpec::dir("bin"),
        FileSpec::exec("bin/busybox", bb.clone()),
        FileSpec::File {
            path: "bin/busybox-suid".into(),
            data: bb,
            mode: 0o4755,
        },
        FileSpec::dir("etc"),
        FileSpec::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www:/var/www:/bin/sh\n",
        ),
        FileSpec::file("etc/group", "root:x:0:\nwww-data:x:33:\nstaff:x:50:\n"),
        FileSpec::file("etc/busybox.conf", "[SUID]\nwhoami = ssx root.root\n"),
        FileSpec::file("etc/not-executable", "#!/bin/sh\necho ran\n"),
        FileSpec::dir("www"),
        FileSpec::file("www/index.html", "exposed\n"),
        FileSpec::dir("tmp"),
    ];
    for a in APPLETS {
        base.push(FileSpec::symlink(&format!("bin/{a}"), "busybox"));
    }
    let img = TestImage::build_with(
        &[base],
        false,
        &["sh"],
        &Platform::host(),
        serde_json::json!({"ExposedPorts": {"8080/tcp": {}, "8081/tcp": {}}}),
    );
    docker_archive(&[(&[IMG], &img)])
}

fn daemon() -> Nookd {
    let d = Nookd::start();
    d.nook_stdin(&["load"], &image()).ok();
    d
}

fn containers(d: &Nookd) -> String {
    d.nook(&["ps", "-a", "-q"]).ok()
}

#[test]
fn commands_that_cannot_start_exit_127_and_126() {
    let d = daemon();
    for rt in RUNTIMES {
        for (cmd, code, says) in [
            ("nosuch", 127, "not found"),
            ("/no/such/file", 127, "not found"),
            ("/etc/not-executable", 126, "cannot be executed"),
        ] {
            let r = d.nook(&["run", "--rm", "--runtime", rt, IMG, cmd]);
            assert_eq!(r.code(), code, "{rt} {cmd}: {}", r.stderr());
            let e = r.stderr();
            assert!(e.contains(says) && e.contains(rt), "{rt} {cmd}: {e}");
            assert_eq!(e.trim().lines().count(), 1, "{e}");
            // --rm removed the container whose start failed
            assert_eq!(containers(&d), "", "{rt} {cmd}: left behind");
        }
        // detached, the same status and the same clean-up
        let r = d.nook(&["run", "-d", "--rm", "--runtime", rt, IMG, "nosuch"]);
        assert_eq!(r.code(), 127, "{}", r.stderr());
        assert_eq!(containers(&d), "");
        // without --rm the container stays, as docker leaves it
        let r = d.nook(&["run", "--runtime", rt, "--name", "kept", IMG, "nosuch"]);
        assert_eq!(r.code(), 127, "{}", r.stderr());
        assert!(d.nook(&["ps", "-a"]).ok().contains("kept"));
        d.nook(&["rm", "-f", "kept"]).ok();
    }
}

#[test]
fn supplementary_groups_and_group_add() {
    let d = daemon();
    let id = |args: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        d.nook(&a).ok().trim().to_string()
    };
    assert_eq!(id(&[IMG, "id"]), "uid=0(root) gid=0(root) groups=0(root)");
    assert_eq!(
        id(&["-u", "www-data", IMG, "id"]),
        "uid=33(www-data) gid=33(www-data) groups=33(www-data)"
    );
    assert_eq!(
        id(&[
            "-u",
            "www-data",
            "--group-add",
            "staff",
            "--group-add",
            "4711",
            IMG,
            "id"
        ]),
        "uid=33(www-data) gid=33(www-data) groups=33(www-data),50(staff),4711"
    );
    let e = d
        .nook(&["run", "--rm", "--group-add", "wheel", IMG, "id"])
        .fails();
    assert!(e.contains("wheel") && e.contains("/etc/group"), "{e}");
    assert_eq!(containers(&d), "");
}

#[test]
fn setuid_programs_work_unless_no_new_privileges() {
    let d = daemon();
    for rt in RUNTIMES {
        let run = |extra: &[&str], cmd: &[&str]| {
            let mut a = vec!["run", "--rm", "--runtime", rt, "-u", "www-data"];
            a.extend_from_slice(extra);
            a.push(IMG);
            a.extend_from_slice(cmd);
            d.nook(&a)
        };
        // the setuid-root busybox gains euid 0 for a user that is not root
        assert_eq!(
            run(&[], &["busybox-suid", "whoami"]).ok().trim(),
            "root",
            "{rt}"
        );
        assert_eq!(run(&[], &["id", "-un"]).ok().trim(), "www-data", "{rt}");
        let st = run(&[], &["cat", "/proc/self/status"]).ok();
        assert!(st.contains("NoNewPrivs:\t0"), "{rt}: {st}");
        for opt in [
            "no-new-privileges",
            "no-new-privileges:true",
            "no-new-privileges=true",
        ] {
            let r = run(&["--security-opt", opt], &["busybox-suid", "whoami"]);
            let out = r.stdout();
            assert_ne!(out.trim(), "root", "{rt} {opt}: setuid gained root");
            let st = run(&["--security-opt", opt], &["cat", "/proc/self/status"]).ok();
            assert!(st.contains("NoNewPrivs:\t1"), "{rt} {opt}: {st}");
        }
        // docker's seccomp profile and capabilities stay
        let st = d
            .nook(&[
                "run",
                "--rm",
                "--runtime",
                rt,
                IMG,
                "cat",
                "/proc/self/status",
            ])
            .ok();
        assert!(st.contains("Seccomp:\t2"), "{st}");
        assert!(st.contains("CapEff:\t00000000a80425fb"), "{st}");
    }
}

/// `Max open files  SOFT  HARD  files` of /proc/self/limits, and the same for other rows.
fn limit(limits: &str, row: &str) -> (String, String) {
    let l = limits
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row} in {limits}"));
    let f: Vec<&str> = l[row.len()..].split_whitespace().collect();
    (f[0].to_string(), f[1].to_string())
}

#[test]
fn open_files_limit_and_ulimits() {
    let d = daemon();
    // nookd inherits this process's limits (through setpriv): its hard limit is the default
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = hard.min(nr_open).to_string();
    for rt in RUNTIMES {
        let l = d
            .nook(&[
                "run",
                "--rm",
                "--runtime",
                rt,
                IMG,
                "cat",
                "/proc/self/limits",
            ])
            .ok();
        assert_eq!(
            limit(&l, "Max open files"),
            (want.clone(), want.clone()),
            "{rt}"
        );
        let l = d
            .nook(&[
                "run",
                "--rm",
                "--runtime",
                rt,
                "--ulimit",
                "nofile=100:200",
                "--ulimit",
                "nproc=77",
                "--ulimit",
                "core=-1",
                "--ulimit",
                "stack=1048576:4194304",
                IMG,
                "cat",
                "/proc/self/limits",
            ])
            .ok();
        assert_eq!(
            limit(&l, "Max open files"),
            ("100".into(), "200".into()),
            "{l}"
        );
        assert_eq!(
            limit(&l, "Max processes"),
            ("77".into(), "77".into()),
            "{l}"
        );
        assert_eq!(
            limit(&l, "Max core file size"),
            ("unlimited".into(), "unlimited".into()),
            "{l}"
        );
        assert_eq!(
            limit(&l, "Max stack size"),
            ("1048576".into(), "4194304".into()),
            "{l}"
        );
    }
    // above the hard limit nookd may give: one line naming it, and nothing created
    let over = format!("nofile=1024:{}", hard.min(nr_open) + 1);
    let e = d
        .nook(&["run", "--rm", "--ulimit", &over, IMG, "true"])
        .fails();
    assert!(
        e.contains(&hard.min(nr_open).to_string()) && e.contains("hard limit"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    let e = d
        .nook(&["run", "--rm", "--ulimit", "files=1", IMG, "true"])
        .fails();
    assert!(e.contains("nofile"), "{e}");
    assert_eq!(containers(&d), "");
}

#[test]
fn sys_is_the_containers_own_and_no_dev_core() {
    let d = daemon();
    let host_unified = std::path::Path::new("/sys/fs/cgroup/unified").exists();
    for rt in RUNTIMES {
        let script = "ls /sys/class/net; echo --; grep -E ' /sys[ /]' /proc/mounts; echo --; \
                      cat /proc/self/cgroup; echo --; \
                      touch /sys/fs/cgroup/x 2>/dev/null && echo cgroup-writable; \
                      mkdir /sys/fs/cgroup/memory/x 2>/dev/null && echo memory-writable; \
                      touch /sys/kernel/x 2>/dev/null && echo sys-writable; \
                      ls -la /dev/core 2>/dev/null; test -e /dev/core -o -L /dev/core && echo dev-core; true";
        let out = d
            .nook(&[
                "run",
                "--rm",
                "--runtime",
                rt,
                "--network",
                "none",
                IMG,
                "sh",
                "-c",
                script,
            ])
            .ok();
        let parts: Vec<&str> = out.split("--\n").collect();
        assert_eq!(parts[0], "lo\n", "{rt}: {out}");
        let mounts = parts[1];
        let sys = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("/sys"))
            .unwrap_or_else(|| panic!("{rt}: no /sys in {mounts}"));
        assert!(sys.starts_with("sysfs /sys sysfs ro,"), "{rt}: {sys}");
        assert!(
            !mounts.contains("unified") && !mounts.contains("cgroup.controllers"),
            "{rt}: the host's cgroup2 or nookd's bind shows: {mounts}"
        );
        // what is visible at each mount point is its last mount (crun stacks read-only binds)
        let mut top = std::collections::BTreeMap::new();
        for l in mounts.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            top.insert(f[1], f[3]);
        }
        assert!(top.contains_key("/sys/fs/cgroup"), "{rt}: {mounts}");
        for (at, opts) in top
            .iter()
            .filter(|(at, _)| at.starts_with("/sys/fs/cgroup"))
        {
            assert!(opts.starts_with("ro,"), "{rt}: {at} {opts}\n{mounts}");
        }
        if std::path::Path::new("/proc/self/ns/cgroup").exists() {
            // a cgroup namespace: its own cgroups are the root
            for l in parts[2].lines() {
                assert!(l.ends_with(":/"), "{rt}: {}", parts[2]);
            }
        }
        let tail = parts[3];
        assert!(!tail.contains("writable"), "{rt}: {tail}");
        assert!(
            !tail.contains("dev-core") && !tail.contains("kcore"),
            "{rt}: {tail}"
        );
        let _ = host_unified;
        // on its network, its own interfaces
        let net = d
            .nook(&["run", "--rm", "--runtime", rt, IMG, "ls", "/sys/class/net"])
            .ok();
        assert_eq!(net, "eth0\nlo\n", "{rt}");
        // --privileged: /sys and its cgroups writable as docker has them, and it runs
        let m = d
            .nook(&[
                "run",
                "--rm",
                "--runtime",
                rt,
                "--privileged",
                IMG,
                "grep",
                " /sys ",
                "/proc/mounts",
            ])
            .ok();
        assert!(m.starts_with("sysfs /sys sysfs rw,"), "{rt}: {m}");
        // nookd's containers' namespace (--network host): its link too
        let net = d
            .nook(&[
                "run",
                "--rm",
                "--runtime",
                rt,
                "--network",
                "host",
                IMG,
                "ls",
                "/sys/class/net",
            ])
            .ok();
        assert!(
            net.contains("lo\n") && net.lines().count() >= 2,
            "{rt}: {net}"
        );
    }
}

/// GET / from 127.0.0.1:port.
fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.replace("\r\n", "\n").split("\n\n").nth(1)?.to_string())
}

#[test]
fn publish_all_exposed_ports() {
    let d = daemon();
    d.nook(&[
        "run",
        "-d",
        "-P",
        "-p",
        "127.0.0.1:0:8081",
        "--name",
        "web",
        IMG,
        "sh",
        "-c",
        "httpd -p 8080 -h /www; httpd -f -p 8081 -h /www",
    ])
    .ok();
    let ports = d.nook(&["port", "web"]).ok();
    let lines: Vec<&str> = ports.lines().collect();
    assert_eq!(lines.len(), 2, "{ports}");
    for (cport, ip) in [("8080/tcp", "0.0.0.0"), ("8081/tcp", "127.0.0.1")] {
        let l = lines
            .iter()
            .find(|l| l.starts_with(cport))
            .unwrap_or_else(|| panic!("{cport} not published: {ports}"));
        let host = l.rsplit(" -> ").next().unwrap();
        assert!(host.starts_with(ip), "{l}");
        let hp: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
        assert_ne!(hp, 0);
        let t0 = Instant::now();
        let body = loop {
            if let Some(b) = http_get(hp) {
                break b;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{cport} never answered on {hp}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(body, "exposed\n");
    }
    d.nook(&["rm", "-f", "web"]).ok();
}

#[test]
fn relative_volume_sources_are_the_clients_directory() {
    let d = daemon();
    let (uid, gid) = common::ids(common::USER);
    let work = d.base.join("project");
    std::fs::create_dir_all(work.join("data")).unwrap();
    std::fs::write(work.join("data/in.txt"), "from the host\n").unwrap();
    for p in [&work, &work.join("data"), &work.join("data/in.txt")] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
    let run = |args: &[&str]| {
        let out = common::as_user(&d.user, &d.env(), "nook")
            .args(args)
            .current_dir(work.join("data"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = run(&[
        "run",
        "--rm",
        "-v",
        ".:/data",
        "-v",
        "../out:/out",
        IMG,
        "sh",
        "-c",
        "cat /data/in.txt; echo made > /out/f",
    ]);
    assert_eq!(out, "from the host\n");
    // ../out did not exist: made, as docker makes a missing bind source
    assert_eq!(
        std::fs::read_to_string(work.join("out/f")).unwrap(),
        "made\n"
    );
    // a source without ./ and without / is a volume name, as docker's (tests/volumes.rs)
    d.nook(&["run", "--rm", "-v", "named:/x", IMG, "true"]).ok();
    assert_eq!(d.nook(&["volume", "ls", "-q"]).ok().trim(), "named");
}

/// Zombie processes (state Z) in the container.
fn zombies(d: &Nookd, name: &str) -> usize {
    d.nook(&["exec", name, "sh", "-c", "cat /proc/[0-9]*/stat"])
        .ok()
        .lines()
        .filter(|l| l.rsplit(") ").next().is_some_and(|r| r.starts_with("Z ")))
        .count()
}

#[test]
fn init_reaps_zombies_and_forwards_signals() {
    let d = daemon();
    // an orphan reparented to pid 1: `sleep` as pid 1 never reaps it, tini does
    let script = "(sleep 0.2 &); exec sleep 100";
    d.nook(&["run", "-d", "--name", "bare", IMG, "sh", "-c", script])
        .ok();
    d.nook(&[
        "run", "-d", "--init", "--name", "tini", IMG, "sh", "-c", script,
    ])
    .ok();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(zombies(&d, "bare"), 1);
    assert_eq!(zombies(&d, "tini"), 0);
    let pid1 = d.nook(&["exec", "tini", "cat", "/proc/1/cmdline"]).ok();
    assert!(pid1.starts_with("/sbin/docker-init\0--\0sh"), "{pid1:?}");
    // SIGTERM reaches sleep through tini (pid 1 of its own ignores it): stop is quick
    let t0 = Instant::now();
    d.nook(&["stop", "-t", "20", "tini"]).ok();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let st = d.nook(&["ps", "-a"]).ok();
    assert!(st.contains("Exited (143)"), "{st}");
    d.nook(&["rm", "-f", "bare", "tini"]).ok();
    // with run --rm: the exit status comes through tini
    let r = d.nook(&["run", "--rm", "--init", IMG, "sh", "-c", "exit 7"]);
    assert_eq!(r.code(), 7, "{}", r.stderr());
}
