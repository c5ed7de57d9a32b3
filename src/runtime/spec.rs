//! Building a container's OCI runtime spec (`config.json`) from an image's config and the
//! `nook run` options, with the defaults docker and containerd users expect.
//!
//! The result is an [`oci_spec::runtime::Spec`]. The layout follows what runc needs when it runs
//! *inside* nookd's user namespace (rootless-in-userns): there is no `user` namespace entry (the
//! whole daemon already is in one, runc detects it), `/sys` is a fresh read-only sysfs of the
//! container's network namespace (which nookd's user namespace owns, so the runtime may mount
//! it) with the container's own cgroups read-only under `/sys/fs/cgroup` (in a cgroup namespace),
//! device nodes are listed so the runtime bind-mounts them from the host (mknod is refused in a
//! user namespace), and `cgroupsPath` is empty unless cgroups are delegated (runc then skips
//! cgroups).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

pub use super::mounts::{VolumeArg, VolumeMount};
use super::seccomp;
pub use super::ulimit::{Ulimit, ULIMIT_NAMES, UNLIMITED};
use super::user::{resolve_group, resolve_user, ResolvedUser};
use crate::error::{Error, Result};

/// The parts of an image's config that shape the process (OCI image config `config`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// The image's `VOLUME` paths: each gets an anonymous volume unless a mount covers it.
    pub volumes: Vec<String>,
}

impl From<&oci_spec::image::Config> for ImageConfig {
    fn from(c: &oci_spec::image::Config) -> Self {
        ImageConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
            volumes: c.volumes().clone().unwrap_or_default(),
        }
    }
}

/// A `-v HOST:CTR[:OPTS]` bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
    /// `rprivate` unless the options named another propagation.
    pub propagation: String,
}

impl BindMount {
    /// Parses docker's `-v` syntax for a bind: `/host/path:/container/path[:ro|rw|z|Z|shared|slave|private|...]`
    /// (options comma-separated). The source must be absolute (the client makes `./dir`
    /// absolute first, see [`absolute_volume`]); [`VolumeArg::parse`] takes named volumes too.
    pub fn parse(s: &str) -> Result<BindMount> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "invalid volume {s:?}: {why} (use -v /host/path:/container/path[:ro])"
            ))
        };
        let (src, dst, opts) = match parts.as_slice() {
            [src, dst] => (*src, *dst, ""),
            [src, dst, opts] => (*src, *dst, *opts),
            _ => return Err(bad("expected HOST:CONTAINER[:OPTIONS]")),
        };
        if !src.starts_with('/') {
            return Err(bad(
                "the host path must be absolute or start with ./ or ../ (a volume name has no /)",
            ));
        }
        if !dst.starts_with('/') {
            return Err(bad("the container path must be absolute"));
        }
        if dst == "/" {
            return Err(bad("cannot mount over the container's /"));
        }
        let mut m = BindMount {
            source: PathBuf::from(src),
            destination: dst.to_string(),
            read_only: false,
            propagation: "rprivate".into(),
        };
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => m.read_only = true,
                "rw" => m.read_only = false,
                "z" | "Z" => {} // SELinux relabelling: nothing to do here
                "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {
                    m.propagation = o.to_string()
                }
                other => return Err(bad(&format!("unknown option {other:?}"))),
            }
        }
        Ok(m)
    }
}

/// Makes a relative `-v` host path absolute against `cwd`, as docker does since 23: a source
/// that is `.` or `..` or starts with `./` or `../` is a directory relative to the client's
/// working directory (cleaned lexically). Anything else is returned unchanged.
pub fn absolute_volume(spec: &str, cwd: &Path) -> String {
    let (src, rest) = match spec.split_once(':') {
        Some((s, r)) => (s, Some(r)),
        None => (spec, None),
    };
    let relative = src == "." || src == ".." || src.starts_with("./") || src.starts_with("../");
    if !relative {
        return spec.to_string();
    }
    let mut out = PathBuf::from("/");
    for c in cwd.join(src).components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    match rest {
        Some(r) => format!("{}:{r}", out.display()),
        None => out.display().to_string(),
    }
}

/// A `--tmpfs /path[:opts]` mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    pub destination: String,
    pub options: Vec<String>,
}

impl TmpfsMount {
    /// Parses `--tmpfs /run:rw,size=64m,mode=1777`; docker's defaults `noexec,nosuid,nodev`
    /// apply unless an option overrides them (`exec`, `suid`, `dev`).
    pub fn parse(s: &str) -> Result<TmpfsMount> {
        let (dst, opts) = s.split_once(':').unwrap_or((s, ""));
        if !dst.starts_with('/') || dst == "/" {
            return Err(Error::InvalidArgument(format!(
                "invalid --tmpfs {s:?}: the path must be absolute and not / (use --tmpfs /path[:size=64m,mode=1777])"
            )));
        }
        let given: Vec<String> = opts
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect();
        let mut options = Vec::new();
        for (def, neg) in [("noexec", "exec"), ("nosuid", "suid"), ("nodev", "dev")] {
            if !given.iter().any(|g| g == neg || g == def) {
                options.push(def.to_string());
            }
        }
        options.extend(given);
        Ok(TmpfsMount {
            destination: dst.to_string(),
            options,
        })
    }
}

/// Parses an env file (`--env-file`): `KEY=VALUE` lines, `#` comments and blank lines skipped,
/// a bare `KEY` takes its value from `lookup` (the client's environment), skipped if unset.
pub fn parse_env_file(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let key = l.split('=').next().unwrap_or("");
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(Error::InvalidArgument(format!(
                "env file line {}: {line:?} is not KEY=VALUE",
                n + 1
            )));
        }
        if l.contains('=') {
            out.push(l.to_string());
        } else if let Some(v) = lookup(key) {
            out.push(format!("{key}={v}"));
        }
    }
    Ok(out)
}

/// Where the container's network namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A new, empty namespace (loopback only), made by the runtime.
    New,
    /// Join an existing namespace (a per-container netns, or nookd's detached one).
    Path(PathBuf),
    /// No network namespace entry: share the one of the runtime's caller.
    Inherit,
}

/// The seccomp choice of `--security-opt seccomp=...`.
#[derive(Debug, Clone, PartialEq)]
pub enum SeccompChoice {
    Default,
    Unconfined,
    /// A profile's JSON text (the client reads the file and sends its content).
    Custom(String),
}

/// Everything `nook run` can override, plus what the caller prepared.
#[derive(Debug, Clone)]
pub struct SpecOptions {
    /// The container id (default hostname: its first 12 characters).
    pub id: String,
    /// The mounted root filesystem (absolute).
    pub rootfs: PathBuf,
    /// Replaces the image's CMD when not empty.
    pub args: Vec<String>,
    /// `--entrypoint`: replaces the image's ENTRYPOINT (and drops its CMD, as docker does).
    pub entrypoint: Option<Vec<String>>,
    /// `-e KEY=VALUE` (after the env files): override the image's variables.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub read_only: bool,
    pub tty: bool,
    pub binds: Vec<BindMount>,
    pub tmpfs: Vec<TmpfsMount>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub seccomp: SeccompChoice,
    pub no_new_privileges: bool,
    pub labels: BTreeMap<String, String>,
    pub network: Network,
    /// Files bind-mounted as /etc/hostname, /etc/hosts, /etc/resolv.conf (skipped when None).
    pub hostname_file: Option<PathBuf>,
    pub hosts_file: Option<PathBuf>,
    pub resolv_file: Option<PathBuf>,
    /// A cgroup path, only when cgroups are delegated to the user.
    pub cgroups_path: Option<String>,
    /// RLIMIT_NOFILE (soft, hard) unless `ulimits` names nofile.
    pub nofile: (u64, u64),
    /// `--ulimit`: process rlimits (nofile here replaces the default above).
    pub ulimits: Vec<Ulimit>,
    /// `--group-add`: more supplementary groups (names of the image's /etc/group, or gids).
    pub group_add: Vec<String>,
    /// `--init`: this static init (tini) is bound read-only at /sbin/docker-init and runs as
    /// pid 1 in front of the command, reaping zombies and forwarding signals.
    pub init: Option<PathBuf>,
}

impl SpecOptions {
    /// Options with docker's defaults for container `id` on `rootfs`.
    pub fn new(id: &str, rootfs: impl Into<PathBuf>) -> SpecOptions {
        SpecOptions {
            id: id.to_string(),
            rootfs: rootfs.into(),
            args: vec![],
            entrypoint: None,
            env: vec![],
            workdir: None,
            user: None,
            hostname: None,
            read_only: false,
            tty: false,
            binds: vec![],
            tmpfs: vec![],
            cap_add: vec![],
            cap_drop: vec![],
            privileged: false,
            seccomp: SeccompChoice::Default,
            no_new_privileges: false,
            labels: BTreeMap::new(),
            network: Network::New,
            hostname_file: None,
            hosts_file: None,
            resolv_file: None,
            cgroups_path: None,
            nofile: default_nofile(),
            ulimits: vec![],
            group_add: vec![],
            init: None,
        }
    }

    /// Applies docker's `--security-opt` values: `seccomp=unconfined|FILE-CONTENT`,
    /// `no-new-privileges[=true|false]`; `apparmor=`/`label=` are accepted and ignored (no LSM
    /// is driven by nook). `custom_profile` reads a profile file for `seccomp=PATH`.
    pub fn apply_security_opt(
        &mut self,
        opt: &str,
        custom_profile: impl Fn(&str) -> Result<String>,
    ) -> Result<()> {
        let (k, v) = opt.split_once(['=', ':']).unwrap_or((opt, ""));
        match (k, v) {
            ("seccomp", "unconfined") => self.seccomp = SeccompChoice::Unconfined,
            ("seccomp", "") => {
                return Err(Error::InvalidArgument(
                    "--security-opt seccomp needs a value: seccomp=unconfined or seccomp=/path/profile.json".into(),
                ))
            }
            ("seccomp", path) => self.seccomp = SeccompChoice::Custom(custom_profile(path)?),
            ("no-new-privileges", "" | "true") => self.no_new_privileges = true,
            ("no-new-privileges", "false") => self.no_new_privileges = false,
            ("apparmor" | "label", _) => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown --security-opt {opt:?}: use seccomp=unconfined, seccomp=FILE or no-new-privileges[=false]"
                )))
            }
        }
        Ok(())
    }
}

/// RLIMIT_NOFILE for containers, as docker's: the daemon's limit (docker's unit sets soft and
/// hard to 1048576, and so does nook.service), bounded by what the user may set — nookd's own
/// hard limit, which a user namespace cannot raise, and the kernel's `fs.nr_open`.
pub fn default_nofile() -> (u64, u64) {
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, h)| h)
        .unwrap_or(1024);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1_048_576);
    let n = hard.min(nr_open);
    (n, n)
}

/// Where `--init` finds a static tini (Debian's package `tini` ships /usr/bin/tini-static;
/// docker's packages install it as docker-init).
pub const INIT_CANDIDATES: &[&str] = &[
    "/usr/bin/tini-static",
    "/usr/local/bin/tini-static",
    "/usr/libexec/docker/docker-init",
    "/usr/bin/docker-init",
];

/// Where the init is bound inside the container (docker's path).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// The static tini for `--init`, or a one-line error naming the package.
pub fn find_init() -> Result<PathBuf> {
    find_init_in(INIT_CANDIDATES)
}

fn find_init_in(candidates: &[&str]) -> Result<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Precondition(
                "--init needs a static tini and none is installed: install the package `tini` (it ships /usr/bin/tini-static)".into(),
            )
        })
}

/// docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability (the runtime leaves out those this kernel does not know).
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// docker's masked paths.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Normalises a capability name: `net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN`;
/// `ALL` stays `ALL`. Unknown names are an error.
pub fn normalize_cap(name: &str) -> Result<String> {
    let up = name.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::InvalidArgument(format!(
            "unknown capability {name:?}: use a name like NET_ADMIN or SYS_PTRACE (see capabilities(7)), or ALL"
        )))
    }
}

/// The effective capability set: docker's default, or all with `--privileged`; `--cap-drop ALL`
/// empties it before `--cap-add` applies; otherwise adds then drops.
pub fn capability_set(privileged: bool, add: &[String], drop: &[String]) -> Result<Vec<String>> {
    let add: Vec<String> = add
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<_>>()?;
    let drop: Vec<String> = drop
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<_>>()?;
    if privileged {
        return Ok(ALL_CAPS.iter().map(|s| s.to_string()).collect());
    }
    let mut caps: Vec<String> = if drop.iter().any(|d| d == "ALL") {
        vec![]
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|s| s.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    if add.iter().any(|a| a == "ALL") {
        caps = ALL_CAPS
            .iter()
            .map(|s| s.to_string())
            .filter(|c| !drop.contains(c))
            .collect();
    }
    for a in add.into_iter().filter(|a| a != "ALL") {
        if !caps.contains(&a) {
            caps.push(a);
        }
    }
    // stable order: the kernel's
    caps.sort_by_key(|c| ALL_CAPS.iter().position(|x| x == c));
    Ok(caps)
}

/// Merges env lists: later `KEY=...` entries replace earlier ones with the same key.
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in base.iter().chain(overrides) {
        let key = e.split('=').next().unwrap_or("");
        if let Some(slot) = out
            .iter_mut()
            .find(|x| x.split('=').next().unwrap_or("") == key)
        {
            *slot = e.clone();
        } else {
            out.push(e.clone());
        }
    }
    out
}

fn has_key(env: &[String], key: &str) -> bool {
    env.iter().any(|e| e.split('=').next() == Some(key))
}

/// The process arguments, as docker computes them: `--entrypoint` replaces ENTRYPOINT and drops
/// the image's CMD; args replace CMD.
pub fn process_args(
    img: &ImageConfig,
    entrypoint: Option<&[String]>,
    args: &[String],
) -> Result<Vec<String>> {
    let (ep, cmd): (Vec<String>, Vec<String>) = match entrypoint {
        Some(ep) => (
            ep.iter().filter(|s| !s.is_empty()).cloned().collect(),
            args.to_vec(),
        ),
        None => (
            img.entrypoint.clone(),
            if args.is_empty() {
                img.cmd.clone()
            } else {
                args.to_vec()
            },
        ),
    };
    let all: Vec<String> = ep.into_iter().chain(cmd).collect();
    if all.is_empty() {
        return Err(Error::InvalidArgument(
            "no command: the image has no ENTRYPOINT or CMD; give one after the image name".into(),
        ));
    }
    Ok(all)
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn bind(dst: &str, src: &Path, extra: &[&str]) -> Value {
    let mut opts = vec!["rbind", "rprivate"];
    opts.extend_from_slice(extra);
    json!({"destination": dst, "type": "bind", "source": src, "options": opts})
}

/// The process's rlimits: the default open-files limit, then `--ulimit`s (one per name, the
/// last given wins).
fn rlimits(o: &SpecOptions) -> Vec<Value> {
    let mut out: Vec<(String, u64, u64)> = vec![("RLIMIT_NOFILE".into(), o.nofile.0, o.nofile.1)];
    for u in &o.ulimits {
        let t = u.rlimit_type();
        out.retain(|(n, _, _)| *n != t);
        out.push((t, u.soft, u.hard));
    }
    out.into_iter()
        .map(|(t, soft, hard)| json!({"type": t, "soft": soft, "hard": hard}))
        .collect()
}

/// Builds the spec. Reads the rootfs's /etc/passwd and /etc/group to resolve a user name.
pub fn build_spec(img: &ImageConfig, o: &SpecOptions) -> Result<Spec> {
    if !o.rootfs.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "rootfs {} must be an absolute path",
            o.rootfs.display()
        )));
    }
    let mut args = process_args(img, o.entrypoint.as_deref(), &o.args)?;
    if o.init.is_some() {
        args.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
    }
    let user_str = o.user.clone().unwrap_or_else(|| img.user.clone());
    let mut user: ResolvedUser = resolve_user(&o.rootfs, &user_str)?;
    for g in &o.group_add {
        let gid = resolve_group(&o.rootfs, g)?;
        if !user.additional_gids.contains(&gid) {
            user.additional_gids.push(gid);
        }
    }
    let cwd = match o.workdir.as_deref().filter(|w| !w.is_empty()) {
        Some(w) => w.to_string(),
        None if img.working_dir.is_empty() => "/".to_string(),
        None => img.working_dir.clone(),
    };
    if !cwd.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "the working directory {cwd:?} is invalid: it must be an absolute path"
        )));
    }
    let hostname = o
        .hostname
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| o.id.chars().take(12).collect());

    let mut env = merge_env(&img.env, &o.env);
    if !has_key(&env, "PATH") {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if !has_key(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={hostname}"));
    }
    if o.tty && !has_key(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    if !has_key(&env, "HOME") {
        env.push(format!("HOME={}", user.home.as_deref().unwrap_or("/")));
    }

    let caps = capability_set(o.privileged, &o.cap_add, &o.cap_drop)?;

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
    ];
    // /sys: a fresh sysfs of the container's network namespace (its own interfaces under
    // /sys/class/net) and its cgroups, read-only as docker has them. Mounting sysfs needs the
    // network namespace's owner: nookd's user namespace owns every namespace a container gets;
    // only a container sharing the runtime's (the host's) namespace falls back to a bind.
    let rw = if o.privileged { "rw" } else { "ro" };
    if o.network == Network::Inherit {
        mounts.push(json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}));
    } else {
        mounts.push(json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", rw]}));
        mounts.push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", rw]}));
    }
    if let Some(init) = &o.init {
        mounts.push(bind(INIT_PATH, init, &["ro", "nosuid", "nodev"]));
    }
    for (dst, f) in [
        ("/etc/hostname", &o.hostname_file),
        ("/etc/hosts", &o.hosts_file),
        ("/etc/resolv.conf", &o.resolv_file),
    ] {
        if let Some(f) = f {
            mounts.push(bind(dst, f, &[]));
        }
    }
    for t in &o.tmpfs {
        mounts.push(json!({"destination": t.destination, "type": "tmpfs", "source": "tmpfs", "options": t.options}));
    }
    for b in &o.binds {
        let mut opts = vec!["rbind".to_string(), b.propagation.clone()];
        if b.read_only {
            opts.push("ro".into());
        }
        mounts.push(json!({"destination": b.destination, "type": "bind", "source": b.source, "options": opts}));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &o.network {
        Network::New => namespaces.push(json!({"type": "network"})),
        Network::Path(p) => namespaces.push(json!({"type": "network", "path": p})),
        Network::Inherit => {}
    }
    // its cgroups at the root of /sys/fs/cgroup, where the kernel has cgroup namespaces
    if o.network != Network::Inherit && Path::new("/proc/self/ns/cgroup").exists() {
        namespaces.push(json!({"type": "cgroup"}));
    }

    let devices: Vec<Value> = [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .iter()
    .map(|(p, maj, min)| {
        json!({"path": p, "type": "c", "major": maj, "minor": min, "fileMode": 0o666, "uid": 0, "gid": 0})
    })
    .collect();

    let mut linux = json!({
        "namespaces": namespaces,
        "devices": devices,
    });
    if !o.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        let mut ro: Vec<&str> = READONLY_PATHS.to_vec();
        if o.network != Network::Inherit {
            // the runtimes leave the tmpfs holding the cgroup hierarchies writable
            ro.push("/sys/fs/cgroup");
        }
        linux["readonlyPaths"] = json!(ro);
    }
    // a bind mount that propagates needs the root to carry it (containerd sets the same)
    let prop = |p: &str| o.binds.iter().any(|b| b.propagation == p);
    if let Some(p) = ["rshared", "rslave"].into_iter().find(|p| prop(p)) {
        linux["rootfsPropagation"] = json!(p);
    }
    if let Some(cg) = o.cgroups_path.as_ref().filter(|c| !c.is_empty()) {
        linux["cgroupsPath"] = json!(cg);
    }
    let profile = match (&o.seccomp, o.privileged) {
        (SeccompChoice::Unconfined, _) | (SeccompChoice::Default, true) => None,
        (SeccompChoice::Default, false) => Some(seccomp::default_profile(&caps)?),
        (SeccompChoice::Custom(text), _) => Some(seccomp::parse_profile(text)?),
    };
    if let Some(p) = profile {
        linux["seccomp"] = serde_json::to_value(p)?;
    }

    let mut process = json!({
        "terminal": o.tty,
        "user": {"uid": user.uid, "gid": user.gid},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": rlimits(o),
        "noNewPrivileges": o.no_new_privileges && !o.privileged,
    });
    if !user.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(user.additional_gids);
    }
    if o.tty {
        process["consoleSize"] = json!({"height": 24, "width": 80});
    }

    let mut v = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": o.rootfs, "readonly": o.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    });
    if !o.labels.is_empty() {
        v["annotations"] = json!(o.labels);
    }
    serde_json::from_value(v).map_err(|e| Error::Internal(format!("building the OCI spec: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1001:1002::/srv/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1002:\nextra:x:77:app\n",
        )
        .unwrap();
        d
    }

    fn img() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            working_dir: "/srv".into(),
            user: "app".into(),
            volumes: vec![],
        }
    }

    fn spec_json(img: &ImageConfig, o: &SpecOptions) -> Value {
        serde_json::to_value(build_spec(img, o).unwrap()).unwrap()
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn image_defaults_apply() {
        let r = rootfs();
        let o = SpecOptions::new("0123456789abcdef", r.path());
        let v = spec_json(&img(), &o);
        let p = &v["process"];
        assert_eq!(strings(&p["args"]), ["/entry", "serve", "--port=80"]);
        assert_eq!(p["cwd"], "/srv");
        assert_eq!(p["user"]["uid"], 1001);
        assert_eq!(p["user"]["gid"], 1002);
        assert_eq!(p["user"]["additionalGids"], json!([1002, 77]));
        let env = strings(&p["env"]);
        assert!(env.contains(&"PATH=/bin".to_string()));
        assert!(env.contains(&"HOSTNAME=0123456789ab".to_string()));
        assert!(env.contains(&"HOME=/srv/app".to_string()));
        assert_eq!(v["hostname"], "0123456789ab");
        assert_eq!(p["noNewPrivileges"], false);
        assert_eq!(p["terminal"], false);
        assert_eq!(v["root"]["readonly"], false);
        // namespaces: pid ipc uts mount network, never user
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns[..5], ["pid", "ipc", "uts", "mount", "network"]);
        assert_eq!(
            ns.contains(&"cgroup"),
            Path::new("/proc/self/ns/cgroup").exists()
        );
        assert!(v["linux"].get("cgroupsPath").is_none());
        assert!(v["linux"].get("uidMappings").is_none());
        // docker's caps, seccomp on, masked paths
        let caps = strings(&p["capabilities"]["effective"]);
        assert_eq!(caps.len(), DEFAULT_CAPS.len());
        for c in DEFAULT_CAPS {
            assert!(caps.contains(&c.to_string()));
        }
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(strings(&v["linux"]["maskedPaths"]).contains(&"/proc/kcore".to_string()));
        assert!(strings(&v["linux"]["readonlyPaths"]).contains(&"/proc/sys".to_string()));
        // standard mounts and devices
        let dsts: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
        ] {
            assert!(dsts.contains(&d), "{d}");
        }
        let devs: Vec<&str> = v["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["path"].as_str().unwrap())
            .collect();
        assert_eq!(devs.len(), 6);
        assert!(devs.contains(&"/dev/urandom"));
    }

    #[test]
    fn overrides_win() {
        let r = rootfs();
        let mut o = SpecOptions::new("c1", r.path());
        o.args = vec!["sh".into(), "-c".into(), "echo hi".into()];
        o.env = vec!["A=2".into(), "B=3".into()];
        o.workdir = Some("/tmp".into());
        o.user = Some("nobody".into());
        o.hostname = Some("box".into());
        o.read_only = true;
        o.tty = true;
        o.labels.insert("k".into(), "v".into());
        let v = spec_json(&img(), &o);
        let p = &v["process"];
        // args replace CMD but keep ENTRYPOINT
        assert_eq!(strings(&p["args"]), ["/entry", "sh", "-c", "echo hi"]);
        let env = strings(&p["env"]);
        assert!(env.contains(&"A=2".to_string()) && !env.contains(&"A=1".to_string()));
        assert!(env.contains(&"B=3".to_string()) && env.contains(&"TERM=xterm".to_string()));
        assert_eq!(p["cwd"], "/tmp");
        assert_eq!(p["user"]["uid"], 65534);
        assert_eq!(v["hostname"], "box");
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(p["terminal"], true);
        assert_eq!(v["annotations"]["k"], "v");
    }

    #[test]
    fn entrypoint_override_drops_image_cmd() {
        let i = img();
        let args = process_args(&i, Some(&["/bin/sh".to_string()]), &[]).unwrap();
        assert_eq!(args, ["/bin/sh"]);
        let args = process_args(
            &i,
            Some(&["/bin/sh".to_string()]),
            &["-c".into(), "x".into()],
        )
        .unwrap();
        assert_eq!(args, ["/bin/sh", "-c", "x"]);
        let empty = ImageConfig::default();
        assert!(process_args(&empty, None, &[])
            .unwrap_err()
            .to_string()
            .contains("no command"));
    }

    #[test]
    fn relative_workdir_and_unknown_user_fail() {
        let r = rootfs();
        let mut o = SpecOptions::new("c", r.path());
        o.workdir = Some("rel".into());
        assert!(build_spec(&img(), &o)
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        let mut o = SpecOptions::new("c", r.path());
        o.user = Some("ghost".into());
        assert!(build_spec(&img(), &o)
            .unwrap_err()
            .to_string()
            .contains("ghost"));
    }

    #[test]
    fn caps_add_drop_privileged() {
        let s = capability_set(
            false,
            &["net_admin".into()],
            &["CAP_MKNOD".into(), "kill".into()],
        )
        .unwrap();
        assert!(s.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!s.contains(&"CAP_MKNOD".to_string()) && !s.contains(&"CAP_KILL".to_string()));
        assert_eq!(s.len(), DEFAULT_CAPS.len() - 1);
        let s = capability_set(false, &["CHOWN".into()], &["ALL".into()]).unwrap();
        assert_eq!(s, ["CAP_CHOWN"]);
        let s = capability_set(false, &["ALL".into()], &["SYS_ADMIN".into()]).unwrap();
        assert_eq!(s.len(), ALL_CAPS.len() - 1);
        assert_eq!(
            capability_set(true, &[], &[]).unwrap().len(),
            ALL_CAPS.len()
        );
        assert!(capability_set(false, &["FLY".into()], &[])
            .unwrap_err()
            .to_string()
            .contains("unknown capability"));
    }

    #[test]
    fn privileged_lifts_confinement() {
        let r = rootfs();
        let mut o = SpecOptions::new("c", r.path());
        o.privileged = true;
        let v = spec_json(&img(), &o);
        assert!(v["linux"].get("seccomp").is_none());
        assert!(v["linux"].get("maskedPaths").is_none());
        assert_eq!(v["process"]["noNewPrivileges"], false);
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            ALL_CAPS.len()
        );
    }

    #[test]
    fn security_opts() {
        let r = rootfs();
        let mut o = SpecOptions::new("c", r.path());
        o.apply_security_opt("seccomp=unconfined", |_| unreachable!())
            .unwrap();
        o.apply_security_opt("no-new-privileges=false", |_| unreachable!())
            .unwrap();
        let v = spec_json(&img(), &o);
        assert!(v["linux"].get("seccomp").is_none());
        assert_eq!(v["process"]["noNewPrivileges"], false);
        o.apply_security_opt("seccomp=/p.json", |p| {
            assert_eq!(p, "/p.json");
            Ok(r#"{"defaultAction":"SCMP_ACT_LOG"}"#.into())
        })
        .unwrap();
        let v = spec_json(&img(), &o);
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_LOG");
        assert!(o.apply_security_opt("bogus=1", |_| unreachable!()).is_err());
    }

    #[test]
    fn volumes_parse() {
        let m = BindMount::parse("/data:/mnt:ro").unwrap();
        assert_eq!(m.source, PathBuf::from("/data"));
        assert_eq!(m.destination, "/mnt");
        assert!(m.read_only);
        let m = BindMount::parse("/a:/b").unwrap();
        assert!(!m.read_only && m.propagation == "rprivate");
        let m = BindMount::parse("/a:/b:rw,z,rshared").unwrap();
        assert!(!m.read_only && m.propagation == "rshared");
        for bad in ["vol:/b", "/a:b", "/a", "/a:/b:ro:x", "/a:/b:bogus", "/a:/"] {
            assert!(BindMount::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mounts_land_in_the_spec() {
        let r = rootfs();
        let mut o = SpecOptions::new("c", r.path());
        o.binds = vec![BindMount::parse("/data:/mnt:ro").unwrap()];
        o.tmpfs = vec![TmpfsMount::parse("/run:size=1m").unwrap()];
        o.hosts_file = Some("/state/hosts".into());
        o.network = Network::Path("/proc/1/ns/net".into());
        let v = spec_json(&img(), &o);
        let m: Vec<&Value> = v["mounts"].as_array().unwrap().iter().collect();
        let mnt = m.iter().find(|m| m["destination"] == "/mnt").unwrap();
        assert_eq!(mnt["source"], "/data");
        assert!(strings(&mnt["options"]).contains(&"ro".to_string()));
        let run = m.iter().find(|m| m["destination"] == "/run").unwrap();
        assert_eq!(run["type"], "tmpfs");
        let hosts = m.iter().find(|m| m["destination"] == "/etc/hosts").unwrap();
        assert_eq!(hosts["source"], "/state/hosts");
        assert!(!m.iter().any(|m| m["destination"] == "/etc/resolv.conf"));
        let net = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
            .unwrap()
            .clone();
        assert_eq!(net["path"], "/proc/1/ns/net");
    }

    #[test]
    fn sysfs_and_cgroups_of_its_own() {
        let r = rootfs();
        let o = SpecOptions::new("c", r.path());
        let v = spec_json(&img(), &o);
        let m: Vec<&Value> = v["mounts"].as_array().unwrap().iter().collect();
        let sys = m.iter().find(|m| m["destination"] == "/sys").unwrap();
        assert_eq!(sys["type"], "sysfs");
        assert!(strings(&sys["options"]).contains(&"ro".to_string()));
        let cg = m
            .iter()
            .find(|m| m["destination"] == "/sys/fs/cgroup")
            .unwrap();
        assert_eq!(cg["type"], "cgroup");
        assert!(strings(&cg["options"]).contains(&"ro".to_string()));
        assert!(strings(&v["linux"]["readonlyPaths"]).contains(&"/sys/fs/cgroup".to_string()));
        // sharing the runtime's network namespace: sysfs cannot be mounted, /sys is bound
        let mut o = SpecOptions::new("c", r.path());
        o.network = Network::Inherit;
        let v = spec_json(&img(), &o);
        let m: Vec<&Value> = v["mounts"].as_array().unwrap().iter().collect();
        let sys = m.iter().find(|m| m["destination"] == "/sys").unwrap();
        assert_eq!(sys["source"], "/sys");
        assert!(!m.iter().any(|m| m["destination"] == "/sys/fs/cgroup"));
    }

    #[test]
    fn ulimits_parse_and_land() {
        let u = Ulimit::parse("nofile=1024:4096").unwrap();
        assert_eq!(
            (u.soft, u.hard, u.rlimit_type().as_str()),
            (1024, 4096, "RLIMIT_NOFILE")
        );
        let u = Ulimit::parse("core=-1").unwrap();
        assert_eq!((u.soft, u.hard), (UNLIMITED, UNLIMITED));
        assert_eq!(Ulimit::parse("nproc=50").unwrap().hard, 50);
        for bad in [
            "nofile",
            "files=1",
            "nofile=x",
            "nofile=10:5",
            "nofile=1:2:3",
        ] {
            assert!(Ulimit::parse(bad).is_err(), "{bad}");
        }
        for n in ULIMIT_NAMES {
            assert!(
                Ulimit::parse(&format!("{n}=1"))
                    .unwrap()
                    .resource()
                    .is_some(),
                "{n}"
            );
        }
        // over nookd's own hard limit: refused, naming it
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        if hard != UNLIMITED {
            let e = Ulimit::parse(&format!("nofile=1:{}", hard + 1))
                .unwrap()
                .check_allowed()
                .unwrap_err()
                .to_string();
            assert!(e.contains(&hard.to_string()) && !e.contains('\n'), "{e}");
        }
        assert!(Ulimit::parse("nofile=1:1").unwrap().check_allowed().is_ok());
        let r = rootfs();
        let mut o = SpecOptions::new("c", r.path());
        o.nofile = (4096, 4096);
        o.ulimits = vec![
            Ulimit::parse("nproc=10:20").unwrap(),
            Ulimit::parse("nofile=100:200").unwrap(),
        ];
        let v = spec_json(&img(), &o);
        assert_eq!(
            v["process"]["rlimits"],
            json!([
                {"type": "RLIMIT_NPROC", "soft": 10, "hard": 20},
                {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
            ])
        );
    }

    #[test]
    fn default_nofile_is_the_daemons_hard_limit() {
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let (s, h) = default_nofile();
        assert_eq!(s, h);
        assert!(
            h <= hard && h >= hard.min(1_048_576).min(1024),
            "{h} vs {hard}"
        );
    }

    #[test]
    fn init_group_add_and_relative_volumes() {
        let r = rootfs();
        let mut o = SpecOptions::new("c", r.path());
        o.init = Some("/usr/bin/tini-static".into());
        o.group_add = vec!["extra".into(), "4711".into(), "1002".into()];
        let v = spec_json(&img(), &o);
        assert_eq!(
            strings(&v["process"]["args"]),
            [INIT_PATH, "--", "/entry", "serve", "--port=80"]
        );
        let m: Vec<&Value> = v["mounts"].as_array().unwrap().iter().collect();
        let init = m.iter().find(|m| m["destination"] == INIT_PATH).unwrap();
        assert_eq!(init["source"], "/usr/bin/tini-static");
        assert!(strings(&init["options"]).contains(&"ro".to_string()));
        assert_eq!(
            v["process"]["user"]["additionalGids"],
            json!([1002, 77, 4711])
        );
        o.group_add = vec!["nosuch".into()];
        assert!(build_spec(&img(), &o).is_err());

        let cwd = Path::new("/home/u/proj");
        assert_eq!(
            absolute_volume("./data:/data", cwd),
            "/home/u/proj/data:/data"
        );
        assert_eq!(absolute_volume("../x:/x:ro", cwd), "/home/u/x:/x:ro");
        assert_eq!(absolute_volume(".:/src", cwd), "/home/u/proj:/src");
        assert_eq!(
            absolute_volume("./a/../b/./c:/c", cwd),
            "/home/u/proj/b/c:/c"
        );
        assert_eq!(absolute_volume("/abs:/x", cwd), "/abs:/x");
        assert_eq!(absolute_volume("named:/x", cwd), "named:/x");
    }

    #[test]
    fn a_missing_tini_names_the_package() {
        let e = find_init_in(&["/nonexistent/tini-static"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("package `tini`") && !e.contains('\n'), "{e}");
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("tini-static");
        std::fs::write(&t, b"").unwrap();
        let found = find_init_in(&["/nonexistent/x", t.to_str().unwrap()]).unwrap();
        assert_eq!(found, t);
    }

    #[test]
    fn tmpfs_parse() {
        let t = TmpfsMount::parse("/run").unwrap();
        assert_eq!(t.options, ["noexec", "nosuid", "nodev"]);
        let t = TmpfsMount::parse("/x:exec,size=64m").unwrap();
        assert_eq!(t.options, ["nosuid", "nodev", "exec", "size=64m"]);
        assert!(TmpfsMount::parse("rel").is_err());
    }

    #[test]
    fn env_file_parse() {
        let text = "# comment\n\nA=1\nB=with = signs\nFROM_HOST\nUNSET_ONE\n  C=spaced\n";
        let env = parse_env_file(text, |k| (k == "FROM_HOST").then(|| "h".to_string())).unwrap();
        assert_eq!(env, ["A=1", "B=with = signs", "FROM_HOST=h", "C=spaced"]);
        assert!(parse_env_file("BAD KEY=1\n", |_| None).is_err());
        assert!(parse_env_file("=x\n", |_| None).is_err());
    }

    #[test]
    fn merge_env_overrides_by_key() {
        let m = merge_env(&["A=1".into(), "B=2".into()], &["B=3".into(), "C".into()]);
        assert_eq!(m, ["A=1", "B=3", "C"]);
    }
}

#[cfg(test)]
mod sample {
    /// Writes a sample config.json for manual smoke tests:
    /// `NOOK_SAMPLE=/path/bundle cargo test --lib sample -- --ignored`.
    #[test]
    #[ignore]
    fn write_sample_bundle() {
        let dir = std::path::PathBuf::from(std::env::var("NOOK_SAMPLE").unwrap());
        let mut o = super::SpecOptions::new("sample", dir.join("rootfs"));
        o.args = std::env::var("NOOK_SAMPLE_ARGS")
            .unwrap_or_else(|_| "sh".into())
            .split(' ')
            .map(str::to_string)
            .collect();
        o.tty = std::env::var("NOOK_SAMPLE_TTY").is_ok();
        let spec = super::build_spec(&super::ImageConfig::default(), &o).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
    }
}
