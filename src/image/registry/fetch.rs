//! Reading from a registry: manifests by tag or digest, blobs written straight into a
//! content-store writer (resumed with a Range request), and blob existence checks.

use super::*;

impl Registry {
    /// Fetches a manifest or index by tag or digest, trying mirrors then the origin. The
    /// bytes are checked against the digest when the reference (or `want`) carries one.
    pub async fn fetch_manifest(
        &self,
        r: &Reference,
        object: &str,
        want: Option<&Digest>,
    ) -> Result<(FetchedManifest, Endpoint)> {
        let eps = self.endpoints(r.domain())?;
        let scopes = vec![format!("repository:{}:pull", r.repository())];
        let path = format!("/v2/{}/manifests/{object}", r.repository());
        let mut last = None;
        for ep in &eps {
            let accept = manifest::ACCEPT_MANIFESTS.join(", ");
            let res = self
                .send(ep, &scopes, Method::GET, &path, &|rb| {
                    Ok(rb.header(ACCEPT, accept.as_str()))
                })
                .await;
            let resp = match res {
                Ok(r) => r,
                Err(e) if ep.mirror => {
                    tracing::debug!("mirror {} failed: {e}", ep.host);
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                let msg = error_message(resp).await;
                let e = Error::NotFound(format!(
                    "manifest unknown: {}/{}:{object} not found on {} ({msg})",
                    r.domain(),
                    r.repository(),
                    ep.host
                ));
                if ep.mirror {
                    last = Some(e);
                    continue;
                }
                return Err(e);
            }
            if !status.is_success() {
                let e = Error::Unavailable(format!(
                    "{} answered {status} for manifest {object}: {}",
                    ep.host,
                    error_message(resp).await
                ));
                if ep.mirror {
                    last = Some(e);
                    continue;
                }
                return Err(e);
            }
            let media_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let header_digest = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| Digest::parse(s).ok());
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| net_error(&ep.host, &e))?
                .to_vec();
            if bytes.len() > 8 << 20 {
                return Err(Error::InvalidArgument(format!(
                    "manifest {object} from {} is larger than 8 MiB; refusing it",
                    ep.host
                )));
            }
            let digest = match want.or(header_digest.as_ref()) {
                Some(d) => {
                    let got = Digest::of(d.algorithm(), &bytes);
                    if &got != d {
                        return Err(Error::InvalidArgument(format!(
                            "digest mismatch: {} sent a manifest for {object} hashing to {got}, expected {d}",
                            ep.host
                        )));
                    }
                    Digest::sha256(&bytes)
                }
                None => Digest::sha256(&bytes),
            };
            // the media type: the document's own field wins over the header
            let parsed = manifest::parse(&media_type, &bytes)?;
            let media_type = match &parsed {
                manifest::Parsed::Index(i) if !i.media_type.is_empty() => i.media_type.clone(),
                manifest::Parsed::Manifest(m) if !m.media_type.is_empty() => m.media_type.clone(),
                manifest::Parsed::Index(_) => {
                    if manifest::is_index(&media_type) {
                        media_type
                    } else {
                        manifest::OCI_INDEX.into()
                    }
                }
                manifest::Parsed::Manifest(_) => {
                    if manifest::is_manifest(&media_type) {
                        media_type
                    } else {
                        manifest::OCI_MANIFEST.into()
                    }
                }
            };
            let digest = match want {
                Some(d) => d.clone(),
                None => digest,
            };
            return Ok((
                FetchedManifest {
                    bytes,
                    media_type,
                    digest,
                },
                ep.clone(),
            ));
        }
        Err(last.unwrap_or_else(|| Error::Internal("no registry endpoint".into())))
    }

    /// Downloads the blob `desc` into `w`, resuming at `w.offset()` with a Range request, and
    /// retrying (from where it stopped) on transient failures. `progress` gets the bytes
    /// written so far. The caller commits `w` (which verifies the digest).
    pub async fn fetch_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        w: &mut Writer,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        use std::io::Write as _;
        let eps = self.endpoints(r.domain())?;
        let scopes = vec![format!("repository:{}:pull", r.repository())];
        let path = format!("/v2/{}/blobs/{}", r.repository(), desc.digest);
        let mut last = None;
        'endpoints: for ep in &eps {
            let mut failures = 0u32;
            loop {
                if w.offset() == desc.size {
                    return Ok(());
                }
                if w.offset() > desc.size {
                    w.truncate()?;
                }
                let offset = w.offset();
                let res = self
                    .send(ep, &scopes, Method::GET, &path, &|rb| {
                        Ok(if offset > 0 {
                            rb.header(RANGE, format!("bytes={offset}-"))
                        } else {
                            rb
                        })
                    })
                    .await;
                let mut resp = match res {
                    Ok(r) => r,
                    Err(e) => {
                        last = Some(e);
                        if ep.mirror {
                            continue 'endpoints;
                        }
                        break 'endpoints;
                    }
                };
                let status = resp.status();
                if status == StatusCode::RANGE_NOT_SATISFIABLE {
                    w.truncate()?;
                    failures += 1;
                    if failures > self.retries {
                        last = Some(Error::Unavailable(format!(
                            "{} keeps refusing to resume blob {}",
                            ep.host, desc.digest
                        )));
                        break 'endpoints;
                    }
                    continue;
                }
                if status == StatusCode::NOT_FOUND {
                    last = Some(Error::NotFound(format!(
                        "blob unknown: {} is not on {} ({})",
                        desc.digest,
                        ep.host,
                        error_message(resp).await
                    )));
                    if ep.mirror {
                        continue 'endpoints;
                    }
                    break 'endpoints;
                }
                if !status.is_success() {
                    last = Some(Error::Unavailable(format!(
                        "{} answered {status} for blob {}: {}",
                        ep.host,
                        desc.digest,
                        error_message(resp).await
                    )));
                    if ep.mirror {
                        continue 'endpoints;
                    }
                    break 'endpoints;
                }
                if status != StatusCode::PARTIAL_CONTENT && offset > 0 {
                    // the server ignored the Range: start over
                    w.truncate()?;
                }
                let before = w.offset();
                let mut stream_err = None;
                loop {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => {
                            if w.offset() + chunk.len() as u64 > desc.size {
                                w.truncate()?;
                                return Err(Error::InvalidArgument(format!(
                                    "digest mismatch: {} sent more than the {} bytes of blob {}",
                                    ep.host, desc.size, desc.digest
                                )));
                            }
                            w.write_all(&chunk)
                                .ctx(|| format!("writing blob {}", desc.digest))?;
                            progress(w.offset());
                        }
                        Ok(None) => break,
                        Err(e) => {
                            stream_err = Some(e);
                            break;
                        }
                    }
                }
                w.flush().ctx(|| format!("writing blob {}", desc.digest))?;
                if w.offset() == desc.size {
                    return Ok(());
                }
                // stopped early: resume if we made progress or have retries left
                if w.offset() > before {
                    failures = 0;
                } else {
                    failures += 1;
                }
                let e = match stream_err {
                    Some(e) => net_error(&ep.host, &e),
                    None => Error::Unavailable(format!(
                        "{} closed the download of {} at {} of {} bytes",
                        ep.host,
                        desc.digest,
                        w.offset(),
                        desc.size
                    )),
                };
                if failures > self.retries {
                    last = Some(e);
                    if ep.mirror {
                        continue 'endpoints;
                    }
                    break 'endpoints;
                }
                self.sleep(failures.max(1)).await;
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal("no registry endpoint".into())))
    }

    /// Whether the repository already holds the blob.
    pub async fn blob_exists(
        &self,
        r: &Reference,
        digest: &Digest,
        scopes: &[String],
    ) -> Result<bool> {
        let ep = self.origin(r)?;
        let path = format!("/v2/{}/blobs/{digest}", r.repository());
        let resp = self
            .send(&ep, scopes, Method::HEAD, &path, &|rb| Ok(rb))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(Error::Unavailable(format!(
                "{} answered {s} when checking blob {digest}",
                ep.host
            ))),
        }
    }
}
