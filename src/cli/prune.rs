//! `nook image prune`, `nook container prune`, `nook system prune`: remove what is unused, as
//! docker users expect, then collect garbage and say how much disk space came back.
//!
//! The removal happens in nookd (Images.Prune, Containers.Prune), where it is ordered against
//! container creation and start; the CLI asks for confirmation like docker: on a terminal it
//! prompts, otherwise it wants `-f`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use serde::Serialize;

use super::client::{Client, StatusExt};
use super::output::{self, Format};
use super::Ctx;
use crate::proto::containers as cpb;
use crate::proto::images as ipb;

/// The flags every prune command takes.
#[derive(Args, Debug)]
pub struct PruneFlags {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Print only the names of what was removed.
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `nook image prune` and `nook system prune`.
#[derive(Args, Debug)]
pub struct ImagePruneArgs {
    /// Remove every image no container uses, not only untagged (digest-only) ones.
    #[arg(short, long)]
    pub all: bool,
    #[command(flatten)]
    pub flags: PruneFlags,
}

/// `nook system prune` takes what `nook image prune` takes.
pub type SystemPruneArgs = ImagePruneArgs;

#[derive(Args, Debug)]
pub struct ContainerPruneArgs {
    #[command(flatten)]
    pub flags: PruneFlags,
}

/// Asks `question` on a terminal; without one, refuses unless `force`.
pub(super) fn confirm(question: &str, force: bool) -> anyhow::Result<bool> {
    if force {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("not pruning without confirmation: stdin is not a terminal, pass -f to prune");
    }
    eprint!("{question}\nAre you sure you want to continue? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}

#[derive(Serialize, Default)]
struct Pruned {
    containers: Vec<PrunedContainer>,
    images: Vec<PrunedImage>,
    reclaimed_bytes: u64,
}

#[derive(Serialize)]
struct PrunedContainer {
    id: String,
    name: String,
}

#[derive(Serialize)]
struct PrunedImage {
    name: String,
    digest: String,
}

async fn prune_containers(c: &Client, out: &mut Pruned) -> anyhow::Result<()> {
    let r = cpb::containers_client::ContainersClient::new(c.channel.clone())
        .prune(c.req(cpb::PruneContainersRequest {}))
        .await
        .or_fail()?;
    out.containers
        .extend(r.containers.into_iter().map(|x| PrunedContainer {
            id: x.id,
            name: x.name,
        }));
    out.reclaimed_bytes += r.reclaimed_bytes;
    Ok(())
}

async fn prune_images(c: &Client, all: bool, out: &mut Pruned) -> anyhow::Result<()> {
    let r = ipb::images_client::ImagesClient::new(c.channel.clone())
        .max_decoding_message_size(crate::api::MAX_MESSAGE)
        .prune(c.req(ipb::PruneImagesRequest { all }))
        .await
        .or_fail()?;
    out.images.extend(r.images.into_iter().map(|i| PrunedImage {
        digest: i.target.map(|t| t.digest).unwrap_or_default(),
        name: i.name,
    }));
    out.reclaimed_bytes += r.reclaimed_bytes;
    Ok(())
}

fn print(p: &Pruned, f: &PruneFlags) -> anyhow::Result<ExitCode> {
    if f.format == Format::Json {
        output::json(p)?;
        return Ok(ExitCode::SUCCESS);
    }
    if f.quiet {
        for c in &p.containers {
            println!("{}", c.name);
        }
        for i in &p.images {
            println!("{}", i.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !p.containers.is_empty() {
        println!("Deleted containers:");
        for c in &p.containers {
            println!("{} ({})", c.name, &c.id[..c.id.len().min(12)]);
        }
        println!();
    }
    if !p.images.is_empty() {
        println!("Deleted images:");
        for i in &p.images {
            println!("{} ({})", i.name, i.digest);
        }
        println!();
    }
    println!("Total reclaimed space: {}", output::size(p.reclaimed_bytes));
    Ok(ExitCode::SUCCESS)
}

/// `nook image prune`.
pub async fn images(ctx: &Ctx, a: ImagePruneArgs) -> anyhow::Result<ExitCode> {
    let q = if a.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling (untagged) images."
    };
    if !confirm(q, a.flags.force)? {
        return Ok(ExitCode::FAILURE);
    }
    let c = ctx.connect().await?;
    let mut p = Pruned::default();
    prune_images(&c, a.all, &mut p).await?;
    print(&p, &a.flags)
}

/// `nook container prune`.
pub async fn containers(ctx: &Ctx, a: ContainerPruneArgs) -> anyhow::Result<ExitCode> {
    if !confirm(
        "WARNING! This will remove all stopped containers.",
        a.flags.force,
    )? {
        return Ok(ExitCode::FAILURE);
    }
    let c = ctx.connect().await?;
    let mut p = Pruned::default();
    prune_containers(&c, &mut p).await?;
    print(&p, &a.flags)
}

/// `nook system prune`: stopped containers, then unused images (each followed by a GC).
pub async fn system(ctx: &Ctx, a: SystemPruneArgs) -> anyhow::Result<ExitCode> {
    let images = if a.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling (untagged) images"
    };
    let q = format!(
        "WARNING! This will remove:\n  - all stopped containers\n  - {images}\n  - all content and snapshots nothing references"
    );
    if !confirm(&q, a.flags.force)? {
        return Ok(ExitCode::FAILURE);
    }
    let c = ctx.connect().await?;
    let mut p = Pruned::default();
    prune_containers(&c, &mut p).await?;
    prune_images(&c, a.all, &mut p).await?;
    print(&p, &a.flags)
}
