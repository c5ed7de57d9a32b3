//! The `nook` command line: ctr-style groups (`nook images ls`) and docker-style verbs
//! (`nook run`), all talking to nookd over its unix socket. Each command group lives in its own
//! file; this file holds the global options and dispatch.

pub mod client;
pub mod output;
mod snapshots;
mod spine;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use client::Client;

/// nook: rootless containers for one user.
#[derive(Parser, Debug)]
#[command(name = "nook", version = crate::VERSION, propagate_version = true)]
pub struct Cli {
    /// nookd's socket (default: $XDG_RUNTIME_DIR/nook/nook.sock).
    #[arg(long, global = true, env = "NOOK_ADDRESS")]
    pub address: Option<PathBuf>,
    /// Namespace to work in.
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "NOOK_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the versions of nook and nookd.
    Version(spine::VersionArgs),
    /// Show what nookd runs with: id maps, network, snapshotter, runtime.
    Info(spine::InfoArgs),
    /// Manage namespaces.
    #[command(subcommand, visible_alias = "ns")]
    Namespaces(spine::NamespacesCmd),
    /// List nookd's plugins and whether each works here.
    #[command(subcommand)]
    Plugins(spine::PluginsCmd),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(spine::ConfigCmd),
    /// Manage snapshots (filesystem layers): prepare, view, commit, mounts, unpack layers.
    #[command(visible_alias = "snapshot")]
    Snapshots(snapshots::SnapshotsArgs),
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nook: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nook: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Ctx {
        address: cli.address.clone(),
        namespace: cli.namespace.clone(),
    };
    match cli.command {
        Command::Version(a) => spine::version(&ctx, a).await,
        Command::Info(a) => spine::info(&ctx, a).await,
        Command::Namespaces(c) => spine::namespaces(&ctx, c).await,
        Command::Plugins(c) => spine::plugins(&ctx, c).await,
        Command::Config(c) => spine::config(&ctx, c).await,
        Command::Snapshots(a) => snapshots::run(&ctx, a).await,
    }
}

/// What every command needs: where nookd is and which namespace.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub address: Option<PathBuf>,
    pub namespace: String,
}

impl Ctx {
    /// Connects to nookd.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        Client::connect(self.address.clone(), &self.namespace).await
    }
}
