//! `config.toml`: what nookd reads at start, with defaults for every key.
//!
//! The file lives at `$XDG_CONFIG_HOME/nook/config.toml`; every key may be left out. An unknown
//! key or a value of the wrong type is an error that names the key and, where toml knows it, the
//! line. `nook config default` prints [`DEFAULT_CONFIG`], which parses to exactly
//! [`Config::default()`] (a unit test holds the two together).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The ways published ports reach containers (`[network] port_driver`, `--port-driver`).
pub const PORT_DRIVERS: &[&str] = &["relay", "direct"];

/// The commented default configuration printed by `nook config default`.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The whole configuration of nookd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent state (content, snapshots, metadata). Empty: `$XDG_DATA_HOME/nook`.
    pub root: String,
    /// Runtime state (socket, pids, shim sockets). Empty: `$XDG_RUNTIME_DIR/nook`.
    pub state: String,
    /// The API socket. Empty: `<state>/nook.sock`.
    pub address: String,
    pub debug: DebugConfig,
    pub network: NetworkConfig,
    pub snapshotter: SnapshotterConfig,
    pub runtime: RuntimeConfig,
    /// Runtimes by name (`runc`, `crun`, or any OCI runtime binary).
    pub runtimes: BTreeMap<String, RuntimeEntry>,
    pub images: ImagesConfig,
    /// Per-registry settings, keyed by host (`host[:port]`), like containerd's hosts.toml.
    pub registry: BTreeMap<String, RegistryHost>,
    pub gc: GcConfig,
    pub metrics: MetricsConfig,
    pub docker: DockerConfig,
    pub cri: CriConfig,
}

/// `[debug]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// trace | debug | info | warn | error
    pub level: String,
    /// text | json
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[network]`: the link between the containers' network namespace and the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// auto | pasta | slirp4netns | none
    pub driver: String,
    /// MTU of the tap device (slirp4netns).
    pub mtu: u32,
    /// Forbid containers from reaching the host's 127.0.0.1 through the link.
    pub disable_host_loopback: bool,
    /// Subnet of the default bridge network.
    pub subnet: String,
    /// IPv6 subnet of the default bridge network ("" = IPv4 only); user networks take the
    /// following subnets of the same size.
    pub ipv6_subnet: String,
    /// Name of the default bridge.
    pub bridge: String,
    /// How published ports reach containers by default: relay | direct.
    pub port_driver: String,
}

/// `[snapshotter]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotterConfig {
    /// auto | overlayfs | fuse-overlayfs | native
    pub default: String,
}

/// `[runtime]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Name of the default runtime (a key of `[runtimes]`).
    pub default: String,
    /// Compile seccomp profiles once in nookd and hand the program to crun.
    pub precompile_seccomp: bool,
}

/// `[runtimes.NAME]`: one OCI runtime binary.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeEntry {
    /// The binary: a name looked up in PATH or an absolute path.
    pub path: String,
    /// Extra global arguments given before the subcommand (e.g. `--systemd-cgroup`).
    pub args: Vec<String>,
}

/// `[images]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Layers fetched at once per pull.
    pub max_concurrent_downloads: u32,
    /// Unpack images into the default snapshotter after pull/import.
    pub unpack: bool,
}

/// `[registry."host:port"]`: per-registry settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryHost {
    /// Mirrors tried in order before the origin (`https://mirror.example` or `host:port`).
    pub mirrors: Vec<String>,
    /// Plain HTTP allowed (and TLS errors ignored). Localhost is insecure-allowed by default.
    pub insecure: bool,
    /// CA bundle to trust for this host.
    pub ca_file: String,
    /// Client certificate and key for this host.
    pub cert_file: String,
    pub key_file: String,
}

/// `[gc]`: the garbage collection scheduler (containerd's knobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    pub pause_threshold: f64,
    pub deletion_threshold: u64,
    pub mutation_threshold: u64,
    pub schedule_delay: String,
    pub startup_delay: String,
}

/// `[docker]`: the Docker Engine API socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Serve the Docker Engine API at all.
    pub enabled: bool,
    /// Its socket. Empty: `<state>/docker.sock`.
    pub address: String,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: true,
            address: String::new(),
        }
    }
}

/// `[cri]`: the Kubernetes CRI door. Its pulls use `[images]` (max_concurrent_downloads) and
/// `[registry]` (mirrors, TLS) like every other pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriConfig {
    /// Container log lines longer than this are cut into partial (`P`) lines (bytes).
    pub max_container_log_line_size: u32,
    /// `host:port` of the streaming server whose URLs Exec, Attach and PortForward return
    /// (port 0: any free port).
    pub stream_server_address: String,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            max_container_log_line_size: 16384,
            stream_server_address: "127.0.0.1:0".into(),
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` to serve Prometheus text at `/v1/metrics`; empty disables.
    pub address: String,
}

impl Default for Config {
    fn default() -> Self {
        let mut runtimes = BTreeMap::new();
        runtimes.insert(
            "runc".to_string(),
            RuntimeEntry {
                path: "runc".into(),
                args: vec![],
            },
        );
        runtimes.insert(
            "crun".to_string(),
            RuntimeEntry {
                path: "crun".into(),
                args: vec![],
            },
        );
        Config {
            root: String::new(),
            state: String::new(),
            address: String::new(),
            debug: DebugConfig::default(),
            network: NetworkConfig::default(),
            snapshotter: SnapshotterConfig::default(),
            runtime: RuntimeConfig::default(),
            runtimes,
            images: ImagesConfig::default(),
            registry: BTreeMap::new(),
            gc: GcConfig::default(),
            metrics: MetricsConfig::default(),
            docker: DockerConfig::default(),
            cri: CriConfig::default(),
        }
    }
}

impl Default for DebugConfig {
    fn default() -> Self {
        DebugConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            driver: "auto".into(),
            mtu: 65520,
            disable_host_loopback: true,
            subnet: "10.88.0.0/16".into(),
            ipv6_subnet: "fd88::/64".into(),
            bridge: "nook0".into(),
            port_driver: "relay".into(),
        }
    }
}

impl Default for SnapshotterConfig {
    fn default() -> Self {
        SnapshotterConfig {
            default: "auto".into(),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            default: "auto".into(),
            precompile_seccomp: true,
        }
    }
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            max_concurrent_downloads: 3,
            unpack: true,
        }
    }
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            pause_threshold: 0.02,
            deletion_threshold: 0,
            mutation_threshold: 100,
            schedule_delay: "0ms".into(),
            startup_delay: "100ms".into(),
        }
    }
}

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];

impl Config {
    /// Parses a config file's text. `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let line = e.span().map(|s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            });
            match line {
                Some(l) => Error::Config(format!("{origin}:{l}: {msg}")),
                None => Error::Config(format!("{origin}: {msg}")),
            }
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Loads the config from `path`; a missing file at the default place means defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match default_config_path() {
                Some(p) => (p, false),
                None => return Ok(Config::default()),
            },
        };
        let read = if path == Path::new("-") || path == Path::new("/dev/stdin") {
            // read our stdin directly: reopening /dev/stdin fails for a pipe made by another user
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
        } else {
            std::fs::read_to_string(&path)
        };
        match read {
            Ok(text) => Config::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(e) => Err(Error::Config(format!(
                "cannot read config file {}: {e}",
                path.display()
            ))),
        }
    }

    /// Checks values that types alone do not constrain.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::Config(format!("{origin}: {key}: {why}")));
        const DRIVERS: &[&str] = &["auto", "pasta", "slirp4netns", "none"];
        const SNAPS: &[&str] = &["auto", "overlayfs", "fuse-overlayfs", "native"];
        for (key, value, allowed) in [
            ("debug.level", &self.debug.level, LEVELS),
            ("network.driver", &self.network.driver, DRIVERS),
            (
                "network.port_driver",
                &self.network.port_driver,
                PORT_DRIVERS,
            ),
            ("snapshotter.default", &self.snapshotter.default, SNAPS),
        ] {
            if !allowed.contains(&value.as_str()) {
                return bad(
                    key,
                    format!(
                        "invalid value {value:?}, expected one of {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
        if !(1280..=65520).contains(&self.network.mtu) {
            return bad(
                "network.mtu",
                format!("{} is out of range 1280..=65520", self.network.mtu),
            );
        }
        if self.runtime.default != "auto" && !self.runtimes.contains_key(&self.runtime.default) {
            return bad(
                "runtime.default",
                format!(
                    "{:?} is not a configured runtime (add a [runtimes.{}] section, or use auto)",
                    self.runtime.default, self.runtime.default
                ),
            );
        }
        for (name, rt) in &self.runtimes {
            if rt.path.is_empty() {
                return bad(&format!("runtimes.{name}.path"), "must not be empty".into());
            }
        }
        if self.images.max_concurrent_downloads == 0 {
            return bad(
                "images.max_concurrent_downloads",
                "must be at least 1".into(),
            );
        }
        if self.cri.max_container_log_line_size == 0 {
            return bad(
                "cri.max_container_log_line_size",
                "must be at least 1 (bytes)".into(),
            );
        }
        if self
            .cri
            .stream_server_address
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return bad(
                "cri.stream_server_address",
                format!(
                    "{:?} is not host:port (e.g. 127.0.0.1:0)",
                    self.cri.stream_server_address
                ),
            );
        }
        if !(0.0..=0.5).contains(&self.gc.pause_threshold) {
            return bad("gc.pause_threshold", "must be between 0 and 0.5".into());
        }
        for (key, v) in [
            ("gc.schedule_delay", &self.gc.schedule_delay),
            ("gc.startup_delay", &self.gc.startup_delay),
        ] {
            if let Err(e) = parse_duration(v) {
                return bad(key, e);
            }
        }
        if !self.metrics.address.is_empty()
            && self
                .metrics
                .address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return bad(
                "metrics.address",
                format!("{:?} is not host:port", self.metrics.address),
            );
        }
        Ok(())
    }
}

/// Parses `"100ms"`, `"5s"`, `"2m"`, `"1h"` or `"0"`.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let idx = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("{s:?} has no unit (use ms, s, m or h)"))?;
    let (num, unit) = s.split_at(idx);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 100ms or 5s"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// `$XDG_CONFIG_HOME/nook/config.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|b| b.config_dir().join("nook").join("config.toml"))
}

/// `$XDG_DATA_HOME/nook`.
pub fn default_root() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|b| b.data_dir().join("nook"))
}

/// `$XDG_RUNTIME_DIR/nook`, or None when XDG_RUNTIME_DIR is unset.
pub fn default_state() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(|d| PathBuf::from(d).join("nook"))
}

/// The socket a client talks to: `--address`, `$NOOK_ADDRESS`, or `$XDG_RUNTIME_DIR/nook/nook.sock`.
pub fn default_address() -> Option<PathBuf> {
    default_state().map(|s| s.join("nook.sock"))
}

/// Resolved paths nookd runs with.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub state: PathBuf,
    pub address: PathBuf,
    /// The Docker Engine API socket; None when `[docker] enabled = false`.
    pub docker: Option<PathBuf>,
}

impl Config {
    /// Resolves root/state/address from flags, then the file, then XDG defaults.
    pub fn paths(
        &self,
        root: Option<&Path>,
        state: Option<&Path>,
        address: Option<&Path>,
        docker: Option<&Path>,
    ) -> Result<Paths> {
        let pick = |flag: Option<&Path>, file: &str| -> Option<PathBuf> {
            flag.map(Path::to_path_buf)
                .or_else(|| (!file.is_empty()).then(|| PathBuf::from(expand_home(file))))
        };
        let root = pick(root, &self.root)
            .or_else(default_root)
            .ok_or_else(|| {
                Error::Config("cannot find a home directory for the root; set --root".into())
            })?;
        let state = match pick(state, &self.state).or_else(default_state) {
            Some(s) => s,
            None => {
                return Err(Error::Precondition(
                    "XDG_RUNTIME_DIR is not set: log in through a session manager (not `su`), or export XDG_RUNTIME_DIR=/run/user/$(id -u) if it exists, or pass --state DIR".into(),
                ))
            }
        };
        let address = pick(address, &self.address).unwrap_or_else(|| state.join("nook.sock"));
        let docker = match docker {
            Some(p) => Some(p.to_path_buf()),
            None if !self.docker.enabled => None,
            None => {
                Some(pick(None, &self.docker.address).unwrap_or_else(|| state.join("docker.sock")))
            }
        };
        Ok(Paths {
            root,
            state,
            address,
            docker,
        })
    }
}

fn expand_home(p: &str) -> String {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(b) = directories::BaseDirs::new() {
            return b.home_dir().join(rest).display().to_string();
        }
    }
    p.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_text_parses_to_default() {
        let cfg = Config::parse(DEFAULT_CONFIG, "default").unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn unknown_key_is_named_with_line() {
        let err = Config::parse("[debug]\nlevel = \"info\"\nbogus_key = 1\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus_key"), "{err}");
        assert!(err.contains("c.toml:3"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::parse("[network]\ndriver = \"carrier-pigeon\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("network.driver"), "{err}");
        let err = Config::parse("[debug]\nformat = \"xml\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("xml"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms").unwrap().as_millis(), 100);
        assert_eq!(parse_duration("2s").unwrap().as_secs(), 2);
        assert!(parse_duration("5 parsecs").is_err());
    }
}
