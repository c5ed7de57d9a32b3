//! `nook content ls|info|get|rm|label|ingests`: the blobs of a namespace.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use serde::Serialize;
use tokio_stream::StreamExt;

use super::client::{status_message, StatusExt};
use super::output;
use super::Ctx;
use crate::proto::content as pb;

#[derive(Subcommand, Debug)]
pub enum ContentCmd {
    /// List the blobs this namespace references.
    #[command(visible_alias = "list")]
    Ls(output::ListFlags),
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
    Ingests(output::ListFlags),
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
        ContentCmd::Ls(flags) => {
            let v = cl
                .list(c.req(pb::ListContentRequest {}))
                .await
                .or_fail()?
                .items;
            let rows: Vec<output::Row> = v
                .iter()
                .map(|i| output::Row {
                    key: i.digest.clone(),
                    cells: vec![
                        i.digest.clone(),
                        output::size(i.size),
                        output::age(i.created_at),
                        output::labels_text(&i.labels),
                    ],
                    json: serde_json::to_value(item(i)).unwrap_or_default(),
                    fields: vec![],
                })
                .collect();
            flags.print(&["DIGEST", "SIZE", "CREATED", "LABELS"], &rows)?;
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
            let map = output::parse_labels(&labels)?;
            let i = cl
                .update(c.req(pb::UpdateContentRequest {
                    digest,
                    labels: map,
                }))
                .await
                .or_fail()?;
            output::json(&item(&i))?;
        }
        ContentCmd::Ingests(flags) => {
            let v = cl
                .list_ingests(c.req(pb::ListIngestsRequest {}))
                .await
                .or_fail()?
                .ingests;
            let rows: Vec<output::Row> = v
                .iter()
                .map(|i| output::Row {
                    key: i.r#ref.clone(),
                    cells: vec![
                        i.r#ref.clone(),
                        output::size(i.offset),
                        output::size(i.total),
                        i.expected.clone(),
                    ],
                    json: serde_json::json!({
                        "ref": i.r#ref, "offset": i.offset, "total": i.total,
                        "expected": i.expected,
                    }),
                    fields: vec![],
                })
                .collect();
            flags.print(&["REF", "WRITTEN", "TOTAL", "EXPECTED"], &rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
