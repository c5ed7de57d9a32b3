//! `POST /containers/{id}/rename` and `GET /containers/{id}/stats` (streamed, `stream=false`,
//! `one-shot`), over the containers service and the cgroup figures `nook stats` reads.

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::containers::{find, manager, service};
use super::{empty, ok_json, ApiError, Req, Res, NS};
use crate::daemon::Daemon;
use crate::runtime::containers::ContainerRecord;

/// `docker rename OLD NEW`.
pub async fn rename(r: &Req, id: &str) -> Res {
    let rec = find(&r.d, id)?;
    let name = r.q("name").unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(ApiError::bad("rename needs a new name (name=...)"));
    }
    match service(&r.d)?.rename(NS, &rec, &name).await {
        Ok(()) => empty(StatusCode::NO_CONTENT),
        Err(crate::error::Error::AlreadyExists(m)) => {
            Err(ApiError::conflict(format!("Conflict. {m}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// The host's CPU time so far (ns), from /proc/stat: what Docker's `system_cpu_usage` is.
fn system_cpu_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("cpu "))?;
            Some(
                l.split_whitespace()
                    .skip(1)
                    .take(7)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum::<u64>(),
            )
        })
        .map(|ticks| ticks * (1_000_000_000 / tick))
        .unwrap_or(0)
}

/// One sample as Docker's CPU block and the rest of the stats object.
struct Sample {
    read: String,
    cpu: Value,
    rest: Value,
}

async fn sample(d: &Daemon, rec: &ContainerRecord) -> Result<Sample, ApiError> {
    let m = manager(d)?;
    let st = m.status(NS, rec.clone()).await;
    let read = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let online = crate::cgroup::online_cpus();
    let host_mem = crate::cgroup::host_memory();
    let pid = st.task.as_ref().map(|t| t.pid).unwrap_or(0);
    let s = if st.running() {
        crate::runtime::limits::stats(m.deps(), rec, pid)
    } else {
        None
    };
    let (s, rx, tx) = s.unwrap_or_default();
    let limit = s
        .memory_limit
        .map(|l| if host_mem > 0 { l.min(host_mem) } else { l })
        .unwrap_or(host_mem);
    let running = st.running();
    Ok(Sample {
        read,
        cpu: json!({
            "cpu_usage": {"total_usage": s.cpu_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": if running { system_cpu_ns() } else { 0 },
            "online_cpus": online,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }),
        rest: json!({
            "name": format!("/{}", rec.name),
            "id": rec.id,
            "pids_stats": {"current": s.pids},
            "num_procs": 0,
            "storage_stats": {},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 0, "minor": 0, "op": "read", "value": s.block_read},
                {"major": 0, "minor": 0, "op": "write", "value": s.block_write},
            ]},
            "memory_stats": if running { json!({"usage": s.memory_usage, "limit": limit, "stats": {}}) } else { json!({}) },
            "networks": {"eth0": {
                "rx_bytes": rx, "rx_packets": 0, "rx_errors": 0, "rx_dropped": 0,
                "tx_bytes": tx, "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0,
            }},
        }),
    })
}

fn zero_cpu() -> Value {
    json!({"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": 0, "throttling_data": {}})
}

fn stats_json(cur: &Sample, pre: Option<&Sample>) -> Value {
    let mut v = cur.rest.clone();
    v["read"] = json!(cur.read);
    v["preread"] = json!(pre.map_or("0001-01-01T00:00:00Z".to_string(), |p| p.read.clone()));
    v["cpu_stats"] = cur.cpu.clone();
    v["precpu_stats"] = pre.map_or_else(zero_cpu, |p| p.cpu.clone());
    v
}

/// `docker stats`: a JSON object per second while `stream` (the default), else one with the
/// previous second's CPU figures (`one-shot`: without them). Needs the cgroups delegated to
/// the user: without them a 409 that says so.
pub async fn stats(r: &Req, id: &str) -> Res {
    let rec = find(&r.d, id)?;
    if matches!(*r.d.cgroups, crate::cgroup::Cgroups::None { .. }) {
        return Err(ApiError::conflict(format!(
            "stats need cgroups, which nookd has none of: {}",
            r.d.cgroups.describe()
        )));
    }
    let stream = r
        .q("stream")
        .is_none_or(|v| matches!(v, "1" | "true" | "True"));
    let one_shot = r.flag("one-shot");
    if !stream {
        let first = sample(&r.d, &rec).await?;
        if one_shot {
            return ok_json(&stats_json(&first, None));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = sample(&r.d, &rec).await?;
        return ok_json(&stats_json(&second, Some(&first)));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let d = r.d.clone();
    tokio::spawn(async move {
        let mut pre: Option<Sample> = None;
        loop {
            let Ok(cur) = sample(&d, &rec).await else {
                return;
            };
            let mut line = serde_json::to_vec(&stats_json(&cur, pre.as_ref())).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
            pre = Some(cur);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(super::streamed("application/json", rx))
}

/// The fields `docker update` may set: the resource limits nook applies, and the restart
/// policy. Any other field set is refused by name.
const UPDATABLE: &[&str] = &[
    "Memory",
    "MemorySwap",
    "MemoryReservation",
    "NanoCpus",
    "CpuShares",
    "CpuQuota",
    "CpuPeriod",
    "CpusetCpus",
    "PidsLimit",
    "BlkioWeight",
    "RestartPolicy",
];

/// `docker update`: resource limits (through the delegated cgroups, applied to the running
/// task and kept for the next start) and the restart policy.
pub async fn update(r: &mut Req, id: &str) -> Res {
    let rec = find(&r.d, id)?;
    let body: Value = r.json().await?;
    if let Some(m) = body.as_object() {
        for (k, v) in m {
            // -1 is "unlimited" for PidsLimit and MemorySwap, which the CLI may send unset
            if !UPDATABLE.contains(&k.as_str()) && !super::create::unset(v) {
                return Err(ApiError::unsupported(&format!("update of {k}")));
            }
        }
    }
    let limits = super::create::limits(&body)?;
    let policy = match body["RestartPolicy"]["Name"].as_str().unwrap_or("") {
        "" => None,
        "on-failure" => Some(match body["RestartPolicy"]["MaximumRetryCount"].as_i64() {
            Some(n) if n > 0 => format!("on-failure:{n}"),
            _ => "on-failure".to_string(),
        }),
        other => Some(other.to_string()),
    };
    if limits.resources.is_empty() && policy.is_none() {
        return Err(ApiError::bad(
            "nothing to update: give a limit (--memory, --cpus, --pids-limit, ...) or --restart",
        ));
    }
    if let Some(p) = &policy {
        service(&r.d)?.set_restart_policy(NS, &rec, p).await?;
    }
    if !limits.resources.is_empty() {
        let m = manager(&r.d)?;
        let rec = find(&r.d, &rec.id)?;
        crate::runtime::limits::update(&m, NS, &rec, &limits.resources).await?;
    }
    ok_json(&json!({"Warnings": []}))
}

/// `docker diff`: the container's changes against its image, `[{"Path", "Kind"}]` with Kind
/// 0 modified, 1 added, 2 deleted.
pub async fn changes(r: &Req, id: &str) -> Res {
    let rec = find(&r.d, id)?;
    let c = service(&r.d)?.changes(NS, &rec).await?;
    let v: Vec<Value> = c
        .into_iter()
        .map(|(p, k)| json!({"Path": p, "Kind": k as u8}))
        .collect();
    ok_json(&v)
}
