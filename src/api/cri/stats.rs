//! CRI stats: ContainerStats, ListContainerStats, PodSandboxStats and ListPodSandboxStats,
//! translated from the usage figures of the containers and pods services
//! ([`crate::services::stats`]): a running container's CPU and memory from its cgroup where
//! cgroups are delegated, else summed over its processes; a pod's as the sum of its
//! containers', with the counters of its network namespace and its process count.

use std::sync::Arc;

use crate::api::cri::v1 as cri;
use tonic::Status;

use super::containers::{find, in_pods, manager, metadata, to_map};
use super::sandbox::selected;
use super::NAMESPACE;
use crate::daemon::Daemon;
use crate::runtime::containers::ContainerRecord;
use crate::services::stats::{Interface, PodUsage, Usage};

type R<T> = Result<T, Status>;

fn v(x: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: x })
}

fn attributes(r: &ContainerRecord) -> cri::ContainerAttributes {
    cri::ContainerAttributes {
        id: r.id.clone(),
        metadata: Some(metadata(r)),
        labels: to_map(&r.labels),
        annotations: to_map(&r.annotations),
    }
}

fn cpu(u: &Usage) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp: u.timestamp,
        usage_core_nano_seconds: v(u.cpu_ns),
        usage_nano_cores: None,
        psi: None,
    }
}

fn memory(u: &Usage) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp: u.timestamp,
        working_set_bytes: v(u.working_set),
        usage_bytes: v(u.memory),
        rss_bytes: (u.rss > 0).then_some(cri::UInt64Value { value: u.rss }),
        ..Default::default()
    }
}

/// A container's stats: its attributes always; CPU and memory while it runs.
fn container_stats(r: &ContainerRecord, u: Option<&Usage>) -> cri::ContainerStats {
    cri::ContainerStats {
        attributes: Some(attributes(r)),
        cpu: u.map(cpu),
        memory: u.map(memory),
        ..Default::default()
    }
}

async fn stats_of(d: &Daemon, r: ContainerRecord) -> R<cri::ContainerStats> {
    let st = manager(d)?.status(NAMESPACE, r).await;
    let u = d.container_service()?.usage(NAMESPACE, &st).await;
    Ok(container_stats(&st.record, u.as_ref()))
}

pub(super) async fn container(
    d: &Arc<Daemon>,
    r: cri::ContainerStatsRequest,
) -> R<cri::ContainerStatsResponse> {
    let rec = find(d, &r.container_id)?;
    Ok(cri::ContainerStatsResponse {
        stats: Some(stats_of(d, rec).await?),
    })
}

pub(super) async fn list_containers(
    d: &Arc<Daemon>,
    r: cri::ListContainerStatsRequest,
) -> R<cri::ListContainerStatsResponse> {
    let f = r.filter.unwrap_or_default();
    let recs = in_pods(manager(d)?, &f.id, &f.pod_sandbox_id, &f.label_selector)?;
    let mut stats = Vec::new();
    for r in recs {
        stats.push(stats_of(d, r).await?);
    }
    Ok(cri::ListContainerStatsResponse { stats })
}

fn interface(i: &Interface) -> cri::NetworkInterfaceUsage {
    cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: v(i.rx_bytes),
        rx_errors: v(i.rx_errors),
        tx_bytes: v(i.tx_bytes),
        tx_errors: v(i.tx_errors),
    }
}

/// A pod's stats as CRI shows them.
pub(super) fn pod_stats(u: &PodUsage) -> cri::PodSandboxStats {
    let p = &u.pod;
    let network = (!u.interfaces.is_empty()).then(|| cri::NetworkUsage {
        timestamp: u.timestamp,
        // the pod's own interface on nook's bridge is eth0
        default_interface: u
            .interfaces
            .iter()
            .find(|i| i.name == "eth0")
            .or(u.interfaces.first())
            .map(interface),
        interfaces: u.interfaces.iter().map(interface).collect(),
    });
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: p.id.clone(),
            metadata: Some(super::sandbox::metadata(p)),
            labels: to_map(&p.labels),
            annotations: to_map(&p.annotations),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: u.total.as_ref().map(cpu),
            memory: u.total.as_ref().map(memory),
            network,
            process: Some(cri::ProcessUsage {
                timestamp: u.timestamp,
                process_count: v(u.total.map(|t| t.processes).unwrap_or(0)),
            }),
            io: None,
            containers: u
                .containers
                .iter()
                .map(|(st, cu)| container_stats(&st.record, cu.as_ref()))
                .collect(),
        }),
        windows: None,
    }
}

/// The usage of the pods matching an id prefix and labels.
pub(super) async fn pods_usage(
    d: &Arc<Daemon>,
    id: &str,
    labels: &std::collections::HashMap<String, String>,
) -> R<Vec<PodUsage>> {
    let svc = d.pods()?;
    let mut out = Vec::new();
    let mut all = svc.list(NAMESPACE)?;
    all.sort_by(|a, b| a.id.cmp(&b.id));
    for p in all
        .into_iter()
        .filter(|p| id.is_empty() || p.id.starts_with(id))
        .filter(|p| selected(&p.labels, labels))
    {
        out.push(svc.usage(NAMESPACE, p).await?);
    }
    Ok(out)
}

pub(super) async fn pod(
    d: &Arc<Daemon>,
    r: cri::PodSandboxStatsRequest,
) -> R<cri::PodSandboxStatsResponse> {
    let svc = d.pods()?;
    let p = svc.find(NAMESPACE, &r.pod_sandbox_id)?;
    let u = svc.usage(NAMESPACE, p).await?;
    Ok(cri::PodSandboxStatsResponse {
        stats: Some(pod_stats(&u)),
    })
}

pub(super) async fn list_pods(
    d: &Arc<Daemon>,
    r: cri::ListPodSandboxStatsRequest,
) -> R<cri::ListPodSandboxStatsResponse> {
    let f = r.filter.unwrap_or_default();
    let stats = pods_usage(d, &f.id, &f.label_selector)
        .await?
        .iter()
        .map(pod_stats)
        .collect();
    Ok(cri::ListPodSandboxStatsResponse { stats })
}
