//! Containers (metadata records) and their tasks, as nookd manages them: create from an image
//! (unpacked into a snapshot mounted at `<bundle>/rootfs`), start through a shim, stop, remove,
//! and find again after a restart. The gRPC service (the `api` module) is a thin layer over this.
//!
//! A container record lives in the CONTAINERS bucket as `<ns>/<id>`; its `snapshotter` and
//! `snapshot_key` fields keep its snapshot from garbage collection. The task's live state is
//! never stored: it is asked from the shim (or read from its exit record), so a restarted
//! nookd sees exactly what is running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::deps::{blocking, Deps};
use super::plugin;
use super::restart::{self, RestartPolicy};
use super::spec::{self, BindMount, ImageConfig, Network, SpecOptions, TmpfsMount};
use super::task::{self, EtcFiles, Tasks};
use crate::error::{Error, Result};
use crate::metadata::CONTAINERS;
use crate::shim::{TaskState, TaskStatus};

/// A container's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// The image name as stored (normalized) and its target digest.
    pub image: String,
    #[serde(default)]
    pub image_digest: String,
    pub snapshotter: String,
    pub snapshot_key: String,
    /// Runtime name (a key of `[runtimes]`).
    pub runtime: String,
    /// The OCI spec (config.json).
    pub spec: serde_json::Value,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub auto_remove: bool,
    /// `--restart`.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Times nookd restarted it under its policy since the user last started it.
    #[serde(default)]
    pub restart_count: u32,
    /// The user stopped or killed it (`nook stop`, `nook kill`): no restart under the policy.
    #[serde(default)]
    pub stopped_by_user: bool,
    /// It was started at least once (a container only created is not started at boot).
    #[serde(default)]
    pub has_been_started: bool,
    /// Resource limits (`--memory`, `--cpus`, …; changed by `nook update`).
    #[serde(default)]
    pub limits: super::limits::Limits,
    /// The kernel's OOM killer killed in it during its last run.
    #[serde(default)]
    pub oom_killed: bool,
}

impl ContainerRecord {
    /// The process arguments.
    pub fn command(&self) -> Vec<String> {
        self.spec["process"]["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What `create` needs beyond [`SpecOptions`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub image: String,
    pub name: String,
    pub runtime: String,
    pub snapshotter: String,
    pub args: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub hostname: String,
    pub read_only: bool,
    pub tty: bool,
    pub stdin: bool,
    pub volumes: Vec<String>,
    pub tmpfs: Vec<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub security_opt: Vec<String>,
    pub seccomp_profiles: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub auto_remove: bool,
    pub network: String,
    /// `-p` values ([HOSTIP:]HOSTPORT:PORT[/PROTO], PORT, ranges).
    pub publish: Vec<String>,
    /// `--restart` (no, on-failure[:N], always, unless-stopped).
    pub restart: String,
    /// `--port-driver` (relay, direct; "" = the configured default).
    pub port_driver: String,
    /// Resource limits, `--shm-size`, `--oom-score-adj`.
    pub limits: super::limits::Limits,
    /// `-P`: publish every port the image exposes on a free host port.
    pub publish_all: bool,
    /// `--init`: tini as pid 1.
    pub init: bool,
    /// `--group-add` (group names of the image, or gids).
    pub group_add: Vec<String>,
    /// `--ulimit NAME=SOFT[:HARD]`.
    pub ulimits: Vec<String>,
}

/// A container with its task's state.
#[derive(Debug, Clone)]
pub struct Status {
    pub record: ContainerRecord,
    pub task: Option<TaskState>,
}

/// A container's state as `nook ps` shows it: its task's, with `exited` for a stopped task
/// and `created` when there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Exited,
    Unknown,
}

impl ContainerState {
    /// `created`, `running`, `paused`, `exited` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Status {
    /// The container's state.
    pub fn status(&self) -> ContainerState {
        match self.task.as_ref().map(|t| t.status) {
            None | Some(TaskStatus::Created) => ContainerState::Created,
            Some(TaskStatus::Stopped) => ContainerState::Exited,
            Some(TaskStatus::Running) => ContainerState::Running,
            Some(TaskStatus::Paused) => ContainerState::Paused,
            Some(TaskStatus::Unknown) => ContainerState::Unknown,
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.task
            .as_ref()
            .and_then(|t| t.exit.as_ref())
            .map(|e| e.exit_code)
            .unwrap_or(0)
    }

    pub fn running(&self) -> bool {
        matches!(
            self.status(),
            ContainerState::Running | ContainerState::Paused
        )
    }
}

/// How long a created, never started container is spared by prune.
pub const PRUNE_GRACE_SECS: i64 = 30;

/// The containers' manager inside nookd.
pub struct Manager {
    pub tasks: Tasks,
    removing: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Tasks watched by [`Manager::monitor`] (`<ns>/<id>`).
    monitored: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The last exit reported per container (`<ns>/<id>` → exited_at), so that each exit is
    /// published once whoever sees it first.
    exits_reported: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The last restart delay per container (`<ns>/<id>`), see [`restart::next_delay`].
    backoff: std::sync::Mutex<std::collections::HashMap<String, Duration>>,
    /// Where `/containers/*` and `/tasks/*` events go.
    events: crate::events::Publisher,
    /// The stores, snapshotters, network and configuration it works with.
    deps: Arc<Deps>,
    /// Itself, for the tasks it spawns (exit watchers, restarts, auto-removal).
    me: std::sync::Weak<Manager>,
}

impl Manager {
    /// The manager over `deps`; fails when nook-shim cannot be found.
    /// What it works with.
    pub fn deps(&self) -> &Arc<Deps> {
        &self.deps
    }

    pub fn new(deps: Deps) -> Result<Arc<Manager>> {
        let shim = task::find_shim()?;
        Ok(Arc::new_cyclic(|me| Manager {
            tasks: Tasks::new(&deps.paths.state, shim),
            removing: Default::default(),
            monitored: Default::default(),
            exits_reported: Default::default(),
            backoff: Default::default(),
            events: deps.events.clone(),
            deps: Arc::new(deps),
            me: me.clone(),
        }))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A random 64-hex id.
pub fn new_id() -> String {
    let b: [u8; 32] = rand::random();
    hex::encode(b)
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nimble", "proud", "quiet", "rapid", "sunny", "tender", "vivid", "witty", "zen", "bold",
];
const NOUNS: &[&str] = &[
    "otter", "badger", "heron", "lynx", "marten", "newt", "owl", "puffin", "quail", "raven",
    "seal", "tern", "vole", "wren", "yak", "zebu", "bison", "crane", "dingo", "egret",
];

/// Checks a user-given container name (docker's rule).
pub fn validate_name(name: &str) -> Result<()> {
    if crate::metadata::is_docker_name(name, 128) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid container name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        )))
    }
}

impl Manager {
    /// Every container of `ns`.
    pub fn records(&self, ns: &str) -> Result<Vec<ContainerRecord>> {
        let d = &self.deps;
        Ok(d.store
            .list::<ContainerRecord>(CONTAINERS, ns)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Finds a container by id, name or unique id prefix.
    pub fn find(&self, ns: &str, what: &str) -> Result<ContainerRecord> {
        if what.is_empty() {
            return Err(Error::InvalidArgument("no container given".into()));
        }
        let all = self.records(ns)?;
        if let Some(r) = all.iter().find(|r| r.id == what || r.name == what) {
            return Ok(r.clone());
        }
        let matches: Vec<&ContainerRecord> =
            all.iter().filter(|r| r.id.starts_with(what)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NotFound(format!(
                "no such container {what:?} in namespace {ns:?} (see `nook ps -a`)"
            ))),
            _ => Err(Error::InvalidArgument(format!(
                "{what:?} matches several containers: give more of the id, or the name"
            ))),
        }
    }

    /// The container and its task state.
    pub async fn status(&self, ns: &str, r: ContainerRecord) -> Status {
        let task = self.tasks.state(ns, &r.id).await;
        Status { record: r, task }
    }

    fn rootfs(&self, ns: &str, id: &str) -> PathBuf {
        self.tasks.bundle_dir(ns, id).join("rootfs")
    }

    /// Creates a container: unpacks the image if needed, prepares and mounts its snapshot,
    /// builds its OCI spec, and records it.
    pub async fn create(&self, ns: &str, o: CreateOptions) -> Result<ContainerRecord> {
        let d = &self.deps;
        d.store.require_namespace(ns)?;
        let rt = plugin::resolve(&d.config, Some(&o.runtime))?;
        let name = if o.name.is_empty() {
            self.generate_name(ns)?
        } else {
            validate_name(&o.name)?;
            o.name.clone()
        };
        if self.records(ns)?.iter().any(|r| r.name == name) {
            return Err(Error::AlreadyExists(format!(
                "the container name {name:?} is in use: remove that container (`nook rm {name}`) or choose another --name"
            )));
        }
        // parse what can be checked before any work
        let binds: Vec<BindMount> = o
            .volumes
            .iter()
            .map(|v| BindMount::parse(v))
            .collect::<Result<_>>()?;
        let tmpfs: Vec<TmpfsMount> = o
            .tmpfs
            .iter()
            .map(|t| TmpfsMount::parse(t))
            .collect::<Result<_>>()?;
        spec::capability_set(o.privileged, &o.cap_add, &o.cap_drop)?;
        let ulimits: Vec<spec::Ulimit> = o
            .ulimits
            .iter()
            .map(|u| spec::Ulimit::parse(u))
            .collect::<Result<_>>()?;
        for u in &ulimits {
            u.check_allowed()?;
        }
        let init = if o.init {
            Some(spec::find_init()?)
        } else {
            None
        };
        let mut publish = o.publish.clone();
        if o.publish_all {
            publish.extend(exposed_ports_to_publish(d, ns, &o.image, &o.publish)?);
        }
        let ports = crate::network::ports::parse_all(&publish)?;
        let port_driver = if o.port_driver.is_empty() {
            d.config.network.port_driver.as_str()
        } else {
            o.port_driver.as_str()
        };
        if !crate::network::ports::PORT_DRIVERS.contains(&port_driver) {
            return Err(Error::InvalidArgument(format!(
                "unknown port driver {port_driver:?}: use relay or direct"
            )));
        }
        let direct = port_driver == "direct" && !ports.is_empty();
        if let Some(why) = direct.then(crate::shim::direct::unsupported).flatten() {
            return Err(Error::Precondition(why));
        }
        let restart_policy = RestartPolicy::parse(&o.restart)?;
        o.limits.check(&d.cgroups)?;
        super::limits::check_runtime(&d.cgroups, &o.limits.resources, &rt)?;
        if o.auto_remove && restart_policy != RestartPolicy::No {
            return Err(Error::InvalidArgument(format!(
                "--restart {restart_policy} and --rm do not go together: a container removed when it exits cannot be restarted; drop one of them"
            )));
        }

        let id = new_id();
        let _gc = d.gc.lock.read().await;
        let bundle = self.tasks.bundle_dir(ns, &id);
        let rootfs = bundle.join("rootfs");
        let rootfs2 = rootfs.clone();
        let hostname = if o.hostname.is_empty() {
            id[..12].to_string()
        } else {
            o.hostname.clone()
        };
        // the container's network first: its namespace path goes into the spec, and its
        // /etc/hosts and resolv.conf into the bundle
        let req = crate::network::AttachRequest {
            container_name: name.clone(),
            hostname: hostname.clone(),
            network: o.network.clone(),
            hosts_path: Some(bundle.join(task::HOSTS_FILE)),
            ports,
            direct,
        };
        let (d2, ns2, id2) = (d.clone(), ns.to_string(), id.clone());
        let att = tokio::task::spawn_blocking(move || d2.network.attach(&ns2, &id2, &req))
            .await
            .map_err(|e| Error::Internal(format!("attaching the network: {e}")))??;
        let mut etc = EtcFiles::defaults(
            &hostname,
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            Some(SLIRP_DNS),
        );
        etc.hosts = att.hosts.clone();
        etc.resolv = att.resolv_conf.clone();
        if let Err(e) = self.tasks.prepare_bundle(ns, &id, &etc) {
            detach_network(d, ns, &id).await;
            return Err(e);
        }
        let (d2, ns2, img_name, sn_name, id2) = (
            d.clone(),
            ns.to_string(),
            o.image.clone(),
            o.snapshotter.clone(),
            id.clone(),
        );
        let prepared = tokio::task::spawn_blocking(move || {
            prepare_rootfs(&d2, &ns2, &img_name, &sn_name, &id2, &rootfs2)
        })
        .await
        .map_err(|e| Error::Internal(format!("preparing the rootfs: {e}")))?;
        let (image_name, image_digest, img_cfg, snapshotter) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = self.tasks.remove_bundle(ns, &id);
                detach_network(d, ns, &id).await;
                return Err(e);
            }
        };

        let mut so = SpecOptions::new(&id, &rootfs);
        so.args = o.args.clone();
        so.entrypoint = o.entrypoint.clone();
        so.env = o.env.clone();
        so.workdir = Some(o.workdir.clone()).filter(|w| !w.is_empty());
        so.user = Some(o.user.clone()).filter(|u| !u.is_empty());
        so.hostname = Some(o.hostname.clone()).filter(|h| !h.is_empty());
        so.read_only = o.read_only;
        so.tty = o.tty;
        so.binds = binds;
        so.tmpfs = tmpfs;
        so.cap_add = o.cap_add.clone();
        so.cap_drop = o.cap_drop.clone();
        so.ulimits = ulimits;
        so.group_add = o.group_add.clone();
        so.init = init;
        so.privileged = o.privileged;
        so.labels = o.labels.clone();
        so.network = Network::Path(att.netns_path.clone());
        so.hostname_file = Some(bundle.join(task::HOSTNAME_FILE));
        so.hosts_file = Some(bundle.join(task::HOSTS_FILE));
        so.resolv_file = Some(bundle.join(task::RESOLV_FILE));
        let built = (|| {
            for opt in &o.security_opt {
                so.apply_security_opt(opt, |p| {
                    o.seccomp_profiles.get(p).cloned().ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "seccomp profile {p:?} was not sent by the client"
                        ))
                    })
                })?;
            }
            let mut spec = serde_json::to_value(spec::build_spec(&img_cfg, &so)?)?;
            o.limits
                .apply(&mut spec, d.cgroups.container_path(&id).as_deref());
            if direct
                && !crate::runtime::seccomp::notify_bind(
                    &mut spec,
                    &crate::shim::direct::listener_path(&bundle),
                )
            {
                return Err(Error::InvalidArgument(
                    "--port-driver direct needs the container's bind(2) calls, but its seccomp profile restricts bind: use --port-driver relay".into(),
                ));
            }
            Ok(spec)
        })();
        let spec = match built {
            Ok(s) => s,
            Err(e) => {
                self.abort_create(ns, &id, &snapshotter).await;
                return Err(e);
            }
        };
        // -v sources must exist: create missing directories as docker does
        for b in &so.binds {
            if !b.source.exists() {
                if let Err(e) = std::fs::create_dir_all(&b.source) {
                    self.abort_create(ns, &id, &snapshotter).await;
                    return Err(Error::io(
                        format!("creating the volume source {}", b.source.display()),
                        e,
                    ));
                }
            }
        }
        let rec = ContainerRecord {
            id: id.clone(),
            name: name.clone(),
            image: image_name,
            image_digest,
            snapshotter: snapshotter.clone(),
            snapshot_key: id.clone(),
            runtime: rt.name.clone(),
            spec,
            labels: o.labels.clone(),
            created_at: now(),
            tty: o.tty,
            stdin: o.stdin,
            auto_remove: o.auto_remove,
            restart_policy,
            restart_count: 0,
            stopped_by_user: false,
            has_been_started: false,
            limits: o.limits.clone(),
            oom_killed: false,
        };
        let res = d.store.write(|tx| {
            // names are unique per namespace: check again inside the transaction
            for (_, r) in tx_list(tx, ns)? {
                if r.name == name {
                    return Err(Error::AlreadyExists(format!(
                        "the container name {name:?} is in use"
                    )));
                }
            }
            tx.put(CONTAINERS, ns, &id, &rec)
        });
        if let Err(e) = res {
            self.abort_create(ns, &id, &snapshotter).await;
            return Err(e);
        }
        let written = runtime_spec(d, &rec).and_then(|s| self.tasks.write_spec(&bundle, &s));
        if let Err(e) = written {
            let _ = self.remove(ns, &rec, true).await;
            return Err(e);
        }
        d.gc.mutated(false);
        self.events.publish(
            ns,
            "/containers/create",
            &[
                ("id", rec.id.clone()),
                ("name", rec.name.clone()),
                ("image", rec.image.clone()),
                ("runtime", rec.runtime.clone()),
            ],
        );
        Ok(rec)
    }

    async fn abort_create(&self, ns: &str, id: &str, snapshotter: &str) {
        let d = &self.deps;
        let rootfs = self.rootfs(ns, id);
        let _ = crate::snapshot::mount::unmount(&rootfs);
        if let Ok(sn) = d.snapshotters.get(Some(snapshotter)) {
            let _ = crate::snapshot::Snapshotter::remove(sn.as_ref(), ns, id);
        }
        let _ = self.tasks.remove_bundle(ns, id);
        detach_network(d, ns, id).await;
    }

    fn generate_name(&self, ns: &str) -> Result<String> {
        let taken: Vec<String> = self.records(ns)?.into_iter().map(|r| r.name).collect();
        for _ in 0..100 {
            let a = ADJECTIVES[rand::random_range(0..ADJECTIVES.len())];
            let n = NOUNS[rand::random_range(0..NOUNS.len())];
            let name = format!("{a}_{n}");
            if !taken.contains(&name) {
                return Ok(name);
            }
        }
        Ok(format!("nook_{}", &new_id()[..8]))
    }

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
            if !is_mountpoint(&rootfs) {
                let sn = d.snapshotters.get(Some(&r.snapshotter))?;
                let mounts =
                    crate::snapshot::Snapshotter::mounts(sn.as_ref(), ns, &r.snapshot_key)?;
                std::fs::create_dir_all(&rootfs)
                    .map_err(|e| Error::io(format!("creating {}", rootfs.display()), e))?;
                crate::snapshot::mount::mount_all(&mounts, &rootfs)?;
            }
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
        let rootfs = bundle.join("rootfs");
        if !is_mountpoint(&rootfs) {
            let sn = d.snapshotters.get(Some(&r.snapshotter))?;
            let mounts = crate::snapshot::Snapshotter::mounts(sn.as_ref(), ns, &r.snapshot_key)?;
            std::fs::create_dir_all(&rootfs)
                .map_err(|e| Error::io(format!("creating {}", rootfs.display()), e))?;
            crate::snapshot::mount::mount_all(&mounts, &rootfs)?;
        }
        Ok(())
    }

    /// Creates the task (a shim running `runtime create`), unless one is already there.
    /// Returns whether a new task was made.
    ///
    /// With `start_now` the task starts at once (one runtime invocation); `hold_output` keeps
    /// its first output for the client about to attach.
    pub async fn create_task(
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
            .spawn(ns, &r.id, &rt, r.tty, r.stdin, start_now, hold_output, held)
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
        let d = &self.deps;
        let (key, lock) = self.op_lock(ns, &r.id);
        let res = async {
            let _held = lock.lock().await;
            if d.store
                .get::<ContainerRecord>(CONTAINERS, ns, &r.id)?
                .is_none()
            {
                return Err(Error::NotFound(format!(
                    "container {} was removed before it started",
                    r.name
                )));
            }
            if !self.create_task(ns, r, true, false).await? {
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
        if let Err(e) = self.create_task(ns, &rec, true, false).await {
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
    /// snapshot, bundle and record.
    pub async fn remove(&self, ns: &str, r: &ContainerRecord, force: bool) -> Result<()> {
        // one removal at a time per container (`--rm` watcher, attach and `rm -f` may race),
        // and never while it is being started (a prune racing `nook start`)
        let (key, lock) = self.op_lock(ns, &r.id);
        let res = {
            let _held = lock.lock().await;
            self.remove_locked(ns, r, force).await
        };
        self.op_unlock(&key, lock);
        res
    }

    /// The lock serializing a container's start and removal.
    fn op_lock(&self, ns: &str, id: &str) -> (String, Arc<tokio::sync::Mutex<()>>) {
        let key = format!("{ns}/{id}");
        let mut m = self.removing.lock().unwrap_or_else(|e| e.into_inner());
        let l = m
            .entry(key.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        (key, l)
    }

    /// Drops the map's entry unless someone else still holds or waits for the lock.
    fn op_unlock(&self, key: &str, lock: Arc<tokio::sync::Mutex<()>>) {
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

    async fn remove_locked(&self, ns: &str, r: &ContainerRecord, force: bool) -> Result<()> {
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
        let rootfs = self.rootfs(ns, &r.id);
        blocking(move || {
            if is_mountpoint(&rootfs) {
                crate::snapshot::mount::unmount(&rootfs)?;
            }
            Ok(())
        })
        .await?;
        let _gc = d.gc.lock.read().await;
        // The record goes first, in one transaction: a crash after it leaves only an
        // unreferenced snapshot (labelled nook.container, so GC collects it) and a bundle
        // directory, never a container whose snapshot is gone.
        let (store, ns2, id2) = (d.store.clone(), ns.to_string(), r.id.clone());
        blocking(move || store.write(|tx| tx.delete(CONTAINERS, &ns2, &id2).map(|_| ()))).await?;
        d.gc.mutated(true);
        if st.task.is_some() {
            let exit = self.tasks.client(ns, &r.id).recorded_exit();
            if let Some(e) = &exit {
                self.report_exit(ns, r, e);
            }
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
        self.exits_reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("{ns}/{}", r.id));
        self.events.publish(
            ns,
            "/containers/delete",
            &[("id", r.id.clone()), ("name", r.name.clone())],
        );
        if let Ok(sn) = d.snapshotters.get(Some(&r.snapshotter)) {
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
        detach_network(d, ns, &r.id).await;
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

/// The container's spec as its runtime gets it: crun also gets the seccomp profile compiled
/// (see [`super::seccomp_bpf`]), and a hook that removes the `/dev/core` link it makes.
pub(crate) fn runtime_spec(d: &Deps, r: &ContainerRecord) -> Result<oci_spec::runtime::Spec> {
    let mut v = r.spec.clone();
    super::limits::runtime_spec(d, r, &mut v)?;
    let crun =
        plugin::resolve(&d.config, Some(&r.runtime)).is_ok_and(|rt| plugin::is_crun(&rt.path));
    if crun && d.config.runtime.precompile_seccomp {
        super::seccomp_bpf::annotate(&mut v);
    }
    if crun {
        remove_dev_core(&mut v);
        crun_cgroups_read_only(
            &mut v,
            &std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        );
    }
    Ok(serde_json::from_value(v)?)
}

/// crun's read-only bind of /sys/fs/cgroup (a readonlyPath) leaves the v1 hierarchies mounted
/// under it writable: each hierarchy nookd is in (`/proc/self/cgroup`, which the container
/// inherits) becomes a read-only path too. A path crun did not mount is left alone.
fn crun_cgroups_read_only(spec: &mut serde_json::Value, proc_cgroup: &str) {
    let Some(ro) = spec
        .pointer_mut("/linux/readonlyPaths")
        .and_then(|p| p.as_array_mut())
    else {
        return;
    };
    if !ro.iter().any(|p| p == "/sys/fs/cgroup") {
        return;
    }
    for line in proc_cgroup.lines() {
        let ctrls = line.split(':').nth(1).unwrap_or("");
        if ctrls.is_empty() {
            continue; // the cgroup2 line
        }
        let p = format!("/sys/fs/cgroup/{}", ctrls.replace("name=", ""));
        if !ro.iter().any(|x| x == p.as_str()) {
            ro.push(serde_json::json!(p));
        }
    }
}

/// The argument that makes `nook-shim` the hook of [`remove_dev_core`].
pub const DEV_CORE_HOOK_ARG: &str = "--hook-remove-dev-core";

/// crun links /dev/core to /proc/kcore in every container (docker's have none): a
/// createContainer hook, which crun runs in the container's mount namespace once /dev is made
/// and before pivot_root, removes the link under the rootfs path. The hook is `nook-shim`
/// itself (one small exec; see [`dev_core_hook`]).
fn remove_dev_core(spec: &mut serde_json::Value) {
    let Ok(shim) = task::find_shim() else {
        return;
    };
    let Some(root) = spec["root"]["path"].as_str().map(str::to_string) else {
        return;
    };
    let hook = serde_json::json!({
        "path": shim,
        "args": ["nook-shim", DEV_CORE_HOOK_ARG, format!("{root}/dev/core")],
    });
    match spec["hooks"]["createContainer"].as_array_mut() {
        Some(a) => a.push(hook),
        None => spec["hooks"]["createContainer"] = serde_json::json!([hook]),
    }
}

/// The hook of [`remove_dev_core`], run as `nook-shim --hook-remove-dev-core PATH`: reads the
/// container state the runtime writes to its stdin (a hook that leaves it unread fails the
/// runtime's write with EPIPE), then removes the link if it is one. Returns the exit status.
pub fn dev_core_hook(path: &std::ffi::OsStr) -> i32 {
    use std::io::Read;
    let _ = std::io::copy(
        &mut std::io::stdin().lock().take(1 << 24),
        &mut std::io::sink(),
    );
    let p = Path::new(path);
    if p.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        if let Err(e) = std::fs::remove_file(p) {
            eprintln!("nook-shim: removing {}: {e}", p.display());
            return 1;
        }
    }
    0
}

/// Removes the container's network (veth, namespace, address, ports); logs failures.
async fn detach_network(d: &Arc<Deps>, ns: &str, id: &str) {
    let (d2, ns2, id2) = (d.clone(), ns.to_string(), id.to_string());
    match tokio::task::spawn_blocking(move || d2.network.detach(&ns2, &id2)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(container = %id, "removing its network: {e}"),
        Err(e) => tracing::warn!(container = %id, "removing its network: {e}"),
    }
}

fn tx_list(tx: &crate::metadata::Tx, ns: &str) -> Result<Vec<(String, ContainerRecord)>> {
    tx.list::<ContainerRecord>(CONTAINERS, ns)
}

/// slirp4netns's DNS forwarder, for containers whose host resolv.conf names only loopback
/// servers.
pub const SLIRP_DNS: &str = "10.0.2.3";

/// `-P`: the image's EXPOSEd ports (`80/tcp`) not already published with `-p`, as `-p` values
/// that take any free host port.
fn exposed_ports_to_publish(
    d: &Deps,
    ns: &str,
    image: &str,
    publish: &[String],
) -> Result<Vec<String>> {
    let rec = crate::image::get(&d.store, ns, image)?;
    let Some(img) = crate::image::resolve(
        &d.content,
        &d.store,
        ns,
        &rec.target,
        &crate::image::PlatformSelector::One(crate::image::Platform::host()),
    )?
    .into_iter()
    .next() else {
        return Ok(vec![]);
    };
    let exposed: Vec<String> =
        serde_json::from_slice::<oci_spec::image::ImageConfiguration>(&img.config_bytes)
            .ok()
            .and_then(|c| c.config().as_ref().and_then(|c| c.exposed_ports().clone()))
            .unwrap_or_default();
    let taken = crate::network::ports::parse_all(publish)?;
    let mut out = Vec::new();
    for e in exposed {
        let (port, proto) = e.split_once('/').unwrap_or((&e, "tcp"));
        let spec = format!("{port}/{}", proto.to_ascii_lowercase());
        let Ok(ms) = crate::network::ports::parse(&spec) else {
            continue; // a malformed EXPOSE is skipped, as docker skips it
        };
        if ms.iter().all(|m| {
            taken
                .iter()
                .any(|t| t.container_port == m.container_port && t.proto == m.proto)
        }) {
            continue;
        }
        out.push(spec);
    }
    Ok(out)
}

/// Unpacks the image into the snapshotter, prepares the container's snapshot and mounts it on
/// `rootfs`. Returns (image name, digest, image config, snapshotter name).
fn prepare_rootfs(
    d: &Deps,
    ns: &str,
    image: &str,
    snapshotter: &str,
    id: &str,
    rootfs: &Path,
) -> Result<(String, String, ImageConfig, String)> {
    let rec = crate::image::get(&d.store, ns, image)?;
    let img = crate::image::resolve(
        &d.content,
        &d.store,
        ns,
        &rec.target,
        &crate::image::PlatformSelector::One(crate::image::Platform::host()),
    )?
    .into_iter()
    .next()
    .ok_or_else(|| Error::NotFound(format!("image {image:?} has no manifest for this platform")))?;
    let cfg: ImageConfig =
        serde_json::from_slice::<oci_spec::image::ImageConfiguration>(&img.config_bytes)
            .ok()
            .and_then(|c| c.config().as_ref().map(ImageConfig::from))
            .unwrap_or_default();
    let sn_opt = Some(snapshotter).filter(|s| !s.is_empty());
    let unpacked = crate::image::unpack::unpack_image(
        &d.content,
        &d.store,
        &d.snapshotters,
        ns,
        image,
        sn_opt,
        &crate::image::PlatformSelector::One(crate::image::Platform::host()),
    )?;
    let sn = d.snapshotters.get(Some(&unpacked.snapshotter))?;
    let mut labels = BTreeMap::new();
    labels.insert("nook.container".to_string(), id.to_string());
    let mounts = crate::snapshot::Snapshotter::prepare(
        sn.as_ref(),
        ns,
        id,
        Some(&unpacked.chain_id),
        labels,
    )?;
    std::fs::create_dir_all(rootfs)
        .map_err(|e| Error::io(format!("creating {}", rootfs.display()), e))?;
    if let Err(e) = crate::snapshot::mount::mount_all(&mounts, rootfs) {
        let _ = crate::snapshot::Snapshotter::remove(sn.as_ref(), ns, id);
        return Err(e);
    }
    Ok((
        rec.name.clone(),
        rec.target.digest.to_string(),
        cfg,
        unpacked.snapshotter,
    ))
}

/// Whether `path` is a mount point (listed in /proc/self/mountinfo).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|m| {
                m.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\134", "\\")
            })
            .is_some_and(|m| m == want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crun_gets_each_hierarchy_read_only() {
        let mut v =
            serde_json::json!({"linux": {"readonlyPaths": ["/proc/sys", "/sys/fs/cgroup"]}});
        crun_cgroups_read_only(
            &mut v,
            "12:cpu,cpuacct:/user.slice\n9:name=systemd:/x\n3:memory:/\n0::/user.slice\n",
        );
        assert_eq!(
            v["linux"]["readonlyPaths"],
            serde_json::json!([
                "/proc/sys",
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/memory"
            ])
        );
        // privileged (no read-only paths): left alone
        let mut v = serde_json::json!({"linux": {}});
        crun_cgroups_read_only(&mut v, "3:memory:/\n");
        assert!(v["linux"].get("readonlyPaths").is_none());
    }

    #[test]
    fn names() {
        validate_name("web-1.a_b").unwrap();
        for bad in ["", "-x", "a b", "a/b", ".x"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(new_id().len(), 64);
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn mountpoints() {
        assert!(is_mountpoint(Path::new("/proc")));
        assert!(!is_mountpoint(Path::new("/proc/self")));
    }

    #[test]
    fn status_words() {
        let rec = ContainerRecord {
            id: "x".into(),
            name: "n".into(),
            image: "i".into(),
            image_digest: String::new(),
            snapshotter: "overlayfs".into(),
            snapshot_key: "x".into(),
            runtime: "runc".into(),
            spec: serde_json::json!({"process": {"args": ["sh", "-c", "true"]}}),
            labels: BTreeMap::new(),
            created_at: 0,
            tty: false,
            stdin: false,
            auto_remove: false,
            restart_policy: RestartPolicy::No,
            restart_count: 0,
            stopped_by_user: false,
            has_been_started: false,
            limits: Default::default(),
            oom_killed: false,
        };
        assert_eq!(rec.command(), ["sh", "-c", "true"]);
        let s = Status {
            record: rec.clone(),
            task: None,
        };
        assert_eq!(s.status(), ContainerState::Created);
        let s = Status {
            record: rec,
            task: Some(TaskState {
                id: "x".into(),
                pid: 1,
                status: TaskStatus::Stopped,
                started_at: None,
                exit: Some(crate::shim::ExitInfo {
                    pid: 1,
                    exit_code: 3,
                    exited_at: String::new(),
                }),
                shim_pid: 0,
                drained: true,
            }),
        };
        assert_eq!(
            (s.status(), s.exit_code(), s.running()),
            (ContainerState::Exited, 3, false)
        );
    }
}
