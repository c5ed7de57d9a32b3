//! CRI's streaming calls driven by the real crictl (cri-tools v1.37.0, installed by .ci/run into
//! /var/tmp/go/bin) as the unprivileged test user: `crictl exec` over SPDY (its default) and
//! WebSocket (`-r websocket`) with exit codes, stdin and a terminal, `crictl attach`, and
//! `crictl port-forward` to a server that listens on the container's own localhost only.
//! The containers are nook's own in the `k8s.io` namespace (`nook -n k8s.io run -d`), which is
//! where CRI's containers live.

mod common;
#[path = "common/cri.rs"]
mod cri;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{as_user, free_port, KillOnDrop, Nookd, Run};
use cri::{crictl_cmd, crictl_path, crictl_stdin, have_crictl};
use nook::image::fixture::{docker_archive, FileSpec, TestImage};

const IMG: &str = "bb:latest";

/// A busybox image with a shell, cat, sleep and httpd.
fn image() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut base = vec![
        FileSpec::dir("bin"),
        FileSpec::exec("bin/busybox", bb),
        FileSpec::dir("tmp"),
        FileSpec::dir("www"),
        FileSpec::file("www/index.html", "hello through port-forward\n"),
    ];
    for a in [
        "sh", "sleep", "httpd", "echo", "cat", "tty", "stty", "true", "head", "wc",
    ] {
        base.push(FileSpec::symlink(&format!("bin/{a}"), "busybox"));
    }
    let img = TestImage::build(&[base], false, &["sh"]);
    docker_archive(&[(&[IMG], &img)])
}

/// A daemon with the test image in `k8s.io`.
fn daemon() -> Nookd {
    let d = Nookd::start();
    d.nook(&["namespaces", "create", "k8s.io"]).ok();
    d.nook_stdin(&["-n", "k8s.io", "load"], &image()).ok();
    d
}

/// `nook -n k8s.io run -d ARGS`; the container's full id.
fn run_k8s(d: &Nookd, args: &[&str]) -> String {
    let mut a = vec!["-n", "k8s.io", "run", "-d"];
    a.extend_from_slice(args);
    d.nook(&a).ok();
    let name = args[args.iter().position(|x| *x == "--name").unwrap() + 1];
    let v: serde_json::Value =
        serde_json::from_str(&d.nook(&["-n", "k8s.io", "inspect", name]).ok()).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    v["Id"].as_str().unwrap().to_string()
}

/// Runs `script -qec CMD` as the test user: crictl on a pseudo-terminal, fed `input`.
fn on_pty(d: &Nookd, cmd: &str, input: &[u8]) -> Run {
    let mut c = as_user(&d.user, &d.env(), "script");
    c.args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // typed slowly enough for the shell on the other side to be there
    let feeder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        for line in input.split_inclusive(|b| *b == b'\n') {
            let _ = stdin.write_all(line);
            let _ = stdin.flush();
            std::thread::sleep(Duration::from_millis(300));
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let out = child.wait_with_output().unwrap();
    let _ = feeder.join();
    Run {
        out,
        what: format!("script -qec {cmd:?}"),
    }
}

fn endpoint_args(d: &Nookd) -> String {
    format!(
        "{} --runtime-endpoint unix://{} --timeout 30s",
        crictl_path().display(),
        d.address.display()
    )
}

#[test]
fn crictl_exec_over_spdy_and_websocket() {
    if !have_crictl() {
        return;
    }
    let d = daemon();
    let id = run_k8s(&d, &["--name", "s", IMG, "sleep", "600"]);
    for transport in ["spdy", "websocket"] {
        fn with<'a>(transport: &'a str, args: &[&'a str]) -> Vec<&'a str> {
            let mut a = vec!["exec", "-r", transport];
            a.extend_from_slice(args);
            a
        }
        // output on both streams, exit code 0, by full id and by prefix
        let out = crictl_stdin(&d, &with(transport, &[&id, "echo", "hello"]), None).ok();
        assert_eq!(out.trim(), "hello", "{transport}");
        let run = crictl_stdin(
            &d,
            &with(
                transport,
                &[&id[..12], "sh", "-c", "echo out; echo err >&2; exit 3"],
            ),
            None,
        );
        // crictl reports the exit code it read from the error stream (and exits 1 itself)
        assert!(
            run.fails().contains("command terminated with exit code 3"),
            "{transport}: {}",
            run.stderr()
        );
        assert_eq!(run.stdout().trim(), "out", "{transport}");
        assert!(
            run.stderr().contains("err"),
            "{transport}: {}",
            run.stderr()
        );
        // stdin to the end, then its close ends `cat`
        let data: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let run = crictl_stdin(
            &d,
            &with(transport, &["-i", &id, "sh", "-c", "cat | wc -c"]),
            Some(&data),
        );
        assert_eq!(run.ok().trim(), "200000", "{transport}");
        // a large output arrives whole
        let run = crictl_stdin(
            &d,
            &with(transport, &[&id, "head", "-c", "3000000", "/dev/zero"]),
            None,
        );
        run.ok();
        assert_eq!(run.out.stdout.len(), 3_000_000, "{transport}");
    }
    // what cannot be run says so
    let err = crictl_stdin(&d, &["exec", &id, "/no/such/program"], None).fails();
    assert!(
        err.contains("no/such/program") || err.contains("exit code"),
        "{err}"
    );
    let err = crictl_stdin(&d, &["exec", "0000000000000", "true"], None).fails();
    assert!(err.contains("no such container"), "{err}");
    // a stopped container is refused at the RPC
    d.nook(&["-n", "k8s.io", "stop", "-t", "0", "s"]).ok();
    let err = crictl_stdin(&d, &["exec", &id, "true"], None).fails();
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn crictl_exec_with_a_terminal() {
    if !have_crictl() {
        return;
    }
    let d = daemon();
    let id = run_k8s(&d, &["--name", "t", IMG, "sleep", "600"]);
    for transport in ["spdy", "websocket"] {
        // the terminal's size goes over the resize stream
        let cmd = format!(
            "stty cols 123 rows 45; {} exec -r {transport} -i -t {id} sh",
            endpoint_args(&d)
        );
        let run = on_pty(&d, &cmd, b"tty; stty size; echo sum-$((40+2))\nexit 5\n");
        let out = run.stdout();
        assert!(out.contains("/dev/pts/"), "{transport}: {out}");
        assert!(out.contains("45 123"), "{transport}: {out}");
        assert!(out.contains("sum-42"), "{transport}: {out}");
        assert!(
            out.contains("command terminated with exit code 5"),
            "{transport}: {out}"
        );
    }
}

#[test]
fn crictl_attach() {
    if !have_crictl() {
        return;
    }
    let d = daemon();
    // output while attached, and the attach ends with the container
    let id = run_k8s(
        &d,
        &[
            "--name",
            "a",
            IMG,
            "sh",
            "-c",
            "sleep 3; echo attached-out; echo attached-err >&2; sleep 1",
        ],
    );
    let run = crictl_stdin(&d, &["attach", &id], None);
    run.ok();
    assert!(run.stdout().contains("attached-out"), "{}", run.stdout());
    assert!(run.stderr().contains("attached-err"), "{}", run.stderr());
    // stdin through attach -i, over WebSocket too: its close ends cat
    for transport in ["spdy", "websocket"] {
        let name = format!("cat-{transport}");
        let id = run_k8s(&d, &["-i", "--name", &name, IMG, "cat"]);
        let run = crictl_stdin(
            &d,
            &["attach", "-r", transport, "-i", &id],
            Some(b"through attach\n"),
        );
        assert!(
            run.ok().contains("through attach"),
            "{transport}: {}",
            run.stdout()
        );
    }
}

fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    Some(b)
}

#[test]
fn crictl_port_forward_reaches_the_containers_localhost() {
    if !have_crictl() {
        return;
    }
    let d = daemon();
    // httpd listens on the container's own 127.0.0.1 only: reachable from inside its netns
    let id = run_k8s(
        &d,
        &[
            "--name",
            "web",
            IMG,
            "httpd",
            "-f",
            "-p",
            "127.0.0.1:8080",
            "-h",
            "/www",
        ],
    );
    for transport in ["spdy", "websocket"] {
        let port = free_port();
        let mut c = crictl_cmd(
            &d,
            &[
                "port-forward",
                "-r",
                transport,
                &id,
                &format!("{port}:8080"),
            ],
        );
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let _pf = KillOnDrop(c.spawn().unwrap());
        let t0 = Instant::now();
        let body = loop {
            match http_get(port) {
                Some(b) if b.contains("hello") => break b,
                _ => {
                    assert!(
                        t0.elapsed() < Duration::from_secs(20),
                        "{transport}: port-forward did not answer"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        assert!(
            body.contains("hello through port-forward"),
            "{transport}: {body}"
        );
        // several connections at once
        let many: Vec<_> = (0..5)
            .map(|_| std::thread::spawn(move || http_get(port)))
            .collect();
        for h in many {
            let b = h.join().unwrap().expect("a forwarded connection");
            assert!(b.contains("hello through port-forward"), "{transport}: {b}");
        }
        // curl through the forwarded port, as a user would
        let out = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/index.html")])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello through port-forward\n",
            "{transport}"
        );
    }
    // a port nothing listens on: the connection is closed and crictl reports why
    let port = free_port();
    let mut c = crictl_cmd(&d, &["port-forward", &id, &format!("{port}:9")]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut pf = KillOnDrop(c.spawn().unwrap());
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "no listener");
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = http_get(port).unwrap_or_default();
    assert!(!got.contains("hello"), "{got}");
    std::thread::sleep(Duration::from_millis(500));
    let _ = pf.0.kill();
    let mut err = String::new();
    pf.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("connection refused") || err.contains("Connection refused"),
        "{err}"
    );
}
