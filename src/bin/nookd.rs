//! nookd: the per-user nook daemon. See `nook::bootstrap` for how it gets its namespaces.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use nook::config::{Config, LogFormat};

/// The per-user nook daemon: content, snapshots, containers, networks — without root.
#[derive(Parser, Debug)]
#[command(name = "nookd", version = nook::VERSION)]
struct Args {
    /// Config file (default: $XDG_CONFIG_HOME/nook/config.toml).
    #[arg(long, env = "NOOK_CONFIG")]
    config: Option<PathBuf>,
    /// Persistent state directory (default: $XDG_DATA_HOME/nook).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Runtime state directory (default: $XDG_RUNTIME_DIR/nook).
    #[arg(long)]
    state: Option<PathBuf>,
    /// API socket (default: <state>/nook.sock).
    #[arg(long)]
    address: Option<PathBuf>,
    /// Docker Engine API socket (default: <state>/docker.sock; `[docker] enabled = false` turns it off).
    #[arg(long)]
    docker_address: Option<PathBuf>,
    /// Log level (overrides [debug] level).
    #[arg(long)]
    log_level: Option<String>,
    /// Shorthand for --log-level debug.
    #[arg(long)]
    debug: bool,
    /// Check the configuration and the prerequisites, print what nookd would use, and exit.
    #[arg(long)]
    check: bool,
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("nookd: {e}");
    ExitCode::FAILURE
}

/// Adds the sbin directories to PATH when they are missing: an ordinary user's shell on
/// Debian has none, and nft, ip and the like live there (Debian and Fedora alike).
fn path_with_sbin() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|x| x == std::path::Path::new(d)) {
            dirs.push(d.into());
        }
    }
    if let Ok(p) = std::env::join_paths(dirs) {
        std::env::set_var("PATH", p);
    }
}

fn main() -> ExitCode {
    // before any thread exists (set_var is only sound then)
    path_with_sbin();
    // before any thread exists: keep NOTIFY_SOCKET for nookd only, not for shims and runc
    nook::daemon::take_notify_socket();
    // the host's limits, as `nook system info` reports them: inside nook's user namespace the
    // same files show that namespace's own limits
    nook::daemon::sysinfo::capture_host_sysctls();
    let args = Args::parse();
    if nix::unistd::getuid().is_root() {
        return fail("nookd is running as root: rootful mode is not supported yet; run nookd as an ordinary user (systemctl --user start nook)");
    }
    let cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let level = if args.debug {
        "debug".to_string()
    } else {
        args.log_level.clone().unwrap_or(cfg.debug.level.clone())
    };
    let filter = tracing_subscriber::EnvFilter::try_new(format!("nook={level},nookd={level},warn"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let sub = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // colour codes only for a person at a terminal, not in log files
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cfg.debug.format {
        LogFormat::Json => sub.json().init(),
        LogFormat::Text => sub.init(),
    }
    let paths = match cfg.paths(
        args.root.as_deref(),
        args.state.as_deref(),
        args.address.as_deref(),
        args.docker_address.as_deref(),
    ) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let state_from_xdg = args.state.is_none() && cfg.state.is_empty();
    let pre = match nook::bootstrap::preflight(&cfg.network.driver, state_from_xdg) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if args.check {
        println!(
            "ok: user {} (uid {}), subuid {}:{}, subgid {}:{}, root {}, state {}, socket {}",
            pre.user,
            pre.uid,
            pre.subuid.start,
            pre.subuid.count,
            pre.subgid.start,
            pre.subgid.count,
            paths.root.display(),
            paths.state.display(),
            paths.address.display()
        );
        return ExitCode::SUCCESS;
    }
    // One nookd per root and per state directory.
    let _root_lock = match nook::bootstrap::lock::lock(&paths.root, "root") {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let _state_lock = match nook::bootstrap::lock::lock(&paths.state, "state directory") {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    // Still single-threaded here: join (or create) the user and mount namespaces.
    let mut link = None;
    let entered = match nook::bootstrap::enter(&pre, &paths.state, |pause| {
        link = Some(nook::daemon::start_link(&cfg.network, &paths.state, pause));
    }) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    tracing::info!(
        pause = entered.pause_pid,
        created = entered.created,
        "entered nook's user namespace"
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("starting the async runtime: {e}")),
    };
    let (link, link_child) = link.unwrap_or_else(|| {
        (
            Err(nook::error::Error::Internal(
                "the network link was not started".into(),
            )),
            None,
        )
    });
    let boot = nook::daemon::Boot {
        pause_pid: entered.pause_pid,
        link,
        link_child,
        host_uid: pre.uid,
        host_gid: pre.gid,
    };
    let res = rt.block_on(async {
        let d = nook::daemon::start(cfg, paths, boot).await?;
        let docker = nook::docker::spawn(&d);
        if let Err(e) = &docker {
            tracing::error!("Docker API: {e}");
        }
        let served = nook::api::serve(&d).await;
        if let Ok(Some(p)) = &docker {
            let _ = std::fs::remove_file(p);
        }
        nook::daemon::stop(&d).await?;
        served
    });
    // blocking threads may wait on the network link process (it outlives nookd while
    // containers run): do not wait for them forever
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
