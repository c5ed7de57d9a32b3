//! What `nook system info` reports beyond nookd's own settings: the helper programs nookd runs
//! (OCI runtimes, the network link, fuse-overlayfs, the id mappers) with the path found and the
//! version each prints, and the kernel features rootless containers depend on, each with the
//! value read and where it came from.

use std::path::Path;
use std::time::Duration;

use crate::daemon::Daemon;

/// A helper program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    /// Absolute path found (empty: not found).
    pub path: String,
    /// The version number (e.g. `1.1.5+ds1`), empty when it reports none.
    pub version: String,
    /// The first line the program prints for `--version`.
    pub version_line: String,
    /// Why there is no version (not found, failed, prints none).
    pub error: String,
}

/// A kernel or system feature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feature {
    pub name: String,
    /// `yes`, `no`, or a value (a number, a list).
    pub value: String,
    /// Where the value comes from, or why it is what it is.
    pub detail: String,
}

/// The version number in a `--version` line: the first word starting with a digit (after an
/// optional `v`).
pub fn version_number(line: &str) -> String {
    line.split(|c: char| c.is_whitespace() || c == ',')
        .map(|w| w.strip_prefix('v').unwrap_or(w))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("")
        .to_string()
}

/// The line of `--version` output that names the program (fuse-overlayfs prints
/// fusermount3's version first), else the first line.
pub fn version_line(text: &str, program: &Path) -> String {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .find(|l| !name.is_empty() && l.starts_with(&name))
        .or(lines.first())
        .map(|l| l.to_string())
        .unwrap_or_default()
}

/// Runs `path --version` (5 s at most) and fills in the version.
async fn probe(name: &str, wanted: &str) -> Component {
    let mut c = Component {
        name: name.to_string(),
        ..Default::default()
    };
    let Some(p) = crate::bootstrap::preflight::which(wanted) else {
        c.error = format!("{wanted} not found in PATH");
        return c;
    };
    c.path = p.display().to_string();
    // a binary's version changes only with the binary: ask again only when it changed
    let stamp = std::fs::metadata(&p)
        .ok()
        .map(|m| (m.modified().ok(), m.len()));
    let key = (p.clone(), stamp);
    if let Some(hit) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Component {
            name: name.to_string(),
            ..hit.clone()
        };
    }
    let c = ask_version(c, &p).await;
    if c.error.is_empty() || !c.version.is_empty() {
        cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, c.clone());
    }
    c
}

type CacheKey = (
    std::path::PathBuf,
    Option<(Option<std::time::SystemTime>, u64)>,
);

fn cache() -> &'static std::sync::Mutex<std::collections::HashMap<CacheKey, Component>> {
    static C: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<CacheKey, Component>>,
    > = std::sync::OnceLock::new();
    C.get_or_init(Default::default)
}

/// Runs `p --version` and fills the version fields of `c`.
async fn ask_version(mut c: Component, p: &Path) -> Component {
    let run = tokio::process::Command::new(p)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Err(_) => c.error = "`--version` did not answer within 5 s".into(),
        Ok(Err(e)) => c.error = format!("running it: {e}"),
        Ok(Ok(out)) => {
            // some print the version on stderr, some print usage there (no version)
            let text = if out.stdout.is_empty() {
                String::from_utf8_lossy(&out.stderr).to_string()
            } else {
                String::from_utf8_lossy(&out.stdout).to_string()
            };
            let first = version_line(&text, p);
            let v = version_number(&first);
            if out.status.success() {
                c.version_line = first;
            }
            if out.status.success() && !v.is_empty() {
                c.version = v;
            } else if let Some((pkg, ver)) = package_version(p).await {
                c.version = ver;
                c.error = format!("prints no version; this is the version of its package {pkg}");
            } else {
                c.error = "prints no version".into();
            }
        }
    }
    c
}

/// The Debian package owning `path` and its version (`dpkg-query`), for programs that print
/// no version of their own (newuidmap, Debian's pasta).
async fn package_version(path: &Path) -> Option<(String, String)> {
    let q = |args: Vec<String>| async move {
        let run = tokio::process::Command::new("dpkg-query")
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .ok()?
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // usrmerge: the package may list /bin/x for /usr/bin/x
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut owner = None;
    for p in [
        real.clone(),
        Path::new("/").join(real.strip_prefix("/usr").unwrap_or(&real)),
    ] {
        if let Some(o) = q(vec!["-S".into(), p.display().to_string()]).await {
            owner = Some(o);
            break;
        }
    }
    let pkg = owner?.split(':').next()?.trim().to_string();
    let ver = q(vec![
        "-W".into(),
        "-f".into(),
        "${Version}".into(),
        pkg.clone(),
    ])
    .await?;
    (!ver.is_empty()).then_some((pkg, ver))
}

/// The helper programs nookd uses, probed concurrently.
pub async fn components(d: &Daemon) -> Vec<Component> {
    let mut wanted: Vec<(String, String)> = d
        .config
        .runtimes
        .iter()
        .map(|(name, rt)| (name.clone(), rt.path.clone()))
        .collect();
    for b in [
        "slirp4netns",
        "pasta",
        "passt",
        "fuse-overlayfs",
        "newuidmap",
        "newgidmap",
    ] {
        wanted.push((b.to_string(), b.to_string()));
    }
    let mut out: Vec<Component> =
        futures::future::join_all(wanted.iter().map(|(n, p)| probe(n, p))).await;
    let shim = crate::runtime::task::find_shim()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    out.insert(
        0,
        Component {
            name: "nookd".into(),
            path: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            version: crate::VERSION.into(),
            version_line: format!("nookd {}", crate::VERSION),
            error: String::new(),
        },
    );
    out.insert(
        1,
        Component {
            name: "nook-shim".into(),
            error: if shim.is_empty() {
                "not found next to nookd or in PATH".into()
            } else {
                String::new()
            },
            path: shim,
            version: crate::VERSION.into(),
            version_line: format!("nook-shim {}", crate::VERSION),
        },
    );
    out
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// nookd's cgroup v2 path (the `0::` line of /proc/self/cgroup).
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Whether `path` is writable by this process.
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access() only reads the NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Whether the machine runs cgroup v1, v2 or both.
pub fn cgroup_version() -> &'static str {
    let v2_root = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let unified = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    match (v2_root, unified) {
        (true, _) => "v2",
        (false, true) => "hybrid (v1 + v2 at /sys/fs/cgroup/unified)",
        _ => "v1",
    }
}

/// The kernel features and settings that rootless containers depend on.
pub fn features(d: &Daemon) -> Vec<Feature> {
    let mut v = Vec::new();
    let mut add = |name: &str, value: String, detail: String| {
        v.push(Feature {
            name: name.into(),
            value,
            detail,
        })
    };
    add(
        "kernel",
        nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().to_string())
            .unwrap_or_default(),
        "uname -r".into(),
    );
    // overlayfs in the user namespace: the snapshotter's own trial mount at start
    let overlay = d
        .plugins
        .list()
        .into_iter()
        .find(|p| p.kind == crate::plugins::SNAPSHOTTER && p.id == "overlayfs");
    match overlay {
        Some(p) => add(
            "overlayfs_in_userns",
            yes_no(p.status.as_str() == "ok"),
            if p.reason.is_empty() {
                "a trial overlay mount in nook's user namespace worked".into()
            } else {
                p.reason
            },
        ),
        None => add(
            "overlayfs_in_userns",
            "unknown".into(),
            "the overlayfs snapshotter was not probed".into(),
        ),
    }
    // idmapped mounts: the mount_setattr syscall (Linux 5.12); EBADF/EINVAL mean it exists
    // SAFETY: an invalid fd and a null attr make the call fail without side effects.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1i32,
            c"".as_ptr(),
            0u32,
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    add(
        "idmapped_mounts",
        yes_no(r == 0 || errno != libc::ENOSYS),
        if errno == libc::ENOSYS {
            "the kernel has no mount_setattr (Linux >= 5.12 needed); nook does not need it".into()
        } else {
            "the kernel has mount_setattr (MOUNT_ATTR_IDMAP); nook does not use it yet".into()
        },
    );
    // cgroups: version, the controllers of nookd's own v2 cgroup and whether it is delegated
    let version = cgroup_version();
    add("cgroup", version.into(), "/sys/fs/cgroup".into());
    let v2_base = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Some("/sys/fs/cgroup")
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        Some("/sys/fs/cgroup/unified")
    } else {
        None
    };
    match (v2_base, own_cgroup()) {
        (Some(base), Some(cg)) => {
            let rel = cg.trim_matches('/');
            let dir = if rel.is_empty() {
                Path::new(base).to_path_buf()
            } else {
                Path::new(base).join(rel)
            };
            let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"))
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            let delegated = writable(&dir.join("cgroup.subtree_control"))
                && writable(&dir.join("cgroup.procs"));
            add(
                "cgroup_v2_controllers",
                if controllers.is_empty() {
                    "none".into()
                } else {
                    controllers
                },
                format!("{}/cgroup.controllers", dir.display()),
            );
            add(
                "cgroup_delegated",
                yes_no(delegated),
                if delegated {
                    format!("{} is writable by this user", dir.display())
                } else {
                    format!(
                        "{} is not writable by this user: limits (--memory, --pids-limit) are not applied; run nookd under systemd --user with Delegate=yes",
                        dir.display()
                    )
                },
            );
        }
        _ => add(
            "cgroup_delegated",
            "no".into(),
            "no cgroup v2 hierarchy for nookd".into(),
        ),
    }
    if version != "v2" {
        // v1 hierarchies (hybrid hosts): the ones whose cgroup of nookd this user may write
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut ok = vec![];
        for l in text.lines() {
            let mut it = l.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if ctrls.is_empty() || ctrls.starts_with("name=") {
                continue;
            }
            let first = ctrls.split(',').next().unwrap_or(ctrls);
            let dir = Path::new("/sys/fs/cgroup")
                .join(first)
                .join(path.trim_matches('/'));
            if writable(&dir.join("cgroup.procs")) {
                ok.push(ctrls.to_string());
            }
        }
        add(
            "cgroup_v1_delegated",
            if ok.is_empty() {
                "none".into()
            } else {
                ok.join(" ")
            },
            "v1 controllers whose cgroup (of nookd, in /proc/self/cgroup) this user may write; resource limits need memory, pids and cpu there".into(),
        );
    }
    // seccomp
    let seccomp = read_trim("/proc/sys/kernel/seccomp/actions_avail");
    add(
        "seccomp",
        yes_no(seccomp.is_some()),
        seccomp
            .map(|a| format!("/proc/sys/kernel/seccomp/actions_avail: {a}"))
            .unwrap_or_else(|| "the kernel has no seccomp filter support".into()),
    );
    for (name, path, val) in host_sysctls() {
        add(name, val, format!("{path} (the host's)"));
    }
    v
}

/// Settings read in the host's user namespace (inside nook's, the same files show the
/// namespace's own limits).
const HOST_SYSCTLS: &[(&str, &str)] = &[
    ("max_user_namespaces", "/proc/sys/user/max_user_namespaces"),
    (
        "unprivileged_userns_clone",
        "/proc/sys/kernel/unprivileged_userns_clone",
    ),
    (
        "apparmor_restrict_unprivileged_userns",
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
    ),
    (
        "ip_unprivileged_port_start",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    ),
];

static HOST_VALUES: std::sync::OnceLock<Vec<(&'static str, &'static str, String)>> =
    std::sync::OnceLock::new();

/// Reads [`HOST_SYSCTLS`] now: call it at nookd's start, before it enters its namespaces.
pub fn capture_host_sysctls() {
    HOST_VALUES.get_or_init(read_host_sysctls);
}

fn read_host_sysctls() -> Vec<(&'static str, &'static str, String)> {
    HOST_SYSCTLS
        .iter()
        .filter_map(|(n, p)| read_trim(p).map(|v| (*n, *p, v)))
        .collect()
}

fn host_sysctls() -> Vec<(&'static str, &'static str, String)> {
    HOST_VALUES.get_or_init(read_host_sysctls).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers() {
        assert_eq!(version_number("runc version 1.1.5+ds1"), "1.1.5+ds1");
        assert_eq!(version_number("crun version 1.8.1"), "1.8.1");
        assert_eq!(version_number("fuse-overlayfs: version 1.10"), "1.10");
        assert_eq!(
            version_number("pasta 0.0~git20230309.7c7625d-1"),
            "0.0~git20230309.7c7625d-1"
        );
        assert_eq!(version_number("tool v2.3"), "2.3");
        assert_eq!(version_number("usage: newuidmap <pid> ..."), "");
        let fo = "fusermount3 version: 3.14.0\nfuse-overlayfs: version 1.10\nFUSE library version 3.14.0\n";
        let l = version_line(fo, Path::new("/usr/bin/fuse-overlayfs"));
        assert_eq!(
            (l.as_str(), version_number(&l).as_str()),
            ("fuse-overlayfs: version 1.10", "1.10")
        );
        assert_eq!(
            version_line("\nrunc version 1.1\nspec: 1\n", Path::new("/x/runc")),
            "runc version 1.1"
        );
        assert_eq!(version_line("v9\n", Path::new("/x/y")), "v9");
    }
}
