//! Container networking end to end, nookd as the unprivileged test user: the default bridge
//! network in the containers' namespace (forwarding, NAT out of the link), user networks
//! through the CLI, and the network state surviving a restart.

mod common;

use common::Nookd;

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
