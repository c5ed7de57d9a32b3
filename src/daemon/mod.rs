//! nookd's life after bootstrap: open the stores, start the network link, report plugins, serve
//! the API on the unix socket, and shut down on SIGTERM/SIGINT through one path.

pub mod gc;
pub mod init;
pub mod metrics;
pub mod pull;
pub mod recover;
pub mod sysinfo;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bootstrap::slirp;
use crate::config::{Config, Paths};
use crate::error::{Error, Result};
use crate::events::{Bus, Publisher};
use crate::metadata::Store;
use crate::plugins::{self, Registry};
use crate::runtime::containers::{Deps, Manager};
use crate::services;

/// How long nookd's shutdown waits for open API streams (attach, logs -f) before closing them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything a request handler may need, shared as `Arc<Daemon>`.
pub struct Daemon {
    pub config: Config,
    pub paths: Paths,
    pub store: Arc<Store>,
    /// Blobs by digest, shared by all namespaces.
    pub content: Arc<crate::content::ContentStore>,
    /// The snapshotters that work here, with the default chosen.
    pub snapshotters: Arc<crate::snapshot::Snapshotters>,
    pub plugins: Registry,
    /// Garbage collection: lock, scheduler policy, counters.
    pub gc: Arc<gc::GcState>,
    pub started: Instant,
    /// The pause process holding the user, mount and containers' network namespaces.
    pub pause_pid: i32,
    /// The user's uid/gid on the host.
    pub host_uid: u32,
    pub host_gid: u32,
    /// The network link (slirp4netns/pasta), if any.
    pub link: std::sync::Mutex<Option<slirp::Link>>,
    /// Container networks: bridges, per-container namespaces, IPAM, published ports.
    pub network: Arc<crate::network::Manager>,
    /// The event bus (`nook events`), owned here; subsystems hold [`Publisher`]s on it.
    pub bus: Arc<Bus>,
    /// The daemon's own publisher (namespaces, the API's container events).
    pub events: Publisher,
    /// Garbage collection now and by the scheduler; disk use.
    pub collector: Arc<services::Gc>,
    /// Images: in-use, prune.
    pub images: Arc<services::Images>,
    /// Named volumes.
    pub volumes: Arc<services::Volumes>,
    /// Containers and tasks, or why they cannot run here (nook-shim missing): see
    /// [`Daemon::containers`].
    containers: std::result::Result<Arc<services::Containers>, String>,
    /// The cgroups delegated to the user, with nookd in its own (resource limits, stats,
    /// pause).
    pub cgroups: Arc<crate::cgroup::Cgroups>,
}

/// Facts from bootstrap handed to [`run`].
pub struct Boot {
    pub pause_pid: i32,
    /// The network link started (or adopted) in the host's user namespace.
    pub link: Result<slirp::Link>,
    /// Its process when we started it (to be reaped).
    pub link_child: Option<std::process::Child>,
    pub host_uid: u32,
    pub host_gid: u32,
}

impl Daemon {
    /// The containers' manager, or why there is none.
    pub fn containers(&self) -> Result<&Arc<Manager>> {
        self.container_service().map(|s| s.manager())
    }

    /// The containers and tasks service, or why there is none.
    pub fn container_service(&self) -> Result<&Arc<services::Containers>> {
        self.containers
            .as_ref()
            .map_err(|e| Error::Precondition(e.clone()))
    }

    /// The path of the containers' network namespace.
    pub fn netns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.pause_pid)
    }

    /// The name of the link driver in use, or `none`.
    pub fn network_driver(&self) -> String {
        self.link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|l| l.driver.clone())
            .unwrap_or_else(|| "none".into())
    }
}

/// Counts live shims recorded under `<state>/tasks/**/shim.pid`.
pub fn live_shims(state: &Path) -> usize {
    fn walk(dir: &Path, n: &mut usize, depth: u32) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|f| f == "shim.pid") {
                let alive = std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if alive {
                    *n += 1;
                }
            } else if depth < 4 && e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, n, depth + 1);
            }
        }
    }
    let mut n = 0;
    walk(&state.join("tasks"), &mut n, 0);
    n
}

/// Starts (or adopts) the network link. Runs in the host's user namespace, before nookd joins
/// its own (see [`crate::bootstrap::enter`]).
pub fn start_link(
    cfg: &crate::config::NetworkConfig,
    state: &Path,
    pause_pid: i32,
) -> (Result<slirp::Link>, Option<std::process::Child>) {
    if cfg.driver == "none" {
        return (
            Err(Error::Precondition(
                "disabled ([network] driver = \"none\")".into(),
            )),
            None,
        );
    }
    match slirp::adopt(state) {
        Some(l) => (Ok(l), None),
        None => match slirp::start(cfg, state, pause_pid) {
            Ok((l, c)) => (Ok(l), Some(c)),
            Err(e) => (Err(e), None),
        },
    }
}

fn report_link(d: &Daemon, link: Result<slirp::Link>) {
    match link {
        Ok(l) => {
            tracing::info!(driver = %l.driver, pid = l.pid, "network link up");
            let mut ex = std::collections::BTreeMap::new();
            ex.insert("driver".into(), l.driver.clone());
            ex.insert("pid".into(), l.pid.to_string());
            ex.insert("mtu".into(), d.config.network.mtu.to_string());
            d.plugins.set_with(plugins::NETWORK, "link", Ok(()), ex);
            *d.link.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
        }
        Err(e) if d.config.network.driver == "none" => {
            d.plugins.set(plugins::NETWORK, "link", Err(e.to_string()));
        }
        Err(e) => {
            tracing::error!("network link: {e}");
            d.plugins.error(plugins::NETWORK, "link", e.to_string());
        }
    }
}

/// Watches the network link; if it dies, says so in the plugin status and the log.
async fn supervise_link(d: Arc<Daemon>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let dead = {
            let l = d.link.lock().unwrap_or_else(|e| e.into_inner());
            l.as_ref()
                .filter(|l| !Path::new(&format!("/proc/{}", l.pid)).exists())
                .cloned()
        };
        if let Some(l) = dead {
            let msg = format!(
                "the network link ({} pid {}) died; containers have no outside network until nookd restarts (`systemctl --user restart nook`); see {}",
                l.driver,
                l.pid,
                d.paths.state.join(format!("{}.log", l.driver)).display()
            );
            tracing::error!("{msg}");
            d.plugins.error(plugins::NETWORK, "link", msg);
            *d.link.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

fn probe_runtimes(d: &Daemon) {
    // crun refuses hybrid cgroup hosts; hide the v2 controllers in nookd's own mount namespace
    // (shared with the shims it starts), never on the host.
    let hybrid = crate::runtime::plugin::hide_hybrid_controllers(&d.paths.state.join("empty"));
    match &hybrid {
        Ok(true) => tracing::info!(
            "hid {} in nookd's mount namespace so crun accepts this hybrid cgroup host",
            crate::runtime::plugin::HYBRID_CONTROLLERS
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    for (name, rt) in &d.config.runtimes {
        let res = match crate::bootstrap::preflight::which(&rt.path) {
            None => Err(format!(
                "{} not found in PATH: install it (`sudo apt-get install {name}`) or set [runtimes.{name}] path",
                rt.path
            )),
            Some(p) => {
                let mut ex = std::collections::BTreeMap::new();
                ex.insert("path".into(), p.display().to_string());
                let blocked = crate::runtime::plugin::is_crun(&p)
                    .then(|| {
                        crate::runtime::plugin::crun_blocker(Path::new(
                            crate::runtime::plugin::HYBRID_CONTROLLERS,
                        ))
                    })
                    .flatten();
                d.plugins.set_with(plugins::RUNTIME, name, blocked.map_or(Ok(()), Err), ex);
                continue;
            }
        };
        d.plugins.set(plugins::RUNTIME, name, res);
    }
}

static NOTIFY_SOCKET: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();

/// Takes `$NOTIFY_SOCKET` (set by systemd for Type=notify) out of the environment and keeps it
/// for [`sd_notify`]. Call it at the start of `main`, while single-threaded: a NOTIFY_SOCKET
/// inherited by shims makes runc create its own notify socket under the runtime root (a path
/// too long for a unix socket there: every `nook run` under systemd failed with "listen
/// unixgram …/notify/notify.sock: bind: invalid argument") and wait for READY from the
/// container.
pub fn take_notify_socket() {
    let v = std::env::var_os("NOTIFY_SOCKET");
    if v.is_some() {
        std::env::remove_var("NOTIFY_SOCKET");
    }
    let _ = NOTIFY_SOCKET.set(v);
}

/// Tells systemd (Type=notify) that nookd is ready, if it was started by systemd.
pub fn sd_notify(msg: &str) {
    let Some(path) = NOTIFY_SOCKET
        .get_or_init(|| std::env::var_os("NOTIFY_SOCKET"))
        .clone()
    else {
        return;
    };
    let path = path.to_string_lossy().to_string();
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let res = if let Some(abs) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &path)
    };
    if let Err(e) = res {
        tracing::warn!("sd_notify: {e}");
    }
}

/// Builds the daemon: opens the stores, hands each subsystem its dependencies (the event
/// publisher among them), starts them and the background loops (link supervision, GC,
/// metrics). Called inside the namespaces, on a tokio runtime; the API is served over the
/// result by the API layer (`api::serve`, above this module), and [`stop`] ends it.
pub async fn start(config: Config, paths: Paths, boot: Boot) -> Result<Arc<Daemon>> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&paths.root)
        .map_err(|e| Error::io(format!("creating {}", paths.root.display()), e))?;
    let store = Arc::new(Store::open(&paths.root.join("meta.redb"))?);
    let bus = Arc::new(Bus::default());
    let events = Publisher::new(bus.clone());
    let content = crate::content::ContentStore::open(&paths.root.join("content"), events.clone())?;
    let snapshotters = {
        let (root, store, configured, events) = (
            paths.root.clone(),
            store.clone(),
            config.snapshotter.default.clone(),
            events.clone(),
        );
        tokio::task::spawn_blocking(move || {
            crate::snapshot::Snapshotters::new(&root, store, &configured, events)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))
        .and_then(|r| r.map(Arc::new))?
    };
    let gc_state = Arc::new(gc::GcState::new(&config.gc));
    let network = Arc::new(crate::network::Manager::new(
        store.clone(),
        crate::network::manager::settings_for(
            &config.network,
            boot.pause_pid,
            &paths.state,
            boot.link
                .as_ref()
                .map(|l| l.driver.as_str())
                .unwrap_or("none"),
        ),
        events.clone(),
    ));
    let cgroups = Arc::new(crate::cgroup::Cgroups::setup(
        boot.host_uid,
        &paths.state,
        std::process::id() as i32,
    ));
    tracing::info!("cgroups: {}", cgroups.describe());
    let volume_store = Arc::new(crate::volumes::Volumes::new(store.clone(), &paths.root));
    let orphans = volume_store.remove_orphans();
    if orphans > 0 {
        tracing::info!("volumes: removed {orphans} directories whose volume had been removed");
    }
    let volumes = Arc::new(services::Volumes::new(
        store.clone(),
        volume_store.clone(),
        events.clone(),
    ));
    let containers = Manager::new(Deps {
        config: config.clone(),
        paths: paths.clone(),
        store: store.clone(),
        content: content.clone(),
        snapshotters: snapshotters.clone(),
        network: network.clone(),
        gc: gc_state.clone(),
        events: events.clone(),
        cgroups: cgroups.clone(),
        mounts: Arc::new(crate::snapshot::mount::RealMounter),
        volumes: volume_store,
    })
    .map_err(|e| e.to_string());
    let collector = Arc::new(services::Gc::new(
        store.clone(),
        content.clone(),
        snapshotters.clone(),
        paths.clone(),
        gc_state.clone(),
        Box::new(|took| metrics::global().gc_run(took)),
    ));
    let images = Arc::new(services::Images::new(
        store.clone(),
        content.clone(),
        events.clone(),
        collector.clone(),
    ));
    let containers = containers.map(|m| {
        Arc::new(services::Containers::new(
            m,
            collector.clone(),
            events.clone(),
        ))
    });
    if let Err(e) = &containers {
        tracing::error!("containers: {e}");
    }
    let d = Arc::new(Daemon {
        config,
        paths,
        store,
        content,
        snapshotters,
        gc: gc_state,
        plugins: Registry::default(),
        started: Instant::now(),
        pause_pid: boot.pause_pid,
        host_uid: boot.host_uid,
        host_gid: boot.host_gid,
        link: std::sync::Mutex::new(None),
        network,
        bus,
        events,
        collector,
        images,
        containers,
        cgroups,
        volumes,
    });
    d.plugins.set(plugins::METADATA, "redb", Ok(()));
    d.plugins.set(plugins::CONTENT, "content", Ok(()));

    report_link(&d, boot.link);
    if let Some(mut c) = boot.link_child {
        // A plain thread, not spawn_blocking: dropping the runtime waits for blocking tasks, and
        // the link outlives nookd while containers run, so a restart hung until systemd's stop
        // timeout (90 s) killed nookd.
        std::thread::spawn(move || {
            let _ = c.wait();
        });
    }
    probe_runtimes(&d);
    {
        let d2 = d.clone();
        match tokio::task::spawn_blocking(move || recover::recover(&d2)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("start-up recovery: {e}"),
            Err(e) => tracing::error!("start-up recovery panicked: {e}"),
        }
    }
    init::init_subsystems(&d).await;
    tokio::spawn(supervise_link(d.clone()));
    tokio::spawn(gc::scheduler(d.clone()));
    d.plugins.set(plugins::GC, "scheduler", Ok(()));

    if !d.config.metrics.address.is_empty() {
        metrics::add_disk_refresher(&metrics::global(), &d.paths.root, Duration::from_secs(15));
        metrics::add_container_refresher(&metrics::global(), &d);
        metrics::start(&d.config.metrics.address).await?;
    }
    tracing::info!(
        ready_ms = t0.elapsed().as_millis() as u64,
        "subsystems started"
    );
    Ok(d)
}

/// Stops the subsystems after the API closed; takes the network link and the pause process
/// down too when no container runs.
pub async fn stop(d: &Arc<Daemon>) -> Result<()> {
    d.network.shutdown();
    if live_shims(&d.paths.state) == 0 {
        // nothing runs in our namespaces: take them down with us
        slirp::stop(&d.paths.state);
        crate::bootstrap::stop_pause(&d.paths.state);
        tracing::info!("no containers running: stopped the network link and the pause process");
    } else {
        tracing::info!(
            "containers still run: kept their namespaces and network for the next nookd"
        );
    }
    Ok(())
}

/// Binds an API socket (nook's, the Docker API's): `<dir>` 0700, socket 0600. A stale socket is removed (we hold the lock).
pub fn bind_socket(address: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = address.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let _ = std::fs::remove_file(address);
    // umask makes the socket 0600 from birth, so there is no window where others may connect
    use nix::sys::stat::{umask, Mode};
    let old = umask(Mode::from_bits_truncate(0o177));
    let l = tokio::net::UnixListener::bind(address);
    umask(old);
    let l = l.map_err(|e| Error::io(format!("binding the API socket {}", address.display()), e))?;
    std::fs::set_permissions(address, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("chmod socket", e))?;
    Ok(l)
}
