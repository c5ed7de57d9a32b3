//! The `nook` command line: ctr-style groups (`nook images ls`) and docker-style verbs
//! (`nook run`), all talking to nookd over its unix socket. Each command group lives in its own
//! file; this file holds the global options and dispatch.

pub mod client;
mod containers;
mod content;
mod cp;
mod events;
mod images;
mod leases;
mod limits;
mod networks;
pub mod output;
mod prune;
mod snapshots;
pub mod spine;
mod system;
mod volumes;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use client::Client;

/// nook: rootless containers for one user.
///
/// The options below go before the command (`nook -n prod ps`): after it, a docker-style verb
/// keeps docker's own short flags (`nook logs -n 5 web` is the last 5 lines).
#[derive(Parser, Debug)]
#[command(name = "nook", version = crate::VERSION, propagate_version = true)]
pub struct Cli {
    /// nookd's socket (default: $XDG_RUNTIME_DIR/nook/nook.sock).
    #[arg(long, env = "NOOK_ADDRESS")]
    pub address: Option<PathBuf>,
    /// Namespace to work in.
    #[arg(short = 'n', long, env = "NOOK_NAMESPACE", default_value = "default")]
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
    /// Manage named volumes (`nook run -v NAME:/path`).
    #[command(subcommand, visible_alias = "volumes")]
    Volume(volumes::VolumeCmd),
    /// Manage images: pull, push, ls, rm, inspect, import, export, tag (no command: ls).
    #[command(visible_alias = "image")]
    Images(images::ImagesArgs),
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
    #[command(disable_help_flag = true)]
    Run(containers::RunArgs),
    /// Create a container without starting it.
    #[command(disable_help_flag = true)]
    Create(containers::CreateArgs),
    /// List containers.
    Ps(containers::PsArgs),
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// Show a container's output.
    Logs(containers::LogsArgs),
    /// Attach to a running container's output (and its stdin, if it keeps one open).
    Attach(containers::AttachArgs),
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
    /// Show containers' records, specs and states (JSON); a name no container has is looked
    /// up as an image.
    Inspect(containers::ManyArgs),
    /// Show a container's processes.
    Top(containers::OneArgs),
    /// Give a container a new name (its peers' /etc/hosts follow).
    Rename(containers::RenameArgs),
    /// Show what changed in a container's filesystem against its image (A added, C changed,
    /// D deleted).
    Diff(containers::DiffArgs),
    /// Change running containers' resource limits (kept for their later runs).
    Update(limits::UpdateArgs),
    /// Show containers' resource usage: CPU, memory, network and block I/O, processes.
    Stats(limits::StatsArgs),
    /// Freeze every process of containers (the cgroup freezer).
    Pause(limits::PauseArgs),
    /// Thaw paused containers.
    Unpause(limits::PauseArgs),
    /// Copy files between a container and the host (CONTAINER:PATH; - for a tar stream),
    /// running or stopped.
    Cp(cp::CpArgs),
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

/// Whether an error (or a panic message) is a write to a closed pipe: `nook ... | head -1`.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Ends every command quietly when its reader goes away (`nook content ls -q | head -1`), as
/// a filter killed by SIGPIPE does, without letting SIGPIPE kill nook on its own sockets:
/// `println!` panics on EPIPE (Rust ignores SIGPIPE), and this hook turns that panic into a
/// quiet exit; errors that carry EPIPE end the same way in [`main`].
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(EXIT_CLOSED_PIPE);
        }
        default(info)
    }));
}

/// The exit code after a closed pipe: 128 + SIGPIPE, what a shell shows for a program that
/// SIGPIPE ended.
const EXIT_CLOSED_PIPE: i32 = 141;

/// Parses the command line; on an unknown subcommand clap did not place (`nook rnu`), adds
/// the nearest one by edit distance with transpositions to clap's error (`tip: a similar
/// subcommand exists: 'run'`).
fn parse() -> Cli {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    let mut e = match Cli::try_parse() {
        Ok(c) => return c,
        Err(e) => e,
    };
    if e.kind() == ErrorKind::InvalidSubcommand && e.get(ContextKind::SuggestedSubcommand).is_none()
    {
        if let Some(ContextValue::String(bad)) = e.get(ContextKind::InvalidSubcommand).cloned() {
            let args: Vec<String> = std::env::args().skip(1).collect();
            if let Some(s) = nearest_subcommand(&Cli::command(), &args, &bad) {
                e.insert(ContextKind::SuggestedSubcommand, ContextValue::String(s));
            }
        }
    }
    e.exit()
}

/// The subcommand (or alias) nearest to `bad` at the level of the command line where `bad`
/// stands, if one is close enough to be what was meant.
fn nearest_subcommand(root: &clap::Command, args: &[String], bad: &str) -> Option<String> {
    let mut cmd = root;
    for a in args {
        if a == bad {
            break;
        }
        if let Some(sub) = cmd.find_subcommand(a) {
            cmd = sub;
        }
    }
    let limit = if bad.chars().count() > 3 { 2 } else { 1 };
    cmd.get_subcommands()
        .flat_map(|c| std::iter::once(c.get_name()).chain(c.get_all_aliases()))
        .map(|n| (edit_distance(bad, n), n))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, n)| n.to_string())
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbours (`rnu` → `run` is 1) each cost 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = parse();
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
        Err(e) if is_broken_pipe(&e) => ExitCode::from(EXIT_CLOSED_PIPE as u8),
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
        Command::Volume(c) => volumes::run(&ctx, c).await,
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
        Command::Attach(a) => containers::attach_cmd(&ctx, a).await,
        Command::Stop(a) => containers::stop(&ctx, a).await,
        Command::Kill(a) => containers::kill(&ctx, a).await,
        Command::Start(a) => containers::start(&ctx, a).await,
        Command::Restart(a) => containers::restart(&ctx, a).await,
        Command::Wait(a) => containers::wait(&ctx, a).await,
        Command::Rm(a) => containers::rm(&ctx, a).await,
        Command::Inspect(a) => containers::inspect(&ctx, a).await,
        Command::Top(a) => containers::top(&ctx, a).await,
        Command::Rename(a) => containers::rename(&ctx, a).await,
        Command::Diff(a) => containers::diff(&ctx, a).await,
        Command::Update(a) => limits::update(&ctx, a).await,
        Command::Stats(a) => limits::stats(&ctx, a).await,
        Command::Pause(a) => limits::pause(&ctx, a, true).await,
        Command::Unpause(a) => limits::pause(&ctx, a, false).await,
        Command::Cp(a) => cp::cp(&ctx, a).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn nearest_subcommands() {
        let root = Cli::command();
        let at = |args: &[&str], bad| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            nearest_subcommand(&root, &args, bad)
        };
        assert_eq!(at(&["rnu"], "rnu").as_deref(), Some("run"));
        assert_eq!(
            at(&["-n", "x", "imgaes"], "imgaes").as_deref(),
            Some("images")
        );
        assert_eq!(at(&["images", "lss"], "lss").as_deref(), Some("ls"));
        assert_eq!(at(&["zzzzzz"], "zzzzzz"), None);
        assert_eq!(edit_distance("rnu", "run"), 1);
    }
}
