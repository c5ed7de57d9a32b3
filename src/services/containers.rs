//! The containers and tasks service: the operations a front door offers on containers, over
//! the containers' manager ([`crate::runtime::containers::Manager`]). What used to sit in the
//! gRPC layer lives here, so that every front door behaves the same: following a log, the
//! restart-policy consequence of a signal, pause/resume's diagnosis of a missing freezer, and
//! prune followed by a collection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Gc, Pruned};
use crate::error::{Error, Result};
use crate::events::Publisher;
use crate::runtime::containers::{ContainerRecord, ContainerState, Manager, Status};
use crate::shim::LogLine;

/// Containers and their tasks.
pub struct Containers {
    manager: Arc<Manager>,
    gc: Arc<Gc>,
    events: Publisher,
}

/// The signal `kill` sends when none is given.
pub const DEFAULT_KILL_SIGNAL: i32 = libc::SIGKILL;

/// Whether `signal` is one that ends a container, so that its restart policy must not bring
/// it back (docker's rule: a user's kill is a user's stop).
pub fn ends_the_container(signal: i32) -> bool {
    matches!(
        signal,
        libc::SIGKILL | libc::SIGTERM | libc::SIGINT | libc::SIGQUIT
    )
}

impl Containers {
    pub fn new(manager: Arc<Manager>, gc: Arc<Gc>, events: Publisher) -> Containers {
        Containers {
            manager,
            gc,
            events,
        }
    }

    /// The manager underneath (create, start, exec, attach, …).
    pub fn manager(&self) -> &Arc<Manager> {
        &self.manager
    }

    /// Sends `signal` (0: SIGKILL) to the task's init, or to all its processes. A signal that
    /// ends the container counts as the user stopping it: its restart policy stays quiet.
    pub async fn kill(&self, ns: &str, r: &ContainerRecord, signal: i32, all: bool) -> Result<()> {
        let signal = if signal == 0 {
            DEFAULT_KILL_SIGNAL
        } else {
            signal
        };
        if ends_the_container(signal) {
            self.manager.user_stopped(ns, r)?;
        }
        self.manager.kill(ns, r, signal, all).await
    }

    /// Freezes (`pause`) or thaws the task; publishes `/tasks/paused` or `/tasks/resumed`. A
    /// runtime that cannot freeze for want of the cgroup freezer is a precondition error that
    /// says so.
    pub async fn pause(&self, ns: &str, r: &ContainerRecord, pause: bool) -> Result<()> {
        self.manager
            .deps()
            .cgroups
            .require_freezer(if pause { "pause" } else { "unpause" })?;
        let st = self.manager.status(ns, r.clone()).await;
        match (pause, st.status()) {
            (true, ContainerState::Running) | (false, ContainerState::Paused) => {}
            (true, ContainerState::Paused) => {
                return Err(Error::Precondition(format!(
                    "container {} is already paused",
                    r.name
                )))
            }
            (false, ContainerState::Running) => {
                return Err(Error::Precondition(format!(
                    "container {} is not paused",
                    r.name
                )))
            }
            _ => {
                return Err(Error::Precondition(format!(
                    "container {} is not running",
                    r.name
                )))
            }
        }
        let c = self.manager.tasks.client(ns, &r.id);
        let res = if pause {
            c.pause().await
        } else {
            c.resume().await
        };
        match res {
            Ok(()) => {
                self.events.publish(
                    ns,
                    if pause {
                        "/tasks/paused"
                    } else {
                        "/tasks/resumed"
                    },
                    &[("id", r.id.clone()), ("name", r.name.clone())],
                );
                Ok(())
            }
            Err(e) => {
                // the runtime's own words are all we get from the shim
                let msg = e.to_string();
                if msg.contains("cgroup") || msg.contains("freezer") {
                    Err(Error::Precondition(format!(
                        "{} needs cgroup delegation (the freezer controller), which this user does not have: {msg}",
                        if pause { "pause" } else { "resume" }
                    )))
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The container's log: the last `tail` lines (all with `None`), then, with `follow`, new
    /// lines as they are written until the task ends or the receiver is dropped.
    pub fn logs(
        &self,
        ns: &str,
        r: &ContainerRecord,
        tail: Option<usize>,
        follow: bool,
        resume_at: u64,
        merge: bool,
    ) -> mpsc::Receiver<Result<LogEntry>> {
        let bundle = self.manager.tasks.bundle_dir(ns, &r.id);
        // opened here, before the caller goes on: what is written to it can still be read
        // after the container is removed (docker-py's containers.run removes the container
        // before it reads the logs it asked for)
        let file = std::fs::File::open(bundle.join(crate::shim::files::LOG)).ok();
        let (tx, rx) = mpsc::channel(256);
        let (m, ns, id) = (self.manager.clone(), ns.to_string(), r.id.clone());
        let opts = LogOpts {
            tail,
            follow,
            resume_at,
            merge,
        };
        tokio::spawn(async move {
            follow_log(m, ns, id, bundle, file, opts, tx).await;
        });
        rx
    }

    /// Connects a container (created, running or stopped) to one more network, where peers
    /// reach it by its name and `aliases`: a veth pair into its namespace, made live.
    pub async fn connect(
        &self,
        ns: &str,
        r: &ContainerRecord,
        network: &str,
        aliases: Vec<String>,
    ) -> Result<()> {
        let (net, ns, id, network) = (
            self.manager.deps().network.clone(),
            ns.to_string(),
            r.id.clone(),
            network.to_string(),
        );
        tokio::task::spawn_blocking(move || net.connect(&ns, &id, &network, &aliases))
            .await
            .map_err(|e| Error::Internal(format!("connecting the network: {e}")))?
    }

    /// Disconnects a container from a network (its first one too: the next takes its place,
    /// or only `lo` is left until it is connected again).
    pub async fn disconnect(&self, ns: &str, r: &ContainerRecord, network: &str) -> Result<()> {
        let (net, ns, id, network) = (
            self.manager.deps().network.clone(),
            ns.to_string(),
            r.id.clone(),
            network.to_string(),
        );
        tokio::task::spawn_blocking(move || net.disconnect(&ns, &id, &network))
            .await
            .map_err(|e| Error::Internal(format!("disconnecting the network: {e}")))?
    }

    /// Gives a container a new name (`docker rename`): unique in the namespace, checked in
    /// the transaction that writes it; its network attachment and its peers' /etc/hosts
    /// follow. Publishes `/containers/rename`.
    pub async fn rename(&self, ns: &str, r: &ContainerRecord, name: &str) -> Result<()> {
        let name = name.trim_start_matches('/').to_string();
        crate::runtime::containers::validate_name(&name)?;
        let d = self.manager.deps().clone();
        let (ns2, id, name2) = (ns.to_string(), r.id.clone(), name.clone());
        let old = crate::runtime::containers::blocking(move || {
            let old = d.store.write(|tx| {
                let all = tx.list::<ContainerRecord>(crate::metadata::CONTAINERS, &ns2)?;
                if let Some((_, holder)) = all.iter().find(|(_, c)| c.name == name2 && c.id != id) {
                    return Err(Error::AlreadyExists(format!(
                        "the container name {name2:?} is in use by container {}: remove or rename that one first",
                        &holder.id[..12.min(holder.id.len())]
                    )));
                }
                let Some((_, mut rec)) = all.into_iter().find(|(_, c)| c.id == id) else {
                    return Err(Error::NotFound(format!("no such container {id:?}")));
                };
                let old = std::mem::replace(&mut rec.name, name2.clone());
                tx.put(crate::metadata::CONTAINERS, &ns2, &id, &rec)?;
                Ok(old)
            })?;
            if let Err(e) = d.network.rename(&ns2, &id, &name2) {
                tracing::warn!(container = %id, "renaming its network attachment: {e}");
            }
            Ok(old)
        })
        .await?;
        self.events.publish(
            ns,
            "/containers/rename",
            &[("id", r.id.clone()), ("name", name), ("oldName", old)],
        );
        Ok(())
    }

    /// What the container changed in its writable layer against its image (`docker diff`),
    /// leaving out the mount points the runtime made for its mounts.
    pub async fn changes(
        &self,
        ns: &str,
        r: &ContainerRecord,
    ) -> Result<Vec<(String, crate::snapshot::changes::Change)>> {
        let d = self.manager.deps().clone();
        let r = r.clone();
        let ns = ns.to_string();
        crate::runtime::containers::blocking(move || {
            let sn = d.snapshotters.get(Some(&r.snapshotter))?;
            let mounts = crate::snapshot::Snapshotter::mounts(sn.as_ref(), &ns, &r.snapshot_key)?;
            let (upper, lowers) = crate::snapshot::changes::layers(&mounts)?;
            let targets: Vec<String> = r.spec["mounts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m["destination"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let under = |p: &str| {
                targets
                    .iter()
                    .any(|t| p == t || p.starts_with(&format!("{}/", t.trim_end_matches('/'))))
            };
            Ok(crate::snapshot::changes::changes(&upper, &lowers)?
                .into_iter()
                .filter(|(p, c)| !(under(p) && *c != crate::snapshot::changes::Change::Deleted))
                .collect())
        })
        .await
    }

    /// Sets a container's restart policy (`docker update --restart`); refused for a `--rm`
    /// container, which cannot be restarted.
    pub async fn set_restart_policy(
        &self,
        ns: &str,
        r: &ContainerRecord,
        policy: &str,
    ) -> Result<()> {
        let policy = crate::runtime::restart::RestartPolicy::parse(policy)?;
        let d = self.manager.deps().clone();
        let (ns2, id) = (ns.to_string(), r.id.clone());
        crate::runtime::containers::blocking(move || {
            d.store.write(|tx| {
                let Some(mut rec) =
                    tx.get::<ContainerRecord>(crate::metadata::CONTAINERS, &ns2, &id)?
                else {
                    return Err(Error::NotFound(format!("no such container {id:?}")));
                };
                if rec.auto_remove && policy != crate::runtime::restart::RestartPolicy::No {
                    return Err(Error::InvalidArgument(format!(
                        "container {} was started with --rm, which cannot go with a restart policy",
                        rec.name
                    )));
                }
                rec.restart_policy = policy;
                tx.put(crate::metadata::CONTAINERS, &ns2, &id, &rec)
            })
        })
        .await
    }

    /// Runs `args` in the running container and collects its output: (exit code, stdout,
    /// stderr). With a `timeout`, a process still running then is killed and the answer is
    /// None (CRI's ExecSync).
    pub async fn exec_sync(
        &self,
        ns: &str,
        r: &ContainerRecord,
        args: &[String],
        timeout: Option<Duration>,
    ) -> Result<Option<(i32, Vec<u8>, Vec<u8>)>> {
        let st = self.manager.status(ns, r.clone()).await;
        if st.status() != ContainerState::Running {
            return Err(Error::Precondition(format!(
                "container {} is not running",
                r.name
            )));
        }
        let process = self.manager.exec_process(ns, r, args, &[], "", "", false)?;
        let exec_id = crate::runtime::containers::new_id()[..16].to_string();
        let client = self.manager.tasks.client(ns, &r.id);
        let (_pid, stream) = client.exec(&exec_id, process, false, false).await?;
        let (mut events, mut input) = stream.split();
        input.client_gone().await;
        let collect = async {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            while let Some(ev) = events.next().await? {
                match ev {
                    crate::shim::Event::Out {
                        stderr: false,
                        data,
                    } => out.extend_from_slice(&data),
                    crate::shim::Event::Out { stderr: true, data } => err.extend_from_slice(&data),
                    crate::shim::Event::Exit(e) => return Ok((e.exit_code, out, err)),
                }
            }
            Err(Error::Unavailable(format!(
                "the shim of {} ended the exec without its exit status",
                r.name
            )))
        };
        match timeout {
            None => collect.await.map(Some),
            Some(t) => match tokio::time::timeout(t, collect).await {
                Ok(r) => r.map(Some),
                Err(_) => {
                    let _ = client.kill(libc::SIGKILL, false, Some(exec_id)).await;
                    Ok(None)
                }
            },
        }
    }

    /// Removes every stopped container of `ns` (created ones older than the grace), then
    /// collects what they held; reports them and the space freed.
    pub async fn prune(&self, ns: &str) -> Result<Pruned<Status>> {
        let before = self.gc.disk_total().await;
        let removed = self.manager.prune(ns).await?;
        self.gc.collect_now().await?;
        let after = self.gc.disk_total().await;
        Ok(Pruned {
            removed,
            reclaimed_bytes: before.saturating_sub(after),
        })
    }
}

/// One item of a log stream: output of one stream (consecutive entries joined when merging)
/// with the log's byte offset after it, or the stream's end.
#[derive(Debug, Clone, Default)]
pub struct LogEntry {
    /// RFC 3339 time of the (first) entry.
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The bytes written.
    pub data: Vec<u8>,
    /// The log's byte offset after this entry: where a cut stream goes on.
    pub offset: u64,
    /// The stream is complete (a stream cut without it, by nookd's end, may be resumed).
    pub end: bool,
}

/// What a log stream reads.
struct LogOpts {
    tail: Option<usize>,
    follow: bool,
    resume_at: u64,
    merge: bool,
}

/// Log lines into entries: one each, or with `merge` consecutive ones of a stream joined (up to
/// 64 KiB).
struct LogBatch {
    merge: bool,
    cur: Option<LogEntry>,
}

impl LogBatch {
    /// Adds a line; returns an entry ready to send, if one is.
    fn push(&mut self, l: LogLine, offset: u64) -> Option<LogEntry> {
        if let Some(c) = &mut self.cur {
            if self.merge && c.stream == l.stream && c.data.len() < 64 << 10 {
                c.data.extend_from_slice(&l.bytes());
                c.offset = offset;
                return None;
            }
        }
        let next = LogEntry {
            time: l.time.clone(),
            stream: l.stream.clone(),
            data: l.bytes(),
            offset,
            end: false,
        };
        self.cur.replace(next)
    }
}

async fn follow_log(
    m: Arc<Manager>,
    ns: String,
    id: String,
    bundle: PathBuf,
    mut file: Option<std::fs::File>,
    o: LogOpts,
    tx: mpsc::Sender<Result<LogEntry>>,
) {
    use std::io::{BufRead, Seek};
    let log = bundle.join(crate::shim::files::LOG);
    let end = |offset| LogEntry {
        offset,
        end: true,
        ..Default::default()
    };
    let mut batch = LogBatch {
        merge: o.merge,
        cur: None,
    };
    // the first part: the tail of what is there (unless resuming a cut stream)
    let mut pos = o.resume_at;
    if o.resume_at == 0 {
        let (lines, at) = match crate::runtime::task::read_open_log(file.as_ref(), o.tail) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        pos = at;
        for (line, offset) in lines {
            if let Some(e) = batch.push(line, offset) {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        }
        if let Some(e) = batch.cur.take() {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
    }
    if !o.follow {
        let _ = tx.send(Ok(end(pos))).await;
        return;
    }
    loop {
        // until the container stopped and its last output is in the log
        let running = m
            .tasks
            .state(&ns, &id)
            .await
            .is_some_and(|s| s.status != crate::shim::TaskStatus::Stopped || !s.drained);
        if file.is_none() {
            // a container whose task had not written its log yet
            file = std::fs::File::open(&log).ok();
        }
        if let Some(mut f) = file.as_ref() {
            if f.seek(std::io::SeekFrom::Start(pos)).is_ok() {
                let mut rd = std::io::BufReader::new(f);
                let mut line = Vec::new();
                while rd.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    if !line.ends_with(b"\n") {
                        break; // a partial line: read it whole next time
                    }
                    pos += line.len() as u64;
                    if let Some(l) = LogLine::parse(&line[..line.len() - 1]) {
                        if let Some(e) = batch.push(l, pos) {
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                    line.clear();
                }
                if let Some(e) = batch.cur.take() {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
            }
        }
        if !running {
            let _ = tx.send(Ok(end(pos))).await;
            return;
        }
        if tx.is_closed() {
            return;
        }
        if m.deps().events.shutting_down() {
            // cut without its end, as a stopped nookd's stream is (`nook logs -f` goes on
            // with the next nookd): a follower would hold up the shutdown for its grace
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
