//! CRI's GetContainerEvents: a stream of CONTAINER_CREATED, _STARTED, _STOPPED and _DELETED
//! events for the containers of pods in `k8s.io`, read from nook's event bus
//! ([`crate::events`]) as the Docker door's `/events` reads it. Each event carries the pod's
//! sandbox status and the statuses of the pod's containers at that moment, as the CRI asks
//! (a kubelet's evented PLEG updates its pod cache from them). The stream ends when the client
//! goes away or nookd shuts down.

use std::collections::HashMap;
use std::sync::Arc;

use crate::api::cri::v1 as cri;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::NAMESPACE;
use crate::daemon::Daemon;
use crate::events::{Event, Filter};

/// The stream GetContainerEvents answers with.
pub(super) type Stream = tonic::codegen::BoxStream<cri::ContainerEventResponse>;

/// The CRI event type of a bus topic, for the topics CRI has a word for.
fn event_type(topic: &str) -> Option<cri::ContainerEventType> {
    Some(match topic {
        "/containers/create" => cri::ContainerEventType::ContainerCreatedEvent,
        "/tasks/start" => cri::ContainerEventType::ContainerStartedEvent,
        "/tasks/exit" => cri::ContainerEventType::ContainerStoppedEvent,
        "/containers/delete" => cri::ContainerEventType::ContainerDeletedEvent,
        _ => return None,
    })
}

fn ns_of(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0)
}

/// The pod of every container of a pod in `k8s.io` now (container id → pod id).
fn pods_of(d: &Daemon) -> Result<HashMap<String, String>, Status> {
    Ok(super::containers::manager(d)?
        .records(NAMESPACE)?
        .into_iter()
        .filter_map(|r| r.pod.map(|p| (r.id, p.pod_id)))
        .collect())
}

/// The CRI event for a bus event about container `id` of pod `pod`: the pod's status and its
/// containers' statuses now.
async fn response(d: &Arc<Daemon>, e: &Event, id: &str, pod: &str) -> cri::ContainerEventResponse {
    let kind = event_type(&e.topic).unwrap_or(cri::ContainerEventType::ContainerCreatedEvent);
    let sandbox = super::sandbox::status(
        d,
        cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose: false,
        },
    )
    .await
    .ok()
    .and_then(|r| r.status);
    let statuses = super::sandbox::member_statuses(d, pod).await;
    cri::ContainerEventResponse {
        container_id: id.to_string(),
        container_event_type: kind as i32,
        created_at: ns_of(&e.timestamp),
        pod_sandbox_status: sandbox,
        containers_statuses: statuses,
    }
}

pub(super) fn stream(d: Arc<Daemon>) -> Result<Stream, Status> {
    // subscribe before reading what exists, so that nothing falls between the two
    let mut sub = d.bus.subscribe(Filter {
        topics: [
            "/containers/create",
            "/tasks/start",
            "/tasks/exit",
            "/containers/delete",
        ]
        .map(String::from)
        .to_vec(),
        namespaces: vec![NAMESPACE.to_string()],
    });
    // a deleted container's record is gone: its pod is remembered from before
    let mut pod_of = pods_of(&d)?;
    let (tx, rx) = mpsc::channel(64);
    tracing::debug!("GetContainerEvents: a client follows the containers' events");
    tokio::spawn(async move {
        loop {
            let e = tokio::select! {
                e = sub.next() => e,
                _ = tx.closed() => break,
            };
            let Some(e) = e else { break };
            let Some(id) = e.get("id").map(str::to_string) else {
                continue; // the dropped-events note: CRI has no word for it
            };
            if !pod_of.contains_key(&id) {
                // a container made after the stream began, or not a pod's (nook's own in k8s.io)
                if let Ok(now) = pods_of(&d) {
                    pod_of.extend(now);
                }
            }
            let pod = if e.topic == "/containers/delete" {
                pod_of.remove(&id)
            } else {
                pod_of.get(&id).cloned()
            };
            let Some(pod) = pod else { continue };
            let r = response(&d, &e, &id, &pod).await;
            if tx.send(Ok(r)).await.is_err() {
                break;
            }
        }
        tracing::debug!("GetContainerEvents: the stream ended");
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(
            event_type("/tasks/exit"),
            Some(cri::ContainerEventType::ContainerStoppedEvent)
        );
        assert_eq!(event_type("/tasks/create"), None);
        assert!(ns_of("2026-01-01T00:00:00.123Z") > 0);
    }
}
