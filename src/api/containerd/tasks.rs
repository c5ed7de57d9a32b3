//! containerd's Tasks service, on nook's tasks (the shim-owned processes of nook's
//! containers): Create (nook's task on the client's spec, output into the client's FIFOs, see
//! [`crate::runtime::client_task`]), List, Get, Start, Kill, Wait, Pause/Resume, ListPids,
//! ResizePty and Delete of a stopped task (the container stays). Exec with FIFOs, CloseIO,
//! Update and Metrics are not implemented yet; Checkpoint is not supported (no CRIU in
//! rootless nook).

use std::sync::Arc;

use containerd_client::services::v1 as cd;
use containerd_client::types::v1::{Process, ProcessInfo, Status as TaskStatus};
use tonic::{Request, Response, Status};

use super::containers::{containers, find};
use super::namespace;
use super::server::tasks_server::{Tasks, TasksServer};
use crate::daemon::Daemon;
use crate::runtime::client_task::ClientStdio;
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

fn no_exec(exec_id: &str) -> Result<(), Status> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(Status::unimplemented(
            "exec processes started through containerd's API are not supported yet (use `nook exec`)",
        ))
    }
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
        no_exec(&r.exec_id)?;
        let rec = find(&self.0, &ns, &r.container_id)?;
        let m = containers(&self.0)?;
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
        no_exec(&r.into_inner().exec_id)?;
        Err(Status::invalid_argument("exec_id is required"))
    }

    async fn get(&self, r: Request<cd::GetRequest>) -> Result<Response<cd::GetResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        no_exec(&r.exec_id)?;
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
            m.tasks
                .client(&ns, &rec.id)
                .kill(r.signal as i32, r.all, Some(r.exec_id))
                .await?;
        }
        Ok(Response::new(()))
    }

    async fn exec(&self, _r: Request<cd::ExecProcessRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "exec with stdio FIFOs through containerd's API is not supported yet: use `nook exec`",
        ))
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

    async fn close_io(&self, _r: Request<cd::CloseIoRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "CloseIO: tasks created through containerd's API (with FIFOs) are not supported yet",
        ))
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

    async fn update(&self, _r: Request<cd::UpdateTaskRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "updating a running task's resources is not supported (limits need delegated cgroups)",
        ))
    }

    async fn metrics(
        &self,
        _r: Request<cd::MetricsRequest>,
    ) -> Result<Response<cd::MetricsResponse>, Status> {
        Err(Status::unimplemented(
            "task metrics in containerd's cgroup types are not supported yet (see nook's Prometheus metrics)",
        ))
    }

    async fn wait(
        &self,
        r: Request<cd::WaitRequest>,
    ) -> Result<Response<cd::WaitResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        no_exec(&r.exec_id)?;
        let rec = find(&self.0, &ns, &r.container_id)?;
        let m = containers(&self.0)?;
        let code = m.wait_exit(&ns, &rec.id).await?;
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
