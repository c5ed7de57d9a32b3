//! `nook snapshots`: ls, prepare, view, commit, info, mounts, rm, usage, label, unpack.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::client::StatusExt;
use super::output::parse_labels;
use super::output::{self, Format};
use super::Ctx;
use crate::proto::snapshots as pb;

/// `nook snapshots [--snapshotter NAME] COMMAND`
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Snapshotter: overlayfs, fuse-overlayfs or native (default: nookd's default).
    #[arg(long, global = true, env = "NOOK_SNAPSHOTTER", default_value = "")]
    pub snapshotter: String,
    #[command(subcommand)]
    pub cmd: SnapshotsCmd,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotsCmd {
    /// List snapshots.
    #[command(visible_alias = "list")]
    Ls(output::ListFlags),
    /// Create an active (writable) snapshot, on top of the committed PARENT if given.
    Prepare {
        key: String,
        parent: Option<String>,
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
        /// Print the mounts (as with `nook snapshots mounts`).
        #[arg(long)]
        mounts: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Create a read-only view of the committed PARENT.
    View {
        key: String,
        parent: Option<String>,
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
        #[arg(long)]
        mounts: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Commit the active snapshot KEY as NAME.
    Commit {
        name: String,
        key: String,
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// Show one snapshot.
    #[command(visible_alias = "stat")]
    Info {
        key: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show how to mount KEY; with TARGET, print the shell commands that mount it there.
    Mounts {
        key: String,
        target: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove snapshots (refused while one has children).
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Disk usage of snapshots (all when no KEY is given).
    #[command(visible_alias = "du")]
    Usage {
        keys: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Replace the labels of a snapshot (KEY=VALUE ...; none clears them).
    Label { key: String, labels: Vec<String> },
    /// Apply layer files (tar, tar.gz, tar.zst; bottom first) into committed snapshots keyed by
    /// chain ID, and print the top chain ID.
    Unpack {
        #[arg(required = true)]
        layers: Vec<std::path::PathBuf>,
        /// The layers' diff IDs (sha256:...), in order, to verify them.
        #[arg(long = "diff-id")]
        diff_ids: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Serialize)]
struct InfoOut {
    name: String,
    parent: String,
    kind: String,
    labels: std::collections::BTreeMap<String, String>,
    created_at: i64,
    updated_at: i64,
    snapshotter: String,
}

fn info_out(i: pb::Info) -> InfoOut {
    InfoOut {
        name: i.name,
        parent: i.parent,
        kind: i.kind,
        labels: i.labels.into_iter().collect(),
        created_at: i.created_at,
        updated_at: i.updated_at,
        snapshotter: i.snapshotter,
    }
}

#[derive(Serialize)]
struct MountOut {
    #[serde(rename = "type")]
    kind: String,
    source: String,
    options: Vec<String>,
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The shell command that performs one mount at `target`.
pub fn mount_command(m: &pb::Mount, target: &str) -> String {
    match m.r#type.as_str() {
        "bind" => format!(
            "mount -o {} {} {}",
            quote(&m.options.join(",")),
            quote(&m.source),
            quote(target)
        ),
        t if t.contains("fuse-overlayfs") => {
            let o: Vec<&str> = m
                .options
                .iter()
                .map(String::as_str)
                .filter(|o| *o != "rw")
                .collect();
            format!(
                "fuse-overlayfs -o {} {}",
                quote(&o.join(",")),
                quote(target)
            )
        }
        t => format!(
            "mount -t {} {} -o {} {}",
            quote(t),
            quote(&m.source),
            quote(&m.options.join(",")),
            quote(target)
        ),
    }
}

fn print_mounts(r: pb::MountsResponse, target: Option<&str>, format: Format) -> anyhow::Result<()> {
    if let Some(t) = target {
        for m in &r.mounts {
            println!("{}", mount_command(m, t));
        }
        return Ok(());
    }
    match format {
        Format::Json => output::json(
            &r.mounts
                .into_iter()
                .map(|m| MountOut {
                    kind: m.r#type,
                    source: m.source,
                    options: m.options,
                })
                .collect::<Vec<_>>(),
        ),
        Format::Table => {
            let rows: Vec<Vec<String>> = r
                .mounts
                .into_iter()
                .map(|m| vec![m.r#type, m.source, m.options.join(",")])
                .collect();
            output::table(&["TYPE", "SOURCE", "OPTIONS"], &rows);
            Ok(())
        }
    }
}

pub async fn run(ctx: &Ctx, a: SnapshotsArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = pb::snapshots_client::SnapshotsClient::new(c.channel.clone())
        .max_decoding_message_size(crate::api::MAX_MESSAGE);
    let sn = a.snapshotter.clone();
    match a.cmd {
        SnapshotsCmd::Ls(flags) => {
            let r = cl
                .list(c.req(pb::ListRequest { snapshotter: sn }))
                .await
                .or_fail()?;
            let mut v: Vec<InfoOut> = r.snapshots.into_iter().map(info_out).collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            let rows: Vec<output::Row> = v
                .iter()
                .map(|i| output::Row {
                    key: i.name.clone(),
                    cells: vec![i.name.clone(), i.parent.clone(), i.kind.clone()],
                    json: serde_json::to_value(i).unwrap_or_default(),
                    fields: vec![],
                })
                .collect();
            flags.print(&["KEY", "PARENT", "KIND"], &rows)?;
        }
        SnapshotsCmd::Prepare {
            key,
            parent,
            labels,
            mounts,
            format,
        } => {
            let req = c.req(pb::PrepareRequest {
                snapshotter: sn,
                key,
                parent: parent.unwrap_or_default(),
                labels: parse_labels(&labels)?,
            });
            let r = cl.prepare(req).await.or_fail()?;
            if mounts {
                print_mounts(r, None, format)?;
            }
        }
        SnapshotsCmd::View {
            key,
            parent,
            labels,
            mounts,
            format,
        } => {
            let req = c.req(pb::PrepareRequest {
                snapshotter: sn,
                key,
                parent: parent.unwrap_or_default(),
                labels: parse_labels(&labels)?,
            });
            let r = cl.view(req).await.or_fail()?;
            if mounts {
                print_mounts(r, None, format)?;
            }
        }
        SnapshotsCmd::Commit { name, key, labels } => {
            cl.commit(c.req(pb::CommitRequest {
                snapshotter: sn,
                name,
                key,
                labels: parse_labels(&labels)?,
            }))
            .await
            .or_fail()?;
        }
        SnapshotsCmd::Info { key, format } => {
            let i = info_out(
                cl.stat(c.req(pb::KeyRequest {
                    snapshotter: sn,
                    key,
                }))
                .await
                .or_fail()?,
            );
            match format {
                Format::Json => output::json(&i)?,
                Format::Table => {
                    println!("Name:        {}", i.name);
                    println!("Parent:      {}", i.parent);
                    println!("Kind:        {}", i.kind);
                    println!("Snapshotter: {}", i.snapshotter);
                    println!("Created:     {}", output::age(i.created_at));
                    for (k, v) in &i.labels {
                        println!("Label:       {k}={v}");
                    }
                }
            }
        }
        SnapshotsCmd::Mounts {
            key,
            target,
            format,
        } => {
            let r = cl
                .mounts(c.req(pb::KeyRequest {
                    snapshotter: sn,
                    key,
                }))
                .await
                .or_fail()?;
            print_mounts(r, target.as_deref(), format)?;
        }
        SnapshotsCmd::Rm { keys } => {
            let mut failed = false;
            for key in keys {
                match cl
                    .remove(c.req(pb::KeyRequest {
                        snapshotter: sn.clone(),
                        key: key.clone(),
                    }))
                    .await
                    .or_fail()
                {
                    Ok(_) => println!("{key}"),
                    Err(e) => {
                        eprintln!("nook: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        SnapshotsCmd::Usage { keys, format } => {
            let keys = if keys.is_empty() {
                let mut k: Vec<String> = cl
                    .list(c.req(pb::ListRequest {
                        snapshotter: sn.clone(),
                    }))
                    .await
                    .or_fail()?
                    .snapshots
                    .into_iter()
                    .map(|i| i.name)
                    .collect();
                k.sort();
                k
            } else {
                keys
            };
            #[derive(Serialize)]
            struct U {
                key: String,
                size: i64,
                inodes: i64,
            }
            let mut out = Vec::new();
            for key in keys {
                let u = cl
                    .usage(c.req(pb::KeyRequest {
                        snapshotter: sn.clone(),
                        key: key.clone(),
                    }))
                    .await
                    .or_fail()?;
                out.push(U {
                    key,
                    size: u.size,
                    inodes: u.inodes,
                });
            }
            match format {
                Format::Json => output::json(&out)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = out
                        .into_iter()
                        .map(|u| {
                            vec![
                                u.key,
                                output::size(u.size.max(0) as u64),
                                u.inodes.to_string(),
                            ]
                        })
                        .collect();
                    output::table(&["KEY", "SIZE", "INODES"], &rows);
                }
            }
        }
        SnapshotsCmd::Label { key, labels } => {
            cl.update(c.req(pb::UpdateRequest {
                snapshotter: sn,
                key,
                labels: parse_labels(&labels)?,
            }))
            .await
            .or_fail()?;
        }
        SnapshotsCmd::Unpack {
            layers,
            diff_ids,
            format,
        } => {
            if !diff_ids.is_empty() && diff_ids.len() != layers.len() {
                anyhow::bail!(
                    "{} --diff-id given for {} layers: give one per layer, in order, or none",
                    diff_ids.len(),
                    layers.len()
                );
            }
            let mut files = Vec::new();
            for (i, p) in layers.iter().enumerate() {
                let abs =
                    std::path::absolute(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                files.push(pb::LayerFile {
                    path: abs.display().to_string(),
                    media_type: String::new(),
                    diff_id: diff_ids.get(i).cloned().unwrap_or_default(),
                });
            }
            let r = cl
                .unpack(c.req(pb::UnpackRequest {
                    snapshotter: sn,
                    layers: files,
                }))
                .await
                .or_fail()?;
            #[derive(Serialize)]
            struct O {
                chain_id: String,
                applied: u32,
                reused: u32,
                bytes: u64,
                snapshotter: String,
            }
            let o = O {
                chain_id: r.chain_id,
                applied: r.applied,
                reused: r.reused,
                bytes: r.bytes,
                snapshotter: r.snapshotter,
            };
            match format {
                Format::Json => output::json(&o)?,
                Format::Table => println!("{}", o.chain_id),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
