//! containerd's Events service: nook's event bus with payloads typed as `containerd.events.*`
//! (what ctr and the Go client decode), subscriptions filtered with containerd's syntax
//! (`topic=="/tasks/exit"`, `namespace==default`, `event.id==x`), and Publish/Forward onto
//! the same bus.

use std::pin::Pin;
use std::sync::Arc;

use containerd_client::events as ev;
use containerd_client::services::v1 as cd;
use containerd_client::types::Envelope;
use futures::Stream;
use prost::{Message, Name};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::server::events_server::{Events, EventsServer};
use super::{namespace, ts};
use crate::daemon::Daemon;
use crate::events::{Event, Filter};

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> EventsServer<Svc> {
    EventsServer::new(Svc(d)).max_decoding_message_size(crate::api::MAX_MESSAGE)
}

fn any<T: Message + Name>(m: &T) -> prost_types::Any {
    prost_types::Any {
        type_url: T::full_name(),
        value: m.encode_to_vec(),
    }
}

/// The `containerd.events.*` payload of a nook event, when containerd has one for its topic.
fn payload(e: &Event) -> Option<prost_types::Any> {
    let a = |k: &str| e.get(k).unwrap_or_default().to_string();
    let n = |k: &str| e.get(k).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    Some(match e.topic.as_str() {
        "/namespaces/create" => any(&ev::NamespaceCreate {
            name: a("name"),
            labels: Default::default(),
        }),
        "/namespaces/update" => any(&ev::NamespaceUpdate {
            name: a("name"),
            labels: Default::default(),
        }),
        "/namespaces/delete" => any(&ev::NamespaceDelete { name: a("name") }),
        "/images/create" => any(&cd::ImageCreate {
            name: a("name"),
            labels: Default::default(),
        }),
        "/images/update" => any(&cd::ImageUpdate {
            name: a("name"),
            labels: Default::default(),
        }),
        "/images/delete" => any(&cd::ImageDelete { name: a("name") }),
        "/content/delete" => any(&ev::ContentDelete {
            digest: a("digest"),
        }),
        "/snapshot/prepare" | "/snapshot/view" => any(&ev::SnapshotPrepare {
            key: a("key"),
            parent: a("parent"),
            snapshotter: a("snapshotter"),
        }),
        "/snapshot/commit" => any(&ev::SnapshotCommit {
            key: a("active"),
            name: a("key"),
            snapshotter: a("snapshotter"),
        }),
        "/snapshot/remove" => any(&ev::SnapshotRemove {
            key: a("key"),
            snapshotter: a("snapshotter"),
        }),
        "/containers/create" => any(&ev::ContainerCreate {
            id: a("id"),
            image: a("image"),
            runtime: Some(ev::container_create::Runtime {
                name: a("runtime"),
                options: None,
            }),
        }),
        "/containers/update" => any(&ev::ContainerUpdate {
            id: a("id"),
            image: a("image"),
            ..Default::default()
        }),
        "/containers/delete" => any(&ev::ContainerDelete { id: a("id") }),
        "/tasks/create" => any(&ev::TaskCreate {
            container_id: a("id"),
            pid: n("pid"),
            ..Default::default()
        }),
        "/tasks/start" => any(&ev::TaskStart {
            container_id: a("id"),
            pid: n("pid"),
        }),
        "/tasks/exit" => any(&ev::TaskExit {
            container_id: a("id"),
            id: a("id"),
            pid: n("pid"),
            exit_status: n("exit_code"),
            exited_at: e
                .get("exited_at")
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: t.timestamp_subsec_nanos() as i32,
                }),
        }),
        "/tasks/delete" => any(&ev::TaskDelete {
            container_id: a("id"),
            id: a("id"),
            pid: n("pid"),
            exit_status: n("exit_code"),
            ..Default::default()
        }),
        "/tasks/exec-added" => any(&ev::TaskExecAdded {
            container_id: a("id"),
            exec_id: a("exec_id"),
        }),
        "/tasks/exec-started" => any(&ev::TaskExecStarted {
            container_id: a("id"),
            exec_id: a("exec_id"),
            pid: n("pid"),
        }),
        "/tasks/paused" => any(&ev::TaskPaused {
            container_id: a("id"),
        }),
        "/tasks/resumed" => any(&ev::TaskResumed {
            container_id: a("id"),
        }),
        _ => return None,
    })
}

fn envelope(e: &Event) -> Envelope {
    Envelope {
        timestamp: chrono::DateTime::parse_from_rfc3339(&e.timestamp)
            .ok()
            .map(|t| prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: t.timestamp_subsec_nanos() as i32,
            })
            .or_else(|| ts(chrono::Utc::now().timestamp())),
        namespace: e.namespace.clone(),
        topic: e.topic.clone(),
        event: payload(e),
    }
}

#[tonic::async_trait]
impl Events for Svc {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

    async fn publish(&self, r: Request<cd::PublishRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        check_topic(&r.topic)?;
        self.0.events.publish(&ns, &r.topic, &[]);
        Ok(Response::new(()))
    }

    async fn forward(&self, r: Request<cd::ForwardRequest>) -> Result<Response<()>, Status> {
        let e = r
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("envelope is required"))?;
        crate::metadata::validate_namespace(&e.namespace)?;
        check_topic(&e.topic)?;
        self.0.events.publish(&e.namespace, &e.topic, &[]);
        Ok(Response::new(()))
    }

    async fn subscribe(
        &self,
        r: Request<cd::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let f = super::filters::Filters::parse(&r.into_inner().filters)?;
        let mut sub = self.0.bus.subscribe(Filter::default());
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    e = sub.next() => match e {
                        Some(e) => {
                            let keep = f.matches(|p| match p {
                                [x] if x == "topic" => Some(e.topic.clone()),
                                [x] if x == "namespace" => Some(e.namespace.clone()),
                                [x, k] if x == "event" => {
                                    let k = if k == "container_id" { "id" } else { k.as_str() };
                                    e.get(k).map(str::to_string)
                                }
                                _ => None,
                            });
                            if keep && tx.send(Ok(envelope(&e))).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn check_topic(t: &str) -> Result<(), Status> {
    if !t.starts_with('/') || t.len() > 256 {
        return Err(Status::invalid_argument(format!(
            "invalid topic {t:?}: topics start with '/'"
        )));
    }
    Ok(())
}
