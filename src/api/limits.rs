//! Resource limits and usage on the Containers service: the protobuf forms of
//! [`crate::cgroup::Resources`] and [`crate::runtime::limits::Limits`], and `Stats`.

use std::sync::Arc;

use tonic::Status;

use crate::cgroup::Resources;
use crate::daemon::Daemon;
use crate::proto::containers as pb;
use crate::runtime::containers::Manager;
use crate::runtime::limits::Limits;

/// The limits of a create request.
pub fn from_create(q: &pb::CreateRequest) -> Limits {
    Limits {
        resources: q.resources.as_ref().map(resources).unwrap_or_default(),
        shm_size: q.shm_size,
        oom_score_adj: q.oom_score_adj,
    }
}

/// Protobuf resources → nook's.
pub fn resources(r: &pb::Resources) -> Resources {
    Resources {
        memory: r.memory,
        memory_swap: r.memory_swap,
        memory_reservation: r.memory_reservation,
        cpus: r.cpus,
        cpu_shares: r.cpu_shares,
        cpuset_cpus: r.cpuset_cpus.clone(),
        pids_limit: r.pids_limit,
        blkio_weight: r.blkio_weight.map(|w| w.min(u16::MAX as u32) as u16),
    }
}

/// docker's `HostConfig` limit fields, for `inspect`.
pub fn host_config(l: &Limits) -> serde_json::Value {
    let r = &l.resources;
    serde_json::json!({
        "Memory": r.memory.unwrap_or(0),
        "MemorySwap": r.memory_swap.or(r.memory.map(|m| 2 * m)).unwrap_or(0),
        "MemoryReservation": r.memory_reservation.unwrap_or(0),
        "NanoCpus": r.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
        "CpuShares": r.cpu_shares.unwrap_or(0),
        "CpusetCpus": r.cpuset_cpus.clone().unwrap_or_default(),
        "PidsLimit": r.pids_limit,
        "BlkioWeight": r.blkio_weight.unwrap_or(0),
        "ShmSize": if l.shm_size > 0 { l.shm_size } else { 64 << 20 },
        "OomScoreAdj": l.oom_score_adj.unwrap_or(0),
    })
}

/// Usage of the named containers (or every running one).
pub async fn stats(
    d: &Arc<Daemon>,
    m: &Manager,
    ns: &str,
    ids: &[String],
) -> Result<pb::StatsResponse, Status> {
    if matches!(*d.cgroups, crate::cgroup::Cgroups::None { .. }) {
        return Err(Status::failed_precondition(format!(
            "stats need cgroups, which nookd has none of: {}",
            d.cgroups.describe()
        )));
    }
    let recs = if ids.is_empty() {
        m.records(ns)?
    } else {
        ids.iter()
            .map(|i| m.find(ns, i))
            .collect::<Result<Vec<_>, _>>()?
    };
    let named = !ids.is_empty();
    let online = crate::cgroup::online_cpus();
    let host_mem = crate::cgroup::host_memory();
    let mut out = Vec::new();
    for r in recs {
        let st = m.status(ns, r.clone()).await;
        if !st.running() {
            if named {
                out.push(pb::ContainerStats {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    online_cpus: online,
                    read_at_ns: crate::runtime::limits::monotonic_ns(),
                    ..Default::default()
                });
            }
            continue;
        }
        let pid = st.task.as_ref().map(|t| t.pid).unwrap_or(0);
        let Some((s, rx, tx)) = crate::runtime::limits::stats(m.deps(), &r, pid) else {
            continue;
        };
        out.push(pb::ContainerStats {
            id: r.id.clone(),
            name: r.name.clone(),
            cpu_ns: s.cpu_ns,
            read_at_ns: crate::runtime::limits::monotonic_ns(),
            memory_usage: s.memory_usage,
            memory_limit: s
                .memory_limit
                .map(|l| if host_mem > 0 { l.min(host_mem) } else { l })
                .unwrap_or(host_mem),
            net_rx: rx,
            net_tx: tx,
            block_read: s.block_read,
            block_write: s.block_write,
            pids: s.pids,
            online_cpus: online,
        });
    }
    Ok(pb::StatsResponse { stats: out })
}
