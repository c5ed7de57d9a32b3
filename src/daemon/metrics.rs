//! Prometheus metrics of nookd, served as text at `http://<[metrics] address>/v1/metrics`.
//!
//! The metrics live in one [`Metrics`] value (the process-wide one is [`global()`], so that any
//! subsystem can count without plumbing): counters that subsystems bump as things happen (API
//! requests and errors by method, pulls, GC runs) and gauges that are refreshed just before each
//! scrape by *refreshers* the daemon registers (containers by state, per-container restarts,
//! CPU and memory from cgroups, content and snapshot disk use). Encoding is done by the
//! `prometheus-client` crate (OpenMetrics text, which Prometheus scrapes natively).
//!
//! nookd stays in the host's network namespace, so the endpoint is reachable from the user's
//! shell: `curl 127.0.0.1:1338/v1/metrics`.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::error::{Error, Result};

/// The path the metrics are served at.
pub const PATH: &str = "/v1/metrics";

/// The content type of OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `method="/nook.v1.Namespaces/List"`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// `method=…, code="NotFound"`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodCodeLabels {
    pub method: String,
    pub code: String,
}

/// `result="ok"|"error"`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// `state="running"`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// `namespace=…, container=…`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerLabels {
    pub namespace: String,
    pub container: String,
}

/// `store="content"|"snapshots"`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: String,
}

/// What a refresher reports about one container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSample {
    pub namespace: String,
    pub id: String,
    /// created | running | paused | exited | unknown
    pub state: String,
    /// Times it was restarted, when the runtime keeps count.
    pub restarts: Option<u64>,
    /// CPU time used, when its cgroup can be read.
    pub cpu_seconds: Option<f64>,
    /// Memory in use, when its cgroup can be read.
    pub memory_bytes: Option<u64>,
    /// The rest of what `nook stats` shows, when nookd placed it in a delegated cgroup.
    pub usage: Option<ContainerUsage>,
}

/// A container's usage beyond CPU and memory (as `nook stats` shows it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerUsage {
    /// None: unlimited.
    pub memory_limit: Option<u64>,
    pub net_rx: u64,
    pub net_tx: u64,
    pub block_read: u64,
    pub block_write: u64,
    pub pids: u64,
}

type Refresher = Box<dyn Fn(&Metrics) + Send + Sync>;

/// Every metric of nookd and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    uptime: Gauge<f64, AtomicU64>,
    /// gRPC requests by method.
    pub api_requests: Family<MethodLabels, Counter>,
    /// gRPC requests that failed, by method and status code.
    pub api_errors: Family<MethodCodeLabels, Counter>,
    /// Image pulls by result.
    pub pulls: Family<ResultLabels, Counter>,
    /// Garbage collection runs.
    pub gc_runs: Counter,
    /// Garbage collection run time.
    pub gc_duration: Histogram,
    /// Containers by state (refreshed at scrape).
    pub containers: Family<StateLabels, Gauge>,
    /// Restarts per container (refreshed at scrape).
    pub container_restarts: Family<ContainerLabels, Gauge>,
    /// CPU seconds per container, where cgroups allow (refreshed at scrape).
    pub container_cpu: Family<ContainerLabels, Gauge<f64, AtomicU64>>,
    /// Memory bytes per container, where cgroups allow (refreshed at scrape).
    pub container_memory: Family<ContainerLabels, Gauge>,
    /// Memory limit, network and block I/O, processes per container, where delegated
    /// cgroups allow (refreshed at scrape), in this order.
    pub container_usage: [Family<ContainerLabels, Gauge>; 6],
    /// Disk use of the content store and the snapshots (refreshed at scrape).
    pub disk_bytes: Family<StoreLabels, Gauge>,
    refreshers: Mutex<Vec<Refresher>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide metrics (created on first use).
pub fn global() -> Arc<Metrics> {
    static G: OnceLock<Arc<Metrics>> = OnceLock::new();
    G.get_or_init(|| Arc::new(Metrics::new())).clone()
}

/// The labels of a container state; unknown states are reported as `unknown`.
const STATES: &[&str] = &["created", "running", "paused", "exited", "unknown"];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("nook");
        let info = Info::new(vec![("version".to_string(), crate::VERSION.to_string())]);
        r.register("build", "nookd's version", info);
        let uptime = Gauge::<f64, AtomicU64>::default();
        r.register_with_unit(
            "uptime",
            "Time since nookd started",
            Unit::Seconds,
            uptime.clone(),
        );
        let api_requests = Family::<MethodLabels, Counter>::default();
        r.register(
            "api_requests",
            "gRPC requests handled, by method",
            api_requests.clone(),
        );
        let api_errors = Family::<MethodCodeLabels, Counter>::default();
        r.register(
            "api_errors",
            "gRPC requests that failed, by method and status code",
            api_errors.clone(),
        );
        let pulls = Family::<ResultLabels, Counter>::default();
        r.register("image_pulls", "Image pulls, by result", pulls.clone());
        let gc_runs = Counter::default();
        r.register("gc_runs", "Garbage collection runs", gc_runs.clone());
        let gc_duration = Histogram::new(exponential_buckets(0.001, 4.0, 8));
        r.register_with_unit(
            "gc_duration",
            "Time taken by garbage collection runs",
            Unit::Seconds,
            gc_duration.clone(),
        );
        let containers = Family::<StateLabels, Gauge>::default();
        r.register("containers", "Containers, by state", containers.clone());
        for s in STATES {
            let _ = containers.get_or_create(&StateLabels {
                state: s.to_string(),
            });
        }
        let container_restarts = Family::<ContainerLabels, Gauge>::default();
        r.register(
            "container_restarts",
            "Times nookd restarted a container under its restart policy since the user last started it",
            container_restarts.clone(),
        );
        let container_cpu = Family::<ContainerLabels, Gauge<f64, AtomicU64>>::default();
        r.register_with_unit(
            "container_cpu",
            "CPU time used by a container (from its cgroup)",
            Unit::Seconds,
            container_cpu.clone(),
        );
        let container_memory = Family::<ContainerLabels, Gauge>::default();
        r.register_with_unit(
            "container_memory",
            "Memory used by a container (from its cgroup)",
            Unit::Bytes,
            container_memory.clone(),
        );
        let container_usage: [Family<ContainerLabels, Gauge>; 6] = Default::default();
        for (f, (name, help, unit)) in container_usage.iter().zip([
            (
                "container_memory_limit",
                "Memory limit of a container (--memory)",
                Some(Unit::Bytes),
            ),
            (
                "container_network_receive",
                "Bytes received on a container's own interfaces",
                Some(Unit::Bytes),
            ),
            (
                "container_network_transmit",
                "Bytes sent on a container's own interfaces",
                Some(Unit::Bytes),
            ),
            (
                "container_block_read",
                "Bytes a container read from block devices",
                Some(Unit::Bytes),
            ),
            (
                "container_block_write",
                "Bytes a container wrote to block devices",
                Some(Unit::Bytes),
            ),
            ("container_pids", "Processes in a container", None),
        ]) {
            match unit {
                Some(u) => r.register_with_unit(name, help, u, f.clone()),
                None => r.register(name, help, f.clone()),
            }
        }
        let disk_bytes = Family::<StoreLabels, Gauge>::default();
        r.register_with_unit(
            "disk",
            "Disk space used by the content store and the snapshots",
            Unit::Bytes,
            disk_bytes.clone(),
        );
        Metrics {
            registry: r,
            started: Instant::now(),
            uptime,
            api_requests,
            api_errors,
            pulls,
            gc_runs,
            gc_duration,
            containers,
            container_restarts,
            container_cpu,
            container_memory,
            container_usage,
            disk_bytes,
            refreshers: Mutex::new(Vec::new()),
        }
    }

    /// Counts one API request; `code` is the gRPC status code name when it failed.
    pub fn api_request(&self, method: &str, code: Option<&str>) {
        self.api_requests
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .inc();
        if let Some(code) = code {
            self.api_errors
                .get_or_create(&MethodCodeLabels {
                    method: method.to_string(),
                    code: code.to_string(),
                })
                .inc();
        }
    }

    /// Counts one image pull.
    pub fn pull(&self, ok: bool) {
        self.pulls
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }

    /// Counts one GC run and its duration.
    pub fn gc_run(&self, took: Duration) {
        self.gc_runs.inc();
        self.gc_duration.observe(took.as_secs_f64());
    }

    /// Replaces the per-container gauges and the counts by state with `samples`.
    pub fn set_containers(&self, samples: &[ContainerSample]) {
        let mut by_state: std::collections::HashMap<&str, i64> =
            STATES.iter().map(|s| (*s, 0)).collect();
        self.container_restarts.clear();
        self.container_cpu.clear();
        self.container_memory.clear();
        for f in &self.container_usage {
            f.clear();
        }
        for c in samples {
            let state = if STATES.contains(&c.state.as_str()) {
                c.state.as_str()
            } else {
                "unknown"
            };
            *by_state.entry(state).or_default() += 1;
            let l = ContainerLabels {
                namespace: c.namespace.clone(),
                container: c.id.clone(),
            };
            if let Some(n) = c.restarts {
                self.container_restarts
                    .get_or_create(&l)
                    .set(n.min(i64::MAX as u64) as i64);
            }
            if let Some(cpu) = c.cpu_seconds {
                self.container_cpu.get_or_create(&l).set(cpu);
            }
            if let Some(mem) = c.memory_bytes {
                self.container_memory
                    .get_or_create(&l)
                    .set(mem.min(i64::MAX as u64) as i64);
            }
            if let Some(u) = &c.usage {
                let values = [
                    u.memory_limit,
                    Some(u.net_rx),
                    Some(u.net_tx),
                    Some(u.block_read),
                    Some(u.block_write),
                    Some(u.pids),
                ];
                for (f, v) in self.container_usage.iter().zip(values) {
                    if let Some(v) = v {
                        f.get_or_create(&l).set(v.min(i64::MAX as u64) as i64);
                    }
                }
            }
        }
        for (state, n) in by_state {
            self.containers
                .get_or_create(&StateLabels {
                    state: state.to_string(),
                })
                .set(n);
        }
    }

    /// Sets the disk use of a store (`content`, `snapshots`).
    pub fn set_disk_bytes(&self, store: &str, bytes: u64) {
        self.disk_bytes
            .get_or_create(&StoreLabels {
                store: store.to_string(),
            })
            .set(bytes.min(i64::MAX as u64) as i64);
    }

    /// Adds a function run before every scrape to refresh gauges.
    pub fn add_refresher(&self, f: impl Fn(&Metrics) + Send + Sync + 'static) {
        self.refreshers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(f));
    }

    /// Refreshes the gauges and encodes everything as OpenMetrics text.
    pub fn encode(&self) -> Result<String> {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        for f in self
            .refreshers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            f(self);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| Error::Internal(format!("encoding metrics: {e}")))?;
        Ok(out)
    }
}

// ------------------------------------------------------------------------------------------------
// Disk use and cgroups, for refreshers

/// Bytes allocated on disk by the tree at `dir` (st_blocks × 512), counting hard-linked files
/// once and staying on `dir`'s filesystem (mounts below it, such as running containers' root
/// filesystems, are not entered). A missing directory uses 0 bytes.
pub fn dir_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = top.dev();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut total = top.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            if md.dev() != dev {
                continue;
            }
            if md.nlink() > 1 && !md.is_dir() && !seen.insert(md.ino()) {
                continue;
            }
            total += md.blocks() * 512;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// CPU seconds and memory bytes of a cgroup, given its path relative to the cgroup roots
/// (as in an OCI spec's `cgroupsPath`). Reads cgroup v2 (`cpu.stat`, `memory.current`) at
/// `/sys/fs/cgroup` or `/sys/fs/cgroup/unified`, then the v1 `cpuacct` and `memory`
/// hierarchies. Whatever cannot be read is `None`.
pub fn cgroup_usage(rel: &str) -> (Option<f64>, Option<u64>) {
    cgroup_usage_at(Path::new("/sys/fs/cgroup"), rel)
}

/// [`cgroup_usage`] under another cgroup mount point (for tests).
pub fn cgroup_usage_at(base: &Path, rel: &str) -> (Option<f64>, Option<u64>) {
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return (None, None);
    }
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
    let mut cpu = None;
    let mut mem = None;
    for v2 in [base.to_path_buf(), base.join("unified")] {
        let dir = v2.join(rel);
        if cpu.is_none() {
            cpu = read(dir.join("cpu.stat")).and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|us| us as f64 / 1e6)
            });
        }
        if mem.is_none() {
            mem = read(dir.join("memory.current")).and_then(|t| t.trim().parse().ok());
        }
    }
    if cpu.is_none() {
        cpu = ["cpuacct", "cpu,cpuacct"].iter().find_map(|h| {
            read(base.join(h).join(rel).join("cpuacct.usage"))
                .and_then(|t| t.trim().parse::<u64>().ok())
                .map(|ns| ns as f64 / 1e9)
        });
    }
    if mem.is_none() {
        mem = read(base.join("memory").join(rel).join("memory.usage_in_bytes"))
            .and_then(|t| t.trim().parse().ok());
    }
    (cpu, mem)
}

/// Adds the refresher of the disk-use gauges: `<root>/content` and `<root>/snapshots`, walked
/// at most once per `every` (a scrape in between reuses the last numbers).
pub fn add_disk_refresher(metrics: &Metrics, root: &Path, every: Duration) {
    let root = root.to_path_buf();
    let last: Mutex<Option<Instant>> = Mutex::new(None);
    metrics.add_refresher(move |m| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        *last = Some(Instant::now());
        for store in ["content", "snapshots"] {
            m.set_disk_bytes(store, dir_usage(&root.join(store)));
        }
    });
}

/// Adds the refresher of the container gauges: every container of every namespace with the
/// state its shim reports, and CPU and memory from its cgroup (`linux.cgroupsPath` of its spec)
/// where one is set and readable. Runs inside encode, on a blocking thread of nookd's runtime.
pub fn add_container_refresher(metrics: &Metrics, d: &Arc<crate::daemon::Daemon>) {
    let weak = Arc::downgrade(d);
    metrics.add_refresher(move |m| {
        let (Some(d), Ok(handle)) = (weak.upgrade(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let Ok(mgr) = d.containers() else {
            m.set_containers(&[]);
            return;
        };
        let Ok(namespaces) = d.store.namespaces() else {
            return;
        };
        let mut samples = vec![];
        for ns in namespaces {
            let Ok(records) = mgr.records(&ns.name) else {
                continue;
            };
            for r in records {
                let cgroup = r.spec["linux"]["cgroupsPath"]
                    .as_str()
                    .filter(|c| !c.is_empty())
                    .map(str::to_string);
                let st = handle.block_on(mgr.status(&ns.name, r));
                let pid = st.task.as_ref().map(|t| t.pid).unwrap_or(0);
                // a delegated cgroup of this nookd: what `nook stats` reads
                let delegated = st
                    .running()
                    .then(|| crate::runtime::limits::stats(mgr.deps(), &st.record, pid))
                    .flatten();
                let (cpu_seconds, memory_bytes, usage) = match (&cgroup, st.running(), delegated) {
                    (_, true, Some((s, rx, tx))) => (
                        Some(s.cpu_ns as f64 / 1e9),
                        Some(s.memory_usage),
                        Some(ContainerUsage {
                            memory_limit: s.memory_limit,
                            net_rx: rx,
                            net_tx: tx,
                            block_read: s.block_read,
                            block_write: s.block_write,
                            pids: s.pids,
                        }),
                    ),
                    (Some(cg), true, None) => {
                        let (c, m) = cgroup_usage(cg);
                        (c, m, None)
                    }
                    _ => (None, None, None),
                };
                samples.push(ContainerSample {
                    namespace: ns.name.clone(),
                    id: st.record.id.clone(),
                    state: st.status().to_string(),
                    restarts: Some(st.record.restart_count.into()),
                    cpu_seconds,
                    memory_bytes,
                    usage,
                });
            }
        }
        m.set_containers(&samples);
    });
}

// ------------------------------------------------------------------------------------------------
// The HTTP endpoint

/// Binds the metrics address (so that a busy port is an error at start, not later).
pub async fn bind(address: &str) -> Result<tokio::net::TcpListener> {
    let addr: SocketAddr = address.parse().map_err(|_| {
        Error::Config(format!(
            "metrics.address: {address:?} is not host:port (e.g. \"127.0.0.1:1338\")"
        ))
    })?;
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Unavailable(format!(
            "cannot listen for metrics on {addr}: {e}; choose another [metrics] address (or leave it empty to disable metrics)"
        ))
    })
}

/// Serves `metrics` on `listener` until `shutdown` resolves: `GET /v1/metrics` returns the
/// text, anything else 404 (or 405 for another method on the path).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = &mut shutdown => return,
        };
        let (stream, _) = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let m = m.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(m, &req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, svc);
            if let Err(e) = conn.await {
                tracing::debug!("metrics: connection: {e}");
            }
        });
    }
}

async fn respond<B>(
    m: Arc<Metrics>,
    req: &hyper::Request<B>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use hyper::{Method, StatusCode};
    let reply = |status: StatusCode, ctype: &str, body: String| {
        let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    let text = "text/plain; charset=utf-8";
    if req.uri().path() != PATH {
        return reply(
            StatusCode::NOT_FOUND,
            text,
            format!("not found: nookd serves metrics at {PATH}\n"),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            format!("use GET {PATH}\n"),
        );
    }
    // refreshers may walk directories: keep them off the async threads
    match tokio::task::spawn_blocking(move || m.encode()).await {
        Ok(Ok(body)) => reply(StatusCode::OK, CONTENT_TYPE, body),
        Ok(Err(e)) => reply(StatusCode::INTERNAL_SERVER_ERROR, text, format!("{e}\n")),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            text,
            format!("collecting metrics failed: {e}\n"),
        ),
    }
}

/// Binds `address` and serves the global metrics in the background until the process ends.
/// Returns the bound address (useful with port 0).
pub async fn start(address: &str) -> Result<SocketAddr> {
    let l = bind(address).await?;
    let local = l
        .local_addr()
        .map_err(|e| Error::io("reading the metrics address", e))?;
    tokio::spawn(serve(l, global(), std::future::pending()));
    tracing::info!(address = %local, path = PATH, "serving metrics");
    Ok(local)
}

// ------------------------------------------------------------------------------------------------
// Counting API requests: a tower layer for the tonic server

/// A tower layer counting every gRPC request by method (`/package.Service/Method`) and its
/// failures by status code: `Server::builder().layer(metrics::ApiLayer::global())`.
#[derive(Clone, Debug)]
pub struct ApiLayer {
    metrics: Arc<Metrics>,
}

impl ApiLayer {
    /// A layer counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ApiLayer { metrics }
    }

    /// A layer counting into [`global()`].
    pub fn global() -> Self {
        Self::new(global())
    }
}

impl<S> tower::Layer<S> for ApiLayer {
    type Service = ApiService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`ApiLayer`].
#[derive(Clone, Debug)]
pub struct ApiService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The name of a gRPC status code number (`5` → `NotFound`).
pub fn grpc_code_name(code: i32) -> String {
    format!("{:?}", tonic::Code::from_i32(code))
}

impl<S, B, RB> tower::Service<hyper::Request<B>> for ApiService<S>
where
    S: tower::Service<hyper::Request<B>, Response = hyper::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: hyper::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            match &res {
                // tonic sends a handler's error as a trailers-only response: grpc-status is
                // in the headers; success puts it (0) in the trailers
                Ok(r) => {
                    let code = r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .filter(|c| *c != 0)
                        .map(grpc_code_name);
                    metrics.api_request(&method, code.as_deref());
                }
                Err(_) => metrics.api_request(&method, Some("Transport")),
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        text.lines().find_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (metric, rest) = head.split_once('{').unwrap_or((head, ""));
            if metric != name
                || !labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            {
                return None;
            }
            value.parse().ok()
        })
    }

    #[test]
    fn counters_and_gauges_encode() {
        let m = Metrics::new();
        m.api_request("/nook.v1.Namespaces/List", None);
        m.api_request("/nook.v1.Namespaces/List", None);
        m.api_request("/nook.v1.Namespaces/Remove", Some("FailedPrecondition"));
        m.pull(true);
        m.pull(false);
        m.pull(true);
        m.gc_run(Duration::from_millis(3));
        m.set_disk_bytes("content", 4096);
        let t = m.encode().unwrap();
        let ns_list = [("method", "/nook.v1.Namespaces/List")];
        assert_eq!(
            sample(&t, "nook_api_requests_total", &ns_list),
            Some(2.0),
            "{t}"
        );
        assert_eq!(
            sample(
                &t,
                "nook_api_errors_total",
                &[
                    ("method", "/nook.v1.Namespaces/Remove"),
                    ("code", "FailedPrecondition")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, "nook_image_pulls_total", &[("result", "ok")]),
            Some(2.0)
        );
        assert_eq!(
            sample(&t, "nook_image_pulls_total", &[("result", "error")]),
            Some(1.0)
        );
        assert_eq!(sample(&t, "nook_gc_runs_total", &[]), Some(1.0));
        assert_eq!(sample(&t, "nook_gc_duration_seconds_count", &[]), Some(1.0));
        assert_eq!(
            sample(&t, "nook_disk_bytes", &[("store", "content")]),
            Some(4096.0)
        );
        assert!(sample(&t, "nook_uptime_seconds", &[]).is_some());
        assert!(t.contains(&format!(
            "nook_build_info{{version=\"{}\"}} 1",
            crate::VERSION
        )));
        assert!(t.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn containers_by_state_are_replaced_each_time() {
        let m = Metrics::new();
        let t = m.encode().unwrap();
        // every state is present from the start, at 0
        for s in STATES {
            assert_eq!(
                sample(&t, "nook_containers", &[("state", s)]),
                Some(0.0),
                "{t}"
            );
        }
        let c = |id: &str, state: &str| ContainerSample {
            namespace: "default".into(),
            id: id.into(),
            state: state.into(),
            restarts: Some(2),
            cpu_seconds: Some(1.5),
            memory_bytes: None,
            usage: (id == "a").then(|| ContainerUsage {
                memory_limit: Some(64 << 20),
                pids: 3,
                ..Default::default()
            }),
        };
        m.set_containers(&[c("a", "running"), c("b", "running"), c("c", "weird")]);
        let t = m.encode().unwrap();
        assert_eq!(
            sample(&t, "nook_containers", &[("state", "running")]),
            Some(2.0)
        );
        assert_eq!(
            sample(&t, "nook_containers", &[("state", "unknown")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, "nook_container_restarts", &[("container", "a")]),
            Some(2.0)
        );
        assert_eq!(
            sample(&t, "nook_container_cpu_seconds", &[("container", "b")]),
            Some(1.5)
        );
        assert!(!t.contains("nook_container_memory_bytes{"));
        assert_eq!(
            sample(
                &t,
                "nook_container_memory_limit_bytes",
                &[("container", "a")]
            ),
            Some((64u64 << 20) as f64)
        );
        assert_eq!(
            sample(&t, "nook_container_pids", &[("container", "a")]),
            Some(3.0)
        );
        assert_eq!(
            sample(&t, "nook_container_pids", &[("container", "b")]),
            None
        );
        m.set_containers(&[c("a", "exited")]);
        let t = m.encode().unwrap();
        assert_eq!(
            sample(&t, "nook_containers", &[("state", "running")]),
            Some(0.0)
        );
        assert_eq!(
            sample(&t, "nook_containers", &[("state", "exited")]),
            Some(1.0)
        );
        assert!(sample(&t, "nook_container_restarts", &[("container", "b")]).is_none());
    }

    #[test]
    fn refreshers_run_before_each_scrape() {
        let m = Metrics::new();
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n2 = n.clone();
        m.add_refresher(move |m| {
            let v = n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            m.set_disk_bytes("snapshots", v * 10);
        });
        m.encode().unwrap();
        let t = m.encode().unwrap();
        assert_eq!(
            sample(&t, "nook_disk_bytes", &[("store", "snapshots")]),
            Some(20.0)
        );
    }

    #[test]
    fn dir_usage_counts_blocks_and_hard_links_once() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(dir_usage(&d.path().join("missing")), 0);
        let empty = dir_usage(d.path());
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), vec![1u8; 100_000]).unwrap();
        let one = dir_usage(d.path());
        assert!(one >= empty + 100_000, "{empty} -> {one}");
        std::fs::hard_link(d.path().join("sub/f"), d.path().join("g")).unwrap();
        let linked = dir_usage(d.path());
        assert!(
            linked < one + 100_000,
            "a hard link was counted twice: {one} -> {linked}"
        );
    }

    #[test]
    fn cgroup_usage_reads_v2_then_v1() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path();
        assert_eq!(cgroup_usage_at(b, "/nook/x"), (None, None));
        std::fs::create_dir_all(b.join("unified/nook/x")).unwrap();
        std::fs::write(
            b.join("unified/nook/x/cpu.stat"),
            "usage_usec 2500000\nuser_usec 1\n",
        )
        .unwrap();
        std::fs::create_dir_all(b.join("memory/nook/x")).unwrap();
        std::fs::write(b.join("memory/nook/x/memory.usage_in_bytes"), "4096\n").unwrap();
        assert_eq!(cgroup_usage_at(b, "/nook/x"), (Some(2.5), Some(4096)));
        std::fs::create_dir_all(b.join("cpuacct/nook/y")).unwrap();
        std::fs::write(b.join("cpuacct/nook/y/cpuacct.usage"), "3000000000").unwrap();
        assert_eq!(cgroup_usage_at(b, "nook/y"), (Some(3.0), None));
        assert_eq!(cgroup_usage_at(b, "../etc"), (None, None));
    }

    #[tokio::test]
    async fn serves_text_over_http() {
        let m = Arc::new(Metrics::new());
        m.pull(true);
        let l = bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(l, m.clone(), async {
            let _ = rx.await;
        }));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get(PATH).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("application/openmetrics-text"), "{ok}");
        assert!(
            ok.contains("nook_image_pulls_total{result=\"ok\"} 1"),
            "{ok}"
        );
        let nf = get("/metrics").await;
        assert!(
            nf.starts_with("HTTP/1.1 404") && nf.contains("/v1/metrics"),
            "{nf}"
        );
        // a busy port is a clear error
        let e = bind(&addr.to_string()).await.unwrap_err().to_string();
        assert!(
            e.contains("cannot listen for metrics") && e.contains("[metrics] address"),
            "{e}"
        );
        let e = bind("localhost").await.unwrap_err().to_string();
        assert!(e.contains("metrics.address"), "{e}");
        let _ = tx.send(());
        task.await.unwrap();
    }

    #[test]
    fn grpc_codes_have_names() {
        assert_eq!(grpc_code_name(5), "NotFound");
        assert_eq!(grpc_code_name(9), "FailedPrecondition");
    }
}
