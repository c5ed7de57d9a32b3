//! `nook leases ls|create|rm`.

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

use super::client::StatusExt;
use super::output;
use super::Ctx;
use crate::proto::leases as pb;

#[derive(Subcommand, Debug)]
pub enum LeasesCmd {
    /// List leases.
    #[command(visible_alias = "list")]
    Ls(output::ListFlags),
    /// Create a lease; prints its id.
    Create {
        /// Lease id (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// Expiry in seconds (0: never).
        #[arg(long, default_value_t = 86400)]
        expires_in: u64,
        /// Labels as KEY=VALUE.
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// Remove leases.
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: LeasesCmd) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut cl = pb::leases_client::LeasesClient::new(c.channel.clone());
    match cmd {
        LeasesCmd::Ls(flags) => {
            let v = cl
                .list(c.req(pb::ListLeasesRequest {}))
                .await
                .or_fail()?
                .leases;
            {
                #[derive(Serialize)]
                struct L<'a> {
                    id: &'a str,
                    created_at: i64,
                    expires_at: i64,
                    labels: std::collections::BTreeMap<&'a String, &'a String>,
                    resources: Vec<[&'a str; 2]>,
                }
                let rows: Vec<output::Row> = v
                    .iter()
                    .map(|l| output::Row {
                        key: l.id.clone(),
                        cells: vec![
                            l.id.clone(),
                            output::age(l.created_at),
                            if l.expires_at == 0 {
                                "never".into()
                            } else {
                                chrono::DateTime::from_timestamp(l.expires_at, 0)
                                    .map(|t| t.to_rfc3339())
                                    .unwrap_or_default()
                            },
                            l.resources.len().to_string(),
                        ],
                        json: serde_json::to_value(L {
                            id: &l.id,
                            created_at: l.created_at,
                            expires_at: l.expires_at,
                            labels: l.labels.iter().collect(),
                            resources: l
                                .resources
                                .iter()
                                .map(|r| [r.kind.as_str(), r.id.as_str()])
                                .collect(),
                        })
                        .unwrap_or_default(),
                        fields: vec![],
                    })
                    .collect();
                flags.print(&["ID", "CREATED", "EXPIRES", "RESOURCES"], &rows)?;
            }
        }
        LeasesCmd::Create {
            id,
            expires_in,
            labels,
        } => {
            let l = cl
                .create(c.req(pb::CreateLeaseRequest {
                    id: id.unwrap_or_default(),
                    labels: output::parse_labels(&labels)?,
                    expire_seconds: expires_in,
                }))
                .await
                .or_fail()?;
            println!("{}", l.id);
        }
        LeasesCmd::Rm { ids } => {
            return Ok(output::each(ids, |id| {
                let (mut cl, c) = (cl.clone(), c.clone());
                async move {
                    cl.delete(c.req(pb::DeleteLeaseRequest { id }))
                        .await
                        .or_fail()
                        .map(drop)
                }
            })
            .await);
        }
    }
    Ok(ExitCode::SUCCESS)
}
