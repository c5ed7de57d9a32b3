//! Writing to a registry: blob uploads (with a cross-repository mount first) and manifests.

use super::*;

impl Registry {
    /// Uploads a blob from a file on disk, first trying a cross-repository mount from
    /// `mount_from` (a repository on the same registry). Returns true when mounted.
    pub async fn push_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        file: &std::path::Path,
        mount_from: Option<&str>,
        scopes: &[String],
    ) -> Result<bool> {
        let ep = self.origin(r)?;
        let repo = r.repository();
        let start_path = match mount_from {
            Some(from) if from != repo => {
                format!(
                    "/v2/{repo}/blobs/uploads/?mount={}&from={from}",
                    desc.digest
                )
            }
            _ => format!("/v2/{repo}/blobs/uploads/"),
        };
        let resp = self
            .send(&ep, scopes, Method::POST, &start_path, &|rb| {
                Ok(rb.header(reqwest::header::CONTENT_LENGTH, "0"))
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::CREATED && mount_from.is_some() {
            return Ok(true);
        }
        if status != StatusCode::ACCEPTED {
            return Err(Error::Unavailable(format!(
                "{} refused to start an upload of {} to {repo} ({status}: {})",
                ep.host,
                desc.digest,
                error_message(resp).await
            )));
        }
        let location = location(&ep, resp.headers())?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let put_url = format!("{location}{sep}digest={}", desc.digest);
        // PUT to the absolute upload URL (not through ep.url, which prefixes the base)
        let size = desc.size;
        let file = file.to_path_buf();
        let mut attempt = 0;
        loop {
            let f = tokio::fs::File::open(&file)
                .await
                .ctx(|| format!("opening {}", file.display()))?;
            let mut rb = ep
                .client
                .put(&put_url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, size.to_string())
                .body(reqwest::Body::from(f));
            let key = format!("{}|{}", ep.host, scopes.join(" "));
            if let Some(a) = lock(&self.tokens).get(&key).cloned() {
                rb = rb.header(AUTHORIZATION, a);
            }
            match rb.send().await {
                Ok(resp) if resp.status() == StatusCode::CREATED || resp.status().is_success() => {
                    return Ok(false)
                }
                Ok(resp) if resp.status().is_server_error() && attempt < self.retries => {
                    attempt += 1;
                    self.sleep(attempt).await;
                }
                Ok(resp) => {
                    let st = resp.status();
                    let msg = error_message(resp).await;
                    if msg.contains("DIGEST_INVALID") || msg.to_lowercase().contains("digest") {
                        return Err(Error::InvalidArgument(format!(
                            "digest mismatch: {} rejected blob {} ({msg})",
                            ep.host, desc.digest
                        )));
                    }
                    return Err(Error::Unavailable(format!(
                        "{} refused blob {} ({st}: {msg})",
                        ep.host, desc.digest
                    )));
                }
                Err(e) => return Err(net_error(&ep.host, &e)),
            }
        }
    }

    /// Puts a manifest or index under `object` (a tag or its digest).
    pub async fn push_manifest(
        &self,
        r: &Reference,
        object: &str,
        media_type: &str,
        bytes: &[u8],
        scopes: &[String],
    ) -> Result<()> {
        let ep = self.origin(r)?;
        let path = format!("/v2/{}/manifests/{object}", r.repository());
        let body = bytes.to_vec();
        let mt = media_type.to_string();
        let resp = self
            .send(&ep, scopes, Method::PUT, &path, &|rb| {
                Ok(rb.header(CONTENT_TYPE, mt.as_str()).body(body.clone()))
            })
            .await?;
        let st = resp.status();
        if st.is_success() {
            return Ok(());
        }
        let msg = error_message(resp).await;
        if st == StatusCode::UNSUPPORTED_MEDIA_TYPE
            || msg.contains("MANIFEST_INVALID") && msg.contains("media")
        {
            return Err(Error::InvalidArgument(format!(
                "unsupported media type: {} does not accept {media_type} manifests ({msg})",
                ep.host
            )));
        }
        Err(Error::Unavailable(format!(
            "{} refused manifest {object} ({st}: {msg})",
            ep.host
        )))
    }
}

pub(super) fn location(ep: &Endpoint, h: &HeaderMap) -> Result<String> {
    let loc = h
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Error::Unavailable(format!("{} started an upload without a Location", ep.host))
        })?;
    if loc.starts_with("http://") || loc.starts_with("https://") {
        Ok(loc.to_string())
    } else if loc.starts_with('/') {
        Ok(format!("{}{loc}", ep.base()))
    } else {
        Ok(format!("{}/{loc}", ep.base()))
    }
}
