//! Tasks and execs of containers a containerd client made (containerd's Tasks.Create, Exec,
//! Start, Wait, Kill, CloseIO, DeleteProcess). The processes are nook's own: the task is a
//! shim running the OCI runtime on the record's spec, an exec is the shim's exec (the same as
//! `nook exec`'s); what is the client's is the stdio (FIFOs it made, `file://`, `binary://`,
//! see [`super::client_io`]), which nookd bridges, and containerd's two-step exec (Exec makes
//! it, Start runs it, Wait may come first), kept in [`Manager::client_procs`].

use super::client_io::{ClientProc, ClientStdio, Outputs, ProcState};
use super::containers::{blocking, ContainerRecord, Manager};
use crate::error::{Error, Result};
use crate::shim::ExitInfo;

/// What an exec looks like to a client (containerd's Process).
#[derive(Debug, Clone)]
pub struct ExecView {
    pub exec_id: String,
    pub io: ClientStdio,
    pub state: ProcState,
}

impl Manager {
    /// Creates (does not start) the task of a container a containerd client made, on the
    /// client's stdio; returns the init's pid.
    pub async fn create_client_task(
        &self,
        ns: &str,
        r: &ContainerRecord,
        io: ClientStdio,
    ) -> Result<i32> {
        let (io2, ns2, id2) = (io.clone(), ns.to_string(), r.id.clone());
        let outputs = blocking(move || Outputs::open(&io2, &ns2, &id2)).await?;
        let stdin = !io.stdin.is_empty() && !io.stdout.starts_with("binary://");
        // the shim makes the init a stdin pipe for this run only (the record is not changed:
        // a later start by nook has no client to feed it)
        let run = ContainerRecord {
            stdin: r.stdin || stdin,
            ..r.clone()
        };
        if !self.create_task(ns, &run, false, true).await? {
            return Err(Error::AlreadyExists(format!(
                "task {} already exists",
                r.id
            )));
        }
        let c = self.tasks.client(ns, &r.id);
        let pid = c.state().await.map(|s| s.pid).unwrap_or(0);
        let stream = c.attach(stdin, false).await?;
        let p = ClientProc::new("", io, serde_json::Value::Null);
        p.set_running(pid);
        self.client_procs.replace(ns, &r.id, p.clone());
        p.bridge(stream, outputs, &r.id);
        Ok(pid)
    }

    /// Makes an exec (containerd's Tasks.Exec): recorded with the client's process and stdio,
    /// run by [`Manager::start_client_exec`].
    pub async fn create_client_exec(
        &self,
        ns: &str,
        r: &ContainerRecord,
        exec_id: &str,
        process: serde_json::Value,
        io: ClientStdio,
    ) -> Result<()> {
        if exec_id.is_empty()
            || exec_id.len() > 76
            || !exec_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(Error::InvalidArgument(format!(
                "invalid exec id {exec_id:?}: letters, digits, '-', '_' and '.' (up to 76)"
            )));
        }
        if !process.is_object() || process["args"].as_array().is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidArgument(
                "the exec's process spec needs args".into(),
            ));
        }
        if !self.status(ns, r.clone()).await.running() {
            return Err(Error::Precondition(format!(
                "container {} is not running: exec needs a running task",
                r.id
            )));
        }
        let p = ClientProc::new(exec_id, io, process);
        if !self.client_procs.insert(ns, &r.id, p) {
            return Err(Error::AlreadyExists(format!(
                "id {exec_id}: exec process already exists"
            )));
        }
        self.deps().events.publish(
            ns,
            "/tasks/exec-added",
            &[("id", r.id.clone()), ("exec_id", exec_id.to_string())],
        );
        Ok(())
    }

    fn client_exec(&self, ns: &str, id: &str, exec_id: &str) -> Result<std::sync::Arc<ClientProc>> {
        self.client_procs
            .get(ns, id, exec_id)
            .ok_or_else(|| Error::NotFound(format!("process {exec_id} of {id} not found")))
    }

    /// Starts an exec made by [`Manager::create_client_exec`] through the shim (nook's exec),
    /// its stdio bridged to the client's; returns its pid.
    pub async fn start_client_exec(
        &self,
        ns: &str,
        r: &ContainerRecord,
        exec_id: &str,
    ) -> Result<i32> {
        let p = self.client_exec(ns, &r.id, exec_id)?;
        if p.state() != ProcState::Created {
            return Err(Error::Precondition(format!(
                "process {exec_id} was started already"
            )));
        }
        let (io, ns2, id2) = (p.io.clone(), ns.to_string(), r.id.clone());
        let outputs = blocking(move || Outputs::open(&io, &ns2, &id2)).await?;
        let mut process = p.process.clone();
        if let Some(o) = process.as_object_mut() {
            o.remove("consoleSize");
        }
        let stdin = !p.io.stdin.is_empty() && !p.io.stdout.starts_with("binary://");
        let (pid, stream) = self
            .tasks
            .client(ns, &r.id)
            .exec(exec_id, process, p.io.terminal, stdin)
            .await
            .map_err(|e| match e {
                Error::Unavailable(_) => {
                    Error::Precondition(format!("container {} is not running", r.id))
                }
                other => other,
            })?;
        p.set_running(pid);
        p.bridge(stream, outputs, &r.id);
        self.deps().events.publish(
            ns,
            "/tasks/exec-started",
            &[
                ("id", r.id.clone()),
                ("exec_id", exec_id.to_string()),
                ("pid", pid.to_string()),
            ],
        );
        Ok(pid)
    }

    /// An exec as the client sees it.
    pub fn client_exec_view(&self, ns: &str, id: &str, exec_id: &str) -> Result<ExecView> {
        let p = self.client_exec(ns, id, exec_id)?;
        Ok(ExecView {
            exec_id: p.exec_id.clone(),
            io: p.io.clone(),
            state: p.state(),
        })
    }

    /// Waits for an exec's exit (also before its start, as containerd's clients wait).
    pub async fn wait_client_exec(&self, ns: &str, id: &str, exec_id: &str) -> Result<ExitInfo> {
        Ok(self.client_exec(ns, id, exec_id)?.wait().await)
    }

    /// Waits (at most 10 s) until a client's task's output was handed to its stdio, once
    /// the task exited; at once for a task no client made.
    pub async fn wait_client_output(&self, ns: &str, id: &str) {
        if let Some(p) = self.client_procs.get(ns, id, "") {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), p.wait()).await;
        }
    }

    /// Signals a running exec.
    pub async fn kill_client_exec(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        signal: i32,
    ) -> Result<()> {
        match self.client_exec(ns, id, exec_id)?.state() {
            ProcState::Created => Err(Error::Precondition(format!(
                "process {exec_id} is not started"
            ))),
            ProcState::Exited(_) => Err(Error::NotFound(format!(
                "process {exec_id} already finished"
            ))),
            ProcState::Running { .. } => {
                self.tasks
                    .client(ns, id)
                    .kill(signal, false, Some(exec_id.to_string()))
                    .await
            }
        }
    }

    /// Removes an exec that is not running (containerd's DeleteProcess): its exit, if it ran.
    pub fn delete_client_exec(&self, ns: &str, id: &str, exec_id: &str) -> Result<ExitInfo> {
        let p = self.client_exec(ns, id, exec_id)?;
        let exit = match p.state() {
            ProcState::Running { .. } => {
                return Err(Error::Precondition(format!(
                    "process {exec_id} is running: kill it before deleting it"
                )))
            }
            ProcState::Created => ExitInfo {
                pid: 0,
                exit_code: 0,
                exited_at: String::new(),
            },
            ProcState::Exited(e) => e,
        };
        self.client_procs.remove(ns, id, exec_id);
        Ok(exit)
    }

    /// Closes the stdin of a client's process (containerd's CloseIO; `exec_id` empty: the
    /// init).
    pub async fn close_client_stdin(&self, ns: &str, id: &str, exec_id: &str) -> Result<()> {
        match self.client_procs.get(ns, id, exec_id) {
            Some(p) => p.close_stdin().await,
            None if exec_id.is_empty() => Err(Error::Precondition(format!(
                "the task of {id} was not made through containerd's API: it has no client stdin"
            ))),
            None => Err(Error::NotFound(format!(
                "process {exec_id} of {id} not found"
            ))),
        }
    }
}
