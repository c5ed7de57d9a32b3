//! The `nook` command line: ctr-style groups (`nook images ls`) and docker-style verbs
//! (`nook run`), all talking to nookd over its unix socket. Each command group lives in its own
//! file; this file holds the global options and dispatch.

pub mod client;
mod containers;
mod content;
mod events;
mod images;
mod leases;
mod networks;
pub mod output;
mod prune;
mod snapshots;
pub mod spine;
mod system;

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
    /// Show what nookd runs with: id maps, network, snapshotter, runtime, the versions of the
    /// helper programs (runc, crun, slirp4netns, pasta, fuse-overlayfs, ...) and kernel features.
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
    /// Collect garbage now: content and snapshots nothing references.
    Gc(system::GcArgs),
    /// Verify every blob and reference (fsck); --repair fixes what it can.
    Check(system::CheckArgs),
    /// System-wide views: disk usage, info.
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Manage leases (holds against garbage collection).
    #[command(subcommand)]
    Leases(leases::LeasesCmd),
    /// Manage container networks.
    #[command(subcommand, visible_alias = "networks")]
    Network(networks::NetworkCmd),
    /// List a container's published ports.
    Port(networks::PortArgs),
    /// Manage images: pull, push, ls, rm, inspect, import, export, tag.
    #[command(subcommand, visible_alias = "image")]
    Images(images::ImagesCmd),
    /// Pull an image from a registry.
    Pull(images::PullArgs),
    /// Push an image to a registry.
    Push(images::PushArgs),
    /// Give an image another name.
    Tag(images::TagArgs),
    /// Remove images.
    Rmi(images::RmArgs),
    /// Write images (or, with no names, every image of the namespace) to an OCI-layout tar
    /// with a docker manifest.json (stdout, or -o FILE).
    Save(images::SaveArgs),
    /// Load images from a docker-archive or OCI-layout tar (stdin, or -i FILE).
    Load(images::LoadArgs),
    /// Store credentials for a registry (checked against it first).
    Login(images::LoginArgs),
    /// Forget the credentials for a registry.
    Logout(images::LogoutArgs),
    /// Run a command in a new container.
    Run(containers::RunArgs),
    /// Create a container without starting it.
    Create(containers::CreateArgs),
    /// List containers.
    Ps(containers::PsArgs),
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// Show a container's output.
    Logs(containers::LogsArgs),
    /// Stop containers (SIGTERM, then SIGKILL after -t seconds).
    Stop(containers::StopArgs),
    /// Send a signal to containers.
    Kill(containers::KillArgs),
    /// Start stopped or created containers.
    Start(containers::StartArgs),
    /// Stop and start containers.
    Restart(containers::StopArgs),
    /// Wait for containers to exit; print their exit codes.
    Wait(containers::ManyArgs),
    /// Remove containers.
    Rm(containers::RmArgs),
    /// Show containers' records, specs and states (JSON).
    Inspect(containers::ManyArgs),
    /// Show a container's processes.
    Top(containers::OneArgs),
    /// Manage containers (ctr-style): ls, info, rm, create.
    #[command(subcommand, visible_alias = "container", visible_alias = "c")]
    Containers(containers::ContainersCmd),
    /// Manage tasks (ctr-style): ls, start, kill, exec, ps, pause, resume.
    #[command(subcommand, visible_alias = "task", visible_alias = "t")]
    Tasks(containers::TasksCmd),
    /// Inspect the content store (blobs of this namespace).
    #[command(subcommand)]
    Content(content::ContentCmd),
    /// Manage snapshots (filesystem layers): prepare, view, commit, mounts, unpack layers.
    #[command(visible_alias = "snapshot")]
    Snapshots(snapshots::SnapshotsArgs),
    /// Stream nookd's events (containers, tasks, images, snapshots, networks) until Ctrl-C.
    Events(events::EventsArgs),
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
            match e.downcast_ref::<client::ExitWith>() {
                Some(x) => ExitCode::from(x.code),
                None => ExitCode::FAILURE,
            }
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
        Command::Leases(c) => leases::run(&ctx, c).await,
        Command::Network(c) => networks::run(&ctx, c).await,
        Command::Port(a) => networks::port(&ctx, a).await,
        Command::Gc(a) => system::gc(&ctx, a).await,
        Command::Check(a) => system::check(&ctx, a).await,
        Command::System(c) => system::system(&ctx, c).await,
        Command::Images(c) => images::run(&ctx, c).await,
        Command::Pull(a) => images::pull(&ctx, a).await,
        Command::Push(a) => images::push(&ctx, a).await,
        Command::Tag(a) => images::tag(&ctx, a).await,
        Command::Rmi(a) => images::rm(&ctx, a).await,
        Command::Save(a) => images::save(&ctx, a).await,
        Command::Load(a) => images::load(&ctx, a).await,
        Command::Login(a) => images::login(&ctx, a).await,
        Command::Logout(a) => images::logout(&ctx, a).await,
        Command::Content(c) => content::run(&ctx, c).await,
        Command::Run(a) => containers::run(&ctx, a).await,
        Command::Create(a) => containers::create(&ctx, a).await,
        Command::Ps(a) => containers::ps(&ctx, a).await,
        Command::Exec(a) => containers::exec(&ctx, a).await,
        Command::Logs(a) => containers::logs(&ctx, a).await,
        Command::Stop(a) => containers::stop(&ctx, a).await,
        Command::Kill(a) => containers::kill(&ctx, a).await,
        Command::Start(a) => containers::start(&ctx, a).await,
        Command::Restart(a) => containers::restart(&ctx, a).await,
        Command::Wait(a) => containers::wait(&ctx, a).await,
        Command::Rm(a) => containers::rm(&ctx, a).await,
        Command::Inspect(a) => containers::inspect(&ctx, a).await,
        Command::Top(a) => containers::top(&ctx, a).await,
        Command::Containers(c) => containers::containers(&ctx, c).await,
        Command::Tasks(c) => containers::tasks(&ctx, c).await,
        Command::Snapshots(a) => snapshots::run(&ctx, a).await,
        Command::Events(a) => events::events(&ctx, a).await,
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
