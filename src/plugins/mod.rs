//! The plugin registry: every subsystem nookd starts reports itself here with a status, so
//! `nook plugins ls` tells the truth about what works on this machine and why not.

use std::collections::BTreeMap;
use std::sync::RwLock;

/// Plugin status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Skip,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skip => "skip",
            Status::Error => "error",
        }
    }
}

/// One plugin and how it fared.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// e.g. `nook.snapshotter.v1`
    pub kind: String,
    /// e.g. `overlayfs`
    pub id: String,
    pub status: Status,
    /// Why it is skipped or failed (empty when ok).
    pub reason: String,
    pub exports: BTreeMap<String, String>,
}

/// Type names.
pub const CONTENT: &str = "nook.content.v1";
pub const METADATA: &str = "nook.metadata.v1";
pub const SNAPSHOTTER: &str = "nook.snapshotter.v1";
pub const RUNTIME: &str = "nook.runtime.v1";
pub const NETWORK: &str = "nook.network.v1";
pub const GRPC: &str = "nook.grpc.v1";
pub const GC: &str = "nook.gc.v1";

/// The registry of started plugins.
#[derive(Debug, Default)]
pub struct Registry {
    plugins: RwLock<Vec<Plugin>>,
}

impl Registry {
    /// Records (or replaces) a plugin's status.
    pub fn set(&self, kind: &str, id: &str, result: Result<(), String>) {
        self.set_with(kind, id, result, BTreeMap::new())
    }

    /// Records a plugin's status with exported facts (paths, versions).
    pub fn set_with(
        &self,
        kind: &str,
        id: &str,
        result: Result<(), String>,
        exports: BTreeMap<String, String>,
    ) {
        let (status, reason) = match result {
            Ok(()) => (Status::Ok, String::new()),
            Err(r) => (Status::Skip, r),
        };
        let p = Plugin {
            kind: kind.into(),
            id: id.into(),
            status,
            reason,
            exports,
        };
        let mut v = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        match v.iter_mut().find(|x| x.kind == kind && x.id == id) {
            Some(x) => *x = p,
            None => v.push(p),
        }
    }

    /// Marks a plugin as failed (it should have worked but did not).
    pub fn error(&self, kind: &str, id: &str, reason: String) {
        self.set(kind, id, Err(reason));
        let mut v = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = v.iter_mut().find(|x| x.kind == kind && x.id == id) {
            x.status = Status::Error;
        }
    }

    /// All plugins, in registration order.
    pub fn list(&self) -> Vec<Plugin> {
        self.plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a plugin is ok.
    pub fn is_ok(&self, kind: &str, id: &str) -> bool {
        self.list()
            .iter()
            .any(|p| p.kind == kind && p.id == id && p.status == Status::Ok)
    }
}
