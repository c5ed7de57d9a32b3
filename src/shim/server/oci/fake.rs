//! An in-memory OCI runtime for the shim's unit tests: it keeps each container's state as runc
//! would (created, running, paused), answers each verb as runc does (start of a running
//! container fails, delete of a running one needs --force), writes the pid files the shim
//! reads, and fails the call a test chooses through [`Faults`]. A failed `create` leaves a
//! half-made container behind, as a runtime that died part-way does.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Invocation, OciRuntime, Shim, Stdio3};
use crate::testing::Faults;

/// The pid the fake gives a container's processes (no such process exists).
pub(in crate::shim::server) const FAKE_PID: i32 = 0x3fff_fff0;

#[derive(Debug, Default)]
pub(in crate::shim::server) struct FakeRuntime {
    pub faults: Faults,
    /// Container id → its state (`created`, `running`, `paused`).
    pub containers: Mutex<BTreeMap<String, &'static str>>,
}

impl FakeRuntime {
    pub fn state(&self, id: &str) -> Option<&'static str> {
        self.containers.lock().unwrap().get(id).copied()
    }

    fn call(&self, shim: &Shim, args: &[&str]) -> Result<Vec<u8>, String> {
        let verb = args.first().copied().unwrap_or_default();
        let id = args.last().copied().unwrap_or_default();
        let fault = self
            .faults
            .call(verb, &args.join(" "))
            .map_err(|e| format!("{verb}: {e}"));
        let mut cs = self.containers.lock().unwrap();
        let pid_file = args
            .iter()
            .position(|a| *a == "--pid-file")
            .and_then(|i| args.get(i + 1));
        let write_pid = || {
            if let Some(p) = pid_file {
                std::fs::write(shim.bundle.join(p), FAKE_PID.to_string())
                    .map_err(|e| format!("writing the pid file: {e}"))?;
            }
            Ok::<(), String>(())
        };
        match verb {
            "create" | "run" => {
                if cs.contains_key(id) {
                    return Err(format!("container with id {id} exists"));
                }
                // a runtime that failed part-way leaves the container made
                cs.insert(id.into(), "created");
                fault?;
                write_pid()?;
                if verb == "run" {
                    cs.insert(id.into(), "running");
                }
                Ok(Vec::new())
            }
            "kill" => {
                fault?;
                match cs.get(args[args.len() - 2]) {
                    None => Err("container does not exist".into()),
                    Some(_) => Ok(Vec::new()),
                }
            }
            _ => {
                fault?;
                let st = cs.get(id).copied();
                let next = match (verb, st) {
                    (_, None) => return Err(format!("container {id} does not exist")),
                    ("start", Some("created")) => Some("running"),
                    ("pause", Some("running")) => Some("paused"),
                    ("resume", Some("paused")) => Some("running"),
                    ("delete", Some(s)) if s != "running" || args.contains(&"--force") => None,
                    ("ps", _) => return Ok(format!("[{FAKE_PID}]").into_bytes()),
                    ("exec", Some("running")) => {
                        write_pid()?;
                        return Ok(Vec::new());
                    }
                    (v, Some(s)) => return Err(format!("cannot {v} a container that is {s}")),
                };
                match next {
                    Some(n) => cs.insert(id.into(), n),
                    None => cs.remove(id),
                };
                Ok(Vec::new())
            }
        }
    }
}

impl OciRuntime for FakeRuntime {
    fn invoke<'a>(
        &'a self,
        shim: &'a Shim,
        args: &'a [&'a str],
        io: Stdio3,
        _capture: bool,
    ) -> Invocation<'a> {
        drop(io); // the "runtime" exited: its ends of the pipes close
        let r = self.call(shim, args);
        Box::pin(async move { r })
    }
}
