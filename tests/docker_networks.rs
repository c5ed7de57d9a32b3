//! Networks through both front doors: the docker CLI's `network create/ls/inspect/rm/connect/
//! disconnect/prune` against nookd's docker.sock, and nook's own `network connect/disconnect`
//! and `run --network-alias`: containers reach each other by name and by alias, and a running
//! container joins and leaves a network live.

mod common;
#[path = "common/docker.rs"]
mod docker;

use std::time::{Duration, Instant};

use common::Nookd;
use docker::{docker_cli, load_busybox, Docker};

/// A busybox httpd serving `text` as /index.html on port 80.
const HTTPD: &str =
    "busybox mkdir -p /www && echo \"$TEXT\" > /www/index.html && exec httpd -f -p 80 -h /www";

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `wget -q -O - URL` (with busybox's timeout) in container `c`, through `docker exec`.
fn fetch(dk: &Docker, c: &str, url: &str) -> String {
    let r = dk.run(&[
        "exec",
        c,
        "sh",
        "-c",
        &format!("busybox timeout 5 wget -q -O - {url} 2>&1 || echo unreachable"),
    ]);
    r.stdout()
}

#[test]
fn docker_network_lifecycle_aliases_connect_disconnect() {
    let Some(_) = docker_cli() else { return };
    let d = Nookd::start();
    let dk = Docker::new(&d);
    load_busybox(&dk);

    let id = dk
        .run(&[
            "network",
            "create",
            "--subnet",
            "10.99.7.0/24",
            "--gateway",
            "10.99.7.1",
            "--label",
            "team=a",
            "appnet",
        ])
        .ok();
    assert_eq!(id.trim().len(), 64, "{id}");
    let ls = dk
        .run(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"])
        .ok();
    for want in ["appnet bridge", "bridge bridge", "host host", "none null"] {
        assert!(ls.lines().any(|l| l == want), "{want}: {ls}");
    }
    let by_label = dk
        .run(&[
            "network",
            "ls",
            "-q",
            "--no-trunc",
            "--filter",
            "label=team=a",
        ])
        .ok();
    assert_eq!(by_label.trim(), id.trim());
    let dangling = dk
        .run(&[
            "network",
            "ls",
            "--filter",
            "dangling=true",
            "--format",
            "{{.Name}}",
        ])
        .ok();
    assert_eq!(dangling.trim(), "appnet");
    let subnet = dk
        .run(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
            "appnet",
        ])
        .ok();
    assert!(subnet.starts_with("10.99.7.0/24 10.99.7.1"), "{subnet}");
    // by id prefix too
    let name = dk
        .run(&["network", "inspect", "-f", "{{.Name}}", &id[..12]])
        .ok();
    assert_eq!(name.trim(), "appnet");

    // what nook cannot do is refused, naming the option
    for (args, says) in [
        (
            &["network", "create", "-d", "macvlan", "mv"][..],
            "Driver=\"macvlan\"",
        ),
        (
            &[
                "network",
                "create",
                "-o",
                "com.docker.network.bridge.name=x",
                "o",
            ][..],
            "com.docker.network.bridge.name",
        ),
        (&["network", "create", "--internal", "i"][..], "Internal"),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.99.8.0/24",
                "--gateway",
                "10.99.8.9",
                "g",
            ][..],
            "IPAM.Config.Gateway",
        ),
        (&["network", "create", "appnet"][..], "already exists"),
        (&["network", "rm", "bridge"][..], "pre-defined"),
    ] {
        let e = dk.run(args).fails();
        assert!(e.contains(says), "{args:?}: {e}");
    }

    // IPv6: every network has it when the daemon's [network] ipv6_subnet is set (the default)
    dk.run(&["network", "create", "--ipv6", "v6"]).ok();
    let v6 = dk
        .run(&["network", "inspect", "-f", "{{.EnableIPv6}}", "v6"])
        .ok();
    assert_eq!(v6.trim(), "true");
    dk.run(&["network", "rm", "v6"]).ok();

    // a server with an alias; a client reaches it by name and by alias
    dk.run(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "appnet",
        "--network-alias",
        "www",
        "-e",
        "TEXT=hello-alias",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ])
    .ok();
    let out = dk
        .run(&[
            "run", "--rm", "--network", "appnet", "busybox", "sh", "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do busybox wget -q -O - http://www/index.html && break; sleep 0.3; done; busybox wget -q -O - http://web/index.html",
        ])
        .ok();
    assert_eq!(out, "hello-alias\nhello-alias\n");
    // (the --rm client left the network before `docker run` returned: its wait for
    // "removed" ends after the container's networks are gone)
    let members = || {
        dk.run(&[
            "network",
            "inspect",
            "-f",
            "{{range .Containers}}{{.Name}} {{.IPv4Address}};{{end}}",
            "appnet",
        ])
        .ok()
    };
    wait_until("only web is left on appnet", || {
        members().matches(';').count() == 1
    });
    let members = members();
    assert!(members.starts_with("web 10.99.7."), "{members}");
    let aliases = dk
        .run(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.Aliases}}{{end}}",
            "web",
        ])
        .ok();
    assert!(aliases.contains("www"), "{aliases}");
    let e = dk.run(&["network", "rm", "appnet"]).fails();
    assert!(e.contains("web"), "{e}");

    // a running container on the default network joins appnet live, with an alias of its own
    dk.run(&[
        "run", "-d", "--name", "lonely", "busybox", "busybox", "sleep", "600",
    ])
    .ok();
    assert!(fetch(&dk, "lonely", "http://www/index.html").contains("unreachable"));
    dk.run(&["network", "connect", "--alias", "buddy", "appnet", "lonely"])
        .ok();
    assert_eq!(
        fetch(&dk, "lonely", "http://www/index.html"),
        "hello-alias\n"
    );
    let nets = dk
        .run(&[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
            "lonely",
        ])
        .ok();
    assert_eq!(nets.trim(), "appnet bridge");
    let hosts = dk.run(&["exec", "web", "cat", "/etc/hosts"]).ok();
    assert!(hosts.contains("lonely buddy"), "{hosts}");
    let e = dk.run(&["network", "connect", "appnet", "lonely"]).fails();
    assert!(e.contains("already connected"), "{e}");
    // ... and leaves it
    dk.run(&["network", "disconnect", "appnet", "lonely"]).ok();
    assert!(fetch(&dk, "lonely", "http://www/index.html").contains("unreachable"));
    let hosts = dk.run(&["exec", "web", "cat", "/etc/hosts"]).ok();
    assert!(!hosts.contains("buddy"), "{hosts}");
    let e = dk
        .run(&["network", "disconnect", "appnet", "lonely"])
        .fails();
    assert!(e.contains("not connected"), "{e}");
    // its first network can go too, and come back
    dk.run(&["network", "disconnect", "bridge", "lonely"]).ok();
    let nets = dk
        .run(&[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
            "lonely",
        ])
        .ok();
    assert_eq!(nets.trim(), "none");
    dk.run(&["network", "connect", "appnet", "lonely"]).ok();
    assert_eq!(
        fetch(&dk, "lonely", "http://web/index.html"),
        "hello-alias\n"
    );

    dk.run(&["rm", "-f", "web", "lonely"]).ok();
    dk.run(&["network", "rm", "appnet"]).ok();
    let ls = dk.run(&["network", "ls", "--format", "{{.Name}}"]).ok();
    assert!(!ls.contains("appnet"), "{ls}");

    // prune removes unused user networks, honouring label filters
    dk.run(&["network", "create", "--label", "keep=1", "p1"])
        .ok();
    dk.run(&["network", "create", "p2"]).ok();
    let out = dk
        .run(&["network", "prune", "-f", "--filter", "label!=keep=1"])
        .ok();
    assert!(out.contains("p2") && !out.contains("p1"), "{out}");
    let out = dk.run(&["network", "prune", "-f"]).ok();
    assert!(out.contains("p1"), "{out}");
    let ls = dk.run(&["network", "ls", "--format", "{{.Name}}"]).ok();
    assert_eq!(ls, "bridge\nhost\nnone\n");
}

#[test]
fn nook_cli_network_connect_disconnect_and_alias() {
    let Some(_) = docker_cli() else { return };
    let d = Nookd::start();
    let dk = Docker::new(&d);
    load_busybox(&dk);
    d.nook(&["network", "create", "n1"]).ok();
    d.nook(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "n1",
        "--network-alias",
        "alpha",
        "-e",
        "TEXT=from-a",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ])
    .ok();
    d.nook(&[
        "run", "-d", "--name", "b", "busybox", "busybox", "sleep", "600",
    ])
    .ok();
    let get = |url: &str| {
        d.nook(&[
            "exec",
            "b",
            "sh",
            "-c",
            &format!("busybox timeout 5 wget -q -O - {url} 2>&1 || echo unreachable"),
        ])
        .stdout()
    };
    assert!(get("http://alpha/index.html").contains("unreachable"));
    d.nook(&["network", "connect", "--alias", "beta", "n1", "b"])
        .ok();
    wait_until("a's httpd answers b by alias", || {
        get("http://alpha/index.html") == "from-a\n"
    });
    let hosts = d.nook(&["exec", "a", "cat", "/etc/hosts"]).ok();
    assert!(hosts.contains("\tb beta"), "{hosts}");
    let ifs = d.nook(&["exec", "b", "cat", "/proc/net/dev"]).ok();
    assert!(ifs.contains("eth1:"), "{ifs}");
    let inspect = d.nook(&["network", "inspect", "n1"]).ok();
    assert!(inspect.contains("\"b\""), "{inspect}");
    let e = d
        .nook(&[
            "run",
            "--rm",
            "--network",
            "host",
            "--network-alias",
            "x",
            "busybox",
            "true",
        ])
        .fails();
    assert!(e.contains("bridge network"), "{e}");
    let e = d.nook(&["network", "connect", "n1", "nosuch"]).fails();
    assert!(e.contains("nosuch"), "{e}");
    d.nook(&["network", "disconnect", "n1", "b"]).ok();
    assert!(get("http://alpha/index.html").contains("unreachable"));
    let ifs = d.nook(&["exec", "b", "cat", "/proc/net/dev"]).ok();
    assert!(!ifs.contains("eth1:"), "{ifs}");
    // b stopped, connected, started again: the endpoint survives a restart of the container
    d.nook(&["network", "connect", "n1", "b"]).ok();
    d.nook(&["stop", "-t", "1", "b"]).ok();
    d.nook(&["start", "b"]).ok();
    wait_until("b reaches a after its restart", || {
        get("http://a/index.html") == "from-a\n"
    });
    d.nook(&["rm", "-f", "a", "b"]).ok();
    d.nook(&["network", "rm", "n1"]).ok();
}
