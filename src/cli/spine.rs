//! `nook version`, `nook info`, `nook namespaces`, `nook plugins`, `nook config`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::client::StatusExt;
use super::output::{self, Format};
use super::Ctx;
use crate::proto::v1 as pb;

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Subcommand, Debug)]
pub enum NamespacesCmd {
    /// List namespaces.
    #[command(visible_alias = "list")]
    Ls(output::ListFlags),
    /// Create a namespace.
    Create {
        name: String,
        /// Labels as KEY=VALUE.
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// Remove namespaces (refused while they hold anything).
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set (KEY=VALUE) or clear (KEY=) labels of a namespace.
    Label {
        name: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PluginsCmd {
    /// List plugins with their status and the reason a skipped one does not work here.
    #[command(visible_alias = "list")]
    Ls(output::ListFlags),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the complete default config.toml, with comments.
    Default,
    /// Check a config file (default: $XDG_CONFIG_HOME/nook/config.toml) and print it resolved.
    Check { file: Option<std::path::PathBuf> },
}

pub async fn version(ctx: &Ctx, a: VersionArgs) -> anyhow::Result<ExitCode> {
    #[derive(Serialize)]
    struct V {
        client: String,
        server: Option<String>,
        server_pid: Option<u32>,
        server_error: Option<String>,
    }
    let (server, pid, err) = match ctx.connect().await {
        Ok(c) => {
            let mut cl = pb::version_client::VersionClient::new(c.channel.clone());
            match cl.version(c.req(pb::VersionRequest {})).await.or_fail() {
                Ok(v) => (Some(v.version), Some(v.pid), None),
                Err(e) => (None, None, Some(e.to_string())),
            }
        }
        Err(e) => (None, None, Some(e.to_string())),
    };
    let v = V {
        client: crate::VERSION.into(),
        server,
        server_pid: pid,
        server_error: err.clone(),
    };
    match a.format {
        Format::Json => output::json(&v)?,
        Format::Table => {
            println!("Client: nook {}", v.client);
            if let (Some(s), Some(p)) = (&v.server, v.server_pid) {
                println!("Server: nookd {s} (pid {p})");
            }
        }
    }
    if let Some(e) = err {
        eprintln!("nook: {e}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct InfoOut {
    version: String,
    pid: u32,
    host_uid: u32,
    host_gid: u32,
    uid_map: Vec<[u32; 3]>,
    gid_map: Vec<[u32; 3]>,
    root: String,
    state: String,
    address: String,
    network_driver: String,
    network_status: String,
    default_snapshotter: String,
    default_runtime: String,
    kernel: String,
    cgroup: String,
    uptime_seconds: u64,
    extra: BTreeMap<String, String>,
    components: Vec<ComponentOut>,
    features: Vec<FeatureOut>,
}

#[derive(Serialize)]
struct ComponentOut {
    name: String,
    path: String,
    version: String,
    version_line: String,
    error: String,
}

#[derive(Serialize)]
struct FeatureOut {
    name: String,
    value: String,
    detail: String,
}

pub async fn info(ctx: &Ctx, a: InfoArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = pb::introspection_client::IntrospectionClient::new(c.channel.clone());
    let i = cl.info(c.req(pb::InfoRequest {})).await.or_fail()?;
    let map = |m: &[pb::IdMap]| -> Vec<[u32; 3]> {
        m.iter()
            .map(|x| [x.container_id, x.host_id, x.size])
            .collect()
    };
    let out = InfoOut {
        version: i.version.clone(),
        pid: i.pid,
        host_uid: i.host_uid,
        host_gid: i.host_gid,
        uid_map: map(&i.uid_map),
        gid_map: map(&i.gid_map),
        root: i.root.clone(),
        state: i.state.clone(),
        address: i.address.clone(),
        network_driver: i.network_driver.clone(),
        network_status: i.network_status.clone(),
        default_snapshotter: i.default_snapshotter.clone(),
        default_runtime: i.default_runtime.clone(),
        kernel: i.kernel.clone(),
        cgroup: i.cgroup_version.clone(),
        uptime_seconds: i.uptime_seconds,
        extra: i.extra.clone().into_iter().collect(),
        components: i
            .components
            .iter()
            .map(|c| ComponentOut {
                name: c.name.clone(),
                path: c.path.clone(),
                version: c.version.clone(),
                version_line: c.version_line.clone(),
                error: c.error.clone(),
            })
            .collect(),
        features: i
            .features
            .iter()
            .map(|f| FeatureOut {
                name: f.name.clone(),
                value: f.value.clone(),
                detail: f.detail.clone(),
            })
            .collect(),
    };
    match a.format {
        Format::Json => output::json(&out)?,
        Format::Table => {
            let fmt_map = |m: &[[u32; 3]]| {
                m.iter()
                    .map(|[c, h, s]| format!("{c}→{h} ({s})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "Server version:      nookd {} (pid {})",
                out.version, out.pid
            );
            println!(
                "Rootless:            uid {} gid {}",
                out.host_uid, out.host_gid
            );
            println!("UID map:             {}", fmt_map(&out.uid_map));
            println!("GID map:             {}", fmt_map(&out.gid_map));
            println!("Root:                {}", out.root);
            println!("State:               {}", out.state);
            println!("Socket:              {}", out.address);
            match out.extra.get("docker_host") {
                Some(h) => println!("Docker API:          DOCKER_HOST={h}"),
                None => println!("Docker API:          off ([docker] enabled = false)"),
            }
            println!(
                "Network:             {} ({})",
                out.network_driver, out.network_status
            );
            println!("Default snapshotter: {}", out.default_snapshotter);
            println!("Default runtime:     {}", out.default_runtime);
            println!("Kernel:              {}", out.kernel);
            println!("Cgroups:             {}", out.cgroup);
            println!("Uptime:              {}s", out.uptime_seconds);
            println!("Components:");
            let rows: Vec<Vec<String>> = out
                .components
                .iter()
                .map(|c| {
                    vec![
                        format!("  {}", c.name),
                        if c.version.is_empty() {
                            "-".into()
                        } else {
                            c.version.clone()
                        },
                        if c.path.is_empty() {
                            "-".into()
                        } else {
                            c.path.clone()
                        },
                        c.error.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::render_table(&["  NAME", "VERSION", "PATH", "NOTE"], &rows)
            );
            println!("Kernel features:");
            let rows: Vec<Vec<String>> = out
                .features
                .iter()
                .map(|f| vec![format!("  {}", f.name), f.value.clone(), f.detail.clone()])
                .collect();
            print!(
                "{}",
                output::render_table(&["  FEATURE", "VALUE", "DETAIL"], &rows)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn namespaces(ctx: &Ctx, cmd: NamespacesCmd) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = pb::namespaces_client::NamespacesClient::new(c.channel.clone());
    match cmd {
        NamespacesCmd::Ls(flags) => {
            let mut v = cl
                .list(c.req(pb::ListNamespacesRequest {}))
                .await
                .or_fail()?
                .namespaces;
            v.sort_by(|a, b| a.name.cmp(&b.name));
            #[derive(Serialize)]
            struct N<'a> {
                name: &'a str,
                labels: BTreeMap<&'a String, &'a String>,
                created_at: i64,
            }
            let rows: Vec<output::Row> = v
                .iter()
                .map(|n| output::Row {
                    key: n.name.clone(),
                    cells: vec![n.name.clone(), output::labels_text(&n.labels)],
                    json: serde_json::to_value(N {
                        name: &n.name,
                        labels: n.labels.iter().collect(),
                        created_at: n.created_at,
                    })
                    .unwrap_or_default(),
                    fields: vec![],
                })
                .collect();
            flags.print(&["NAME", "LABELS"], &rows)?;
        }
        NamespacesCmd::Create { name, labels } => {
            cl.create(c.req(pb::CreateNamespaceRequest {
                name: name.clone(),
                labels: output::parse_labels(&labels)?,
            }))
            .await
            .or_fail()?;
            println!("{name}");
        }
        NamespacesCmd::Rm { names } => {
            return Ok(output::each(names, |name| {
                let (mut cl, c) = (cl.clone(), c.clone());
                async move {
                    cl.remove(c.req(pb::RemoveNamespaceRequest { name }))
                        .await
                        .or_fail()
                        .map(drop)
                }
            })
            .await);
        }
        NamespacesCmd::Label { name, labels } => {
            cl.update(c.req(pb::UpdateNamespaceRequest {
                name,
                labels: output::parse_labels(&labels)?,
            }))
            .await
            .or_fail()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn plugins(ctx: &Ctx, cmd: PluginsCmd) -> anyhow::Result<ExitCode> {
    let PluginsCmd::Ls(flags) = cmd;
    let c = ctx.connect().await?;
    let mut cl = pb::introspection_client::IntrospectionClient::new(c.channel.clone());
    let v = cl
        .plugins(c.req(pb::PluginsRequest {}))
        .await
        .or_fail()?
        .plugins;
    {
        #[derive(Serialize)]
        struct P<'a> {
            r#type: &'a str,
            id: &'a str,
            status: &'a str,
            reason: &'a str,
            exports: BTreeMap<&'a String, &'a String>,
        }
        let rows: Vec<output::Row> = v
            .iter()
            .map(|p| output::Row {
                key: format!("{}.{}", p.r#type, p.id),
                cells: vec![
                    p.r#type.clone(),
                    p.id.clone(),
                    p.status.clone(),
                    p.reason.clone(),
                ],
                json: serde_json::to_value(P {
                    r#type: &p.r#type,
                    id: &p.id,
                    status: &p.status,
                    reason: &p.reason,
                    exports: p.exports.iter().collect(),
                })
                .unwrap_or_default(),
                fields: vec![],
            })
            .collect();
        flags.print(&["TYPE", "ID", "STATUS", "REASON"], &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn config(_ctx: &Ctx, cmd: ConfigCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCmd::Default => print!("{}", crate::config::DEFAULT_CONFIG),
        ConfigCmd::Check { file } => {
            let cfg = crate::config::Config::load(file.as_deref())?;
            print!("{}", toml::to_string_pretty(&cfg)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
