//! nook: a rootless-first, per-user container runtime.
//!
//! The library holds every subsystem as one module, mirroring containerd's concepts so that a
//! later compatibility layer can expose them as containerd's own services:
//!
//! * [`config`] — `config.toml`, defaults and the paths nook uses (XDG).
//! * [`bootstrap`] — how `nookd` enters its user namespace (newuidmap/newgidmap), mount namespace
//!   and detached network namespace, and the pause process that keeps them alive across restarts.
//! * [`metadata`] — the redb database: namespaces and every other subsystem's records.
//! * [`content`], [`image`], [`snapshot`], [`diff`], [`runtime`], [`shim`], [`network`], [`gc`] —
//!   the subsystems.
//! * [`api`] — the thin gRPC façade over them; [`daemon`] wires it to a unix socket.
//! * [`cli`] — the `nook` client.

// Every unsafe block says why it is sound (firecracker's rule).
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod api;
pub mod bootstrap;
pub mod cgroup;
pub mod chunks;
pub mod cli;
pub mod config;
pub mod content;
pub mod daemon;
pub mod diff;
pub mod docker;
pub mod error;
pub mod events;
pub mod fsmeta;
pub mod fuzzing;
pub mod gc;
pub mod image;
pub mod leases;
pub mod metadata;
pub mod network;
pub mod plugins;
pub mod runtime;
pub mod services;
pub mod shim;
pub mod snapshot;
#[cfg(test)]
pub mod testing;
pub mod volumes;

/// Generated gRPC code (see `proto/`).
pub mod proto {
    /// The spine: version, namespaces, introspection.
    pub mod v1 {
        tonic::include_proto!("nook.v1");
    }
    /// Garbage collection and disk usage.
    pub mod gc {
        tonic::include_proto!("nook.gc.v1");
    }
    /// Leases.
    pub mod networks {
        tonic::include_proto!("nook.networks.v1");
    }

    pub mod leases {
        tonic::include_proto!("nook.leases.v1");
    }
    /// Images: pull, push, import/export, records, logins.
    pub mod images {
        tonic::include_proto!("nook.images.v1");
    }
    /// Containers and tasks.
    pub mod containers {
        tonic::include_proto!("nook.containers.v1");
    }
    /// Content: the blobs of a namespace.
    pub mod content {
        tonic::include_proto!("nook.content.v1");
    }
    /// Events (`nook events`).
    pub mod events {
        tonic::include_proto!("nook.events.v1");
    }
    /// Snapshots.
    pub mod snapshots {
        tonic::include_proto!("nook.snapshots.v1");
    }
    /// Named volumes.
    pub mod volumes {
        tonic::include_proto!("nook.volumes.v1");
    }
}

/// nook's version, reported by `nook version` and `nookd --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
