//! `nook events`: streams nookd's events, one line each, until interrupted.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::client::StatusExt;
use super::output::Format;
use super::Ctx;
use crate::proto::events as pb;

/// Stream events from nookd (containers, tasks, images, snapshots, content, namespaces,
/// networks) until Ctrl-C, one line per event.
///
/// Topics follow containerd: /containers/create|update|delete, /tasks/create|start|exit|delete|paused|resumed|oom,
/// /images/create|update|delete, /snapshot/prepare|view|commit|remove, /content/delete,
/// /namespaces/create|update|delete; as docker, /networks/create|delete and
/// /networks/connect|disconnect (container=ID); /events/dropped says how many events a too slow
/// reader lost.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Filter as KEY=VALUE, repeatable: topic=/containers/* (a prefix with '*', or exact),
    /// namespace=NAME, container=NAME|ID. Several values of one key: any matches.
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Output format: one line per event for people, or one JSON object per line.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Filters {
    topics: Vec<String>,
    namespaces: Vec<String>,
    containers: Vec<String>,
}

fn parse_filters(v: &[String]) -> anyhow::Result<Filters> {
    let mut f = Filters::default();
    for kv in v {
        let (k, val) = kv
            .split_once('=')
            .filter(|(_, v)| !v.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid filter {kv:?}: expected KEY=VALUE, e.g. topic=/containers/*"
                )
            })?;
        match k {
            "topic" | "event" => f.topics.push(val.to_string()),
            "namespace" | "ns" => f.namespaces.push(val.to_string()),
            "container" => f.containers.push(val.to_string()),
            _ => anyhow::bail!("unknown filter key {k:?}: use topic=, namespace= or container="),
        }
    }
    Ok(f)
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    time: &'a str,
    namespace: &'a str,
    topic: &'a str,
    attributes: serde_json::Map<String, serde_json::Value>,
}

/// `2026-11-29T06:40:01.123Z /containers/create ns=default id=… image=…`
fn human(e: &pb::Envelope) -> String {
    let mut s = format!("{} {}", e.timestamp, e.topic);
    if !e.namespace.is_empty() {
        s.push_str(&format!(" ns={}", e.namespace));
    }
    for a in &e.attributes {
        if a.value.contains(char::is_whitespace) || a.value.is_empty() {
            s.push_str(&format!(" {}={:?}", a.key, a.value));
        } else {
            s.push_str(&format!(" {}={}", a.key, a.value));
        }
    }
    s
}

fn json_line(e: &pb::Envelope) -> anyhow::Result<String> {
    let attributes = e
        .attributes
        .iter()
        .map(|a| (a.key.clone(), serde_json::Value::String(a.value.clone())))
        .collect();
    Ok(serde_json::to_string(&JsonEvent {
        time: &e.timestamp,
        namespace: &e.namespace,
        topic: &e.topic,
        attributes,
    })?)
}

pub async fn events(ctx: &Ctx, a: EventsArgs) -> anyhow::Result<ExitCode> {
    let f = parse_filters(&a.filter)?;
    let c = ctx.connect().await?;
    let mut cl = pb::events_client::EventsClient::new(c.channel.clone());
    let mut stream = cl
        .subscribe(c.req(pb::SubscribeRequest {
            topics: f.topics.clone(),
            namespaces: f.namespaces.clone(),
        }))
        .await
        .or_fail()?;
    loop {
        let e = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => {
                eprintln!("nook: nookd closed the event stream (it is shutting down)");
                return Ok(ExitCode::FAILURE);
            }
            Err(s) => return Err(anyhow::anyhow!(super::client::status_message(&s))),
        };
        if !f.containers.is_empty()
            && e.topic != crate::events::DROPPED
            && !e.attributes.iter().any(|a| {
                (a.key == "id" || a.key == "name" || a.key == "container")
                    && f.containers.iter().any(|c| c == &a.value)
            })
        {
            continue;
        }
        let line = match a.format {
            Format::Json => json_line(&e)?,
            Format::Table => human(&e),
        };
        // one write per line: a reader (or a pipe) sees each event as it happens
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_lines() {
        let f = parse_filters(&[
            "topic=/containers/*".into(),
            "ns=dev".into(),
            "container=web".into(),
        ])
        .unwrap();
        assert_eq!(f.topics, ["/containers/*"]);
        assert_eq!(f.namespaces, ["dev"]);
        assert_eq!(f.containers, ["web"]);
        assert!(parse_filters(&["bogus=1".into()]).is_err());
        assert!(parse_filters(&["topic".into()]).is_err());
        let e = pb::Envelope {
            timestamp: "2026-11-29T06:40:01.123Z".into(),
            namespace: "default".into(),
            topic: "/containers/create".into(),
            attributes: vec![
                pb::Attribute {
                    key: "id".into(),
                    value: "abc".into(),
                },
                pb::Attribute {
                    key: "image".into(),
                    value: "docker.io/library/busybox:latest".into(),
                },
            ],
        };
        assert_eq!(
            human(&e),
            "2026-11-29T06:40:01.123Z /containers/create ns=default id=abc image=docker.io/library/busybox:latest"
        );
        let v: serde_json::Value = serde_json::from_str(&json_line(&e).unwrap()).unwrap();
        assert_eq!(v["topic"], "/containers/create");
        assert_eq!(v["attributes"]["id"], "abc");
    }
}
