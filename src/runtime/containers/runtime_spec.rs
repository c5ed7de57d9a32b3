//! The OCI spec as the runtime gets it: the stored spec plus limits, and crun's fixes
//! (precompiled seccomp, read-only cgroup v1 hierarchies, no `/dev/core`).

use super::*;

/// The container's spec as its runtime gets it: crun also gets the seccomp profile compiled
/// (see [`super::seccomp_bpf`]), and a hook that removes the `/dev/core` link it makes.
pub(crate) fn runtime_spec(d: &Deps, r: &ContainerRecord) -> Result<oci_spec::runtime::Spec> {
    let mut v = r.spec.clone();
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
