//! Container networking end to end, nookd as the unprivileged test user: the default bridge
//! network in the containers' namespace (forwarding, NAT out of the link), user networks
//! through the CLI, and the network state surviving a restart.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::Nookd;
use nook::image::fixture::{docker_archive, FileSpec, TestImage};

const IMG: &str = "bb:latest";

/// A busybox image with the networking applets.
fn image() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut base = vec![
        FileSpec::dir("bin"),
        FileSpec::exec("bin/busybox", bb),
        FileSpec::dir("etc"),
        FileSpec::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        FileSpec::file("etc/group", "root:x:0:\n"),
        FileSpec::dir("tmp"),
        FileSpec::dir("www"),
        FileSpec::file("www/index.html", "hello from nook\n"),
    ];
    base.extend(host_binary("/usr/bin/iperf3"));
    for a in [
        "sh", "cat", "echo", "sleep", "ip", "ifconfig", "httpd", "nc", "wget", "ping", "grep",
        "hostname", "true", "ls", "route",
    ] {
        base.push(FileSpec::symlink(&format!("bin/{a}"), "busybox"));
    }
    let img = TestImage::build(&[base], false, &["sh"]);
    docker_archive(&[(&[IMG], &img)])
}

/// A host binary with the shared libraries it needs (as `ldd` lists them), for the image.
fn host_binary(path: &str) -> Vec<FileSpec> {
    let mut files = vec![
        FileSpec::dir("usr"),
        FileSpec::dir("usr/bin"),
        FileSpec::dir("lib"),
        FileSpec::dir("lib/x86_64-linux-gnu"),
        FileSpec::dir("lib64"),
    ];
    files.push(FileSpec::exec(
        path.trim_start_matches('/'),
        std::fs::read(path).expect("iperf3 is installed"),
    ));
    let ldd = std::process::Command::new("ldd")
        .arg(path)
        .output()
        .unwrap();
    for l in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = l
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(lib) = lib {
            let real = std::fs::canonicalize(lib).unwrap();
            files.push(FileSpec::exec(
                lib.trim_start_matches('/'),
                std::fs::read(real).unwrap(),
            ));
        }
    }
    files
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
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET /index.html from 127.0.0.1:port with a plain socket (no curl quirks); the body.
fn http_get(port: u16) -> Option<String> {
    http_get_path(port, "/index.html").map(|(body, _)| body)
}

/// GET `path` from 127.0.0.1:port with a plain socket; the body and the client's own address.
fn http_get_path(port: u16, path: &str) -> Option<(String, std::net::SocketAddr)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let local = s.local_addr().ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    // a CGI's own headers end with a bare blank line
    let out = out.replace("\r\n", "\n");
    Some((out.split("\n\n").nth(1)?.to_string(), local))
}

/// Waits until an iperf3 UDP run through 127.0.0.1:port really moves bytes (iperf3's UDP
/// test needs the server's UDP reply).
fn udp_iperf3_moves_bytes(port: u16) {
    let port = port.to_string();
    let mut last = String::new();
    wait_until("iperf3 over the published UDP port", || {
        let o = std::process::Command::new("iperf3")
            .args([
                "-c",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "-t",
                "1",
                "-b",
                "10M",
                "-J",
            ])
            .output()
            .unwrap();
        last = String::from_utf8_lossy(&o.stdout).to_string();
        // the server may not listen yet: iperf3 then reports the reset in its JSON (and may
        // still exit 0), so retry until a run really moved bytes
        o.status.success()
            && serde_json::from_str::<serde_json::Value>(&last)
                .map(|j| j["end"]["sum"]["bytes"].as_f64().unwrap_or(0.0) > 0.0)
                .unwrap_or(false)
    });
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A command in nookd's user+mount namespaces and the containers' network namespace.
fn in_netns(d: &Nookd, script: &str) -> common::Run {
    let pause = d.pause_pid().expect("pause process");
    d.in_ns(&format!(
        "nsenter --net=/proc/{pause}/ns/net sh -c '{}'",
        script.replace('\'', "'\\''")
    ))
}

#[test]
fn default_network_bridge_nat_and_forwarding() {
    let d = Nookd::start();
    let ls = d.nook(&["network", "ls"]).ok();
    assert!(ls.contains("nook (default)"), "{ls}");
    assert!(ls.contains("nook0") && ls.contains("10.88.0.0/16"), "{ls}");
    let pause = d.pause_pid().unwrap();
    assert!(nook::network::link_exists_in(pause, "nook0"));
    let addr = in_netns(&d, "ip -4 addr show nook0").ok();
    assert!(addr.contains("10.88.0.1/16"), "{addr}");
    let fwd = in_netns(&d, "cat /proc/sys/net/ipv4/ip_forward").ok();
    assert_eq!(fwd.trim(), "1");
    let nft = in_netns(&d, "nft list table ip nook").ok();
    assert!(nft.contains("oifname \"tap0\" masquerade"), "{nft}");
    let plugins = d.nook(&["plugins", "ls"]).ok();
    assert!(
        plugins
            .lines()
            .any(|l| l.contains("bridge") && l.contains("ok")),
        "{plugins}"
    );
}

#[test]
fn user_networks_create_inspect_rm_and_survive_restart() {
    let mut d = Nookd::start();
    assert_eq!(
        d.nook(&["network", "create", "backend"]).ok().trim(),
        "backend"
    );
    let e = d.nook(&["network", "create", "backend"]).fails();
    assert!(e.contains("already exists"), "{e}");
    let e = d
        .nook(&["network", "create", "clash", "--subnet", "10.88.7.0/24"])
        .fails();
    assert!(e.contains("overlaps network \"nook\""), "{e}");
    let e = d
        .nook(&["network", "create", "bad", "--subnet", "10.1.2.3/24"])
        .fails();
    assert!(e.contains("host bits"), "{e}");
    d.nook(&[
        "network",
        "create",
        "front",
        "--subnet",
        "10.123.0.0/24",
        "-l",
        "a=b",
    ])
    .ok();
    let j: serde_json::Value =
        serde_json::from_str(&d.nook(&["network", "inspect", "backend", "front"]).ok()).unwrap();
    assert_eq!(j[0]["subnet"], "10.89.0.0/24");
    assert_eq!(j[0]["bridge"], "nook1");
    assert_eq!(j[1]["gateway"], "10.123.0.1");
    assert_eq!(j[1]["labels"]["a"], "b");
    let pause = d.pause_pid().unwrap();
    assert!(nook::network::link_exists_in(pause, "nook1"));
    assert!(nook::network::link_exists_in(pause, "nook2"));

    // networks are persistent; a new pause process gets its bridges back
    d.restart();
    let ls = d.nook(&["network", "ls", "-q"]).ok();
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["nook", "backend", "front"]);
    let pause = d.pause_pid().unwrap();
    assert!(nook::network::link_exists_in(pause, "nook2"));

    let e = d.nook(&["network", "rm", "nook"]).fails();
    assert!(e.contains("default network"), "{e}");
    d.nook(&["network", "rm", "backend", "front"]).ok();
    assert!(!nook::network::link_exists_in(pause, "nook1"));
    let e = d.nook(&["network", "inspect", "backend"]).fails();
    assert!(e.contains("not found"), "{e}");
    let e = d.nook(&["port", "nothing"]).fails();
    assert!(e.contains("no container"), "{e}");
}

#[test]
fn published_tcp_port_serves_curl_and_is_released_on_rm() {
    let d = daemon();
    assert!(port_free(18080), "port 18080 is taken on this machine");
    let id = d
        .nook(&[
            "run", "-d", "--name", "web", "-p", "18080:80", IMG, "httpd", "-f", "-p", "80", "-h",
            "/www",
        ])
        .ok();
    let id = id.trim().to_string();
    wait_until("httpd answers", || http_get(18080).is_some());
    // curl, as a user would
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:18080/index.html",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from nook\n");
    let port = d.nook(&["port", "web"]).ok();
    assert_eq!(port.trim(), "80/tcp -> 0.0.0.0:18080");
    let ps = d.nook(&["ps"]).ok();
    assert!(ps.contains("0.0.0.0:18080->80/tcp"), "{ps}");
    // a second container cannot take the same port: a clear error at run time
    let e = d
        .nook(&["run", "-d", "-p", "18080:80", IMG, "sleep", "100"])
        .fails();
    assert!(e.contains("port 18080 is already in use on 0.0.0.0"), "{e}");
    // below the unprivileged port start: the sysctl is named
    let e = d
        .nook(&["run", "-d", "-p", "80:80", IMG, "sleep", "100"])
        .fails();
    assert!(e.contains("net.ipv4.ip_unprivileged_port_start"), "{e}");
    d.nook(&["rm", "-f", &id]).ok();
    wait_until("port 18080 is free after rm", || port_free(18080));
    // no leftovers in the containers' namespace (the veth goes a few ms after rm returns)
    let dev = format!("/proc/{}/net/dev", d.pause_pid().unwrap());
    wait_until("the container's veth is gone", || {
        !std::fs::read_to_string(&dev).unwrap().contains(" nk")
    });
}

#[test]
fn random_host_port_udp_and_source_address() {
    let d = daemon();
    // -p PORT picks a free host port; shown by nook port
    let id = d
        .nook(&[
            "run",
            "-d",
            "--port-driver",
            "relay",
            "-p",
            "127.0.0.1::80",
            "-p",
            "127.0.0.1:18053:5353/udp",
            IMG,
            "sh",
            "-c",
            "httpd -f -p 80 -h /www",
        ])
        .ok();
    let id = id.trim().to_string();
    let ports = d.nook(&["port", &id, "80"]).ok();
    let hostport: u16 = ports.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!(hostport > 0, "{ports}");
    wait_until("httpd answers on the random port", || {
        http_get(hostport).is_some()
    });
    // UDP: published and answered (iperf3's UDP test needs the server's UDP reply)
    let u = d
        .nook(&[
            "run",
            "-d",
            "-p",
            "127.0.0.1:18201:5201",
            "-p",
            "127.0.0.1:18201:5201/udp",
            IMG,
            "iperf3",
            "-s",
            "-p",
            "5201",
        ])
        .ok();
    udp_iperf3_moves_bytes(18201);
    d.nook(&["rm", "-f", u.trim()]).ok();
    // the container sees the client's address: the kernel's connection table inside it
    let s = std::net::TcpStream::connect(("127.0.0.1", hostport)).unwrap();
    let local = s.local_addr().unwrap();
    // (httpd listens on IPv6 too: a v4 peer shows as ::ffff:a.b.c.d in tcp6)
    let seen = d
        .nook(&["exec", &id, "cat", "/proc/net/tcp", "/proc/net/tcp6"])
        .ok();
    drop(s);
    // host loopback clients appear as 10.0.2.2 (the host as seen from containers), with the
    // client's own port: 0202000A is 10.0.2.2 in /proc/net/tcp's little-endian hex
    let want = format!("0202000A:{:04X}", local.port());
    assert!(seen.contains(&want), "{want} not in {seen}");
    d.nook(&["rm", "-f", &id]).ok();
}

#[test]
fn user_network_name_resolution_none_and_host() {
    let d = daemon();
    d.nook(&["network", "create", "app"]).ok();
    let srv = d
        .nook(&[
            "run",
            "-d",
            "--name",
            "srv",
            "--network",
            "app",
            IMG,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ])
        .ok();
    let out = d
        .nook(&[
            "run",
            "--rm",
            "--name",
            "cli",
            "--network",
            "app",
            IMG,
            "sh",
            "-c",
            "cat /etc/hosts; wget -q -O - http://srv/index.html",
        ])
        .ok();
    assert!(out.contains("hello from nook"), "{out}");
    assert!(out.contains("\tsrv"), "{out}");
    // srv's hosts file learnt about cli while it ran, and forgets it when cli is removed
    wait_until("cli leaves srv's /etc/hosts", || {
        !d.nook(&["exec", srv.trim(), "cat", "/etc/hosts"])
            .ok()
            .contains("cli")
    });
    let inspect = d.nook(&["network", "inspect", "app"]).ok();
    assert!(inspect.contains("\"srv\""), "{inspect}");
    let e = d.nook(&["network", "rm", "app"]).fails();
    assert!(e.contains("used by srv"), "{e}");

    // none: only lo
    let out = d
        .nook(&[
            "run",
            "--rm",
            "--network",
            "none",
            IMG,
            "cat",
            "/proc/net/dev",
        ])
        .ok();
    let ifs: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifs, ["lo"], "{out}");
    // host: nookd's containers' namespace with its tap0
    let out = d
        .nook(&[
            "run",
            "--rm",
            "--network",
            "host",
            IMG,
            "cat",
            "/proc/net/dev",
        ])
        .ok();
    assert!(out.contains("tap0:"), "{out}");
    // the default network: eth0 with an address from 10.88.0.0/16, default route via .1
    let out = d
        .nook(&["run", "--rm", IMG, "ip", "-4", "addr", "show", "eth0"])
        .ok();
    assert!(out.contains("inet 10.88."), "{out}");
    let out = d.nook(&["run", "--rm", IMG, "ip", "route"]).ok();
    assert!(out.contains("default via 10.88.0.1 dev eth0"), "{out}");
    d.nook(&["rm", "-f", srv.trim()]).ok();
    d.nook(&["network", "rm", "app"]).ok();
}

#[test]
fn addresses_are_not_reused_across_a_restart() {
    let mut d = daemon();
    let ip_of = |d: &Nookd, id: &str| -> String {
        let j: serde_json::Value =
            serde_json::from_str(&d.nook(&["ps", "-a", "--format", "json"]).ok()).unwrap();
        j.as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["ip"].as_str().unwrap_or_default().to_string())
            .unwrap()
    };
    let a = d
        .nook(&["run", "-d", IMG, "sleep", "1000"])
        .ok()
        .trim()
        .to_string();
    let b = d.nook(&["create", IMG, "true"]).ok().trim().to_string();
    let (ia, ib) = (ip_of(&d, &a), ip_of(&d, &b));
    assert_ne!(ia, ib);
    d.nook(&["rm", &b]).ok();
    // a restart keeps the running container's address held, and does not hand out b's
    // just-released one either
    d.restart();
    let c = d.nook(&["create", IMG, "true"]).ok().trim().to_string();
    let ic = ip_of(&d, &c);
    assert_ne!(ic, ia);
    assert_ne!(ic, ib);
    assert_eq!(ip_of(&d, &a), ia);
    // a's network still works after the restart
    let out = d
        .nook(&["exec", &a, "ip", "-4", "addr", "show", "eth0"])
        .ok();
    assert!(out.contains(&format!("inet {ia}/")), "{out}");
    d.nook(&["rm", "-f", &a, &c]).ok();
}

#[test]
fn networks_are_isolated_from_each_other() {
    let d = daemon();
    d.nook(&["network", "create", "blue"]).ok();
    d.nook(&["network", "create", "red"]).ok();
    let httpd = |name: &str, net: &str| {
        d.nook(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            net,
            IMG,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ])
        .ok();
    };
    httpd("web-blue", "blue");
    httpd("web-default", "nook");
    let ip = |name: &str| {
        let out = d
            .nook(&["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"])
            .ok();
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no address in {out}"))
            .to_string()
    };
    let (blue, default) = (ip("web-blue"), ip("web-default"));
    let get = |net: &str, addr: &str| {
        d.nook(&[
            "run",
            "--rm",
            "--network",
            net,
            IMG,
            "sh",
            "-c",
            // (wget -T crashes busybox-static's wget: busybox timeout instead)
            &format!("busybox timeout 3 wget -q -O - http://{addr}/index.html || echo unreachable"),
        ])
        .ok()
    };
    // same network: reachable; another network (user or default): not
    assert!(get("blue", &blue).contains("hello from nook"));
    assert!(get("red", &blue).contains("unreachable"));
    assert!(get("nook", &blue).contains("unreachable"));
    assert!(get("red", &default).contains("unreachable"));
    assert!(get("nook", &default).contains("hello from nook"));
    // one rule per bridge, rewritten when networks come and go
    let nft = in_netns(&d, "nft list chain ip nook isolate").ok();
    assert!(nft.contains("iifname \"nook1\""), "{nft}");
    d.nook(&["rm", "-f", "web-blue", "web-default"]).ok();
    d.nook(&["network", "rm", "blue"]).ok();
    let nft = in_netns(&d, "nft list chain ip nook isolate").ok();
    assert!(!nft.contains("iifname \"nook1\""), "{nft}");
    d.nook(&["network", "rm", "red"]).ok();
}

#[test]
fn ipv6_between_containers_and_on_published_ports() {
    let d = daemon();
    let web = d
        .nook(&[
            "run",
            "-d",
            "--name",
            "web6",
            "-p",
            "[::1]:0:80",
            IMG,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ])
        .ok();
    // an address from fd88::/64 (the default ipv6_subnet), next to its IPv4 one
    let addr = d
        .nook(&["exec", web.trim(), "ip", "-6", "-o", "addr", "show", "eth0"])
        .ok();
    let ip6 = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .filter(|a| a.starts_with("fd88::"))
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no fd88:: address in {addr}"))
        .to_string();
    // another container reaches it over IPv6, through the bridge
    let out = d
        .nook(&[
            "run",
            "--rm",
            IMG,
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://[{ip6}]/index.html"),
        ])
        .ok();
    assert!(out.contains("hello from nook"), "{out}");
    let route = d.nook(&["run", "--rm", IMG, "ip", "-6", "route"]).ok();
    assert!(route.contains("default via fd88::1 dev eth0"), "{route}");
    // the port published on the host's [::1] reaches the container
    let port = d.nook(&["port", web.trim()]).ok();
    let port: u16 = port
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no host port in {port:?}"));
    let o = std::process::Command::new("curl")
        .args(["-6", "-s", "--max-time", "5"])
        .arg(format!("http://[::1]:{port}/index.html"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hello from nook"),
        "curl -6: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    d.nook(&["rm", "-f", web.trim()]).ok();
}

/// The pid of container `id`'s shim (in namespace default).
fn shim_pid(d: &Nookd, id: &str) -> u32 {
    std::fs::read_to_string(d.state.join("tasks/default").join(id).join("shim.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .expect("the container's shim.pid")
}

/// Threads named `nook-relay` (two per connection relayed by threads) in process `pid`.
fn relay_threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "nook-relay")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Relay threads of container `id`'s shim, which relays its published ports (and asserts
/// that nookd relays none).
fn relay_threads(d: &Nookd, shim: u32) -> usize {
    assert_eq!(
        relay_threads_of(d.pid()),
        0,
        "nookd relays connections itself"
    );
    relay_threads_of(shim)
}

#[test]
fn relayed_connections_carry_bulk_data_both_ways_and_leave_no_threads() {
    let d = daemon();
    let id = d
        .nook(&[
            "run",
            "-d",
            "--port-driver",
            "relay",
            "-p",
            "127.0.0.1::7",
            IMG,
            "nc",
            "-ll",
            "-p",
            "7",
            "-e",
            "cat",
        ])
        .ok();
    let id = id.trim().to_string();
    let port: u16 = d
        .nook(&["port", &id])
        .ok()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .expect("a host port");
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut s2 = s.try_clone().ok()?;
        s2.write_all(b"ping\n").ok()?;
        let mut b = [0u8; 5];
        (&s).read_exact(&mut b).ok()?;
        (&b == b"ping\n").then_some(s)
    };
    let mut s = None;
    wait_until("the echo server answers", || {
        s = connect();
        s.is_some()
    });
    let s = s.unwrap();
    let shim = shim_pid(&d, &id);
    assert_eq!(relay_threads(&d, shim), 2);
    // 16 MiB through the container and back, written while it is read
    let data: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    (&s).read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(
        back == data,
        "{} bytes came back of {}",
        back.len(),
        data.len()
    );
    drop(s);
    wait_until("the relay threads end with the connection", || {
        relay_threads(&d, shim) == 0
    });
    // a connection open while the container is removed is closed, its threads end
    let s = connect().expect("a second connection");
    assert_eq!(relay_threads(&d, shim), 2);
    d.nook(&["rm", "-f", &id]).ok();
    let mut rest = Vec::new();
    let _ = (&s).read_to_end(&mut rest);
    wait_until("the relay threads end after rm", || {
        relay_threads(&d, shim) == 0
    });
}

#[test]
fn published_port_of_a_host_network_container() {
    let d = daemon();
    let id = d
        .nook(&[
            "run",
            "-d",
            "--network",
            "host",
            "-p",
            "127.0.0.1::8081",
            IMG,
            "httpd",
            "-f",
            "-p",
            "8081",
            "-h",
            "/www",
        ])
        .ok();
    let port: u16 = d
        .nook(&["port", id.trim()])
        .ok()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .expect("a host port");
    // relayed to 127.0.0.1 in the containers' namespace (plainly: loopback drops foreign sources)
    wait_until("httpd answers through the published port", || {
        http_get(port).is_some_and(|b| b.contains("hello from nook"))
    });
    d.nook(&["rm", "-f", id.trim()]).ok();
}

#[test]
fn direct_port_driver_serves_tcp_and_udp_with_real_peers_and_survives_a_crash() {
    let mut d = daemon();
    for p in [18090, 18091] {
        assert!(port_free(p), "port {p} is taken on this machine");
    }
    // httpd with a CGI that prints the peer the container sees; a second httpd on an
    // unpublished port, whose bind must run as usual inside
    let script = "mkdir -p /www/cgi-bin && \
        printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR $REMOTE_PORT\\n' > /www/cgi-bin/peer && \
        chmod +x /www/cgi-bin/peer && httpd -p 81 -h /www && exec httpd -f -p 80 -h /www";
    let id = d
        .nook(&[
            "run",
            "-d",
            "--port-driver",
            "direct",
            "--name",
            "dweb",
            "-p",
            "18090:80",
            IMG,
            "sh",
            "-c",
            script,
        ])
        .ok();
    let id = id.trim().to_string();
    wait_until("httpd answers on the direct port", || {
        http_get(18090).is_some()
    });
    assert_eq!(http_get(18090).unwrap(), "hello from nook\n");
    // the container sees the client itself (127.0.0.1 and its port), not a relay's address
    let (body, local) = http_get_path(18090, "/cgi-bin/peer").expect("cgi answers");
    let mut it = body.split_whitespace();
    let (addr, port) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    assert!(
        addr.trim_end_matches(']').ends_with(":127.0.0.1") || addr == "127.0.0.1",
        "peer seen as {body:?}"
    );
    assert_eq!(port, local.port().to_string(), "peer seen as {body:?}");
    // the unpublished port was bound inside the container's namespace as usual
    let inner = d
        .nook(&[
            "exec",
            &id,
            "wget",
            "-qO-",
            "http://127.0.0.1:81/index.html",
        ])
        .ok();
    assert_eq!(inner, "hello from nook\n");
    // the published port still answers inside: at localhost in the container itself, and at
    // its address for another container (relayed by the shim to the host port)
    let own = d
        .nook(&[
            "exec",
            &id,
            "wget",
            "-qO-",
            "http://127.0.0.1:80/index.html",
        ])
        .ok();
    assert_eq!(own, "hello from nook\n");
    let j: serde_json::Value =
        serde_json::from_str(&d.nook(&["ps", "--format", "json"]).ok()).unwrap();
    let ip = j
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .map(|c| c["ip"].as_str().unwrap_or_default().to_string())
        .unwrap();
    let other = d
        .nook(&[
            "run",
            "--rm",
            IMG,
            "wget",
            "-qO-",
            &format!("http://{ip}:80/index.html"),
        ])
        .ok();
    assert_eq!(other, "hello from nook\n");
    // shown like any published port; a second container cannot take it
    assert_eq!(
        d.nook(&["port", "dweb"]).ok().trim(),
        "80/tcp -> 0.0.0.0:18090"
    );
    let e = d
        .nook(&["run", "-d", "-p", "18090:80", IMG, "sleep", "100"])
        .fails();
    assert!(e.contains("port 18090 is already in use"), "{e}");

    // UDP and TCP of one server (iperf3's UDP test needs both)
    let u = d
        .nook(&[
            "run",
            "-d",
            "--port-driver",
            "direct",
            "-p",
            "127.0.0.1:18091:5201",
            "-p",
            "127.0.0.1:18091:5201/udp",
            IMG,
            "iperf3",
            "-s",
            "-p",
            "5201",
        ])
        .ok();
    udp_iperf3_moves_bytes(18091);
    d.nook(&["rm", "-f", u.trim()]).ok();
    wait_until("port 18091 is free after rm", || port_free(18091));

    // nookd killed: the container keeps serving (its socket is its own); after the restart
    // the mapping is still known, and rm releases the port
    d.kill9();
    assert_eq!(http_get(18090).as_deref(), Some("hello from nook\n"));
    d.restart();
    assert_eq!(
        d.nook(&["port", "dweb"]).ok().trim(),
        "80/tcp -> 0.0.0.0:18090"
    );
    assert_eq!(http_get(18090).as_deref(), Some("hello from nook\n"));
    d.nook(&["rm", "-f", &id]).ok();
    wait_until("port 18090 is free after rm", || port_free(18090));
}

#[test]
fn direct_ports_with_crun_and_from_an_exec() {
    let d = daemon();
    for p in [18092, 18093] {
        assert!(port_free(p), "port {p} is taken on this machine");
    }
    // crun delivers the seccomp descriptor to the shim as runc does
    d.nook(&[
        "run",
        "-d",
        "--runtime",
        "crun",
        "--port-driver",
        "direct",
        "--name",
        "c1",
        "-p",
        "18092:80",
        IMG,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ])
    .ok();
    wait_until("httpd under crun answers", || http_get(18092).is_some());
    assert_eq!(http_get(18092).unwrap(), "hello from nook\n");
    // under runc, a server started later by `nook exec` (its own filter, its own descriptor)
    d.nook(&[
        "run",
        "-d",
        "--runtime",
        "runc",
        "--port-driver",
        "direct",
        "--name",
        "c2",
        "-p",
        "18093:80",
        IMG,
        "sleep",
        "1000",
    ])
    .ok();
    assert!(http_get(18093).is_none(), "nothing listens yet");
    d.nook(&["exec", "c2", "httpd", "-p", "80", "-h", "/www"])
        .ok();
    wait_until("httpd started by exec answers", || {
        http_get(18093).is_some()
    });
    assert_eq!(http_get(18093).unwrap(), "hello from nook\n");
    // stopped: the port is released; started again: reserved, and handed over once more
    d.nook(&["stop", "-t", "1", "c2"]).ok();
    wait_until("port free after stop", || port_free(18093));
    d.nook(&["start", "c2"]).ok();
    assert!(!port_free(18093), "reserved again at start");
    d.nook(&["exec", "c2", "httpd", "-p", "80", "-h", "/www"])
        .ok();
    wait_until("httpd answers after a restart", || {
        http_get(18093).is_some()
    });
    d.nook(&["rm", "-f", "c1", "c2"]).ok();
    wait_until("ports free after rm", || {
        port_free(18092) && port_free(18093)
    });
}

/// Reads an HTTP/1.0 response's headers from `s`; the rest is the body.
fn read_headers(s: &mut std::net::TcpStream) -> String {
    let mut h = Vec::new();
    let mut b = [0u8; 1];
    while !h.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "the headers: {h:?}");
        h.push(b[0]);
    }
    String::from_utf8_lossy(&h).into_owned()
}

/// Reads `n` bytes of `s` into `sum` (a slow client: nothing is read in between).
fn read_into(s: &mut std::net::TcpStream, n: usize, sum: &mut impl sha2::Digest) -> usize {
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    while got < n {
        let k = s.read(&mut buf[..(n - got).min(64 << 10)]).unwrap();
        if k == 0 {
            break;
        }
        sum.update(&buf[..k]);
        got += k;
    }
    got
}

#[test]
fn relayed_download_survives_nookd_restarts_and_ports_stay_open() {
    use sha2::Digest;
    let mut d = daemon();
    // 24 MiB of random data served by httpd through a relayed port
    let id = d
        .nook(&[
            "run",
            "-d",
            "--port-driver",
            "relay",
            "-p",
            "127.0.0.1::80",
            IMG,
            "sh",
            "-c",
            "busybox dd if=/dev/urandom of=/www/big bs=1M count=24 2>/dev/null && \
             busybox sha256sum /www/big > /www/big.sha256 && httpd -f -p 80 -h /www",
        ])
        .ok();
    let id = id.trim().to_string();
    let port: u16 = d
        .nook(&["port", &id])
        .ok()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .expect("a host port");
    let mut want = String::new();
    wait_until("httpd serves the file's checksum", || {
        want = http_get_path(port, "/big.sha256")
            .map(|(b, _)| b)
            .unwrap_or_default();
        want.len() >= 64
    });
    let want = want[..64].to_string();
    let shim = shim_pid(&d, &id);

    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let h = read_headers(&mut s);
    assert!(h.contains("200 OK"), "{h}");
    let mut sum = sha2::Sha256::new();
    let mut got = read_into(&mut s, 4 << 20, &mut sum);
    assert_eq!(relay_threads(&d, shim), 2);

    // SIGTERM and start again: the transfer goes on, and the port never closed
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        http_get(port).as_deref(),
        Some("hello from nook\n"),
        "a new connection while nookd is down"
    );
    d.spawn();
    d.wait_ready();
    assert_eq!(
        http_get(port).as_deref(),
        Some("hello from nook\n"),
        "a new connection right after the restart"
    );
    got += read_into(&mut s, 8 << 20, &mut sum);

    // SIGKILL and start again: the same
    d.kill9();
    assert_eq!(http_get(port).as_deref(), Some("hello from nook\n"));
    d.spawn();
    d.wait_ready();
    assert_eq!(http_get(port).as_deref(), Some("hello from nook\n"));
    // the new nookd adopted the ports: the same shim serves them, nookd none
    let ports = d.nook(&["port", &id]).ok();
    assert_eq!(ports.trim(), format!("80/tcp -> 127.0.0.1:{port}"));
    assert_eq!(relay_threads(&d, shim), 2);
    got += read_into(&mut s, usize::MAX, &mut sum);
    assert_eq!(got, 24 << 20, "bytes of the download");
    assert_eq!(hex(&sum.finalize()), want, "the download's sha256");

    // removing the container releases the port at once
    d.nook(&["rm", "-f", &id]).ok();
    wait_until("the port is released after rm", || {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    });
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn relayed_port_across_stop_start_restart_and_a_restart_policy() {
    let d = daemon();
    let id = d
        .nook(&[
            "run",
            "-d",
            "--port-driver",
            "relay",
            "-p",
            "127.0.0.1::80",
            IMG,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ])
        .ok();
    let id = id.trim().to_string();
    let port = |d: &Nookd| -> u16 {
        d.nook(&["port", &id])
            .ok()
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .expect("a host port")
    };
    let p = port(&d);
    wait_until("httpd answers", || http_get(p).is_some());
    // the old shim holds the port until it exits: start and restart must not trip over it
    d.nook(&["stop", "-t", "1", &id]).ok();
    d.nook(&["start", &id]).ok();
    let p = port(&d);
    wait_until("httpd answers after stop and start", || {
        http_get(p).is_some()
    });
    d.nook(&["restart", "-t", "1", &id]).ok();
    let p = port(&d);
    wait_until("httpd answers after restart", || http_get(p).is_some());
    d.nook(&["rm", "-f", &id]).ok();
    // a restart policy: the new task gets the same fixed port again
    let fixed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = format!("127.0.0.1:{fixed}:80");
    let id = d
        .nook(&[
            "run",
            "-d",
            "--restart",
            "always",
            "-p",
            &spec,
            IMG,
            "sh",
            "-c",
            "httpd -p 80 -h /www; sleep 2; exit 3",
        ])
        .ok();
    let id = id.trim().to_string();
    wait_until("restarted at least once", || {
        let j = d.nook(&["inspect", &id]).ok();
        let n = j
            .split("\"RestartCount\":")
            .nth(1)
            .map(|r| {
                r.trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect::<String>()
            })
            .unwrap_or_default();
        !n.is_empty() && n != "0"
    });
    wait_until("httpd answers after the policy restarted it", || {
        http_get(fixed).is_some()
    });
    d.nook(&["rm", "-f", &id]).ok();
}
