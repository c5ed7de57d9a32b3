//! Usage figures of containers and pods, for every front door that shows them (CRI's
//! ContainerStats, PodSandboxStats and metrics; the Docker door and nook's own `stats` read
//! the cgroup through [`crate::runtime::limits::stats`] too). A running container's CPU and
//! memory come from its cgroup where cgroups are delegated, and otherwise are summed over its
//! processes from /proc, so that the figures exist on any machine; a pod's are the sum of its
//! containers' (nook's pods have no cgroup of their own: the holder is a tiny process outside
//! any limit), with the network of the pod's namespace read through its holder.

use crate::error::Result;
use crate::runtime::containers::{ContainerRecord, Status};

use super::pods::PodRecord;
use super::{Containers, Pods};

/// Where a container's figures were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Its cgroup (delegated cgroups).
    Cgroup,
    /// Its processes' /proc entries (no cgroup to read).
    Processes,
}

/// One running container's usage now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Nanoseconds since the epoch, when read.
    pub timestamp: i64,
    /// CPU time used, all cores, in nanoseconds.
    pub cpu_ns: u64,
    /// The working set: memory in use less the inactive file cache (from /proc: resident).
    pub working_set: u64,
    /// All memory charged, page cache included (from /proc: resident).
    pub memory: u64,
    /// Resident memory where known (/proc), else 0.
    pub rss: u64,
    /// Processes (or threads, as the cgroup's pids controller counts them).
    pub processes: u64,
    pub source: Source,
}

/// One network interface's counters (from `/proc/PID/net/dev`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// A pod's usage: the sum of its running containers', each container's own, and its network.
#[derive(Debug, Clone)]
pub struct PodUsage {
    pub pod: PodRecord,
    /// Nanoseconds since the epoch, when read.
    pub timestamp: i64,
    /// Every container of the pod, with its usage while it runs.
    pub containers: Vec<(Status, Option<Usage>)>,
    /// The sum over the running containers (`None`: none runs).
    pub total: Option<Usage>,
    /// The interfaces of the pod's network namespace, loopback left out (none when the pod
    /// is stopped or shares nook's own network).
    pub interfaces: Vec<Interface>,
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// The interfaces of `/proc/PID/net/dev`'s text, loopback left out.
pub fn interfaces(text: &str) -> Vec<Interface> {
    let mut out = Vec::new();
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 12 {
            out.push(Interface {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            });
        }
    }
    out
}

/// The interfaces of the network namespace process `pid` is in.
pub fn interfaces_of(pid: i32) -> Vec<Interface> {
    if pid <= 0 {
        return Vec::new();
    }
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|t| interfaces(&t))
        .unwrap_or_default()
}

impl Containers {
    /// A running container's usage: its cgroup's where cgroups are delegated, else summed
    /// over its processes from /proc. `None` when it does not run (or its shim is gone).
    pub async fn usage(&self, ns: &str, st: &Status) -> Option<Usage> {
        if !st.running() {
            return None;
        }
        let r = &st.record;
        let pid = st.task.as_ref().map(|t| t.pid).unwrap_or(0);
        let m = self.manager();
        if let Some((s, _, _)) = crate::runtime::limits::stats(m.deps(), r, pid) {
            return Some(Usage {
                timestamp: now_ns(),
                cpu_ns: s.cpu_ns,
                working_set: s.memory_usage,
                memory: s.memory_total.max(s.memory_usage),
                rss: 0,
                processes: s.pids,
                source: Source::Cgroup,
            });
        }
        self.process_usage(ns, r, pid).await
    }

    /// A running container's CPU time and resident memory summed over its processes from
    /// /proc: the figures where its cgroup cannot be read (not delegated). Its processes are
    /// its init and the init's descendants: a container of a pod may share the pod's PID
    /// namespace with the holder and the other containers.
    async fn process_usage(&self, ns: &str, r: &ContainerRecord, init: i32) -> Option<Usage> {
        let all = self.manager().tasks.client(ns, &r.id).pids().await.ok()?;
        let pids = own_processes(init, &all);
        // SAFETY: sysconf has no side effects.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let (mut cpu, mut rss) = (0u64, 0u64);
        for p in &pids {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // after the command's closing parenthesis: state is field 3, utime 14, stime 15
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            if f.len() > 12 {
                cpu += (f[11] + f[12]) * 1_000_000_000 / tick;
            }
            let statm = std::fs::read_to_string(format!("/proc/{p}/statm")).unwrap_or_default();
            rss += statm
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
                * page;
        }
        Some(Usage {
            timestamp: now_ns(),
            cpu_ns: cpu,
            working_set: rss,
            memory: rss,
            rss,
            processes: pids.len() as u64,
            source: Source::Processes,
        })
    }
}

/// The container's own processes among `pids` (what its shim listed): its init and the
/// init's descendants, read from /proc.
pub(super) fn own_processes(init: i32, pids: &[i32]) -> Vec<i32> {
    descendants(init, pids, |p| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // after the command's closing parenthesis: state, then the parent's pid
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    })
}

/// `init` and those of `pids` descended from it, given each process's parent.
fn descendants(init: i32, pids: &[i32], parent: impl Fn(i32) -> Option<i32>) -> Vec<i32> {
    if !pids.contains(&init) {
        return Vec::new();
    }
    let parents: Vec<(i32, Option<i32>)> = pids.iter().map(|&p| (p, parent(p))).collect();
    let mut out = vec![init];
    let mut grew = true;
    while grew {
        grew = false;
        for (p, pp) in &parents {
            if !out.contains(p) && pp.is_some_and(|pp| out.contains(&pp)) {
                out.push(*p);
                grew = true;
            }
        }
    }
    out
}

/// The sum of `u` (its source: the cgroup's only when every part came from one).
fn sum<'a>(u: impl Iterator<Item = &'a Usage>) -> Option<Usage> {
    u.copied().reduce(|a, b| Usage {
        timestamp: a.timestamp.max(b.timestamp),
        cpu_ns: a.cpu_ns + b.cpu_ns,
        working_set: a.working_set + b.working_set,
        memory: a.memory + b.memory,
        rss: a.rss + b.rss,
        processes: a.processes + b.processes,
        source: if a.source == b.source {
            a.source
        } else {
            Source::Processes
        },
    })
}

impl Pods {
    /// Pod `p`'s usage now: each of its containers', their sum, and its network's counters.
    pub async fn usage(&self, ns: &str, p: PodRecord) -> Result<PodUsage> {
        let c = self.containers();
        let m = c.manager();
        let mut containers = Vec::new();
        for r in self.members(ns, &p.id)? {
            let st = m.status(ns, r).await;
            let u = c.usage(ns, &st).await;
            containers.push((st, u));
        }
        let total = sum(containers.iter().filter_map(|(_, u)| u.as_ref()));
        let interfaces = if p.ready && !p.host_network {
            interfaces_of(p.holder_pid)
        } else {
            Vec::new()
        };
        Ok(PodUsage {
            pod: p,
            timestamp: now_ns(),
            containers,
            total,
            interfaces,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_interfaces() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    2048      12    3    0    0     0          0         0     1024       8    5    0    0     0       0          0
";
        let got = interfaces(text);
        assert_eq!(
            got,
            vec![Interface {
                name: "eth0".into(),
                rx_bytes: 2048,
                rx_packets: 12,
                rx_errors: 3,
                rx_dropped: 0,
                tx_bytes: 1024,
                tx_packets: 8,
                tx_errors: 5,
                tx_dropped: 0,
            }]
        );
        assert!(interfaces("").is_empty());
        let u = |cpu, src| Usage {
            timestamp: 1,
            cpu_ns: cpu,
            working_set: 10,
            memory: 20,
            rss: 0,
            processes: 1,
            source: src,
        };
        let s = sum([u(5, Source::Cgroup), u(7, Source::Cgroup)].iter()).unwrap();
        assert_eq!(
            (s.cpu_ns, s.working_set, s.memory, s.processes),
            (12, 20, 40, 2)
        );
        assert_eq!(s.source, Source::Cgroup);
        let s = sum([u(5, Source::Cgroup), u(7, Source::Processes)].iter()).unwrap();
        assert_eq!(s.source, Source::Processes);
        assert!(sum(std::iter::empty()).is_none());
        // a pod's shared PID namespace: the holder (1), this container (2 → 4) and another (3)
        let parent = |p| {
            Some(match p {
                4 => 2,
                5 => 4,
                _ => 0,
            })
        };
        assert_eq!(descendants(2, &[1, 2, 3, 4, 5], parent), vec![2, 4, 5]);
        assert!(descendants(2, &[1, 3], parent).is_empty());
    }
}
