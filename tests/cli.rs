//! The command line as a docker user types it: closed pipes, nearest-subcommand tips, the shared
//! list flags (`-q`, `--format` with templates, `--no-trunc`), `ps --filter`, `nook images`,
//! `inspect` of an image, `logs -n`, labels, `system df`, and nookd started from a shell whose
//! PATH has no sbin directory. A real nookd as the unprivileged test user.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{as_user, free_port, Nookd};
use nook::image::fixture::{docker_archive, FileSpec, TestImage};

const IMG: &str = "bb:latest";

/// A busybox image with a shell, sleep, seq and httpd.
fn image() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut base = vec![
        FileSpec::dir("bin"),
        FileSpec::exec("bin/busybox", bb),
        FileSpec::dir("tmp"),
        FileSpec::dir("www"),
        FileSpec::file("www/index.html", "hello from nook\n"),
    ];
    for a in [
        "sh", "sleep", "seq", "httpd", "echo", "cat", "true", "ln", "mkdir",
    ] {
        base.push(FileSpec::symlink(&format!("bin/{a}"), "busybox"));
    }
    let img = TestImage::build(&[base], false, &["sh"]);
    docker_archive(&[(&[IMG], &img)])
}

fn daemon() -> Nookd {
    let d = Nookd::start();
    d.nook_stdin(&["load"], &image()).ok();
    d
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `script` with bash as the test user, with `nook` on PATH and this daemon's env.
fn bash(d: &Nookd, script: &str) -> common::Run {
    let mut c = as_user(&d.user, &d.env(), "bash");
    c.arg("-c").arg(script).stdin(std::process::Stdio::null());
    common::Run {
        out: c.output().unwrap(),
        what: format!("bash -c {script:?}"),
    }
}

fn lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn closed_pipe_ends_quietly() {
    let d = daemon();
    d.nook(&["run", "-d", "--name", "s", IMG, "sleep", "60"])
        .ok();
    // `true` has exited before nook writes: every write meets EPIPE
    for cmd in [
        "content ls -q",
        "content ls",
        "images",
        "ps --format json",
        "ps -a --format '{{.Names}}'",
        "snapshots ls",
        "inspect s",
        "logs s",
        "version",
    ] {
        let r = bash(
            &d,
            &format!("nook {cmd} | (sleep 0.05; exit 0); echo \"status=${{PIPESTATUS[0]}}\""),
        );
        let out = r.ok();
        let err = r.stderr();
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{cmd}: {err}"
        );
        assert!(
            out.contains("status=141") || out.contains("status=0"),
            "{cmd}: {out} {err}"
        );
    }
    // and the first line still arrives whole
    let r = bash(&d, "nook content ls -q | head -1");
    assert!(r.ok().starts_with("sha256:"), "{}", r.stdout());
    assert_eq!(r.stderr(), "");
}

#[test]
fn unknown_subcommands_and_schemes_are_explained() {
    let d = Nookd::start();
    let e = d.nook(&["rnu", IMG]).fails();
    assert!(e.contains("similar subcommand exists: 'run'"), "{e}");
    let e = d.nook(&["imgaes"]).fails();
    assert!(e.contains("'images'"), "{e}");
    let e = d.nook(&["pull", "http://localhost:5000/img"]).fails();
    assert!(
        e.contains("take no scheme") && e.contains("\"localhost:5000/img\""),
        "{e}"
    );
}

#[test]
fn docker_habits_images_inspect_logs() {
    let d = daemon();
    // `nook images` with no subcommand lists
    let out = d.nook(&["images"]).ok();
    assert!(out.starts_with("REF") && out.contains("bb:latest"), "{out}");
    assert_eq!(
        d.nook(&["images", "-q"]).ok().trim(),
        "docker.io/library/bb:latest"
    );
    // inspect: no container of that name, so the image
    let v: serde_json::Value = serde_json::from_str(&d.nook(&["inspect", IMG]).ok()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert!(v.to_string().contains("sha256:"), "{v}");
    let e = d.nook(&["inspect", "nosuch"]).fails();
    assert!(e.contains("no container or image named \"nosuch\""), "{e}");
    // a container wins over an image of the same name; containers info stays containers only
    d.nook(&["create", "--name", "c1", IMG, "true"]).ok();
    let v: serde_json::Value = serde_json::from_str(&d.nook(&["inspect", "c1"]).ok()).unwrap();
    assert!(v.to_string().contains("c1"), "{v}");
    d.nook(&["containers", "info", IMG]).fails();
    // logs -n is the tail, as in docker; the namespace goes before the command
    d.nook(&["run", "--name", "count", IMG, "seq", "1", "10"])
        .ok();
    assert_eq!(d.nook(&["logs", "-n", "3", "count"]).ok(), "8\n9\n10\n");
    assert_eq!(d.nook(&["logs", "--tail", "1", "count"]).ok(), "10\n");
    assert_eq!(
        d.nook(&["-n", "default", "logs", "-n", "2", "count"]).ok(),
        "9\n10\n"
    );
    d.nook(&["-n", "other", "logs", "count"]).fails();
    // run -h is the hostname, as in docker (--help is help)
    let out = d
        .nook(&["run", "--rm", "-h", "box1", IMG, "cat", "/etc/hostname"])
        .ok();
    assert_eq!(out.trim(), "box1");
    assert!(d.nook(&["run", "--help"]).ok().contains("--hostname"));
}

#[test]
fn ps_filters_and_formats() {
    let d = daemon();
    let web = d
        .nook(&[
            "run", "-d", "--name", "web", "-l", "tier=web", "-l", "x", IMG, "sleep", "60",
        ])
        .ok()
        .trim()
        .to_string();
    d.nook(&[
        "create", "--name", "db", "-l", "tier=db", IMG, "sleep", "60",
    ])
    .ok();
    // creation times are in seconds: make `job` the latest for -l
    std::thread::sleep(Duration::from_millis(1100));
    d.nook(&["run", "--name", "job", "-l", "tier=web", IMG, "true"])
        .ok();
    let names = |args: &[&str]| {
        let mut a = vec!["ps"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--format", "{{.Names}}"]);
        lines(&d.nook(&a).ok())
    };
    assert_eq!(names(&[]), ["web"]);
    assert_eq!(names(&["-a"]), ["db", "job", "web"]);
    // a status filter needs no -a
    assert_eq!(names(&["--filter", "status=exited"]), ["job"]);
    // one key twice: either; different keys: both; labels: all of them
    assert_eq!(
        names(&["-f", "status=exited", "-f", "status=created"]),
        ["db", "job"]
    );
    assert_eq!(names(&["-a", "-f", "label=tier=web"]), ["job", "web"]);
    assert_eq!(
        names(&["-a", "-f", "label=tier=web", "-f", "label=x"]),
        ["web"]
    );
    assert_eq!(names(&["-a", "-f", "label=tier", "-f", "name=d"]), ["db"]);
    assert_eq!(names(&["-a", "-f", "ancestor=bb"]), ["db", "job", "web"]);
    assert_eq!(names(&["-a", "-f", "ancestor=other"]), Vec::<String>::new());
    assert_eq!(names(&["-a", "-f", &format!("id={}", &web[..6])]), ["web"]);
    assert_eq!(names(&["-l"]), ["job"]);
    let e = d.nook(&["ps", "-f", "colour=red"]).fails();
    assert!(e.contains("not supported"), "{e}");
    // -q: short ids; --no-trunc: whole ones; -q with --format is refused by the parser
    assert_eq!(d.nook(&["ps", "-q"]).ok().trim(), &web[..12]);
    assert_eq!(d.nook(&["ps", "-q", "--no-trunc"]).ok().trim(), web);
    let e = d.nook(&["ps", "-q", "--format", "json"]).fails();
    assert!(e.contains("cannot be used with"), "{e}");
    // the forms pasted from docker's docs
    let t = d
        .nook(&["ps", "--format", "table {{.ID}}\\t{{.Names}}\\t{{.Status}}"])
        .ok();
    let mut l = t.lines();
    let head = l.next().unwrap();
    assert!(
        head.starts_with("CONTAINER ID") && head.contains("NAMES") && head.contains("STATUS"),
        "{t}"
    );
    let row = l.next().unwrap();
    assert!(
        row.starts_with(&web[..12]) && row.contains("web") && row.contains("Up"),
        "{t}"
    );
    let out = d
        .nook(&[
            "ps",
            "-a",
            "-f",
            "name=job",
            "--format",
            "{{.ID}} {{.Image}} {{.Status}}",
        ])
        .ok();
    assert!(out.contains(" bb:latest Exited (0)"), "{out}");
    let out = d.nook(&["ps", "--format", "{{json .}}"]).ok();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["name"], "web");
    let v: serde_json::Value =
        serde_json::from_str(&d.nook(&["ps", "--format", "json"]).ok()).unwrap();
    assert_eq!(v[0]["name"], "web");
    let e = d.nook(&["ps", "--format", "{{.Nope}}"]).fails();
    assert!(e.contains("no field .Nope") && e.contains("Names"), "{e}");
}

#[test]
fn every_list_command_shares_the_list_flags_and_the_label_rule() {
    let d = daemon();
    d.nook(&["run", "-d", "--name", "s", IMG, "sleep", "60"])
        .ok();
    d.nook(&["leases", "create", "--id", "l1"]).ok();
    for cmd in [
        &["images"][..],
        &["images", "ls"],
        &["content", "ls"],
        &["content", "ingests"],
        &["snapshots", "ls"],
        &["leases", "ls"],
        &["network", "ls"],
        &["ns", "ls"],
        &["plugins", "ls"],
        &["ps"],
        &["containers", "ls"],
        &["tasks", "ls"],
    ] {
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            let mut a = cmd.to_vec();
            a.extend_from_slice(extra);
            a
        };
        let e = d.nook(&with(&["-q", "--format", "json"])).fails();
        assert!(e.contains("cannot be used with"), "{cmd:?}: {e}");
        let json: serde_json::Value =
            serde_json::from_str(&d.nook(&with(&["--format", "json", "--no-trunc"])).ok())
                .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let n = json.as_array().unwrap().len();
        assert!(n > 0 || cmd.contains(&"ingests"), "{cmd:?}: {json}");
        let q = d.nook(&with(&["-q"])).ok();
        assert_eq!(q.lines().count(), n, "{cmd:?}: {q}");
        let t = d.nook(&with(&["--format", "{{json .}}"])).ok();
        assert_eq!(t.lines().count(), n, "{cmd:?}: {t}");
        for (i, l) in t.lines().enumerate() {
            let row: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(row, json[i], "{cmd:?}");
        }
    }
    // one label rule: KEY=VALUE or KEY (empty value); an empty key is refused alike everywhere
    d.nook(&["ns", "create", "n1", "-l", "flag", "-l", "a=b=c"])
        .ok();
    let v: serde_json::Value =
        serde_json::from_str(&d.nook(&["ns", "ls", "--format", "json"]).ok()).unwrap();
    let n1 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "n1")
        .unwrap();
    assert_eq!(n1["labels"]["flag"], "");
    assert_eq!(n1["labels"]["a"], "b=c");
    for args in [
        &["ns", "create", "n2", "-l", "=v"][..],
        &["run", "--rm", "-l", "=v", IMG, "true"],
        &["network", "create", "n3", "-l", "=v"],
        &["leases", "create", "-l", "=v"],
    ] {
        let e = d.nook(args).fails();
        assert!(e.contains("invalid label \"=v\""), "{args:?}: {e}");
    }
}

#[test]
fn system_df_counts_snapshots_not_the_probe_stamp() {
    let d = daemon();
    let ls: serde_json::Value =
        serde_json::from_str(&d.nook(&["snapshots", "ls", "--format", "json"]).ok()).unwrap();
    let df: serde_json::Value =
        serde_json::from_str(&d.nook(&["system", "df", "--format", "json"]).ok()).unwrap();
    let snaps = df
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"].as_str().unwrap_or("").starts_with("snapshots/"))
        .unwrap_or_else(|| panic!("{df}"));
    assert_eq!(snaps["count"], ls.as_array().unwrap().len(), "{df} vs {ls}");
}

/// GETs / on 127.0.0.1:port; the body.
fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.replace("\r\n", "\n").split("\n\n").nth(1)?.to_string())
}

#[test]
fn nookd_from_a_shell_without_sbin_publishes_ports() {
    let mut d = Nookd::prepare("");
    // a Debian user's PATH: no /usr/sbin (nft and ip live there)
    let mut env = d.env();
    env.push((
        "PATH",
        format!("{}:/usr/bin:/bin", common::bin_dir().display()),
    ));
    let log = std::fs::File::create(&d.log).unwrap();
    let mut c = as_user(&d.user, &env, "nookd");
    c.arg("--config")
        .arg(&d.config)
        .arg("--root")
        .arg(&d.root)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    d.set_child(c.spawn().unwrap());
    d.wait_ready();
    d.nook_stdin(&["load"], &image()).ok();
    let plugins = d.nook(&["plugins", "ls"]).ok();
    assert!(!plugins.contains("error"), "{plugins}\n{}", d.log_text());
    let info = d.nook(&["info"]).ok();
    assert!(info.contains("(ok)"), "{info}");
    let port = free_port();
    d.nook(&[
        "run",
        "-d",
        "-p",
        &format!("{port}:80"),
        IMG,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ])
    .ok();
    let mut body = None;
    wait_until("the published port answers", || {
        body = http_get(port);
        body.is_some()
    });
    assert_eq!(body.unwrap(), "hello from nook\n");
}

#[test]
fn a_failed_bridge_is_explained_by_run_and_info() {
    // a bridge name the kernel refuses (over 15 characters): the bridge plugin fails
    let d = Nookd::start_with("[network]\nbridge = \"bridge-name-far-too-long\"\n");
    d.nook_stdin(&["load"], &image()).ok();
    let plugins = d.nook(&["plugins", "ls"]).ok();
    assert!(
        plugins.contains("bridge") && plugins.contains("error"),
        "{plugins}"
    );
    let info = d.nook(&["info"]).ok();
    let net = info
        .lines()
        .find(|l| l.starts_with("Network:"))
        .unwrap()
        .to_string();
    assert!(!net.contains("(ok)") && net.contains("bridge"), "{net}");
    let e = d
        .nook(&["run", "--rm", "-p", "18081:80", IMG, "true"])
        .fails();
    assert!(e.contains("bridge-name-far-too-long"), "{e}");
    // with no network the container still runs
    d.nook(&["run", "--rm", "--network", "none", IMG, "true"])
        .ok();
}

/// A directory the test user can write, for host-side files of `nook cp`.
fn user_dir(d: &Nookd, name: &str) -> std::path::PathBuf {
    let p = d.base.join(name);
    std::fs::create_dir_all(&p).unwrap();
    let (uid, gid) = common::ids(&d.user);
    std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    p
}

#[test]
fn cp_both_ways_running_stopped_and_tar_streams() {
    let mut d = daemon();
    let host = user_dir(&d, "host");
    let h = host.display().to_string();
    bash(
        &d,
        &format!(
            "set -e; cd {h}; echo hello > f; mkdir -p tree/sub; echo deep > tree/sub/g; \
             ln -s sub/g tree/link"
        ),
    )
    .ok();
    d.nook(&["run", "-d", "--name", "s", IMG, "sleep", "60"])
        .ok();
    // host -> running container: into a directory, and as a new name
    d.nook(&["cp", &format!("{h}/f"), "s:/tmp/"]).ok();
    d.nook(&["cp", &format!("{h}/f"), "s:/tmp/renamed"]).ok();
    d.nook(&["cp", &format!("{h}/tree"), "s:/tmp/t2"]).ok();
    let out = d
        .nook(&[
            "exec",
            "s",
            "sh",
            "-c",
            "cat /tmp/f /tmp/renamed /tmp/t2/sub/g /tmp/t2/link",
        ])
        .ok();
    assert_eq!(out, "hello\nhello\ndeep\ndeep\n");
    // owned by the container's root unless -a
    let out = d.nook(&["exec", "s", "sh", "-c", "ls -ln /tmp/f"]).ok();
    assert!(out.contains(" 0 "), "{out}");
    // running container -> host: a file, a tree, the contents form
    d.nook(&["cp", "s:/tmp/t2", &format!("{h}/back")]).ok();
    assert_eq!(
        std::fs::read_to_string(host.join("back/sub/g")).unwrap(),
        "deep\n"
    );
    assert_eq!(
        std::fs::read_link(host.join("back/link")).unwrap(),
        std::path::PathBuf::from("sub/g")
    );
    d.nook(&["cp", "s:/tmp/renamed", &h]).ok();
    assert_eq!(
        std::fs::read_to_string(host.join("renamed")).unwrap(),
        "hello\n"
    );
    user_dir(&d, "host/into");
    d.nook(&["cp", "s:/tmp/t2/.", &format!("{h}/into")]).ok();
    assert!(host.join("into/sub/g").exists());
    // tar streams both ways
    let r = d.nook(&["cp", "s:/tmp/t2/sub", "-"]);
    let mut a = tar::Archive::new(&r.out.stdout[..]);
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["sub", "sub/g"], "{}", r.stderr());
    let mut b = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_size(6);
    hd.set_mode(0o644);
    b.append_data(&mut hd, "from-tar", &b"stream"[..]).unwrap();
    d.nook_stdin(&["cp", "-", "s:/tmp"], &b.into_inner().unwrap())
        .ok();
    assert_eq!(
        d.nook(&["exec", "s", "cat", "/tmp/from-tar"]).ok(),
        "stream"
    );
    // a stopped (created, never started) container, also after nookd restarts
    d.nook(&["create", "--name", "c2", IMG, "cat", "/tmp/f"])
        .ok();
    d.nook(&["cp", &format!("{h}/f"), "c2:/tmp/f"]).ok();
    d.restart();
    d.nook(&["cp", "c2:/tmp/f", &format!("{h}/again")]).ok();
    assert_eq!(
        std::fs::read_to_string(host.join("again")).unwrap(),
        "hello\n"
    );
    assert_eq!(d.nook(&["start", "-a", "c2"]).ok(), "hello\n");
    // errors say what is wrong
    let e = d.nook(&["cp", "s:/nope", &h]).fails();
    assert!(e.contains("no such file or directory"), "{e}");
    let e = d.nook(&["cp", &format!("{h}/f"), "s:/nodir/x"]).fails();
    assert!(e.contains("no such directory"), "{e}");
}

#[test]
fn cp_never_follows_a_symlink_out_of_the_container() {
    let d = daemon();
    let host = user_dir(&d, "outside");
    let h = host.display().to_string();
    std::fs::write(host.join("secret"), "host secret").unwrap();
    d.nook(&["run", "-d", "--name", "s", IMG, "sleep", "60"])
        .ok();
    // the container points symlinks at the host's directory and above its own root
    d.nook(&[
        "exec",
        "s",
        "sh",
        "-c",
        &format!("ln -s {h} /tmp/abs && ln -s ../../../../../../../.. /tmp/up && mkdir -p {h}"),
    ])
    .ok();
    let out = user_dir(&d, "got");
    let o = out.display().to_string();
    // reading through them finds the container's own paths (empty), never the host's file
    for p in [
        "s:/tmp/abs/secret".to_string(),
        format!("s:/tmp/up{h}/secret"),
    ] {
        let r = d.nook(&["cp", &p, &o]);
        assert_ne!(r.code(), 0, "{p}: {}", r.stdout());
        assert!(!out.join("secret").exists(), "{p}");
    }
    // writing through them lands inside the container, never on the host
    std::fs::write(out.join("planted"), "x").unwrap();
    let (uid, gid) = common::ids(&d.user);
    std::os::unix::fs::chown(out.join("planted"), Some(uid), Some(gid)).unwrap();
    d.nook(&["cp", &format!("{o}/planted"), "s:/tmp/abs/"]).ok();
    d.nook(&["cp", &format!("{o}/planted"), &format!("s:/tmp/up{h}/p2")])
        .ok();
    assert!(!host.join("planted").exists() && !host.join("p2").exists());
    let inside = d
        .nook(&["exec", "s", "sh", "-c", &format!("cat {h}/planted {h}/p2")])
        .ok();
    assert_eq!(inside, "xx");
    // a tar whose entry climbs out is refused
    let mut b = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_size(1);
    hd.set_mode(0o644);
    hd.set_entry_type(tar::EntryType::Regular);
    let name = b"../../../../../../../../tmp/escaped";
    hd.as_old_mut().name[..name.len()].copy_from_slice(name);
    hd.set_cksum();
    b.append(&hd, &b"x"[..]).unwrap();
    let e = d
        .nook_stdin(&["cp", "-", "s:/tmp"], &b.into_inner().unwrap())
        .fails();
    assert!(e.contains("escaped") || e.contains("outside"), "{e}");
    assert!(!std::path::Path::new("/tmp/escaped").exists());
    // the symlink itself copies as a symlink
    d.nook(&["cp", "s:/tmp/abs", &o]).ok();
    assert_eq!(std::fs::read_link(out.join("abs")).unwrap(), host);
}

/// The README tour's published web server answers with a real page, as the tour says.
#[test]
fn readme_tour_serves_a_real_page() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = |start: &str| {
        readme
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("README has no line starting {start:?}"))
            .to_string()
    };
    let run = line("nook run -d --name web -p 8080:80 busybox");
    let curl = line("curl http://127.0.0.1:8080/");
    let said = curl
        .split('"')
        .nth(1)
        .expect("the tour says what curl prints")
        .to_string();
    let cp = line("nook cp web:");
    let d = daemon();
    d.nook(&["tag", IMG, "busybox"]).ok();
    let port = free_port();
    bash(&d, &run.replace("8080", &port.to_string())).ok();
    let mut body = None;
    wait_until("the tour's web server answers", || {
        body = http_get(port);
        body.is_some()
    });
    assert_eq!(body.unwrap().trim(), said);
    // and the tour's `nook cp` brings the page out
    let dir = user_dir(&d, "tour");
    let cp = cp.split('#').next().unwrap().trim().to_string();
    bash(&d, &format!("cd {} && {cp}", dir.display())).ok();
    assert_eq!(
        std::fs::read_to_string(dir.join("index.html"))
            .unwrap()
            .trim(),
        said
    );
}

/// `nook rename` and `nook diff` as docker's: a new name that `ps` and later commands use, a
/// taken name refused, and the container's changes against its image (`A`/`C`/`D`).
#[test]
fn rename_and_diff() {
    let d = daemon();
    d.nook(&["run", "-d", "--name", "first", IMG, "sleep", "600"])
        .ok();
    d.nook(&["run", "-d", "--name", "other", IMG, "sleep", "600"])
        .ok();
    d.nook(&["rename", "first", "second"]).ok();
    let ps = d.nook(&["ps", "--format", "{{.Names}}"]).ok();
    assert!(lines(&ps).contains(&"second".to_string()), "{ps}");
    assert!(!lines(&ps).contains(&"first".to_string()), "{ps}");
    let err = d.nook(&["rename", "second", "other"]).fails();
    assert!(err.contains("other"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    d.nook(&[
        "exec",
        "second",
        "sh",
        "-c",
        "echo x > /tmp/new; echo changed > /www/index.html",
    ])
    .ok();
    let diff = d.nook(&["diff", "second"]).ok();
    let got = lines(&diff);
    assert!(got.contains(&"A /tmp/new".to_string()), "{diff}");
    assert!(got.contains(&"C /www/index.html".to_string()), "{diff}");
    assert!(got.contains(&"C /tmp".to_string()), "{diff}");
    let j: serde_json::Value =
        serde_json::from_str(&d.nook(&["diff", "second", "--format", "json"]).ok()).unwrap();
    assert!(
        j.as_array()
            .unwrap()
            .iter()
            .any(|c| c["Kind"] == "A" && c["Path"] == "/tmp/new"),
        "{j}"
    );
    d.nook(&["rm", "-f", "second", "other"]).ok();
}
