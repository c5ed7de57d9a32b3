//! The runtime subsystem: containers' OCI specs, the OCI runtime binaries (runc, crun, any
//! other) as plugins, and the daemon side of tasks (bundles, shims, recovery).
//!
//! * [`spec`] builds `config.json` from an image config and `nook run` options.
//! * [`mounts`] parses `-v` values that name volumes (named and anonymous).
//! * [`user`] resolves `--user` against the image's /etc/passwd and /etc/group.
//! * [`seccomp`] is the default seccomp profile (docker's allow-list).
//! * [`plugin`] resolves runtime names from `[runtimes]` and probes them.
//! * [`task`] creates bundles, starts `nook-shim` processes and talks to them.
//! * [`client_task`] runs the tasks and execs of containers a containerd client made, on
//!   the client's stdio ([`client_io`]: FIFOs, `file://`, `binary://`).
//! * [`copy`] moves files into and out of a container's root as tar streams (`nook cp`).
//! * [`containers`] is the manager over them, built from [`containers::Deps`] by the daemon.

pub mod client_io;
pub mod client_task;
pub mod containers;
pub mod copy;
mod deps;
pub mod limits;
pub mod mounts;
pub mod plugin;
pub mod restart;
pub mod seccomp;
pub mod seccomp_bpf;
pub mod spec;
pub mod task;
pub mod ulimit;
pub mod user;
