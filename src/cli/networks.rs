//! `nook network ls|create|rm|inspect|connect|disconnect` and `nook port CONTAINER`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::client::StatusExt;
use super::output;
use super::Ctx;
use crate::proto::networks as pb;

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// List networks.
    #[command(visible_alias = "list")]
    Ls(output::ListFlags),
    /// Create a bridge network (containers on it resolve each other by name).
    Create {
        name: String,
        /// IPv4 subnet, e.g. 10.89.7.0/24 (default: a free 10.89.x.0/24).
        #[arg(long)]
        subnet: Option<String>,
        /// Labels as KEY=VALUE.
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// Remove networks no container uses.
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a container (created, running or stopped) to a network, live.
    Connect {
        network: String,
        container: String,
        /// Another name containers on that network reach it by (repeatable).
        #[arg(long = "alias")]
        aliases: Vec<String>,
    },
    /// Disconnect a container from a network.
    Disconnect { network: String, container: String },
}

/// `nook port CONTAINER [PORT[/PROTO]]`
#[derive(Args, Debug)]
pub struct PortArgs {
    /// Container id, id prefix or name.
    pub container: String,
    /// Only this container port (e.g. 80 or 53/udp).
    pub port: Option<String>,
}

#[derive(Serialize)]
struct Member<'a> {
    namespace: &'a str,
    id: &'a str,
    name: &'a str,
    ip: &'a str,
}

#[derive(Serialize)]
struct Net<'a> {
    name: &'a str,
    bridge: &'a str,
    subnet: &'a str,
    gateway: &'a str,
    default: bool,
    created_at: i64,
    link_driver: &'a str,
    labels: std::collections::BTreeMap<&'a String, &'a String>,
    containers: Vec<Member<'a>>,
}

fn view(n: &pb::Network) -> Net<'_> {
    Net {
        name: &n.name,
        bridge: &n.bridge,
        subnet: &n.subnet,
        gateway: &n.gateway,
        default: n.default,
        created_at: n.created_at,
        link_driver: &n.link_driver,
        labels: n.labels.iter().collect(),
        containers: n
            .members
            .iter()
            .map(|m| Member {
                namespace: &m.namespace,
                id: &m.container_id,
                name: &m.name,
                ip: &m.ip,
            })
            .collect(),
    }
}

pub async fn run(ctx: &Ctx, cmd: NetworkCmd) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = pb::networks_client::NetworksClient::new(c.channel.clone());
    match cmd {
        NetworkCmd::Ls(flags) => {
            let v = cl
                .list(c.req(pb::ListNetworksRequest {}))
                .await
                .or_fail()?
                .networks;
            let rows: Vec<output::Row> = v
                .iter()
                .map(|n| output::Row {
                    key: n.name.clone(),
                    cells: vec![
                        if n.default {
                            format!("{} (default)", n.name)
                        } else {
                            n.name.clone()
                        },
                        n.bridge.clone(),
                        n.subnet.clone(),
                        n.gateway.clone(),
                        n.members.len().to_string(),
                    ],
                    json: serde_json::to_value(view(n)).unwrap_or_default(),
                    fields: vec![("Name", n.name.clone())],
                })
                .collect();
            flags.print(
                &["NAME", "BRIDGE", "SUBNET", "GATEWAY", "CONTAINERS"],
                &rows,
            )?;
        }
        NetworkCmd::Create {
            name,
            subnet,
            labels,
        } => {
            let n = cl
                .create(c.req(pb::CreateNetworkRequest {
                    name,
                    subnet: subnet.unwrap_or_default(),
                    labels: output::parse_labels(&labels)?,
                }))
                .await
                .or_fail()?;
            println!("{}", n.name);
        }
        NetworkCmd::Connect {
            network,
            container,
            aliases,
        } => {
            cl.connect_container(c.req(pb::ConnectRequest {
                network,
                container,
                aliases,
            }))
            .await
            .or_fail()?;
        }
        NetworkCmd::Disconnect { network, container } => {
            cl.disconnect_container(c.req(pb::DisconnectRequest { network, container }))
                .await
                .or_fail()?;
        }
        NetworkCmd::Rm { names } => {
            return Ok(output::each(names, |name| {
                let (mut cl, c) = (cl.clone(), c.clone());
                async move {
                    cl.remove(c.req(pb::RemoveNetworkRequest { name }))
                        .await
                        .or_fail()
                        .map(drop)
                }
            })
            .await);
        }
        NetworkCmd::Inspect { names } => {
            let mut out = Vec::new();
            let mut failed = false;
            for name in names {
                match cl
                    .inspect(c.req(pb::InspectNetworkRequest { name }))
                    .await
                    .or_fail()
                {
                    Ok(n) => out.push(n),
                    Err(e) => {
                        eprintln!("nook: {e}");
                        failed = true;
                    }
                }
            }
            output::json(&out.iter().map(view).collect::<Vec<_>>())?;
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Formats one mapping as docker does: `80/tcp -> 0.0.0.0:18080`.
pub fn format_port(p: &pb::PortMapping) -> String {
    let host = if p.host_port == 0 {
        format!("{}:(any, not published)", p.host_ip)
    } else if p.host_ip.contains(':') {
        format!("[{}]:{}", p.host_ip, p.host_port)
    } else {
        format!("{}:{}", p.host_ip, p.host_port)
    };
    format!("{}/{} -> {host}", p.container_port, p.protocol)
}

pub async fn port(ctx: &Ctx, a: PortArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = pb::networks_client::NetworksClient::new(c.channel.clone());
    let r = cl
        .ports(c.req(pb::PortsRequest {
            container: a.container.clone(),
        }))
        .await
        .or_fail()?;
    let filter = a.port.as_deref().map(|p| match p.split_once('/') {
        Some((n, proto)) => (n.to_string(), proto.to_string()),
        None => (p.to_string(), "tcp".to_string()),
    });
    let mut any = false;
    for p in &r.ports {
        if let Some((n, proto)) = &filter {
            if p.container_port.to_string() != *n || p.protocol != *proto {
                continue;
            }
            any = true;
            let s = format_port(p);
            println!("{}", s.split(" -> ").nth(1).unwrap_or(&s));
            continue;
        }
        any = true;
        println!("{}", format_port(p));
    }
    if filter.is_some() && !any {
        eprintln!(
            "nook: {} publishes no port {}",
            a.container,
            a.port.unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
