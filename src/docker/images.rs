//! `/images/*`: pull (create) with Docker's progress stream, list, inspect, tag, delete,
//! history, save (get) and load; search, build and commit answer 501.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use super::{empty, no_route, ok_json, ApiError, Req, Res, NS};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::image::manifest::PlatformSelector;
use crate::image::pull::{BlobKind, BlobState, Progress, PullOptions};
use crate::image::{self, ImageRecord, Reference};

pub async fn route(mut r: Req) -> Res {
    let n = r.segs.len();
    match (r.method.clone(), r.seg(0), r.seg(1)) {
        (Method::POST, "build", _) => Err(ApiError::not_implemented(
            "build is not supported yet: nook cannot build images; build elsewhere and `docker load` (or push to a registry and pull)",
        )),
        (Method::POST, "commit", _) => Err(ApiError::not_implemented(
            "commit is not supported yet by nook",
        )),
        (Method::GET, "images", "json") if n == 2 => list(&r).await,
        (Method::POST, "images", "create") if n == 2 => create(&mut r).await,
        (Method::GET, "images", "search") if n == 2 => Err(ApiError::not_implemented(
            "search is not supported: nook reaches registries by name only (there is no index to search)",
        )),
        (Method::POST, "images", "load") if n == 2 => load(&mut r).await,
        (Method::GET, "images", "get") if n == 2 => {
            let names: Vec<String> = form_urlencoded::parse(
                r.parts.uri.query().unwrap_or_default().as_bytes(),
            )
            .filter(|(k, _)| k == "names")
            .map(|(_, v)| v.into_owned())
            .collect();
            save(&r, names).await
        }
        (Method::POST, "images", "prune") if n == 2 => Err(ApiError::not_implemented(
            "image prune through the Docker API is not supported yet: use `nook image prune`",
        )),
        (Method::DELETE, "images", _) if n >= 2 => {
            let name = r.segs[1..].join("/");
            delete(&r, &name).await
        }
        (m, "images", _) if n >= 3 => {
            let name = r.segs[1..n - 1].join("/");
            match (m, r.seg(n - 1)) {
                (Method::GET, "json") => inspect(&r, &name).await,
                (Method::GET, "history") => history(&r, &name).await,
                (Method::POST, "tag") => tag(&r, &name).await,
                (Method::GET, "get") => save(&r, vec![name]).await,
                (Method::POST, "push") => Err(ApiError::not_implemented(
                    "push through the Docker API is not supported yet: use `nook push`",
                )),
                _ => Err(no_route(&r)),
            }
        }
        _ => Err(no_route(&r)),
    }
}

/// `docker.io/library/busybox:latest` → `busybox:latest`, as Docker shows names.
pub fn familiar(name: &str) -> String {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
        .to_string()
}

/// An image's facts for this machine's platform.
struct Resolved {
    rec: ImageRecord,
    /// The config's digest: Docker's image id.
    id: String,
    config: serde_json::Value,
    size: u64,
    diff_ids: Vec<String>,
}

fn resolve(d: &Daemon, rec: ImageRecord) -> crate::error::Result<Resolved> {
    let p = image::resolve(
        &d.content,
        &d.store,
        NS,
        &rec.target,
        &PlatformSelector::default(),
    )?;
    let p = p.into_iter().next().ok_or_else(|| {
        Error::NotFound(format!(
            "image {} has no platform for this machine",
            rec.name
        ))
    })?;
    let config: serde_json::Value = serde_json::from_slice(&p.config_bytes)?;
    let size: u64 = p.layers.iter().map(|l| l.descriptor.size).sum();
    Ok(Resolved {
        id: p.manifest.config.digest.to_string(),
        diff_ids: p.layers.iter().map(|l| l.diff_id.to_string()).collect(),
        config,
        size,
        rec,
    })
}

/// Finds an image by name (Docker's short forms too), by id (config digest, or a prefix of it
/// of at least 4 hex digits) or by its manifest digest; Docker's 404 when none.
pub fn find(d: &Daemon, what: &str) -> Result<ImageRecord, ApiError> {
    if let Ok(r) = Reference::parse(what) {
        if let Ok(rec) = image::get(&d.store, NS, &r.to_string()) {
            return Ok(rec);
        }
    }
    let hex = what.strip_prefix("sha256:").unwrap_or(what);
    if hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let mut hits = Vec::new();
        for rec in image::list(&d.store, NS)? {
            let target = rec.target.digest.to_string();
            let id = resolve(d, rec.clone()).map(|r| r.id).unwrap_or_default();
            if id.trim_start_matches("sha256:").starts_with(hex)
                || target.trim_start_matches("sha256:").starts_with(hex)
            {
                hits.push(rec);
            }
        }
        if let Some(first) = hits.first() {
            return Ok(first.clone());
        }
    }
    Err(ApiError::not_found(format!("No such image: {what}")))
}

fn summary(r: &Resolved, all_names: &[String]) -> serde_json::Value {
    let created = r.config["created"]
        .as_str()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.timestamp())
        .unwrap_or(r.rec.created_at);
    let (tags, digests): (Vec<String>, Vec<String>) = {
        let mut tags = Vec::new();
        let mut digests = Vec::new();
        for n in all_names {
            let base = Reference::parse(n)
                .map(|x| x.name())
                .unwrap_or_else(|_| n.clone());
            if n.contains('@') {
                digests.push(familiar(n));
            } else {
                tags.push(familiar(n));
                digests.push(format!("{}@{}", familiar(&base), r.rec.target.digest));
            }
        }
        digests.sort();
        digests.dedup();
        (tags, digests)
    };
    serde_json::json!({
        "Id": r.id,
        "ParentId": "",
        "RepoTags": tags,
        "RepoDigests": digests,
        "Created": created,
        "Size": r.size,
        "SharedSize": -1,
        "VirtualSize": r.size,
        "Labels": r.config["config"]["Labels"].as_object().cloned().unwrap_or_default(),
        "Containers": -1,
    })
}

/// Docker's image summaries (one per image id, with every name of it), filtered.
pub async fn summaries(
    d: &Arc<Daemon>,
    filters: &HashMap<String, Vec<String>>,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let d = d.clone();
    let filters = filters.clone();
    blocking(move || {
        let mut by_id: BTreeMap<String, (Resolved, Vec<String>)> = BTreeMap::new();
        for rec in image::list(&d.store, NS)? {
            let Ok(r) = resolve(&d, rec.clone()) else {
                continue;
            };
            by_id
                .entry(r.id.clone())
                .or_insert_with(|| (r, Vec::new()))
                .1
                .push(rec.name);
        }
        let mut out = Vec::new();
        for (r, names) in by_id.values() {
            let v = summary(r, names);
            if !image_passes(&v, &filters) {
                continue;
            }
            out.push(v);
        }
        out.sort_by_key(|v| -v["Created"].as_i64().unwrap_or(0));
        Ok(out)
    })
    .await
}

fn image_passes(v: &serde_json::Value, f: &HashMap<String, Vec<String>>) -> bool {
    let tags: Vec<&str> = v["RepoTags"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    for (k, want) in f {
        if want.is_empty() {
            continue;
        }
        let ok = match k.as_str() {
            "reference" => want.iter().any(|w| {
                tags.iter().any(|t| {
                    let w = w.as_str();
                    *t == w
                        || t.split(':').next() == Some(w)
                        || glob_match(w, t)
                        || glob_match(w, t.split(':').next().unwrap_or(t))
                })
            }),
            "dangling" => want.iter().any(|w| (w == "true") == tags.is_empty()),
            "label" => want.iter().all(|l| match l.split_once('=') {
                Some((k, val)) => v["Labels"][k].as_str() == Some(val),
                None => v["Labels"].get(l).is_some(),
            }),
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// `*` wildcards (reference filters).
fn glob_match(pat: &str, s: &str) -> bool {
    if !pat.contains('*') {
        return pat == s;
    }
    let parts: Vec<&str> = pat.split('*').collect();
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else if let Some(pos) = rest.find(p) {
            rest = &rest[pos + p.len()..];
        } else {
            return false;
        }
    }
    true
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    })?
}

async fn list(r: &Req) -> Res {
    let mut f = r.filters()?;
    if let Some(name) = r.q("filter").filter(|s| !s.is_empty()) {
        f.entry("reference".into()).or_default().push(name.into());
    }
    for k in f.keys() {
        if !["reference", "dangling", "label", "before", "since", "until"].contains(&k.as_str()) {
            return Err(ApiError::bad(format!("invalid filter '{k}'")));
        }
    }
    ok_json(&summaries(&r.d, &f).await?)
}

async fn inspect(r: &Req, name: &str) -> Res {
    let d = r.d.clone();
    let name = name.to_string();
    let v = blocking(move || {
        let rec = find(&d, &name)?;
        let res = resolve(&d, rec.clone())?;
        let names: Vec<String> = image::list(&d.store, NS)?
            .into_iter()
            .filter(|x| x.target.digest == rec.target.digest)
            .map(|x| x.name)
            .collect();
        let s = summary(&res, &names);
        let c = &res.config;
        Ok(serde_json::json!({
            "Id": res.id,
            "RepoTags": s["RepoTags"],
            "RepoDigests": s["RepoDigests"],
            "Parent": "",
            "Comment": c["comment"].as_str().unwrap_or_default(),
            "Created": c["created"].as_str().map(str::to_string).unwrap_or_else(|| super::docker_time(rec.created_at)),
            "DockerVersion": c["docker_version"].as_str().unwrap_or_default(),
            "Author": c["author"].as_str().unwrap_or_default(),
            "Config": c["config"],
            "Architecture": c["architecture"],
            "Variant": c["variant"],
            "Os": c["os"],
            "Size": res.size,
            "VirtualSize": res.size,
            "GraphDriver": { "Name": d.snapshotters.default_name(), "Data": {} },
            "RootFS": { "Type": "layers", "Layers": res.diff_ids },
            "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
        }))
    })
    .await?;
    ok_json(&v)
}

async fn history(r: &Req, name: &str) -> Res {
    let d = r.d.clone();
    let name = name.to_string();
    let v = blocking(move || {
        let rec = find(&d, &name)?;
        let res = resolve(&d, rec.clone())?;
        let hist = res.config["history"].as_array().cloned().unwrap_or_default();
        let mut out = Vec::new();
        let mut layer = res.diff_ids.len();
        for (i, h) in hist.iter().enumerate().rev() {
            let empty = h["empty_layer"].as_bool().unwrap_or(false);
            if !empty {
                layer = layer.saturating_sub(1);
            }
            out.push(serde_json::json!({
                "Id": if i == hist.len() - 1 { res.id.clone() } else { "<missing>".to_string() },
                "Created": h["created"].as_str().and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()).map(|t| t.timestamp()).unwrap_or(0),
                "CreatedBy": h["created_by"].as_str().unwrap_or_default(),
                "Tags": if i == hist.len() - 1 { vec![familiar(&rec.name)] } else { vec![] },
                "Size": 0,
                "Comment": h["comment"].as_str().unwrap_or_default(),
            }));
        }
        if out.is_empty() {
            out.push(serde_json::json!({
                "Id": res.id, "Created": rec.created_at, "CreatedBy": "", "Tags": [familiar(&rec.name)],
                "Size": res.size, "Comment": "",
            }));
        }
        Ok(out)
    })
    .await?;
    ok_json(&v)
}

async fn tag(r: &Req, name: &str) -> Res {
    let repo = r.q("repo").unwrap_or_default().to_string();
    if repo.is_empty() {
        return Err(ApiError::bad("tag: repo is required"));
    }
    let tag = r.q("tag").filter(|t| !t.is_empty()).unwrap_or("latest");
    let target = format!("{repo}:{tag}");
    let target = Reference::parse(&target)
        .map_err(|e| ApiError::bad(format!("invalid tag {target:?}: {e}")))?
        .to_string();
    let d = r.d.clone();
    let name = name.to_string();
    blocking(move || {
        let rec = find(&d, &name)?;
        if let Ok(old) = image::get(&d.store, NS, &target) {
            if old.target == rec.target {
                return Ok(());
            }
            image::delete(&d.store, &d.events, NS, &target)?;
        }
        image::tag(&d.store, &d.events, NS, &rec.name, &target)?;
        Ok(())
    })
    .await?;
    empty(StatusCode::CREATED)
}

async fn delete(r: &Req, name: &str) -> Res {
    let force = r.flag("force");
    let d = r.d.clone();
    let name = name.to_string();
    let v = blocking(move || {
        let rec = find(&d, &name)?;
        let res = resolve(&d, rec.clone())?;
        let by_name = Reference::parse(&name)
            .map(|x| x.to_string() == rec.name)
            .unwrap_or(false);
        let same: Vec<ImageRecord> = image::list(&d.store, NS)?
            .into_iter()
            .filter(|x| x.target.digest == rec.target.digest)
            .collect();
        // by id: every name of it (refused when it has several, unless forced, as docker)
        let doomed: Vec<ImageRecord> = if by_name { vec![rec.clone()] } else { same.clone() };
        if !by_name && same.len() > 1 && !force {
            return Err(ApiError::conflict(format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                &res.id.trim_start_matches("sha256:")[..12.min(res.id.len() - 7)]
            )));
        }
        if !force {
            let used = d
                .store
                .list::<crate::runtime::containers::ContainerRecord>(crate::metadata::CONTAINERS, NS)?;
            for (_, c) in used {
                if doomed.iter().any(|x| x.name == c.image) && (same.len() == doomed.len()) {
                    return Err(ApiError::conflict(format!(
                        "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                        &c.id[..12],
                        &res.id.trim_start_matches("sha256:")[..12]
                    )));
                }
            }
        }
        let mut out = Vec::new();
        for x in &doomed {
            image::delete(&d.store, &d.events, NS, &x.name)?;
            out.push(serde_json::json!({ "Untagged": familiar(&x.name) }));
        }
        d.mutated(true);
        if same.len() == doomed.len() {
            out.push(serde_json::json!({ "Deleted": res.id }));
        }
        Ok(out)
    })
    .await?;
    ok_json(&v)
}

/// One line of Docker's progress stream.
fn line(v: serde_json::Value) -> Bytes {
    let mut b = serde_json::to_vec(&v).unwrap_or_default();
    b.push(b'\r');
    b.push(b'\n');
    Bytes::from(b)
}

fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// Credentials in X-Registry-Auth: nookd reads the same ~/.docker/config.json the docker CLI
/// took them from; other credentials are refused rather than ignored.
fn check_auth(r: &Req, reference: &str) -> Result<(), ApiError> {
    use base64::Engine;
    let Some(h) = r.header("X-Registry-Auth").filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(
            h.trim_end_matches('=').to_string()
                + &"=".repeat((4 - h.trim_end_matches('=').len() % 4) % 4),
        )
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(h))
        .map_err(|e| ApiError::bad(format!("invalid X-Registry-Auth header: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
    let user = v["username"].as_str().unwrap_or_default();
    if user.is_empty() && v["identitytoken"].as_str().unwrap_or_default().is_empty() {
        return Ok(());
    }
    let host = Reference::parse(reference)
        .map(|x| x.domain().to_string())
        .unwrap_or_default();
    let known = crate::image::auth::AuthSources::default().lookup(&host);
    if known.as_ref().is_some_and(|c| c.username == user) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "credentials for {host} passed in X-Registry-Auth are not supported yet: nookd uses those stored by `nook login {host}` or ~/.docker/config.json"
        ),
    ))
}

async fn create(r: &mut Req) -> Res {
    if r.q("fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::not_implemented(
            "import (fromSrc) is not supported yet: use `docker load` of a docker-archive",
        ));
    }
    let from = r.q("fromImage").unwrap_or_default().to_string();
    if from.is_empty() {
        return Err(ApiError::bad("fromImage is required"));
    }
    let tag = r.q("tag").unwrap_or_default();
    let reference = if tag.is_empty() {
        from.clone()
    } else if tag.starts_with("sha256:") {
        format!("{from}@{tag}")
    } else {
        format!("{from}:{tag}")
    };
    let parsed = Reference::parse(&reference)
        .map_err(|e| ApiError::bad(format!("invalid reference format: {e}")))?;
    check_auth(r, &reference)?;
    let platform = r.q("platform").unwrap_or_default().to_string();
    let opts = PullOptions {
        platforms: PlatformSelector::from_args(Some(&platform), false)?,
        max_concurrent_downloads: r.d.config.images.max_concurrent_downloads as usize,
        labels: BTreeMap::new(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let d = r.d.clone();
    let shown = familiar(&parsed.to_string());
    let tag_shown = parsed.tag().unwrap_or("latest").to_string();
    let repo = familiar(&parsed.name());
    tokio::spawn(async move {
        let _ = tx
            .send(line(
                serde_json::json!({ "status": format!("Pulling from {repo}"), "id": tag_shown }),
            ))
            .await;
        let ptx = tx.clone();
        let progress = move |p: Progress| {
            let v = match p {
                Progress::Blob {
                    digest,
                    kind: BlobKind::Layer,
                    state,
                    current,
                    total,
                } => {
                    let id = short(&digest.to_string());
                    match state {
                        BlobState::Waiting => {
                            serde_json::json!({"status": "Waiting", "progressDetail": {}, "id": id})
                        }
                        BlobState::Downloading => {
                            serde_json::json!({"status": "Downloading", "progressDetail": {"current": current, "total": total}, "id": id})
                        }
                        BlobState::Exists => {
                            serde_json::json!({"status": "Already exists", "progressDetail": {}, "id": id})
                        }
                        BlobState::Done => {
                            serde_json::json!({"status": "Pull complete", "progressDetail": {}, "id": id})
                        }
                    }
                }
                _ => return,
            };
            let _ = ptx.try_send(line(v));
        };
        let registry = crate::image::registry::Registry::new(
            d.config.registry.clone(),
            crate::image::auth::AuthSources::default(),
        );
        let existed = image::get(&d.store, NS, &parsed.to_string()).ok();
        let res =
            crate::daemon::pull::pull_unpacked(&d, &registry, NS, &reference, &opts, &progress)
                .await;
        let msg = match res {
            Ok(p) => {
                let _ = tx
                    .send(line(serde_json::json!({ "status": format!("Digest: {}", p.image.target.digest) })))
                    .await;
                let same = existed.is_some_and(|e| e.target == p.image.target);
                serde_json::json!({ "status": if same {
                    format!("Status: Image is up to date for {shown}")
                } else {
                    format!("Status: Downloaded newer image for {shown}")
                }})
            }
            Err(e) => {
                let m = match &e {
                    Error::NotFound(_) => format!("pull access denied for {repo}, repository does not exist or may require 'docker login': {e}"),
                    _ => e.to_string(),
                };
                serde_json::json!({ "errorDetail": { "message": m }, "error": m })
            }
        };
        let _ = tx.send(line(msg)).await;
    });
    Ok(super::streamed("application/json", rx))
}

async fn save(r: &Req, names: Vec<String>) -> Res {
    if names.is_empty() {
        return Err(ApiError::bad("name at least one image to save"));
    }
    let d = r.d.clone();
    let names = blocking(move || {
        let mut out = Vec::new();
        for n in names {
            out.push(find(&d, &n)?.name);
        }
        Ok(out)
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let d = r.d.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = crate::chunks::ChannelWriter::new(tx, 1 << 20, Bytes::from);
        let res = crate::image::archive::export(
            &d.content,
            &d.store,
            NS,
            &names,
            &PlatformSelector::default(),
            &mut w,
        );
        let _ = std::io::Write::flush(&mut w);
        if let Err(e) = res {
            // the status line went out already: the tar ends short, which docker reports
            tracing::warn!("docker save: {e}");
        }
    });
    Ok(super::streamed("application/x-tar", rx))
}

async fn load(r: &mut Req) -> Res {
    use http_body_util::BodyExt;
    let quiet = r.flag("quiet");
    let tmp_dir = r.d.paths.root.join("tmp");
    std::fs::create_dir_all(&tmp_dir)
        .map_err(|e| Error::io(format!("creating {}", tmp_dir.display()), e))?;
    let path = tmp_dir.join(format!("docker-load-{:016x}.tar", rand::random::<u64>()));
    let mut f = tokio::fs::File::create(&path)
        .await
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let mut body = r
        .take_body()
        .ok_or_else(|| ApiError::bad("no archive in the request body"))?;
    let res: Result<(), ApiError> = async {
        use tokio::io::AsyncWriteExt;
        while let Some(fr) = body.frame().await {
            let fr = fr.map_err(|e| ApiError::bad(format!("reading the archive: {e}")))?;
            if let Some(data) = fr.data_ref() {
                f.write_all(data)
                    .await
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            }
        }
        f.flush().await.map_err(|e| Error::io("flush", e))?;
        Ok(())
    }
    .await;
    drop(f);
    if let Err(e) = res {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    let d = r.d.clone();
    let p2 = path.clone();
    let imported = blocking(move || {
        let file = std::fs::File::open(&p2)
            .map_err(|e| Error::io(format!("opening {}", p2.display()), e))?;
        let recs = crate::image::archive::import(
            &d.content,
            &d.store,
            &d.events,
            NS,
            std::io::BufReader::new(file),
            &Default::default(),
        )?;
        d.mutated(false);
        Ok(recs)
    })
    .await;
    let _ = std::fs::remove_file(&path);
    let imported = imported?;
    let names: Vec<String> = imported.iter().map(|x| x.name.clone()).collect();
    crate::daemon::pull::unpack_new(&r.d, NS, names.clone(), PlatformSelector::default()).await?;
    let mut out = Vec::new();
    for n in names {
        out.push(line(
            serde_json::json!({ "stream": format!("Loaded image: {}\n", familiar(&n)) }),
        ));
    }
    let _ = quiet;
    let body: Vec<u8> = out.into_iter().flat_map(|b| b.to_vec()).collect();
    hyper::Response::builder()
        .header("Content-Type", "application/json")
        .body(super::full(body))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_globs() {
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar("docker.io/me/app:1"), "me/app:1");
        assert_eq!(
            familiar("localhost:5000/busybox:latest"),
            "localhost:5000/busybox:latest"
        );
        assert!(glob_match("busy*", "busybox"));
        assert!(glob_match("*box", "busybox"));
        assert!(!glob_match("bux*", "busybox"));
    }
}
