//! Containers in a pod: what a container of a pod records ([`PodMember`]) and how it joins the
//! pod's namespaces and /etc files ([`PodJoin`]) instead of getting a network of its own. The
//! pod itself (its namespace holder, network, /etc files) belongs to the pods service
//! (`src/services/pods.rs`), which sits above this module.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A container's place in a pod, as recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PodMember {
    /// The pod's id.
    pub pod_id: String,
    /// The container's name within the pod (CRI's metadata name) and attempt.
    pub name: String,
    #[serde(default)]
    pub attempt: u32,
    /// Where the init's output is also written in the CRI log format ("" = nowhere).
    #[serde(default)]
    pub log_path: String,
}

/// What a container of a pod joins.
#[derive(Debug, Clone, Default)]
pub struct PodJoin {
    pub member: PodMember,
    /// The pod's network namespace (its holder's, or nook's for a host-network pod).
    pub netns: PathBuf,
    /// The holder's IPC, UTS and PID namespaces (None: the container gets its own).
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    /// The pod's hostname and its /etc/hostname, /etc/hosts and /etc/resolv.conf.
    pub hostname: String,
    pub hostname_file: PathBuf,
    pub hosts_file: PathBuf,
    pub resolv_file: PathBuf,
    /// The pod's sysctls (the runtime sets them in the shared namespaces).
    pub sysctls: std::collections::BTreeMap<String, String>,
}

/// Points the spec's namespaces at the pod's: the IPC, UTS and PID ones of the holder when
/// given (the hostname is then the pod's, set by the holder, and left out of the spec).
pub fn join_namespaces(spec: &mut Value, j: &PodJoin) {
    let Some(list) = spec["linux"]["namespaces"].as_array_mut() else {
        return;
    };
    for (kind, path) in [("ipc", &j.ipc), ("uts", &j.uts), ("pid", &j.pid)] {
        if let Some(p) = path {
            for n in list.iter_mut().filter(|n| n["type"] == kind) {
                *n = json!({"type": kind, "path": p});
            }
        }
    }
    if !j.sysctls.is_empty() {
        spec["linux"]["sysctl"] = json!(j.sysctls);
    }
    if j.uts.is_some() {
        if let Some(o) = spec.as_object_mut() {
            o.remove("hostname");
        }
    }
}

/// Replaces the masked and read-only paths (CRI's security context) of an unprivileged
/// container's spec; None keeps nook's defaults.
pub fn set_paths(spec: &mut Value, masked: &Option<Vec<String>>, readonly: &Option<Vec<String>>) {
    if spec["linux"].get("maskedPaths").is_none() {
        return; // privileged: nothing is masked
    }
    if let Some(m) = masked {
        spec["linux"]["maskedPaths"] = json!(m);
    }
    if let Some(r) = readonly {
        spec["linux"]["readonlyPaths"] = json!(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_paths() {
        let mut spec = json!({
            "hostname": "x",
            "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "network", "path": "/n"}],
                "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]},
        });
        let j = PodJoin {
            ipc: Some("/proc/9/ns/ipc".into()),
            uts: Some("/proc/9/ns/uts".into()),
            ..Default::default()
        };
        join_namespaces(&mut spec, &j);
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(ns[0], json!({"type": "pid"}));
        assert_eq!(ns[1], json!({"type": "ipc", "path": "/proc/9/ns/ipc"}));
        assert_eq!(ns[2], json!({"type": "uts", "path": "/proc/9/ns/uts"}));
        assert!(spec.get("hostname").is_none());
        set_paths(&mut spec, &Some(vec![]), &None);
        assert_eq!(spec["linux"]["maskedPaths"], json!([]));
        assert_eq!(spec["linux"]["readonlyPaths"], json!(["/proc/sys"]));
    }
}
