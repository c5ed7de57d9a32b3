//! `nook ps` (and `containers ls`, `tasks ls`): the listing, `--filter` and the rows that
//! `--format` prints.

use std::process::ExitCode;

use super::{client, PsArgs};
use crate::cli::client::StatusExt;
use crate::cli::output;
use crate::cli::{Client, Ctx};
use crate::proto::containers as pb;

fn status_text(c: &pb::Container) -> String {
    match c.status.as_str() {
        "running" => format!(
            "Up {}",
            chrono::DateTime::parse_from_rfc3339(&c.started_at)
                .map(|t| output::age(t.timestamp())
                    .trim_end_matches(" ago")
                    .to_string())
                .unwrap_or_default()
        )
        .trim_end()
        .to_string(),
        "exited" => format!(
            "Exited ({}) {}",
            c.exit_code,
            chrono::DateTime::parse_from_rfc3339(&c.finished_at)
                .map(|t| output::age(t.timestamp()))
                .unwrap_or_default()
        )
        .trim_end()
        .to_string(),
        "paused" => "Up (Paused)".into(),
        "created" => "Created".into(),
        other => other.to_string(),
    }
}

pub(super) async fn list(c: &Client, all: bool) -> anyhow::Result<Vec<pb::Container>> {
    Ok(client(c)
        .list(c.req(pb::ListRequest { all }))
        .await
        .or_fail()?
        .containers)
}

fn container_json(x: &pb::Container) -> serde_json::Value {
    serde_json::json!({
        "id": x.id, "name": x.name, "image": x.image, "command": x.command,
        "created_at": x.created_at, "status": x.status, "exit_code": x.exit_code,
        "pid": x.pid, "started_at": x.started_at, "finished_at": x.finished_at,
        "runtime": x.runtime, "snapshotter": x.snapshotter, "labels": x.labels,
        "restart_policy": x.restart_policy, "restart_count": x.restart_count,
        "ip": x.ip, "ports": x.ports.iter().map(|p| serde_json::json!({
            "host_ip": p.host_ip, "host_port": p.host_port,
            "container_port": p.container_port, "protocol": p.protocol,
        })).collect::<Vec<_>>(),
    })
}

/// Published ports as docker shows them: `0.0.0.0:18080->80/tcp`.
fn ports_text(x: &pb::Container) -> String {
    x.ports
        .iter()
        .map(|p| {
            if p.host_port == 0 {
                format!("{}/{}", p.container_port, p.protocol)
            } else if p.host_ip.contains(':') {
                format!(
                    "[{}]:{}->{}/{}",
                    p.host_ip, p.host_port, p.container_port, p.protocol
                )
            } else {
                format!(
                    "{}:{}->{}/{}",
                    p.host_ip, p.host_port, p.container_port, p.protocol
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ps --filter`s: values per key, checked as docker combines them.
#[derive(Debug, Default)]
struct PsFilter {
    keys: std::collections::BTreeMap<String, Vec<String>>,
}

impl PsFilter {
    fn parse(v: &[String]) -> anyhow::Result<PsFilter> {
        let mut f = PsFilter::default();
        for x in v {
            let (k, val) = x.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("filter {x:?} is not KEY=VALUE (e.g. status=exited, name=web)")
            })?;
            match k {
                "name" | "id" | "label" | "ancestor" => {}
                "status" => {
                    const S: [&str; 6] = [
                        "created",
                        "running",
                        "paused",
                        "exited",
                        "restarting",
                        "dead",
                    ];
                    if !S.contains(&val) {
                        anyhow::bail!("status filter {val:?}: one of {}", S.join(", "));
                    }
                }
                _ => anyhow::bail!(
                    "filter {k:?} is not supported: use name, id, label, status or ancestor"
                ),
            }
            f.keys
                .entry(k.to_string())
                .or_default()
                .push(val.to_string());
        }
        Ok(f)
    }

    /// Whether a status filter asks for more than running containers.
    fn wants_all(&self) -> bool {
        self.keys.contains_key("status")
    }

    fn matches(&self, x: &pb::Container) -> bool {
        let image = |r: &str| {
            crate::image::Reference::parse(r)
                .map(|r| r.to_string())
                .unwrap_or_else(|_| r.to_string())
        };
        self.keys.iter().all(|(k, vals)| {
            let one = |v: &String| match k.as_str() {
                "name" => x.name.contains(v.as_str()),
                "id" => x.id.starts_with(v.as_str()),
                "status" => x.status == *v,
                "ancestor" => image(&x.image) == image(v) || x.image == *v,
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => x.labels.get(lk).is_some_and(|have| have == lv),
                    None => x.labels.contains_key(v.as_str()),
                },
                _ => false,
            };
            if k == "label" {
                vals.iter().all(one)
            } else {
                vals.iter().any(one)
            }
        })
    }
}

/// A container as a list row: the `ps` table, its JSON and docker's template fields.
fn ps_row(x: &pb::Container, flags: &output::ListFlags) -> output::Row {
    let mut cmd = x.command.join(" ");
    if !flags.no_trunc && cmd.chars().count() > 30 {
        cmd = format!("{}…", cmd.chars().take(29).collect::<String>());
    }
    let image = crate::image::Reference::parse(&x.image)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| x.image.clone());
    let id = flags.id(&x.id);
    let created = output::age(x.created_at);
    let status = status_text(x);
    let ports = ports_text(x);
    let mut labels: Vec<String> = x.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    output::Row {
        key: id.clone(),
        cells: vec![
            id.clone(),
            image.clone(),
            format!("\"{cmd}\""),
            created.clone(),
            status.clone(),
            ports.clone(),
            x.name.clone(),
        ],
        json: container_json(x),
        fields: vec![
            ("ID", id),
            ("Names", x.name.clone()),
            ("Image", image),
            ("Command", format!("\"{cmd}\"")),
            (
                "CreatedAt",
                chrono::DateTime::from_timestamp(x.created_at, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
            ),
            ("RunningFor", created),
            ("Status", status),
            ("State", x.status.clone()),
            ("Ports", ports),
            ("Labels", labels.join(",")),
        ],
    }
}

pub async fn ps(ctx: &Ctx, a: PsArgs) -> anyhow::Result<ExitCode> {
    let filter = PsFilter::parse(&a.filter)?;
    let c = ctx.connect().await?;
    let all = a.all || a.latest || a.last.is_some() || filter.wants_all();
    let mut cs = list(&c, all).await?;
    cs.retain(|x| filter.matches(x));
    if let Some(n) = a.last.or(a.latest.then_some(1)) {
        cs.sort_by_key(|x| std::cmp::Reverse(x.created_at));
        cs.truncate(n);
    }
    let rows: Vec<output::Row> = cs.iter().map(|x| ps_row(x, &a.list)).collect();
    a.list.print_titled(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ],
        &[("ID", "CONTAINER ID"), ("RunningFor", "CREATED")],
        &rows,
    )?;
    Ok(ExitCode::SUCCESS)
}
