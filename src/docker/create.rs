//! Translating a Docker create request (Config, HostConfig, NetworkingConfig) into nook's
//! [`CreateOptions`]. An option nook cannot honour is refused with its Docker name, never
//! silently dropped.

use serde_json::Value;

use super::ApiError;
use crate::runtime::containers::CreateOptions;

/// Whether a JSON value is the zero of its kind (what the docker CLI sends for "not set").
pub(super) fn unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Value::String(s) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Config and HostConfig fields nook has no counterpart for yet: refused when set.
const REFUSED_CONFIG: &[&str] = &[
    "Domainname",
    "Healthcheck",
    "NetworkDisabled",
    "MacAddress",
    "OnBuild",
    "StopTimeout",
    "Shell",
];
const REFUSED_HOST: &[&str] = &[
    "ContainerIDFile",
    "VolumeDriver",
    "VolumesFrom",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "Links",
    "Sysctls",
    "StorageOpt",
    "UsernsMode",
    "Annotations",
    "CgroupParent",
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "CpusetMems",
    "CpuCount",
    "CpuPercent",
    "Devices",
    "DeviceCgroupRules",
    "DeviceRequests",
    "KernelMemory",
    "KernelMemoryTCP",
    "IOMaximumIOps",
    "IOMaximumBandwidth",
    "MaskedPaths",
    "ReadonlyPaths",
];

/// The create body, translated. `name` comes from the query.
pub fn options(body: &Value, name: &str, image: String) -> Result<CreateOptions, ApiError> {
    let hc = &body["HostConfig"];
    for k in REFUSED_CONFIG {
        if !unset(&body[*k]) {
            return Err(ApiError::unsupported(&format!("Config.{k}")));
        }
    }
    if let Some(sig) = body["StopSignal"].as_str() {
        if !["", "SIGTERM", "TERM", "15"].contains(&sig) {
            return Err(ApiError::unsupported("Config.StopSignal (--stop-signal)"));
        }
    }
    for k in REFUSED_HOST {
        if !unset(&hc[*k]) {
            return Err(ApiError::unsupported(&format!("HostConfig.{k}")));
        }
    }
    if hc["MemorySwappiness"].as_i64().is_some_and(|v| v >= 0) {
        return Err(ApiError::unsupported("HostConfig.MemorySwappiness"));
    }
    if hc["OomKillDisable"].as_bool() == Some(true) {
        return Err(ApiError::unsupported("HostConfig.OomKillDisable"));
    }
    for (k, ok) in [
        ("PidMode", &["", "private"][..]),
        ("IpcMode", &["", "private", "shareable"][..]),
        ("UTSMode", &[""][..]),
        ("CgroupnsMode", &["", "private"][..]),
        ("Isolation", &["", "default"][..]),
    ] {
        let v = s(&hc[k]);
        if !ok.contains(&v.as_str()) {
            return Err(ApiError::unsupported(&format!("HostConfig.{k}={v:?}")));
        }
    }
    let log = s(&hc["LogConfig"]["Type"]);
    if !["", "json-file", "local"].contains(&log.as_str()) {
        return Err(ApiError::unsupported(&format!(
            "HostConfig.LogConfig.Type={log:?} (nook keeps json-file logs only)"
        )));
    }
    if !unset(&hc["LogConfig"]["Config"]) {
        return Err(ApiError::unsupported(
            "HostConfig.LogConfig.Config (--log-opt)",
        ));
    }

    let mut volumes: Vec<String> = strings(&hc["Binds"]);
    let mut tmpfs: Vec<String> = Vec::new();
    if let Some(m) = hc["Tmpfs"].as_object() {
        for (path, opts) in m {
            let o = opts.as_str().unwrap_or_default();
            tmpfs.push(if o.is_empty() {
                path.clone()
            } else {
                format!("{path}:{o}")
            });
        }
    }
    if let Some(mounts) = hc["Mounts"].as_array() {
        for m in mounts {
            volumes_or_tmpfs(m, &mut volumes, &mut tmpfs)?;
        }
    }
    // Config.Volumes: the paths a volume is mounted at; one no bind or mount covers gets an
    // anonymous volume (`docker run -v /data`)
    if let Some(vs) = body["Volumes"].as_object() {
        for path in vs.keys() {
            let covered = volumes.iter().any(|v| {
                let mut it = v.split(':');
                let first = it.next();
                it.next().or(first) == Some(path.as_str())
            }) || tmpfs
                .iter()
                .any(|t| t.split(':').next() == Some(path.as_str()));
            if !covered {
                volumes.push(path.clone());
            }
        }
    }

    let mut publish = Vec::new();
    if let Some(pb) = hc["PortBindings"].as_object() {
        for (port, binds) in pb {
            let port = if port.contains('/') {
                port.clone()
            } else {
                format!("{port}/tcp")
            };
            let binds = binds.as_array().cloned().unwrap_or_default();
            if binds.is_empty() {
                publish.push(port.clone());
            }
            for b in binds {
                let ip = s(&b["HostIp"]);
                let hp = s(&b["HostPort"]);
                publish.push(match (ip.as_str(), hp.as_str()) {
                    ("" | "0.0.0.0", "") => port.clone(),
                    ("" | "0.0.0.0", hp) => format!("{hp}:{port}"),
                    (ip, "") => format!("{ip}::{port}"),
                    (ip, hp) => format!("{ip}:{hp}:{port}"),
                });
            }
        }
    }

    let restart = {
        let rp = &hc["RestartPolicy"];
        let n = rp["MaximumRetryCount"].as_i64().unwrap_or(0);
        match rp["Name"].as_str().unwrap_or("") {
            "" | "no" => String::new(),
            "on-failure" if n > 0 => format!("on-failure:{n}"),
            other => other.to_string(),
        }
    };

    // HostConfig.NetworkMode is the first network; NetworkingConfig's endpoints give each
    // network's aliases, and any further network (compose v2 sends them all at once)
    let mut network = s(&hc["NetworkMode"]);
    let mut network_aliases = Vec::new();
    let mut more_networks = Vec::new();
    if let Some(eps) = body["NetworkingConfig"]["EndpointsConfig"].as_object() {
        if network.is_empty() || network == "default" {
            if let Some(first) = eps.keys().next() {
                network = first.clone();
            }
        }
        for (net, ep) in eps {
            for k in ["IPAMConfig", "Links", "MacAddress", "DriverOpts"] {
                if !unset(&ep[k]) {
                    return Err(ApiError::unsupported(&format!(
                        "NetworkingConfig.EndpointsConfig.{net}.{k}"
                    )));
                }
            }
            let aliases = strings(&ep["Aliases"]);
            if *net == network {
                network_aliases = aliases;
            } else {
                more_networks.push((net.clone(), aliases));
            }
        }
    }
    if network.starts_with("container:") {
        return Err(ApiError::unsupported(&format!(
            "HostConfig.NetworkMode={network:?}"
        )));
    }

    let ulimits = hc["Ulimits"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| {
                    format!(
                        "{}={}:{}",
                        s(&u["Name"]),
                        u["Soft"].as_i64().unwrap_or(0),
                        u["Hard"].as_i64().unwrap_or(0)
                    )
                })
                .collect()
        })
        .unwrap_or_default();

    let entrypoint = match &body["Entrypoint"] {
        Value::Null => None,
        v => Some(strings(v).into_iter().filter(|x| !x.is_empty()).collect()),
    };
    let labels = body["Labels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
        .unwrap_or_default();
    let runtime = match s(&hc["Runtime"]).as_str() {
        "io.containerd.runc.v2" => "runc".to_string(),
        other => other.to_string(),
    };
    let limits = limits(hc)?;
    Ok(CreateOptions {
        image,
        name: name.trim_start_matches('/').to_string(),
        runtime,
        snapshotter: String::new(),
        args: strings(&body["Cmd"]),
        entrypoint,
        env: strings(&body["Env"]),
        workdir: s(&body["WorkingDir"]),
        user: s(&body["User"]),
        hostname: s(&body["Hostname"]),
        read_only: hc["ReadonlyRootfs"].as_bool().unwrap_or(false),
        tty: body["Tty"].as_bool().unwrap_or(false),
        stdin: body["OpenStdin"].as_bool().unwrap_or(false),
        volumes,
        tmpfs,
        cap_add: strings(&hc["CapAdd"]),
        cap_drop: strings(&hc["CapDrop"]),
        privileged: hc["Privileged"].as_bool().unwrap_or(false),
        security_opt: strings(&hc["SecurityOpt"]),
        seccomp_profiles: Default::default(),
        labels,
        auto_remove: hc["AutoRemove"].as_bool().unwrap_or(false),
        network,
        network_aliases,
        more_networks,
        publish,
        restart,
        port_driver: String::new(),
        publish_all: hc["PublishAllPorts"].as_bool().unwrap_or(false),
        init: hc["Init"].as_bool().unwrap_or(false),
        group_add: strings(&hc["GroupAdd"]),
        ulimits,
        limits,
        ..Default::default()
    })
}

/// One of HostConfig.Mounts as a `-v` or `--tmpfs` value: `bind` (an absolute source),
/// `volume` (named, or anonymous without a source; `VolumeOptions.NoCopy`), `tmpfs`
/// (`TmpfsOptions.SizeBytes` and `Mode`). What nook cannot do is refused by its name.
fn volumes_or_tmpfs(
    m: &Value,
    volumes: &mut Vec<String>,
    tmpfs: &mut Vec<String>,
) -> Result<(), ApiError> {
    let target = s(&m["Target"]);
    if !target.starts_with('/') {
        return Err(ApiError::bad(format!(
            "invalid mount config: the mount target {target:?} must be an absolute path"
        )));
    }
    let ro = m["ReadOnly"].as_bool().unwrap_or(false);
    if !unset(&m["Consistency"]) && s(&m["Consistency"]) != "default" {
        return Err(ApiError::unsupported("Mounts[].Consistency"));
    }
    let src = s(&m["Source"]);
    match m["Type"].as_str().unwrap_or("volume") {
        "bind" => {
            let bo = &m["BindOptions"];
            for k in [
                "Propagation",
                "NonRecursive",
                "CreateMountpoint",
                "ReadOnlyNonRecursive",
                "ReadOnlyForceRecursive",
            ] {
                if !unset(&bo[k]) {
                    return Err(ApiError::unsupported(&format!("Mounts[].BindOptions.{k}")));
                }
            }
            if !src.starts_with('/') {
                return Err(ApiError::bad(format!(
                    "invalid mount config for type \"bind\": the source {src:?} must be an absolute host path"
                )));
            }
            volumes.push(format!("{src}:{target}{}", if ro { ":ro" } else { "" }));
        }
        "volume" => {
            let vo = &m["VolumeOptions"];
            for k in ["Labels", "DriverConfig", "Subpath"] {
                let v = &vo[k];
                // a DriverConfig naming the local driver without options is the default
                let local = k == "DriverConfig"
                    && ["", "local"].contains(&s(&v["Name"]).as_str())
                    && unset(&v["Options"]);
                if !unset(v) && !local {
                    return Err(ApiError::unsupported(&format!(
                        "Mounts[].VolumeOptions.{k} (create the volume first with docker volume create)"
                    )));
                }
            }
            if src.contains('/') {
                return Err(ApiError::bad(format!(
                    "invalid mount config for type \"volume\": {src:?} is not a volume name (use type=bind for a host path)"
                )));
            }
            let mut opts = Vec::new();
            if ro {
                opts.push("ro");
            }
            if vo["NoCopy"].as_bool() == Some(true) {
                opts.push("nocopy");
            }
            let opts = opts.join(",");
            volumes.push(match (src.is_empty(), opts.is_empty()) {
                (true, true) => target,
                (true, false) => format!("{target}:{opts}"),
                (false, true) => format!("{src}:{target}"),
                (false, false) => format!("{src}:{target}:{opts}"),
            });
        }
        "tmpfs" => {
            if !src.is_empty() {
                return Err(ApiError::bad(
                    "invalid mount config for type \"tmpfs\": a tmpfs mount takes no source",
                ));
            }
            let to = &m["TmpfsOptions"];
            let mut opts = Vec::new();
            if let Some(size) = to["SizeBytes"].as_i64().filter(|v| *v > 0) {
                opts.push(format!("size={size}"));
            }
            if let Some(mode) = to["Mode"].as_u64().filter(|v| *v > 0) {
                opts.push(format!("mode={mode:o}"));
            }
            if !unset(&to["Options"]) {
                return Err(ApiError::unsupported("Mounts[].TmpfsOptions.Options"));
            }
            if ro {
                opts.push("ro".into());
            }
            tmpfs.push(if opts.is_empty() {
                target
            } else {
                format!("{target}:{}", opts.join(","))
            });
        }
        other => return Err(ApiError::unsupported(&format!("Mounts[].Type={other:?}"))),
    }
    Ok(())
}

/// HostConfig's resource fields as nook's limits (applied through the delegated cgroups; nook
/// refuses them in one line where the controllers are not delegated).
pub(super) fn limits(hc: &Value) -> Result<crate::runtime::limits::Limits, ApiError> {
    let pos = |k: &str| hc[k].as_i64().filter(|v| *v > 0);
    let mut r = crate::cgroup::Resources {
        memory: pos("Memory"),
        memory_reservation: pos("MemoryReservation"),
        // 0 is unset; -1 is unlimited swap
        memory_swap: hc["MemorySwap"].as_i64().filter(|v| *v != 0),
        cpus: pos("NanoCpus").map(|n| n as f64 / 1e9),
        cpu_shares: pos("CpuShares").map(|v| v as u64),
        cpuset_cpus: Some(s(&hc["CpusetCpus"])).filter(|c| !c.is_empty()),
        // 0 and -1 are both "no limit"
        pids_limit: pos("PidsLimit"),
        blkio_weight: pos("BlkioWeight").map(|v| v.min(u16::MAX as i64) as u16),
    };
    if let Some(q) = pos("CpuQuota") {
        let period = pos("CpuPeriod").unwrap_or(crate::cgroup::CPU_PERIOD as i64);
        if r.cpus.is_some() {
            return Err(ApiError::bad(
                "conflicting options: NanoCpus and CpuQuota cannot both be set",
            ));
        }
        r.cpus = Some(q as f64 / period as f64);
    } else if pos("CpuPeriod").is_some() {
        return Err(ApiError::unsupported(
            "HostConfig.CpuPeriod without CpuQuota",
        ));
    }
    Ok(crate::runtime::limits::Limits {
        resources: r,
        shm_size: pos("ShmSize").unwrap_or(0),
        oom_score_adj: hc["OomScoreAdj"]
            .as_i64()
            .filter(|v| *v != 0)
            .map(|v| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_what_the_cli_sends() {
        let body = serde_json::json!({
            "Image": "busybox", "Cmd": ["sh", "-c", "echo hi"], "Env": ["A=1"], "Tty": true,
            "OpenStdin": true, "Entrypoint": [""], "WorkingDir": "/tmp", "User": "1:1",
            "Labels": {"a": "b"}, "Volumes": {"/data": {}}, "StopSignal": "",
            "HostConfig": {
                "Binds": ["/srv:/data:ro"], "NetworkMode": "bridge", "AutoRemove": true,
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
                "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
                "LogConfig": {"Type": "", "Config": {}}, "Memory": 0, "MemorySwappiness": null,
                "PidsLimit": null, "Tmpfs": {"/run": "size=1m"}, "ConsoleSize": [0, 0],
                "Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 20}],
            },
        });
        let o = options(&body, "/web", "docker.io/library/busybox:latest".into()).unwrap();
        assert_eq!(o.name, "web");
        assert_eq!(o.args, ["sh", "-c", "echo hi"]);
        assert_eq!(o.entrypoint, Some(vec![]));
        assert_eq!(o.volumes, ["/srv:/data:ro"]);
        let mounts = serde_json::json!({
            "Volumes": {"/anon": {}, "/named": {}},
            "HostConfig": {"Binds": ["db:/named"], "Mounts": [
                {"Type": "volume", "Source": "", "Target": "/m1", "VolumeOptions": {"NoCopy": true}},
                {"Type": "volume", "Source": "v2", "Target": "/m2", "ReadOnly": true},
                {"Type": "bind", "Source": "/srv", "Target": "/m3"},
                {"Type": "tmpfs", "Target": "/m4", "TmpfsOptions": {"SizeBytes": 1024, "Mode": 448}},
            ]},
        });
        let m = options(&mounts, "", "x".into()).unwrap();
        assert_eq!(
            m.volumes,
            ["db:/named", "/m1:nocopy", "v2:/m2:ro", "/srv:/m3", "/anon"]
        );
        assert_eq!(m.tmpfs, ["/m4:size=1024,mode=700"]);
        assert_eq!(o.tmpfs, ["/run:size=1m"]);
        assert!(o.publish.contains(&"8080:80/tcp".to_string()));
        assert!(o.publish.contains(&"127.0.0.1::53/udp".to_string()));
        assert_eq!(o.restart, "on-failure:3");
        assert_eq!(o.ulimits, ["nofile=10:20"]);
        assert!(o.auto_remove && o.tty && o.stdin);
        assert!(o.limits.resources.is_empty());
        let body = serde_json::json!({"HostConfig": {"Memory": 64 << 20, "NanoCpus": 500_000_000_i64, "PidsLimit": -1, "MemorySwap": -1}});
        let l = options(&body, "", "x".into()).unwrap().limits;
        assert_eq!(l.resources.memory, Some(64 << 20));
        assert_eq!(l.resources.cpus, Some(0.5));
        assert_eq!(l.resources.pids_limit, None);
        assert_eq!(l.resources.memory_swap, Some(-1));
    }

    #[test]
    fn refuses_what_nook_cannot_do_naming_it() {
        let cases = [
            (
                serde_json::json!({"HostConfig": {"ExtraHosts": ["a:1.2.3.4"]}}),
                "HostConfig.ExtraHosts",
            ),
            (
                serde_json::json!({"HostConfig": {"KernelMemory": 1000000}}),
                "HostConfig.KernelMemory",
            ),
            (
                serde_json::json!({"Healthcheck": {"Test": ["CMD", "true"]}}),
                "Config.Healthcheck",
            ),
            (
                serde_json::json!({"HostConfig": {"Mounts": [{"Type": "volume", "Source": "db", "Target": "/d", "VolumeOptions": {"DriverConfig": {"Name": "nfs"}}}]}}),
                "VolumeOptions.DriverConfig",
            ),
            (
                serde_json::json!({"HostConfig": {"LogConfig": {"Type": "syslog"}}}),
                "LogConfig.Type",
            ),
        ];
        for (body, want) in cases {
            let e = options(&body, "", "x".into()).unwrap_err();
            assert_eq!(e.status, hyper::StatusCode::BAD_REQUEST);
            assert!(e.message.contains(want), "{} lacks {want}", e.message);
        }
    }
}
