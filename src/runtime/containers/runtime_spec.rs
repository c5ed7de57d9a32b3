//! The OCI spec as the runtime gets it: the stored spec plus limits, and crun's fixes
//! (precompiled seccomp, read-only cgroup v1 hierarchies, no `/dev/core`).

use super::*;

/// The container's spec as its runtime gets it: crun also gets the seccomp profile compiled
/// (see [`super::seccomp_bpf`]), and a hook that removes the `/dev/core` link it makes.
pub(crate) fn runtime_spec(d: &Deps, r: &ContainerRecord) -> Result<oci_spec::runtime::Spec> {
    let mut v = r.spec.clone();
    if r.client.is_some() {
        // said at creation (log and /containers/adapted)
        adapt_client_spec(&mut v);
    }
    super::limits::runtime_spec(d, r, &mut v)?;
    let crun =
        plugin::resolve(&d.config, Some(&r.runtime)).is_ok_and(|rt| plugin::is_crun(&rt.path));
    if crun && d.config.runtime.precompile_seccomp {
        super::seccomp_bpf::annotate(&mut v);
    }
    if crun {
        remove_dev_core(&mut v);
        crun_cgroups_read_only(
            &mut v,
            &std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        );
    }
    Ok(serde_json::from_value(v)?)
}

/// Adapts a containerd client's spec to what rootless nook can do, returning what was
/// changed (said in the log and a `/containers/adapted` event): its cgroupsPath (ctr asks for
/// `/default/ID`, which a rootless runtime cannot make; nook places the container in its own
/// delegated cgroup when there is one) and its device rules and resource limits (not applied:
/// nook's limits come from its own `--memory`, `--cpus`, ... and `nook update`).
pub fn adapt_client_spec(spec: &mut serde_json::Value) -> Vec<String> {
    let mut notes = Vec::new();
    // Debian's crun knows only 1.0.x specs (containerd 2.x's ctr writes 1.2.x); the fields
    // the later versions added are optional, so the spec is given as 1.0.2, as nook's own
    if let Some(v) = spec.get("ociVersion").and_then(|v| v.as_str()) {
        if !v.starts_with("1.0") {
            notes.push(format!(
                "ociVersion {v}: given to the runtime as 1.0.2 (the version nook's runtimes read)"
            ));
            spec["ociVersion"] = serde_json::json!("1.0.2");
        }
    }
    let Some(linux) = spec.get_mut("linux").and_then(|l| l.as_object_mut()) else {
        return notes;
    };
    if let Some(p) = linux.remove("cgroupsPath") {
        notes.push(format!(
            "cgroupsPath {p}: not made rootless; the container goes where nook puts its own"
        ));
    }
    if let Some(res) = linux.remove("resources") {
        let limits: Vec<&str> = res
            .as_object()
            .map(|o| {
                o.keys()
                    .map(String::as_str)
                    .filter(|k| *k != "devices")
                    .collect()
            })
            .unwrap_or_default();
        notes.push(if limits.is_empty() {
            "device cgroup rules: not applied rootless (devices come from the spec's list)"
                .to_string()
        } else {
            format!("resources {limits:?}: not applied (set limits with `nook update`)")
        });
    }
    notes
}

/// crun's read-only bind of /sys/fs/cgroup (a readonlyPath) leaves the v1 hierarchies mounted
/// under it writable: each hierarchy nookd is in (`/proc/self/cgroup`, which the container
/// inherits) becomes a read-only path too. A path crun did not mount is left alone.
fn crun_cgroups_read_only(spec: &mut serde_json::Value, proc_cgroup: &str) {
    let Some(ro) = spec
        .pointer_mut("/linux/readonlyPaths")
        .and_then(|p| p.as_array_mut())
    else {
        return;
    };
    if !ro.iter().any(|p| p == "/sys/fs/cgroup") {
        return;
    }
    for line in proc_cgroup.lines() {
        let ctrls = line.split(':').nth(1).unwrap_or("");
        if ctrls.is_empty() {
            continue; // the cgroup2 line
        }
        let p = format!("/sys/fs/cgroup/{}", ctrls.replace("name=", ""));
        if !ro.iter().any(|x| x == p.as_str()) {
            ro.push(serde_json::json!(p));
        }
    }
}

/// The argument that makes `nook-shim` the hook of [`remove_dev_core`].
pub const DEV_CORE_HOOK_ARG: &str = "--hook-remove-dev-core";

/// crun links /dev/core to /proc/kcore in every container (docker's have none): a
/// createContainer hook, which crun runs in the container's mount namespace once /dev is made
/// and before pivot_root, removes the link under the rootfs path. The hook is `nook-shim`
/// itself (one small exec; see [`dev_core_hook`]).
fn remove_dev_core(spec: &mut serde_json::Value) {
    let Ok(shim) = task::find_shim() else {
        return;
    };
    let Some(root) = spec["root"]["path"].as_str().map(str::to_string) else {
        return;
    };
    let hook = serde_json::json!({
        "path": shim,
        "args": ["nook-shim", DEV_CORE_HOOK_ARG, format!("{root}/dev/core")],
    });
    match spec["hooks"]["createContainer"].as_array_mut() {
        Some(a) => a.push(hook),
        None => spec["hooks"]["createContainer"] = serde_json::json!([hook]),
    }
}

/// The hook of [`remove_dev_core`], run as `nook-shim --hook-remove-dev-core PATH`: reads the
/// container state the runtime writes to its stdin (a hook that leaves it unread fails the
/// runtime's write with EPIPE), then removes the link if it is one. Returns the exit status.
pub fn dev_core_hook(path: &std::ffi::OsStr) -> i32 {
    use std::io::Read;
    let _ = std::io::copy(
        &mut std::io::stdin().lock().take(1 << 24),
        &mut std::io::sink(),
    );
    let p = Path::new(path);
    if p.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        if let Err(e) = std::fs::remove_file(p) {
            eprintln!("nook-shim: removing {}: {e}", p.display());
            return 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_spec_is_adapted_and_said() {
        let mut spec = serde_json::json!({
            "process": {"args": ["true"]},
            "linux": {
                "cgroupsPath": "/default/c1",
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "namespaces": [{"type": "pid"}],
            },
        });
        let notes = adapt_client_spec(&mut spec);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("/default/c1"));
        assert!(notes[1].contains("device"));
        assert!(spec["linux"].get("cgroupsPath").is_none());
        assert!(spec["linux"].get("resources").is_none());
        assert_eq!(spec["linux"]["namespaces"][0]["type"], "pid");
        let mut newer = serde_json::json!({"ociVersion": "1.2.1"});
        assert!(adapt_client_spec(&mut newer)[0].contains("1.2.1"));
        assert_eq!(newer["ociVersion"], "1.0.2");
        let mut limited = serde_json::json!({"linux": {"resources": {"memory": {"limit": 1}}}});
        assert!(adapt_client_spec(&mut limited)[0].contains("memory"));
        assert!(adapt_client_spec(&mut serde_json::json!({})).is_empty());
    }

    #[test]
    fn crun_gets_each_hierarchy_read_only() {
        let mut v =
            serde_json::json!({"linux": {"readonlyPaths": ["/proc/sys", "/sys/fs/cgroup"]}});
        crun_cgroups_read_only(
            &mut v,
            "12:cpu,cpuacct:/user.slice\n9:name=systemd:/x\n3:memory:/\n0::/user.slice\n",
        );
        assert_eq!(
            v["linux"]["readonlyPaths"],
            serde_json::json!([
                "/proc/sys",
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/memory"
            ])
        );
        // privileged (no read-only paths): left alone
        let mut v = serde_json::json!({"linux": {}});
        crun_cgroups_read_only(&mut v, "3:memory:/\n");
        assert!(v["linux"].get("readonlyPaths").is_none());
    }
}
