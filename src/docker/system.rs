//! `/_ping`, `/version`, `/info`, `/events`, `/system/df`, `/auth`.

use std::collections::HashMap;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use super::{fmt_ver, full, no_route, ok_json, ApiError, Req, Res, MAX_API, MIN_API, NS};
use crate::events::{Event, Filter};

pub async fn route(r: Req) -> Res {
    match (&r.method, r.seg(0), r.seg(1)) {
        (&Method::GET | &Method::HEAD, "_ping", "") => ping(&r),
        (&Method::GET, "version", "") => version(&r),
        (&Method::GET, "info", "") => info(&r).await,
        (&Method::GET, "events", "") => events(&r),
        (&Method::GET, "system", "df") => df(&r).await,
        (&Method::POST, "auth", "") => Err(ApiError::not_implemented(
            "registry login through the Docker API is not supported yet: use `nook login REGISTRY` (pulls also take credentials from ~/.docker/config.json and X-Registry-Auth)",
        )),
        _ => Err(no_route(&r)),
    }
}

fn ping(r: &Req) -> Res {
    let body = if r.method == Method::HEAD {
        full(Vec::new())
    } else {
        full(&b"OK"[..])
    };
    hyper::Response::builder()
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Cache-Control", "no-cache, no-store, must-revalidate")
        .header("Pragma", "no-cache")
        .header("Builder-Version", "1")
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().to_string())
        .unwrap_or_default()
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn version(_r: &Req) -> Res {
    let v = crate::VERSION;
    ok_json(&serde_json::json!({
        "Platform": { "Name": format!("nook {v}") },
        "Components": [{
            "Name": "Engine",
            "Version": v,
            "Details": {
                "ApiVersion": fmt_ver(MAX_API),
                "MinAPIVersion": fmt_ver(MIN_API),
                "Os": "linux",
                "Arch": arch(),
                "KernelVersion": kernel(),
                "Experimental": "false",
            },
        }],
        "Version": v,
        "ApiVersion": fmt_ver(MAX_API),
        "MinAPIVersion": fmt_ver(MIN_API),
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel(),
        "BuildTime": "",
    }))
}

async fn info(r: &Req) -> Res {
    let d = r.d.clone();
    let m = super::containers::manager(&d)?;
    let recs = m.records(NS)?;
    let (mut running, mut paused, mut stopped) = (0, 0, 0);
    for rec in &recs {
        match m.status(NS, rec.clone()).await.status().as_str() {
            "running" => running += 1,
            "paused" => paused += 1,
            _ => stopped += 1,
        }
    }
    let images = crate::image::list(&d.store, NS)?.len();
    let (ncpu, mem) = (
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        mem_total(),
    );
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut runtimes = serde_json::Map::new();
    for (name, rt) in &d.config.runtimes {
        runtimes.insert(name.clone(), serde_json::json!({ "path": rt.path }));
    }
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into());
    let mut v = serde_json::json!({
        "ID": format!("nook-{}", d.host_uid),
        "Containers": recs.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": images,
        "Driver": d.snapshotters.default_name(),
        "DriverStatus": [],
        "Plugins": { "Volume": [], "Network": ["bridge", "host", "null"], "Log": ["json-file"] },
        "MemoryLimit": false,
        "SwapLimit": false,
        "CpuCfsPeriod": false,
        "CpuCfsQuota": false,
        "CPUShares": false,
        "CPUSet": false,
        "PidsLimit": false,
        "OomKillDisable": false,
        "IPv4Forwarding": true,
        "Debug": false,
        "NFd": 0,
        "NGoroutines": 0,
    });
    let more = serde_json::json!({
        "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": "1",
        "KernelVersion": kernel(),
        "OperatingSystem": os,
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": ncpu,
        "MemTotal": mem,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": { "IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": [] },
        "DockerRootDir": d.paths.root.display().to_string(),
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": crate::VERSION,
        "Runtimes": runtimes,
        "DefaultRuntime": crate::runtime::plugin::default_name(&d.config),
        "Swarm": { "LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false, "Error": "", "RemoteManagers": null },
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "docker-init",
        "SecurityOptions": ["name=seccomp,profile=builtin", "name=rootless"],
        "Warnings": [],
    });
    if let (Some(a), serde_json::Value::Object(b)) = (v.as_object_mut(), more) {
        a.extend(b);
    }
    ok_json(&v)
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// A nook event as Docker's: (Type, Action), or None for events Docker has no word for.
fn docker_event(e: &Event) -> Option<serde_json::Value> {
    let (ty, action) = match e.topic.as_str() {
        "/containers/create" => ("container", "create".to_string()),
        "/containers/delete" => ("container", "destroy".into()),
        "/containers/rename" => ("container", "rename".into()),
        "/tasks/start" => ("container", "start".into()),
        "/tasks/exit" => ("container", "die".into()),
        "/tasks/paused" => ("container", "pause".into()),
        "/tasks/resumed" => ("container", "unpause".into()),
        "/images/create" => ("image", "pull".into()),
        "/images/update" => ("image", "tag".into()),
        "/images/delete" => ("image", "delete".into()),
        "/networks/create" => ("network", "create".into()),
        "/networks/delete" => ("network", "destroy".into()),
        "/networks/connect" => ("network", "connect".into()),
        "/networks/disconnect" => ("network", "disconnect".into()),
        "/volumes/create" => ("volume", "create".into()),
        "/volumes/delete" => ("volume", "destroy".into()),
        _ => return None,
    };
    let mut attrs = serde_json::Map::new();
    for (k, v) in &e.attributes {
        let k = match k.as_str() {
            "exit_code" => "exitCode",
            other => other,
        };
        attrs.insert(k.to_string(), serde_json::Value::String(v.clone()));
    }
    // connect/disconnect: Docker's actor is the network, its `container` attribute the
    // container (nook's event names the container `name`)
    if let Some(net) = e.get("network") {
        attrs.insert("name".into(), serde_json::Value::String(net.to_string()));
        attrs.insert("type".into(), "bridge".into());
    }
    let id = e
        .get("id")
        .or_else(|| e.get("network"))
        .or_else(|| e.get("name"))
        .unwrap_or_default()
        .to_string();
    let t = chrono::DateTime::parse_from_rfc3339(&e.timestamp)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    let from = e.get("image").unwrap_or_default().to_string();
    Some(serde_json::json!({
        "status": action,
        "id": id,
        "from": from,
        "Type": ty,
        "Action": action,
        "Actor": { "ID": id, "Attributes": attrs },
        "scope": "local",
        "time": t.timestamp(),
        "timeNano": t.timestamp_nanos_opt().unwrap_or(0),
    }))
}

/// Whether a Docker event passes `filters` (type, event, container, image, network, label).
fn passes(ev: &serde_json::Value, f: &HashMap<String, Vec<String>>) -> bool {
    let s = |p: &str| ev.pointer(p).and_then(|v| v.as_str()).unwrap_or_default();
    let any = |key: &str, vals: &[&str]| {
        f.get(key)
            .is_none_or(|want| want.is_empty() || want.iter().any(|w| vals.contains(&w.as_str())))
    };
    let ty = s("/Type");
    let id = s("/Actor/ID");
    let name = s("/Actor/Attributes/name");
    any("type", &[ty])
        && any("event", &[s("/Action")])
        && (ty != "container" || any("container", &[id, name]))
        && (!f.contains_key("container") || ty == "container")
        && (!f.contains_key("image") || any("image", &[s("/from"), s("/Actor/Attributes/image")]))
        && (!f.contains_key("network") || (ty == "network" && any("network", &[id, name])))
        && f.get("label").is_none_or(|ls| {
            ls.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => s(&format!("/Actor/Attributes/{k}")) == v,
                None => ev.pointer(&format!("/Actor/Attributes/{l}")).is_some(),
            })
        })
}

fn parse_time(v: &str) -> Result<f64, ApiError> {
    v.parse::<f64>()
        .or_else(|_| {
            chrono::DateTime::parse_from_rfc3339(v).map(|t| t.timestamp_millis() as f64 / 1000.0)
        })
        .map_err(|_| ApiError::bad(format!("invalid time {v:?}: a Unix timestamp or RFC 3339")))
}

fn events(r: &Req) -> Res {
    let filters = r.filters()?;
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let until = r
        .q("until")
        .filter(|v| !v.is_empty())
        .map(parse_time)
        .transpose()?;
    if let Some(s) = r.q("since").filter(|v| !v.is_empty()) {
        parse_time(s)?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut sub = r.d.bus.subscribe(Filter {
        topics: Vec::new(),
        namespaces: vec![NS.to_string()],
    });
    tokio::spawn(async move {
        let deadline = until.map(|u| {
            tokio::time::Instant::now() + std::time::Duration::from_secs_f64((u - now).max(0.0))
        });
        loop {
            let next = async {
                match deadline {
                    Some(t) => tokio::time::timeout_at(t, sub.next()).await.ok().flatten(),
                    None => sub.next().await,
                }
            };
            tokio::select! {
                e = next => {
                    let Some(e) = e else { return };
                    let Some(ev) = docker_event(&e) else { continue };
                    if !passes(&ev, &filters) {
                        continue;
                    }
                    let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                    line.push(b'\n');
                    if tx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    Ok(super::streamed("application/json", rx))
}

async fn df(r: &Req) -> Res {
    let d = r.d.clone();
    let images = super::images::summaries(&d, &HashMap::new()).await?;
    let containers = super::containers::summaries(&d, true, &HashMap::new(), true).await?;
    let volumes = super::volumes::df(r).await?;
    let layers: u64 = images.iter().filter_map(|i| i["Size"].as_u64()).sum();
    ok_json(&serde_json::json!({
        "LayersSize": layers,
        "Images": images,
        "Containers": containers,
        "Volumes": volumes,
        "BuildCache": [],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_translate_and_filter() {
        let e = Event::new(
            "default",
            "/tasks/exit",
            &[
                ("id", "abc".into()),
                ("name", "web".into()),
                ("exit_code", "3".into()),
            ],
        );
        let ev = docker_event(&e).unwrap();
        assert_eq!(ev["Type"], "container");
        assert_eq!(ev["Action"], "die");
        assert_eq!(ev["Actor"]["Attributes"]["exitCode"], "3");
        let f = |k: &str, v: &str| HashMap::from([(k.to_string(), vec![v.to_string()])]);
        assert!(passes(&ev, &f("container", "web")));
        assert!(passes(&ev, &f("event", "die")));
        assert!(!passes(&ev, &f("event", "start")));
        assert!(!passes(&ev, &f("type", "image")));
        assert!(docker_event(&Event::new("default", "/snapshot/prepare", &[])).is_none());
    }
}
