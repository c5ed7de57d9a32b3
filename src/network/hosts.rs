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
        let peers: Vec<(String, Ipv4Addr)> = if a.mode == Mode::Bridge {
            all.iter()
                .filter(|o| {
                    o.mode == Mode::Bridge
                        && o.network == a.network
                        && o.namespace == a.namespace
                        && o.container_id != a.container_id
                })
                .filter_map(|o| o.ip.map(|ip| (o.name.clone(), ip)))
                .collect()
        } else {
            Vec::new()
        };
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
            .filter(|a| a.mode == Mode::Bridge && a.network == network)
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
