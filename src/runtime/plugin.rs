//! OCI runtimes as plugins: a name from `[runtimes.NAME]` (path + extra global arguments)
//! becomes a [`RuntimeBinary`], like containerd's runtime plugins.
//!
//! crun refuses to run on cgroup v1+v2 *hybrid* hosts whose v2 hierarchy holds a controller
//! ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"), even with
//! `--cgroup-manager=disabled`, because it reads `/sys/fs/cgroup/unified/cgroup.controllers`
//! before anything else. [`probe`] detects it and says so; [`hide_hybrid_controllers`], called
//! by nookd inside its *own* mount namespace, bind-mounts an empty file over that file so crun
//! works (never on the host).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Config;
use crate::error::{Error, Result};

/// A resolved OCI runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeBinary {
    /// The name (`runc`, `crun`, ...): also the runtime's state directory name.
    pub name: String,
    /// The binary, absolute.
    pub path: PathBuf,
    /// Extra global arguments, given before the subcommand.
    pub args: Vec<String>,
}

/// Resolves `name` (or the configured default when None/empty) through `[runtimes]`.
pub fn resolve(config: &Config, name: Option<&str>) -> Result<RuntimeBinary> {
    let auto = default_name(config);
    let name = match name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => auto.as_str(),
    };
    let entry = config.runtimes.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.runtimes.keys().map(String::as_str).collect();
        Error::InvalidArgument(format!(
            "unknown runtime {name:?}: configured runtimes are {} (add [runtimes.{name}] path = \"...\" to config.toml)",
            known.join(", ")
        ))
    })?;
    let bin = if entry.path.is_empty() {
        name
    } else {
        entry.path.as_str()
    };
    let path = crate::bootstrap::preflight::which(bin).ok_or_else(|| {
        Error::Precondition(format!(
            "runtime {name:?}: binary {bin:?} not found (install it, e.g. `sudo apt-get install {name}`, or set [runtimes.{name}] path)"
        ))
    })?;
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    Ok(RuntimeBinary {
        name: name.to_string(),
        path,
        args: entry.args.clone(),
    })
}

/// The runtime used when a container names none: `[runtime] default`, where `auto` is crun
/// when its binary is installed (it starts containers faster and smaller: bench/run.sh),
/// else runc.
pub fn default_name(config: &Config) -> String {
    let d = config.runtime.default.as_str();
    if d != "auto" {
        return d.to_string();
    }
    let crun = config.runtimes.get("crun").map(|e| {
        if e.path.is_empty() {
            "crun"
        } else {
            e.path.as_str()
        }
    });
    match crun {
        Some(bin) if crate::bootstrap::preflight::which(bin).is_some() => "crun".into(),
        _ => "runc".into(),
    }
}

/// Whether the binary is crun (by file name).
pub fn is_crun(path: &Path) -> bool {
    path.file_name()
        .and_then(|f| f.to_str())
        .is_some_and(|f| f.starts_with("crun"))
}

/// The cgroup v2 controllers file of a hybrid host (`/sys/fs/cgroup/unified`), if this host is
/// hybrid.
pub const HYBRID_CONTROLLERS: &str = "/sys/fs/cgroup/unified/cgroup.controllers";

/// The controllers the v2 hierarchy of a hybrid host holds (empty: not hybrid, or masked).
pub fn hybrid_v2_controllers(controllers_file: &Path) -> Vec<String> {
    std::fs::read_to_string(controllers_file)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Why crun cannot run here, if it cannot: a hybrid host whose v2 hierarchy holds controllers.
pub fn crun_blocker(controllers_file: &Path) -> Option<String> {
    let c = hybrid_v2_controllers(controllers_file);
    (!c.is_empty()).then(|| {
        format!(
            "crun refuses cgroup v1+v2 hybrid hosts (the v2 hierarchy holds: {}); nookd hides {} in its own mount namespace to allow it — if you see this, that failed: use runc (--runtime runc)",
            c.join(" "),
            controllers_file.display()
        )
    })
}

/// Checks that a runtime can be used: it runs (`--version`), and crun is not blocked by a hybrid
/// cgroup layout. Returns the version line.
pub fn probe(rt: &RuntimeBinary) -> Result<String> {
    let out = Command::new(&rt.path)
        .arg("--version")
        .output()
        .map_err(|e| {
            Error::Precondition(format!(
                "runtime {}: cannot run {}: {e}",
                rt.name,
                rt.path.display()
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Precondition(format!(
            "runtime {}: `{} --version` failed: {}",
            rt.name,
            rt.path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if is_crun(&rt.path) {
        if let Some(why) = crun_blocker(Path::new(HYBRID_CONTROLLERS)) {
            return Err(Error::Precondition(format!("runtime {}: {why}", rt.name)));
        }
    }
    Ok(version)
}

/// On a hybrid host, bind-mounts an empty file over the v2 controllers file so that crun
/// accepts the host. Must run in nookd's private mount namespace (it would change the host's
/// view otherwise). `empty_file` is created if missing. Returns whether a mount was made.
pub fn hide_hybrid_controllers(empty_file: &Path) -> Result<bool> {
    let target = Path::new(HYBRID_CONTROLLERS);
    if hybrid_v2_controllers(target).is_empty() {
        return Ok(false);
    }
    if !empty_file.exists() {
        std::fs::write(empty_file, b"")
            .map_err(|e| Error::io(format!("creating {}", empty_file.display()), e))?;
    }
    nix::mount::mount(
        Some(empty_file),
        target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        Error::Precondition(format!(
            "hiding {} for crun: bind mount failed: {e} (crun will not work on this hybrid host; runc does)",
            target.display()
        ))
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuntimeEntry;

    #[test]
    fn resolves_default_and_named() {
        let mut c = Config::default();
        c.runtimes.insert(
            "shell".into(),
            RuntimeEntry {
                path: "/bin/sh".into(),
                args: vec!["--x".into()],
            },
        );
        let r = resolve(&c, Some("shell")).unwrap();
        assert_eq!(r.name, "shell");
        assert!(r.path.is_absolute());
        assert_eq!(r.args, ["--x"]);
        c.runtime.default = "shell".into();
        assert_eq!(resolve(&c, None).unwrap().name, "shell");
        assert_eq!(resolve(&c, Some("")).unwrap().name, "shell");
    }

    #[test]
    fn auto_prefers_an_installed_crun() {
        let mut c = Config::default();
        assert_eq!(c.runtime.default, "auto");
        let crun = |path: &str| RuntimeEntry {
            path: path.into(),
            args: vec![],
        };
        c.runtimes.insert("crun".into(), crun("/bin/sh"));
        assert_eq!(default_name(&c), "crun");
        c.runtimes.insert("crun".into(), crun("/nonexistent/crun"));
        assert_eq!(default_name(&c), "runc");
        c.runtimes.remove("crun");
        assert_eq!(default_name(&c), "runc");
        c.runtime.default = "runc".into();
        c.runtimes.insert("crun".into(), crun("/bin/sh"));
        assert_eq!(default_name(&c), "runc", "a named default stays");
    }

    #[test]
    fn unknown_and_missing_are_clear() {
        let mut c = Config::default();
        let e = resolve(&c, Some("youki")).unwrap_err().to_string();
        assert!(
            e.contains("unknown runtime \"youki\"") && e.contains("[runtimes.youki]"),
            "{e}"
        );
        c.runtimes.insert(
            "gone".into(),
            RuntimeEntry {
                path: "/nonexistent/gone".into(),
                args: vec![],
            },
        );
        let e = resolve(&c, Some("gone")).unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
    }

    #[test]
    fn crun_blocker_reads_controllers() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("cgroup.controllers");
        assert!(crun_blocker(&f).is_none());
        std::fs::write(&f, "hugetlb\n").unwrap();
        let why = crun_blocker(&f).unwrap();
        assert!(why.contains("hybrid") && why.contains("hugetlb"), "{why}");
        std::fs::write(&f, "").unwrap();
        assert!(crun_blocker(&f).is_none());
        assert!(is_crun(Path::new("/usr/bin/crun")));
        assert!(!is_crun(Path::new("/usr/sbin/runc")));
    }

    #[test]
    fn probe_runs_the_binary() {
        let rt = RuntimeBinary {
            name: "false".into(),
            path: "/bin/false".into(),
            args: vec![],
        };
        assert!(probe(&rt).unwrap_err().to_string().contains("--version"));
        if let Ok(runc) = resolve(&Config::default(), Some("runc")) {
            assert!(probe(&runc).unwrap().contains("runc"));
        }
    }
}
