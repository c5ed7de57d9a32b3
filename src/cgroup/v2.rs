//! cgroup v2: nookd's own cgroup is what systemd delegated (`Delegate=` on the user's
//! manager, inherited by nook.service). v2 allows processes only in leaves once controllers are
//! enabled for children, so nookd moves into `<own>/daemon`, then enables the delegated
//! controllers in `<own>/cgroup.subtree_control`; containers are `<own>/<id>`.

use std::path::{Path, PathBuf};

use super::{keyed, read_u64, remove_tree, under, writable, Stats};

/// The controllers nook uses when delegated (`cgroup.controllers` of nookd's cgroup).
pub const WANTED: &[&str] = &["cpu", "cpuset", "io", "memory", "pids"];

/// nookd's leaf.
pub const DAEMON_LEAF: &str = "daemon";

/// The v2 backend, set up.
#[derive(Debug, Clone)]
pub struct V2 {
    /// The cgroup2 mount (`/sys/fs/cgroup`).
    pub mount: PathBuf,
    /// The parent of nookd's leaf and of the containers (`/user.slice/…/nook.service`).
    pub base: String,
    /// Delegated controllers nook enabled for containers, plus `freezer` (`cgroup.freeze`
    /// exists in every non-root cgroup).
    pub controllers: Vec<String>,
    pub user: String,
}

/// nookd's cgroup from a `/proc/self/cgroup` text (its `0::` line).
pub fn own_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
}

impl V2 {
    /// Sets nookd up under its own cgroup `own` (relative to `mount`), moving `pid` into the
    /// leaf `daemon` (already there after a restart of nookd: its parent is the base).
    pub fn setup(mount: &Path, own: &str, pid: i32) -> Result<V2, String> {
        let base = match own.strip_suffix(&format!("/{DAEMON_LEAF}")) {
            Some(b) => b.to_string(),
            None => own.to_string(),
        };
        let dir = under(mount, &base).ok_or("bad cgroup path")?;
        if base.is_empty() || base == "/" {
            return Err("nookd runs in the root cgroup, which is not delegated".into());
        }
        if !writable(&dir.join("cgroup.procs")) || !writable(&dir.join("cgroup.subtree_control")) {
            return Err(format!(
                "nookd's cgroup {base} is not delegated to this user (its cgroup.procs and cgroup.subtree_control are not writable)"
            ));
        }
        let available = std::fs::read_to_string(dir.join("cgroup.controllers"))
            .map_err(|e| format!("reading {}/cgroup.controllers: {e}", dir.display()))?;
        let mut controllers: Vec<String> = available
            .split_whitespace()
            .filter(|c| WANTED.contains(c))
            .map(String::from)
            .collect();
        if controllers.is_empty() {
            return Err(format!(
                "nookd's cgroup {base} has no controllers (cgroup.controllers: {:?})",
                available.trim()
            ));
        }
        let leaf = dir.join(DAEMON_LEAF);
        match std::fs::create_dir(&leaf) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(format!("creating {}: {e}", leaf.display()))
            }
            _ => {}
        }
        std::fs::write(leaf.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("moving nookd into {}: {e}", leaf.display()))?;
        // what nookd started before (the pause process, the network link, shims of an earlier
        // nookd) is in the base too: into the leaf, or the base could not enable controllers
        let others = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for p in others.split_whitespace().filter(|p| *p != pid.to_string()) {
            let _ = std::fs::write(leaf.join("cgroup.procs"), p);
        }
        let enable: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
        std::fs::write(dir.join("cgroup.subtree_control"), enable.join(" ")).map_err(|e| {
            format!(
                "enabling {} in {}/cgroup.subtree_control: {e} (another process left in {base}?)",
                controllers.join(" "),
                dir.display()
            )
        })?;
        controllers.push("freezer".into());
        controllers.sort();
        Ok(V2 {
            mount: mount.to_path_buf(),
            base,
            controllers,
            user: nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_default(),
        })
    }

    pub fn io_weight(&self) -> bool {
        under(&self.mount, &self.base)
            .is_some_and(|d| d.join(DAEMON_LEAF).join("io.weight").exists())
    }

    pub fn stats(&self, path: &str) -> Option<Stats> {
        let d = under(&self.mount, path)?;
        if !d.exists() {
            return None;
        }
        let mut s = Stats::default();
        if let Ok(t) = std::fs::read_to_string(d.join("cpu.stat")) {
            s.cpu_ns = keyed(&t, "usage_usec").unwrap_or(0) * 1000;
        }
        let usage = read_u64(&d.join("memory.current")).unwrap_or(0);
        let inactive = std::fs::read_to_string(d.join("memory.stat"))
            .ok()
            .and_then(|t| keyed(&t, "inactive_file"))
            .unwrap_or(0);
        s.memory_usage = usage.saturating_sub(inactive);
        s.memory_total = usage;
        s.memory_limit = read_u64(&d.join("memory.max"));
        if let Ok(t) = std::fs::read_to_string(d.join("io.stat")) {
            for l in t.lines() {
                for kv in l.split_whitespace().skip(1) {
                    match kv.split_once('=') {
                        Some(("rbytes", v)) => s.block_read += v.parse().unwrap_or(0),
                        Some(("wbytes", v)) => s.block_write += v.parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }
        s.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
        Some(s)
    }

    pub fn oom_kills(&self, path: &str) -> Option<u64> {
        let t = std::fs::read_to_string(under(&self.mount, path)?.join("memory.events")).ok()?;
        keyed(&t, "oom_kill")
    }

    pub fn remove(&self, path: &str) -> std::io::Result<()> {
        match under(&self.mount, path) {
            Some(d) => remove_tree(&d),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory laid out like a delegated cgroup2 subtree.
    fn fake(controllers: &str) -> (tempfile::TempDir, String) {
        let t = tempfile::tempdir().unwrap();
        let own = "/user.slice/user-1000.slice/user@1000.service/app.slice/nook.service";
        let d = t.path().join(own.trim_start_matches('/'));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(d.join("cgroup.subtree_control"), "").unwrap();
        std::fs::write(d.join("cgroup.procs"), "77\n").unwrap();
        (t, own.to_string())
    }

    #[test]
    fn own_path_is_the_unified_line() {
        assert_eq!(
            own_path("1:name=systemd:/x\n0::/user.slice/a.service\n").as_deref(),
            Some("/user.slice/a.service")
        );
        assert_eq!(own_path("1:cpu:/\n"), None);
    }

    #[test]
    fn setup_moves_nookd_into_a_leaf_then_enables_controllers() {
        let (t, own) = fake("cpuset cpu io memory hugetlb pids rdma\n");
        let d = t.path().join(own.trim_start_matches('/'));
        std::fs::write(d.join("cgroup.procs"), "").unwrap();
        let v = V2::setup(t.path(), &own, 4242).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("daemon/cgroup.procs")).unwrap(),
            "4242"
        );
        assert_eq!(
            std::fs::read_to_string(d.join("cgroup.subtree_control")).unwrap(),
            "+cpuset +cpu +io +memory +pids"
        );
        assert_eq!(v.base, own);
        assert_eq!(
            v.controllers,
            ["cpu", "cpuset", "freezer", "io", "memory", "pids"]
        );
        // nookd restarted: it is in the leaf already; the base stays the same; the pause
        // process left in the base (77) moves into the leaf too
        std::fs::write(d.join("cgroup.procs"), "77\n").unwrap();
        let again = V2::setup(t.path(), &format!("{own}/daemon"), 4343).unwrap();
        assert_eq!(again.base, own);
        assert_eq!(
            std::fs::read_to_string(d.join("daemon/cgroup.procs")).unwrap(),
            "77",
            "the last process written to the leaf"
        );
        let c = super::super::Cgroups::V2(again);
        assert_eq!(c.container_path("abc").unwrap(), format!("{own}/abc"));
    }

    #[test]
    fn setup_refuses_without_controllers_or_in_the_root() {
        let (t, own) = fake("hugetlb\n");
        let e = V2::setup(t.path(), &own, 1).unwrap_err();
        assert!(e.contains("no controllers"), "{e}");
        let e = V2::setup(t.path(), "/", 1).unwrap_err();
        assert!(e.contains("root cgroup"), "{e}");
        let e = V2::setup(t.path(), "/nowhere", 1).unwrap_err();
        assert!(e.contains("not delegated"), "{e}");
    }

    #[test]
    fn stats_and_oom_from_files() {
        let (t, own) = fake("memory pids cpu io\n");
        let v = V2::setup(t.path(), &own, 1).unwrap();
        let c = format!("{own}/c1");
        let d = t.path().join(c.trim_start_matches('/'));
        assert_eq!(v.stats(&c), None);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cpu.stat"), "usage_usec 2500000\nuser_usec 1\n").unwrap();
        std::fs::write(d.join("memory.current"), "50000\n").unwrap();
        std::fs::write(d.join("memory.stat"), "anon 1\ninactive_file 10000\n").unwrap();
        std::fs::write(d.join("memory.max"), "max\n").unwrap();
        std::fs::write(
            d.join("io.stat"),
            "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
        )
        .unwrap();
        std::fs::write(d.join("pids.current"), "4\n").unwrap();
        std::fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        let s = v.stats(&c).unwrap();
        assert_eq!(s.cpu_ns, 2_500_000_000);
        assert_eq!(s.memory_usage, 40000);
        assert_eq!(s.memory_limit, None);
        assert_eq!((s.block_read, s.block_write), (101, 202));
        assert_eq!(s.pids, 4);
        assert_eq!(v.oom_kills(&c), Some(1));
        std::fs::write(d.join("memory.max"), "67108864\n").unwrap();
        assert_eq!(v.stats(&c).unwrap().memory_limit, Some(64 << 20));
        v.remove(&c).unwrap_or_default();
    }
}
