//! Output and input streams end to end: every byte a container writes reaches every attached
//! client and the log, in order, whatever the size and speed; a slow client slows the
//! container instead of losing output; the exit code comes after the last byte; a client that
//! dies closes the container's stdin. A real nookd as the unprivileged test user, busybox.
//!
//! Data is compared by sha256, not by eye: a blob of pseudo-random bytes (every byte value,
//! invalid UTF-8, long "lines") is bind-mounted into the container and `cat`-ed out of it.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::Nookd;
use nook::image::fixture::{docker_archive, FileSpec, TestImage};
use sha2::{Digest, Sha256};

const IMG: &str = "bb:latest";
const MB: usize = 1 << 20;

fn image() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut base = vec![
        FileSpec::dir("bin"),
        FileSpec::exec("bin/busybox", bb),
        FileSpec::dir("etc"),
        FileSpec::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        FileSpec::file("etc/group", "root:x:0:\n"),
        FileSpec::dir("tmp"),
        FileSpec::dir("data"),
    ];
    for a in [
        "sh", "cat", "seq", "sleep", "ps", "touch", "true", "head", "test", "[",
    ] {
        base.push(FileSpec::symlink(&format!("bin/{a}"), "busybox"));
    }
    let img = TestImage::build(&[base], false, &["sh"]);
    docker_archive(&[(&[IMG], &img)])
}

/// A daemon with the image, and a directory of test data readable by the test user.
struct Env {
    d: Nookd,
    data: PathBuf,
}

fn env() -> Env {
    let d = Nookd::start();
    d.nook_stdin(&["load"], &image()).ok();
    let data = d.base.join("data");
    std::fs::create_dir_all(&data).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    Env { d, data }
}

impl Env {
    /// Writes `bytes` as data/NAME (the container sees /data/NAME).
    fn put(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.data.join(name), bytes).unwrap();
    }

    fn volume(&self) -> String {
        format!("{}:/data:ro", self.data.display())
    }

    /// `nook ARGS` with stdout and stderr piped, not waited for.
    fn spawn(&self, args: &[&str], stdin: Stdio) -> Child {
        let mut c = common::as_user(&self.d.user, &self.d.env(), "nook");
        c.args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("running nook")
    }
}

/// Pseudo-random bytes (xorshift), the same for the same seed: every byte value many times,
/// invalid UTF-8, and newlines about once in 256 bytes (lines of all lengths, some past the
/// log's 16 KiB entries).
fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// Asserts equal bytes, saying where they first differ (not printing megabytes).
fn same(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: {} bytes (sha256 {}), expected {} (sha256 {}); first difference at {:?}",
        got.len(),
        sha(got),
        want.len(),
        sha(want),
        at.unwrap_or(got.len().min(want.len()))
    );
}

fn logs(d: &Nookd, name: &str) -> (Vec<u8>, Vec<u8>) {
    let r = d.nook(&["logs", name]);
    r.ok();
    (r.out.stdout, r.out.stderr)
}

/// 50 MB of stdout and of stderr, each twice: the client (and `nook logs`, the first time)
/// get every byte, and the exit code (after the last byte).
#[test]
fn large_stdout_and_stderr_are_exact() {
    let e = env();
    let want = blob(50 * MB, 7);
    e.put("blob", &want);
    let vol = e.volume();
    for (round, (stream, script)) in [
        ("stdout", "cat /data/blob; exit 7"),
        ("stderr", "cat /data/blob >&2; exit 7"),
    ]
    .iter()
    .cycle()
    .take(4)
    .enumerate()
    {
        let name = format!("big{round}");
        let t0 = Instant::now();
        let r =
            e.d.nook(&["run", "--name", &name, "-v", &vol, IMG, "sh", "-c", script]);
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(
            r.code(),
            7,
            "{name}: {}",
            String::from_utf8_lossy(&r.out.stderr[..r.out.stderr.len().min(500)])
        );
        let (got, other) = if *stream == "stdout" {
            (&r.out.stdout, &r.out.stderr)
        } else {
            (&r.out.stderr, &r.out.stdout)
        };
        same(&format!("{name}: the client's {stream}"), got, &want);
        assert!(
            other.is_empty(),
            "{name}: {} bytes on the other stream",
            other.len()
        );
        eprintln!("{name}: 50 MB of {stream} through nook run in {secs:.2} s");
        if round < 2 {
            let (out, err) = logs(&e.d, &name);
            let (got, other) = if *stream == "stdout" {
                (out, err)
            } else {
                (err, out)
            };
            same(&format!("{name}: `nook logs` {stream}"), &got, &want);
            assert!(other.is_empty());
        }
        e.d.nook(&["rm", &name]).ok();
    }
}

/// A million short lines (and the issue's `seq 1 700000`, with --rm), twice each: the text is
/// exact in the client and in the log.
#[test]
fn a_million_short_lines() {
    let e = env();
    let seq = |n: usize| -> Vec<u8> {
        (1..=n)
            .map(|i| format!("{i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let million = seq(1_000_000);
    let issue = seq(700_000);
    for i in 0..2 {
        let name = format!("lines{i}");
        let r =
            e.d.nook(&["run", "--name", &name, IMG, "seq", "1", "1000000"]);
        r.ok();
        same(&format!("{name}: client"), &r.out.stdout, &million);
        same(&format!("{name}: logs"), &logs(&e.d, &name).0, &million);
        e.d.nook(&["rm", &name]).ok();
        let r = e.d.nook(&["run", "--rm", IMG, "sh", "-c", "seq 1 700000"]);
        r.ok();
        same(
            &format!("run --rm seq 1 700000 ({i})"),
            &r.out.stdout,
            &issue,
        );
    }
}

/// Every byte value, invalid UTF-8, CR and NUL, lines longer than a log entry with multi-byte
/// characters across the entry boundaries: the client and `nook logs` give back the bytes.
#[test]
fn binary_output_every_byte_value() {
    let e = env();
    let mut want: Vec<u8> = (0..=255u8).cycle().take(256 * 64).collect();
    want.extend((0..=255u8).rev().cycle().take(256 * 64));
    // 40 KB without a newline made of 3-byte characters: split into log entries mid-line
    want.extend("€".repeat(40_000 / 3).as_bytes());
    want.extend(b"\r\n\0\n\xff\xfe\xc3");
    want.extend(blob(3 * MB, 99));
    e.put("bin", &want);
    let vol = e.volume();
    for i in 0..3 {
        let name = format!("bin{i}");
        let r =
            e.d.nook(&["run", "--name", &name, "-v", &vol, IMG, "cat", "/data/bin"]);
        r.ok();
        same(&format!("{name}: client"), &r.out.stdout, &want);
        same(&format!("{name}: logs"), &logs(&e.d, &name).0, &want);
        e.d.nook(&["rm", &name]).ok();
    }
}

/// 50 MB of stdin through `cat` and back, twice (with --rm: the removal waits for the stream).
#[test]
fn stdin_roundtrip_through_cat() {
    let e = env();
    let want = blob(50 * MB, 3);
    // the same bytes through a plain `cat`, for comparison
    let t0 = Instant::now();
    let mut cat = std::process::Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut si = cat.stdin.take().unwrap();
    let input = want.clone();
    let w = std::thread::spawn(move || si.write_all(&input).unwrap());
    let out = cat.wait_with_output().unwrap().stdout;
    w.join().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    same("plain cat", &out, &want);
    eprintln!(
        "50 MB through plain cat: {secs:.3} s, {:.0} MB/s",
        50.0 / secs
    );
    for i in 0..2 {
        let t0 = Instant::now();
        let r = e.d.nook_stdin(&["run", "-i", "--rm", IMG, "cat"], &want);
        let secs = t0.elapsed().as_secs_f64();
        r.ok();
        same(&format!("round {i}: cat's output"), &r.out.stdout, &want);
        eprintln!(
            "50 MB through nook run -i --rm {IMG} cat: {secs:.2} s, {:.0} MB/s",
            50.0 / secs
        );
    }
}

/// Reads `child`'s stdout to the end, `chunk` bytes at a time with `pause` between reads.
fn read_slowly(child: &mut Child, chunk: usize, pause: Duration) -> Vec<u8> {
    let mut out = child.stdout.take().unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        match out.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading: {e}"),
        }
        std::thread::sleep(pause);
    }
}

fn running(d: &Nookd, name: &str) -> bool {
    d.nook(&["ps"]).stdout().lines().any(|l| l.ends_with(name))
}

/// A client that stops reading holds the container (its writes block) instead of losing
/// output; read slowly afterwards, it gets every byte and then the exit code.
#[test]
fn slow_reader_slows_the_container() {
    let e = env();
    let want = blob(24 * MB, 11);
    e.put("blob", &want);
    let vol = e.volume();
    let mut c = e.spawn(
        &[
            "run",
            "--name",
            "slow",
            "-v",
            &vol,
            IMG,
            "sh",
            "-c",
            "cat /data/blob; exit 3",
        ],
        Stdio::null(),
    );
    // nothing read for 3 s: far more than the buffers on the way (a few MB) is still to come
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        running(&e.d, "slow"),
        "the container ran on while its client read nothing"
    );
    let got = read_slowly(&mut c, 256 << 10, Duration::from_millis(2));
    let st = c.wait().unwrap();
    same("the slow client's stdout", &got, &want);
    assert_eq!(st.code(), Some(3));
    same("logs", &logs(&e.d, "slow").0, &want);
}

/// Three clients attached at once (`nook attach`) to one container, and the one that started
/// it: each gets every byte and the exit code; one killed half-way disturbs no other.
#[test]
fn several_attaches_at_once() {
    let e = env();
    let want = blob(16 * MB, 5);
    e.put("blob", &want);
    let vol = e.volume();
    for round in 0..2 {
        let name = format!("multi{round}");
        let script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; cat /data/blob; exit 5";
        let mut first = e.spawn(
            &["run", "--name", &name, "-v", &vol, IMG, "sh", "-c", script],
            Stdio::null(),
        );
        let t0 = Instant::now();
        while !running(&e.d, &name) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{name} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut others: Vec<Child> = (0..3)
            .map(|_| e.spawn(&["attach", &name], Stdio::null()))
            .collect();
        // one more that dies half-way through
        let mut victim = e.spawn(&["attach", &name], Stdio::null());
        std::thread::sleep(Duration::from_millis(1500));
        e.d.nook(&["exec", &name, "touch", "/tmp/go"]).ok();
        let mut vout = victim.stdout.take().unwrap();
        let mut buf = vec![0u8; MB];
        vout.read_exact(&mut buf).unwrap();
        victim.kill().unwrap();
        let _ = victim.wait();
        drop(vout);
        let readers: Vec<_> = std::iter::once(&mut first)
            .chain(others.iter_mut())
            .map(|c| {
                let mut out = c.stdout.take().unwrap();
                std::thread::spawn(move || {
                    let mut v = Vec::new();
                    out.read_to_end(&mut v).unwrap();
                    v
                })
            })
            .collect();
        for (i, r) in readers.into_iter().enumerate() {
            same(&format!("{name}: client {i}"), &r.join().unwrap(), &want);
        }
        assert_eq!(first.wait().unwrap().code(), Some(5));
        for mut o in others {
            let st = o.wait().unwrap();
            let mut err = String::new();
            o.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert_eq!(st.code(), Some(5), "{err}");
        }
        same(&format!("{name}: logs"), &logs(&e.d, &name).0, &want);
        e.d.nook(&["rm", &name]).ok();
    }
}

/// `-it` with a stdin that is not a terminal is refused before anything is created, as docker
/// does; `-t` alone or `-i` alone is fine.
#[test]
fn tty_needs_a_terminal() {
    let e = env();
    let r = e.d.nook_stdin(&["run", "-it", "--rm", IMG, "cat"], b"hi\n");
    assert!(
        r.fails().contains("the input device is not a TTY"),
        "{}",
        r.stderr()
    );
    assert!(e.d.nook(&["ps", "-a", "-q"]).ok().trim().is_empty());
    let r = e.d.nook_stdin(&["run", "-i", "--rm", IMG, "cat"], b"hi\n");
    assert_eq!(r.ok(), "hi\n");
    e.d.nook(&["run", "-d", "--name", "box", IMG, "sleep", "600"])
        .ok();
    let r = e.d.nook(&["exec", "-it", "box", "sh"]);
    assert!(
        r.fails().contains("the input device is not a TTY"),
        "{}",
        r.stderr()
    );
    let r = e.d.nook_stdin(&["exec", "-i", "box", "cat"], b"ok\n");
    assert_eq!(r.ok(), "ok\n");
    e.d.nook(&["rm", "-f", "box"]).ok();
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The processes in a container whose command line starts with `prog`.
fn procs(d: &Nookd, name: &str, prog: &str) -> usize {
    d.nook(&["exec", name, "ps", "-o", "args"])
        .stdout()
        .lines()
        .filter(|l| l.trim_start().starts_with(prog))
        .count()
}

/// A client killed while attached closes the container's stdin, as docker does: `cat` ends;
/// an exec'd `cat` whose client dies ends too, and an exec'd shell on a terminal is hung up.
#[test]
fn a_dead_client_closes_stdin() {
    let e = env();
    let mut c = e.spawn(&["run", "-i", "--name", "cat", IMG, "cat"], Stdio::piped());
    let mut si = c.stdin.take().unwrap();
    si.write_all(b"one\n").unwrap();
    let mut out = c.stdout.take().unwrap();
    let mut buf = [0u8; 4];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"one\n");
    c.kill().unwrap(); // SIGKILL: no goodbye; stdin stays open on our side
    let _ = c.wait();
    wait_until("cat to end when its client died", || {
        e.d.nook(&["ps", "-a"])
            .stdout()
            .lines()
            .any(|l| l.ends_with(" cat") && l.contains("Exited (0)"))
    });
    drop(si);

    e.d.nook(&["run", "-d", "--name", "box", IMG, "sleep", "600"])
        .ok();
    let mut x = e.spawn(&["exec", "-i", "box", "cat"], Stdio::piped());
    wait_until("the exec'd cat to run", || procs(&e.d, "box", "cat") == 1);
    x.kill().unwrap();
    let _ = x.wait();
    wait_until("the exec'd cat to end", || procs(&e.d, "box", "cat") == 0);

    // -it through a real terminal (script(1)), its client killed: the shell is hung up
    let mut env = e.d.env();
    env.push(("TERM", "xterm".into()));
    let mut s = common::as_user(&e.d.user, &env, "script");
    s.args(["-q", "-e", "-c", "nook exec -it box sh", "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut s = s.spawn().unwrap();
    wait_until("the exec'd shell to run", || procs(&e.d, "box", "sh") == 1);
    let nook_pid = children(s.id()).into_iter().next().expect("script's child");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(nook_pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    wait_until("the exec'd shell to be hung up", || {
        procs(&e.d, "box", "sh") == 0
    });
    let _ = s.kill();
    let _ = s.wait();
    e.d.nook(&["rm", "-f", "box", "cat"]).ok();
}

fn children(pid: u32) -> Vec<u32> {
    let p = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(Path::new(&p))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}
