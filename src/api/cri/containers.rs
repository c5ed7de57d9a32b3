//! CRI containers: a container config becomes nook's create options for the one containers
//! service (joining its pod's namespaces, see [`crate::runtime::containers::pod`]); Start,
//! Stop, Remove, List and Status, UpdateContainerResources, ReopenContainerLog and ExecSync go
//! to the same manager as `nook`'s and docker's containers (stats: [`super::stats`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::api::cri::v1 as cri;
use tonic::Status;

use super::sandbox::selected;
use super::NAMESPACE;
use crate::daemon::Daemon;
use crate::error::Error;
use crate::runtime::containers::image_volumes::ImageMount;
use crate::runtime::containers::pod::PodMember;
use crate::runtime::containers::{
    ContainerRecord, ContainerState, CreateOptions, Manager, Status as CStatus,
};
use crate::runtime::spec::{BindMount, SeccompChoice};

type R<T> = Result<T, Status>;

pub(super) fn manager(d: &Daemon) -> R<&Arc<Manager>> {
    d.containers().map_err(Into::into)
}

/// A CRI container (one that belongs to a pod) by id or unique id prefix.
pub(super) fn find(d: &Daemon, id: &str) -> R<ContainerRecord> {
    if id.is_empty() {
        return Err(Status::invalid_argument("no container id given"));
    }
    let all: Vec<ContainerRecord> = manager(d)?
        .records(NAMESPACE)?
        .into_iter()
        .filter(|r| r.pod.is_some())
        .collect();
    if let Some(r) = all.iter().find(|r| r.id == id) {
        return Ok(r.clone());
    }
    let m: Vec<&ContainerRecord> = all.iter().filter(|r| r.id.starts_with(id)).collect();
    match m.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Status::not_found(format!("no such container {id:?}"))),
        _ => Err(Status::invalid_argument(format!(
            "{id:?} matches several containers: give more of the id"
        ))),
    }
}

/// A name nook accepts for the container, unique per pod, name and attempt (containerd's
/// `<name>_<pod>_<namespace>_<uid>_<attempt>`).
fn container_name(m: &cri::ContainerMetadata, p: &crate::services::pods::PodRecord) -> String {
    let raw = format!(
        "{}_{}_{}_{}_{}",
        m.name, p.name, p.kube_namespace, p.uid, m.attempt
    );
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        s.insert(0, 'k');
    }
    s.truncate(128);
    s
}

/// The seccomp choice of a CRI profile; unset is unconfined, as with containerd.
fn seccomp(p: Option<&cri::SecurityProfile>, legacy: &str) -> R<SeccompChoice> {
    use cri::security_profile::ProfileType;
    let localhost = |path: &str| -> R<SeccompChoice> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Status::invalid_argument(format!("reading the seccomp profile {path:?}: {e}"))
        })?;
        Ok(SeccompChoice::Custom(text))
    };
    match p {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(SeccompChoice::Default),
            Ok(ProfileType::Unconfined) => Ok(SeccompChoice::Unconfined),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref),
            Err(_) => Err(Status::invalid_argument("unknown seccomp profile type")),
        },
        None => match legacy {
            "" | "unconfined" => Ok(SeccompChoice::Unconfined),
            "runtime/default" | "docker/default" => Ok(SeccompChoice::Default),
            l => match l.strip_prefix("localhost/") {
                Some(path) => localhost(path),
                None => Err(Status::invalid_argument(format!(
                    "seccomp profile {l:?}: use runtime/default, unconfined or localhost/PATH"
                ))),
            },
        },
    }
}

/// CRI's resources as nook's limits.
fn limits(r: &cri::LinuxContainerResources) -> crate::runtime::limits::Limits {
    let mut res = crate::cgroup::Resources::default();
    if r.memory_limit_in_bytes > 0 {
        res.memory = Some(r.memory_limit_in_bytes);
    }
    if r.cpu_quota > 0 {
        let period = if r.cpu_period > 0 {
            r.cpu_period
        } else {
            100_000
        };
        res.cpus = Some(r.cpu_quota as f64 / period as f64);
    }
    if r.cpu_shares > 0 {
        res.cpu_shares = Some(r.cpu_shares as u64);
    }
    if !r.cpuset_cpus.is_empty() {
        res.cpuset_cpus = Some(r.cpuset_cpus.clone());
    }
    crate::runtime::limits::Limits {
        resources: res,
        shm_size: 0,
        oom_score_adj: (r.oom_score_adj != 0).then_some(r.oom_score_adj as i32),
    }
}

/// An image volume (`Mount.image`): the image must be present and the mount read-only, as
/// Kubernetes makes it.
fn image_mount(d: &Daemon, m: &cri::Mount, spec: &cri::ImageSpec) -> R<ImageMount> {
    if !m.container_path.starts_with('/') {
        return Err(Status::invalid_argument(format!(
            "image volume at {:?}: the container path must be absolute",
            m.container_path
        )));
    }
    if !m.readonly {
        return Err(Status::invalid_argument(format!(
            "image volume at {}: image volumes are read-only; set readonly on the mount",
            m.container_path
        )));
    }
    let (image, image_id, _) = super::images::lookup(d, &spec.image)?.ok_or_else(|| {
        Status::not_found(format!(
            "image volume at {}: image {:?} is not present: pull it first (crictl pull {})",
            m.container_path, spec.image, spec.image
        ))
    })?;
    Ok(ImageMount {
        image,
        image_id,
        destination: m.container_path.clone(),
        sub_path: m.image_sub_path.clone(),
    })
}

/// The create options for a CRI container config in pod `p` (the deprecated
/// `seccomp_profile_path` is still read: older clients send only it).
#[allow(deprecated)]
fn options(
    d: &Daemon,
    c: cri::ContainerConfig,
    p: &crate::services::pods::PodRecord,
) -> R<CreateOptions> {
    let meta = c
        .metadata
        .ok_or_else(|| Status::invalid_argument("the container config has no metadata"))?;
    if !matches!(
        cri::Signal::try_from(c.stop_signal),
        Ok(cri::Signal::RuntimeDefault | cri::Signal::Sigterm)
    ) {
        return Err(Status::invalid_argument(format!(
            "stop signal {:?}: nook stops containers with SIGTERM (then SIGKILL) only; drop the container's stop signal",
            cri::Signal::try_from(c.stop_signal).map(|s| s.as_str_name()).unwrap_or("unknown")
        )));
    }
    if !c.devices.is_empty() || !c.cdi_devices.is_empty() {
        return Err(Status::invalid_argument(
            "devices cannot be given to a rootless container: an unprivileged user cannot create device nodes; drop devices from the container config",
        ));
    }
    let want = c
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if want.is_empty() {
        return Err(Status::invalid_argument(
            "the container config names no image",
        ));
    }
    let (image, _, _) = super::images::lookup(d, &want)?.ok_or_else(|| {
        Status::not_found(format!(
            "image {want:?} is not present: pull it first (crictl pull {want})"
        ))
    })?;
    let mut mounts = Vec::new();
    let mut image_mounts = Vec::new();
    for m in &c.mounts {
        if let Some(spec) = &m.image {
            image_mounts.push(image_mount(d, m, spec)?);
            continue;
        }
        if !m.host_path.starts_with('/') || !m.container_path.starts_with('/') {
            return Err(Status::invalid_argument(format!(
                "mount {:?} -> {:?}: both paths must be absolute",
                m.host_path, m.container_path
            )));
        }
        let propagation = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
            Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
            _ => "rprivate",
        };
        mounts.push(BindMount {
            source: m.host_path.clone().into(),
            destination: m.container_path.clone(),
            read_only: m.readonly,
            propagation: propagation.into(),
        });
    }
    let linux = c.linux.unwrap_or_default();
    let sc = linux.security_context.unwrap_or_default();
    let user = if !sc.run_as_username.is_empty() {
        match &sc.run_as_group {
            Some(g) => format!("{}:{}", sc.run_as_username, g.value),
            None => sc.run_as_username.clone(),
        }
    } else {
        match (&sc.run_as_user, &sc.run_as_group) {
            (Some(u), Some(g)) => format!("{}:{}", u.value, g.value),
            (Some(u), None) => u.value.to_string(),
            (None, Some(g)) => {
                return Err(Status::invalid_argument(format!(
                    "run_as_group {} needs run_as_user or run_as_username",
                    g.value
                )))
            }
            (None, None) => String::new(),
        }
    };
    let caps = sc.capabilities.clone().unwrap_or_default();
    let mut lim = linux.resources.as_ref().map(limits).unwrap_or_default();
    if let Err(e) = d.cgroups.require(&lim.resources) {
        // a kubelet always sends CPU shares: where cgroups are not delegated they cannot be
        // enforced, and the container runs without them (said in the log, not refused)
        tracing::warn!("CRI container {}: resources not applied: {e}", meta.name);
        lim.resources = Default::default();
    }
    let pod_pid = sc
        .namespace_options
        .as_ref()
        .is_none_or(|o| o.pid != 1 /* CONTAINER */);
    let log_path = if c.log_path.is_empty() {
        String::new()
    } else {
        std::path::Path::new(&p.log_directory)
            .join(&c.log_path)
            .to_string_lossy()
            .into_owned()
    };
    let member = PodMember {
        pod_id: p.id.clone(),
        name: meta.name.clone(),
        attempt: meta.attempt,
        log_path,
    };
    let mut join = d.pods()?.join(NAMESPACE, &p.id, member)?;
    if !pod_pid {
        join.pid = None;
    }
    let nonempty = |v: Vec<String>| (!v.is_empty()).then_some(v);
    Ok(CreateOptions {
        image,
        name: container_name(&meta, p),
        runtime: p.runtime_handler.clone(),
        entrypoint: (!c.command.is_empty()).then_some(c.command),
        args: c.args,
        env: c
            .envs
            .into_iter()
            .map(|kv| format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)))
            .collect(),
        workdir: c.working_dir,
        user,
        hostname: p.hostname.clone(),
        read_only: sc.readonly_rootfs,
        tty: c.tty,
        stdin: c.stdin,
        cap_add: caps.add_capabilities,
        cap_drop: caps.drop_capabilities,
        privileged: sc.privileged,
        group_add: sc
            .supplemental_groups
            .iter()
            .map(|g| g.to_string())
            .collect(),
        labels: c.labels.into_iter().collect(),
        annotations: c.annotations.into_iter().collect(),
        mounts,
        image_mounts,
        // a privileged container runs unconfined whatever profile is named (containerd's rule)
        seccomp: Some(if sc.privileged {
            SeccompChoice::Unconfined
        } else {
            seccomp(sc.seccomp.as_ref(), &sc.seccomp_profile_path)?
        }),
        no_new_privileges: sc.no_new_privs,
        masked_paths: nonempty(sc.masked_paths),
        readonly_paths: nonempty(sc.readonly_paths),
        limits: lim,
        pod: Some(join),
        ..Default::default()
    })
}

pub(super) async fn create(
    d: &Arc<Daemon>,
    r: cri::CreateContainerRequest,
) -> R<cri::CreateContainerResponse> {
    let pod = d.pods()?.find(NAMESPACE, &r.pod_sandbox_id)?;
    let c = r
        .config
        .ok_or_else(|| Status::invalid_argument("CreateContainer needs a config"))?;
    let d2 = d.clone();
    let pod2 = pod.clone();
    let o = crate::api::blocking(move || {
        options(&d2, c, &pod2).map_err(|s| match s.code() {
            tonic::Code::NotFound => Error::NotFound(s.message().into()),
            tonic::Code::FailedPrecondition => Error::Precondition(s.message().into()),
            _ => Error::InvalidArgument(s.message().into()),
        })
    })
    .await?;
    let rec = manager(d)?.create(NAMESPACE, o).await?;
    Ok(cri::CreateContainerResponse {
        container_id: rec.id,
    })
}

pub(super) async fn start(
    d: &Arc<Daemon>,
    r: cri::StartContainerRequest,
) -> R<cri::StartContainerResponse> {
    let rec = find(d, &r.container_id)?;
    let m = manager(d)?;
    let st = m.status(NAMESPACE, rec.clone()).await;
    if st.status() != ContainerState::Created || st.task.is_some() {
        return Err(Status::failed_precondition(format!(
            "container {} is {}: only a created container can be started",
            rec.id,
            st.status()
        )));
    }
    m.user_started(NAMESPACE, &rec)?;
    m.start(NAMESPACE, &rec).await?;
    Ok(cri::StartContainerResponse {})
}

pub(super) async fn stop(
    d: &Arc<Daemon>,
    r: cri::StopContainerRequest,
) -> R<cri::StopContainerResponse> {
    let rec = match find(d, &r.container_id) {
        Ok(r) => r,
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(cri::StopContainerResponse {}),
        Err(s) => return Err(s),
    };
    let m = manager(d)?;
    m.user_stopped(NAMESPACE, &rec)?;
    m.stop(
        NAMESPACE,
        &rec,
        Duration::from_secs(r.timeout.max(0) as u64),
        libc::SIGTERM,
    )
    .await?;
    Ok(cri::StopContainerResponse {})
}

pub(super) async fn remove(
    d: &Arc<Daemon>,
    r: cri::RemoveContainerRequest,
) -> R<cri::RemoveContainerResponse> {
    let rec = match find(d, &r.container_id) {
        Ok(r) => r,
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(cri::RemoveContainerResponse {}),
        Err(s) => return Err(s),
    };
    manager(d)?.remove(NAMESPACE, &rec, true).await?;
    Ok(cri::RemoveContainerResponse {})
}

fn cri_state(s: &CStatus) -> cri::ContainerState {
    match s.status() {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running | ContainerState::Paused => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
    }
}

pub(super) fn to_map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(super) fn metadata(r: &ContainerRecord) -> cri::ContainerMetadata {
    let p = r.pod.clone().unwrap_or_default();
    cri::ContainerMetadata {
        name: p.name,
        attempt: p.attempt,
    }
}

fn ns_of(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0)
}

/// The image's name, id and repo digest as CRI shows them.
fn image_of(d: &Daemon, r: &ContainerRecord) -> (String, String, String) {
    super::images::lookup(d, &r.image)
        .ok()
        .flatten()
        .unwrap_or_else(|| (r.image.clone(), String::new(), r.image_digest.clone()))
}

/// The CRI containers (those of a pod) matching a filter's id prefix, pod id prefix and
/// labels; ListContainers and ListContainerStats share it (their filters differ in type only).
pub(super) fn in_pods(
    m: &Manager,
    id: &str,
    pod: &str,
    labels: &HashMap<String, String>,
) -> Result<Vec<ContainerRecord>, Status> {
    Ok(m.records(NAMESPACE)?
        .into_iter()
        .filter(|r| r.pod.is_some())
        .filter(|r| id.is_empty() || r.id.starts_with(id))
        .filter(|r| pod.is_empty() || r.pod.as_ref().is_some_and(|p| p.pod_id.starts_with(pod)))
        .filter(|r| selected(&r.labels, labels))
        .collect())
}

pub(super) async fn list(
    d: &Arc<Daemon>,
    r: cri::ListContainersRequest,
) -> R<cri::ListContainersResponse> {
    let f = r.filter.unwrap_or_default();
    let m = manager(d)?;
    let mut recs = in_pods(m, &f.id, &f.pod_sandbox_id, &f.label_selector)?;
    recs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let states = futures::future::join_all(recs.into_iter().map(|r| m.status(NAMESPACE, r))).await;
    let containers = states
        .iter()
        .filter(|s| {
            f.state
                .as_ref()
                .is_none_or(|v| v.state == cri_state(s) as i32)
        })
        .map(|s| {
            let r = &s.record;
            let (image, id, digest) = image_of(d, r);
            cri::Container {
                id: r.id.clone(),
                pod_sandbox_id: r.pod.as_ref().map(|p| p.pod_id.clone()).unwrap_or_default(),
                metadata: Some(metadata(r)),
                image: Some(cri::ImageSpec {
                    image,
                    ..Default::default()
                }),
                image_ref: digest,
                image_id: id,
                state: cri_state(s) as i32,
                created_at: r.created_at * 1_000_000_000,
                labels: to_map(&r.labels),
                annotations: to_map(&r.annotations),
            }
        })
        .collect();
    Ok(cri::ListContainersResponse { containers })
}

pub(super) async fn status(
    d: &Arc<Daemon>,
    r: cri::ContainerStatusRequest,
) -> R<cri::ContainerStatusResponse> {
    let rec = find(d, &r.container_id)?;
    let m = manager(d)?;
    let s = m.status(NAMESPACE, rec.clone()).await;
    let state = cri_state(&s);
    let started = s
        .task
        .as_ref()
        .and_then(|t| t.started_at.as_deref())
        .map(ns_of)
        .unwrap_or(0);
    let exit = s.task.as_ref().and_then(|t| t.exit.clone());
    let finished = exit.as_ref().map(|e| ns_of(&e.exited_at)).unwrap_or(0);
    let (reason, code) = match (&state, &exit) {
        (cri::ContainerState::ContainerExited, Some(e)) => (
            if rec.oom_killed {
                "OOMKilled"
            } else if e.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            },
            e.exit_code,
        ),
        _ => ("", 0),
    };
    let (image, id, digest) = image_of(d, &rec);
    let user = &rec.spec["process"]["user"];
    let mounts = rec.spec["mounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m["type"] == "bind")
                .filter(|m| {
                    !["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
                        .contains(&m["destination"].as_str().unwrap_or(""))
                })
                .map(|m| {
                    let opts = m["options"].as_array();
                    let has = |o: &str| opts.is_some_and(|v| v.iter().any(|x| x == o));
                    let propagation = if has("rshared") || has("shared") {
                        cri::MountPropagation::PropagationBidirectional
                    } else if has("rslave") || has("slave") {
                        cri::MountPropagation::PropagationHostToContainer
                    } else {
                        cri::MountPropagation::PropagationPrivate
                    };
                    let dest = m["destination"].as_str().unwrap_or("");
                    if let Some(v) = rec.image_volumes.iter().find(|v| v.destination == dest) {
                        // an image volume: the image and its id, as the client gave it
                        return cri::Mount {
                            container_path: dest.into(),
                            readonly: true,
                            image: Some(cri::ImageSpec {
                                image: v.image.clone(),
                                image_ref: v.image_id.clone(),
                                ..Default::default()
                            }),
                            image_sub_path: v.sub_path.clone(),
                            ..Default::default()
                        };
                    }
                    cri::Mount {
                        container_path: dest.into(),
                        host_path: m["source"].as_str().unwrap_or("").into(),
                        readonly: has("ro"),
                        propagation: propagation.into(),
                        ..Default::default()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let mut info = HashMap::new();
    if r.verbose {
        let v = serde_json::json!({
            "sandboxID": rec.pod.as_ref().map(|p| p.pod_id.clone()),
            "pid": s.task.as_ref().map(|t| t.pid).unwrap_or(0),
            "name": rec.name,
            "runtime": rec.runtime,
            "snapshotter": rec.snapshotter,
            "snapshotKey": rec.snapshot_key,
            "runtimeSpec": rec.spec,
        });
        info.insert("info".to_string(), v.to_string());
    }
    let resources = rec.spec["linux"]["resources"].clone();
    Ok(cri::ContainerStatusResponse {
        status: Some(cri::ContainerStatus {
            id: rec.id.clone(),
            metadata: Some(metadata(&rec)),
            state: state as i32,
            created_at: rec.created_at * 1_000_000_000,
            started_at: started,
            finished_at: finished,
            exit_code: code,
            image: Some(cri::ImageSpec {
                image,
                ..Default::default()
            }),
            image_ref: digest,
            image_id: id,
            reason: reason.into(),
            message: String::new(),
            labels: to_map(&rec.labels),
            annotations: to_map(&rec.annotations),
            mounts,
            log_path: rec
                .pod
                .as_ref()
                .map(|p| p.log_path.clone())
                .unwrap_or_default(),
            resources: Some(cri::ContainerResources {
                linux: Some(cri::LinuxContainerResources {
                    cpu_period: resources["cpu"]["period"].as_i64().unwrap_or(0),
                    cpu_quota: resources["cpu"]["quota"].as_i64().unwrap_or(0),
                    cpu_shares: resources["cpu"]["shares"].as_i64().unwrap_or(0),
                    memory_limit_in_bytes: resources["memory"]["limit"].as_i64().unwrap_or(0),
                    cpuset_cpus: resources["cpu"]["cpus"].as_str().unwrap_or("").into(),
                    oom_score_adj: rec.spec["process"]["oomScoreAdj"].as_i64().unwrap_or(0),
                    ..Default::default()
                }),
                windows: None,
            }),
            user: Some(cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: user["uid"].as_i64().unwrap_or(0),
                    gid: user["gid"].as_i64().unwrap_or(0),
                    supplemental_groups: user["additionalGids"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|g| g.as_i64()).collect())
                        .unwrap_or_default(),
                }),
            }),
            // nook stops with SIGTERM, then SIGKILL (a config's other stop signal is refused)
            stop_signal: cri::Signal::Sigterm as i32,
        }),
        info,
    })
}

pub(super) async fn update_resources(
    d: &Arc<Daemon>,
    r: cri::UpdateContainerResourcesRequest,
) -> R<cri::UpdateContainerResourcesResponse> {
    let rec = find(d, &r.container_id)?;
    let lim = r.linux.as_ref().map(limits).unwrap_or_default();
    crate::runtime::limits::update(manager(d)?, NAMESPACE, &rec, &lim.resources).await?;
    Ok(cri::UpdateContainerResourcesResponse {})
}

pub(super) async fn reopen_log(
    d: &Arc<Daemon>,
    r: cri::ReopenContainerLogRequest,
) -> R<cri::ReopenContainerLogResponse> {
    let rec = find(d, &r.container_id)?;
    let m = manager(d)?;
    if !m.status(NAMESPACE, rec.clone()).await.running() {
        return Err(Status::failed_precondition(format!(
            "container {} is not running: its log is closed",
            rec.id
        )));
    }
    m.tasks.client(NAMESPACE, &rec.id).reopen_log().await?;
    Ok(cri::ReopenContainerLogResponse {})
}

pub(super) async fn exec_sync(
    d: &Arc<Daemon>,
    r: cri::ExecSyncRequest,
) -> R<cri::ExecSyncResponse> {
    let rec = find(d, &r.container_id)?;
    let timeout = (r.timeout > 0).then(|| Duration::from_secs(r.timeout as u64));
    match d
        .container_service()?
        .exec_sync(NAMESPACE, &rec, &r.cmd, timeout)
        .await?
    {
        Some((exit_code, stdout, stderr)) => Ok(cri::ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        }),
        None => Err(Status::deadline_exceeded(format!(
            "command {:?} timed out after {}s",
            r.cmd, r.timeout
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_seccomp() {
        let p = crate::services::pods::PodRecord {
            name: "web".into(),
            kube_namespace: "default".into(),
            uid: "u/1".into(),
            ..Default::default()
        };
        let m = cri::ContainerMetadata {
            name: "srv".into(),
            attempt: 2,
        };
        let n = container_name(&m, &p);
        assert_eq!(n, "srv_web_default_u-1_2");
        crate::runtime::containers::validate_name(&n).unwrap();
        assert_eq!(seccomp(None, "").unwrap(), SeccompChoice::Unconfined);
        assert_eq!(
            seccomp(None, "runtime/default").unwrap(),
            SeccompChoice::Default
        );
        assert!(seccomp(None, "localhost/does/not/exist").is_err());
    }
}
