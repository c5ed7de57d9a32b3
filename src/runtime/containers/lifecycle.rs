//! A container's life on demand: mounting its bundle and starting its task, kill, stop, wait,
//! remove and prune, under the per-container lock that keeps a start and a removal apart.

use super::*;

impl Manager {
    /// Runs `f` on the container's root filesystem (mounted first if it is not: a stopped
    /// container's after a nookd restart), off the async threads, holding the container's
    /// lock so that a removal waits for it (`nook cp`).
    pub async fn with_rootfs<T: Send + 'static>(
        &self,
        ns: &str,
        r: &ContainerRecord,
        f: impl FnOnce(&Path) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let d = &self.deps;
        let (key, lock) = self.op_lock(ns, &r.id);
        let res = async {
            let _held = lock.lock().await;
            if d.store
                .get::<ContainerRecord>(CONTAINERS, ns, &r.id)?
                .is_none()
            {
                return Err(Error::NotFound(format!("container {} was removed", r.name)));
            }
            let rootfs = self.rootfs(ns, &r.id);
            mount_snapshot_at(d, ns, &r.snapshotter, &r.snapshot_key, &rootfs)?;
            tokio::task::spawn_blocking(move || f(&rootfs))
                .await
                .map_err(|e| Error::Internal(format!("copy thread: {e}")))?
        }
        .await;
        self.op_unlock(&key, lock);
        res
    }

    /// Makes sure the bundle (config.json, /etc files) and the mounted rootfs are in place.
    async fn ensure_bundle(&self, ns: &str, r: &ContainerRecord) -> Result<()> {
        let d = &self.deps;
        let bundle = self.tasks.bundle_dir(ns, &r.id);
        if !bundle.join("config.json").exists() {
            let hostname = r.spec["hostname"].as_str().unwrap_or("nook").to_string();
            let mut etc = EtcFiles::defaults(
                &hostname,
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                Some(SLIRP_DNS),
            );
            if let Ok(Some(a)) = d.network.view_of(ns, &r.id) {
                etc.hosts = a.hosts;
                etc.resolv = a.resolv_conf;
            }
            self.tasks.prepare_bundle(ns, &r.id, &etc)?;
            self.tasks.write_spec(&bundle, &runtime_spec(d, r)?)?;
        }
        mount_snapshot_at(
            d,
            ns,
            &r.snapshotter,
            &r.snapshot_key,
            &bundle.join("rootfs"),
        )?;
        image_volumes::ensure_mounted(d, ns, r, &bundle)?;
        Ok(())
    }

    /// Creates the task (a shim running `runtime create`), unless one is already there.
    /// Returns whether a new task was made.
    ///
    /// With `start_now` the task starts at once (one runtime invocation); `hold_output` keeps
    /// its first output for the client about to attach (`nook run`, `nook start -a`).
    ///
    /// Under the container's lock, and only if its record is still there: a removal racing the
    /// start (`rm -f` against `nook run`) either comes first, and nothing is mounted or
    /// started again, or second, and removes what the start made.
    pub async fn create_task(
        &self,
        ns: &str,
        r: &ContainerRecord,
        start_now: bool,
        hold_output: bool,
    ) -> Result<bool> {
        let (key, lock) = self.op_lock(ns, &r.id);
        let res = async {
            let _held = lock.lock().await;
            self.still_recorded(ns, r)?;
            self.create_task_locked(ns, r, start_now, hold_output).await
        }
        .await;
        self.op_unlock(&key, lock);
        res
    }

    /// An error unless the container's record is still there (checked under its lock, before
    /// a start mounts its bundle or runs its shim).
    fn still_recorded(&self, ns: &str, r: &ContainerRecord) -> Result<()> {
        if self
            .deps
            .store
            .get::<ContainerRecord>(CONTAINERS, ns, &r.id)?
            .is_none()
        {
            return Err(Error::NotFound(format!(
                "container {} was removed before it started",
                r.name
            )));
        }
        Ok(())
    }

    /// [`Manager::create_task`] for a caller that holds the container's lock and has seen
    /// its record.
    pub(super) async fn create_task_locked(
        &self,
        ns: &str,
        r: &ContainerRecord,
        start_now: bool,
        hold_output: bool,
    ) -> Result<bool> {
        let d = &self.deps;
        let st = self.status(ns, r.clone()).await;
        match st.task.as_ref().map(|t| t.status) {
            Some(TaskStatus::Created) => return Ok(false),
            Some(TaskStatus::Running) | Some(TaskStatus::Paused) => {
                return Err(Error::Precondition(format!(
                    "container {} is already running",
                    r.name
                )))
            }
            _ => {}
        }
        let rt = plugin::resolve(&d.config, Some(&r.runtime))?;
        if st.task.is_some() {
            // a previous run: clear the runtime's state of it, and let its shim release the
            // published ports (it exits just after the exit was collected)
            self.tasks.runtime_delete(&rt, &r.id).await?;
            if d.network.ports(ns, &r.id).is_ok_and(|p| !p.is_empty()) {
                self.tasks
                    .wait_shim_gone(ns, &r.id, Duration::from_secs(5))
                    .await;
            }
        }
        self.ensure_bundle(ns, r).await?;
        // the network (made again if a reboot took its namespace) and the published ports:
        // a host port in use fails here, before anything runs
        let (d2, ns2, id2) = (d.clone(), ns.to_string(), r.id.clone());
        tokio::task::spawn_blocking(move || {
            d2.network.ensure(&ns2, &id2)?;
            d2.network.publish(&ns2, &id2)
        })
        .await
        .map_err(|e| Error::Internal(format!("publishing ports: {e}")))??;
        let held = d.network.take_held(ns, &r.id);
        let pid = match self
            .tasks
            .spawn(
                ns,
                &r.id,
                &rt,
                r.tty,
                r.stdin,
                start_now,
                hold_output,
                held,
                r.pod.as_ref().filter(|p| !p.log_path.is_empty()).map(|p| {
                    let max = d.config.cri.max_container_log_line_size as usize;
                    (p.log_path.clone(), max)
                }),
            )
            .await
        {
            Ok((_, pid)) => pid,
            Err(e) => {
                d.network.unpublish(ns, &r.id);
                return Err(e);
            }
        };
        self.events.publish(
            ns,
            if start_now {
                "/tasks/start"
            } else {
                "/tasks/create"
            },
            &[
                ("id", r.id.clone()),
                ("name", r.name.clone()),
                ("pid", pid.to_string()),
            ],
        );
        if r.oom_killed {
            // a new run: OOMKilled tells of the last one only
            let _ = self.update_record(ns, &r.id, |rec| rec.oom_killed = false);
        }
        self.watch_ports(ns, &r.id);
        self.monitor(ns, r);
        Ok(true)
    }

    /// Starts a container detached; with `--rm`, nookd removes it when it exits.
    pub async fn start(&self, ns: &str, r: &ContainerRecord) -> Result<()> {
        let (key, lock) = self.op_lock(ns, &r.id);
        let res = async {
            let _held = lock.lock().await;
            self.still_recorded(ns, r)?;
            if !self.create_task_locked(ns, r, true, false).await? {
                // a task created earlier and not started: start it
                let c = self.tasks.client(ns, &r.id);
                c.start().await?;
                let pid = c.state().await.map(|s| s.pid).unwrap_or(0);
                self.events.publish(
                    ns,
                    "/tasks/start",
                    &[
                        ("id", r.id.clone()),
                        ("name", r.name.clone()),
                        ("pid", pid.to_string()),
                    ],
                );
            }
            Ok(())
        }
        .await;
        self.op_unlock(&key, lock);
        if let Err(e) = res {
            self.remove_after_failed_start(ns, r).await;
            return Err(e);
        }
        self.watch_auto_remove(ns, r);
        Ok(())
    }

    /// `--rm`: a container whose start failed (a command not found, say) is removed as well,
    /// as docker does, unless it runs after all (a second start of a running one).
    pub async fn remove_after_failed_start(&self, ns: &str, r: &ContainerRecord) {
        if !r.auto_remove {
            return;
        }
        let st = self.status(ns, r.clone()).await;
        if matches!(
            st.task.as_ref().map(|t| t.status),
            Some(TaskStatus::Running) | Some(TaskStatus::Paused)
        ) {
            return;
        }
        if let Err(e) = self.remove(ns, r, true).await {
            tracing::warn!(container = %r.id, "--rm after a failed start: {e}");
        }
    }

    /// Sends a signal to the container's init (or all its processes).
    pub async fn kill(&self, ns: &str, r: &ContainerRecord, signal: i32, all: bool) -> Result<()> {
        let st = self.status(ns, r.clone()).await;
        if !st.running() && st.status() != ContainerState::Created {
            return Err(Error::Precondition(format!(
                "container {} is not running",
                r.name
            )));
        }
        self.tasks.client(ns, &r.id).kill(signal, all, None).await
    }

    /// Deletes a stopped task and keeps its container (containerd's task delete): the runtime's
    /// state and the shim go, and with them the recorded exit, which is returned and published
    /// as `/tasks/delete`. The container is `created` again; starting it makes a new task.
    pub async fn delete_task(
        &self,
        ns: &str,
        r: &ContainerRecord,
    ) -> Result<crate::shim::ExitInfo> {
        let d = &self.deps;
        let (key, lock) = self.op_lock(ns, &r.id);
        let res = async {
            let _held = lock.lock().await;
            let st = self.status(ns, r.clone()).await;
            let t = st
                .task
                .clone()
                .ok_or_else(|| Error::NotFound(format!("container {} has no task", r.name)))?;
            if t.status != crate::shim::TaskStatus::Stopped {
                return Err(Error::Precondition(format!(
                    "the task of {} is {}: kill it before deleting it",
                    r.name, t.status
                )));
            }
            let c = self.tasks.client(ns, &r.id);
            let exit =
                t.exit
                    .clone()
                    .or_else(|| c.recorded_exit())
                    .unwrap_or(crate::shim::ExitInfo {
                        pid: t.pid,
                        exit_code: 255,
                        exited_at: crate::shim::now_rfc3339(),
                    });
            self.report_exit(ns, r, &exit);
            if c.delete(true).await.is_err() {
                let rt = plugin::resolve(&d.config, Some(&r.runtime))?;
                self.tasks.runtime_delete(&rt, &r.id).await?;
                let _ = c.shutdown().await;
            }
            // the shim answers until it has quit; then only the exit record tells of the task
            for _ in 0..100 {
                if c.state().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // the rootfs is mounted again when a task is made again
            let rootfs = self.rootfs(ns, &r.id);
            if d.mounts.is_mounted(&rootfs) {
                d.mounts.unmount(&rootfs)?;
            }
            image_volumes::unmount_all(d, c.bundle())?;
            let exit_file = c.bundle().join(crate::shim::files::EXIT);
            match std::fs::remove_file(&exit_file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("removing {}", exit_file.display()), e))
                }
                _ => {}
            }
            self.client_procs.forget(ns, &r.id);
            self.events.publish(
                ns,
                "/tasks/delete",
                &[
                    ("id", r.id.clone()),
                    ("name", r.name.clone()),
                    ("pid", exit.pid.to_string()),
                    ("exit_code", exit.exit_code.to_string()),
                ],
            );
            Ok(exit)
        }
        .await;
        self.op_unlock(&key, lock);
        res
    }

    /// SIGTERM (or `signal`), then SIGKILL after `timeout`.
    pub async fn stop(
        &self,
        ns: &str,
        r: &ContainerRecord,
        timeout: Duration,
        signal: i32,
    ) -> Result<()> {
        let st = self.status(ns, r.clone()).await;
        if !st.running() && st.status() != ContainerState::Created {
            return Ok(());
        }
        let c = self.tasks.client(ns, &r.id);
        let sig = if signal == 0 { libc::SIGTERM } else { signal };
        if st.status() == ContainerState::Paused {
            let _ = c.resume().await;
        }
        let _ = c.kill(sig, false, None).await;
        if tokio::time::timeout(timeout, self.wait_exit(ns, &r.id))
            .await
            .is_err()
        {
            let _ = c.kill(libc::SIGKILL, false, None).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.wait_exit(ns, &r.id)).await;
        }
        Ok(())
    }

    /// Waits for the task to exit; returns its exit code.
    pub async fn wait_exit(&self, ns: &str, id: &str) -> Result<i32> {
        let c = self.tasks.client(ns, id);
        loop {
            match c.wait(None).await {
                Ok(e) => return Ok(e.exit_code),
                Err(_) => {
                    if let Some(e) = c.recorded_exit() {
                        return Ok(e.exit_code);
                    }
                    match self.tasks.state(ns, id).await {
                        None => {
                            return Err(Error::Precondition(format!(
                                "container {id} has no task: start it first"
                            )))
                        }
                        Some(s) if s.status == TaskStatus::Stopped => {
                            return Ok(s.exit.map(|e| e.exit_code).unwrap_or(255))
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }
    }

    /// Removes a container (with `force`, kills it first): task, runtime state, rootfs mount,
    /// snapshot, bundle and record; a `--rm` container's anonymous volumes go with it.
    pub async fn remove(&self, ns: &str, r: &ContainerRecord, force: bool) -> Result<()> {
        self.remove_with_volumes(ns, r, force, r.auto_remove).await
    }

    /// [`Manager::remove`], and with `volumes` (`rm -v`) the container's anonymous volumes
    /// that no other container uses.
    pub async fn remove_with_volumes(
        &self,
        ns: &str,
        r: &ContainerRecord,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        // one removal at a time per container (`--rm` watcher, attach and `rm -f` may race),
        // and never while it is being started (a prune racing `nook start`)
        let (key, lock) = self.op_lock(ns, &r.id);
        let res = {
            let _held = lock.lock().await;
            self.remove_locked(ns, r, force, volumes).await
        };
        self.op_unlock(&key, lock);
        res
    }

    /// The lock serializing a container's start and removal.
    pub(super) fn op_lock(&self, ns: &str, id: &str) -> (String, Arc<tokio::sync::Mutex<()>>) {
        let key = format!("{ns}/{id}");
        let mut m = self.removing.lock().unwrap_or_else(|e| e.into_inner());
        let l = m
            .entry(key.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        (key, l)
    }

    /// Drops the map's entry unless someone else still holds or waits for the lock.
    pub(super) fn op_unlock(&self, key: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut m = self.removing.lock().unwrap_or_else(|e| e.into_inner());
        // the map and `lock` itself: nobody else
        if Arc::strong_count(&lock) <= 2 {
            m.remove(key);
        }
    }

    /// Removes every container that is not running (`nook container prune`), returning them.
    /// A container whose start raced the prune is kept, as is one created in the last
    /// [`PRUNE_GRACE_SECS`] and never started (a `nook run` may be about to start it).
    pub async fn prune(&self, ns: &str) -> Result<Vec<Status>> {
        let t = now();
        let mut removed = Vec::new();
        for rec in self.records(ns)? {
            let st = self.status(ns, rec.clone()).await;
            if st.running() || (st.task.is_none() && t - rec.created_at < PRUNE_GRACE_SECS) {
                continue;
            }
            match self.remove(ns, &rec, false).await {
                Ok(()) => removed.push(st),
                // started meanwhile
                Err(Error::Precondition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    async fn remove_locked(
        &self,
        ns: &str,
        r: &ContainerRecord,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        let d = &self.deps;
        if d.store
            .get::<ContainerRecord>(CONTAINERS, ns, &r.id)?
            .is_none()
        {
            return Ok(()); // removed meanwhile
        }
        let st = self.status(ns, r.clone()).await;
        if st.running() {
            if !force {
                return Err(Error::Precondition(format!(
                    "container {} is running: stop it first (`nook stop {}`) or use -f",
                    r.name, r.name
                )));
            }
            let c = self.tasks.client(ns, &r.id);
            let _ = c.kill(libc::SIGKILL, false, None).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.wait_exit(ns, &r.id)).await;
        }
        let c = self.tasks.client(ns, &r.id);
        // the OOM verdict needs the cgroup, which the runtime's delete removes
        if let Some(e) = c.recorded_exit() {
            super::limits::after_exit(d, self, ns, r, &e);
        }
        if c.delete(true).await.is_err() {
            if let Ok(rt) = plugin::resolve(&d.config, Some(&r.runtime)) {
                if st.task.is_some() {
                    self.tasks.runtime_delete(&rt, &r.id).await?;
                }
            }
        }
        if let Some(p) = d.cgroups.container_path(&r.id) {
            d.cgroups.remove(&p);
        }
        super::limits::forget(ns, &r.id);
        // unmounting, the redb commit and the removals below block: off the async threads
        let (rootfs, d2, bundle) = (
            self.rootfs(ns, &r.id),
            d.clone(),
            self.tasks.bundle_dir(ns, &r.id),
        );
        blocking(move || {
            if d2.mounts.is_mounted(&rootfs) {
                d2.mounts.unmount(&rootfs)?;
            }
            image_volumes::unmount_all(&d2, &bundle)
        })
        .await?;
        let _gc = d.gc.lock.read().await;
        // The record goes first, in one transaction: a crash after it leaves only an
        // unreferenced snapshot (labelled nook.container, so GC collects it) and a bundle
        // directory, never a container whose snapshot is gone.
        let (store, ns2, id2) = (d.store.clone(), ns.to_string(), r.id.clone());
        let anonymous: Vec<String> = r
            .volumes
            .iter()
            .filter(|v| volumes && v.anonymous)
            .map(|v| v.name.clone())
            .collect();
        let vols = blocking(move || {
            store.write(|tx| {
                tx.delete(CONTAINERS, &ns2, &id2)?;
                // with the record, the anonymous volumes no other container mounts
                let mut gone = Vec::new();
                for v in anonymous {
                    if super::volume_users(tx, &ns2, &v)?.is_empty()
                        && crate::volumes::Volumes::delete_record(tx, &ns2, &v)?
                    {
                        gone.push(v);
                    }
                }
                Ok(gone)
            })
        })
        .await?;
        for v in vols {
            let (vs, ns2) = (d.volumes.clone(), ns.to_string());
            if let Err(e) = blocking(move || vs.remove_data(&ns2, &v)).await {
                tracing::warn!(container = %r.id, "removing its anonymous volume: {e} (removed at the next start)");
            }
        }
        d.gc.mutated(true);
        // its networks go before the removal is announced: whoever waits for it (`docker run
        // --rm`'s wait for "removed") may remove the network next
        detach_network(d, ns, &r.id).await;
        if st.task.is_some() {
            let exit = self.tasks.client(ns, &r.id).recorded_exit();
            if let Some(e) = &exit {
                self.report_exit(ns, r, e);
            }
            self.client_procs.forget(ns, &r.id);
            self.events.publish(
                ns,
                "/tasks/delete",
                &[
                    ("id", r.id.clone()),
                    ("name", r.name.clone()),
                    (
                        "exit_code",
                        exit.map(|e| e.exit_code)
                            .unwrap_or(st.exit_code())
                            .to_string(),
                    ),
                ],
            );
        }
        self.client_procs.forget(ns, &r.id);
        self.exits_reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("{ns}/{}", r.id));
        self.events.publish(
            ns,
            "/containers/delete",
            &[("id", r.id.clone()), ("name", r.name.clone())],
        );
        // a containerd client's snapshot is the client's to remove (containerd's semantics)
        let sn = d
            .snapshotters
            .get(Some(&r.snapshotter))
            .ok()
            .filter(|_| r.client.is_none());
        if let Some(sn) = sn {
            let (ns2, key) = (ns.to_string(), r.snapshot_key.clone());
            // a writable layer may hold many files: its remove_dir_all takes seconds
            match blocking(move || crate::snapshot::Snapshotter::remove(sn.as_ref(), &ns2, &key))
                .await
            {
                Err(Error::NotFound(_)) | Ok(()) => {}
                Err(e) => {
                    tracing::warn!(container = %r.id, "removing its snapshot: {e} (GC will retry)")
                }
            }
        }
        let (tasks, ns2, id2) = (self.tasks.clone(), ns.to_string(), r.id.clone());
        blocking(move || tasks.remove_bundle(&ns2, &id2)).await?;
        Ok(())
    }

    /// Processes of the container: pid, uid (in nookd's namespace), command line.
    pub async fn top(&self, ns: &str, r: &ContainerRecord) -> Result<Vec<Vec<String>>> {
        let pids = self.tasks.client(ns, &r.id).pids().await?;
        Ok(pids
            .into_iter()
            .map(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|b| {
                        b.split(|c| *c == 0)
                            .filter(|s| !s.is_empty())
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let uid = std::fs::read_to_string(format!("/proc/{p}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("Uid:"))
                            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
                    })
                    .unwrap_or_default();
                vec![p.to_string(), uid, cmd]
            })
            .collect())
    }

    /// The process spec of an exec, from the container's: args, env, user, workdir, tty.
    #[allow(clippy::too_many_arguments)]
    pub fn exec_process(
        &self,
        ns: &str,
        r: &ContainerRecord,
        args: &[String],
        env: &[String],
        user: &str,
        workdir: &str,
        tty: bool,
    ) -> Result<serde_json::Value> {
        if args.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        let mut p = r.spec["process"].clone();
        p["args"] = serde_json::json!(args);
        p["terminal"] = serde_json::json!(tty);
        let base: Vec<String> = p["env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut merged = spec::merge_env(&base, env);
        if tty && !merged.iter().any(|e| e.starts_with("TERM=")) {
            merged.push("TERM=xterm".into());
        }
        p["env"] = serde_json::json!(merged);
        if !workdir.is_empty() {
            if !workdir.starts_with('/') {
                return Err(Error::InvalidArgument(format!(
                    "the working directory {workdir:?} must be absolute"
                )));
            }
            p["cwd"] = serde_json::json!(workdir);
        }
        if !user.is_empty() {
            let u = super::user::resolve_user(&self.rootfs(ns, &r.id), user)?;
            let mut uj = serde_json::json!({"uid": u.uid, "gid": u.gid});
            if !u.additional_gids.is_empty() {
                uj["additionalGids"] = serde_json::json!(u.additional_gids);
            }
            p["user"] = uj;
        }
        if let Some(o) = p.as_object_mut() {
            o.remove("consoleSize");
        }
        Ok(p)
    }
}
