//! Running processes and talking to them: `nook run`, `create`, `exec`, attaching (the
//! terminal, stdin, window sizes, signals) and `logs`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{client, code, CreateArgs, ExecArgs, LogsArgs, PullPolicy, RunArgs};
use crate::cli::client::{status_message, StatusExt};
use crate::cli::output;
use crate::cli::{Client, Ctx};
use crate::proto::containers as pb;
use crate::proto::images as ipb;

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
    let labels = output::parse_labels(&a.label)?;
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
        resources: a.limits.resources.to_pb(),
        shm_size: a.limits.shm_size.unwrap_or(0),
        oom_score_adj: a.limits.oom_score_adj,
        publish_all: a.publish_all,
        init: a.init,
        group_add: a.group_add.clone(),
        ulimits: a.ulimit.clone(),
        network_aliases: a.network_alias.clone(),
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
            let mut buf = vec![0u8; 64 * 1024];
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

/// Attaches to a container (starting it with `start`); returns its exit code.
pub(super) async fn attach(
    c: &Client,
    id: &str,
    stdin: bool,
    tty: bool,
    start: bool,
) -> anyhow::Result<i32> {
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

/// Refuses `-it` when this client's stdin is not a terminal, as docker does: the container
/// would wait on a terminal nobody types into (and `echo hi | nook run -it ...` never ended).
fn check_tty(interactive: bool, tty: bool) -> anyhow::Result<()> {
    if interactive && tty && !std::io::stdin().is_terminal() {
        anyhow::bail!("the input device is not a TTY (drop -t to pipe input into the container)");
    }
    Ok(())
}

/// `nook attach`: the output of a running container from now on, and its exit code; stdin
/// too when the container keeps it open (`-i`) unless `--no-stdin`. Several clients may attach
/// at once: each gets every byte, and the slowest sets the pace.
pub async fn attach_cmd(ctx: &Ctx, a: super::AttachArgs) -> anyhow::Result<ExitCode> {
    let c = ctx.connect().await?;
    let got = client(&c)
        .get(c.req(pb::ContainerRef {
            id: a.container.clone(),
        }))
        .await
        .or_fail()?;
    if got.status != "running" && got.status != "paused" {
        anyhow::bail!(
            "container {} is not running (it is {}): `nook start -a {}` starts it attached",
            got.name,
            got.status,
            got.name
        );
    }
    let stdin = got.stdin && !a.no_stdin;
    check_tty(stdin, got.tty)?;
    let n = attach(&c, &got.id, stdin, got.tty, false).await?;
    Ok(code(n))
}

pub async fn run(ctx: &Ctx, a: RunArgs) -> anyhow::Result<ExitCode> {
    if !a.detach {
        check_tty(a.create.interactive, a.create.tty)?;
    }
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

pub async fn exec(ctx: &Ctx, a: ExecArgs) -> anyhow::Result<ExitCode> {
    check_tty(a.interactive, a.tty)?;
    let c = ctx.connect().await?;
    let (tx, rx) = mpsc::channel::<In>(64);
    let (otx, orx) = mpsc::channel::<pb::ExecInput>(64);
    let size = if a.tty {
        term_size().unwrap_or_default()
    } else {
        (0, 0)
    };
    otx.send(pb::ExecInput {
        id: a.container.clone(),
        args: a.args.clone(),
        env: a.env.clone(),
        user: a.user.clone().unwrap_or_default(),
        workdir: a.workdir.clone().unwrap_or_default(),
        tty: a.tty,
        stdin: a.interactive,
        // the terminal's size from the start (the process may ask before a resize arrives)
        width: size.0,
        height: size.1,
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
    let mut c = ctx.connect().await?;
    let tail: i64 = if a.tail == "all" {
        -1
    } else {
        a.tail
            .parse()
            .map_err(|_| anyhow::anyhow!("--tail takes a number or \"all\""))?
    };
    let mut so = std::io::stdout();
    let mut se = std::io::stderr();
    // the log's offset after the last line printed: where a cut stream goes on
    let mut resume_at = 0u64;
    loop {
        let res = client(&c)
            .logs(c.req(pb::LogsRequest {
                id: a.container.clone(),
                follow: a.follow,
                tail,
                resume_at,
                merge: !a.timestamps,
            }))
            .await;
        let mut s = match res {
            Ok(s) => s.into_inner(),
            Err(e) if a.follow && connection_lost(&e) => {
                c = reconnect(ctx).await?;
                continue;
            }
            Err(e) => anyhow::bail!("{}", status_message(&e)),
        };
        loop {
            match s.message().await {
                Ok(Some(l)) if l.end => return Ok(ExitCode::SUCCESS),
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
                    if l.offset == 0 {
                        // a nookd that cannot resume: its stream's end is the end
                        resume_at = u64::MAX;
                    } else if resume_at != u64::MAX {
                        resume_at = l.offset;
                    }
                }
                Ok(None) if resume_at == u64::MAX => return Ok(ExitCode::SUCCESS),
                // cut without its end: nookd stopped (a restart)
                Ok(None) => break,
                Err(e) if connection_lost(&e) && resume_at != u64::MAX => break,
                Err(e) => anyhow::bail!("{}", status_message(&e)),
            }
        }
        if !a.follow {
            anyhow::bail!("lost the connection to nookd (did it stop?): the output is incomplete");
        }
        // nookd restarted: wait for the new one and go on from the last line printed
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        c = reconnect(ctx).await?;
    }
}

/// How long `logs -f` waits for nookd to come back after losing it.
const RECONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a call failed because the connection to nookd went away (nookd stopped), rather
/// than with an answer of nookd's.
fn connection_lost(e: &tonic::Status) -> bool {
    let m = e.message().to_ascii_lowercase();
    matches!(
        e.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
    ) && [
        "h2 protocol",
        "transport",
        "connection",
        "broken pipe",
        "stream",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// Connects again to a nookd that went away, waiting up to [`RECONNECT_WAIT`] for it.
async fn reconnect(ctx: &Ctx) -> anyhow::Result<Client> {
    let t0 = std::time::Instant::now();
    loop {
        match ctx.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if t0.elapsed() >= RECONNECT_WAIT => anyhow::bail!(
                "nookd stopped while following the logs and was not back within {} s ({e:#})",
                RECONNECT_WAIT.as_secs()
            ),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}
