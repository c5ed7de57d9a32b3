//! containerd's Tasks service, on nook's tasks (the shim-owned processes of nook's
//! containers): Create (nook's task on the client's spec and stdio, see
//! [`crate::runtime::client_task`]), List, Get, Start, Kill, Wait, Pause/Resume, ListPids,
//! ResizePty, CloseIO, Delete of a stopped task (the container stays), and execs (Exec, then
//! Start, Wait, Kill, ResizePty, CloseIO and DeleteProcess with the exec id) run by nook's
//! exec. Update and Metrics are not implemented yet; Checkpoint is not supported (no CRIU in
//! rootless nook).

use std::sync::Arc;

use containerd_client::services::v1 as cd;
use containerd_client::types::v1::{Process, ProcessInfo, Status as TaskStatus};
use tonic::{Request, Response, Status};

use super::containers::{containers, find};
use super::namespace;
use super::server::tasks_server::{Tasks, TasksServer};
use crate::daemon::Daemon;
use crate::runtime::client_io::{ClientStdio, ProcState};
use crate::runtime::containers::Status as CStatus;

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> TasksServer<Svc> {
    TasksServer::new(Svc(d)).max_decoding_message_size(crate::api::MAX_MESSAGE)
}

fn rfc3339_ts(t: &str) -> Option<prost_types::Timestamp> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        })
}

/// containerd's process of a nook container's task.
fn process(s: &CStatus) -> Option<Process> {
    let t = s.task.as_ref()?;
    let status = match t.status.as_str() {
        "created" => TaskStatus::Created,
        "running" => TaskStatus::Running,
        "paused" => TaskStatus::Paused,
        "stopped" => TaskStatus::Stopped,
        _ => TaskStatus::Unknown,
    };
    Some(Process {
        container_id: s.record.id.clone(),
        id: s.record.id.clone(),
        pid: t.pid.max(0) as u32,
        status: status as i32,
        stdin: String::new(),
        stdout: String::new(),
        stderr: String::new(),
        terminal: s.record.tty,
        exit_status: t.exit.as_ref().map(|e| e.exit_code as u32).unwrap_or(0),
        exited_at: t.exit.as_ref().and_then(|e| rfc3339_ts(&e.exited_at)),
    })
}

/// containerd's process of a client's exec.
fn exec_process(id: &str, v: &crate::runtime::client_task::ExecView) -> Process {
    let (status, pid, exit) = match &v.state {
        ProcState::Created => (TaskStatus::Created, 0, None),
        ProcState::Running { pid } => (TaskStatus::Running, *pid, None),
        ProcState::Exited(e) => (TaskStatus::Stopped, e.pid, Some(e)),
    };
    Process {
        container_id: id.to_string(),
        id: v.exec_id.clone(),
        pid: pid.max(0) as u32,
        status: status as i32,
        stdin: v.io.stdin.clone(),
        stdout: v.io.stdout.clone(),
        stderr: v.io.stderr.clone(),
        terminal: v.io.terminal,
        exit_status: exit.map(|e| e.exit_code as u32).unwrap_or(0),
        exited_at: exit.and_then(|e| rfc3339_ts(&e.exited_at)),
    }
}

/// The process spec of an Exec: containerd's typed Any of a runtime-spec Process (JSON).
fn process_spec(a: Option<prost_types::Any>) -> Result<serde_json::Value, Status> {
    let a = a.ok_or_else(|| Status::invalid_argument("the exec's process spec is required"))?;
    serde_json::from_slice(&a.value).map_err(|e| {
        Status::invalid_argument(format!(
            "the exec's process spec ({}) is not a runtime-spec process in JSON: {e}",
            a.type_url
        ))
    })
}

impl Svc {
    async fn status(&self, ns: &str, id: &str) -> Result<CStatus, Status> {
        let rec = find(&self.0, ns, id)?;
        Ok(containers(&self.0)?.status(ns, rec).await)
    }

    /// The container's status, NotFound when it has no task (containerd's answer then).
    async fn task(&self, ns: &str, id: &str) -> Result<CStatus, Status> {
        let st = self.status(ns, id).await?;
        if st.task.is_none() {
            return Err(Status::not_found(format!(
                "no running task found: task {id} not found"
            )));
        }
        Ok(st)
    }
}

#[tonic::async_trait]
impl Tasks for Svc {
    async fn create(
        &self,
        r: Request<cd::CreateTaskRequest>,
    ) -> Result<Response<cd::CreateTaskResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        if r.checkpoint.is_some() {
            return Err(Status::unimplemented(
                "restoring from a checkpoint is not supported: rootless nook has no CRIU",
            ));
        }
        let rec = find(&self.0, &ns, &r.container_id)?;
        // the rootfs is the container's snapshot, which nook mounts itself; other mounts
        // than the snapshot's own are refused rather than silently ignored
        if !r.rootfs.is_empty() {
            let sn = self.0.snapshotters.get(Some(&rec.snapshotter))?;
            let (ns2, key) = (ns.clone(), rec.snapshot_key.clone());
            let own = crate::api::blocking(move || {
                crate::snapshot::Snapshotter::mounts(sn.as_ref(), &ns2, &key)
            })
            .await?;
            let same = own.len() == r.rootfs.len()
                && own.iter().zip(&r.rootfs).all(|(a, b)| {
                    a.kind == b.r#type && a.source == b.source && a.options == b.options
                });
            if !same {
                return Err(Status::invalid_argument(
                    "nook runs a container on its own snapshot: rootfs mounts other than that snapshot's are not supported",
                ));
            }
        }
        let io = ClientStdio {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            terminal: r.terminal,
        };
        let pid = containers(&self.0)?
            .create_client_task(&ns, &rec, io)
            .await?;
        Ok(Response::new(cd::CreateTaskResponse {
            container_id: rec.id,
            pid: pid.max(0) as u32,
        }))
    }

    async fn start(
        &self,
        r: Request<cd::StartRequest>,
    ) -> Result<Response<cd::StartResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let rec = find(&self.0, &ns, &r.container_id)?;
        let m = containers(&self.0)?;
        if !r.exec_id.is_empty() {
            let pid = m.start_client_exec(&ns, &rec, &r.exec_id).await?;
            return Ok(Response::new(cd::StartResponse {
                pid: pid.max(0) as u32,
            }));
        }
        m.user_started(&ns, &rec)?;
        m.start(&ns, &rec).await?;
        let pid = m
            .status(&ns, rec)
            .await
            .task
            .map(|t| t.pid.max(0) as u32)
            .unwrap_or(0);
        Ok(Response::new(cd::StartResponse { pid }))
    }

    async fn delete(
        &self,
        r: Request<cd::DeleteTaskRequest>,
    ) -> Result<Response<cd::DeleteResponse>, Status> {
        let ns = namespace(&r)?;
        let id = r.into_inner().container_id;
        let rec = find(&self.0, &ns, &id)?;
        let e = containers(&self.0)?.delete_task(&ns, &rec).await?;
        Ok(Response::new(cd::DeleteResponse {
            id,
            pid: e.pid.max(0) as u32,
            exit_status: e.exit_code as u32,
            exited_at: rfc3339_ts(&e.exited_at),
        }))
    }

    async fn delete_process(
        &self,
        r: Request<cd::DeleteProcessRequest>,
    ) -> Result<Response<cd::DeleteResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        if r.exec_id.is_empty() {
            return Err(Status::invalid_argument(
                "exec_id is required (the init is deleted with Delete)",
            ));
        }
        let rec = find(&self.0, &ns, &r.container_id)?;
        let e = containers(&self.0)?.delete_client_exec(&ns, &rec.id, &r.exec_id)?;
        Ok(Response::new(cd::DeleteResponse {
            id: r.exec_id,
            pid: e.pid.max(0) as u32,
            exit_status: e.exit_code as u32,
            exited_at: rfc3339_ts(&e.exited_at),
        }))
    }

    async fn get(&self, r: Request<cd::GetRequest>) -> Result<Response<cd::GetResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        if !r.exec_id.is_empty() {
            let rec = find(&self.0, &ns, &r.container_id)?;
            let v = containers(&self.0)?.client_exec_view(&ns, &rec.id, &r.exec_id)?;
            return Ok(Response::new(cd::GetResponse {
                process: Some(exec_process(&rec.id, &v)),
            }));
        }
        let st = self.task(&ns, &r.container_id).await?;
        Ok(Response::new(cd::GetResponse {
            process: process(&st),
        }))
    }

    async fn list(
        &self,
        r: Request<cd::ListTasksRequest>,
    ) -> Result<Response<cd::ListTasksResponse>, Status> {
        let ns = namespace(&r)?;
        let m = containers(&self.0)?;
        let mut tasks = Vec::new();
        for rec in m.records(&ns)? {
            if let Some(p) = process(&m.status(&ns, rec).await) {
                tasks.push(p);
            }
        }
        Ok(Response::new(cd::ListTasksResponse { tasks }))
    }

    async fn kill(&self, r: Request<cd::KillRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let rec = find(&self.0, &ns, &r.container_id)?;
        let m = containers(&self.0)?;
        if r.exec_id.is_empty() {
            self.0
                .container_service()?
                .kill(&ns, &rec, r.signal as i32, r.all)
                .await?;
        } else {
            m.kill_client_exec(&ns, &rec.id, &r.exec_id, r.signal as i32)
                .await?;
        }
        Ok(Response::new(()))
    }

    async fn exec(&self, r: Request<cd::ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let rec = find(&self.0, &ns, &r.container_id)?;
        let process = process_spec(r.spec)?;
        let io = ClientStdio {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            terminal: r.terminal,
        };
        containers(&self.0)?
            .create_client_exec(&ns, &rec, &r.exec_id, process, io)
            .await?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, r: Request<cd::ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let rec = find(&self.0, &ns, &r.container_id)?;
        let exec = (!r.exec_id.is_empty()).then_some(r.exec_id);
        containers(&self.0)?
            .tasks
            .client(&ns, &rec.id)
            .resize(
                exec,
                r.width.min(u16::MAX as u32) as u16,
                r.height.min(u16::MAX as u32) as u16,
            )
            .await?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, r: Request<cd::CloseIoRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let rec = find(&self.0, &ns, &r.container_id)?;
        if r.stdin {
            containers(&self.0)?
                .close_client_stdin(&ns, &rec.id, &r.exec_id)
                .await?;
        }
        Ok(Response::new(()))
    }

    async fn pause(&self, r: Request<cd::PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let rec = find(&self.0, &ns, &r.into_inner().container_id)?;
        self.0.container_service()?.pause(&ns, &rec, true).await?;
        Ok(Response::new(()))
    }

    async fn resume(&self, r: Request<cd::ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let rec = find(&self.0, &ns, &r.into_inner().container_id)?;
        self.0.container_service()?.pause(&ns, &rec, false).await?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        r: Request<cd::ListPidsRequest>,
    ) -> Result<Response<cd::ListPidsResponse>, Status> {
        let ns = namespace(&r)?;
        let id = r.into_inner().container_id;
        let st = self.task(&ns, &id).await?;
        let pids = containers(&self.0)?
            .tasks
            .client(&ns, &st.record.id)
            .pids()
            .await?;
        Ok(Response::new(cd::ListPidsResponse {
            processes: pids
                .into_iter()
                .map(|p| ProcessInfo {
                    pid: p.max(0) as u32,
                    info: None,
                })
                .collect(),
        }))
    }

    async fn checkpoint(
        &self,
        _r: Request<cd::CheckpointTaskRequest>,
    ) -> Result<Response<cd::CheckpointTaskResponse>, Status> {
        Err(Status::unimplemented(
            "checkpoint is not supported: rootless nook has no CRIU",
        ))
    }

    async fn update(&self, r: Request<cd::UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let rec = find(&self.0, &ns, &r.container_id)?;
        let Some(res) = r.resources else {
            return Ok(Response::new(()));
        };
        let v: serde_json::Value = serde_json::from_slice(&res.value).map_err(|e| {
            Status::invalid_argument(format!(
                "resources ({}) are not runtime-spec LinuxResources in JSON: {e}",
                res.type_url
            ))
        })?;
        let u = resources(&v)?;
        crate::runtime::limits::update(containers(&self.0)?, &ns, &rec, &u).await?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        r: Request<cd::MetricsRequest>,
    ) -> Result<Response<cd::MetricsResponse>, Status> {
        let ns = namespace(&r)?;
        let f = super::filters::Filters::parse(&r.into_inner().filters)?;
        let m = containers(&self.0)?;
        let d = m.deps();
        let mut metrics = Vec::new();
        for rec in m.records(&ns)? {
            let id = rec.id.clone();
            if !f.matches(|p| match p {
                [x] if x == "id" || x == "container_id" => Some(id.clone()),
                _ => None,
            }) {
                continue;
            }
            let st = m.status(&ns, rec.clone()).await;
            let Some(pid) = st.task.as_ref().map(|t| t.pid).filter(|_| st.running()) else {
                continue;
            };
            if let crate::cgroup::Cgroups::None { why, .. } = d.cgroups.as_ref() {
                return Err(Status::failed_precondition(format!(
                    "no metrics for task {id}: nook reads them from delegated cgroups, and {why}"
                )));
            }
            let pids_limit = rec.limits.resources.pids_limit.unwrap_or(0).max(0) as u64;
            let (d2, rec2) = (d.clone(), rec.clone());
            let stats =
                crate::api::blocking(move || Ok(crate::runtime::limits::stats(&d2, &rec2, pid)))
                    .await?;
            if let Some((s, _, _)) = stats {
                metrics.push(containerd_client::types::Metric {
                    timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
                    id: rec.id.clone(),
                    data: super::metrics::encode(&d.cgroups, &s, pids_limit),
                });
            }
        }
        Ok(Response::new(cd::MetricsResponse { metrics }))
    }

    async fn wait(
        &self,
        r: Request<cd::WaitRequest>,
    ) -> Result<Response<cd::WaitResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let rec = find(&self.0, &ns, &r.container_id)?;
        let m = containers(&self.0)?;
        if !r.exec_id.is_empty() {
            let e = m.wait_client_exec(&ns, &rec.id, &r.exec_id).await?;
            return Ok(Response::new(cd::WaitResponse {
                exit_status: e.exit_code as u32,
                exited_at: rfc3339_ts(&e.exited_at),
            }));
        }
        let code = m.wait_exit(&ns, &rec.id).await?;
        // a client's task: its output is in the client's FIFOs before the exit is told
        m.wait_client_output(&ns, &rec.id).await;
        let exited_at = m
            .status(&ns, rec)
            .await
            .task
            .and_then(|t| t.exit)
            .and_then(|e| rfc3339_ts(&e.exited_at));
        Ok(Response::new(cd::WaitResponse {
            exit_status: code as u32,
            exited_at,
        }))
    }
}

/// nook's resources from containerd's (runtime-spec LinuxResources): memory, swap,
/// reservation, CPU quota/period (as CPUs), shares and cpuset, pids and the block I/O weight;
/// anything else is refused rather than ignored.
fn resources(v: &serde_json::Value) -> Result<crate::cgroup::Resources, Status> {
    let mut u = crate::cgroup::Resources::default();
    let i = |p: &str| v.pointer(p).and_then(|x| x.as_i64());
    u.memory = i("/memory/limit");
    u.memory_swap = i("/memory/swap");
    u.memory_reservation = i("/memory/reservation");
    if let (Some(q), Some(p)) = (i("/cpu/quota"), i("/cpu/period")) {
        if q > 0 && p > 0 {
            u.cpus = Some(q as f64 / p as f64);
        }
    }
    u.cpu_shares = v.pointer("/cpu/shares").and_then(|x| x.as_u64());
    u.cpuset_cpus = v
        .pointer("/cpu/cpus")
        .and_then(|x| x.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    u.pids_limit = i("/pids/limit");
    u.blkio_weight = v
        .pointer("/blockIO/weight")
        .and_then(|x| x.as_u64())
        .map(|w| w.min(u16::MAX as u64) as u16);
    let known = ["memory", "cpu", "pids", "blockIO", "devices"];
    if let Some(o) = v.as_object() {
        if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(Status::invalid_argument(format!(
                "updating {k} is not supported: nook updates memory, cpu, pids and blockIO.weight"
            )));
        }
    }
    Ok(u)
}
