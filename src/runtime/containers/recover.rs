//! After a nookd restart: re-arming the watchers of running containers and removing the
//! `--rm` containers that exited while nookd was away.

use super::*;

impl Manager {
    /// At nookd start: re-arm `--rm` watchers and remove `--rm` containers that exited while
    /// nookd was away. Running containers need nothing: their shims answer.
    pub async fn recover(&self) {
        let d = &self.deps;
        let me = self.me.clone();
        let swept = blocking(move || Ok(me.upgrade().map_or(0, |m| m.sweep_half_created())))
            .await
            .unwrap_or(0);
        if swept > 0 {
            tracing::info!(bundles = swept, "removed what killed creates left");
        }
        let Ok(nss) = d.store.namespaces() else {
            return;
        };
        for ns in nss {
            let Ok(recs) = self.records(&ns.name) else {
                continue;
            };
            for r in recs {
                let st = self.status(&ns.name, r.clone()).await;
                if st.running() || st.status() == ContainerState::Created && st.task.is_some() {
                    // their ports were published again by the network's start-up
                    self.watch_ports(&ns.name, &r.id);
                    self.monitor(&ns.name, &r);
                }
                // a task gone while nookd was away (exited, or lost in a reboot)
                let gone = st.status() == ContainerState::Exited
                    || st.task.is_none() && r.has_been_started;
                if gone
                    && !r.auto_remove
                    && r.restart_policy.restart_at_boot(
                        st.exit_code(),
                        r.restart_count,
                        r.stopped_by_user,
                    )
                {
                    let (ns, r) = (ns.name.clone(), r.clone());
                    let me = self.me.clone();
                    tokio::spawn(async move {
                        let Some(m) = me.upgrade() else { return };
                        tracing::info!(container = %r.id, policy = %r.restart_policy, "starting again at nookd start");
                        if r.stopped_by_user {
                            let _ = m.update_record(&ns, &r.id, |r| r.stopped_by_user = false);
                        }
                        if let Err(e) = m.create_task(&ns, &r, true, false).await {
                            tracing::warn!(container = %r.id, "starting again at nookd start: {e}");
                        }
                    });
                    continue;
                }
                if !r.auto_remove {
                    continue;
                }
                match st.status() {
                    ContainerState::Exited => {
                        if let Err(e) = self.remove(&ns.name, &r, true).await {
                            tracing::warn!(container = %r.id, "auto-remove at start: {e}");
                        }
                    }
                    ContainerState::Running | ContainerState::Paused => {
                        self.watch_auto_remove(&ns.name, &r)
                    }
                    _ => {}
                }
            }
        }
    }
}

impl Manager {
    /// Undoes creates a killed nookd did not finish: a bundle with neither a container record
    /// nor a spec (`config.json` is written after the record) was being made. Its rootfs is
    /// unmounted and the bundle removed; its snapshot (labelled `nook.container`) goes with the
    /// next collection, its network with the network's reconcile. At start only, before the
    /// socket opens (a create in progress looks the same). Blocking. Returns how many.
    pub(super) fn sweep_half_created(&self) -> usize {
        let d = &self.deps;
        let root = self.tasks.bundle_dir("x", "x");
        let Some(tasks) = root.parent().and_then(Path::parent) else {
            return 0;
        };
        let Ok(nss) = std::fs::read_dir(tasks) else {
            return 0;
        };
        let mut n = 0;
        for ns in nss.flatten() {
            let nsn = ns.file_name().to_string_lossy().into_owned();
            let Ok(ids) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for b in ids.flatten() {
                let id = b.file_name().to_string_lossy().into_owned();
                let recorded = d
                    .store
                    .get::<serde_json::Value>(CONTAINERS, &nsn, &id)
                    .map(|r| r.is_some())
                    .unwrap_or(true);
                if recorded || b.path().join("config.json").exists() {
                    continue;
                }
                let rootfs = b.path().join("rootfs");
                if d.mounts.is_mounted(&rootfs) {
                    if let Err(e) = d.mounts.unmount(&rootfs) {
                        tracing::warn!(container = %id, "half-made container: {e}");
                        continue;
                    }
                }
                if let Err(e) = image_volumes::unmount_all(d, &b.path()) {
                    tracing::warn!(container = %id, "half-made container: {e}");
                    continue;
                }
                match self.tasks.remove_bundle(&nsn, &id) {
                    Ok(()) => n += 1,
                    Err(e) => tracing::warn!(container = %id, "half-made container: {e}"),
                }
            }
        }
        n
    }
}
