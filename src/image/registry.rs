//! A small client for the OCI distribution API (registry v2) on reqwest.
//!
//! What it does beyond plain HTTP: the `WWW-Authenticate` dance (Bearer token service or Basic),
//! credentials from [`auth`](super::auth), per-host settings from `config.toml` (mirrors tried in
//! order before the origin, CA bundle, client certificate, plain HTTP for insecure hosts and
//! localhost), retries with backoff on transient failures, and blob downloads written straight
//! into a content-store [`Writer`] that resume with a Range request where the last attempt (or an
//! earlier pull) stopped. Errors are one line and name the host.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RANGE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::auth::{self, AuthSources, Credentials};
use super::manifest::{self, Descriptor};
use super::reference::{Reference, DEFAULT_DOMAIN};
use crate::config::RegistryHost;
use crate::content::{Digest, Writer};
use crate::error::{Error, IoContext, Result};

/// How many times a transient failure is retried.
const RETRIES: u32 = 4;

/// One place a repository can be reached: a mirror or the origin.
#[derive(Clone)]
pub struct Endpoint {
    /// `https://host[:port]` (the scheme is settled on first use for insecure hosts).
    base: Arc<Mutex<String>>,
    /// The host as written (for credentials and messages).
    pub host: String,
    pub mirror: bool,
    insecure: bool,
    client: reqwest::Client,
    /// For mirrors: `?ns=<origin>` as containerd sends it.
    ns_query: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.base())
    }
}

impl Endpoint {
    fn base(&self) -> String {
        lock(&self.base).clone()
    }

    fn url(&self, path: &str) -> String {
        let mut u = format!("{}{path}", self.base());
        if let Some(ns) = &self.ns_query {
            u.push(if u.contains('?') { '&' } else { '?' });
            u.push_str("ns=");
            u.push_str(ns);
        }
        u
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a host is the local machine (plain HTTP allowed without configuration).
pub fn is_local(host: &str) -> bool {
    let h = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The registry client (cheap to share: clone the `Arc`).
pub struct Registry {
    hosts: BTreeMap<String, RegistryHost>,
    auth: AuthSources,
    clients: Mutex<HashMap<String, reqwest::Client>>,
    /// Bases that fell back from https to http (insecure hosts), by their https form.
    bases: Arc<Mutex<HashMap<String, String>>>,
    /// Authorization header values by `host|scopes`.
    tokens: Mutex<HashMap<String, String>>,
    /// Retries on transient failures (tests lower it).
    pub retries: u32,
    /// First backoff delay.
    pub backoff: Duration,
}

/// What a manifest request returned.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl Registry {
    /// A client with per-host settings from `config.toml` and credentials from `auth`.
    pub fn new(hosts: BTreeMap<String, RegistryHost>, auth: AuthSources) -> Arc<Registry> {
        Arc::new(Registry {
            hosts,
            auth,
            clients: Mutex::new(HashMap::new()),
            bases: Arc::new(Mutex::new(HashMap::new())),
            tokens: Mutex::new(HashMap::new()),
            retries: RETRIES,
            backoff: Duration::from_millis(250),
        })
    }

    /// The same with other retry settings.
    pub fn with_retries(
        hosts: BTreeMap<String, RegistryHost>,
        auth: AuthSources,
        retries: u32,
        backoff: Duration,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            hosts,
            auth,
            clients: Mutex::new(HashMap::new()),
            bases: Arc::new(Mutex::new(HashMap::new())),
            tokens: Mutex::new(HashMap::new()),
            retries,
            backoff,
        })
    }

    fn host_config(&self, host: &str) -> RegistryHost {
        self.hosts.get(host).cloned().unwrap_or_default()
    }

    fn client_for(&self, host: &str, cfg: &RegistryHost) -> Result<reqwest::Client> {
        if let Some(c) = lock(&self.clients).get(host) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("nook/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(8);
        if !cfg.ca_file.is_empty() {
            let pem = std::fs::read(&cfg.ca_file)
                .ctx(|| format!("reading ca_file {} of registry {host}", cfg.ca_file))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Config(format!(
                    "registry.\"{host}\".ca_file {}: not a PEM certificate bundle ({e})",
                    cfg.ca_file
                ))
            })?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if !cfg.cert_file.is_empty() || !cfg.key_file.is_empty() {
            if cfg.cert_file.is_empty() || cfg.key_file.is_empty() {
                return Err(Error::Config(format!(
                    "registry.\"{host}\": set both cert_file and key_file for a client certificate"
                )));
            }
            let mut pem = std::fs::read(&cfg.cert_file)
                .ctx(|| format!("reading cert_file {} of registry {host}", cfg.cert_file))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(&cfg.key_file)
                    .ctx(|| format!("reading key_file {} of registry {host}", cfg.key_file))?,
            );
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                Error::Config(format!(
                    "registry.\"{host}\": cert_file/key_file are not a usable PEM certificate and key ({e})"
                ))
            })?;
            b = b.identity(id);
        }
        if cfg.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let c = b
            .build()
            .map_err(|e| Error::Internal(format!("building HTTP client for {host}: {e}")))?;
        lock(&self.clients).insert(host.to_string(), c.clone());
        Ok(c)
    }

    /// The endpoints for a registry host: its mirrors in order, then the origin.
    pub fn endpoints(&self, domain: &str) -> Result<Vec<Endpoint>> {
        let cfg = self.host_config(domain);
        let mut out = Vec::new();
        for m in &cfg.mirrors {
            let (scheme, rest) = match m.split_once("://") {
                Some((s, r)) => (Some(s.to_string()), r.trim_end_matches('/').to_string()),
                None => (None, m.trim_end_matches('/').to_string()),
            };
            let host = rest.split('/').next().unwrap_or(&rest).to_string();
            let mcfg = self.host_config(&host);
            let insecure = mcfg.insecure || is_local(&host) || scheme.as_deref() == Some("http");
            let base = match scheme {
                Some(s) => format!("{s}://{rest}"),
                None => format!("https://{rest}"),
            };
            // a mirror given with a path (https://m/v2/x) keeps it; strip a trailing /v2
            let base = base.trim_end_matches("/v2").to_string();
            let base = lock(&self.bases).get(&base).cloned().unwrap_or(base);
            out.push(Endpoint {
                base: Arc::new(Mutex::new(base)),
                host: host.clone(),
                mirror: true,
                insecure,
                client: self.client_for(&host, &mcfg)?,
                ns_query: Some(domain.to_string()),
            });
        }
        let origin = if domain == DEFAULT_DOMAIN {
            "registry-1.docker.io".to_string()
        } else {
            domain.to_string()
        };
        let base = format!("https://{origin}");
        let base = lock(&self.bases).get(&base).cloned().unwrap_or(base);
        out.push(Endpoint {
            base: Arc::new(Mutex::new(base)),
            host: domain.to_string(),
            mirror: false,
            insecure: cfg.insecure || is_local(domain),
            client: self.client_for(domain, &cfg)?,
            ns_query: None,
        });
        Ok(out)
    }

    /// Sends a request built by `build` (called again for each attempt) to `ep`, handling
    /// authentication for `scopes`, insecure-host HTTP fallback and retries.
    async fn send(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        method: Method,
        path: &str,
        build: &(dyn Fn(RequestBuilder) -> Result<RequestBuilder> + Send + Sync),
    ) -> Result<Response> {
        let key = format!("{}|{}", ep.host, scopes.join(" "));
        let mut authed_once = false;
        let mut attempt = 0u32;
        loop {
            let url = ep.url(path);
            let mut rb = build(ep.client.request(method.clone(), &url))?;
            if let Some(a) = lock(&self.tokens).get(&key).cloned() {
                rb = rb.header(AUTHORIZATION, a);
            }
            let res = rb.send().await;
            match res {
                Err(e) => {
                    // an insecure host that does not speak TLS: fall back to plain HTTP, unless
                    // the host turns out to speak only TLS (then the TLS error is the answer)
                    if ep.insecure && ep.base().starts_with("https://") && !is_refused(&e) {
                        let old = ep.base();
                        let b = old.replacen("https://", "http://", 1);
                        *lock(&ep.base) = b.clone();
                        let probe = ep.client.get(ep.url("/v2/")).send().await;
                        match probe {
                            Ok(r) if r.status() != StatusCode::BAD_REQUEST => {
                                lock(&self.bases).insert(old, b);
                                continue;
                            }
                            _ => {
                                *lock(&ep.base) = old;
                                return Err(net_error(&ep.host, &e));
                            }
                        }
                    }
                    if is_transient(&e) && attempt < self.retries {
                        attempt += 1;
                        self.sleep(attempt).await;
                        continue;
                    }
                    return Err(net_error(&ep.host, &e));
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED && !authed_once {
                        authed_once = true;
                        let challenge = resp
                            .headers()
                            .get(reqwest::header::WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let value = self.authorize(ep, &challenge, scopes).await?;
                        lock(&self.tokens).insert(key.clone(), value);
                        continue;
                    }
                    if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                        && attempt < self.retries
                    {
                        attempt += 1;
                        self.sleep(attempt).await;
                        continue;
                    }
                    if status == StatusCode::UNAUTHORIZED {
                        let has = self.auth.lookup(&ep.host).is_some();
                        let given = self.auth.given.as_ref().is_some_and(|(h, _)| {
                            auth::normalize_host(h) == auth::normalize_host(&ep.host)
                        });
                        return Err(Error::Precondition(if given {
                            format!(
                                "authentication failed for {}: the registry refused the credentials given with the request",
                                ep.host
                            )
                        } else if has {
                            format!(
                                "authentication failed for {}: the registry refused the stored credentials; run `nook login {}` again",
                                ep.host, ep.host
                            )
                        } else {
                            format!(
                                "authentication required by {}: run `nook login {}`",
                                ep.host, ep.host
                            )
                        }));
                    }
                    if status == StatusCode::FORBIDDEN {
                        return Err(Error::Precondition(format!(
                            "access denied by {} ({}): the account lacks permission for {}",
                            ep.host,
                            error_message(resp).await,
                            scopes.join(", ")
                        )));
                    }
                    return Ok(resp);
                }
            }
        }
    }

    async fn sleep(&self, attempt: u32) {
        let base = self.backoff.as_millis() as u64 * (1u64 << (attempt - 1).min(6));
        let jitter = rand::random::<u64>() % (base / 4 + 1);
        tokio::time::sleep(Duration::from_millis(base + jitter)).await;
    }

    /// Answers a `WWW-Authenticate` challenge: the Authorization header value to send.
    async fn authorize(&self, ep: &Endpoint, challenge: &str, scopes: &[String]) -> Result<String> {
        let creds = self.auth.lookup(&ep.host);
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => match creds {
                Some(c) => Ok(basic(&c)),
                None => Err(Error::Precondition(format!(
                    "authentication required by {}: run `nook login {}`",
                    ep.host, ep.host
                ))),
            },
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| {
                    Error::Unavailable(format!(
                        "{} sent a Bearer challenge without a realm; it is misconfigured",
                        ep.host
                    ))
                })?;
                let mut q: Vec<(String, String)> = Vec::new();
                if let Some(s) = params.get("service") {
                    q.push(("service".into(), s.clone()));
                }
                for s in scopes {
                    q.push(("scope".into(), s.clone()));
                }
                let mut attempt = 0;
                let resp = loop {
                    let mut rb = ep.client.get(realm).query(&q);
                    if let Some(c) = &creds {
                        rb = rb.basic_auth(&c.username, Some(&c.password));
                    }
                    match rb.send().await {
                        Ok(r) if r.status().is_server_error() && attempt < self.retries => {
                            attempt += 1;
                            self.sleep(attempt).await;
                        }
                        Ok(r) => break r,
                        Err(e) if is_transient(&e) && attempt < self.retries => {
                            attempt += 1;
                            self.sleep(attempt).await;
                        }
                        Err(e) => return Err(net_error(&format!("token service {realm}"), &e)),
                    }
                };
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Err(Error::Precondition(if creds.is_some() {
                        format!(
                            "authentication failed for {}: wrong username or password; run `nook login {}` again",
                            ep.host, ep.host
                        )
                    } else {
                        format!(
                            "authentication required by {}: run `nook login {}`",
                            ep.host, ep.host
                        )
                    }));
                }
                if !status.is_success() {
                    return Err(Error::Unavailable(format!(
                        "token service of {} answered {status}: {}",
                        ep.host,
                        error_message(resp).await
                    )));
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    #[serde(default)]
                    token: String,
                    #[serde(default)]
                    access_token: String,
                }
                let t: Token = resp.json().await.map_err(|e| {
                    Error::Unavailable(format!("token service of {} sent no token: {e}", ep.host))
                })?;
                let tok = if t.token.is_empty() {
                    t.access_token
                } else {
                    t.token
                };
                if tok.is_empty() {
                    return Err(Error::Unavailable(format!(
                        "token service of {} sent an empty token",
                        ep.host
                    )));
                }
                Ok(format!("Bearer {tok}"))
            }
            _ => match creds {
                Some(c) => Ok(basic(&c)),
                None => Err(Error::Precondition(format!(
                    "authentication required by {}: run `nook login {}`",
                    ep.host, ep.host
                ))),
            },
        }
    }

    /// Forgets cached tokens and credentials for `host` (after a login or logout).
    pub fn forget(&self, host: &str) {
        let prefix = format!("{host}|");
        lock(&self.tokens).retain(|k, _| !k.starts_with(&prefix));
    }

    /// Checks that `host` answers the registry API (and, with `creds`, accepts them).
    pub async fn ping(&self, host: &str, creds: Option<&Credentials>) -> Result<()> {
        let eps = self.endpoints(host)?;
        let ep = eps
            .last()
            .ok_or_else(|| Error::Internal("no endpoint".into()))?;
        let ep = ep.clone();
        // A throwaway client-side view: the credentials under test, not the stored ones.
        let reg = Registry {
            hosts: self.hosts.clone(),
            auth: AuthSources {
                files: vec![],
                given: None,
            },
            clients: Mutex::new(lock(&self.clients).clone()),
            bases: self.bases.clone(),
            tokens: Mutex::new(HashMap::new()),
            retries: self.retries,
            backoff: self.backoff,
        };
        let resp = reg.send(&ep, &[], Method::GET, "/v2/", &|rb| Ok(rb)).await;
        let resp = match (resp, creds) {
            (Ok(r), _) => r,
            (Err(_), Some(c)) => {
                // authenticate with the given credentials
                let r0 = ep
                    .client
                    .get(ep.url("/v2/"))
                    .send()
                    .await
                    .map_err(|e| net_error(&ep.host, &e))?;
                let ch = r0
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let (scheme, params) = parse_challenge(&ch);
                let value = if scheme.eq_ignore_ascii_case("bearer") {
                    let realm = params.get("realm").cloned().unwrap_or_default();
                    let mut rb = ep
                        .client
                        .get(&realm)
                        .basic_auth(&c.username, Some(&c.password));
                    if let Some(s) = params.get("service") {
                        rb = rb.query(&[("service", s)]);
                    }
                    let r = rb.send().await.map_err(|e| net_error(&ep.host, &e))?;
                    if !r.status().is_success() {
                        return Err(Error::Precondition(format!(
                            "login to {host} failed: wrong username or password"
                        )));
                    }
                    let v: serde_json::Value = r.json().await.map_err(|e| {
                        Error::Unavailable(format!("token service of {host} sent no token: {e}"))
                    })?;
                    let t = v
                        .get("token")
                        .or_else(|| v.get("access_token"))
                        .and_then(|t| t.as_str())
                        .unwrap_or("");
                    format!("Bearer {t}")
                } else {
                    basic(c)
                };
                ep.client
                    .get(ep.url("/v2/"))
                    .header(AUTHORIZATION, value)
                    .send()
                    .await
                    .map_err(|e| net_error(&ep.host, &e))?
            }
            (Err(e), None) => return Err(e),
        };
        let st = resp.status();
        if st == StatusCode::UNAUTHORIZED || st == StatusCode::FORBIDDEN {
            return Err(Error::Precondition(format!(
                "login to {host} failed: wrong username or password"
            )));
        }
        if !st.is_success() {
            return Err(Error::Unavailable(format!(
                "{host} does not answer the registry API (/v2/ returned {st})"
            )));
        }
        Ok(())
    }

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

    fn origin(&self, r: &Reference) -> Result<Endpoint> {
        self.endpoints(r.domain())?
            .pop()
            .ok_or_else(|| Error::Internal("no registry endpoint".into()))
    }

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

fn location(ep: &Endpoint, h: &HeaderMap) -> Result<String> {
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

fn basic(c: &Credentials) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
    )
}

/// Parses `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, v)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, rest) = if let Some(v) = v.strip_prefix('"') {
            match v.find('"') {
                Some(i) => (v[..i].to_string(), &v[i + 1..]),
                None => (v.to_string(), ""),
            }
        } else {
            match v.find(',') {
                Some(i) => (v[..i].trim().to_string(), &v[i..]),
                None => (v.trim().to_string(), ""),
            }
        };
        params.insert(k, val);
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    (scheme.to_string(), params)
}

/// The first error message of a registry error body (`{"errors":[{"code","message"}]}`).
async fn error_message(resp: Response) -> String {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Es {
        #[serde(default)]
        errors: Vec<E>,
    }
    if let Ok(es) = serde_json::from_slice::<Es>(&body) {
        if let Some(e) = es.errors.first() {
            return format!("{}: {}", e.code, e.message);
        }
    }
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        status.to_string()
    } else {
        line.chars().take(200).collect()
    }
}

fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = c.source();
    }
    None
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn is_refused(e: &reqwest::Error) -> bool {
    io_kind(e) == Some(std::io::ErrorKind::ConnectionRefused)
        || chain(e).contains("Connection refused")
        || chain(e).contains("dns error")
}

fn is_transient(e: &reqwest::Error) -> bool {
    let c = chain(e);
    if c.contains("dns error") || c.contains("certificate") || c.contains("InvalidCertificate") {
        return false;
    }
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
}

/// One line for a network failure talking to `host`.
fn net_error(host: &str, e: &reqwest::Error) -> Error {
    let c = chain(e);
    if c.contains("dns error")
        || c.contains("failed to lookup address")
        || c.contains("Name or service not known")
    {
        return Error::Unavailable(format!(
            "unknown registry host {host}: the name does not resolve (check the spelling, or DNS)"
        ));
    }
    if io_kind(e) == Some(std::io::ErrorKind::ConnectionRefused) || c.contains("Connection refused")
    {
        return Error::Unavailable(format!(
            "connection refused by {host}: is the registry running and is the port right?"
        ));
    }
    if c.contains("certificate")
        || c.contains("Certificate")
        || c.contains("tls") && c.contains("handshake")
    {
        return Error::Unavailable(format!(
            "TLS failure talking to {host} ({}); trust its CA with ca_file in [registry.\"{host}\"] of config.toml, or mark it insecure",
            c.rsplit(": ").next().unwrap_or(&c)
        ));
    }
    if e.is_timeout() {
        return Error::Unavailable(format!(
            "{host} timed out; the registry or the network is too slow or down"
        ));
    }
    Error::Unavailable(format!(
        "network error talking to {host}: {}",
        c.rsplit(": ")
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(": ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "Basic");
        assert_eq!(p["realm"], "Registry Realm");
    }

    #[test]
    fn endpoints_and_local() {
        assert!(is_local("localhost:5000"));
        assert!(is_local("127.0.0.1:5000"));
        assert!(is_local("[::1]:5000"));
        assert!(!is_local("example.com:5000"));
        let mut hosts = BTreeMap::new();
        hosts.insert(
            "docker.io".to_string(),
            RegistryHost {
                mirrors: vec!["http://127.0.0.1:5001".into(), "mirror.example".into()],
                ..Default::default()
            },
        );
        let reg = Registry::new(
            hosts,
            AuthSources {
                files: vec![],
                given: None,
            },
        );
        let eps = reg.endpoints("docker.io").unwrap();
        let bases: Vec<String> = eps.iter().map(|e| e.base()).collect();
        assert_eq!(
            bases,
            vec![
                "http://127.0.0.1:5001",
                "https://mirror.example",
                "https://registry-1.docker.io"
            ]
        );
        assert!(eps[0].mirror && !eps[2].mirror);
        assert_eq!(
            eps[0].url("/v2/x"),
            "http://127.0.0.1:5001/v2/x?ns=docker.io"
        );
        assert!(!eps[2].insecure);
        let mut bad = BTreeMap::new();
        bad.insert(
            "r.example".to_string(),
            RegistryHost {
                ca_file: "/nonexistent/ca.pem".into(),
                ..Default::default()
            },
        );
        let reg = Registry::new(
            bad,
            AuthSources {
                files: vec![],
                given: None,
            },
        );
        let e = reg.endpoints("r.example").err().unwrap().to_string();
        assert!(e.contains("ca_file"), "{e}");
    }

    #[tokio::test]
    async fn clear_network_errors() {
        let reg = Registry::with_retries(
            BTreeMap::new(),
            AuthSources {
                files: vec![],
                given: None,
            },
            1,
            Duration::from_millis(10),
        );
        // a port nothing listens on
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let r = Reference::parse(&format!("127.0.0.1:{port}/x:1")).unwrap();
        let e = reg
            .fetch_manifest(&r, "1", None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("connection refused by 127.0.0.1"), "{e}");
        let r = Reference::parse("no-such-host.invalid/x:1").unwrap();
        let e = reg
            .fetch_manifest(&r, "1", None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown registry host no-such-host.invalid"),
            "{e}"
        );
    }
}
