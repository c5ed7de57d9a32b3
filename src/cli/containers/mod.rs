//! Containers and tasks: docker-style verbs (`nook run`, `ps`, `exec`, `logs`, `stop`, `kill`,
//! `start`, `restart`, `wait`, `rm`, `inspect`, `top`) and ctr-style groups
//! (`nook containers ls|info|rm`, `nook tasks ls|start|kill|exec|ps|pause|resume`).
//!
//! This file holds the arguments of every command and the lifecycle verbs; [`run`] holds what
//! runs a process and talks to it (run, create, exec, attach, logs), [`ps`] the listing.

mod ps;
mod run;

use ps::list;
pub use ps::ps;
use run::attach;
pub use run::{attach_cmd, create, exec, logs, run};

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::client::{status_message, StatusExt};
use super::output;
use super::{Client, Ctx};
use crate::proto::containers as pb;
use crate::proto::images as ipb;

type Cl = pb::containers_client::ContainersClient<tonic::transport::Channel>;

fn client(c: &Client) -> Cl {
    pb::containers_client::ContainersClient::new(c.channel.clone())
        .max_decoding_message_size(crate::api::MAX_MESSAGE)
}

/// `--pull`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PullPolicy {
    #[default]
    Missing,
    Always,
    Never,
}

/// Options shared by `run` and `create`.
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Assign a name (unique in the namespace).
    #[arg(long)]
    pub name: Option<String>,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from here).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Bind mount: /host/path:/container/path[:ro]; a host path starting with ./ or ../ is
    /// relative to the current directory.
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Mount a tmpfs: /path[:options].
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User: name, uid, name:group or uid:gid.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Override the image's ENTRYPOINT ("" clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name (-h as in docker; --help for help).
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Print help (-h is --hostname here, as in docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Add a capability (or ALL).
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop a capability (or ALL).
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// All capabilities within the user namespace, no seccomp, no masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// seccomp=unconfined | seccomp=PROFILE.json | no-new-privileges[=true|false] (off by
    /// default, as in docker: setuid programs work).
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Add a supplementary group (a group name of the image, or a gid).
    #[arg(long = "group-add")]
    pub group_add: Vec<String>,
    /// A process limit NAME=SOFT[:HARD] (core, cpu, data, fsize, locks, memlock, msgqueue,
    /// nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack; -1 = unlimited). Default
    /// open files: nookd's hard limit.
    #[arg(long = "ulimit")]
    pub ulimit: Vec<String>,
    /// Run tini as pid 1 in front of the command: it reaps zombies and forwards signals
    /// (needs the package tini).
    #[arg(long)]
    pub init: bool,
    /// OCI runtime (a name from [runtimes] in config.toml).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Snapshotter for the container's root filesystem.
    #[arg(long)]
    pub snapshotter: Option<String>,
    /// When to pull the image.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// Set a label (KEY=VALUE).
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Network: the default bridge network (default), a network made with `nook network
    /// create` (containers on it resolve each other by name), host (nookd's containers'
    /// namespace, with its tap0 link), or none (loopback only).
    #[arg(long, default_value = "")]
    pub network: String,
    /// Another name containers on the same network reach this one by (repeatable).
    #[arg(long = "network-alias", value_name = "ALIAS")]
    pub network_alias: Vec<String>,
    /// Publish a container port on the host: [HOSTIP:]HOSTPORT:PORT[/tcp|/udp], PORT (any
    /// free host port), or ranges like 8000-8005:80-85.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every port the image EXPOSEs on a free host port (`nook port` shows which).
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// How published ports reach the container: relay (the container's shim relays each
    /// connection; the port also answers at the container's address on its network) or direct (the
    /// container's listening socket is made on the host: no relay, loopback speed). Default:
    /// the daemon's [network] port_driver.
    #[arg(long, value_parser = ["relay", "direct"])]
    pub port_driver: Option<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Restart policy, applied by nookd when the container exits: no, on-failure[:MAX-RETRIES]
    /// (after a non-zero exit), always, unless-stopped (not after `nook stop`/`kill`). Delays
    /// start at 100 ms and double, starting over after a 10 s run.
    #[arg(long, default_value = "no")]
    pub restart: String,
    #[command(flatten)]
    pub limits: super::limits::LimitArgs,
    /// The image.
    pub image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Filter: name=NAME (part of the name), id=PREFIX, label=KEY or label=KEY=VALUE,
    /// status=created|running|paused|exited, ancestor=IMAGE. As docker: one key given twice
    /// matches either value, different keys (and every label) must all match.
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Show the N most recently created containers (all states).
    #[arg(short = 'n', long = "last")]
    pub last: Option<usize>,
    /// Show the most recently created container (all states).
    #[arg(short = 'l', long)]
    pub latest: bool,
    #[command(flatten)]
    pub list: output::ListFlags,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// User: name, uid, name:group or uid:gid.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    pub container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long)]
    pub no_stdin: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow the output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u32,
    /// Signal to stop with (default SIGTERM).
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send.
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ManyArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach to the output and wait for the exit.
    #[arg(short = 'a', long)]
    pub attach: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill running containers first.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove its anonymous volumes (`-v /path`) too.
    #[arg(short = 'v', long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct OneArgs {
    pub container: String,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    /// The container (id, id prefix or name).
    pub container: String,
    /// Its new name.
    pub name: String,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    pub container: String,
    #[command(flatten)]
    pub flags: output::ListFlags,
}

/// `nook containers ...`
#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum ContainersCmd {
    /// List containers.
    #[command(visible_alias = "list")]
    Ls(PsArgs),
    /// Show a container's record, spec and state (JSON).
    Info(ManyArgs),
    /// Remove containers.
    #[command(visible_alias = "delete")]
    Rm(RmArgs),
    /// Create a container (not started).
    #[command(disable_help_flag = true)]
    Create(Box<CreateArgs>),
    /// Remove every stopped container, then collect garbage.
    Prune(super::prune::ContainerPruneArgs),
}

#[derive(Args, Debug)]
pub struct TaskKillArgs {
    /// Signal to send.
    #[arg(short = 's', long, default_value = "TERM")]
    pub signal: String,
    /// Signal every process of the container (needs cgroups for some runtimes).
    #[arg(short = 'a', long)]
    pub all: bool,
    pub container: String,
}

/// `nook tasks ...`
#[derive(Subcommand, Debug)]
pub enum TasksCmd {
    /// List running tasks.
    #[command(visible_alias = "list")]
    Ls(output::ListFlags),
    /// Start a container's task (attached, like `nook start -a`; -d to detach).
    Start {
        #[arg(short = 'd', long)]
        detach: bool,
        container: String,
    },
    /// Signal a task.
    Kill(TaskKillArgs),
    /// Run a process in a task.
    Exec(ExecArgs),
    /// The task's processes.
    Ps(OneArgs),
    /// Freeze a task (needs cgroup delegation).
    Pause(OneArgs),
    /// Thaw a task.
    Resume(OneArgs),
}

/// Parses a signal: `TERM`, `SIGTERM`, `15`.
pub fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if n > 0 && n < 65 {
            return Ok(n);
        }
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| {
            anyhow::anyhow!("unknown signal {s:?}: use a name like TERM or KILL, or a number")
        })
}

fn code(n: i32) -> ExitCode {
    ExitCode::from(n.clamp(0, 255) as u8)
}

/// Runs `f` for each container; prints what it prints; fails if any failed.
async fn each<F, Fut>(names: &[String], mut f: F) -> anyhow::Result<ExitCode>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<String>>>,
{
    let mut failed = false;
    for n in names {
        match f(n.clone()).await {
            Ok(Some(out)) => println!("{out}"),
            Ok(None) => {}
            Err(e) => {
                eprintln!("nook: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn stop(ctx: &Ctx, a: StopArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let signal = a
        .signal
        .as_deref()
        .map(parse_signal)
        .transpose()?
        .unwrap_or(0);
    each(&a.containers, |id| {
        let c = c.clone();
        async move {
            client(&c)
                .stop(c.req(pb::StopRequest {
                    id: id.clone(),
                    timeout: a.time,
                    signal,
                }))
                .await
                .or_fail()?;
            Ok(Some(id))
        }
    })
    .await
}

pub async fn kill(ctx: &Ctx, a: KillArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let signal = parse_signal(&a.signal)?;
    each(&a.containers, |id| {
        let c = c.clone();
        async move {
            client(&c)
                .kill(c.req(pb::KillRequest {
                    id: id.clone(),
                    signal,
                    all: false,
                }))
                .await
                .or_fail()?;
            Ok(Some(id))
        }
    })
    .await
}

pub async fn start(ctx: &Ctx, a: StartArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    if a.attach {
        let [one] = a.containers.as_slice() else {
            anyhow::bail!("start -a takes one container");
        };
        let got = client(&c)
            .get(c.req(pb::ContainerRef { id: one.clone() }))
            .await
            .or_fail()?;
        let n = attach(&c, &got.id, false, got.tty, true).await?;
        return Ok(code(n));
    }
    each(&a.containers, |id| {
        let c = c.clone();
        async move {
            client(&c)
                .start(c.req(pb::ContainerRef { id: id.clone() }))
                .await
                .or_fail()?;
            Ok(Some(id))
        }
    })
    .await
}

pub async fn restart(ctx: &Ctx, a: StopArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    each(&a.containers, |id| {
        let c = c.clone();
        async move {
            client(&c)
                .stop(c.req(pb::StopRequest {
                    id: id.clone(),
                    timeout: a.time,
                    signal: 0,
                }))
                .await
                .or_fail()?;
            client(&c)
                .start(c.req(pb::ContainerRef { id: id.clone() }))
                .await
                .or_fail()?;
            Ok(Some(id))
        }
    })
    .await
}

pub async fn wait(ctx: &Ctx, a: ManyArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    each(&a.containers, |id| {
        let c = c.clone();
        async move {
            let r = client(&c)
                .wait(c.req(pb::ContainerRef { id }))
                .await
                .or_fail()?;
            Ok(Some(r.exit_code.to_string()))
        }
    })
    .await
}

pub async fn rm(ctx: &Ctx, a: RmArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    each(&a.containers, |id| {
        let c = c.clone();
        async move {
            client(&c)
                .remove(c.req(pb::RemoveRequest {
                    id: id.clone(),
                    force: a.force,
                    volumes: a.volumes,
                }))
                .await
                .or_fail()?;
            Ok(Some(id))
        }
    })
    .await
}

/// `nook inspect NAME...`: each name as a container, else (as `docker inspect`) as an image.
pub async fn inspect(ctx: &Ctx, a: ManyArgs) -> anyhow::Result<ExitCode> {
    inspect_names(ctx, a, true).await
}

/// `nook containers info`: containers only.
async fn inspect_containers(ctx: &Ctx, a: ManyArgs) -> anyhow::Result<ExitCode> {
    inspect_names(ctx, a, false).await
}

async fn inspect_names(ctx: &Ctx, a: ManyArgs, images_too: bool) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut out = Vec::new();
    let mut failed = false;
    for id in &a.containers {
        let json = match client(&c)
            .inspect(c.req(pb::ContainerRef { id: id.clone() }))
            .await
        {
            Ok(r) => Ok(r.into_inner().json),
            Err(s) if images_too && s.code() == tonic::Code::NotFound => {
                let mut ic = ipb::images_client::ImagesClient::new(c.channel.clone())
                    .max_decoding_message_size(crate::api::MAX_MESSAGE);
                match ic
                    .inspect(c.req(ipb::GetImageRequest {
                        name: id.clone(),
                        ..Default::default()
                    }))
                    .await
                {
                    Ok(r) => Ok(r.into_inner().json),
                    // neither: say so once, for both
                    Err(i) if i.code() == tonic::Code::NotFound => Err(format!(
                        "no container or image named {id:?} (nook ps -a, nook images)"
                    )),
                    Err(i) => Err(status_message(&i)),
                }
            }
            Err(s) => Err(status_message(&s)),
        };
        match json {
            Ok(j) => out.push(serde_json::from_str::<serde_json::Value>(&j)?),
            Err(msg) => {
                eprintln!("nook: {msg}");
                failed = true;
            }
        }
    }
    output::json(&out)?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn top(ctx: &Ctx, a: OneArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let r = client(&c)
        .top(c.req(pb::ContainerRef { id: a.container }))
        .await
        .or_fail()?;
    let titles: Vec<&str> = r.titles.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = r.processes.into_iter().map(|p| p.fields).collect();
    output::table(&titles, &rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn rename(ctx: &Ctx, a: RenameArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    client(&c)
        .rename(c.req(pb::RenameRequest {
            id: a.container,
            name: a.name,
        }))
        .await
        .or_fail()?;
    Ok(ExitCode::SUCCESS)
}

pub async fn diff(ctx: &Ctx, a: DiffArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let r = client(&c)
        .changes(c.req(pb::ContainerRef { id: a.container }))
        .await
        .or_fail()?;
    if a.flags.format.is_none() && !a.flags.quiet {
        // docker diff's lines: `A /path`
        for ch in &r.changes {
            println!("{} {}", ch.kind, ch.path);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<output::Row> = r
        .changes
        .into_iter()
        .map(|ch| output::Row {
            key: ch.path.clone(),
            cells: vec![ch.kind.clone(), ch.path.clone()],
            json: serde_json::json!({"Kind": ch.kind, "Path": ch.path}),
            fields: Vec::new(),
        })
        .collect();
    a.flags.print(&["KIND", "PATH"], &rows)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn containers(ctx: &Ctx, cmd: ContainersCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ContainersCmd::Ls(mut a) => {
            a.all = true;
            ps(ctx, a).await
        }
        ContainersCmd::Info(a) => inspect_containers(ctx, a).await,
        ContainersCmd::Rm(a) => rm(ctx, a).await,
        ContainersCmd::Create(a) => create(ctx, *a).await,
        ContainersCmd::Prune(a) => super::prune::containers(ctx, a).await,
    }
}

pub async fn tasks(ctx: &Ctx, cmd: TasksCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TasksCmd::Ls(flags) => {
            let c = ctx.connect().await?;
            let cs = list(&c, false).await?;
            let rows: Vec<output::Row> = cs
                .iter()
                .map(|x| output::Row {
                    key: x.name.clone(),
                    cells: vec![x.name.clone(), x.pid.to_string(), x.status.to_uppercase()],
                    json: serde_json::json!({"task": x.name, "id": x.id, "pid": x.pid, "status": x.status}),
                    fields: vec![],
                })
                .collect();
            flags.print(&["TASK", "PID", "STATUS"], &rows)?;
            Ok(ExitCode::SUCCESS)
        }
        TasksCmd::Start { detach, container } => {
            start(
                ctx,
                StartArgs {
                    attach: !detach,
                    containers: vec![container],
                },
            )
            .await
        }
        TasksCmd::Kill(a) => {
            let c = ctx.connect().await?;
            client(&c)
                .kill(c.req(pb::KillRequest {
                    id: a.container,
                    signal: parse_signal(&a.signal)?,
                    all: a.all,
                }))
                .await
                .or_fail()?;
            Ok(ExitCode::SUCCESS)
        }
        TasksCmd::Exec(a) => exec(ctx, a).await,
        TasksCmd::Ps(a) => top(ctx, a).await,
        TasksCmd::Pause(a) => {
            let c = ctx.connect().await?;
            client(&c)
                .pause(c.req(pb::ContainerRef { id: a.container }))
                .await
                .or_fail()?;
            Ok(ExitCode::SUCCESS)
        }
        TasksCmd::Resume(a) => {
            let c = ctx.connect().await?;
            client(&c)
                .resume(c.req(pb::ContainerRef { id: a.container }))
                .await
                .or_fail()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert_eq!(parse_signal("sigkill").unwrap(), 9);
        assert_eq!(parse_signal("2").unwrap(), 2);
        assert!(parse_signal("NOPE").is_err());
    }
}
