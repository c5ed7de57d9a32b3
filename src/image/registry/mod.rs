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

use super::auth::{AuthSources, Credentials};
use super::manifest::{self, Descriptor};
use super::reference::{Reference, DEFAULT_DOMAIN};
use crate::config::RegistryHost;
use crate::content::{Digest, Writer};
use crate::error::{Error, IoContext, Result};

/// How many times a transient failure is retried.
const RETRIES: u32 = 4;

mod auth;
mod endpoint;
mod fetch;
mod push;
mod transport;

pub use auth::parse_challenge;
pub use endpoint::{is_local, Endpoint};
#[allow(unused_imports)]
use {auth::*, endpoint::*, push::*, transport::*};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
