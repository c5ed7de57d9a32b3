//! The Events service: a subscription to the daemon's event bus ([`crate::events`]).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::daemon::Daemon;
use crate::events::{Event, Filter};
use crate::proto::events as pb;

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> pb::events_server::EventsServer<Svc> {
    pb::events_server::EventsServer::new(Svc(d)).max_decoding_message_size(super::MAX_MESSAGE)
}

/// The wire form of an event.
pub fn to_pb(e: Event) -> pb::Envelope {
    pb::Envelope {
        timestamp: e.timestamp,
        namespace: e.namespace,
        topic: e.topic,
        attributes: e
            .attributes
            .into_iter()
            .map(|(key, value)| pb::Attribute { key, value })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::events_server::Events for Svc {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::Envelope, Status>> + Send>>;

    async fn subscribe(
        &self,
        r: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let q = r.into_inner();
        for t in &q.topics {
            if !t.starts_with('/') {
                return Err(Status::invalid_argument(format!(
                    "invalid topic filter {t:?}: topics start with '/', e.g. /containers/* or /tasks/exit"
                )));
            }
        }
        for n in &q.namespaces {
            crate::metadata::validate_namespace(n)?;
        }
        let mut sub = self.0.bus.subscribe(Filter {
            topics: q.topics,
            namespaces: q.namespaces,
        });
        // The forwarder waits for this client only; the bus never waits for it (a client that
        // does not read makes its own subscription lag, see Subscription::next).
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    e = sub.next() => match e {
                        Some(e) => {
                            if tx.send(Ok(to_pb(e))).await.is_err() {
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
