//! The default seccomp profile: an allow-list equivalent to docker's default profile.
//!
//! Everything not listed fails with `EPERM` (`SCMP_ACT_ERRNO`). As in docker, a few syscalls are
//! allowed only with a capability (`mount` needs CAP_SYS_ADMIN, `ptrace`-style inspection
//! CAP_SYS_PTRACE, ...), `clone` may not create namespaces without CAP_SYS_ADMIN, `clone3` answers
//! `ENOSYS` so that libcs fall back to `clone` (whose flags can be filtered), and `personality`
//! accepts only the harmless personas.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::error::{Error, Result};

/// Syscalls every container may make.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // arch specific, harmless where absent
    "arch_prctl",
    "modify_ldt",
    "ptrace",
];

/// Syscalls allowed only when the container holds the given capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `personality(2)` values docker allows: PER_LINUX, PER_LINUX32, UNAME26 variants, query.
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// The CLONE_NEW* flags `clone` may not use without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

const ENOSYS: u32 = 38;
const EPERM: u32 = 1;

fn rule(
    names: &[&str],
    action: LinuxSeccompAction,
    args: Vec<LinuxSeccompArg>,
) -> Result<LinuxSyscall> {
    let mut b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(action);
    if !args.is_empty() {
        b = b.args(args);
    }
    if action == LinuxSeccompAction::ScmpActErrno {
        b = b.errno_ret(ENOSYS);
    }
    b.build()
        .map_err(|e| Error::Internal(format!("building the seccomp profile: {e}")))
}

fn arg(index: usize, value: u64, value_two: u64, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .value_two(value_two)
        .op(op)
        .build()
        .unwrap_or_default()
}

/// The architectures of the profile: the native one and its compat ABIs.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// Builds the default profile for a container holding `caps` (names like `CAP_SYS_ADMIN`).
pub fn default_profile(caps: &[String]) -> Result<LinuxSeccomp> {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut syscalls = vec![rule(ALLOWED, LinuxSeccompAction::ScmpActAllow, vec![])?];
    for p in PERSONALITIES {
        syscalls.push(rule(
            &["personality"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(0, *p, 0, LinuxSeccompOperator::ScmpCmpEq)],
        )?);
    }
    let mut extra: Vec<&str> = Vec::new();
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            for n in names.iter() {
                if !extra.contains(n) {
                    extra.push(n);
                }
            }
        }
    }
    if !has("CAP_SYS_ADMIN") {
        // clone without namespace flags; clone3's flags live in memory, so it reports ENOSYS
        // and libcs fall back to clone.
        let clone_arg = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        syscalls.push(rule(
            &["clone"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(
                clone_arg,
                CLONE_NAMESPACE_FLAGS,
                0,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
            )],
        )?);
        syscalls.push(rule(&["clone3"], LinuxSeccompAction::ScmpActErrno, vec![])?);
    }
    // socket: everything but AF_VSOCK (40)
    syscalls.push(rule(
        &["socket"],
        LinuxSeccompAction::ScmpActAllow,
        vec![arg(0, 40, 0, LinuxSeccompOperator::ScmpCmpNe)],
    )?);
    if !extra.is_empty() {
        syscalls.push(rule(&extra, LinuxSeccompAction::ScmpActAllow, vec![])?);
    }
    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno);
    s.set_default_errno_ret(Some(EPERM));
    s.set_architectures(Some(architectures()));
    s.set_syscalls(Some(syscalls));
    Ok(s)
}

/// Makes the container's `bind(2)` calls go to the listener at `listener` (for
/// `--port-driver direct`): `SCMP_ACT_NOTIFY` for bind, a profile allowing everything else when
/// the container has none. Returns false (and changes nothing) when the profile restricts bind
/// itself: then it keeps its say.
pub fn notify_bind(spec: &mut serde_json::Value, listener: &str) -> bool {
    let notify = serde_json::json!({"names": ["bind"], "action": "SCMP_ACT_NOTIFY"});
    let linux = &mut spec["linux"];
    let Some(p) = linux.get_mut("seccomp").filter(|p| p.is_object()) else {
        linux["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": architectures(),
            "syscalls": [notify],
            "listenerPath": listener,
        });
        return true;
    };
    let mut allowed = p["defaultAction"] == "SCMP_ACT_ALLOW";
    let mut rules: Vec<serde_json::Value> = p["syscalls"].as_array().cloned().unwrap_or_default();
    for r in rules.iter_mut() {
        let names = r["names"].as_array().cloned().unwrap_or_default();
        if !names.iter().any(|n| n == "bind") {
            continue;
        }
        let plain = r
            .get("args")
            .and_then(|a| a.as_array())
            .is_none_or(|a| a.is_empty());
        if r["action"] != "SCMP_ACT_ALLOW" || !plain {
            return false;
        }
        allowed = true;
        r["names"] = names.into_iter().filter(|n| n != "bind").collect();
    }
    if !allowed {
        return false;
    }
    rules.retain(|r| r["names"].as_array().is_some_and(|n| !n.is_empty()));
    rules.push(notify);
    p["syscalls"] = rules.into();
    p["listenerPath"] = listener.into();
    true
}

/// Parses a custom profile given with `--security-opt seccomp=FILE` (OCI JSON, as in a
/// runtime spec's `linux.seccomp`; docker's profile format is accepted where it matches).
pub fn parse_profile(json: &str) -> Result<LinuxSeccomp> {
    serde_json::from_str(json).map_err(|e| {
        Error::InvalidArgument(format!(
            "the seccomp profile is not valid OCI seccomp JSON ({e}): give a file with defaultAction, architectures and syscalls"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_goes_to_the_listener() {
        // the default profile: bind leaves the allowed list for a notify rule of its own
        let mut spec = serde_json::json!({"linux": {
            "seccomp": serde_json::to_value(default_profile(&[]).unwrap()).unwrap()}});
        assert!(notify_bind(&mut spec, "seccomp.sock"));
        let s = &spec["linux"]["seccomp"];
        assert_eq!(s["listenerPath"], "seccomp.sock");
        let binds: Vec<&serde_json::Value> = s["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == "bind"))
            .collect();
        assert_eq!(binds.len(), 1);
        assert_eq!(binds[0]["action"], "SCMP_ACT_NOTIFY");
        // it still parses as an OCI profile
        let p: LinuxSeccomp = serde_json::from_value(s.clone()).unwrap();
        assert_eq!(
            p.listener_path().as_deref(),
            Some(std::path::Path::new("seccomp.sock"))
        );
        // unconfined: a profile allowing everything else
        let mut spec = serde_json::json!({"linux": {}});
        assert!(notify_bind(&mut spec, "l"));
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        // a profile that denies bind keeps its say
        let mut spec = serde_json::json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["bind"], "action": "SCMP_ACT_ERRNO"}]}}});
        let before = spec.clone();
        assert!(!notify_bind(&mut spec, "l"));
        assert_eq!(spec, before);
        let mut spec = serde_json::json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}}});
        assert!(!notify_bind(&mut spec, "l"));
    }

    fn names(p: &LinuxSeccomp, action: LinuxSeccompAction) -> Vec<String> {
        p.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.action() == action && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn default_denies_and_allows_the_basics() {
        let p = default_profile(&[]).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        let allowed = names(&p, LinuxSeccompAction::ScmpActAllow);
        for s in ["read", "write", "execve", "openat", "exit_group", "wait4"] {
            assert!(allowed.iter().any(|n| n == s), "{s} must be allowed");
        }
        for s in [
            "mount",
            "unshare",
            "setns",
            "reboot",
            "init_module",
            "kexec_load",
            "bpf",
        ] {
            assert!(!allowed.iter().any(|n| n == s), "{s} must be denied");
        }
        assert!(!p.architectures().as_ref().unwrap().is_empty());
        // the JSON is what runc reads
        let j = serde_json::to_string(&p).unwrap();
        assert!(
            j.contains("SCMP_ACT_ERRNO") && j.contains("SCMP_CMP_MASKED_EQ"),
            "{j}"
        );
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let p = default_profile(&["CAP_SYS_ADMIN".into(), "CAP_SYS_CHROOT".into()]).unwrap();
        let allowed = names(&p, LinuxSeccompAction::ScmpActAllow);
        for s in ["mount", "unshare", "setns", "clone", "clone3", "chroot"] {
            assert!(allowed.iter().any(|n| n == s), "{s} must be allowed");
        }
        assert!(!allowed.iter().any(|n| n == "reboot"));
    }

    #[test]
    fn custom_profiles_parse_or_explain() {
        let p = parse_profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert!(parse_profile("{nope")
            .unwrap_err()
            .to_string()
            .contains("seccomp"));
    }
}
