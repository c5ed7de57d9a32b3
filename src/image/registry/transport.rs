//! Sending one request with retries: backoff on transient failures, the https-to-http
//! fallback of insecure hosts, authorization on a 401 challenge, and one-line errors that
//! name the host.

use super::*;

impl Registry {
    /// Sends a request built by `build` (called again for each attempt) to `ep`, handling
    /// authentication for `scopes`, insecure-host HTTP fallback and retries.
    pub(super) async fn send(
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
                            crate::image::auth::normalize_host(h)
                                == crate::image::auth::normalize_host(&ep.host)
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

    pub(super) async fn sleep(&self, attempt: u32) {
        let base = self.backoff.as_millis() as u64 * (1u64 << (attempt - 1).min(6));
        let jitter = rand::random::<u64>() % (base / 4 + 1);
        tokio::time::sleep(Duration::from_millis(base + jitter)).await;
    }
}

/// The first error message of a registry error body (`{"errors":[{"code","message"}]}`).
pub(super) async fn error_message(resp: Response) -> String {
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

pub(super) fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = c.source();
    }
    None
}

pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub(super) fn is_refused(e: &reqwest::Error) -> bool {
    io_kind(e) == Some(std::io::ErrorKind::ConnectionRefused)
        || chain(e).contains("Connection refused")
        || chain(e).contains("dns error")
}

pub(super) fn is_transient(e: &reqwest::Error) -> bool {
    let c = chain(e);
    if c.contains("dns error") || c.contains("certificate") || c.contains("InvalidCertificate") {
        return false;
    }
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
}

/// One line for a network failure talking to `host`.
pub(super) fn net_error(host: &str, e: &reqwest::Error) -> Error {
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
