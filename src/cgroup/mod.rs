//! Resource limits through cgroups, rootless: which controllers root delegated to this user,
//! where nookd and its containers live in the hierarchy, the OCI `linux.resources` of docker's
//! limit flags, and the figures `nook stats` shows.
//!
//! Two backends, one per cgroup version:
//! - **v2** ([`v2`]): nookd's own cgroup, delegated by systemd (`Delegate=` in the
//!   `user@.service` drop-in the setuptool writes). nookd moves into a leaf of its own
//!   (`<own>/daemon`, v2 allows no processes in a cgroup with enabled controllers), enables the
//!   delegated controllers in `<own>/cgroup.subtree_control`, and each container gets
//!   `<own>/<id>`.
//! - **v1** ([`v1`], cgroup v1 and hybrid hosts): a subtree `/nook/user-<UID>` in every v1
//!   hierarchy, made and chowned by `nook-rootless-setuptool.sh delegate USER` (as pam_cgfs or
//!   `cgcreate -a` do). nookd uses `/nook/user-<UID>/nookd-<hash of its state dir>` (so
//!   several daemons of one user never share one), puts itself in `…/daemon`, and each
//!   container in `…/<id>`.
//!
//! Without delegation nothing is passed to the runtime, and a flag that needs a controller is
//! refused with one line naming the controller and the `delegate` command (see
//! [`Cgroups::require`]): a limit is never accepted and silently ignored.

pub mod detail;
pub mod v1;
pub mod v2;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};

/// The cgroup filesystem root on every host nook knows.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where nookd and its containers live, and what they may limit.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// Nothing usable is delegated: `why` says what is missing.
    None {
        why: String,
        user: String,
    },
    V1(v1::V1),
    V2(v2::V2),
}

/// Resource limits, in docker's terms (the flags of `nook run`); `None` is no limit, or
/// unchanged in an update.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio_weight: Option<u16>,
}

/// The CFS period nook sets with `--cpus` (docker's).
pub const CPU_PERIOD: u64 = 100_000;

/// What one container uses, read from its cgroup (and its network namespace).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub cpu_ns: u64,
    /// The working set: usage less the inactive file cache (what the OOM killer weighs).
    pub memory_usage: u64,
    /// Everything charged, page cache included.
    pub memory_total: u64,
    /// `None`: unlimited.
    pub memory_limit: Option<u64>,
    pub block_read: u64,
    pub block_write: u64,
    pub pids: u64,
}

impl Resources {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self == &Resources::default()
    }

    /// Each flag set, with the logical controller it needs (`memory`, `cpu`, `cpuset`, `pids`,
    /// `io`).
    pub fn needs(&self) -> Vec<(&'static str, &'static str)> {
        let mut v = Vec::new();
        let mut add = |set: bool, flag, ctl| {
            if set {
                v.push((flag, ctl));
            }
        };
        add(self.memory.is_some(), "--memory", "memory");
        add(self.memory_swap.is_some(), "--memory-swap", "memory");
        add(
            self.memory_reservation.is_some(),
            "--memory-reservation",
            "memory",
        );
        add(self.cpus.is_some(), "--cpus", "cpu");
        add(self.cpu_shares.is_some(), "--cpu-shares", "cpu");
        add(self.cpuset_cpus.is_some(), "--cpuset-cpus", "cpuset");
        add(self.pids_limit.is_some(), "--pids-limit", "pids");
        add(self.blkio_weight.is_some(), "--blkio-weight", "io");
        v
    }

    /// Checks values as docker does, before anything runs.
    pub fn validate(&self, online_cpus: u32) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if let Some(m) = self.memory {
            if m < 6 << 20 {
                return bad(format!(
                    "--memory {m}: the minimum memory limit is 6m (6 MiB)"
                ));
            }
        }
        if let Some(s) = self.memory_swap {
            match self.memory {
                _ if s == -1 => {}
                None => {
                    return bad(
                        "--memory-swap needs --memory too (it is the limit of memory plus swap)"
                            .into(),
                    )
                }
                Some(m) if s < m => {
                    return bad(format!(
                    "--memory-swap {s} is smaller than --memory {m}: it limits memory plus swap, so it must be at least --memory (or -1 for unlimited swap)"
                ))
                }
                _ => {}
            }
        }
        if let (Some(r), Some(m)) = (self.memory_reservation, self.memory) {
            if r > m {
                return bad(format!(
                    "--memory-reservation {r} must be smaller than --memory {m}"
                ));
            }
        }
        if let Some(c) = self.cpus {
            if !(0.01..=online_cpus as f64).contains(&c) {
                return bad(format!(
                    "--cpus {c}: the range of CPUs here is from 0.01 to {online_cpus}"
                ));
            }
        }
        if let Some(s) = self.cpu_shares {
            if s < 2 {
                return bad(format!("--cpu-shares {s}: the minimum is 2"));
            }
        }
        if let Some(set) = &self.cpuset_cpus {
            let cpus = parse_cpu_list(set).ok_or_else(|| {
                Error::InvalidArgument(format!("--cpuset-cpus {set:?}: expected a list like 0-1,3"))
            })?;
            if let Some(c) = cpus.iter().find(|c| **c >= online_cpus) {
                return bad(format!(
                    "--cpuset-cpus {set:?}: CPU {c} does not exist here (CPUs 0-{})",
                    online_cpus.saturating_sub(1)
                ));
            }
        }
        if let Some(w) = self.blkio_weight {
            if !(10..=1000).contains(&w) {
                return bad(format!("--blkio-weight {w}: the range is 10 to 1000"));
            }
        }
        Ok(())
    }

    /// Merges an update: fields set in `u` replace those here.
    pub fn merge(&mut self, u: &Resources) {
        macro_rules! take {
            ($($f:ident),*) => {$( if u.$f.is_some() { self.$f = u.$f.clone(); } )*};
        }
        take!(
            memory,
            memory_swap,
            memory_reservation,
            cpus,
            cpu_shares,
            cpuset_cpus,
            pids_limit,
            blkio_weight
        );
    }

    /// The OCI `linux.resources` object (runc and crun translate it for cgroup v2).
    pub fn to_oci(&self) -> serde_json::Value {
        let mut r = json!({});
        let mut mem = serde_json::Map::new();
        if let Some(m) = self.memory {
            mem.insert("limit".into(), json!(m));
            // docker: without --memory-swap, as much swap as memory
            let swap = self.memory_swap.unwrap_or(2 * m);
            mem.insert("swap".into(), json!(swap));
        } else if let Some(s) = self.memory_swap {
            mem.insert("swap".into(), json!(s));
        }
        if let Some(res) = self.memory_reservation {
            mem.insert("reservation".into(), json!(res));
        }
        if !mem.is_empty() {
            r["memory"] = mem.into();
        }
        let mut cpu = serde_json::Map::new();
        if let Some(c) = self.cpus {
            cpu.insert(
                "quota".into(),
                json!((c * CPU_PERIOD as f64).round() as i64),
            );
            cpu.insert("period".into(), json!(CPU_PERIOD));
        }
        if let Some(s) = self.cpu_shares {
            cpu.insert("shares".into(), json!(s));
        }
        if let Some(set) = &self.cpuset_cpus {
            cpu.insert("cpus".into(), json!(set));
        }
        if !cpu.is_empty() {
            r["cpu"] = cpu.into();
        }
        if let Some(p) = self.pids_limit {
            r["pids"] = json!({"limit": if p <= 0 { -1 } else { p }});
        }
        if let Some(w) = self.blkio_weight {
            r["blockIO"] = json!({"weight": w});
        }
        r
    }
}

/// Parses a cpu list (`0-2,5`).
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut v = Vec::new();
    for part in s.trim().split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 4096 {
                    return None;
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().ok()?),
        }
    }
    Some(v)
}

/// The CPUs the host has online (`/sys/devices/system/cpu/online`).
pub fn online_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .map(|v| v.len() as u32)
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        })
}

/// The host's memory in bytes (`MemTotal`), shown as the limit of an unlimited container.
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|k| k * 1024)
        .unwrap_or(0)
}

/// The `delegate` command a user is told to run.
pub fn delegate_hint(user: &str) -> String {
    format!("run `sudo nook-rootless-setuptool.sh delegate {user}` once (see docs/rootless.md, \"Resource limits\")")
}

/// Reads a file of one number.
pub(crate) fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`, `memory.events`,
/// `memory.oom_control`): lines `key value`.
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A path relative to a hierarchy's root, refusing `..` (paths come from specs).
pub(crate) fn under(mount: &Path, rel: &str) -> Option<PathBuf> {
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    })
}

/// Removes a cgroup directory and the empty cgroups below it (a cgroup is removed with
/// `rmdir`, never by deleting its files). Missing is fine.
pub(crate) fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether this process may write `p` (access(2) with the real ids, as the kernel checks a
/// cgroup file's owner).
pub(crate) fn writable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// A short stable name for one nookd: from its state directory.
pub fn instance_name(state: &Path) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(state.as_os_str().as_encoded_bytes());
    format!("nookd-{}", &hex::encode(h)[..12])
}

impl Cgroups {
    /// Finds what is delegated to the user `host_uid` and sets nookd up in it: its own leaf
    /// (it moves `pid` there) and the parent of its containers' cgroups. Never fails: what
    /// cannot be used is reported by [`Cgroups::require`] and `nook info`.
    pub fn setup(host_uid: u32, state: &Path, pid: i32) -> Cgroups {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(host_uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| host_uid.to_string());
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            // a pure cgroup v2 host
            let own = std::fs::read_to_string("/proc/self/cgroup")
                .ok()
                .and_then(|t| v2::own_path(&t));
            return match own {
                Some(own) => match v2::V2::setup(root, &own, pid) {
                    Ok(v) => Cgroups::V2(v),
                    Err(why) => Cgroups::None { why, user },
                },
                None => Cgroups::None {
                    why: "nookd has no cgroup v2 path in /proc/self/cgroup".into(),
                    user,
                },
            };
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let hier = v1::hierarchies(&mounts);
        if hier.is_empty() {
            return Cgroups::None {
                why: "no cgroup hierarchy is mounted".into(),
                user,
            };
        }
        match v1::V1::setup(hier, host_uid, &instance_name(state), pid) {
            Ok(v) => Cgroups::V1(v),
            Err(why) => Cgroups::None { why, user },
        }
    }

    /// The logical controllers containers can be limited by: `memory`, `cpu`, `cpuset`,
    /// `pids`, `io`, `freezer`.
    pub fn delegated(&self) -> BTreeSet<String> {
        match self {
            Cgroups::None { .. } => BTreeSet::new(),
            Cgroups::V1(v) => v.logical(),
            Cgroups::V2(v) => v.controllers.iter().cloned().collect(),
        }
    }

    /// `v1`, `v2` or `none`.
    pub fn version(&self) -> &'static str {
        match self {
            Cgroups::None { .. } => "none",
            Cgroups::V1(_) => "v1",
            Cgroups::V2(_) => "v2",
        }
    }

    /// One line about the state of delegation, for `nook info` and the plugin list.
    pub fn describe(&self) -> String {
        match self {
            Cgroups::None { why, user } => {
                format!("not delegated ({why}): {}", delegate_hint(user))
            }
            Cgroups::V1(v) => format!(
                "cgroup v1 at {} (controllers: {})",
                v.base,
                self.delegated().into_iter().collect::<Vec<_>>().join(" ")
            ),
            Cgroups::V2(v) => format!(
                "cgroup v2 at {} (controllers: {})",
                v.base,
                v.controllers.join(" ")
            ),
        }
    }

    /// The `cgroupsPath` of container `id`, when cgroups are delegated.
    pub fn container_path(&self, id: &str) -> Option<String> {
        match self {
            Cgroups::None { .. } => None,
            Cgroups::V1(v) => Some(format!("{}/{id}", v.base)),
            Cgroups::V2(v) => Some(format!("{}/{id}", v.base)),
        }
    }

    /// Refuses limits whose controller is not delegated, in one line naming the controller
    /// and the `delegate` command.
    pub fn require(&self, r: &Resources) -> Result<()> {
        let have = self.delegated();
        for (flag, ctl) in r.needs() {
            if !have.contains(ctl) {
                return Err(Error::Precondition(self.missing(flag, ctl)));
            }
            if ctl == "io" && !self.io_weight() {
                return Err(Error::Precondition(format!(
                    "{flag} needs an io scheduler with weights (blkio.weight, blkio.bfq.weight or io.weight), which this kernel does not offer for the delegated cgroup"
                )));
            }
        }
        Ok(())
    }

    /// Refuses `pause` without the freezer.
    pub fn require_freezer(&self, what: &str) -> Result<()> {
        if self.delegated().contains("freezer") {
            Ok(())
        } else {
            Err(Error::Precondition(self.missing(what, "freezer")))
        }
    }

    fn missing(&self, flag: &str, ctl: &str) -> String {
        let name = match (self, ctl) {
            (Cgroups::V1(_) | Cgroups::None { .. }, "io") => "blkio",
            _ => ctl,
        };
        let user = match self {
            Cgroups::None { user, .. } => user.clone(),
            Cgroups::V1(v) => v.user.clone(),
            Cgroups::V2(v) => v.user.clone(),
        };
        let why = match self {
            Cgroups::None { why, .. } => format!(" ({why})"),
            _ => String::new(),
        };
        format!(
            "{flag} needs the {name} cgroup controller, which is not delegated to {user}{why}: {}",
            delegate_hint(&user)
        )
    }

    fn io_weight(&self) -> bool {
        match self {
            Cgroups::None { .. } => false,
            Cgroups::V1(v) => v.io_weight(),
            Cgroups::V2(v) => v.io_weight(),
        }
    }

    /// What the container at `path` uses now.
    pub fn stats(&self, path: &str) -> Option<Stats> {
        match self {
            Cgroups::None { .. } => None,
            Cgroups::V1(v) => v.stats(path),
            Cgroups::V2(v) => v.stats(path),
        }
    }

    /// How many times the kernel's OOM killer killed a process in the cgroup at `path`.
    pub fn oom_kills(&self, path: &str) -> Option<u64> {
        match self {
            Cgroups::None { .. } => None,
            Cgroups::V1(v) => v.oom_kills(path),
            Cgroups::V2(v) => v.oom_kills(path),
        }
    }

    /// Removes the container's cgroup (the runtime's `delete` usually has; this catches
    /// what it left).
    pub fn remove(&self, path: &str) {
        let res = match self {
            Cgroups::None { .. } => Ok(()),
            Cgroups::V1(v) => v.remove(path),
            Cgroups::V2(v) => v.remove(path),
        };
        if let Err(e) = res {
            tracing::warn!("removing the cgroup {path}: {e}");
        }
    }
}

/// Reads the sent/received bytes of a network namespace's interfaces but `lo`
/// (`/proc/PID/net/dev` of a process in it).
pub fn net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0, 0);
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_to_oci() {
        let r = Resources {
            memory: Some(64 << 20),
            cpus: Some(0.5),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            pids_limit: Some(20),
            blkio_weight: Some(300),
            ..Default::default()
        };
        let v = r.to_oci();
        assert_eq!(v["memory"]["limit"], 64 << 20);
        assert_eq!(
            v["memory"]["swap"],
            128 << 20,
            "docker: swap = memory by default"
        );
        assert_eq!(v["cpu"]["quota"], 50_000);
        assert_eq!(v["cpu"]["period"], 100_000);
        assert_eq!(v["cpu"]["shares"], 512);
        assert_eq!(v["cpu"]["cpus"], "0");
        assert_eq!(v["pids"]["limit"], 20);
        assert_eq!(v["blockIO"]["weight"], 300);
        assert_eq!(Resources::default().to_oci(), json!({}));
        let unl = Resources {
            pids_limit: Some(0),
            ..Default::default()
        };
        assert_eq!(unl.to_oci()["pids"]["limit"], -1);
    }

    #[test]
    fn validation_as_docker() {
        let ok = |r: Resources| r.validate(2).is_ok();
        assert!(ok(Resources {
            memory: Some(64 << 20),
            memory_swap: Some(-1),
            ..Default::default()
        }));
        assert!(!ok(Resources {
            memory: Some(1 << 20),
            ..Default::default()
        }));
        assert!(!ok(Resources {
            memory: Some(64 << 20),
            memory_swap: Some(32 << 20),
            ..Default::default()
        }));
        assert!(!ok(Resources {
            memory_swap: Some(64 << 20),
            ..Default::default()
        }));
        assert!(!ok(Resources {
            cpus: Some(3.0),
            ..Default::default()
        }));
        assert!(ok(Resources {
            cpus: Some(0.5),
            ..Default::default()
        }));
        assert!(!ok(Resources {
            cpuset_cpus: Some("0-2".into()),
            ..Default::default()
        }));
        assert!(!ok(Resources {
            cpuset_cpus: Some("x".into()),
            ..Default::default()
        }));
        assert!(!ok(Resources {
            blkio_weight: Some(5),
            ..Default::default()
        }));
    }

    #[test]
    fn merge_keeps_unset() {
        let mut a = Resources {
            memory: Some(100 << 20),
            pids_limit: Some(10),
            ..Default::default()
        };
        a.merge(&Resources {
            pids_limit: Some(50),
            ..Default::default()
        });
        assert_eq!(a.memory, Some(100 << 20));
        assert_eq!(a.pids_limit, Some(50));
    }

    #[test]
    fn refusal_names_the_controller_and_the_command() {
        let c = Cgroups::None {
            why: "nothing under /nook/user-1002".into(),
            user: "nookother".into(),
        };
        let e = c
            .require(&Resources {
                pids_limit: Some(20),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--pids-limit needs the pids cgroup controller"),
            "{e}"
        );
        assert!(e.contains("delegate nookother"), "{e}");
        assert!(!e.contains('\n'));
        assert!(c.require(&Resources::default()).is_ok());
        assert!(c
            .require_freezer("pause")
            .unwrap_err()
            .to_string()
            .contains("freezer"));
    }

    #[test]
    fn cpu_lists_and_net_dev() {
        assert_eq!(parse_cpu_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list("1\n"), Some(vec![1]));
        assert_eq!(parse_cpu_list("2-1"), None);
        let dev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    2000      10    0    0    0     0          0         0      300       3    0    0    0     0       0          0\n";
        assert_eq!(net_dev(dev), (2000, 300));
    }

    #[test]
    fn instance_names_are_stable_and_distinct() {
        let a = instance_name(Path::new("/run/user/1000/nook"));
        assert_eq!(a, instance_name(Path::new("/run/user/1000/nook")));
        assert_ne!(a, instance_name(Path::new("/tmp/x/state")));
        assert!(a.starts_with("nookd-") && a.len() == 18);
    }
}
