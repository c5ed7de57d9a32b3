//! After a nookd restart: re-arming the watchers of running containers and removing the
//! `--rm` containers that exited while nookd was away.

use super::*;

impl Manager {
    /// At nookd start: re-arm `--rm` watchers and remove `--rm` containers that exited while
    /// nookd was away. Running containers need nothing: their shims answer.
    pub async fn recover(&self) {
        let d = &self.deps;
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
