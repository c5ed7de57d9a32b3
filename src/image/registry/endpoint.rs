//! Where a repository is reached: the endpoints of a registry host (its mirrors in order,
//! then the origin), each with the HTTP client its `config.toml` settings call for (CA bundle,
//! client certificate, plain HTTP for insecure and local hosts).

use super::*;

/// One place a repository can be reached: a mirror or the origin.
#[derive(Clone)]
pub struct Endpoint {
    /// `https://host[:port]` (the scheme is settled on first use for insecure hosts).
    pub(super) base: Arc<Mutex<String>>,
    /// The host as written (for credentials and messages).
    pub host: String,
    pub mirror: bool,
    pub(super) insecure: bool,
    pub(super) client: reqwest::Client,
    /// For mirrors: `?ns=<origin>` as containerd sends it.
    pub(super) ns_query: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.base())
    }
}

impl Endpoint {
    pub(super) fn base(&self) -> String {
        lock(&self.base).clone()
    }

    pub(super) fn url(&self, path: &str) -> String {
        let mut u = format!("{}{path}", self.base());
        if let Some(ns) = &self.ns_query {
            u.push(if u.contains('?') { '&' } else { '?' });
            u.push_str("ns=");
            u.push_str(ns);
        }
        u
    }
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

impl Registry {
    pub(super) fn host_config(&self, host: &str) -> RegistryHost {
        self.hosts.get(host).cloned().unwrap_or_default()
    }

    pub(super) fn client_for(&self, host: &str, cfg: &RegistryHost) -> Result<reqwest::Client> {
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

    pub(super) fn origin(&self, r: &Reference) -> Result<Endpoint> {
        self.endpoints(r.domain())?
            .pop()
            .ok_or_else(|| Error::Internal("no registry endpoint".into()))
    }
}
