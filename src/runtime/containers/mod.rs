//! Containers (metadata records) and their tasks, as nookd manages them: create from an image
//! (unpacked into a snapshot mounted at `<bundle>/rootfs`), start through a shim, stop, remove,
//! and find again after a restart. The gRPC service (the `api` module) is a thin layer over this.
//!
//! A container record lives in the CONTAINERS bucket as `<ns>/<id>`; its `snapshotter` and
//! `snapshot_key` fields keep its snapshot from garbage collection. The task's live state is
//! never stored: it is asked from the shim (or read from its exit record), so a restarted
//! nookd sees exactly what is running.

mod create;
pub mod image_volumes;
mod lifecycle;
pub mod pod;
mod recover;
mod runtime_spec;
#[cfg(test)]
mod seam_tests;
mod supervise;

pub use crate::snapshot::mount::is_mountpoint;
pub use create::SLIRP_DNS;
pub(crate) use runtime_spec::runtime_spec;
pub use runtime_spec::{adapt_client_spec, dev_core_hook, DEV_CORE_HOOK_ARG};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::deps::{blocking, Deps};
use super::plugin;
// the children's `super::limits` (..) paths name these siblings of `containers`
use super::restart::{self, RestartPolicy};
use super::spec::{
    self, BindMount, ImageConfig, Network, SpecOptions, TmpfsMount, VolumeArg, VolumeMount,
};
use super::task::{self, EtcFiles, Tasks};
use super::{limits, seccomp_bpf, user};
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
    /// The volumes it mounts (named and anonymous), which `volume rm` refuses to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// What a containerd client gave when it made the container (containerd's API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientRecord>,
    /// Annotations given at creation (CRI's), kept as given and put in the OCI spec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The pod it belongs to, if any (a CRI container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<pod::PodMember>,
    /// Images it mounts read-only (CRI's image volumes), each a view snapshot of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_volumes: Vec<image_volumes::ImageVolume>,
}

/// What a containerd client gave at creation, kept as given: its runtime name and options,
/// and its extensions (each a type URL and bytes). Such a container runs the client's spec
/// (adapted to what rootless nook can do, see [`adapt_client_spec`]) and keeps its snapshot
/// when removed (the client removes it, as with containerd).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientRecord {
    pub runtime: String,
    #[serde(default)]
    pub runtime_options: Option<(String, Vec<u8>)>,
    #[serde(default)]
    pub extensions: BTreeMap<String, (String, Vec<u8>)>,
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

/// Mounts snapshot `key` of `snapshotter` on `target` (made if missing), unless something is
/// mounted there already: a container's rootfs or image volume when a task is made again.
fn mount_snapshot_at(
    d: &Deps,
    ns: &str,
    snapshotter: &str,
    key: &str,
    target: &Path,
) -> Result<()> {
    if d.mounts.is_mounted(target) {
        return Ok(());
    }
    let sn = d.snapshotters.get(Some(snapshotter))?;
    let mounts = crate::snapshot::Snapshotter::mounts(sn.as_ref(), ns, key)?;
    std::fs::create_dir_all(target)
        .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
    d.mounts.mount_all(&mounts, target)
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
    /// `--network-alias`: further names peers on `network` reach it by.
    pub network_aliases: Vec<String>,
    /// Networks it is connected to as well from the start, each with its aliases (Docker's
    /// NetworkingConfig with several endpoints).
    pub more_networks: Vec<(String, Vec<String>)>,
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
    /// Join a pod's namespaces and /etc files instead of getting a network of its own.
    pub pod: Option<pod::PodJoin>,
    /// Annotations (CRI's), recorded and put in the OCI spec.
    pub annotations: BTreeMap<String, String>,
    /// Bind mounts given as such (CRI's), besides `volumes`.
    pub mounts: Vec<BindMount>,
    /// Images to mount read-only (CRI's image volumes).
    pub image_mounts: Vec<image_volumes::ImageMount>,
    /// A seccomp choice given as such (CRI's security context), instead of `security_opt`'s.
    pub seccomp: Option<spec::SeccompChoice>,
    /// `no_new_privs` given as such.
    pub no_new_privileges: bool,
    /// Masked and read-only paths replacing nook's defaults (None: the defaults).
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
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
    /// The processes containerd clients run, with their stdio (see [`super::client_task`]).
    pub client_procs: super::client_io::ClientProcs,
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
        Ok(Self::with_shim(deps, task::find_shim()?))
    }

    /// The manager over `deps`, starting shims from `shim`.
    pub fn with_shim(deps: Deps, shim: PathBuf) -> Arc<Manager> {
        Arc::new_cyclic(|me| Manager {
            tasks: Tasks::new(&deps.paths.state, shim),
            client_procs: Default::default(),
            removing: Default::default(),
            monitored: Default::default(),
            exits_reported: Default::default(),
            backoff: Default::default(),
            events: deps.events.clone(),
            deps: Arc::new(deps),
            me: me.clone(),
        })
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

/// The names of the containers of `ns` that mount volume `name`, read inside a transaction
/// (so that removing the volume and creating a container using it cannot interleave).
pub fn volume_users(tx: &crate::metadata::Tx, ns: &str, name: &str) -> Result<Vec<String>> {
    Ok(tx_list(tx, ns)?
        .into_iter()
        .filter(|(_, r)| r.volumes.iter().any(|v| v.name == name))
        .map(|(_, r)| r.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            client: None,
            limits: Default::default(),
            oom_killed: false,
            annotations: BTreeMap::new(),
            pod: None,
            volumes: vec![],
            image_volumes: vec![],
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
