//! Published ports: bound on the host by nookd at `run` (so a port in use is an error there)
//! and handed to the container's shim, which relays them or gives them to the container's
//! binds, for as long as the container runs; the records of what is bound.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;

use super::forward;
use super::manager::*;
use super::ports::PortMapping;
use crate::error::{Error, Result};
use crate::metadata::NETWORKS;

impl Manager {
    /// Binds the container's published ports on the host and relays them to it. All or
    /// nothing: on error no port stays bound. Returns the mappings as bound (random host ports
    /// resolved). Blocking.
    pub fn publish(&self, ns: &str, id: &str) -> Result<Vec<PortMapping>> {
        let Some(mut a) = self.attachment(ns, id)? else {
            return Ok(Vec::new());
        };
        if a.ports.is_empty() {
            return Ok(Vec::new());
        }
        self.unpublish(ns, id);
        let target_ip: IpAddr = match (&a.mode, a.ip) {
            (Mode::Bridge, Some(ip)) => IpAddr::V4(ip),
            (Mode::Host, _) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => {
                return Err(Error::InvalidArgument(
                    "ports can only be published from a bridge or host network".into(),
                ))
            }
        };
        let relay = if a.direct {
            None
        } else {
            // the network is up (the shim's relay joins its namespace)
            let transparent = self
                .factory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|f| f.transparent.load(std::sync::atomic::Ordering::Relaxed))
                .ok_or_else(|| self.not_initialized())?;
            Some(forward::RelayTarget {
                netns: self.s.netns.clone(),
                ip: target_ip,
                transparent,
            })
        };
        // bound here, so that a port in use fails `run`; the shim takes the sockets (relayed
        // ports listen at once and wait in the backlog; direct ones wait for the container)
        let mut ports = Vec::new();
        for m in &a.ports {
            let (fd, m) = if a.direct {
                forward::reserve(m)?
            } else {
                let (b, m) = forward::bind(m)?;
                (OwnedFd::from(b), m)
            };
            ports.push((m, fd));
        }
        let published: Vec<PortMapping> = ports.iter().map(|(m, _)| m.clone()).collect();
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(holder(ns, id), HeldPorts { ports, relay });
        a.published = published.clone();
        self.store.write(|tx| {
            if tx.get::<AttachmentRecord>(NETWORKS, ns, id)?.is_some() {
                tx.put(NETWORKS, ns, id, &a)?;
            }
            Ok(())
        })?;
        Ok(published)
    }

    /// The host sockets bound by [`Manager::publish`], for the container's shim to hold and
    /// serve (relay, or hand to the container's binds).
    pub fn take_held(&self, ns: &str, id: &str) -> HeldPorts {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&holder(ns, id))
            .unwrap_or_default()
    }

    /// Relays the ports [`Manager::publish`] bound from nookd itself rather than from the
    /// shim: for a running container whose shim does not relay (one started by an older
    /// nook), whose ports would otherwise stay closed. Blocking.
    pub fn serve_here(&self, ns: &str, id: &str) -> Result<()> {
        let held = self.take_held(ns, id);
        let Some(relay) = held.relay else {
            return Ok(());
        };
        let handle = self.handle.clone().ok_or_else(|| {
            Error::Internal("port publishing needs the daemon's tokio runtime".into())
        })?;
        let f = self
            .factory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| self.not_initialized())?;
        let tasks = forward::serve_all(&handle, held.ports, relay.ip, &f)?;
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(holder(ns, id), tasks);
        Ok(())
    }

    /// Whether every published port of the attachment is held (by its shim): a bind of it
    /// fails as in use. Adopting a running container's relay at start relies on it.
    pub(super) fn ports_held(a: &AttachmentRecord) -> bool {
        a.published.iter().all(|m| forward::bind(m).is_err())
    }

    /// Closes the container's published ports (when it stops). Never fails.
    pub fn unpublish(&self, ns: &str, id: &str) {
        if let Some(tasks) = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&holder(ns, id))
        {
            for t in tasks {
                t.abort();
            }
        }
        self.take_held(ns, id);
        let _ = self.store.write(|tx| {
            if let Some(mut a) = tx.get::<AttachmentRecord>(NETWORKS, ns, id)? {
                if !a.published.is_empty() {
                    a.published.clear();
                    tx.put(NETWORKS, ns, id, &a)?;
                }
            }
            Ok(())
        });
    }

    /// The container's port mappings: as bound while it runs, else as requested.
    pub fn ports(&self, ns: &str, id: &str) -> Result<Vec<PortMapping>> {
        Ok(self
            .attachment(ns, id)?
            .map(|a| {
                if a.published.is_empty() {
                    a.ports
                } else {
                    a.published
                }
            })
            .unwrap_or_default())
    }
}

/// Throughput of the published-port relay (host 127.0.0.1 → container), as root in throwaway
/// namespaces: `cargo test --lib network::manager::bench -- --ignored --nocapture`.
#[cfg(test)]
mod bench {
    use super::*;
    use crate::events::Publisher;
    use crate::metadata::Store;
    use crate::network::netns::{create_netns, remove_netns};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn relay_throughput() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        create_netns(&d.join("pause")).unwrap();
        let store = Arc::new(Store::open(&d.join("meta.redb")).unwrap());
        let m = Arc::new(Manager::new(
            store,
            Settings {
                netns: d.join("pause"),
                netns_dir: d.join("netns"),
                driver: "slirp4netns".into(),
                mtu: 65520,
                bridge: "nook0".into(),
                subnet: "10.88.0.0/16".into(),
                subnet6: "fd88::/64".into(),
                host_resolv: String::new(),
            },
            Publisher::discard(),
        ));
        let m2 = m.clone();
        let (a, port) = tokio::task::spawn_blocking(move || {
            m2.init().unwrap();
            let a = m2
                .attach(
                    "default",
                    "iperf",
                    &AttachRequest {
                        ports: crate::network::ports::parse("127.0.0.1::5201").unwrap(),
                        ..Default::default()
                    },
                )
                .unwrap();
            let p = m2.publish("default", "iperf").unwrap()[0].host_port;
            m2.serve_here("default", "iperf").unwrap();
            (a, p)
        })
        .await
        .unwrap();
        let mut srv = std::process::Command::new("nsenter")
            .arg(format!("--net={}", a.netns_path.display()))
            .args(["iperf3", "-s", "-p", "5201"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        for (what, args) in [
            ("host -> container", vec![]),
            ("container -> host", vec!["-R"]),
        ] {
            let o = tokio::process::Command::new("iperf3")
                .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", "5", "-J"])
                .args(args)
                .output()
                .await
                .unwrap();
            let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let bps = j["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0);
            println!("published port {what}: {:.2} Gbit/s", bps / 1e9);
        }
        let _ = srv.kill();
        let _ = srv.wait();
        let m2 = m.clone();
        tokio::task::spawn_blocking(move || m2.detach("default", "iperf"))
            .await
            .unwrap()
            .unwrap();
        remove_netns(&d.join("pause")).unwrap();
    }
}
