//! CRI metrics: ListMetricDescriptors and ListPodSandboxMetrics, the unstructured key/value
//! form of a pod's and its containers' figures ([`crate::services::stats`] and
//! [`crate::services::detail`]), named as cAdvisor names them so a kubelet's
//! `/metrics/cadvisor` keeps its meaning. A figure that cannot be read here (no delegated
//! cgroups, a snapshotter without a writable layer) is left out, never sent as a zero. CRI
//! carries integers only: times are in whole seconds. Limits from the container's spec are 0
//! when none is set, as cAdvisor shows an unlimited one.

use std::collections::HashMap;
use std::sync::Arc;

use crate::api::cri::v1 as cri;
use tonic::Status;

use super::NAMESPACE;
use crate::daemon::Daemon;
use crate::runtime::containers::ContainerRecord;
use crate::services::detail::ContainerDetail;
use crate::services::stats::PodUsage;

type R<T> = Result<T, Status>;

/// Which labels a metric has.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Labels {
    /// A container's: `container`, `id`, `image`, `namespace`, `pod`.
    Container,
    /// A container's and `failure_type`, `scope`.
    Failure,
    /// A pod interface's: `interface`, `namespace`, `pod`.
    Network,
    /// A container's and the block device's `device` (`major:minor`).
    Device,
    /// A container's, the block device's `major`, `minor` and the `operation`.
    DeviceOp,
}

impl Labels {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Labels::Container => &["container", "id", "image", "namespace", "pod"],
            Labels::Failure => &[
                "container",
                "id",
                "image",
                "namespace",
                "pod",
                "failure_type",
                "scope",
            ],
            Labels::Network => &["interface", "namespace", "pod"],
            Labels::Device => &["container", "id", "image", "namespace", "pod", "device"],
            Labels::DeviceOp => &[
                "container",
                "id",
                "image",
                "namespace",
                "pod",
                "major",
                "minor",
                "operation",
            ],
        }
    }
}

const C: Labels = Labels::Container;
const N: Labels = Labels::Network;

/// What is served: name, help, labels, and whether it is a counter.
#[rustfmt::skip]
const METRICS: &[(&str, &str, Labels, bool)] = &[
    ("container_cpu_usage_seconds_total", "Cumulative CPU time consumed, in whole seconds", C, true),
    ("container_cpu_user_seconds_total", "Cumulative user CPU time consumed, in whole seconds", C, true),
    ("container_cpu_system_seconds_total", "Cumulative system CPU time consumed, in whole seconds", C, true),
    ("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals", C, true),
    ("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals", C, true),
    ("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled, in whole seconds", C, true),
    ("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", C, false),
    ("container_memory_working_set_bytes", "Current working set in bytes (usage less the inactive file cache)", C, false),
    ("container_memory_rss", "Size of RSS (anonymous memory) in bytes", C, false),
    ("container_memory_cache", "Number of bytes of page cache memory", C, false),
    ("container_memory_mapped_file", "Size of memory mapped files in bytes", C, false),
    ("container_memory_swap", "Container swap usage in bytes", C, false),
    ("container_memory_kernel_usage", "Size of kernel memory allocated in bytes", C, false),
    ("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", C, false),
    ("container_memory_failcnt", "Number of memory usage hits limits", C, true),
    ("container_memory_failures_total", "Cumulative count of memory allocation failures (page faults)", Labels::Failure, true),
    ("container_oom_events_total", "Count of out of memory events observed for the container", C, true),
    ("container_processes", "Number of processes running inside the container", C, false),
    ("container_threads", "Number of threads running inside the container", C, false),
    ("container_threads_max", "Maximum number of threads allowed inside the container, 0 for no limit", C, false),
    ("container_file_descriptors", "Number of open file descriptors for the container", C, false),
    ("container_sockets", "Number of open sockets for the container", C, false),
    ("container_fs_usage_bytes", "Number of bytes consumed by the container's writable layer", C, false),
    ("container_fs_limit_bytes", "Number of bytes of the filesystem holding the container's writable layer", C, false),
    ("container_fs_inodes_total", "Number of inodes of the filesystem holding the writable layer", C, false),
    ("container_fs_inodes_free", "Number of free inodes of the filesystem holding the writable layer", C, false),
    ("container_last_seen", "Last time the container was seen, in seconds since the epoch", C, false),
    ("container_start_time_seconds", "Start time of the container, in seconds since the epoch", C, false),
    ("container_spec_cpu_period", "CPU period of the container (microseconds), 0 when not set", C, false),
    ("container_spec_cpu_shares", "CPU share of the container, 0 when not set", C, false),
    ("container_spec_memory_limit_bytes", "Memory limit of the container, 0 for none", C, false),
    ("container_spec_memory_swap_limit_bytes", "Memory and swap limit of the container, 0 for none", C, false),
    ("container_fs_reads_bytes_total", "Cumulative count of bytes read from a block device", Labels::Device, true),
    ("container_fs_writes_bytes_total", "Cumulative count of bytes written to a block device", Labels::Device, true),
    ("container_fs_reads_total", "Cumulative count of reads completed on a block device", Labels::Device, true),
    ("container_fs_writes_total", "Cumulative count of writes completed on a block device", Labels::Device, true),
    ("container_blkio_device_usage_total", "Block I/O bytes by device and operation", Labels::DeviceOp, true),
    ("container_network_receive_bytes_total", "Cumulative count of bytes received", N, true),
    ("container_network_receive_packets_total", "Cumulative count of packets received", N, true),
    ("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", N, true),
    ("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", N, true),
    ("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", N, true),
    ("container_network_transmit_packets_total", "Cumulative count of packets transmitted", N, true),
    ("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", N, true),
    ("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", N, true),
];

pub(super) fn descriptors() -> cri::ListMetricDescriptorsResponse {
    cri::ListMetricDescriptorsResponse {
        descriptors: METRICS
            .iter()
            .map(|(name, help, labels, _)| cri::MetricDescriptor {
                name: name.to_string(),
                help: help.to_string(),
                label_keys: labels.keys().iter().map(|l| l.to_string()).collect(),
            })
            .collect(),
    }
}

fn metric(name: &str, timestamp: i64, labels: &[String], value: u64) -> cri::Metric {
    let counter = METRICS.iter().find(|m| m.0 == name).is_some_and(|m| m.3);
    cri::Metric {
        name: name.to_string(),
        timestamp,
        metric_type: if counter {
            cri::MetricType::Counter
        } else {
            cri::MetricType::Gauge
        } as i32,
        label_values: labels.to_vec(),
        value: Some(cri::UInt64Value { value }),
    }
}

const NS_PER_S: u64 = 1_000_000_000;

/// A spec resource as a number (0: not set).
fn spec_u64(r: &ContainerRecord, path: &[&str]) -> u64 {
    let mut v = &r.spec["linux"]["resources"];
    for p in path {
        v = &v[*p];
    }
    v.as_u64()
        .or_else(|| v.as_i64().map(|x| x.max(0) as u64))
        .unwrap_or(0)
}

/// Every figure of a running container, under its metric's name (`None`: not readable here).
fn container_values(r: &ContainerRecord, d: &ContainerDetail) -> Vec<(&'static str, Option<u64>)> {
    let u = &d.usage;
    let cg = d.cgroup.clone().unwrap_or_default();
    let fs = d.filesystem;
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    // from /proc the resident memory is the rss; from a cgroup its anonymous memory
    let rss = cg.memory_rss.or((u.rss > 0).then_some(u.rss));
    vec![
        (
            "container_cpu_usage_seconds_total",
            Some(u.cpu_ns / NS_PER_S),
        ),
        (
            "container_cpu_user_seconds_total",
            cg.cpu_user_ns.map(|x| x / NS_PER_S),
        ),
        (
            "container_cpu_system_seconds_total",
            cg.cpu_system_ns.map(|x| x / NS_PER_S),
        ),
        ("container_cpu_cfs_periods_total", cg.cfs_periods),
        (
            "container_cpu_cfs_throttled_periods_total",
            cg.cfs_throttled_periods,
        ),
        (
            "container_cpu_cfs_throttled_seconds_total",
            cg.cfs_throttled_ns.map(|x| x / NS_PER_S),
        ),
        ("container_memory_usage_bytes", Some(u.memory)),
        ("container_memory_working_set_bytes", Some(u.working_set)),
        ("container_memory_rss", rss),
        ("container_memory_cache", cg.memory_cache),
        ("container_memory_mapped_file", cg.memory_mapped_file),
        ("container_memory_swap", cg.memory_swap),
        ("container_memory_kernel_usage", cg.memory_kernel),
        ("container_memory_max_usage_bytes", cg.memory_max_usage),
        ("container_memory_failcnt", cg.memory_failcnt),
        ("container_oom_events_total", cg.oom_kills),
        ("container_processes", Some(u.processes)),
        ("container_threads", Some(d.threads)),
        ("container_threads_max", cg.pids_max),
        ("container_file_descriptors", Some(d.file_descriptors)),
        ("container_sockets", Some(d.sockets)),
        ("container_fs_usage_bytes", fs.map(|f| f.usage_bytes)),
        ("container_fs_limit_bytes", fs.map(|f| f.limit_bytes)),
        ("container_fs_inodes_total", fs.map(|f| f.inodes_total)),
        ("container_fs_inodes_free", fs.map(|f| f.inodes_free)),
        ("container_last_seen", Some(now)),
        (
            "container_start_time_seconds",
            d.started_at.map(|t| t.max(0) as u64),
        ),
        (
            "container_spec_cpu_period",
            Some(spec_u64(r, &["cpu", "period"])),
        ),
        (
            "container_spec_cpu_shares",
            Some(spec_u64(r, &["cpu", "shares"])),
        ),
        (
            "container_spec_memory_limit_bytes",
            Some(spec_u64(r, &["memory", "limit"])),
        ),
        (
            "container_spec_memory_swap_limit_bytes",
            Some(spec_u64(r, &["memory", "swap"])),
        ),
    ]
}

fn container_metrics(
    labels: &[String],
    r: &ContainerRecord,
    d: &ContainerDetail,
) -> Vec<cri::Metric> {
    let t = d.usage.timestamp;
    let mut out: Vec<cri::Metric> = container_values(r, d)
        .into_iter()
        .filter_map(|(name, v)| Some(metric(name, t, labels, v?)))
        .collect();
    let cg = d.cgroup.clone().unwrap_or_default();
    for io in &cg.io {
        let dev = format!("{}:{}", io.major, io.minor);
        for (name, v) in [
            ("container_fs_reads_bytes_total", io.read_bytes),
            ("container_fs_writes_bytes_total", io.write_bytes),
            ("container_fs_reads_total", io.reads),
            ("container_fs_writes_total", io.writes),
        ] {
            let mut l = labels.to_vec();
            l.push(dev.clone());
            out.push(metric(name, t, &l, v));
        }
        for (op, v) in [("Read", io.read_bytes), ("Write", io.write_bytes)] {
            let mut l = labels.to_vec();
            l.extend([io.major.to_string(), io.minor.to_string(), op.to_string()]);
            out.push(metric("container_blkio_device_usage_total", t, &l, v));
        }
    }
    for (kind, v) in [("pgfault", cg.pgfault), ("pgmajfault", cg.pgmajfault)] {
        if let Some(v) = v {
            let mut l = labels.to_vec();
            l.extend([kind.to_string(), "hierarchy".to_string()]);
            out.push(metric("container_memory_failures_total", t, &l, v));
        }
    }
    out
}

/// A pod's metrics: its network's per interface, and each running container's.
async fn pod_metrics(d: &Daemon, u: &PodUsage) -> R<cri::PodSandboxMetrics> {
    let p = &u.pod;
    let mut metrics = Vec::new();
    for i in &u.interfaces {
        let l = [i.name.clone(), p.kube_namespace.clone(), p.name.clone()];
        for (name, value) in [
            ("container_network_receive_bytes_total", i.rx_bytes),
            ("container_network_receive_packets_total", i.rx_packets),
            ("container_network_receive_errors_total", i.rx_errors),
            (
                "container_network_receive_packets_dropped_total",
                i.rx_dropped,
            ),
            ("container_network_transmit_bytes_total", i.tx_bytes),
            ("container_network_transmit_packets_total", i.tx_packets),
            ("container_network_transmit_errors_total", i.tx_errors),
            (
                "container_network_transmit_packets_dropped_total",
                i.tx_dropped,
            ),
        ] {
            metrics.push(metric(name, u.timestamp, &l, value));
        }
    }
    let svc = d.container_service()?;
    let mut per_container = Vec::new();
    for (st, cu) in &u.containers {
        if cu.is_none() {
            continue;
        }
        let Some(detail) = svc.detail(NAMESPACE, st).await else {
            continue;
        };
        let r = &st.record;
        let name = r.pod.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let l = [
            name,
            r.id.clone(),
            r.image.clone(),
            p.kube_namespace.clone(),
            p.name.clone(),
        ];
        per_container.push(cri::ContainerMetrics {
            container_id: r.id.clone(),
            metrics: container_metrics(&l, r, &detail),
        });
    }
    Ok(cri::PodSandboxMetrics {
        pod_sandbox_id: p.id.clone(),
        metrics,
        container_metrics: per_container,
    })
}

pub(super) async fn pods(d: &Arc<Daemon>) -> R<cri::ListPodSandboxMetricsResponse> {
    let all = super::stats::pods_usage(d, "", &HashMap::new()).await?;
    let mut pod_metrics_all = Vec::new();
    for u in &all {
        pod_metrics_all.push(pod_metrics(d, u).await?);
    }
    Ok(cri::ListPodSandboxMetricsResponse {
        pod_metrics: pod_metrics_all,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_and_types() {
        let d = descriptors().descriptors;
        assert!(d
            .iter()
            .any(|m| m.name == "container_memory_working_set_bytes"));
        assert!(d
            .iter()
            .all(|m| !m.help.is_empty() && !m.label_keys.is_empty()));
        let l = vec!["x".to_string(); Labels::Container.keys().len()];
        let m = metric("container_cpu_usage_seconds_total", 1, &l, 2);
        assert_eq!(m.metric_type, cri::MetricType::Counter as i32);
        let m = metric("container_memory_usage_bytes", 1, &l, 2);
        assert_eq!(m.metric_type, cri::MetricType::Gauge as i32);
    }

    #[test]
    fn every_value_is_described_and_unreadable_ones_are_left_out() {
        let r = ContainerRecord {
            spec: serde_json::json!({"linux": {"resources": {"memory": {"limit": 67108864}}}}),
            ..serde_json::from_value(serde_json::json!({
                "id": "c", "name": "c", "image": "i", "snapshotter": "overlayfs",
                "snapshot_key": "c", "runtime": "crun", "spec": {}, "created_at": 0
            }))
            .unwrap()
        };
        let d = ContainerDetail {
            usage: crate::services::stats::Usage {
                timestamp: 1,
                cpu_ns: 3 * NS_PER_S,
                working_set: 10,
                memory: 20,
                rss: 0,
                processes: 1,
                source: crate::services::stats::Source::Cgroup,
            },
            cgroup: None,
            threads: 1,
            file_descriptors: 3,
            sockets: 0,
            filesystem: None,
            started_at: Some(5),
        };
        let l = vec!["x".to_string(); Labels::Container.keys().len()];
        let ms = container_metrics(&l, &r, &d);
        for m in &ms {
            let desc = METRICS.iter().find(|x| x.0 == m.name).expect("described");
            assert_eq!(m.label_values.len(), desc.2.keys().len(), "{}", m.name);
        }
        let v = |n: &str| {
            ms.iter()
                .find(|m| m.name == n)
                .map(|m| m.value.unwrap().value)
        };
        assert_eq!(v("container_cpu_usage_seconds_total"), Some(3));
        assert_eq!(v("container_spec_memory_limit_bytes"), Some(67108864));
        assert_eq!(v("container_spec_cpu_shares"), Some(0));
        // no cgroup, no writable layer: those are absent, not zero
        assert_eq!(v("container_memory_cache"), None);
        assert_eq!(v("container_fs_usage_bytes"), None);
        // a cgroup's block I/O and page faults carry their own labels too
        let mut d = d;
        d.cgroup = Some(crate::cgroup::detail::Detail {
            pgfault: Some(7),
            io: vec![crate::cgroup::detail::DeviceIo {
                major: 8,
                read_bytes: 4096,
                ..Default::default()
            }],
            ..Default::default()
        });
        let ms = container_metrics(&l, &r, &d);
        for m in &ms {
            let desc = METRICS.iter().find(|x| x.0 == m.name).expect("described");
            assert_eq!(m.label_values.len(), desc.2.keys().len(), "{}", m.name);
        }
        let io = ms
            .iter()
            .find(|m| m.name == "container_blkio_device_usage_total")
            .unwrap();
        assert_eq!(io.label_values[5..], ["8", "0", "Read"]);
        assert_eq!(io.value.unwrap().value, 4096);
    }
}
