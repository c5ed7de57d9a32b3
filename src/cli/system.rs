//! `nook gc`, `nook system df`, `nook system info`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::client::StatusExt;
use super::output::{self, Format};
use super::Ctx;
use crate::proto::gc as pb;

#[derive(Args, Debug)]
pub struct GcArgs {
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Fix what is broken (removes corrupt blobs, dangling records, broken snapshots).
    #[arg(long)]
    pub repair: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Disk use by content, snapshots and containers.
    Df {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Same as `nook info`: versions of nookd and its helper programs, kernel features.
    Info(super::spine::InfoArgs),
    /// Remove stopped containers and unused images, then collect garbage.
    Prune(super::prune::SystemPruneArgs),
}

pub async fn gc(ctx: &Ctx, a: GcArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = pb::gc_client::GcClient::new(c.channel.clone());
    let r = cl.collect(c.req(pb::CollectRequest {})).await.or_fail()?;
    if a.format == Format::Json {
        #[derive(Serialize)]
        struct R<'a> {
            content_records: &'a [String],
            blobs: &'a [String],
            bytes_freed: u64,
            snapshots: &'a [String],
            pause_ms: u64,
            total_ms: u64,
        }
        output::json(&R {
            content_records: &r.content_records,
            blobs: &r.blobs,
            bytes_freed: r.bytes_freed,
            snapshots: &r.snapshots,
            pause_ms: r.pause_ms,
            total_ms: r.total_ms,
        })?;
    } else {
        println!(
            "removed {} blobs ({}), {} snapshots, {} content references in {} ms (database paused {} ms)",
            r.blobs.len(),
            output::size(r.bytes_freed),
            r.snapshots.len(),
            r.content_records.len(),
            r.total_ms,
            r.pause_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn system(ctx: &Ctx, cmd: SystemCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SystemCmd::Info(a) => super::spine::info(ctx, a).await,
        SystemCmd::Prune(a) => super::prune::system(ctx, a).await,
        SystemCmd::Df { format } => {
            let c = ctx.connect().await?;
            let mut cl = pb::gc_client::GcClient::new(c.channel.clone());
            let v = cl
                .disk_usage(c.req(pb::DiskUsageRequest {}))
                .await
                .or_fail()?
                .usage;
            if format == Format::Json {
                #[derive(Serialize)]
                struct U<'a> {
                    kind: &'a str,
                    count: u64,
                    bytes: u64,
                }
                let out: Vec<U> = v
                    .iter()
                    .map(|u| U {
                        kind: &u.kind,
                        count: u.count,
                        bytes: u.bytes,
                    })
                    .collect();
                output::json(&out)?;
            } else {
                let rows: Vec<Vec<String>> = v
                    .iter()
                    .map(|u| vec![u.kind.clone(), u.count.to_string(), output::size(u.bytes)])
                    .collect();
                output::table(&["TYPE", "COUNT", "SIZE"], &rows);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn check(ctx: &Ctx, a: CheckArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = pb::check_client::CheckClient::new(c.channel.clone());
    let r = cl
        .check(c.req(pb::CheckRequest { repair: a.repair }))
        .await
        .or_fail()?;
    let unrepaired = r.problems.iter().filter(|p| !p.repaired).count();
    if a.format == Format::Json {
        #[derive(Serialize)]
        struct P<'a> {
            kind: &'a str,
            subject: &'a str,
            problem: &'a str,
            repaired: bool,
        }
        #[derive(Serialize)]
        struct R<'a> {
            blobs_checked: u64,
            bytes_checked: u64,
            records_checked: u64,
            consistent: bool,
            problems: Vec<P<'a>>,
        }
        output::json(&R {
            blobs_checked: r.blobs_checked,
            bytes_checked: r.bytes_checked,
            records_checked: r.records_checked,
            consistent: r.problems.is_empty(),
            problems: r
                .problems
                .iter()
                .map(|p| P {
                    kind: &p.kind,
                    subject: &p.subject,
                    problem: &p.problem,
                    repaired: p.repaired,
                })
                .collect(),
        })?;
    } else {
        for p in &r.problems {
            println!(
                "{} {}: {}{}",
                p.kind,
                p.subject,
                p.problem,
                if p.repaired { " (repaired)" } else { "" }
            );
        }
        println!(
            "checked {} blobs ({}) and {} records: {}",
            r.blobs_checked,
            output::size(r.bytes_checked),
            r.records_checked,
            if r.problems.is_empty() {
                "consistent".to_string()
            } else {
                format!("{} problems, {} not repaired", r.problems.len(), unrepaired)
            }
        );
    }
    Ok(if unrepaired == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
