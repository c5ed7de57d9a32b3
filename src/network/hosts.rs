//! The /etc files nook writes for containers: resolv.conf (the link's resolver) and the
//! /etc/hosts of each container on a user network, rewritten in place as peers come and go
//! so that containers reach each other by name.

use std::net::Ipv4Addr;

use super::manager::*;

impl Manager {
    pub(super) fn resolv(&self, mode: &Mode) -> String {
        let driver = if *mode == Mode::None {
            "none"
        } else {
            self.s.driver.as_str()
        };
        super::dns::resolv_conf(driver, &self.s.host_resolv)
    }

    pub(super) fn hosts_for(&self, a: &AttachmentRecord, all: &[AttachmentRecord]) -> String {
        // every peer on every network `a` is on, by its name and its aliases on that network
        let mine = a.endpoints();
        let mut peers: Vec<(String, Ipv4Addr)> = Vec::new();
        for o in all
            .iter()
            .filter(|o| o.namespace == a.namespace && o.container_id != a.container_id)
        {
            for (net, ip, aliases) in o.endpoints() {
                if !mine.iter().any(|(n, _, _)| *n == net) {
                    continue;
                }
                let mut names = vec![o.name.clone()];
                names.extend(aliases.iter().filter(|x| **x != o.name).cloned());
                peers.push((names.join(" "), ip));
            }
        }
        peers.sort();
        peers.dedup();
        super::dns::hosts(&a.name, &a.hostname, a.ip, &peers)
    }

    /// A container's new name (`docker rename`): its attachment records it, and the hosts
    /// files of its network's members name it so.
    pub fn rename(&self, ns: &str, id: &str, name: &str) -> crate::error::Result<()> {
        let network = self.store.write(|tx| {
            let Some(mut a) = tx.get::<AttachmentRecord>(crate::metadata::NETWORKS, ns, id)? else {
                return Ok(None);
            };
            a.name = name.to_string();
            tx.put(crate::metadata::NETWORKS, ns, id, &a)?;
            Ok(Some(a.network))
        })?;
        if let Some(n) = network {
            self.refresh_hosts(&n);
        }
        Ok(())
    }

    /// Rewrites (in place, keeping bind mounts valid) the hosts files of `network`'s members.
    pub(super) fn refresh_hosts(&self, network: &str) {
        let Ok(all) = self.attachments() else {
            return;
        };
        for a in all
            .iter()
            .filter(|a| a.endpoints().iter().any(|(n, _, _)| *n == network))
        {
            if let Some(p) = &a.hosts_path {
                if p.parent().is_some_and(|d| d.exists()) {
                    if let Err(e) = std::fs::write(p, self.hosts_for(a, &all)) {
                        tracing::warn!("updating {}: {e}", p.display());
                    }
                }
            }
        }
    }
}
