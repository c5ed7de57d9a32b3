//! `/containers/*` and `/exec/*`: create, start, stop, kill, restart, pause, wait, remove,
//! logs, attach and exec (hijacked connections), inspect, list, top, resize, prune.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use super::{empty, no_route, ok_json, ApiError, Req, Res, NS};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::events::Filter;
use crate::runtime::containers::{ContainerRecord, Manager, Status as CStatus};

/// The containers' manager, or Docker's 500 saying why there is none.
pub fn manager(d: &Daemon) -> Result<Arc<Manager>, ApiError> {
    d.containers().cloned().map_err(ApiError::from)
}

/// The containers service (kill, pause, logs, prune).
pub(super) fn service(d: &Daemon) -> Result<Arc<crate::services::Containers>, ApiError> {
    d.container_service().cloned().map_err(ApiError::from)
}

/// Finds a container by id, id prefix or name (with or without Docker's leading `/`).
pub fn find(d: &Daemon, what: &str) -> Result<ContainerRecord, ApiError> {
    let what = what.trim_start_matches('/');
    manager(d)?.find(NS, what).map_err(|e| match e {
        Error::NotFound(_) => ApiError::not_found(format!("No such container: {what}")),
        other => other.into(),
    })
}

pub async fn route(mut r: Req) -> Res {
    let n = r.segs.len();
    if r.seg(0) == "exec" {
        return match (r.method.clone(), r.seg(2)) {
            (Method::POST, "start") if n == 3 => super::exec::exec_start(&mut r).await,
            (Method::GET, "json") if n == 3 => super::exec::exec_inspect(&r),
            (Method::POST, "resize") if n == 3 => super::exec::exec_resize(&r).await,
            _ => Err(no_route(&r)),
        };
    }
    match (r.method.clone(), n, r.seg(1).to_string()) {
        (Method::GET, 2, s) if s == "json" => list(&r).await,
        (Method::POST, 2, s) if s == "create" => create(&mut r).await,
        (Method::POST, 2, s) if s == "prune" => prune(&r).await,
        (Method::DELETE, 2, id) => remove(&r, &id).await,
        (m, 3, id) => {
            let action = r.seg(2).to_string();
            match (m, action.as_str()) {
                (Method::GET, "json") => inspect(&r, &id).await,
                (Method::POST, "start") => start(&r, &id).await,
                (Method::POST, "stop") => stop(&r, &id).await,
                (Method::POST, "restart") => restart(&r, &id).await,
                (Method::POST, "kill") => kill(&r, &id).await,
                (Method::POST, "pause") => pause(&r, &id, true).await,
                (Method::POST, "unpause") => pause(&r, &id, false).await,
                (Method::POST, "wait") => wait(&r, &id).await,
                (Method::GET, "logs") => logs(&r, &id).await,
                (Method::POST, "attach") => super::attach::attach(&mut r, &id).await,
                (Method::POST, "resize") => resize(&r, &id).await,
                (Method::GET, "top") => top(&r, &id).await,
                (Method::POST, "exec") => super::exec::exec_create(&mut r, &id).await,
                (Method::GET, "stats") => super::ops::stats(&r, &id).await,
                (Method::POST, "rename") => super::ops::rename(&r, &id).await,
                (Method::GET, "changes") => super::ops::changes(&r, &id).await,
                (Method::HEAD, "archive") => super::archive::archive_stat(&r, &id).await,
                (Method::GET, "archive") => super::archive::archive_get(&r, &id).await,
                (Method::PUT, "archive") => super::archive::archive_put(&mut r, &id).await,
                (Method::POST, "update") => super::ops::update(&mut r, &id).await,
                (Method::GET, "export") => Err(ApiError::not_implemented(
                    "export is not supported yet by nook",
                )),
                _ => Err(no_route(&r)),
            }
        }
        _ => Err(no_route(&r)),
    }
}

pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn ago(t: chrono::DateTime<chrono::Utc>) -> String {
    let s = (chrono::Utc::now() - t).num_seconds().max(0);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

/// Docker's state word for a container.
fn state(st: &CStatus) -> &'static str {
    match st.status().as_str() {
        "created" => "created",
        "running" => "running",
        "paused" => "paused",
        "exited" => "exited",
        _ => "dead",
    }
}

/// Docker's human status ("Up 3 seconds", "Exited (0) 2 minutes ago").
fn human(st: &CStatus) -> String {
    let t = st.task.as_ref();
    match st.status().as_str() {
        "running" | "paused" => {
            let up = t
                .and_then(|t| t.started_at.as_deref())
                .and_then(parse_time)
                .map(ago)
                .unwrap_or_default();
            if st.status().as_str() == "paused" {
                format!("Up {up} (Paused)")
            } else {
                format!("Up {up}")
            }
        }
        "exited" => {
            let when = t
                .and_then(|t| t.exit.as_ref())
                .and_then(|e| parse_time(&e.exited_at))
                .map(|t| format!(" {} ago", ago(t)))
                .unwrap_or_default();
            format!("Exited ({}){when}", st.exit_code())
        }
        "created" => "Created".into(),
        other => other.to_string(),
    }
}

fn ports(
    d: &Daemon,
    id: &str,
) -> (
    Vec<serde_json::Value>,
    serde_json::Map<String, serde_json::Value>,
    String,
    String,
    String,
) {
    let mut list = Vec::new();
    let mut map = serde_json::Map::new();
    let (mut ip, mut gw, mut net) = (String::new(), String::new(), String::new());
    if let Ok(Some(a)) = d.network.attachment(NS, id) {
        ip = a.ip.map(|i| i.to_string()).unwrap_or_default();
        gw = a.gateway.map(|i| i.to_string()).unwrap_or_default();
        net = a.network.clone();
        let live = !a.published.is_empty();
        for m in if live { &a.published } else { &a.ports } {
            let key = format!("{}/{}", m.container_port, m.proto);
            let hp = (m.host_port != 0).then_some(m.host_port);
            if live || hp.is_some() {
                list.push(serde_json::json!({
                    "IP": m.host_ip.to_string(),
                    "PrivatePort": m.container_port,
                    "PublicPort": hp,
                    "Type": m.proto.to_string(),
                }));
            }
            let entry = map.entry(key).or_insert_with(|| serde_json::json!([]));
            if let (Some(a), true) = (entry.as_array_mut(), live || hp.is_some()) {
                a.push(serde_json::json!({
                    "HostIp": m.host_ip.to_string(),
                    "HostPort": m.host_port.to_string(),
                }));
            }
        }
    }
    (list, map, ip, gw, net)
}

/// The image id (config digest) a container was made from, when the image is still there.
fn image_id(d: &Daemon, rec: &ContainerRecord) -> String {
    super::images::find(d, &rec.image)
        .ok()
        .and_then(|i| {
            crate::image::resolve(
                &d.content,
                &d.store,
                NS,
                &i.target,
                &crate::image::manifest::PlatformSelector::default(),
            )
            .ok()
        })
        .and_then(|p| p.into_iter().next())
        .map(|p| p.manifest.config.digest.to_string())
        .unwrap_or_else(|| rec.image_digest.clone())
}

fn container_summary(d: &Daemon, st: &CStatus) -> serde_json::Value {
    let rec = &st.record;
    let (plist, _, _, _, _) = ports(d, &rec.id);
    let att = d.network.attachment(NS, &rec.id).ok().flatten();
    let (nets, mode) =
        super::networks::container_networks(d, att.as_ref(), &rec.id, &rec.name, super::MAX_API);
    serde_json::json!({
        "Id": rec.id,
        "Names": [format!("/{}", rec.name)],
        "Image": super::images::familiar(&rec.image),
        "ImageID": image_id(d, rec),
        "Command": rec.command().join(" "),
        "Created": rec.created_at,
        "Ports": plist,
        "Labels": rec.labels,
        "State": state(st),
        "Status": human(st),
        "HostConfig": { "NetworkMode": mode },
        "NetworkSettings": { "Networks": nets },
        "Mounts": mounts(rec),
    })
}

fn mounts(rec: &ContainerRecord) -> Vec<serde_json::Value> {
    rec.spec["mounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| {
                    m["type"] == "bind"
                        || m["options"]
                            .as_array()
                            .is_some_and(|o| o.iter().any(|x| x == "rbind" || x == "bind"))
                })
                .filter(|m| {
                    let dst = m["destination"].as_str().unwrap_or_default();
                    ![
                        "/etc/hosts",
                        "/etc/resolv.conf",
                        "/etc/hostname",
                        "/sbin/docker-init",
                    ]
                    .contains(&dst)
                        && !dst.starts_with("/dev")
                        && !dst.starts_with("/sys")
                        && !dst.starts_with("/proc")
                })
                .map(|m| {
                    let ro = m["options"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|x| x == "ro"));
                    if let Some(v) = rec
                        .volumes
                        .iter()
                        .find(|v| m["destination"] == v.destination.as_str())
                    {
                        return serde_json::json!({
                            "Type": "volume",
                            "Name": v.name,
                            "Source": m["source"],
                            "Destination": m["destination"],
                            "Driver": crate::volumes::LOCAL,
                            "Mode": if ro { "ro" } else { "z" },
                            "RW": !ro,
                            "Propagation": "",
                        });
                    }
                    serde_json::json!({
                        "Type": "bind",
                        "Source": m["source"],
                        "Destination": m["destination"],
                        "Mode": if ro { "ro" } else { "" },
                        "RW": !ro,
                        "Propagation": "rprivate",
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Docker's container summaries, filtered (label, name, status, id, ancestor, exited).
pub async fn summaries(
    d: &Arc<Daemon>,
    all: bool,
    filters: &HashMap<String, Vec<String>>,
    _size: bool,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let m = manager(d)?;
    let mut recs = m.records(NS)?;
    recs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.name.cmp(&b.name)));
    let states = futures::future::join_all(recs.into_iter().map(|rec| m.status(NS, rec))).await;
    let mut out = Vec::new();
    let want_status = filters.get("status").filter(|v| !v.is_empty());
    for st in &states {
        if !all && !st.running() && want_status.is_none() {
            continue;
        }
        let v = container_summary(d, st);
        if passes(d, &v, st, filters) {
            out.push(v);
        }
    }
    Ok(out)
}

fn passes(
    d: &Daemon,
    v: &serde_json::Value,
    st: &CStatus,
    f: &HashMap<String, Vec<String>>,
) -> bool {
    let rec = &st.record;
    for (k, want) in f {
        if want.is_empty() {
            continue;
        }
        let ok = match k.as_str() {
            "label" => want.iter().all(|l| match l.split_once('=') {
                Some((k, val)) => rec.labels.get(k).is_some_and(|x| x == val),
                None => rec.labels.contains_key(l),
            }),
            "name" => want
                .iter()
                .any(|w| rec.name.contains(w.trim_start_matches('/'))),
            "id" => want.iter().any(|w| rec.id.starts_with(w.as_str())),
            "status" => want
                .iter()
                .any(|w| w == v["State"].as_str().unwrap_or_default()),
            "exited" => want.iter().any(|w| {
                st.status().as_str() == "exited" && w.parse::<i32>().ok() == Some(st.exit_code())
            }),
            "ancestor" => want.iter().any(|w| {
                super::images::find(d, w).is_ok_and(|i| i.name == rec.image)
                    || v["ImageID"].as_str().is_some_and(|id| {
                        id.trim_start_matches("sha256:")
                            .starts_with(w.trim_start_matches("sha256:"))
                    })
            }),
            "network" => want.iter().any(|w| {
                v["NetworkSettings"]["Networks"].get(w).is_some()
                    || v["HostConfig"]["NetworkMode"] == w.as_str()
            }),
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    true
}

async fn list(r: &Req) -> Res {
    let f = r.filters()?;
    for k in f.keys() {
        if ![
            "label", "name", "status", "id", "ancestor", "exited", "network",
        ]
        .contains(&k.as_str())
        {
            return Err(ApiError::bad(format!(
                "invalid filter '{k}' (nook serves label, name, status, id, ancestor, exited, network)"
            )));
        }
    }
    let mut v = summaries(&r.d, r.flag("all"), &f, r.flag("size")).await?;
    if let Some(n) = r.int("limit")?.filter(|n| *n > 0) {
        v.truncate(n as usize);
    }
    ok_json(&v)
}

async fn create(r: &mut Req) -> Res {
    let name = r.q("name").unwrap_or_default().to_string();
    if let Some(p) = r.q("platform").filter(|p| !p.is_empty()) {
        if p != "linux" && !p.starts_with("linux/") {
            return Err(ApiError::unsupported(&format!("platform {p:?}")));
        }
    }
    let body: serde_json::Value = r.json().await?;
    let image = body["Image"].as_str().unwrap_or_default().to_string();
    if image.is_empty() {
        return Err(ApiError::bad(
            "config cannot be empty in order to create a container: Image is required",
        ));
    }
    let d = r.d.clone();
    let rec = {
        let d = d.clone();
        let image = image.clone();
        tokio::task::spawn_blocking(move || super::images::find(&d, &image))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??
    };
    let opts = super::create::options(&body, &name, rec.name)?;
    let m = manager(&d)?;
    let c = m.create(NS, opts).await.map_err(|e| match e {
        Error::AlreadyExists(_) => {
            let holder = m
                .find(NS, &name)
                .map(|c| c.id)
                .unwrap_or_default();
            ApiError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". You have to remove (or rename) that container to be able to reuse that name."
            ))
        }
        Error::InvalidArgument(m) => ApiError::bad(m),
        other => other.into(),
    })?;
    Ok(super::json(
        StatusCode::CREATED,
        &serde_json::json!({ "Id": c.id, "Warnings": [] }),
    ))
}

async fn inspect(r: &Req, id: &str) -> Res {
    let d = &r.d;
    let rec = find(d, id)?;
    let m = manager(d)?;
    let st = m.status(NS, rec.clone()).await;
    let bundle = m.tasks.bundle_dir(NS, &rec.id);
    let (_, pmap, ip, gw, _) = ports(d, &rec.id);
    let args = rec.command();
    let p = &rec.spec["process"];
    let t = st.task.as_ref();
    let user = format!(
        "{}:{}",
        p["user"]["uid"].as_u64().unwrap_or(0),
        p["user"]["gid"].as_u64().unwrap_or(0)
    );
    let att = d.network.attachment(NS, &rec.id).ok().flatten();
    let (nets, mode) =
        super::networks::container_networks(d, att.as_ref(), &rec.id, &rec.name, r.version);
    let v = serde_json::json!({
        "Id": rec.id,
        "Created": super::docker_time(rec.created_at),
        "Path": args.first().cloned().unwrap_or_default(),
        "Args": args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": state(&st),
            "Running": st.running(),
            "Paused": st.status().as_str() == "paused",
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": t.map(|t| t.pid).filter(|_| st.running()).unwrap_or(0),
            "ExitCode": st.exit_code(),
            "Error": "",
            "StartedAt": t.and_then(|t| t.started_at.clone()).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": t.and_then(|t| t.exit.as_ref().map(|e| e.exited_at.clone())).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        },
        "Image": image_id(d, &rec),
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": bundle.join(crate::shim::files::LOG),
        "Name": format!("/{}", rec.name),
        "RestartCount": rec.restart_count,
        "Driver": rec.snapshotter,
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": {
            "NetworkMode": mode,
            "PortBindings": pmap,
            "RestartPolicy": {
                "Name": rec.restart_policy.name(),
                "MaximumRetryCount": rec.restart_policy.max_retries(),
            },
            "AutoRemove": rec.auto_remove,
            "Runtime": rec.runtime,
            "Privileged": false,
            "ReadonlyRootfs": rec.spec["root"]["readonly"].as_bool().unwrap_or(false),
            "LogConfig": { "Type": "json-file", "Config": {} },
        },
        "GraphDriver": { "Name": rec.snapshotter, "Data": {} },
        "Mounts": mounts(&rec),
        "Config": {
            "Hostname": rec.spec["hostname"],
            "Domainname": "",
            "User": user,
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "Tty": rec.tty,
            "OpenStdin": rec.stdin,
            "StdinOnce": false,
            "Env": p["env"],
            "Cmd": args,
            "Image": super::images::familiar(&rec.image),
            "Volumes": null,
            "WorkingDir": p["cwd"],
            "Entrypoint": null,
            "OnBuild": null,
            "Labels": rec.labels,
        },
        "NetworkSettings": {
            "Ports": pmap,
            "IPAddress": ip,
            "Gateway": gw,
            "IPPrefixLen": 0,
            "MacAddress": "",
            "Networks": nets,
        },
    });
    ok_json(&v)
}

async fn start(r: &Req, id: &str) -> Res {
    let d = &r.d;
    let rec = find(d, id)?;
    let m = manager(d)?;
    let st = m.status(NS, rec.clone()).await;
    if st.running() {
        return empty(StatusCode::NOT_MODIFIED);
    }
    m.user_started(NS, &rec)?;
    m.start(NS, &rec).await?;
    empty(StatusCode::NO_CONTENT)
}

fn signal_number(s: &str) -> Result<i32, ApiError> {
    if s.is_empty() {
        return Ok(0);
    }
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        _ => return Err(ApiError::bad(format!("invalid signal: {s}"))),
    };
    Ok(n)
}

async fn stop_inner(r: &Req, rec: &ContainerRecord) -> Result<bool, ApiError> {
    let d = &r.d;
    let m = manager(d)?;
    let st = m.status(NS, rec.clone()).await;
    if !st.running() {
        return Ok(false);
    }
    let t = r.int("t")?.or(r.int("timeout")?).unwrap_or(10).max(0) as u64;
    let sig = signal_number(r.q("signal").unwrap_or_default())?;
    m.user_stopped(NS, rec)?;
    m.stop(NS, rec, Duration::from_secs(t), sig).await?;
    Ok(true)
}

async fn stop(r: &Req, id: &str) -> Res {
    let rec = find(&r.d, id)?;
    if stop_inner(r, &rec).await? {
        empty(StatusCode::NO_CONTENT)
    } else {
        empty(StatusCode::NOT_MODIFIED)
    }
}

async fn restart(r: &Req, id: &str) -> Res {
    let d = &r.d;
    let rec = find(d, id)?;
    stop_inner(r, &rec).await?;
    let m = manager(d)?;
    m.user_started(NS, &rec)?;
    m.start(NS, &rec).await?;
    empty(StatusCode::NO_CONTENT)
}

async fn kill(r: &Req, id: &str) -> Res {
    let d = &r.d;
    let rec = find(d, id)?;
    let m = manager(d)?;
    let st = m.status(NS, rec.clone()).await;
    if !st.running() {
        return Err(ApiError::conflict(format!(
            "Cannot kill container: {id}: container {} is not running",
            rec.id
        )));
    }
    let sig = match signal_number(r.q("signal").unwrap_or_default())? {
        0 => libc::SIGKILL,
        n => n,
    };
    service(d)?.kill(NS, &rec, sig, false).await?;
    empty(StatusCode::NO_CONTENT)
}

async fn pause(r: &Req, id: &str, pause: bool) -> Res {
    let d = &r.d;
    let rec = find(d, id)?;
    let m = manager(d)?;
    let st = m.status(NS, rec.clone()).await;
    if !st.running() {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            rec.id
        )));
    }
    service(d)?.pause(NS, &rec, pause).await?;
    empty(StatusCode::NO_CONTENT)
}

/// Waits for `condition` (not-running, next-exit, removed); the headers go at once, the
/// result when the condition is met.
async fn wait(r: &Req, id: &str) -> Res {
    let d = r.d.clone();
    let cond = r.q("condition").unwrap_or("not-running").to_string();
    if !["", "not-running", "next-exit", "removed"].contains(&cond.as_str()) {
        return Err(ApiError::bad(format!("invalid condition: {cond:?}")));
    }
    let mut sub = d.bus.subscribe(Filter {
        topics: vec!["/tasks/exit".into(), "/containers/delete".into()],
        namespaces: vec![NS.into()],
    });
    let rec = find(&d, id)?;
    let m = manager(&d)?;
    let st = m.status(NS, rec.clone()).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let mut code = st.exit_code();
        let done = |code: i32| {
            let mut b =
                serde_json::to_vec(&serde_json::json!({ "StatusCode": code, "Error": null }))
                    .unwrap_or_default();
            b.push(b'\n');
            Bytes::from(b)
        };
        if (cond.is_empty() || cond == "not-running") && !st.running() {
            let _ = tx.send(done(code)).await;
            return;
        }
        loop {
            let ev = tokio::select! {
                e = tokio::time::timeout(Duration::from_millis(500), sub.next()) => e,
                _ = tx.closed() => return,
            };
            match ev {
                Ok(Some(e)) if e.get("id") == Some(rec.id.as_str()) => {
                    if e.topic == "/tasks/exit" {
                        code = e
                            .get("exit_code")
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(code);
                        if cond != "removed" {
                            break;
                        }
                    } else if cond == "removed" {
                        // the record goes last: wait for it, so the name is free on return
                        for _ in 0..400 {
                            if m.find(NS, &rec.id).is_err() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        break;
                    } else {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => {
                    // no event for a while: look (an exit seen before we subscribed)
                    match m.find(NS, &rec.id) {
                        Err(_) => break,
                        Ok(now) => {
                            let s = m.status(NS, now).await;
                            if cond != "removed"
                                && s.status().as_str() == "exited"
                                && cond != "next-exit"
                            {
                                code = s.exit_code();
                                break;
                            }
                        }
                    }
                }
            }
        }
        let _ = tx.send(done(code)).await;
    });
    Ok(super::streamed("application/json", rx))
}

async fn remove(r: &Req, id: &str) -> Res {
    let d = &r.d;
    let rec = find(d, id)?;
    if r.flag("link") {
        return Err(ApiError::unsupported("removing links (link=1)"));
    }
    let force = r.flag("force");
    let m = manager(d)?;
    if !force {
        let st = m.status(NS, rec.clone()).await;
        if st.running() {
            return Err(ApiError::conflict(format!(
                "cannot remove container \"/{}\": container is {}: stop the container before removing or force remove",
                rec.name,
                state(&st)
            )));
        }
    }
    m.remove_with_volumes(NS, &rec, force, r.flag("v") || rec.auto_remove)
        .await?;
    empty(StatusCode::NO_CONTENT)
}

async fn prune(r: &Req) -> Res {
    let f = r.filters()?;
    if !f.is_empty() {
        return Err(ApiError::unsupported("container prune filters"));
    }
    let p = service(&r.d)?.prune(NS).await?;
    ok_json(&serde_json::json!({
        "ContainersDeleted": p.removed.iter().map(|s| s.record.id.clone()).collect::<Vec<_>>(),
        "SpaceReclaimed": p.reclaimed_bytes,
    }))
}

pub async fn logs(r: &Req, id: &str) -> Res {
    let d = r.d.clone();
    let rec = find(&d, id)?;
    let (out, err) = (r.flag("stdout"), r.flag("stderr"));
    if !out && !err {
        return Err(ApiError::bad("you must choose at least one stream"));
    }
    let follow = r.flag("follow");
    let ts = r.flag("timestamps");
    let tail = match r.q("tail") {
        None | Some("") | Some("all") => None,
        Some(t) => Some(
            t.parse::<usize>()
                .map_err(|_| ApiError::bad(format!("invalid tail {t:?}")))?,
        ),
    };
    let since = r.int("since")?.unwrap_or(0);
    let until = r.int("until")?.unwrap_or(0);
    let tty = rec.tty;
    let mut entries = service(&d)?.logs(NS, &rec, tail, follow, 0, false);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let id = rec.id.clone();
    tokio::spawn(async move {
        while let Some(e) = entries.recv().await {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    tracing::warn!("docker logs {id}: {err}");
                    return;
                }
            };
            let secs = parse_time(&e.time).map(|t| t.timestamp()).unwrap_or(0);
            if (since > 0 && secs < since) || (until > 0 && secs >= until) {
                continue;
            }
            let stream = if e.stream == "stderr" { 2 } else { 1 };
            if (stream == 1 && !out) || (stream == 2 && !err) {
                continue;
            }
            let mut data = Vec::new();
            if ts {
                data.extend_from_slice(e.time.as_bytes());
                data.push(b' ');
            }
            data.extend_from_slice(&e.data);
            let b = Bytes::from(if tty {
                data
            } else {
                super::attach::frame(stream, &data)
            });
            if tx.send(b).await.is_err() {
                return;
            }
        }
    });
    let ct = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok(super::streamed(ct, rx))
}

async fn resize(r: &Req, id: &str) -> Res {
    let rec = find(&r.d, id)?;
    let (h, w) = (r.int("h")?.unwrap_or(0), r.int("w")?.unwrap_or(0));
    if h <= 0 || w <= 0 {
        return empty(StatusCode::OK);
    }
    manager(&r.d)?
        .tasks
        .client(NS, &rec.id)
        .resize(None, w.min(65535) as u16, h.min(65535) as u16)
        .await?;
    empty(StatusCode::OK)
}

async fn top(r: &Req, id: &str) -> Res {
    let rec = find(&r.d, id)?;
    if r.q("ps_args").is_some_and(|a| !a.is_empty() && a != "-ef") {
        return Err(ApiError::unsupported("top ps_args"));
    }
    let m = manager(&r.d)?;
    if !m.status(NS, rec.clone()).await.running() {
        return Err(ApiError::conflict(format!(
            "container {} is not running",
            rec.id
        )));
    }
    let rows = m.top(NS, &rec).await?;
    ok_json(&serde_json::json!({ "Titles": ["PID", "UID", "CMD"], "Processes": rows }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_signals() {
        assert_eq!(
            super::super::attach::frame(2, b"hi"),
            vec![2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']
        );
        assert_eq!(signal_number("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(signal_number("kill").unwrap(), libc::SIGKILL);
        assert_eq!(signal_number("9").unwrap(), 9);
        assert!(signal_number("NOPE").is_err());
    }
}
