//! The finer figures of a container's cgroup that metrics (CRI's ListPodSandboxMetrics, in
//! cAdvisor's names) show beside [`super::Stats`]: CFS throttling, user and system CPU time,
//! the memory breakdown, its failures and peak, OOM kills and the pids limit. Each is `None`
//! where this kernel's cgroup version or the delegated controllers do not have it.

use std::path::PathBuf;

use super::{keyed, read_u64, under, Cgroups};

/// A container cgroup's finer figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    pub cfs_periods: Option<u64>,
    pub cfs_throttled_periods: Option<u64>,
    pub cfs_throttled_ns: Option<u64>,
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    pub memory_cache: Option<u64>,
    pub memory_rss: Option<u64>,
    pub memory_mapped_file: Option<u64>,
    pub memory_swap: Option<u64>,
    pub memory_kernel: Option<u64>,
    pub memory_max_usage: Option<u64>,
    /// Times the memory limit was hit.
    pub memory_failcnt: Option<u64>,
    /// Page faults, minor and major.
    pub pgfault: Option<u64>,
    pub pgmajfault: Option<u64>,
    pub oom_kills: Option<u64>,
    /// The pids limit; `Some(0)`: none.
    pub pids_max: Option<u64>,
    /// Block I/O per device (`major:minor`): bytes and operations read and written.
    pub io: Vec<DeviceIo>,
}

/// One block device's I/O by the cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u32,
    pub minor: u32,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// The device entry for `maj:min` in `io`, made if missing.
fn device<'a>(io: &'a mut Vec<DeviceIo>, dev: &str) -> Option<&'a mut DeviceIo> {
    let (ma, mi) = dev.split_once(':')?;
    let (major, minor) = (ma.parse().ok()?, mi.parse().ok()?);
    let i = match io.iter().position(|d| d.major == major && d.minor == minor) {
        Some(i) => i,
        None => {
            io.push(DeviceIo {
                major,
                minor,
                ..Default::default()
            });
            io.len() - 1
        }
    };
    io.get_mut(i)
}

/// v1's `blkio.throttle.io_service_bytes_recursive` and `io_serviced_recursive`: lines
/// `MAJ:MIN Read|Write|… N`.
fn io_v1(bytes: &str, ops: &str) -> Vec<DeviceIo> {
    let mut io = Vec::new();
    for (text, is_bytes) in [(bytes, true), (ops, false)] {
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [dev, op, n] = f[..] else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            let Some(d) = device(&mut io, dev) else {
                continue;
            };
            match (op, is_bytes) {
                ("Read", true) => d.read_bytes += n,
                ("Write", true) => d.write_bytes += n,
                ("Read", false) => d.reads += n,
                ("Write", false) => d.writes += n,
                _ => {}
            }
        }
    }
    io
}

/// v2's `io.stat`: lines `MAJ:MIN rbytes=N wbytes=N rios=N wios=N …`.
fn io_v2(text: &str) -> Vec<DeviceIo> {
    let mut io = Vec::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some(d) = f.next().and_then(|dev| device(&mut io, dev)) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let n = v.parse().unwrap_or(0);
            match k {
                "rbytes" => d.read_bytes += n,
                "wbytes" => d.write_bytes += n,
                "rios" => d.reads += n,
                "wios" => d.writes += n,
                _ => {}
            }
        }
    }
    io
}

/// A limit file's value: a number, or `max` (none: 0).
fn limit(p: &std::path::Path) -> Option<u64> {
    let t = std::fs::read_to_string(p).ok()?;
    match t.trim() {
        "max" => Some(0),
        v => v.parse().ok(),
    }
}

fn text(d: Option<PathBuf>, file: &str) -> String {
    d.and_then(|d| std::fs::read_to_string(d.join(file)).ok())
        .unwrap_or_default()
}

/// USER_HZ ticks in nanoseconds.
fn ticks_ns(t: Option<u64>) -> Option<u64> {
    // SAFETY: sysconf has no side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    t.map(|t| t * (1_000_000_000 / hz))
}

impl Cgroups {
    /// The finer figures of the container cgroup at `path` (`None`: no cgroups).
    pub fn detail(&self, path: &str) -> Option<Detail> {
        match self {
            Cgroups::None { .. } => None,
            Cgroups::V1(v) => {
                let dir = |c: &str| v.dir(c, path).filter(|d| d.exists());
                let cpu = text(dir("cpu"), "cpu.stat");
                let acct = text(dir("cpuacct"), "cpuacct.stat");
                let mem = dir("memory");
                let stat = text(mem.clone(), "memory.stat");
                let memf = |f: &str| mem.as_ref().and_then(|d| read_u64(&d.join(f)));
                Some(Detail {
                    cfs_periods: keyed(&cpu, "nr_periods"),
                    cfs_throttled_periods: keyed(&cpu, "nr_throttled"),
                    cfs_throttled_ns: keyed(&cpu, "throttled_time"),
                    cpu_user_ns: ticks_ns(keyed(&acct, "user")),
                    cpu_system_ns: ticks_ns(keyed(&acct, "system")),
                    memory_cache: keyed(&stat, "total_cache"),
                    memory_rss: keyed(&stat, "total_rss"),
                    memory_mapped_file: keyed(&stat, "total_mapped_file"),
                    // without swap accounting (memsw) there is no swap figure
                    memory_swap: keyed(&stat, "total_swap")
                        .or_else(|| memf("memory.memsw.usage_in_bytes").map(|_| 0)),
                    memory_kernel: memf("memory.kmem.usage_in_bytes"),
                    memory_max_usage: memf("memory.max_usage_in_bytes"),
                    memory_failcnt: memf("memory.failcnt"),
                    pgfault: keyed(&stat, "total_pgfault"),
                    pgmajfault: keyed(&stat, "total_pgmajfault"),
                    oom_kills: v.oom_kills(path),
                    pids_max: dir("pids").and_then(|d| limit(&d.join("pids.max"))),
                    io: {
                        let b = dir("blkio");
                        io_v1(
                            &text(b.clone(), "blkio.throttle.io_service_bytes_recursive"),
                            &text(b, "blkio.throttle.io_serviced_recursive"),
                        )
                    },
                })
            }
            Cgroups::V2(v) => {
                let d = under(&v.mount, path).filter(|d| d.exists())?;
                let cpu = text(Some(d.clone()), "cpu.stat");
                let stat = text(Some(d.clone()), "memory.stat");
                let events = text(Some(d.clone()), "memory.events");
                let us = |k: &str| keyed(&cpu, k).map(|x| x * 1000);
                Some(Detail {
                    cfs_periods: keyed(&cpu, "nr_periods"),
                    cfs_throttled_periods: keyed(&cpu, "nr_throttled"),
                    cfs_throttled_ns: us("throttled_usec"),
                    cpu_user_ns: us("user_usec"),
                    cpu_system_ns: us("system_usec"),
                    memory_cache: keyed(&stat, "file"),
                    memory_rss: keyed(&stat, "anon"),
                    memory_mapped_file: keyed(&stat, "file_mapped"),
                    memory_swap: read_u64(&d.join("memory.swap.current")),
                    memory_kernel: keyed(&stat, "kernel").or_else(|| keyed(&stat, "kernel_stack")),
                    memory_max_usage: read_u64(&d.join("memory.peak")),
                    memory_failcnt: keyed(&events, "max"),
                    pgfault: keyed(&stat, "pgfault"),
                    pgmajfault: keyed(&stat, "pgmajfault"),
                    oom_kills: v.oom_kills(path),
                    pids_max: limit(&d.join("pids.max")),
                    io: io_v2(&text(Some(d.clone()), "io.stat")),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_ticks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pids.max");
        std::fs::write(&p, "max\n").unwrap();
        assert_eq!(limit(&p), Some(0));
        std::fs::write(&p, "20\n").unwrap();
        assert_eq!(limit(&p), Some(20));
        assert_eq!(limit(&d.path().join("none")), None);
        assert!(ticks_ns(Some(1)).unwrap() >= 1_000_000);
        assert_eq!(ticks_ns(None), None);
    }

    #[test]
    fn block_io_per_device() {
        let io = io_v1(
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:16 Read 1\nTotal 12289\n",
            "8:0 Read 2\n8:0 Write 3\nTotal 5\n",
        );
        assert_eq!(io.len(), 2);
        assert_eq!(
            (
                io[0].major,
                io[0].minor,
                io[0].read_bytes,
                io[0].write_bytes,
                io[0].reads,
                io[0].writes
            ),
            (8, 0, 4096, 8192, 2, 3)
        );
        assert_eq!((io[1].minor, io[1].read_bytes), (16, 1));
        let io = io_v2("259:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(
            (
                io[0].major,
                io[0].read_bytes,
                io[0].write_bytes,
                io[0].reads,
                io[0].writes
            ),
            (259, 10, 20, 1, 2)
        );
    }
}
