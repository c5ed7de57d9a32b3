//! The `WWW-Authenticate` dance: Bearer tokens from the registry's token service or Basic
//! credentials, cached by host and scopes; `nook login`'s ping and logout's forget.

use super::*;

impl Registry {
    /// Answers a `WWW-Authenticate` challenge: the Authorization header value to send.
    pub(super) async fn authorize(
        &self,
        ep: &Endpoint,
        challenge: &str,
        scopes: &[String],
    ) -> Result<String> {
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
}

pub(super) fn basic(c: &Credentials) -> String {
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
