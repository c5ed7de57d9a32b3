//! A container's resource limits and what it uses, on top of [`crate::cgroup`]: the spec's
//! `linux.cgroupsPath` and `linux.resources`, `/dev/shm`'s size and `oomScoreAdj`; `nook
//! update` (`runtime update --resources`), `nook stats`, and the OOM verdict at exit
//! (`OOMKilled`, `/tasks/oom`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::containers::Deps;
use super::containers::{ContainerRecord, Manager};
use super::plugin;
use crate::cgroup::{Cgroups, Resources, Stats};
use crate::error::{Error, Result};

/// What `nook run`/`create` asks for beyond cgroup limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default)]
    pub resources: Resources,
    /// `--shm-size` in bytes (0: docker's 64 MiB).
    #[serde(default)]
    pub shm_size: i64,
    /// `--oom-score-adj`.
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
}

impl Limits {
    /// Checks values and that the cgroup controllers they need are delegated.
    pub fn check(&self, cg: &Cgroups) -> Result<()> {
        self.resources.validate(crate::cgroup::online_cpus())?;
        if self.shm_size < 0 {
            return Err(Error::InvalidArgument(format!(
                "--shm-size {}: must be positive",
                self.shm_size
            )));
        }
        if let Some(a) = self.oom_score_adj {
            if !(-1000..=1000).contains(&a) {
                return Err(Error::InvalidArgument(format!(
                    "--oom-score-adj {a}: the range is -1000 to 1000"
                )));
            }
        }
        cg.require(&self.resources)
    }

    /// Writes the limits into an OCI spec (JSON): `/dev/shm`'s size, `process.oomScoreAdj`,
    /// `linux.resources`, and `linux.cgroupsPath` when cgroups are delegated.
    pub fn apply(&self, spec: &mut serde_json::Value, cgroups_path: Option<&str>) {
        if self.shm_size > 0 {
            if let Some(mounts) = spec["mounts"].as_array_mut() {
                for m in mounts.iter_mut().filter(|m| m["destination"] == "/dev/shm") {
                    if let Some(opts) = m["options"].as_array_mut() {
                        opts.retain(|o| !o.as_str().is_some_and(|s| s.starts_with("size=")));
                        opts.push(
                            format!("size={}k", (self.shm_size as u64).div_ceil(1024)).into(),
                        );
                    }
                }
            }
        }
        if let Some(a) = self.oom_score_adj {
            spec["process"]["oomScoreAdj"] = a.into();
        }
        let linux = &mut spec["linux"];
        match cgroups_path {
            Some(p) => linux["cgroupsPath"] = p.into(),
            None => {
                if let Some(o) = linux.as_object_mut() {
                    o.remove("cgroupsPath");
                }
            }
        }
        // only the keys nook's limits own: others (devices) stay
        let want = self.resources.to_oci();
        if let Some(o) = linux.as_object_mut() {
            let res = o
                .entry("resources")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(ro) = res.as_object_mut() {
                for k in ["memory", "cpu", "pids", "blockIO"] {
                    match want.get(k) {
                        Some(v) => ro.insert(k.to_string(), v.clone()),
                        None => ro.remove(k),
                    };
                }
                if ro.is_empty() {
                    o.remove("resources");
                }
            }
        }
    }
}

/// Refuses what the chosen runtime cannot apply here: on cgroup v1 crun writes only
/// `blkio.weight`, which kernels whose io scheduler is BFQ do not have (runc writes
/// `blkio.bfq.weight` then).
pub fn check_runtime(cg: &Cgroups, r: &Resources, rt: &plugin::RuntimeBinary) -> Result<()> {
    if r.blkio_weight.is_some() && plugin::is_crun(&rt.path) {
        if let Cgroups::V1(v) = cg {
            if v.bfq_only() {
                return Err(Error::Precondition(
                    "--blkio-weight: this kernel's io scheduler (BFQ) has only blkio.bfq.weight, which crun does not write on cgroup v1: use --runtime runc".into(),
                ));
            }
        }
    }
    Ok(())
}

/// The spec handed to the runtime: the record's limits with the cgroup of this nookd (which
/// may differ from when the container was made: delegation done or undone since). Limits
/// without the controllers are refused here too.
pub fn runtime_spec(d: &Deps, r: &ContainerRecord, spec: &mut serde_json::Value) -> Result<()> {
    d.cgroups.require(&r.limits.resources)?;
    r.limits
        .apply(spec, d.cgroups.container_path(&r.id).as_deref());
    Ok(())
}

/// The container's cgroup path, from its spec.
pub fn cgroup_of(r: &ContainerRecord) -> Option<String> {
    r.spec["linux"]["cgroupsPath"].as_str().map(String::from)
}

/// Exits already judged (`ns/id` → exited_at), so that `/tasks/oom` is published once.
fn judged() -> &'static Mutex<HashMap<String, String>> {
    static J: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    J.get_or_init(Default::default)
}

/// After the container's init exited (and before the runtime's `delete` removes its cgroup):
/// whether the kernel's OOM killer killed in it. Records `OOMKilled` and publishes
/// `/tasks/oom` once per exit.
pub fn after_exit(d: &Deps, m: &Manager, ns: &str, r: &ContainerRecord, e: &crate::shim::ExitInfo) {
    let Some(path) = d.cgroups.container_path(&r.id) else {
        return;
    };
    let key = format!("{ns}/{}", r.id);
    {
        let mut j = judged().lock().unwrap_or_else(|e| e.into_inner());
        if j.get(&key) == Some(&e.exited_at) {
            return;
        }
        j.insert(key, e.exited_at.clone());
    }
    let killed = d.cgroups.oom_kills(&path).unwrap_or(0) > 0;
    if killed != r.oom_killed {
        if let Err(err) = m.update_record(ns, &r.id, |rec| rec.oom_killed = killed) {
            tracing::warn!(container = %r.id, "recording OOMKilled: {err}");
        }
    }
    if killed {
        d.events.publish(
            ns,
            "/tasks/oom",
            &[
                ("id", r.id.clone()),
                ("name", r.name.clone()),
                ("exit_code", e.exit_code.to_string()),
            ],
        );
    }
}

/// Forgets the container (removed).
pub fn forget(ns: &str, id: &str) {
    judged()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&format!("{ns}/{id}"));
}

/// `nook update`: new limits on a container, applied at once to a running one (`runtime
/// update --resources FILE`) and kept for its later runs.
pub async fn update(m: &Manager, ns: &str, r: &ContainerRecord, u: &Resources) -> Result<()> {
    let d = m.deps();
    let mut res = r.limits.resources.clone();
    res.merge(u);
    res.validate(crate::cgroup::online_cpus())?;
    d.cgroups.require(u)?;
    check_runtime(
        &d.cgroups,
        u,
        &plugin::resolve(&d.config, Some(&r.runtime))?,
    )?;
    let st = m.status(ns, r.clone()).await;
    if st.running() || st.status() == super::containers::ContainerState::Created {
        let rt = plugin::resolve(&d.config, Some(&r.runtime))?;
        let bundle = m.tasks.bundle_dir(ns, &r.id);
        let file = bundle.join("update.json");
        std::fs::write(&file, serde_json::to_vec(&res.to_oci())?)
            .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
        let out = tokio::process::Command::new(&rt.path)
            .args(&rt.args)
            .arg("--root")
            .arg(m.tasks.runtime_root(&rt.name))
            .arg("update")
            .arg("--resources")
            .arg(&file)
            .arg(&r.id)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| Error::io(format!("running {}", rt.path.display()), e))?;
        let _ = std::fs::remove_file(&file);
        if !out.status.success() {
            return Err(Error::Internal(format!(
                "{} update {}: {}",
                rt.name,
                r.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let path = d.cgroups.container_path(&r.id);
    m.update_record(ns, &r.id, |rec| {
        rec.limits.resources = res.clone();
        let l = rec.limits.clone();
        l.apply(&mut rec.spec, path.as_deref());
    })?;
    // the bundle's config.json, for the next run
    let bundle = m.tasks.bundle_dir(ns, &r.id);
    if bundle.join("config.json").exists() {
        if let Some(rec) = d
            .store
            .get::<ContainerRecord>(crate::metadata::CONTAINERS, ns, &r.id)?
        {
            let spec = super::containers::runtime_spec(d, &rec)?;
            m.tasks.write_spec(&bundle, &spec)?;
        }
    }
    d.events.publish(
        ns,
        "/containers/update",
        &[("id", r.id.clone()), ("name", r.name.clone())],
    );
    Ok(())
}

/// One container's usage now: its cgroup, and its network namespace (through its init's
/// `/proc/PID/net/dev`). `None` when it is not running or has no cgroup.
pub fn stats(d: &Deps, r: &ContainerRecord, pid: i32) -> Option<(Stats, u64, u64)> {
    let s = d.cgroups.stats(&d.cgroups.container_path(&r.id)?)?;
    let (rx, tx) = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|t| crate::cgroup::net_dev(&t))
        .unwrap_or((0, 0));
    Some((s, rx, tx))
}

/// Monotonic nanoseconds, for CPU %.
pub fn monotonic_ns() -> u64 {
    // one process-wide origin: std's Instant is CLOCK_MONOTONIC, and nookd serves every sample
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    ORIGIN
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_writes_the_spec() {
        let mut spec = json!({
            "process": {"args": ["sh"]},
            "mounts": [{"destination": "/dev/shm", "type": "tmpfs", "options": ["nosuid", "size=65536k"]}],
            "linux": {"cgroupsPath": "/old"},
        });
        let l = Limits {
            resources: Resources {
                memory: Some(64 << 20),
                ..Default::default()
            },
            shm_size: 128 << 20,
            oom_score_adj: Some(500),
        };
        l.apply(&mut spec, Some("/nook/user-1/nookd-x/abc"));
        assert_eq!(
            spec["mounts"][0]["options"],
            json!(["nosuid", "size=131072k"])
        );
        assert_eq!(spec["process"]["oomScoreAdj"], 500);
        assert_eq!(spec["linux"]["cgroupsPath"], "/nook/user-1/nookd-x/abc");
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        Limits::default().apply(&mut spec, None);
        assert!(spec["linux"].get("cgroupsPath").is_none());
        assert!(spec["linux"].get("resources").is_none());
    }

    #[test]
    fn check_refuses_bad_values_and_missing_controllers() {
        let none = Cgroups::None {
            why: "x".into(),
            user: "u".into(),
        };
        assert!(Limits {
            shm_size: 1 << 20,
            oom_score_adj: Some(-500),
            ..Default::default()
        }
        .check(&none)
        .is_ok());
        assert!(Limits {
            oom_score_adj: Some(2000),
            ..Default::default()
        }
        .check(&none)
        .is_err());
        let e = Limits {
            resources: Resources {
                memory: Some(64 << 20),
                ..Default::default()
            },
            ..Default::default()
        }
        .check(&none)
        .unwrap_err();
        assert!(e.to_string().contains("memory cgroup controller"), "{e}");
    }
}
