//! `/volumes`: create, list (filters name, label, dangling, driver), inspect, remove (force),
//! prune, over the volumes service nook's own `volume` commands use.

use std::collections::HashMap;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::{docker_time, empty, json as json_resp, no_route, ok_json, ApiError, Req, Res, NS};
use crate::services::volumes::{label_matches, PruneFilter, VolumeInfo};

pub async fn route(mut r: Req) -> Res {
    match (&r.method, r.seg(1), r.seg(2)) {
        (&Method::GET, "", "") => list(&r).await,
        (&Method::POST, "create", "") => create(&mut r).await,
        (&Method::POST, "prune", "") => prune(&r).await,
        (&Method::GET, name, "") => inspect(&r, name).await,
        (&Method::DELETE, name, "") => remove(&r, name).await,
        (&Method::PUT, _, "") => Err(ApiError::not_implemented(
            "updating a volume is for cluster volumes, which nook does not have",
        )),
        _ => Err(no_route(&r)),
    }
}

/// A volume as Docker shows it; `usage` adds UsageData (system df).
pub fn volume_json(i: &VolumeInfo, usage: Option<u64>) -> Value {
    let r = &i.volume.record;
    let mut v = json!({
        "Name": r.name,
        "Driver": r.driver,
        "Mountpoint": i.volume.mountpoint.display().to_string(),
        "CreatedAt": docker_time(r.created_at),
        "Labels": r.labels,
        "Scope": "local",
        "Options": {},
    });
    if let Some(size) = usage {
        v["UsageData"] = json!({"Size": size, "RefCount": i.users.len()});
    }
    v
}

async fn create(r: &mut Req) -> Res {
    let body: Value = r.json().await?;
    let s = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    let map = |k: &str| -> std::collections::BTreeMap<String, String> {
        body[k]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    if !body["ClusterVolumeSpec"].is_null() {
        return Err(ApiError::unsupported("ClusterVolumeSpec (cluster volumes)"));
    }
    let labels = map("Labels");
    crate::api::check_labels(&labels)?;
    let vol =
        r.d.volumes
            .create(
                NS,
                crate::volumes::CreateRequest {
                    name: s("Name"),
                    driver: s("Driver"),
                    options: map("DriverOpts"),
                    labels,
                    anonymous: false,
                },
            )
            .await?;
    let d = r.d.clone();
    let name = vol.record.name.clone();
    let i = crate::runtime::containers::blocking(move || d.volumes.inspect(NS, &name)).await?;
    Ok(json_resp(StatusCode::CREATED, &volume_json(&i, None)))
}

/// Whether a volume passes `filters` (name: substring; label; dangling; driver).
fn passes(i: &VolumeInfo, f: &HashMap<String, Vec<String>>) -> Result<bool, ApiError> {
    for k in f.keys() {
        if !["name", "label", "dangling", "driver"].contains(&k.as_str()) {
            return Err(ApiError::bad(format!(
                "invalid filter '{k}': use name, label, dangling or driver"
            )));
        }
    }
    let r = &i.volume.record;
    let any = |k: &str, pred: &dyn Fn(&str) -> bool| {
        f.get(k)
            .is_none_or(|vs| vs.is_empty() || vs.iter().any(|v| pred(v)))
    };
    let dangling = match f.get("dangling").and_then(|v| v.first()) {
        None => None,
        Some(v) => match v.as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            other => {
                return Err(ApiError::bad(format!(
                    "invalid filter 'dangling={other}': use true or false"
                )))
            }
        },
    };
    Ok(any("name", &|v| r.name.contains(v))
        && any("driver", &|v| r.driver == v)
        && f.get("label")
            .is_none_or(|ls| ls.iter().all(|l| label_matches(&r.labels, l)))
        && dangling.is_none_or(|d| d == i.users.is_empty()))
}

async fn list(r: &Req) -> Res {
    let f = r.filters()?;
    let d = r.d.clone();
    let all = crate::runtime::containers::blocking(move || d.volumes.list(NS)).await?;
    let mut out = Vec::new();
    for i in &all {
        if passes(i, &f)? {
            out.push(volume_json(i, None));
        }
    }
    ok_json(&json!({"Volumes": out, "Warnings": []}))
}

/// Docker's "no such volume" message for `name`.
fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("get {name}: no such volume"))
}

async fn inspect(r: &Req, name: &str) -> Res {
    let (d, n) = (r.d.clone(), name.to_string());
    match crate::runtime::containers::blocking(move || d.volumes.inspect(NS, &n)).await {
        Ok(i) => ok_json(&volume_json(&i, None)),
        Err(crate::error::Error::NotFound(_)) => Err(not_found(name)),
        Err(e) => Err(e.into()),
    }
}

async fn remove(r: &Req, name: &str) -> Res {
    match r.d.volumes.remove(NS, name, r.flag("force")).await {
        Ok(()) => empty(StatusCode::NO_CONTENT),
        Err(crate::error::Error::NotFound(_)) => Err(not_found(name)),
        Err(e) => Err(e.into()),
    }
}

async fn prune(r: &Req) -> Res {
    let f = r.filters()?;
    let mut pf = PruneFilter {
        // before API 1.42 prune removed named volumes too
        all: !r.at_least((1, 42)),
        ..Default::default()
    };
    for (k, vals) in &f {
        match k.as_str() {
            "all" => pf.all = vals.iter().any(|v| matches!(v.as_str(), "true" | "1")),
            "label" => pf.labels.extend(vals.iter().cloned()),
            "label!" => pf.not_labels.extend(vals.iter().cloned()),
            other => {
                return Err(ApiError::bad(format!(
                    "invalid filter '{other}': prune takes all, label and label!"
                )))
            }
        }
    }
    let p = r.d.volumes.prune(NS, &pf).await?;
    ok_json(&json!({"VolumesDeleted": p.removed, "SpaceReclaimed": p.reclaimed_bytes}))
}

/// The volumes for `system df`, with their sizes and reference counts.
pub async fn df(r: &Req) -> Result<Vec<Value>, ApiError> {
    let d = r.d.clone();
    let all = crate::runtime::containers::blocking(move || d.volumes.list(NS)).await?;
    let sizes = r.d.volumes.sizes(NS).await?;
    Ok(all
        .iter()
        .map(|i| {
            volume_json(
                i,
                Some(sizes.get(&i.volume.record.name).copied().unwrap_or(0)),
            )
        })
        .collect())
}
