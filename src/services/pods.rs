//! Pods: groups of containers sharing a network, IPC and UTS namespace (and, if asked, a PID
//! namespace), as Kubernetes' pod sandboxes are. A pod's namespaces are held by a small
//! process of nook's own ([`crate::shim::pod`], no pause image); its network is an attachment
//! of the network subsystem like a container's (an address on nook's bridge from IPAM, its
//! port mappings published as `-p` ones are); its /etc/hostname, /etc/hosts and
//! /etc/resolv.conf live in `<state>/pods/<ns>/<id>/` and every container of the pod binds
//! them. Containers of a pod are ordinary containers of the containers service, created with
//! a [`PodJoin`].
//!
//! A pod's record (PODS bucket, `<ns>/<id>`) is written before anything is made, so the
//! network's clean-up after a crash keeps what a live pod holds ([`holder_alive`]). The holder
//! outlives nookd; a restarted nookd finds it and relays the pod's ports again (the network's
//! reconcile), or marks the pod not ready when it is gone.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Containers;
use crate::error::{Error, Result};
use crate::events::Publisher;
use crate::metadata::{Store, PODS};
use crate::network::ports::PortMapping;
use crate::runtime::containers::pod::{PodJoin, PodMember};
use crate::runtime::containers::{new_id, ContainerRecord};

/// How a pod's containers see processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PidMode {
    /// Each container its own PID namespace.
    #[default]
    Container,
    /// One PID namespace for the pod (the holder is its pid 1).
    Pod,
}

/// The DNS settings of a pod's resolv.conf (empty: the network's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// What a pod is made from.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    /// Name, owner namespace (Kubernetes'), uid and attempt: unique together.
    pub name: String,
    pub kube_namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub hostname: String,
    /// Where its containers' logs go.
    pub log_directory: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub dns: Dns,
    pub ports: Vec<PortMapping>,
    /// nook's containers' network namespace itself rather than one of its own.
    pub host_network: bool,
    pub pid: PidMode,
    /// The runtime handler asked for (recorded).
    pub runtime_handler: String,
    /// Namespaced sysctls set in every container of the pod (they share its namespaces).
    pub sysctls: BTreeMap<String, String>,
}

/// A pod, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub name: String,
    pub kube_namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub hostname: String,
    pub log_directory: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub dns: Dns,
    pub ports: Vec<PortMapping>,
    pub host_network: bool,
    pub pid: PidMode,
    pub runtime_handler: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// Ready: its holder runs and its network is there. A stopped pod is not ready.
    pub ready: bool,
    /// The holder's pid (0 when stopped).
    pub holder_pid: i32,
    pub netns: PathBuf,
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
}

/// Whether the pod recorded as `v` (a [`PodRecord`] in JSON) has a live holder: the network's
/// reconcile asks, knowing pods only as records.
pub fn holder_alive(id: &str, v: &serde_json::Value) -> bool {
    crate::shim::pod::alive(v["holder_pid"].as_i64().unwrap_or(0) as i32, id)
}

/// The pods service.
pub struct Pods {
    store: Arc<Store>,
    network: Arc<crate::network::Manager>,
    containers: Arc<Containers>,
    state: PathBuf,
    events: Publisher,
    /// Pods being made, stopped or removed: one operation per pod at a time.
    busy: tokio::sync::Mutex<()>,
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("pod work: {e}")))?
}

impl Pods {
    pub fn new(
        store: Arc<Store>,
        network: Arc<crate::network::Manager>,
        containers: Arc<Containers>,
        state: &Path,
        events: Publisher,
    ) -> Pods {
        Pods {
            store,
            network,
            containers,
            state: state.join("pods"),
            events,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// The containers service (a pod's containers are its containers).
    pub fn containers(&self) -> &Arc<Containers> {
        &self.containers
    }

    fn dir(&self, ns: &str, id: &str) -> PathBuf {
        self.state.join(ns).join(id)
    }

    /// Every pod of `ns`.
    pub fn list(&self, ns: &str) -> Result<Vec<PodRecord>> {
        Ok(self
            .store
            .list::<PodRecord>(PODS, ns)?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// A pod by id or unique id prefix.
    pub fn find(&self, ns: &str, what: &str) -> Result<PodRecord> {
        if what.is_empty() {
            return Err(Error::InvalidArgument("no pod given".into()));
        }
        let all = self.list(ns)?;
        if let Some(p) = all.iter().find(|p| p.id == what) {
            return Ok(p.clone());
        }
        let m: Vec<&PodRecord> = all.iter().filter(|p| p.id.starts_with(what)).collect();
        match m.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NotFound(format!("no such pod {what:?}"))),
            _ => Err(Error::InvalidArgument(format!(
                "{what:?} matches several pods: give more of the id"
            ))),
        }
    }

    /// The containers of pod `id`.
    pub fn members(&self, ns: &str, id: &str) -> Result<Vec<ContainerRecord>> {
        Ok(self
            .containers
            .manager()
            .records(ns)?
            .into_iter()
            .filter(|r| r.pod.as_ref().is_some_and(|p| p.pod_id == id))
            .collect())
    }

    /// Makes a pod and starts its holder: ready when this returns.
    pub async fn run(&self, ns: &str, spec: PodSpec) -> Result<PodRecord> {
        let _busy = self.busy.lock().await;
        if spec.name.is_empty() {
            return Err(Error::InvalidArgument(
                "a pod needs a name (metadata.name)".into(),
            ));
        }
        if let Some(p) = self.list(ns)?.into_iter().find(|p| {
            p.name == spec.name
                && p.kube_namespace == spec.kube_namespace
                && p.uid == spec.uid
                && p.attempt == spec.attempt
        }) {
            return Err(Error::AlreadyExists(format!(
                "pod {:?} (namespace {:?}, uid {:?}, attempt {}) exists already as {}: remove it first",
                p.name, p.kube_namespace, p.uid, p.attempt, p.id
            )));
        }
        let id = new_id();
        let hostname = if spec.hostname.is_empty() {
            spec.name.chars().take(63).collect()
        } else {
            spec.hostname.clone()
        };
        let mut rec = PodRecord {
            id: id.clone(),
            name: spec.name,
            kube_namespace: spec.kube_namespace,
            uid: spec.uid,
            attempt: spec.attempt,
            hostname,
            log_directory: spec.log_directory,
            labels: spec.labels,
            annotations: spec.annotations,
            dns: spec.dns,
            ports: spec.ports,
            host_network: spec.host_network,
            pid: spec.pid,
            runtime_handler: spec.runtime_handler,
            sysctls: spec.sysctls,
            created_at: now_ns(),
            ..Default::default()
        };
        self.store.write(|tx| tx.put(PODS, ns, &id, &rec))?;
        match self.start(ns, &mut rec).await {
            Ok(()) => {
                self.events.publish(
                    ns,
                    "/pods/create",
                    &[("id", id.clone()), ("name", rec.name.clone())],
                );
                Ok(rec)
            }
            Err(e) => {
                self.teardown(ns, &rec).await;
                let _ = self.store.write(|tx| tx.delete(PODS, ns, &id));
                let _ = std::fs::remove_dir_all(self.dir(ns, &id));
                Err(e)
            }
        }
    }

    /// The network, /etc files, holder and ports of a recorded pod; records it ready.
    async fn start(&self, ns: &str, rec: &mut PodRecord) -> Result<()> {
        let dir = self.dir(ns, &rec.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        if !rec.log_directory.is_empty() {
            std::fs::create_dir_all(&rec.log_directory).map_err(|e| {
                Error::io(
                    format!("creating the log directory {}", rec.log_directory),
                    e,
                )
            })?;
        }
        let req = crate::network::AttachRequest {
            container_name: rec.name.clone(),
            hostname: rec.hostname.clone(),
            network: if rec.host_network { "host" } else { "" }.into(),
            hosts_path: Some(dir.join("hosts")),
            ports: rec.ports.clone(),
            direct: false,
            aliases: Vec::new(),
        };
        let (net, ns2, id2) = (self.network.clone(), ns.to_string(), rec.id.clone());
        let att = blocking(move || net.attach(&ns2, &id2, &req)).await?;
        let resolv = if rec.dns.servers.is_empty()
            && rec.dns.searches.is_empty()
            && rec.dns.options.is_empty()
        {
            att.resolv_conf.clone()
        } else {
            resolv_conf(&rec.dns)
        };
        for (f, text) in [
            ("hostname", format!("{}\n", rec.hostname)),
            ("hosts", att.hosts.clone()),
            ("resolv.conf", resolv),
        ] {
            std::fs::write(dir.join(f), text)
                .map_err(|e| Error::io(format!("writing the pod's {f}"), e))?;
        }
        rec.holder_pid = spawn_holder(&rec.id, &att.netns_path, &rec.hostname).await?;
        let _ = std::fs::write(dir.join(HOLDER_PID), format!("{}\n", rec.holder_pid));
        rec.netns = att.netns_path.clone();
        rec.ip = att.ip;
        rec.ready = true;
        self.store.write(|tx| tx.put(PODS, ns, &rec.id, &*rec))?;
        if !rec.ports.is_empty() {
            // nookd relays a pod's ports (no shim holds them); a restarted nookd relays
            // them again (the network's reconcile)
            let (net, ns2, id2) = (self.network.clone(), ns.to_string(), rec.id.clone());
            blocking(move || {
                net.publish(&ns2, &id2)?;
                net.serve_here(&ns2, &id2)
            })
            .await?;
        }
        Ok(())
    }

    /// Kills the holder and releases the network (address, ports, namespace).
    async fn teardown(&self, ns: &str, rec: &PodRecord) {
        let _ = std::fs::remove_file(self.dir(ns, &rec.id).join(HOLDER_PID));
        if crate::shim::pod::alive(rec.holder_pid, &rec.id) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(rec.holder_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let (net, ns2, id2) = (self.network.clone(), ns.to_string(), rec.id.clone());
        if let Err(e) = blocking(move || net.detach(&ns2, &id2)).await {
            tracing::warn!(pod = %rec.id, "releasing its network: {e}");
        }
    }

    /// Stops every container of the pod (at once: SIGKILL after `grace`), then its holder and
    /// network. The pod stays, not ready. Stopping a stopped pod does nothing.
    pub async fn stop(&self, ns: &str, id: &str, grace: Duration) -> Result<PodRecord> {
        let _busy = self.busy.lock().await;
        let mut rec = self.find(ns, id)?;
        self.stop_members(ns, &rec.id, grace).await?;
        self.teardown(ns, &rec).await;
        if rec.ready || rec.holder_pid != 0 {
            rec.ready = false;
            rec.holder_pid = 0;
            rec.ip = None;
            self.store.write(|tx| tx.put(PODS, ns, &rec.id, &rec))?;
            self.events
                .publish(ns, "/pods/stop", &[("id", rec.id.clone())]);
        }
        Ok(rec)
    }

    async fn stop_members(&self, ns: &str, id: &str, grace: Duration) -> Result<()> {
        let m = self.containers.manager().clone();
        let stops = self.members(ns, id)?.into_iter().map(|c| {
            let m = m.clone();
            async move {
                let _ = m.user_stopped(ns, &c);
                m.stop(ns, &c, grace, libc::SIGTERM).await
            }
        });
        for r in futures::future::join_all(stops).await {
            r?;
        }
        Ok(())
    }

    /// Removes the pod: its containers (stopped first), holder, network and files. Removing
    /// a pod that is not there succeeds (CRI's rule).
    pub async fn remove(&self, ns: &str, id: &str) -> Result<()> {
        let rec = match self.find(ns, id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop(ns, &rec.id, Duration::ZERO).await?;
        let _busy = self.busy.lock().await;
        let m = self.containers.manager().clone();
        for c in self.members(ns, &rec.id)? {
            m.remove(ns, &c, true).await?;
        }
        self.store.write(|tx| tx.delete(PODS, ns, &rec.id))?;
        let _ = std::fs::remove_dir_all(self.dir(ns, &rec.id));
        self.events
            .publish(ns, "/pods/delete", &[("id", rec.id.clone())]);
        Ok(())
    }

    /// What a container of the pod joins; the pod must be ready.
    pub fn join(&self, ns: &str, id: &str, member: PodMember) -> Result<PodJoin> {
        let rec = self.find(ns, id)?;
        if !rec.ready || !crate::shim::pod::alive(rec.holder_pid, &rec.id) {
            return Err(Error::Precondition(format!(
                "pod {} is not ready (stopped, or its holder is gone): run a new pod",
                rec.id
            )));
        }
        let dir = self.dir(ns, &rec.id);
        let proc_ns = |k: &str| PathBuf::from(format!("/proc/{}/ns/{k}", rec.holder_pid));
        Ok(PodJoin {
            member,
            netns: rec.netns.clone(),
            ipc: Some(proc_ns("ipc")),
            uts: Some(proc_ns("uts")),
            pid: (rec.pid == PidMode::Pod).then(|| proc_ns("pid")),
            hostname: rec.hostname.clone(),
            hostname_file: dir.join("hostname"),
            hosts_file: dir.join("hosts"),
            resolv_file: dir.join("resolv.conf"),
            sysctls: rec.sysctls.clone(),
        })
    }

    /// After a nookd start: a pod recorded ready whose holder is gone (a reboot, a kill) is
    /// not ready any more, and its network is released. (A live pod's ports are relayed
    /// again by the network's reconcile.)
    pub async fn recover(&self) {
        let all = match self.store.list_all::<PodRecord>(PODS) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("pods: {e}");
                return;
            }
        };
        for (key, mut rec) in all {
            let ns = key
                .split_once('/')
                .map(|(n, _)| n)
                .unwrap_or("")
                .to_string();
            if rec.ready && !crate::shim::pod::alive(rec.holder_pid, &rec.id) {
                tracing::info!(pod = %rec.id, "its holder is gone: the pod is not ready");
                self.teardown(&ns, &rec).await;
                rec.ready = false;
                rec.holder_pid = 0;
                rec.ip = None;
                let _ = self.store.write(|tx| tx.put(PODS, &ns, &rec.id, &rec));
            }
        }
    }
}

/// `<state>/pods/<ns>/<id>/holder.pid`: the holder's pid, for whoever cleans up after nookd.
const HOLDER_PID: &str = "holder.pid";

/// Counts the live pod holders recorded under `<state>/pods/*/*/holder.pid` (nookd keeps its
/// namespaces up at shutdown while one lives, as for a shim).
pub fn live_holders(state: &Path) -> usize {
    let Ok(nss) = std::fs::read_dir(state.join("pods")) else {
        return 0;
    };
    let mut n = 0;
    for ns in nss.flatten() {
        for pod in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let pid = std::fs::read_to_string(pod.path().join(HOLDER_PID))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .unwrap_or(0);
            if crate::shim::pod::alive(pid, &pod.file_name().to_string_lossy()) {
                n += 1;
            }
        }
    }
    n
}

/// A resolv.conf from DNS settings.
pub fn resolv_conf(d: &Dns) -> String {
    let mut s = String::new();
    for n in &d.servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !d.searches.is_empty() {
        s.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    if !d.options.is_empty() {
        s.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    s
}

/// Starts the holder of pod `id` in `netns` (`nook-shim --pod-holder`); returns its pid.
async fn spawn_holder(id: &str, netns: &Path, hostname: &str) -> Result<i32> {
    let shim = crate::runtime::task::find_shim()?;
    let out = tokio::process::Command::new(&shim)
        .arg(crate::shim::pod::HOLDER_ARG)
        .arg(id)
        .arg(netns)
        .arg(hostname)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(format!("starting {}", shim.display()), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.trim();
    if let Some(e) = line.strip_prefix('E') {
        return Err(Error::Internal(format!(
            "the pod's namespace holder failed: {e}"
        )));
    }
    let pid: i32 = line.parse().map_err(|_| {
        Error::Internal(format!(
            "the pod's namespace holder said {line:?} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    // the holder names itself after the fork: wait for it, briefly
    for _ in 0..100 {
        if crate::shim::pod::alive(pid, id) {
            return Ok(pid);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(Error::Internal(format!(
        "the pod's namespace holder (pid {pid}) did not come up"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv() {
        let d = Dns {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["a.svc".into(), "svc".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&d),
            "nameserver 10.0.0.10\nsearch a.svc svc\noptions ndots:5\n"
        );
        assert_eq!(resolv_conf(&Dns::default()), "");
    }
}
