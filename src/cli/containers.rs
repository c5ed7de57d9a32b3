//! Containers and tasks: docker-style verbs (`nook run`, `ps`, `exec`, `logs`, `stop`, `kill`,
//! `start`, `restart`, `wait`, `rm`, `inspect`, `top`) and ctr-style groups
//! (`nook containers ls|info|rm`, `nook tasks ls|start|kill|exec|ps|pause|resume`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::client::{status_message, StatusExt};
use super::output::{self, Format};
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
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
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
    /// Publish a container port on the host: [HOSTIP:]HOSTPORT:PORT[/tcp|/udp], PORT (any
    /// free host port), or ranges like 8000-8005:80-85.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every port the image EXPOSEs on a free host port (`nook port` shows which).
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// How published ports reach the container: relay (nookd relays each connection; the
    /// port also answers at the container's address on its network) or direct (the
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
    /// Only ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate ids and commands.
    #[arg(long)]
    pub no_trunc: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
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
pub struct LogsArgs {
    /// Follow the output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines ("all" for everything).
    #[arg(long, default_value = "all")]
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
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct OneArgs {
    pub container: String,
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
    Ls,
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

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn status_text(c: &pb::Container) -> String {
    match c.status.as_str() {
        "running" => format!(
            "Up {}",
            chrono::DateTime::parse_from_rfc3339(&c.started_at)
                .map(|t| output::age(t.timestamp())
                    .trim_end_matches(" ago")
                    .to_string())
                .unwrap_or_default()
        )
        .trim_end()
        .to_string(),
        "exited" => format!(
            "Exited ({}) {}",
            c.exit_code,
            chrono::DateTime::parse_from_rfc3339(&c.finished_at)
                .map(|t| output::age(t.timestamp()))
                .unwrap_or_default()
        )
        .trim_end()
        .to_string(),
        "paused" => "Up (Paused)".into(),
        "created" => "Created".into(),
        other => other.to_string(),
    }
}

/// Reads env files and resolves bare `-e KEY` from this environment.
fn env_list(a: &CreateArgs) -> anyhow::Result<Vec<String>> {
    let mut env = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("reading env file {}: {e}", f.display()))?;
        env.extend(crate::runtime::spec::parse_env_file(&text, |k| {
            std::env::var(k).ok()
        })?);
    }
    for e in &a.env {
        if e.contains('=') {
            env.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            env.push(format!("{e}={v}"));
        }
    }
    Ok(env)
}

/// `-v` values with relative host paths (`./data`) made absolute against this directory.
fn volumes(given: &[String]) -> anyhow::Result<Vec<String>> {
    if !given.iter().any(|v| v.starts_with('.')) {
        return Ok(given.to_vec());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| anyhow::anyhow!("finding the current directory for a relative -v: {e}"))?;
    Ok(given
        .iter()
        .map(|v| crate::runtime::spec::absolute_volume(v, &cwd))
        .collect())
}

fn create_request(a: &CreateArgs) -> anyhow::Result<pb::CreateRequest> {
    let mut profiles = HashMap::new();
    for o in &a.security_opt {
        if let Some(p) = o
            .strip_prefix("seccomp=")
            .or_else(|| o.strip_prefix("seccomp:"))
        {
            if p != "unconfined" {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("reading seccomp profile {p}: {e}"))?;
                profiles.insert(p.to_string(), text);
            }
        }
    }
    let mut labels = HashMap::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let (has_entrypoint, entrypoint) = match &a.entrypoint {
        Some(e) if e.is_empty() => (true, vec![]),
        Some(e) => (true, vec![e.clone()]),
        None => (false, vec![]),
    };
    Ok(pb::CreateRequest {
        image: a.image.clone(),
        name: a.name.clone().unwrap_or_default(),
        args: a.args.clone(),
        has_entrypoint,
        entrypoint,
        env: env_list(a)?,
        workdir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        read_only: a.read_only,
        tty: a.tty,
        stdin: a.interactive,
        volumes: volumes(&a.volume)?,
        tmpfs: a.tmpfs.clone(),
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        security_opt: a.security_opt.clone(),
        seccomp_profiles: profiles,
        runtime: a.runtime.clone().unwrap_or_default(),
        snapshotter: a.snapshotter.clone().unwrap_or_default(),
        labels,
        auto_remove: a.rm,
        network: a.network.clone(),
        publish: a.publish.clone(),
        restart: a.restart.clone(),
        port_driver: a.port_driver.clone().unwrap_or_default(),
        publish_all: a.publish_all,
        init: a.init,
        group_add: a.group_add.clone(),
        ulimits: a.ulimit.clone(),
    })
}

/// Pulls `image` when the policy asks for it.
async fn ensure_image(c: &Client, image: &str, policy: PullPolicy) -> anyhow::Result<()> {
    let mut ic = ipb::images_client::ImagesClient::new(c.channel.clone());
    let have = ic
        .get(c.req(ipb::GetImageRequest {
            name: image.to_string(),
            ..Default::default()
        }))
        .await
        .is_ok();
    let pull = match policy {
        PullPolicy::Always => true,
        PullPolicy::Missing => !have,
        PullPolicy::Never if !have => {
            anyhow::bail!("image {image:?} is not here and --pull never forbids pulling it: `nook pull {image}` first")
        }
        PullPolicy::Never => false,
    };
    if !pull {
        return Ok(());
    }
    eprintln!("Unable to find image '{image}' locally, pulling");
    let mut s = ic
        .pull(c.req(ipb::PullRequest {
            reference: image.to_string(),
            platform: String::new(),
            all_platforms: false,
        }))
        .await
        .or_fail()?;
    loop {
        match s.message().await {
            Ok(Some(ev)) if ev.kind == "done" => {
                eprintln!("{}: pulled {}", ev.name, ev.digest);
                return Ok(());
            }
            Ok(Some(_)) => {}
            Ok(None) => anyhow::bail!("pull of {image} ended without a result"),
            Err(e) => anyhow::bail!("{}", status_message(&e)),
        }
    }
}

/// Puts the terminal in raw mode until dropped.
struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    fn enable() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                s,
            );
        }
    }
}

fn term_size() -> Option<(u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [1, 0, 2] {
        // SAFETY: TIOCGWINSZ writes a `winsize` into the valid pointer.
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_col > 0 {
            return Some((ws.ws_col as u32, ws.ws_row as u32));
        }
    }
    None
}

/// What the I/O loop sends: stdin data, stdin closed, a new window size.
enum In {
    Data(Vec<u8>),
    Close,
    Size(u32, u32),
}

/// Streams stdin (if `stdin`), window sizes (if `tty`) and, without a tty, forwards SIGINT /
/// SIGTERM / SIGHUP as kills of the container (`kill_target`). Returns the exit code.
async fn interact(
    c: &Client,
    mut out: tonic::Streaming<pb::Output>,
    tx: mpsc::Sender<In>,
    stdin: bool,
    tty: bool,
    kill_target: Option<String>,
) -> anyhow::Result<i32> {
    let _raw = (tty && std::io::stdin().is_terminal()).then(RawMode::enable);
    if tty {
        if let Some((w, h)) = term_size() {
            let _ = tx.send(In::Size(w, h)).await;
        }
        let txw = tx.clone();
        tokio::spawn(async move {
            let Ok(mut sig) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while sig.recv().await.is_some() {
                if let Some((w, h)) = term_size() {
                    if txw.send(In::Size(w, h)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    if stdin {
        // a plain thread, not tokio's blocking pool: a read that never returns (a terminal)
        // must not keep the runtime from shutting down when the container has exited
        let txs = tx.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut inp = std::io::stdin().lock();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match inp.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = txs.blocking_send(In::Close);
                        return;
                    }
                    Ok(n) => {
                        if txs.blocking_send(In::Data(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    if let (false, Some(id)) = (tty, kill_target) {
        let c2 = c.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut i), Ok(mut t), Ok(mut h)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            loop {
                let sig = tokio::select! {
                    _ = i.recv() => libc::SIGINT,
                    _ = t.recv() => libc::SIGTERM,
                    _ = h.recv() => libc::SIGHUP,
                };
                let _ = client(&c2)
                    .kill(c2.req(pb::KillRequest {
                        id: id.clone(),
                        signal: sig,
                        all: false,
                    }))
                    .await;
            }
        });
    }
    let mut so = std::io::stdout();
    let mut se = std::io::stderr();
    loop {
        match out.message().await {
            Ok(Some(m)) => {
                if !m.stdout.is_empty() {
                    let _ = so.write_all(&m.stdout);
                    let _ = so.flush();
                }
                if !m.stderr.is_empty() {
                    let _ = se.write_all(&m.stderr);
                    let _ = se.flush();
                }
                if m.exited {
                    return Ok(m.exit_code);
                }
            }
            Ok(None) => anyhow::bail!("the output stream ended before the container's exit"),
            Err(e) => anyhow::bail!("{}", status_message(&e)),
        }
    }
}

/// Sends terminal input (data, end of stdin, window sizes) to nookd as request messages made by
/// `msg` (attach and exec use different ones), then keeps the request stream open until the
/// output ends.
fn forward_input<M: Send + 'static>(
    mut rx: mpsc::Receiver<In>,
    otx: mpsc::Sender<M>,
    msg: fn(In) -> M,
) {
    tokio::spawn(async move {
        while let Some(i) = rx.recv().await {
            if otx.send(msg(i)).await.is_err() {
                return;
            }
        }
        otx.closed().await;
    });
}

fn code(n: i32) -> ExitCode {
    ExitCode::from(n.clamp(0, 255) as u8)
}

/// Attaches to a container (starting it with `start`); returns its exit code.
async fn attach(c: &Client, id: &str, stdin: bool, tty: bool, start: bool) -> anyhow::Result<i32> {
    let (tx, rx) = mpsc::channel::<In>(64);
    let first = pb::AttachInput {
        id: id.to_string(),
        stdin,
        start,
        ..Default::default()
    };
    let (otx, orx) = mpsc::channel::<pb::AttachInput>(64);
    otx.send(first).await.ok();
    forward_input(rx, otx, |i| match i {
        In::Data(data) => pb::AttachInput {
            data,
            ..Default::default()
        },
        In::Close => pb::AttachInput {
            close_stdin: true,
            ..Default::default()
        },
        In::Size(width, height) => pb::AttachInput {
            width,
            height,
            ..Default::default()
        },
    });
    let out = client(c)
        .attach(c.req(ReceiverStream::new(orx)))
        .await
        .or_fail()?;
    interact(c, out, tx, stdin, tty, Some(id.to_string())).await
}

pub async fn run(ctx: &Ctx, a: RunArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    ensure_image(&c, &a.create.image, a.create.pull).await?;
    let req = create_request(&a.create)?;
    let created = client(&c).create(c.req(req)).await.or_fail()?;
    if a.detach {
        client(&c)
            .start(c.req(pb::ContainerRef {
                id: created.id.clone(),
            }))
            .await
            .or_fail()?;
        println!("{}", created.id);
        return Ok(ExitCode::SUCCESS);
    }
    // with --rm, nookd answers the exit once the container is removed
    let res = attach(&c, &created.id, a.create.interactive, a.create.tty, true).await;
    Ok(code(res?))
}

pub async fn create(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    ensure_image(&c, &a.image, a.pull).await?;
    let created = client(&c)
        .create(c.req(create_request(&a)?))
        .await
        .or_fail()?;
    println!("{}", created.id);
    Ok(ExitCode::SUCCESS)
}

async fn list(c: &Client, all: bool) -> anyhow::Result<Vec<pb::Container>> {
    Ok(client(c)
        .list(c.req(pb::ListRequest { all }))
        .await
        .or_fail()?
        .containers)
}

fn container_json(x: &pb::Container) -> serde_json::Value {
    serde_json::json!({
        "id": x.id, "name": x.name, "image": x.image, "command": x.command,
        "created_at": x.created_at, "status": x.status, "exit_code": x.exit_code,
        "pid": x.pid, "started_at": x.started_at, "finished_at": x.finished_at,
        "runtime": x.runtime, "snapshotter": x.snapshotter, "labels": x.labels,
        "restart_policy": x.restart_policy, "restart_count": x.restart_count,
        "ip": x.ip, "ports": x.ports.iter().map(|p| serde_json::json!({
            "host_ip": p.host_ip, "host_port": p.host_port,
            "container_port": p.container_port, "protocol": p.protocol,
        })).collect::<Vec<_>>(),
    })
}

/// Published ports as docker shows them: `0.0.0.0:18080->80/tcp`.
fn ports_text(x: &pb::Container) -> String {
    x.ports
        .iter()
        .map(|p| {
            if p.host_port == 0 {
                format!("{}/{}", p.container_port, p.protocol)
            } else if p.host_ip.contains(':') {
                format!(
                    "[{}]:{}->{}/{}",
                    p.host_ip, p.host_port, p.container_port, p.protocol
                )
            } else {
                format!(
                    "{}:{}->{}/{}",
                    p.host_ip, p.host_port, p.container_port, p.protocol
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn ps(ctx: &Ctx, a: PsArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let cs = list(&c, a.all).await?;
    if a.quiet {
        for x in &cs {
            println!(
                "{}",
                if a.no_trunc {
                    x.id.clone()
                } else {
                    short(&x.id)
                }
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.format == Format::Json {
        output::json(&cs.iter().map(container_json).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = cs
        .iter()
        .map(|x| {
            let mut cmd = x.command.join(" ");
            if !a.no_trunc && cmd.chars().count() > 30 {
                cmd = format!("{}…", cmd.chars().take(29).collect::<String>());
            }
            let image = crate::image::Reference::parse(&x.image)
                .map(|r| r.familiar())
                .unwrap_or_else(|_| x.image.clone());
            vec![
                if a.no_trunc {
                    x.id.clone()
                } else {
                    short(&x.id)
                },
                image,
                format!("\"{cmd}\""),
                output::age(x.created_at),
                status_text(x),
                ports_text(x),
                x.name.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn exec(ctx: &Ctx, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let (tx, rx) = mpsc::channel::<In>(64);
    let (otx, orx) = mpsc::channel::<pb::ExecInput>(64);
    otx.send(pb::ExecInput {
        id: a.container.clone(),
        args: a.args.clone(),
        env: a.env.clone(),
        user: a.user.clone().unwrap_or_default(),
        workdir: a.workdir.clone().unwrap_or_default(),
        tty: a.tty,
        stdin: a.interactive,
        ..Default::default()
    })
    .await
    .ok();
    forward_input(rx, otx, |i| match i {
        In::Data(data) => pb::ExecInput {
            data,
            ..Default::default()
        },
        In::Close => pb::ExecInput {
            close_stdin: true,
            ..Default::default()
        },
        In::Size(width, height) => pb::ExecInput {
            width,
            height,
            ..Default::default()
        },
    });
    let out = match client(&c).exec(c.req(ReceiverStream::new(orx))).await {
        Ok(o) => o.into_inner(),
        Err(s) => {
            let msg = status_message(&s);
            eprintln!("nook: {msg}");
            // docker's codes: 127 command not found, 126 cannot be run
            let n = if msg.contains("not found") || msg.contains("no such file") {
                127
            } else if msg.contains("permission denied") {
                126
            } else {
                1
            };
            return Ok(code(n));
        }
    };
    let n = interact(&c, out, tx, a.interactive, a.tty, None).await?;
    Ok(code(n))
}

pub async fn logs(ctx: &Ctx, a: LogsArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let tail: i64 = if a.tail == "all" {
        -1
    } else {
        a.tail
            .parse()
            .map_err(|_| anyhow::anyhow!("--tail takes a number or \"all\""))?
    };
    let mut s = client(&c)
        .logs(c.req(pb::LogsRequest {
            id: a.container.clone(),
            follow: a.follow,
            tail,
        }))
        .await
        .or_fail()?;
    let mut so = std::io::stdout();
    let mut se = std::io::stderr();
    loop {
        match s.message().await {
            Ok(Some(l)) => {
                let w: &mut dyn Write = if l.stream == "stderr" {
                    &mut se
                } else {
                    &mut so
                };
                if a.timestamps {
                    let _ = write!(w, "{} ", l.time);
                }
                let _ = w.write_all(&l.data);
                let _ = w.flush();
            }
            Ok(None) => break,
            Err(e) => anyhow::bail!("{}", status_message(&e)),
        }
    }
    Ok(ExitCode::SUCCESS)
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
                }))
                .await
                .or_fail()?;
            Ok(Some(id))
        }
    })
    .await
}

pub async fn inspect(ctx: &Ctx, a: ManyArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let mut out = Vec::new();
    let mut failed = false;
    for id in &a.containers {
        match client(&c)
            .inspect(c.req(pb::ContainerRef { id: id.clone() }))
            .await
        {
            Ok(r) => out.push(serde_json::from_str::<serde_json::Value>(
                &r.into_inner().json,
            )?),
            Err(s) => {
                eprintln!("nook: {}", status_message(&s));
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

pub async fn containers(ctx: &Ctx, cmd: ContainersCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ContainersCmd::Ls(mut a) => {
            a.all = true;
            ps(ctx, a).await
        }
        ContainersCmd::Info(a) => inspect(ctx, a).await,
        ContainersCmd::Rm(a) => rm(ctx, a).await,
        ContainersCmd::Create(a) => create(ctx, *a).await,
        ContainersCmd::Prune(a) => super::prune::containers(ctx, a).await,
    }
}

pub async fn tasks(ctx: &Ctx, cmd: TasksCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TasksCmd::Ls => {
            let c = ctx.connect().await?;
            let cs = list(&c, false).await?;
            let rows: Vec<Vec<String>> = cs
                .iter()
                .map(|x| vec![x.name.clone(), x.pid.to_string(), x.status.to_uppercase()])
                .collect();
            output::table(&["TASK", "PID", "STATUS"], &rows);
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
