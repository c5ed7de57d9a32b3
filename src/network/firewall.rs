//! The firewall and routing of the containers' namespace, through `nft`: forwarding and NAT
//! out of the link (`tap0`), the transparent-proxy marking and route that let relayed
//! connections keep the client's address, and the chain that keeps networks apart.

use super::manager::*;
use super::TAP;
use crate::error::Result;

/// The routing table and firewall mark of transparent port forwarding.
pub(super) const TPROXY_TABLE: &str = "100";

impl Manager {
    /// Rewrites the firewall chain that keeps networks apart: a packet routed from one bridge
    /// to another is dropped; traffic within a bridge and to or from the link (`tap0`) passes.
    pub(super) fn isolate(&self) -> Result<()> {
        let bridges: Vec<String> = self.networks_raw()?.into_iter().map(|n| n.bridge).collect();
        self.kernel
            .nft(&self.s.netns, &isolate_rules(&bridges))
            .map_err(io_err("keeping the networks apart (nft)"))
    }
}

/// In the containers' namespace (called on a thread inside it): IPv4 forwarding, NAT of
/// everything leaving through tap0, and the transparent-proxy marking and routing. Returns
/// whether the transparent-proxy part is in place.
pub(super) fn setup_namespace() -> std::io::Result<bool> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| std::io::Error::new(e.kind(), format!("enabling ip_forward: {e}")))?;
    let nat = format!(
        "table ip nook {{}}\nflush table ip nook\ntable ip nook {{\n  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; oifname \"{TAP}\" masquerade; }}\n}}\n"
    );
    run_stdin("nft", &["-f", "-"], &nat)?;
    // IPv6 where the kernel has it: forwarding, and NAT out of the link (pasta gives the
    // namespace IPv6 when the host has it, slirp4netns with --enable-ipv6)
    if std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").is_ok() {
        let nat6 = format!(
            "table ip6 nook {{}}\nflush table ip6 nook\ntable ip6 nook {{\n  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; oifname \"{TAP}\" masquerade; }}\n}}\n"
        );
        if let Err(e) = run_stdin("nft", &["-f", "-"], &nat6) {
            tracing::warn!("no IPv6 NAT out of the link: {e}");
        }
    }
    let tproxy = "table ip nook {\n  chain prerouting { type filter hook prerouting priority mangle; policy accept; meta l4proto tcp socket transparent 1 meta mark set 0x1; }\n}\n";
    if let Err(e) = run_stdin("nft", &["-f", "-"], tproxy) {
        tracing::warn!("transparent port forwarding unavailable (containers will see their gateway as the client): {e}");
        return Ok(false);
    }
    let rules = std::process::Command::new("ip")
        .args(["-4", "rule", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let res = (|| {
        if !rules.contains(&format!("fwmark 0x1 lookup {TPROXY_TABLE}")) {
            run_stdin(
                "ip",
                &["-4", "rule", "add", "fwmark", "1", "lookup", TPROXY_TABLE],
                "",
            )?;
        }
        run_stdin(
            "ip",
            &[
                "-4",
                "route",
                "replace",
                "local",
                "0.0.0.0/0",
                "dev",
                "lo",
                "table",
                TPROXY_TABLE,
            ],
            "",
        )
    })();
    match res {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::warn!("transparent port forwarding unavailable: {e}");
            Ok(false)
        }
    }
}

/// The nft script of [`Manager::isolate`]. With br_netfilter, traffic within a bridge also
/// passes the forward hook, with the bridge as both the input and the output interface.
pub(super) fn isolate_rules(bridges: &[String]) -> String {
    let mut s = String::from(
        "table ip nook {\n  chain isolate { type filter hook forward priority filter; policy accept; }\n}\nflush chain ip nook isolate\n",
    );
    for b in bridges {
        s.push_str(&format!(
            "add rule ip nook isolate iifname \"{b}\" oifname != {{ \"{b}\", \"{TAP}\" }} drop\n"
        ));
    }
    s
}

pub(super) fn run_stdin(prog: &str, args: &[&str], input: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut c = std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("running {prog}: {e} (install nftables and iproute2)"),
            )
        })?;
    if let Some(mut i) = c.stdin.take() {
        i.write_all(input.as_bytes())?;
    }
    let o = c.wait_with_output()?;
    if !o.status.success() {
        return Err(std::io::Error::other(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(())
}
