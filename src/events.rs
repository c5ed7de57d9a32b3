//! The event bus: every subsystem publishes what it did (an image created, a task exited, a
//! snapshot committed) as an [`Event`] with a topic in containerd's style (`/containers/create`,
//! `/tasks/exit`, ...), and `nook events` subscribes through the Events service.
//!
//! Publishing never waits: the bus is a bounded broadcast channel, and a subscriber that falls
//! behind loses the oldest events instead of holding anyone up; it then receives one
//! `/events/dropped` event saying how many it lost.
//!
//! This module sits at the bottom of the crate: it names no other module. The daemon owns the
//! [`Bus`] and hands each subsystem a [`Publisher`] when it builds it, so the content store,
//! the snapshotters, the image store, the network and the runtime publish without knowing the
//! daemon (and tests build them with [`Publisher::discard`]).

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

/// Events kept for subscribers that are behind; beyond this they lose the oldest.
pub const CAPACITY: usize = 1024;

/// The topic of the note a lagging subscriber receives.
pub const DROPPED: &str = "/events/dropped";

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// RFC 3339, UTC, milliseconds.
    pub timestamp: String,
    pub namespace: String,
    pub topic: String,
    /// Small payload: ids, names, exit codes; in the order the publisher gave.
    pub attributes: Vec<(String, String)>,
}

impl Event {
    /// An event stamped now.
    pub fn new(namespace: &str, topic: &str, attributes: &[(&str, String)]) -> Event {
        Event {
            timestamp: now(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// The value of attribute `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Now, RFC 3339 UTC with milliseconds.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What a subscriber wants: topics (exact, or a prefix ending in `*`) and namespaces; empty
/// lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub topics: Vec<String>,
    pub namespaces: Vec<String>,
}

impl Filter {
    /// Whether `e` passes the filter. The dropped-events note always passes.
    pub fn matches(&self, e: &Event) -> bool {
        if e.topic == DROPPED {
            return true;
        }
        let topic_ok = self.topics.is_empty()
            || self.topics.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => e.topic.starts_with(prefix),
                None => e.topic == *t || e.topic.starts_with(&format!("{t}/")),
            });
        let ns_ok = self.namespaces.is_empty() || self.namespaces.contains(&e.namespace);
        topic_ok && ns_ok
    }
}

/// The bus: a broadcast channel and a "closing" signal for nookd's shutdown.
pub struct Bus {
    tx: broadcast::Sender<Event>,
    closing: watch::Sender<bool>,
    /// Held while stamping and sending, so that timestamps never go back in the stream.
    order: std::sync::Mutex<()>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new(CAPACITY)
    }
}

impl Bus {
    /// A bus keeping `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Bus {
        Bus {
            tx: broadcast::channel(capacity.max(1)).0,
            closing: watch::channel(false).0,
            order: std::sync::Mutex::new(()),
        }
    }

    /// Publishes `e`, stamped now; never waits for subscribers. Without subscribers the event
    /// is dropped.
    pub fn send(&self, mut e: Event) {
        tracing::trace!(topic = %e.topic, namespace = %e.namespace, "event");
        let _held = self.order.lock().unwrap_or_else(|e| e.into_inner());
        e.timestamp = now();
        let _ = self.tx.send(e);
    }

    /// A new subscription seeing events published from now on.
    pub fn subscribe(&self, filter: Filter) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            closing: self.closing.subscribe(),
            filter,
        }
    }

    /// Ends every subscription (nookd is shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Whether [`Bus::close`] was called: nookd is shutting down.
    pub fn is_closed(&self) -> bool {
        *self.closing.borrow()
    }
}

/// One subscriber's view of the bus.
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
    closing: watch::Receiver<bool>,
    filter: Filter,
}

impl Subscription {
    /// The next matching event; a `/events/dropped` note after events were lost; `None` once
    /// the bus closed.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if *self.closing.borrow() {
                return None;
            }
            let got = tokio::select! {
                r = self.rx.recv() => r,
                _ = self.closing.changed() => return None,
            };
            match got {
                Ok(e) if self.filter.matches(&e) => return Some(e),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Some(Event::new(
                        "",
                        DROPPED,
                        &[
                            ("count", n.to_string()),
                            (
                                "reason",
                                "the subscriber did not keep up; these events are lost".into(),
                            ),
                        ],
                    ))
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// A subsystem's handle on the bus: cheap to clone, handed in when the subsystem is built.
/// One made by [`Publisher::discard`] drops what it is given (unit tests, tools).
#[derive(Clone, Default)]
pub struct Publisher(Option<Arc<Bus>>);

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Publisher(bus)"
        } else {
            "Publisher(discard)"
        })
    }
}

impl Publisher {
    /// A publisher on `bus`.
    pub fn new(bus: Arc<Bus>) -> Publisher {
        Publisher(Some(bus))
    }

    /// A publisher that drops every event.
    pub fn discard() -> Publisher {
        Publisher(None)
    }

    /// Whether nookd is shutting down (its bus closed); never for a discarding publisher.
    pub fn shutting_down(&self) -> bool {
        self.0.as_ref().is_some_and(|b| b.is_closed())
    }

    /// Publishes an event stamped now; never waits for subscribers.
    pub fn publish(&self, namespace: &str, topic: &str, attributes: &[(&str, String)]) {
        if let Some(bus) = &self.0 {
            bus.send(Event::new(namespace, topic, attributes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let e = Event::new("default", "/containers/create", &[("id", "x".into())]);
        assert_eq!(e.get("id"), Some("x"));
        assert!(e.timestamp.ends_with('Z') && e.timestamp.contains('.'));
        let f = |t: &[&str], n: &[&str]| Filter {
            topics: t.iter().map(|s| s.to_string()).collect(),
            namespaces: n.iter().map(|s| s.to_string()).collect(),
        };
        assert!(f(&[], &[]).matches(&e));
        assert!(f(&["/containers/*"], &[]).matches(&e));
        assert!(f(&["/containers"], &[]).matches(&e));
        assert!(f(&["/containers/create"], &["default"]).matches(&e));
        assert!(!f(&["/containers/delete"], &[]).matches(&e));
        assert!(!f(&["/cont"], &[]).matches(&e));
        assert!(!f(&["/tasks/*", "/images/*"], &[]).matches(&e));
        assert!(!f(&[], &["other"]).matches(&e));
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_events_and_is_told() {
        let bus = Bus::new(8);
        let mut slow = bus.subscribe(Filter::default());
        let mut tasks_only = bus.subscribe(Filter {
            topics: vec!["/tasks/*".into()],
            namespaces: vec![],
        });
        // publishing never waits for the subscribers
        let t0 = std::time::Instant::now();
        for i in 0..100 {
            bus.send(Event::new(
                "default",
                "/images/create",
                &[("n", i.to_string())],
            ));
        }
        bus.send(Event::new("default", "/tasks/exit", &[]));
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        let note = slow.next().await.unwrap();
        assert_eq!(note.topic, DROPPED);
        assert_eq!(note.get("count"), Some("93"));
        // then the newest ones, in order
        assert_eq!(slow.next().await.unwrap().get("n"), Some("93"));
        let first = tasks_only.next().await.unwrap();
        assert_eq!(first.topic, DROPPED);
        assert_eq!(tasks_only.next().await.unwrap().topic, "/tasks/exit");
        bus.close();
        assert!(slow.next().await.is_none());
        assert!(tasks_only.next().await.is_none());
    }

    #[tokio::test]
    async fn publishers_reach_their_bus_only() {
        let bus = Arc::new(Bus::new(8));
        let mut sub = bus.subscribe(Filter::default());
        let p = Publisher::new(bus.clone());
        p.clone()
            .publish("ns", "/images/create", &[("name", "a".into())]);
        Publisher::discard().publish("ns", "/images/delete", &[]);
        p.publish("ns", "/images/update", &[]);
        assert_eq!(sub.next().await.unwrap().topic, "/images/create");
        assert_eq!(sub.next().await.unwrap().topic, "/images/update");
    }
}
