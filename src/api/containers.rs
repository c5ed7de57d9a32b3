//! The Containers service: a thin layer over [`crate::runtime::containers`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::namespace;
use crate::chunks::ChannelWriter;
use crate::daemon::Daemon;
use crate::error::Error;
use crate::proto::containers as pb;
use crate::runtime::containers::{ContainerRecord, CreateOptions, Manager, Status as CStatus};
use crate::shim::client::{ShimEvents, ShimInput};
use crate::shim::{Event, Input};

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> pb::containers_server::ContainersServer<Svc> {
    pb::containers_server::ContainersServer::new(Svc(d))
        .max_decoding_message_size(super::MAX_MESSAGE)
}

fn to_pb(s: &CStatus) -> pb::Container {
    let r = &s.record;
    let t = s.task.as_ref();
    pb::Container {
        id: r.id.clone(),
        name: r.name.clone(),
        image: r.image.clone(),
        command: r.command(),
        created_at: r.created_at,
        status: s.status().to_string(),
        exit_code: s.exit_code(),
        pid: t.map(|t| t.pid).filter(|_| s.running()).unwrap_or(0),
        started_at: t.and_then(|t| t.started_at.clone()).unwrap_or_default(),
        finished_at: t
            .and_then(|t| t.exit.as_ref().map(|e| e.exited_at.clone()))
            .unwrap_or_default(),
        runtime: r.runtime.clone(),
        snapshotter: r.snapshotter.clone(),
        labels: r.labels.clone().into_iter().collect(),
        tty: r.tty,
        stdin: r.stdin,
        auto_remove: r.auto_remove,
        ports: Vec::new(),
        ip: String::new(),
        restart_count: r.restart_count,
        restart_policy: r.restart_policy.to_string(),
    }
}

/// [`to_pb`] with the container's network: its address and published ports.
fn to_pb_net(d: &Daemon, ns: &str, s: &CStatus) -> pb::Container {
    let mut c = to_pb(s);
    if let Ok(Some(a)) = d.network.attachment(ns, &s.record.id) {
        c.ip = a.ip.map(|i| i.to_string()).unwrap_or_default();
        let ports = if a.published.is_empty() {
            &a.ports
        } else {
            &a.published
        };
        c.ports = ports
            .iter()
            .map(|m| pb::PublishedPort {
                host_ip: m.host_ip.to_string(),
                host_port: m.host_port.into(),
                container_port: m.container_port.into(),
                protocol: m.proto.to_string(),
            })
            .collect();
    }
    c
}

type OutStream = Pin<Box<dyn Stream<Item = Result<pb::Output, Status>> + Send>>;

impl Svc {
    fn m(&self) -> Result<&Arc<Manager>, Status> {
        self.0.containers().map_err(Status::from)
    }

    fn svc(&self) -> Result<&Arc<crate::services::Containers>, Status> {
        self.0.container_service().map_err(Status::from)
    }

    fn find(&self, ns: &str, id: &str) -> Result<ContainerRecord, Status> {
        self.m()?.find(ns, id).map_err(Status::from)
    }

    async fn get_pb(&self, ns: &str, r: ContainerRecord) -> Result<pb::Container, Status> {
        Ok(to_pb_net(&self.0, ns, &self.m()?.status(ns, r).await))
    }
}

/// Pumps shim events to the gRPC stream and gRPC input to the shim, each direction waiting
/// for the other side (backpressure, never loss). When the client's input stream ends, the
/// shim is told the client is gone (it closes the process's stdin); when the client is gone
/// altogether, the shim connection is dropped.
fn bridge<I, F>(
    mut events: ShimEvents,
    mut input: ShimInput,
    mut inbound: Streaming<I>,
    conv: F,
    remove_after: Option<(Arc<Daemon>, String, ContainerRecord)>,
) -> OutStream
where
    I: Send + 'static,
    F: Fn(I) -> Vec<Input> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<pb::Output, Status>>(16);
    let feeder = tokio::spawn(async move {
        while let Some(Ok(msg)) = inbound.next().await {
            for i in conv(msg) {
                if input.send(&i).await.is_err() {
                    return;
                }
            }
        }
        // a client keeps its input stream open until the exit: it is gone
        input.client_gone().await;
        std::future::pending::<()>().await
    });
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                ev = events.next() => ev,
                // the client is gone: so is this connection to the shim
                _ = tx.closed() => break,
            };
            match ev {
                Ok(Some(Event::Out { stderr, data })) => {
                    let out = if stderr {
                        pb::Output {
                            stderr: data.into(),
                            ..Default::default()
                        }
                    } else {
                        pb::Output {
                            stdout: data.into(),
                            ..Default::default()
                        }
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        break;
                    }
                }
                Ok(Some(Event::Exit(e))) => {
                    if let Some((d, ns, rec)) = &remove_after {
                        if let Ok(m) = d.containers() {
                            if let Err(e) = m.remove(ns, rec, true).await {
                                tracing::warn!(container = %rec.id, "auto-remove: {e}");
                            }
                        }
                    }
                    let _ = tx
                        .send(Ok(pb::Output {
                            exited: true,
                            exit_code: e.exit_code,
                            ..Default::default()
                        }))
                        .await;
                    break;
                }
                Ok(None) => {
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "the container's shim went away before it reported an exit",
                        )))
                        .await;
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    break;
                }
            }
        }
        feeder.abort();
    });
    Box::pin(ReceiverStream::new(rx))
}

fn inputs(data: Vec<u8>, close: bool, width: u32, height: u32) -> Vec<Input> {
    let mut v = Vec::new();
    if width > 0 && height > 0 {
        v.push(Input::Resize {
            width: width.min(u16::MAX as u32) as u16,
            height: height.min(u16::MAX as u32) as u16,
        });
    }
    if !data.is_empty() {
        v.push(Input::Stdin(data.into()));
    }
    if close {
        v.push(Input::CloseStdin);
    }
    v
}

#[tonic::async_trait]
impl pb::containers_server::Containers for Svc {
    type AttachStream = OutStream;
    type ExecStream = OutStream;
    type LogsStream = Pin<Box<dyn Stream<Item = Result<pb::LogLine, Status>> + Send>>;
    type CopyFromStream = Pin<Box<dyn Stream<Item = Result<pb::CopyChunk, Status>> + Send>>;

    async fn stat_path(
        &self,
        r: Request<pb::PathRequest>,
    ) -> Result<Response<pb::PathStat>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let rec = self.find(&ns, &q.id)?;
        let i = self.svc()?.stat_path(&ns, &rec, &q.path).await?;
        Ok(Response::new(pb::PathStat {
            exists: i.exists,
            dir: i.dir,
            name: i.name,
            mode: i.mode,
            size: i.size,
            link_target: i.link_target,
        }))
    }

    async fn copy_from(
        &self,
        r: Request<pb::PathRequest>,
    ) -> Result<Response<Self::CopyFromStream>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let rec = self.find(&ns, &q.id)?;
        let (tx, rx) = mpsc::channel::<Result<pb::CopyChunk, Status>>(8);
        let top = if q.name.is_empty() {
            std::path::Path::new(&q.path)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "root".into())
        } else {
            q.name
        };
        let out = ChannelWriter::new(tx.clone(), 1 << 20, |data| Ok(pb::CopyChunk { data }));
        let job = self.svc()?.archive_out(&ns, &rec, &q.path, &top, out);
        tokio::spawn(async move {
            let err = match job.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.into(),
                Err(e) => Status::internal(format!("copy: {e}")),
            };
            let _ = tx.send(Err(err)).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn copy_to(
        &self,
        r: Request<Streaming<pb::CopyToInput>>,
    ) -> Result<Response<pb::Empty>, Status> {
        let ns = namespace(&r)?;
        let mut inbound = r.into_inner();
        let first = inbound
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("copy: no request"))??;
        let rec = self.find(&ns, &first.id)?;
        // the stream's bytes, handed to the extractor
        let (sink, job) = self.svc()?.archive_in(&ns, &rec, &first.path);
        let mut next = Some(first.data);
        loop {
            let data = match next.take() {
                Some(d) => d,
                None => match inbound.next().await {
                    Some(Ok(m)) => m.data,
                    Some(Err(e)) => return Err(e),
                    None => break,
                },
            };
            if !sink.send(data).await {
                break; // the extractor stopped: its error is the answer
            }
        }
        drop(sink);
        job.await
            .map_err(|e| Status::internal(format!("copy: {e}")))??;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create(
        &self,
        r: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        if q.image.is_empty() {
            return Err(Status::invalid_argument(
                "an image is needed: nook run IMAGE [COMMAND...]",
            ));
        }
        super::check_labels(&q.labels)?;
        let limits = super::limits::from_create(&q);
        let o = CreateOptions {
            image: q.image,
            name: q.name,
            runtime: q.runtime,
            snapshotter: q.snapshotter,
            args: q.args,
            entrypoint: q.has_entrypoint.then_some(q.entrypoint),
            env: q.env,
            workdir: q.workdir,
            user: q.user,
            hostname: q.hostname,
            read_only: q.read_only,
            tty: q.tty,
            stdin: q.stdin,
            volumes: q.volumes,
            tmpfs: q.tmpfs,
            cap_add: q.cap_add,
            cap_drop: q.cap_drop,
            privileged: q.privileged,
            security_opt: q.security_opt,
            seccomp_profiles: q.seccomp_profiles.into_iter().collect(),
            labels: q.labels.into_iter().collect(),
            auto_remove: q.auto_remove,
            network: q.network,
            network_aliases: q.network_aliases,
            more_networks: Vec::new(),
            publish: q.publish,
            restart: q.restart,
            port_driver: q.port_driver,
            limits,
            publish_all: q.publish_all,
            init: q.init,
            group_add: q.group_add,
            ulimits: q.ulimits,
            ..Default::default()
        };
        let rec = self.m()?.create(&ns, o).await?;
        Ok(Response::new(self.get_pb(&ns, rec).await?))
    }

    async fn start(&self, r: Request<pb::ContainerRef>) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&r)?;
        let rec = self.find(&ns, &r.get_ref().id)?;
        self.m()?.user_started(&ns, &rec)?;
        self.m()?.start(&ns, &rec).await?;
        Ok(Response::new(self.get_pb(&ns, rec).await?))
    }

    async fn attach(
        &self,
        r: Request<Streaming<pb::AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let ns = namespace(&r)?;
        let mut inbound = r.into_inner();
        let first = inbound.next().await.ok_or_else(|| {
            Status::invalid_argument("attach: the first message names the container")
        })??;
        let m = self.m()?;
        let rec = self.find(&ns, &first.id)?;
        if first.start {
            m.user_started(&ns, &rec)?;
            if let Err(e) = m.create_task(&ns, &rec, true, true).await {
                m.remove_after_failed_start(&ns, &rec).await;
                return Err(e.into());
            }
        }
        let client = m.tasks.client(&ns, &rec.id);
        let stream = client.attach(first.stdin, first.start).await?;
        if first.start {
            m.watch_auto_remove(&ns, &rec);
        }
        let (events, mut input) = stream.split();
        for i in inputs(first.data, first.close_stdin, first.width, first.height) {
            input.send(&i).await?;
        }
        // with --rm, the exit is reported once the container is gone, so that its name is free
        // when `nook run --rm` returns
        let after =
            (first.start && rec.auto_remove).then(|| (self.0.clone(), ns.clone(), rec.clone()));
        Ok(Response::new(bridge(
            events,
            input,
            inbound,
            |m: pb::AttachInput| inputs(m.data, m.close_stdin, m.width, m.height),
            after,
        )))
    }

    async fn exec(
        &self,
        r: Request<Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let ns = namespace(&r)?;
        let mut inbound = r.into_inner();
        let first = inbound.next().await.ok_or_else(|| {
            Status::invalid_argument("exec: the first message names the container and command")
        })??;
        let m = self.m()?;
        let rec = self.find(&ns, &first.id)?;
        if m.status(&ns, rec.clone()).await.status()
            == crate::runtime::containers::ContainerState::Paused
        {
            return Err(Status::failed_precondition(format!(
                "container {} is paused: unpause it first (`nook unpause {}`)",
                rec.name, rec.name
            )));
        }
        let process = m.exec_process(
            &ns,
            &rec,
            &first.args,
            &first.env,
            &first.user,
            &first.workdir,
            first.tty,
        )?;
        let mut process = process;
        if first.tty && first.width > 0 && first.height > 0 {
            // the terminal's size from its start (a resize after it comes too late for a
            // command that asks at once, as `stty size` does)
            process["consoleSize"] =
                serde_json::json!({"height": first.height, "width": first.width});
        }
        let exec_id = crate::runtime::containers::new_id()[..16].to_string();
        let (_pid, stream) = m
            .tasks
            .client(&ns, &rec.id)
            .exec(&exec_id, process, first.tty, first.stdin)
            .await
            .map_err(|e| match e {
                Error::Unavailable(_) => {
                    Status::failed_precondition(format!("container {} is not running", rec.name))
                }
                other => other.into(),
            })?;
        let (events, mut input) = stream.split();
        // the size goes as consoleSize and once more as a resize (crun does not always have
        // it set before the process asks); a process that ended at once has closed its
        // input, while its output and exit are still to be read
        for i in inputs(first.data, first.close_stdin, first.width, first.height) {
            if let Err(e) = input.send(&i).await {
                tracing::debug!("exec {exec_id}: its first input found it gone: {e}");
                break;
            }
        }
        Ok(Response::new(bridge(
            events,
            input,
            inbound,
            |m: pb::ExecInput| inputs(m.data, m.close_stdin, m.width, m.height),
            None,
        )))
    }

    async fn list(
        &self,
        r: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let ns = namespace(&r)?;
        let m = self.m()?;
        let mut recs = m.records(&ns)?;
        recs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.name.cmp(&b.name)));
        let states =
            futures::future::join_all(recs.into_iter().map(|rec| m.status(&ns, rec))).await;
        let containers = states
            .iter()
            .filter(|s| r.get_ref().all || s.running())
            .map(|s| to_pb_net(&self.0, &ns, s))
            .collect();
        Ok(Response::new(pb::ListResponse { containers }))
    }

    async fn get(&self, r: Request<pb::ContainerRef>) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&r)?;
        let rec = self.find(&ns, &r.get_ref().id)?;
        Ok(Response::new(self.get_pb(&ns, rec).await?))
    }

    async fn inspect(
        &self,
        r: Request<pb::ContainerRef>,
    ) -> Result<Response<pb::InspectResponse>, Status> {
        let ns = namespace(&r)?;
        let rec = self.find(&ns, &r.get_ref().id)?;
        let st = self.m()?.status(&ns, rec.clone()).await;
        let bundle = self.m()?.tasks.bundle_dir(&ns, &rec.id);
        let v = serde_json::json!({
            "Id": rec.id,
            "Name": rec.name,
            "Image": rec.image,
            "ImageDigest": rec.image_digest,
            "Created": rec.created_at,
            "Runtime": rec.runtime,
            "Snapshotter": rec.snapshotter,
            "SnapshotKey": rec.snapshot_key,
            "Labels": rec.labels,
            "AutoRemove": rec.auto_remove,
            "RestartCount": rec.restart_count,
            "HostConfig": {
                "Resources": super::limits::host_config(&rec.limits),
                "RestartPolicy": {
                    "Name": rec.restart_policy.name(),
                    "MaximumRetryCount": rec.restart_policy.max_retries(),
                },
            },
            "StoppedByUser": rec.stopped_by_user,
            "Bundle": bundle,
            "LogPath": bundle.join(crate::shim::files::LOG),
            "State": {
                "Status": st.status().as_str(),
                "Running": st.running(),
                "Pid": st.task.as_ref().map(|t| t.pid).filter(|_| st.running()).unwrap_or(0),
                "ExitCode": st.exit_code(),
                "OOMKilled": rec.oom_killed,
                "StartedAt": st.task.as_ref().and_then(|t| t.started_at.clone()),
                "FinishedAt": st.task.as_ref().and_then(|t| t.exit.as_ref().map(|e| e.exited_at.clone())),
                "ShimPid": st.task.as_ref().map(|t| t.shim_pid).unwrap_or(0),
            },
            "Spec": rec.spec,
        });
        Ok(Response::new(pb::InspectResponse {
            json: serde_json::to_string_pretty(&v).map_err(Error::from)?,
        }))
    }

    async fn kill(&self, r: Request<pb::KillRequest>) -> Result<Response<pb::Empty>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let rec = self.find(&ns, &q.id)?;
        self.svc()?.kill(&ns, &rec, q.signal, q.all).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn stop(&self, r: Request<pb::StopRequest>) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let rec = self.find(&ns, &q.id)?;
        self.m()?.user_stopped(&ns, &rec)?;
        self.m()?
            .stop(&ns, &rec, Duration::from_secs(q.timeout as u64), q.signal)
            .await?;
        Ok(Response::new(self.get_pb(&ns, rec).await?))
    }

    async fn wait(
        &self,
        r: Request<pb::ContainerRef>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let ns = namespace(&r)?;
        let rec = self.find(&ns, &r.get_ref().id)?;
        let code = self.m()?.wait_exit(&ns, &rec.id).await?;
        Ok(Response::new(pb::WaitResponse { exit_code: code }))
    }

    async fn remove(&self, r: Request<pb::RemoveRequest>) -> Result<Response<pb::Empty>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let rec = self.find(&ns, &q.id)?;
        self.m()?
            .remove_with_volumes(&ns, &rec, q.force, q.volumes || rec.auto_remove)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn logs(
        &self,
        r: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let rec = self.find(&ns, &q.id)?;
        let tail = (q.tail >= 0).then_some(q.tail as usize);
        let lines = self
            .svc()?
            .logs(&ns, &rec, tail, q.follow, q.resume_at, q.merge);
        Ok(Response::new(Box::pin(ReceiverStream::new(lines).map(
            |e| {
                e.map(|e| pb::LogLine {
                    time: e.time,
                    stream: e.stream,
                    data: e.data,
                    offset: e.offset,
                    end: e.end,
                })
                .map_err(Status::from)
            },
        ))))
    }

    async fn top(&self, r: Request<pb::ContainerRef>) -> Result<Response<pb::TopResponse>, Status> {
        let ns = namespace(&r)?;
        let rec = self.find(&ns, &r.get_ref().id)?;
        let st = self.m()?.status(&ns, rec.clone()).await;
        if !st.running() {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                rec.name
            )));
        }
        let rows = self.m()?.top(&ns, &rec).await?;
        Ok(Response::new(pb::TopResponse {
            titles: vec!["PID".into(), "UID".into(), "CMD".into()],
            processes: rows
                .into_iter()
                .map(|fields| pb::Process { fields })
                .collect(),
        }))
    }

    async fn pause(&self, r: Request<pb::ContainerRef>) -> Result<Response<pb::Empty>, Status> {
        self.pause_resume(r, true).await
    }

    async fn resume(&self, r: Request<pb::ContainerRef>) -> Result<Response<pb::Empty>, Status> {
        self.pause_resume(r, false).await
    }

    async fn resize(&self, r: Request<pb::ResizeRequest>) -> Result<Response<pb::Empty>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let rec = self.find(&ns, &q.id)?;
        self.m()?
            .tasks
            .client(&ns, &rec.id)
            .resize(None, q.width.min(65535) as u16, q.height.min(65535) as u16)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn update(
        &self,
        r: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let rec = self.find(&ns, &q.id)?;
        let res = q
            .resources
            .as_ref()
            .map(super::limits::resources)
            .unwrap_or_default();
        if res.is_empty() {
            return Err(Status::invalid_argument(
                "nothing to update: give a limit (--memory, --cpus, --pids-limit, ...)",
            ));
        }
        crate::runtime::limits::update(self.m()?, &ns, &rec, &res).await?;
        let rec = self.find(&ns, &q.id)?;
        Ok(Response::new(self.get_pb(&ns, rec).await?))
    }

    async fn rename(
        &self,
        r: Request<pb::RenameRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let rec = self.find(&ns, &q.id)?;
        self.svc()?.rename(&ns, &rec, &q.name).await?;
        let rec = self.find(&ns, &rec.id)?;
        Ok(Response::new(self.get_pb(&ns, rec).await?))
    }

    async fn changes(
        &self,
        r: Request<pb::ContainerRef>,
    ) -> Result<Response<pb::ChangesResponse>, Status> {
        use crate::snapshot::changes::Change;
        let ns = namespace(&r)?;
        let rec = self.find(&ns, &r.get_ref().id)?;
        let changes = self
            .svc()?
            .changes(&ns, &rec)
            .await?
            .into_iter()
            .map(|(path, k)| pb::changes_response::Change {
                kind: match k {
                    Change::Added => "A",
                    Change::Modified => "C",
                    Change::Deleted => "D",
                }
                .into(),
                path,
            })
            .collect();
        Ok(Response::new(pb::ChangesResponse { changes }))
    }

    async fn stats(
        &self,
        r: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        Ok(Response::new(
            super::limits::stats(&self.0, self.m()?, &ns, &q.ids).await?,
        ))
    }

    async fn prune(
        &self,
        r: Request<pb::PruneContainersRequest>,
    ) -> Result<Response<pb::PruneContainersResponse>, Status> {
        let ns = namespace(&r)?;
        let p = self.svc()?.prune(&ns).await?;
        Ok(Response::new(pb::PruneContainersResponse {
            containers: p
                .removed
                .iter()
                .map(|s| to_pb_net(&self.0, &ns, s))
                .collect(),
            reclaimed_bytes: p.reclaimed_bytes,
        }))
    }
}

impl Svc {
    async fn pause_resume(
        &self,
        r: Request<pb::ContainerRef>,
        pause: bool,
    ) -> Result<Response<pb::Empty>, Status> {
        let ns = namespace(&r)?;
        let rec = self.find(&ns, &r.get_ref().id)?;
        self.svc()?.pause(&ns, &rec, pause).await?;
        Ok(Response::new(pb::Empty {}))
    }
}
