//! What nookd does on its own once a task runs: one exit watcher per task, the exit report,
//! the restart policy, closing published ports and `--rm` removal.

use super::*;

impl Manager {
    /// Watches the task until it exits, then reports the exit (`/tasks/exit`). One watcher per
    /// task: the shim is the only one who knows of the exit, and tells whoever waits.
    pub fn monitor(&self, ns: &str, r: &ContainerRecord) {
        let key = format!("{ns}/{}", r.id);
        if !self
            .monitored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
        {
            return;
        }
        let (ns, r) = (ns.to_string(), r.clone());
        let me = self.me.clone();
        tokio::spawn(async move {
            let Some(m) = me.upgrade() else { return };
            let armed = std::time::Instant::now();
            let exit = m.wait_for_exit(&ns, &r.id).await;
            m.monitored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            if let Some(e) = exit {
                super::limits::after_exit(&m.deps, &m, &ns, &r, &e);
                m.report_exit(&ns, &r, &e);
                m.apply_restart_policy(&ns, &r.id, e.exit_code, armed.elapsed())
                    .await;
            }
        });
    }

    /// After an exit: restarts the container if its policy says so, after the backoff delay.
    async fn apply_restart_policy(&self, ns: &str, id: &str, exit_code: i32, ran: Duration) {
        let d = &self.deps;
        let key = format!("{ns}/{id}");
        let eligible = || -> Option<ContainerRecord> {
            d.store
                .get::<ContainerRecord>(CONTAINERS, ns, id)
                .ok()
                .flatten()
                .filter(|r| {
                    !r.auto_remove
                        && r.restart_policy.should_restart(
                            exit_code,
                            r.restart_count,
                            r.stopped_by_user,
                        )
                })
        };
        // a start or removal in progress decides for itself
        let busy = |m: &Manager| {
            m.removing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&key)
        };
        if busy(self) || eligible().is_none() {
            return;
        }
        let delay = {
            let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
            let next = restart::next_delay(b.get(&key).copied().unwrap_or_default(), ran);
            b.insert(key.clone(), next);
            next
        };
        tokio::time::sleep(delay).await;
        // under the container's start/remove lock, so a removal (rm, prune) never races the
        // restart: whoever comes second sees what the first did
        let (lkey, lock) = self.op_lock(ns, id);
        {
            let _held = lock.lock().await;
            self.restart_locked(ns, id, exit_code, eligible).await;
        }
        self.op_unlock(&lkey, lock);
    }

    async fn restart_locked(
        &self,
        ns: &str,
        id: &str,
        exit_code: i32,
        eligible: impl Fn() -> Option<ContainerRecord>,
    ) {
        // the user may have stopped, started or removed it meanwhile
        let Some(mut rec) = eligible() else {
            return;
        };
        if self.status(ns, rec.clone()).await.running() {
            return;
        }
        rec.restart_count += 1;
        let count = rec.restart_count;
        if let Err(e) = self.update_record(ns, id, |r| r.restart_count = count) {
            tracing::warn!(container = %id, "restart: recording the count: {e}");
            return;
        }
        tracing::info!(container = %id, policy = %rec.restart_policy, count, exit_code, "restarting");
        self.events.publish(
            ns,
            "/containers/update",
            &[
                ("id", rec.id.clone()),
                ("name", rec.name.clone()),
                ("restart_count", count.to_string()),
            ],
        );
        if let Err(e) = self.create_task_locked(ns, &rec, true, false).await {
            tracing::warn!(container = %id, "restart under policy {}: {e}", rec.restart_policy);
        }
    }

    /// Changes a container's record in one transaction (no-op when it is gone).
    pub fn update_record(
        &self,
        ns: &str,
        id: &str,
        f: impl Fn(&mut ContainerRecord),
    ) -> Result<()> {
        let d = &self.deps;
        d.store.write(|tx| {
            if let Some(mut r) = tx.get::<ContainerRecord>(CONTAINERS, ns, id)? {
                f(&mut r);
                tx.put(CONTAINERS, ns, id, &r)?;
            }
            Ok(())
        })
    }

    /// The user starts the container (`nook start`, `nook run`): the restart policy applies
    /// again, with the count from zero (docker does the same).
    pub fn user_started(&self, ns: &str, r: &ContainerRecord) -> Result<()> {
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("{ns}/{}", r.id));
        if r.restart_policy == RestartPolicy::No
            || (!r.stopped_by_user && r.restart_count == 0 && r.has_been_started)
        {
            return Ok(());
        }
        self.update_record(ns, &r.id, |r| {
            r.stopped_by_user = false;
            r.restart_count = 0;
            r.has_been_started = true;
        })
    }

    /// The user stops or kills the container: its restart policy does not bring it back.
    pub fn user_stopped(&self, ns: &str, r: &ContainerRecord) -> Result<()> {
        if r.restart_policy == RestartPolicy::No || r.stopped_by_user {
            return Ok(());
        }
        self.update_record(ns, &r.id, |r| r.stopped_by_user = true)
    }

    /// Waits until the task's init exits; `None` when the task went away without a word.
    async fn wait_for_exit(&self, ns: &str, id: &str) -> Option<crate::shim::ExitInfo> {
        let c = self.tasks.client(ns, id);
        loop {
            match c.wait(None).await {
                Ok(e) => return Some(e),
                Err(_) => {
                    // the shim may not be listening yet, or is gone: check the record
                    if let Some(e) = c.recorded_exit() {
                        return Some(e);
                    }
                    if self.tasks.state(ns, id).await.is_none() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if self.tasks.state(ns, id).await.is_none() {
                            return c.recorded_exit();
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Publishes `/tasks/exit` for this exit, unless it was published already.
    pub fn report_exit(&self, ns: &str, r: &ContainerRecord, e: &crate::shim::ExitInfo) {
        let key = format!("{ns}/{}", r.id);
        {
            let mut seen = self
                .exits_reported
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if seen.get(&key) == Some(&e.exited_at) {
                return;
            }
            seen.insert(key, e.exited_at.clone());
        }
        self.events.publish(
            ns,
            "/tasks/exit",
            &[
                ("id", r.id.clone()),
                ("name", r.name.clone()),
                ("pid", e.pid.to_string()),
                ("exit_code", e.exit_code.to_string()),
                ("exited_at", e.exited_at.clone()),
            ],
        );
    }

    /// Closes the container's published ports when it exits.
    pub fn watch_ports(&self, ns: &str, id: &str) {
        let d = &self.deps;
        if d.network
            .ports(ns, id)
            .map(|p| p.is_empty())
            .unwrap_or(true)
        {
            return;
        }
        let (d, ns, id) = (d.clone(), ns.to_string(), id.to_string());
        let me = self.me.clone();
        tokio::spawn(async move {
            let Some(m) = me.upgrade() else { return };
            let _ = m.wait_exit(&ns, &id).await;
            d.network.unpublish(&ns, &id);
        });
    }

    /// For `--rm` containers: waits for the exit, then removes the container.
    pub fn watch_auto_remove(&self, ns: &str, r: &ContainerRecord) {
        let d = &self.deps;
        if !r.auto_remove {
            return;
        }
        let (d, ns, r) = (d.clone(), ns.to_string(), r.clone());
        let me = self.me.clone();
        tokio::spawn(async move {
            let Some(m) = me.upgrade() else { return };
            let c = m.tasks.client(&ns, &r.id);
            loop {
                // after the last byte reached the attached clients: the removal ends the shim
                match c.wait_for(None, true).await {
                    Ok(_) => break,
                    Err(_) => {
                        // the shim may not be listening yet, or is gone: check the record
                        if c.recorded_exit().is_some() {
                            break;
                        }
                        if m.tasks.state(&ns, &r.id).await.is_none() {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if m.tasks.state(&ns, &r.id).await.is_none() {
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            // removed already by someone else?
            if d.store
                .get::<ContainerRecord>(CONTAINERS, &ns, &r.id)
                .ok()
                .flatten()
                .is_none()
            {
                return;
            }
            if let Err(e) = m.remove(&ns, &r, true).await {
                tracing::warn!(container = %r.id, "auto-remove: {e}");
            }
        });
    }
}
