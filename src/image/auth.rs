//! Registry credentials: nook's own file written by `nook login`
//! (`$XDG_CONFIG_HOME/nook/auth.json`, docker's `config.json` format) and then docker's
//! `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// A username and password (or token) for one registry.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    auth: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    password: String,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// nook's credentials file.
pub fn nook_auth_file() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|b| b.config_dir().join("nook").join("auth.json"))
}

/// docker's config file.
pub fn docker_config_file() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    directories::BaseDirs::new().map(|b| b.home_dir().join(".docker").join("config.json"))
}

/// The key of a host in an auth file: `https://index.docker.io/v1/` and friends become
/// `docker.io`; schemes and paths are dropped.
pub fn normalize_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        other => other.to_string(),
    }
}

fn read_file(path: &Path) -> Result<AuthFile> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            Error::Config(format!(
                "{} is not valid JSON ({e}); fix or remove it",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile::default()),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// Credentials from a docker-style `auth` field (base64 of `user:password`).
pub fn decode_auth(auth: &str) -> Option<Credentials> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some(Credentials {
        username: u.to_string(),
        password: p.to_string(),
    })
}

fn entry_creds(e: &AuthEntry) -> Option<Credentials> {
    if !e.auth.is_empty() {
        return decode_auth(&e.auth);
    }
    if !e.username.is_empty() {
        return Some(Credentials {
            username: e.username.clone(),
            password: e.password.clone(),
        });
    }
    None
}

/// Where credentials are looked up, in order.
#[derive(Debug, Clone)]
pub struct AuthSources {
    pub files: Vec<PathBuf>,
    /// Credentials a request brought for one host (a CRI PullImage's AuthConfig), looked up
    /// before the files.
    pub given: Option<(String, Credentials)>,
}

impl Default for AuthSources {
    fn default() -> Self {
        AuthSources {
            files: nook_auth_file()
                .into_iter()
                .chain(docker_config_file())
                .collect(),
            given: None,
        }
    }
}

impl AuthSources {
    /// Credentials for `host` (`docker.io`, `localhost:5000`), from the first file that has them.
    /// Unreadable files are skipped (a broken docker config must not break pulls of public
    /// images).
    pub fn lookup(&self, host: &str) -> Option<Credentials> {
        let want = normalize_host(host);
        if let Some((h, c)) = &self.given {
            if normalize_host(h) == want {
                return Some(c.clone());
            }
        }
        for f in &self.files {
            let Ok(af) = read_file(f) else { continue };
            for (k, e) in &af.auths {
                if normalize_host(k) == want {
                    if let Some(c) = entry_creds(e) {
                        return Some(c);
                    }
                }
            }
        }
        None
    }
}

/// Stores credentials for `host` in `file` (mode 0600), replacing earlier ones.
pub fn store(file: &Path, host: &str, creds: &Credentials) -> Result<()> {
    let mut af = read_file(file)?;
    let key = normalize_host(host);
    af.auths.retain(|k, _| normalize_host(k) != key);
    af.auths.insert(
        key,
        AuthEntry {
            auth: base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", creds.username, creds.password)),
            ..Default::default()
        },
    );
    write_file(file, &af)
}

/// Removes credentials for `host` from `file`; returns whether there were any.
pub fn remove(file: &Path, host: &str) -> Result<bool> {
    let mut af = read_file(file)?;
    let key = normalize_host(host);
    let before = af.auths.len();
    af.auths.retain(|k, _| normalize_host(k) != key);
    if af.auths.len() == before {
        return Ok(false);
    }
    write_file(file, &af)?;
    Ok(true)
}

fn write_file(file: &Path, af: &AuthFile) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    }
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .ctx(|| format!("writing {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(af)?)
        .ctx(|| format!("writing {}", tmp.display()))?;
    f.sync_all().ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).ctx(|| format!("writing {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_store_remove() {
        let d = tempfile::tempdir().unwrap();
        let docker = d.path().join("config.json");
        std::fs::write(
            &docker,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"reg.example:5000":{"username":"a","password":"b"}},"credsStore":"x"}"#,
        )
        .unwrap();
        let nook = d.path().join("nook/auth.json");
        let src = AuthSources {
            files: vec![nook.clone(), docker.clone()],
            given: None,
        };
        assert_eq!(src.lookup("docker.io").unwrap().username, "u");
        assert_eq!(src.lookup("docker.io").unwrap().password, "p");
        assert_eq!(src.lookup("reg.example:5000").unwrap().password, "b");
        assert!(src.lookup("other").is_none());
        store(
            &nook,
            "http://reg.example:5000/v2/",
            &Credentials {
                username: "n".into(),
                password: "pw:with:colons".into(),
            },
        )
        .unwrap();
        let c = src.lookup("reg.example:5000").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("n", "pw:with:colons")
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&nook).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(remove(&nook, "reg.example:5000").unwrap());
        assert!(!remove(&nook, "reg.example:5000").unwrap());
        assert_eq!(src.lookup("reg.example:5000").unwrap().username, "a");
    }
}
