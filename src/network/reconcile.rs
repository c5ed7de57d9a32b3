//! Agreeing with the kernel after a start or a crash: networks of vanished containers go,
//! stray veths, namespace files and addresses nobody holds are removed, bridges come back,
//! and the running containers' published ports are adopted as their shims hold them.

use std::collections::HashSet;
use std::path::PathBuf;

use super::manager::*;
use crate::error::Result;
use crate::metadata::SYSTEM;

impl Manager {
    /// After a start (or a crash): `state(ns, id)` says whether a container is gone (None),
    /// stopped (Some(false)) or running (Some(true)). Gone containers lose their network;
    /// running ones get their ports back; veths, namespace files and addresses nobody holds are
    /// removed. Blocking.
    pub fn reconcile(&self, state: impl Fn(&str, &str) -> Option<bool>) -> Result<Reconciled> {
        let mut out = Reconciled::default();
        let mut running = Vec::new();
        for a in self.attachments()? {
            match state(&a.namespace, &a.container_id) {
                None => {
                    self.detach(&a.namespace, &a.container_id)?;
                    out.attachments += 1;
                }
                Some(true) => running.push(a),
                Some(false) => {
                    if !a.published.is_empty() {
                        self.unpublish(&a.namespace, &a.container_id);
                    }
                }
            }
        }
        let _g = self.lock();
        let atts = self.attachments()?;
        let veths: HashSet<String> = atts
            .iter()
            .flat_map(|a| a.veth.iter().chain(a.extra.iter().map(|e| &e.veth)))
            .cloned()
            .collect();
        let owned: HashSet<PathBuf> = atts.iter().map(|a| a.netns_path.clone()).collect();
        // stray veths in the containers' namespace
        let links = self
            .kernel
            .links(&self.s.netns)
            .map_err(io_err("listing the containers' network links"))?;
        for l in links {
            if l.starts_with("nk")
                && l.len() == 14
                && !veths.contains(&l)
                && self.kernel.delete_link(&self.s.netns, &l).is_ok()
            {
                out.veths += 1;
            }
        }
        // stray namespace files
        if let Ok(rd) = std::fs::read_dir(&self.s.netns_dir) {
            for d in rd.flatten() {
                let Ok(inner) = std::fs::read_dir(d.path()) else {
                    continue;
                };
                for f in inner.flatten() {
                    if !owned.contains(&f.path()) && self.kernel.remove_netns(&f.path()).is_ok() {
                        out.netns += 1;
                    }
                }
            }
        }
        // addresses held by no attachment
        let holders: HashSet<String> = atts
            .iter()
            .filter(|a| !a.endpoints().is_empty())
            .map(|a| holder(&a.namespace, &a.container_id))
            .collect();
        out.addresses = self.store.write(|tx| {
            let mut n = 0;
            for (k, mut net) in tx_networks(tx)? {
                let before = net.pool.held.len();
                net.pool.held.retain(|_, h| holders.contains(h));
                if net.pool.held.len() != before {
                    n += before - net.pool.held.len();
                    tx.put_raw(SYSTEM, &k, &net)?;
                }
            }
            Ok(n)
        })?;
        drop(_g);
        // bridges (a new pause process has none) and the running containers' plumbing
        for n in self.networks_raw()? {
            self.ensure_bridge(&n)?;
        }
        for a in running {
            // the container's shim holds its ports and relays them (or the container's own
            // sockets serve them, direct): adopted as they are, connections and all
            if a.ports.is_empty() || a.direct {
                continue;
            }
            if !a.published.is_empty() && Self::ports_held(&a) {
                continue;
            }
            // nobody holds them (a shim of an older nook relayed nothing): nookd relays
            let (ns, id) = (&a.namespace, &a.container_id);
            if let Err(e) = self.publish(ns, id).and_then(|_| self.serve_here(ns, id)) {
                tracing::warn!("republishing the ports of {ns}/{id}: {e}");
            }
        }
        Ok(out)
    }
}
