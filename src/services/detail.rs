//! The finer figures of a running container that metrics show beside its [`Usage`] (CRI's
//! ListPodSandboxMetrics, in cAdvisor's names): its cgroup's breakdown
//! ([`crate::cgroup::detail`]), its processes' threads, open files and sockets from /proc, its
//! writable layer's size and the room on the filesystem under it, and when it started. What
//! cannot be read here (no delegated cgroups, a snapshotter without a writable layer) is
//! `None`, never a made-up zero.

use crate::cgroup::detail::Detail;
use crate::runtime::containers::Status;
use crate::snapshot::Snapshotter;

use super::stats::Usage;
use super::Containers;

/// A container's writable layer and its filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filesystem {
    /// Bytes the writable layer takes.
    pub usage_bytes: u64,
    /// The filesystem holding it: size, inodes and free inodes.
    pub limit_bytes: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

/// A running container's figures for metrics.
#[derive(Debug, Clone)]
pub struct ContainerDetail {
    pub usage: Usage,
    /// Its cgroup's breakdown (`None`: cgroups not delegated).
    pub cgroup: Option<Detail>,
    /// Summed over its processes.
    pub threads: u64,
    pub file_descriptors: u64,
    pub sockets: u64,
    pub filesystem: Option<Filesystem>,
    /// Seconds since the epoch.
    pub started_at: Option<i64>,
}

/// Threads, open file descriptors and sockets of `pids`, from /proc.
fn proc_counts(pids: &[i32]) -> (u64, u64, u64) {
    let (mut threads, mut fds, mut sockets) = (0, 0, 0);
    for p in pids {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        threads += status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/fd")) {
            for e in rd.flatten() {
                fds += 1;
                if std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                {
                    sockets += 1;
                }
            }
        }
    }
    (threads, fds, sockets)
}

/// The filesystem figures of the directory `dir`.
fn statvfs(dir: &std::path::Path) -> Option<(u64, u64, u64)> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((
        s.blocks() as u64 * s.fragment_size() as u64,
        s.files() as u64,
        s.files_free() as u64,
    ))
}

impl Containers {
    /// A running container's figures for metrics; `None` when it does not run.
    pub async fn detail(&self, ns: &str, st: &Status) -> Option<ContainerDetail> {
        let usage = self.usage(ns, st).await?;
        let r = st.record.clone();
        let init = st.task.as_ref().map(|t| t.pid).unwrap_or(0);
        let m = self.manager();
        let d = m.deps().clone();
        let cgroup = d
            .cgroups
            .container_path(&r.id)
            .and_then(|p| d.cgroups.detail(&p));
        let all = m.tasks.client(ns, &r.id).pids().await.unwrap_or_default();
        let pids = super::stats::own_processes(init, &all);
        let ns2 = ns.to_string();
        let (counts, filesystem) = tokio::task::spawn_blocking(move || {
            let fs = (|| {
                let sn = d.snapshotters.get(Some(&r.snapshotter)).ok()?;
                let mounts = sn.mounts(&ns2, &r.snapshot_key).ok()?;
                let dir = match crate::snapshot::changes::layers(&mounts) {
                    Ok((upper, _)) => upper,
                    Err(_) => mounts
                        .first()
                        .map(|m| std::path::PathBuf::from(&m.source))?,
                };
                let used = sn.usage(&ns2, &r.snapshot_key).ok()?;
                let (limit, total, free) = statvfs(&dir)?;
                Some(Filesystem {
                    usage_bytes: used.size,
                    limit_bytes: limit,
                    inodes_total: total,
                    inodes_free: free,
                })
            })();
            (proc_counts(&pids), fs)
        })
        .await
        .ok()?;
        let started_at = st
            .task
            .as_ref()
            .and_then(|t| t.started_at.as_deref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp());
        Some(ContainerDetail {
            usage,
            cgroup,
            threads: counts.0,
            file_descriptors: counts.1,
            sockets: counts.2,
            filesystem,
            started_at,
        })
    }
}
