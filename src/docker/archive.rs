//! `HEAD/GET/PUT /containers/{id}/archive`: `docker cp` both ways, on nook cp's code.

use bytes::Bytes;
use hyper::StatusCode;

use super::containers::{find, service};
use super::{empty, ApiError, Req, Res, NS};
use crate::runtime::containers::ContainerRecord;

/// A path's facts in Docker's `X-Docker-Container-Path-Stat` header (base64 JSON, Go's
/// FileMode bits: directory 1<<31, symlink 1<<27).
fn path_stat_header(i: &crate::runtime::copy::PathInfo) -> String {
    use base64::Engine;
    let fmt = i.mode & libc::S_IFMT;
    let mut mode = i.mode & 0o777;
    if i.dir || fmt == libc::S_IFDIR {
        mode |= 1 << 31;
    }
    if fmt == libc::S_IFLNK {
        mode |= 1 << 27;
    }
    let v = serde_json::json!({
        "name": i.name,
        "size": i.size,
        "mode": mode,
        "mtime": "0001-01-01T00:00:00Z",
        "linkTarget": i.link_target,
    });
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

async fn stat_path(
    r: &Req,
    id: &str,
) -> Result<(ContainerRecord, String, crate::runtime::copy::PathInfo), ApiError> {
    let rec = find(&r.d, id)?;
    let path = r.q("path").unwrap_or_default().to_string();
    if path.is_empty() {
        return Err(ApiError::bad("path is required"));
    }
    let i = service(&r.d)?.stat_path(NS, &rec, &path).await?;
    if !i.exists {
        return Err(ApiError::not_found(format!(
            "Could not find the file {path} in container {}",
            rec.name
        )));
    }
    Ok((rec, path, i))
}

pub async fn archive_stat(r: &Req, id: &str) -> Res {
    let (_, _, i) = stat_path(r, id).await?;
    let mut resp = hyper::Response::new(super::full(Vec::new()));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&path_stat_header(&i)) {
        resp.headers_mut().insert("X-Docker-Container-Path-Stat", v);
    }
    Ok(resp)
}

pub async fn archive_get(r: &Req, id: &str) -> Res {
    let (rec, path, i) = stat_path(r, id).await?;
    let top = if i.name.is_empty() || i.name == "/" {
        "root".to_string()
    } else {
        i.name.clone()
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let out = crate::chunks::ChannelWriter::new(tx, 256 << 10, Bytes::from);
    let job = service(&r.d)?.archive_out(NS, &rec, &path, &top, out);
    tokio::spawn(async move {
        if let Ok(Err(e)) = job.await {
            tracing::warn!("docker cp from {}: {e}", rec.id);
        }
    });
    let mut resp = super::streamed("application/x-tar", rx);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&path_stat_header(&i)) {
        resp.headers_mut().insert("X-Docker-Container-Path-Stat", v);
    }
    Ok(resp)
}

pub async fn archive_put(r: &mut Req, id: &str) -> Res {
    use http_body_util::BodyExt;
    let (rec, dir, i) = stat_path(r, id).await?;
    if !i.dir {
        return Err(ApiError::bad(format!(
            "extraction point is not a directory: {dir}"
        )));
    }
    let mut body = r
        .take_body()
        .ok_or_else(|| ApiError::bad("no archive in the request body"))?;
    let (sink, job) = service(&r.d)?.archive_in(NS, &rec, &dir);
    while let Some(fr) = body.frame().await {
        let fr = fr.map_err(|e| ApiError::bad(format!("reading the archive: {e}")))?;
        if let Some(data) = fr.data_ref() {
            if !sink.send(data.to_vec()).await {
                break; // the extractor stopped: its error is the answer
            }
        }
    }
    drop(sink);
    job.await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    empty(StatusCode::OK)
}
