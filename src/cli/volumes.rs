//! `nook volume create|ls|inspect|rm|prune`: named volumes, kept until removed.

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

use super::client::StatusExt;
use super::output;
use super::Ctx;
use crate::proto::volumes as pb;

#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// Create a volume (no name: a random one); an existing name is returned as it is.
    Create {
        name: Option<String>,
        /// Volume driver: only `local`.
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Driver options as KEY=VALUE (none is supported yet: each is refused by name).
        #[arg(short = 'o', long = "opt")]
        opts: Vec<String>,
        /// Labels as KEY=VALUE.
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls(output::ListFlags),
    /// Show volumes as JSON (with their size and the containers that mount them).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes no container uses.
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// A volume that does not exist is no error.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the anonymous volumes no container uses (with --all, named ones too).
    Prune {
        /// Named volumes too, not only anonymous ones.
        #[arg(short, long)]
        all: bool,
        /// Only volumes with this label (KEY or KEY=VALUE; `label!=...` for without).
        #[arg(long = "filter")]
        filters: Vec<String>,
        #[command(flatten)]
        flags: super::prune::PruneFlags,
    },
}

#[derive(Serialize)]
struct View<'a> {
    name: &'a str,
    driver: &'a str,
    mountpoint: &'a str,
    created_at: i64,
    anonymous: bool,
    labels: std::collections::BTreeMap<&'a String, &'a String>,
    containers: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<i64>,
}

fn view(v: &pb::Volume) -> View<'_> {
    View {
        name: &v.name,
        driver: &v.driver,
        mountpoint: &v.mountpoint,
        created_at: v.created_at,
        anonymous: v.anonymous,
        labels: v.labels.iter().collect(),
        containers: &v.containers,
        size: (v.size >= 0).then_some(v.size),
    }
}

#[derive(Serialize)]
struct PruneOut<'a> {
    volumes: &'a [String],
    reclaimed_bytes: u64,
}

pub async fn run(ctx: &Ctx, cmd: VolumeCmd) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = pb::volumes_client::VolumesClient::new(c.channel.clone());
    match cmd {
        VolumeCmd::Create {
            name,
            driver,
            opts,
            labels,
        } => {
            let v = cl
                .create(c.req(pb::CreateVolumeRequest {
                    name: name.unwrap_or_default(),
                    driver,
                    options: output::parse_labels(&opts)?,
                    labels: output::parse_labels(&labels)?,
                }))
                .await
                .or_fail()?;
            println!("{}", v.name);
        }
        VolumeCmd::Ls(flags) => {
            let v = cl
                .list(c.req(pb::ListVolumesRequest { size: false }))
                .await
                .or_fail()?
                .volumes;
            let rows: Vec<output::Row> = v
                .iter()
                .map(|x| output::Row {
                    key: x.name.clone(),
                    cells: vec![
                        x.driver.clone(),
                        x.name.clone(),
                        x.containers.len().to_string(),
                        output::age(x.created_at),
                    ],
                    json: serde_json::to_value(view(x)).unwrap_or_default(),
                    fields: vec![
                        ("Name", x.name.clone()),
                        ("Driver", x.driver.clone()),
                        ("Mountpoint", x.mountpoint.clone()),
                        ("Labels", output::labels_text(&x.labels)),
                    ],
                })
                .collect();
            flags.print(&["DRIVER", "VOLUME NAME", "CONTAINERS", "CREATED"], &rows)?;
        }
        VolumeCmd::Inspect { names } => {
            let mut out = Vec::new();
            let mut failed = false;
            for name in names {
                match cl
                    .inspect(c.req(pb::InspectVolumeRequest { name }))
                    .await
                    .or_fail()
                {
                    Ok(v) => out.push(v),
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
        VolumeCmd::Rm { force, names } => {
            return Ok(output::each(names, |name| {
                let (mut cl, c) = (cl.clone(), c.clone());
                async move {
                    cl.remove(c.req(pb::RemoveVolumeRequest { name, force }))
                        .await
                        .or_fail()
                        .map(drop)
                }
            })
            .await);
        }
        VolumeCmd::Prune {
            all,
            filters,
            flags,
        } => {
            let (mut labels, mut not_labels) = (Vec::new(), Vec::new());
            for f in &filters {
                if let Some(l) = f.strip_prefix("label!=") {
                    not_labels.push(l.to_string());
                } else if let Some(l) = f.strip_prefix("label=") {
                    labels.push(l.to_string());
                } else {
                    anyhow::bail!(
                        "invalid filter {f:?}: use label=KEY[=VALUE] or label!=KEY[=VALUE]"
                    );
                }
            }
            let q = if all {
                "WARNING! This will remove all local volumes not used by at least one container."
            } else {
                "WARNING! This will remove anonymous local volumes not used by at least one container."
            };
            if !super::prune::confirm(q, flags.force)? {
                return Ok(ExitCode::FAILURE);
            }
            let r = cl
                .prune(c.req(pb::PruneVolumesRequest {
                    all,
                    labels,
                    not_labels,
                }))
                .await
                .or_fail()?;
            if flags.format == output::Format::Json {
                output::json(&PruneOut {
                    volumes: &r.removed,
                    reclaimed_bytes: r.reclaimed_bytes,
                })?;
            } else if flags.quiet {
                for v in &r.removed {
                    println!("{v}");
                }
            } else {
                if !r.removed.is_empty() {
                    println!("Deleted Volumes:");
                    for v in &r.removed {
                        println!("{v}");
                    }
                    println!();
                }
                println!("Total reclaimed space: {}", output::size(r.reclaimed_bytes));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
