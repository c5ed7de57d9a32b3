//! CRI metrics: ListMetricDescriptors and ListPodSandboxMetrics, the unstructured key/value
//! form of the same figures PodSandboxStats gives ([`crate::services::stats`]), named as
//! cAdvisor names them so a kubelet's `/metrics/cadvisor` keeps its meaning. CRI carries
//! integers only: CPU time is in whole seconds.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use tonic::Status;

use crate::daemon::Daemon;
use crate::services::stats::{PodUsage, Usage};

type R<T> = Result<T, Status>;

/// The labels of a container's metrics, in order.
const CONTAINER_LABELS: &[&str] = &["container", "id", "image", "namespace", "pod"];
/// The labels of a pod's network metrics, in order.
const NETWORK_LABELS: &[&str] = &["interface", "namespace", "pod"];

/// What is served: name, help, labels, and whether it is a counter.
const METRICS: &[(&str, &str, &[&str], bool)] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative CPU time consumed, in whole seconds",
        CONTAINER_LABELS,
        true,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        CONTAINER_LABELS,
        false,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes (usage less the inactive file cache)",
        CONTAINER_LABELS,
        false,
    ),
    (
        "container_processes",
        "Number of processes running inside the container",
        CONTAINER_LABELS,
        false,
    ),
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        NETWORK_LABELS,
        true,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        NETWORK_LABELS,
        true,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        NETWORK_LABELS,
        true,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        NETWORK_LABELS,
        true,
    ),
];

pub(super) fn descriptors() -> cri::ListMetricDescriptorsResponse {
    cri::ListMetricDescriptorsResponse {
        descriptors: METRICS
            .iter()
            .map(|(name, help, labels, _)| cri::MetricDescriptor {
                name: name.to_string(),
                help: help.to_string(),
                label_keys: labels.iter().map(|l| l.to_string()).collect(),
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

fn container_metrics(labels: &[String], u: &Usage) -> Vec<cri::Metric> {
    let t = u.timestamp;
    vec![
        metric(
            "container_cpu_usage_seconds_total",
            t,
            labels,
            u.cpu_ns / 1_000_000_000,
        ),
        metric("container_memory_usage_bytes", t, labels, u.memory),
        metric(
            "container_memory_working_set_bytes",
            t,
            labels,
            u.working_set,
        ),
        metric("container_processes", t, labels, u.processes),
    ]
}

/// A pod's metrics: its network's per interface, and each running container's.
fn pod_metrics(u: &PodUsage) -> cri::PodSandboxMetrics {
    let p = &u.pod;
    let mut metrics = Vec::new();
    for i in &u.interfaces {
        let l = [i.name.clone(), p.kube_namespace.clone(), p.name.clone()];
        for (name, value) in [
            ("container_network_receive_bytes_total", i.rx_bytes),
            ("container_network_receive_errors_total", i.rx_errors),
            ("container_network_transmit_bytes_total", i.tx_bytes),
            ("container_network_transmit_errors_total", i.tx_errors),
        ] {
            metrics.push(metric(name, u.timestamp, &l, value));
        }
    }
    let container_metrics = u
        .containers
        .iter()
        .filter_map(|(st, cu)| {
            let cu = cu.as_ref()?;
            let r = &st.record;
            let name = r.pod.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            let l = [
                name,
                r.id.clone(),
                r.image.clone(),
                p.kube_namespace.clone(),
                p.name.clone(),
            ];
            Some(cri::ContainerMetrics {
                container_id: r.id.clone(),
                metrics: container_metrics(&l, cu),
            })
        })
        .collect();
    cri::PodSandboxMetrics {
        pod_sandbox_id: p.id.clone(),
        metrics,
        container_metrics,
    }
}

pub(super) async fn pods(d: &Arc<Daemon>) -> R<cri::ListPodSandboxMetricsResponse> {
    let all = super::stats::pods_usage(d, "", &HashMap::new()).await?;
    Ok(cri::ListPodSandboxMetricsResponse {
        pod_metrics: all.iter().map(pod_metrics).collect(),
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
        assert!(METRICS.iter().all(|m| !m.1.is_empty()));
        let l = vec!["x".to_string(); CONTAINER_LABELS.len()];
        let m = metric("container_cpu_usage_seconds_total", 1, &l, 2);
        assert_eq!(m.metric_type, cri::MetricType::Counter as i32);
        let m = metric("container_memory_usage_bytes", 1, &l, 2);
        assert_eq!(m.metric_type, cri::MetricType::Gauge as i32);
    }
}
