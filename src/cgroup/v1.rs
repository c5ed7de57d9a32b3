//! cgroup v1 (and hybrid hosts): one hierarchy per controller (or group of controllers), each
//! with the subtree `/nook/user-<UID>` that root delegated (`nook-rootless-setuptool.sh
//! delegate`). runc and crun put a container in the same path of *every* mounted hierarchy, so
//! a cgroupsPath is only usable when all of them are delegated.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{keyed, read_u64, remove_tree, under, writable, Stats};

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq)]
pub struct Hierarchy {
    /// Its mount point (`/sys/fs/cgroup/memory`).
    pub mount: PathBuf,
    /// Its controllers (`memory`; `cpu`, `cpuacct`; `name=systemd`; `unified` for the v2
    /// hierarchy of a hybrid host).
    pub controllers: Vec<String>,
}

impl Hierarchy {
    /// The v2 hierarchy of a hybrid host: crun makes the container's cgroup there too, but
    /// nookd cannot move itself in (v2 wants write access to the common ancestor, the root).
    pub fn is_unified(&self) -> bool {
        self.controllers.iter().any(|c| c == "unified")
    }
}

/// The v1 backend, set up.
#[derive(Debug, Clone)]
pub struct V1 {
    pub hierarchies: Vec<Hierarchy>,
    /// nookd's subtree, the same path in every hierarchy (`/nook/user-1001/nookd-…`).
    pub base: String,
    /// The host user's name (for messages).
    pub user: String,
}

/// The subtree the setuptool delegates to user `uid` in every hierarchy.
pub fn user_subtree(uid: u32) -> String {
    format!("/nook/user-{uid}")
}

/// The v1 hierarchies of a `/proc/self/mounts` text.
pub fn hierarchies(mounts: &str) -> Vec<Hierarchy> {
    const OPTS: &[&str] = &[
        "rw",
        "ro",
        "relatime",
        "noatime",
        "nosuid",
        "nodev",
        "noexec",
        "clone_children",
        "xattr",
    ];
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 4 && f[2] == "cgroup2" {
                return Some(Hierarchy {
                    mount: PathBuf::from(f[1]),
                    controllers: vec!["unified".into()],
                });
            }
            if f.len() < 4 || f[2] != "cgroup" {
                return None;
            }
            let controllers = f[3]
                .split(',')
                .filter(|o| !OPTS.contains(o) && !o.starts_with("release_agent="))
                .map(String::from)
                .collect();
            Some(Hierarchy {
                mount: PathBuf::from(f[1]),
                controllers,
            })
        })
        .collect()
}

impl V1 {
    /// Uses `/nook/user-<uid>` when it is writable in every hierarchy: makes nookd's
    /// subtree `<that>/<instance>` and its leaf `daemon`, and moves `pid` there.
    pub fn setup(
        hierarchies: Vec<Hierarchy>,
        uid: u32,
        instance: &str,
        pid: i32,
    ) -> Result<V1, String> {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        let delegated = user_subtree(uid);
        let missing: Vec<String> = hierarchies
            .iter()
            .filter(|h| {
                under(&h.mount, &delegated)
                    .is_none_or(|d| !writable(&d.join("cgroup.procs")) || !writable(&d))
            })
            .map(|h| h.controllers.join(","))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{delegated} is not delegated in the cgroup v1 hierarchies {}",
                missing.join(" ")
            ));
        }
        let v = V1 {
            hierarchies,
            base: format!("{delegated}/{instance}"),
            user,
        };
        // daemons gone long ago leave empty subtrees: remove them (busy ones stay). Another
        // nookd of this user (another root) that is alive keeps its whole subtree: its
        // containers' cgroups are empty for a moment between their mkdir and the runtime
        // moving the process in, and an rmdir then would fail the runtime's writes (ENODEV).
        let alive = |n: &str| {
            v.hierarchies.iter().any(|h| {
                under(&h.mount, &format!("{delegated}/{n}/daemon/cgroup.procs"))
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .is_some_and(|t| !t.trim().is_empty())
            })
        };
        for h in &v.hierarchies {
            if let Some(Ok(rd)) = under(&h.mount, &delegated).map(std::fs::read_dir) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().to_string();
                    if n.starts_with("nookd-") && n != instance && !alive(&n) {
                        let _ = remove_tree(&e.path());
                    }
                }
            }
        }
        let leaf = format!("{}/daemon", v.base);
        for h in &v.hierarchies {
            let dir = under(&h.mount, &leaf).ok_or("bad path")?;
            make(h, &dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            // not in the v2 hierarchy (see is_unified), nor in a named one (name=systemd): the
            // service manager tracks nookd's unit there
            if h.is_unified() || h.controllers.iter().all(|c| c.starts_with("name=")) {
                continue;
            }
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .map_err(|e| format!("moving nookd into {}: {e}", dir.display()))?;
        }
        Ok(v)
    }

    /// The hierarchy holding `controller`.
    fn find(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
    }

    pub(super) fn dir(&self, controller: &str, path: &str) -> Option<PathBuf> {
        under(&self.find(controller)?.mount, path)
    }

    /// The logical controllers delegated (`blkio` is `io`).
    pub fn logical(&self) -> BTreeSet<String> {
        let mut s = BTreeSet::new();
        for (v1, logical) in [
            ("memory", "memory"),
            ("pids", "pids"),
            ("cpu", "cpu"),
            ("cpuset", "cpuset"),
            ("blkio", "io"),
            ("freezer", "freezer"),
        ] {
            if self.find(v1).is_some() {
                s.insert(logical.to_string());
            }
        }
        s
    }

    /// Whether the only weight file is BFQ's (`blkio.bfq.weight`), which crun does not write.
    pub fn bfq_only(&self) -> bool {
        self.dir("blkio", &self.base).is_some_and(|d| {
            !d.join("blkio.weight").exists() && d.join("blkio.bfq.weight").exists()
        })
    }

    /// Whether the blkio controller has a weight file here.
    pub fn io_weight(&self) -> bool {
        self.dir("blkio", &self.base)
            .is_some_and(|d| d.join("blkio.weight").exists() || d.join("blkio.bfq.weight").exists())
    }

    pub fn stats(&self, path: &str) -> Option<Stats> {
        let mem = self.dir("memory", path)?;
        if !mem.exists() {
            return None;
        }
        let mut s = Stats::default();
        if let Some(d) = self.dir("cpuacct", path) {
            s.cpu_ns = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
        }
        let usage = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
        let inactive = std::fs::read_to_string(mem.join("memory.stat"))
            .ok()
            .and_then(|t| keyed(&t, "total_inactive_file"))
            .unwrap_or(0);
        s.memory_usage = usage.saturating_sub(inactive);
        s.memory_total = usage;
        // "unlimited" is the largest page-aligned i64
        s.memory_limit = read_u64(&mem.join("memory.limit_in_bytes")).filter(|l| *l < (1u64 << 62));
        if let Some(d) = self.dir("blkio", path) {
            let text = std::fs::read_to_string(d.join("blkio.throttle.io_service_bytes_recursive"))
                .or_else(|_| std::fs::read_to_string(d.join("blkio.throttle.io_service_bytes")))
                .unwrap_or_default();
            (s.block_read, s.block_write) = blkio(&text);
        }
        if let Some(d) = self.dir("pids", path) {
            s.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
        }
        Some(s)
    }

    pub fn oom_kills(&self, path: &str) -> Option<u64> {
        let t =
            std::fs::read_to_string(self.dir("memory", path)?.join("memory.oom_control")).ok()?;
        keyed(&t, "oom_kill")
    }

    pub fn remove(&self, path: &str) -> std::io::Result<()> {
        for h in &self.hierarchies {
            if let Some(d) = under(&h.mount, path) {
                remove_tree(&d)?;
            }
        }
        Ok(())
    }
}

/// Makes `dir` and its missing parents in hierarchy `h`; in cpuset, a new cgroup has no CPUs
/// and no memory nodes until they are copied from its parent.
fn make(h: &Hierarchy, dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    if let Some(p) = dir.parent() {
        make(h, p)?;
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    if h.controllers.iter().any(|c| c == "cpuset") {
        if let Some(p) = dir.parent() {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let cur = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
                if cur.trim().is_empty() {
                    let v = std::fs::read_to_string(p.join(f))?;
                    std::fs::write(dir.join(f), v.trim())?;
                }
            }
        }
    }
    Ok(())
}

/// Read and written bytes of a `blkio.throttle.io_service_bytes` text.
pub fn blkio(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 {
            let n: u64 = f[2].parse().unwrap_or(0);
            match f[1] {
                "Read" => r += n,
                "Write" => w += n,
                _ => {}
            }
        }
    }
    (r, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "sysfs /sys sysfs rw 0 0\ntmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\ncgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\ncgroup /sys/fs/cgroup/systemd cgroup rw,relatime,xattr,release_agent=/x,name=systemd 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";

    #[test]
    fn reads_hierarchies_from_mounts() {
        let h = hierarchies(MOUNTS);
        assert_eq!(h.len(), 4);
        assert!(h[3].is_unified() && !h[0].is_unified());
        assert_eq!(h[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(h[1].mount, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(h[2].controllers, vec!["name=systemd"]);
    }

    fn fake(root: &Path) -> Vec<Hierarchy> {
        ["memory", "cpuset", "pids", "cpuacct"]
            .iter()
            .map(|c| {
                let m = root.join(c);
                std::fs::create_dir_all(m.join("nook/user-1001")).unwrap();
                std::fs::write(m.join("nook/user-1001/cgroup.procs"), "").unwrap();
                Hierarchy {
                    mount: m,
                    controllers: vec![c.to_string()],
                }
            })
            .collect()
    }

    #[test]
    fn setup_makes_the_daemon_leaf_and_copies_cpusets() {
        let t = tempfile::tempdir().unwrap();
        let h = fake(t.path());
        std::fs::write(t.path().join("cpuset/nook/user-1001/cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(t.path().join("cpuset/nook/user-1001/cpuset.mems"), "0\n").unwrap();
        // a stale daemon's subtree goes; ours is made
        std::fs::create_dir_all(t.path().join("memory/nook/user-1001/nookd-old/daemon")).unwrap();
        // a live daemon's (its leaf holds a process) stays whole, its empty cgroups too
        let live = t.path().join("memory/nook/user-1001/nookd-live");
        std::fs::create_dir_all(live.join("daemon")).unwrap();
        std::fs::create_dir_all(live.join("c1")).unwrap();
        std::fs::write(live.join("daemon/cgroup.procs"), "77\n").unwrap();
        let v = V1::setup(h, 1001, "nookd-abc", 4242).unwrap();
        assert!(
            live.join("c1").is_dir(),
            "a live daemon's container cgroup was removed"
        );
        assert!(!t.path().join("memory/nook/user-1001/nookd-old").exists());
        assert_eq!(v.base, "/nook/user-1001/nookd-abc");
        let leaf = t.path().join("memory/nook/user-1001/nookd-abc/daemon");
        assert_eq!(
            std::fs::read_to_string(leaf.join("cgroup.procs")).unwrap(),
            "4242"
        );
        let cs = t.path().join("cpuset/nook/user-1001/nookd-abc");
        assert_eq!(
            std::fs::read_to_string(cs.join("cpuset.cpus")).unwrap(),
            "0-1"
        );
        assert_eq!(
            std::fs::read_to_string(cs.join("daemon/cpuset.mems")).unwrap(),
            "0"
        );
        assert!(!t.path().join("memory/nook/user-1001/nookd-old").exists());
        assert!(v.logical().contains("memory") && !v.logical().contains("freezer"));
    }

    #[test]
    fn setup_refuses_a_missing_hierarchy() {
        let t = tempfile::tempdir().unwrap();
        let mut h = fake(t.path());
        h.push(Hierarchy {
            mount: t.path().join("devices"),
            controllers: vec!["devices".into()],
        });
        let e = V1::setup(h, 1001, "nookd-abc", 1).unwrap_err();
        assert!(e.contains("devices"), "{e}");
    }

    #[test]
    fn stats_and_oom_from_files() {
        let t = tempfile::tempdir().unwrap();
        let v = V1 {
            hierarchies: fake(t.path()),
            base: "/nook/user-1001/x".into(),
            user: "u".into(),
        };
        let c = "/nook/user-1001/x/c1";
        assert_eq!(v.stats(c), None);
        let mem = t.path().join("memory/nook/user-1001/x/c1");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "10000\n").unwrap();
        std::fs::write(
            mem.join("memory.stat"),
            "cache 5\ntotal_inactive_file 1000\n",
        )
        .unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        let acct = t.path().join("cpuacct/nook/user-1001/x/c1");
        std::fs::create_dir_all(&acct).unwrap();
        std::fs::write(acct.join("cpuacct.usage"), "123456789\n").unwrap();
        let pids = t.path().join("pids/nook/user-1001/x/c1");
        std::fs::create_dir_all(&pids).unwrap();
        std::fs::write(pids.join("pids.current"), "3\n").unwrap();
        let s = v.stats(c).unwrap();
        assert_eq!(s.memory_usage, 9000);
        assert_eq!(s.memory_limit, Some(64 << 20));
        assert_eq!(s.cpu_ns, 123456789);
        assert_eq!(s.pids, 3);
        assert_eq!(v.oom_kills(c), Some(1));
        std::fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(v.stats(c).unwrap().memory_limit, None);
        assert_eq!(v.stats("/nook/../etc"), None);
    }

    #[test]
    fn blkio_sums() {
        let t = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:16 Read 1\nTotal 12289\n";
        assert_eq!(blkio(t), (4097, 8192));
    }
}
