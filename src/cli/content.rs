//! `nook content ls|info|get|rm|label|ingests`: the blobs of a namespace.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use serde::Serialize;
use tokio_stream::StreamExt;

use super::client::{status_message, StatusExt};
use super::output::{self, Format};
use super::Ctx;
use crate::proto::content as pb;

#[derive(Subcommand, Debug)]
pub enum ContentCmd {
    /// List the blobs this namespace references.
    #[command(visible_alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show a blob's size and labels (JSON).
    Info { digest: String },
    /// Write a blob's raw bytes to stdout.
    Get { digest: String },
    /// Drop blobs from this namespace (the bytes go at the next garbage collection).
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        #[arg(required = true)]
        digests: Vec<String>,
    },
    /// Set labels KEY=VALUE on a blob (KEY= removes one).
    Label {
        digest: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// List ingests in progress or interrupted.
    Ingests,
}

#[derive(Serialize)]
struct Item<'a> {
    digest: &'a str,
    size: u64,
    created_at: i64,
    updated_at: i64,
    labels: std::collections::BTreeMap<&'a String, &'a String>,
}

fn item(i: &pb::ContentInfo) -> Item<'_> {
    Item {
        digest: &i.digest,
        size: i.size,
        created_at: i.created_at,
        updated_at: i.updated_at,
        labels: i.labels.iter().collect(),
    }
}

pub async fn run(ctx: &Ctx, cmd: ContentCmd) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = pb::content_client::ContentClient::new(c.channel.clone());
    match cmd {
        ContentCmd::Ls { quiet, format } => {
            let v = cl
                .list(c.req(pb::ListContentRequest {}))
                .await
                .or_fail()?
                .items;
            if quiet {
                v.iter().for_each(|i| println!("{}", i.digest));
            } else if format == Format::Json {
                output::json(&v.iter().map(item).collect::<Vec<_>>())?;
            } else {
                let rows: Vec<Vec<String>> = v
                    .iter()
                    .map(|i| {
                        let mut labels: Vec<String> =
                            i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        labels.sort();
                        vec![
                            i.digest.clone(),
                            output::size(i.size),
                            output::age(i.created_at),
                            labels.join(","),
                        ]
                    })
                    .collect();
                output::table(&["DIGEST", "SIZE", "CREATED", "LABELS"], &rows);
            }
        }
        ContentCmd::Info { digest } => {
            let i = cl.info(c.req(pb::InfoRequest { digest })).await.or_fail()?;
            output::json(&item(&i))?;
        }
        ContentCmd::Get { digest } => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write a blob to a terminal: redirect stdout to a file");
            }
            let mut s = cl
                .read(c.req(pb::ReadContentRequest { digest }))
                .await
                .or_fail()?;
            let mut out = std::io::stdout().lock();
            while let Some(m) = s.next().await {
                let m = m.map_err(|st| anyhow!(status_message(&st)))?;
                out.write_all(&m.data).context("writing to stdout")?;
            }
            out.flush().context("writing to stdout")?;
        }
        ContentCmd::Rm { digests } => {
            let mut code = ExitCode::SUCCESS;
            for d in digests {
                match cl
                    .delete(c.req(pb::DeleteContentRequest { digest: d.clone() }))
                    .await
                {
                    Ok(_) => println!("{d}"),
                    Err(s) => {
                        eprintln!("nook: {}", status_message(&s));
                        code = ExitCode::FAILURE;
                    }
                }
            }
            return Ok(code);
        }
        ContentCmd::Label { digest, labels } => {
            let mut map = std::collections::HashMap::new();
            for l in labels {
                let (k, v) = l
                    .split_once('=')
                    .ok_or_else(|| anyhow!("label {l:?} is not KEY=VALUE"))?;
                map.insert(k.to_string(), v.to_string());
            }
            let i = cl
                .update(c.req(pb::UpdateContentRequest {
                    digest,
                    labels: map,
                }))
                .await
                .or_fail()?;
            output::json(&item(&i))?;
        }
        ContentCmd::Ingests => {
            let v = cl
                .list_ingests(c.req(pb::ListIngestsRequest {}))
                .await
                .or_fail()?
                .ingests;
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|i| {
                    vec![
                        i.r#ref.clone(),
                        output::size(i.offset),
                        output::size(i.total),
                        i.expected.clone(),
                    ]
                })
                .collect();
            output::table(&["REF", "WRITTEN", "TOTAL", "EXPECTED"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}
