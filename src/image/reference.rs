//! Image references, normalized as docker does: `busybox` is
//! `docker.io/library/busybox:latest`, `host:5000/x/y@sha256:…` keeps its registry, and a
//! reference may carry both a tag and a digest (the digest wins when resolving).

use std::fmt;
use std::str::FromStr;

use crate::content::Digest;
use crate::error::{Error, Result};

/// The registry of references that name none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const MAX_NAME: usize = 255;

/// A normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn bad(s: &str, why: &str) -> Error {
    Error::InvalidArgument(format!("invalid image reference {s:?}: {why}"))
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ joined by '.', '_', '__' or '-'+
    if c.is_empty() {
        return false;
    }
    let b = c.as_bytes();
    if !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    let last = b[b.len() - 1];
    if !last.is_ascii_lowercase() && !last.is_ascii_digit() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        // a separator run
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 {
            return false;
        }
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

impl Reference {
    /// Parses and normalizes a reference; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.is_empty() {
            return Err(bad(s, "it is empty"));
        }
        if s.trim() != s || s.contains(char::is_whitespace) {
            return Err(bad(s, "it contains white space"));
        }
        if let Some((_, rest)) = s.split_once("://") {
            return Err(bad(
                s,
                &format!(
                    "references take no scheme: write {rest:?} (for a registry served over plain \
                     HTTP, set insecure = true under [registry.\"HOST\"] in config.toml; \
                     localhost needs nothing)"
                ),
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let d = Digest::parse(d).map_err(|e| bad(s, &e.to_string()))?;
                (r, Some(d))
            }
            None => (s, None),
        };
        if rest.is_empty() {
            return Err(bad(s, "the repository name is missing"));
        }
        // the tag is after the last ':' that follows the last '/'
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(
                    s,
                    &format!(
                        "tag {t:?} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
                    ),
                ));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        if !valid_domain(&domain) {
            return Err(bad(
                s,
                &format!("registry host {domain:?} is not a valid host[:port]"),
            ));
        }
        let domain = if domain == LEGACY_DOMAIN {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad(s, "repository name must be lowercase"));
        }
        if path.is_empty() {
            return Err(bad(s, "the repository name is missing"));
        }
        if path.len() == 64
            && path.bytes().all(|b| b.is_ascii_hexdigit())
            && domain == DEFAULT_DOMAIN
            && tag.is_none()
            && digest.is_none()
        {
            return Err(bad(
                s,
                "a 64-hex-digit name looks like an image id; use a digest as name@sha256:…",
            ));
        }
        for c in path.split('/') {
            if !valid_component(c) {
                return Err(bad(
                    s,
                    &format!("path component {c:?} must be lowercase letters and digits joined by '.', '_', '__' or '-'"),
                ));
            }
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path
        };
        if domain.len() + 1 + path.len() > MAX_NAME {
            return Err(bad(s, "the repository name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host (`docker.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.path
    }

    /// `domain/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest if there is one, else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// The same repository with another digest and no tag.
    pub fn with_digest(&self, d: Digest) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(d),
        }
    }

    /// The shortest form users type (`busybox:latest`, `localhost:5000/x:1`) that still parses
    /// back to this reference: `docker.io/` stays when the path's first component would read as
    /// a host (`docker.io/a.b/c`), `library/` when more components follow (`library/a/b`).
    pub fn familiar(&self) -> String {
        let full = self.to_string();
        if self.domain != DEFAULT_DOMAIN {
            return full;
        }
        let rest = &full[DEFAULT_DOMAIN.len() + 1..];
        let short = match self.path.strip_prefix(OFFICIAL_PREFIX) {
            Some(name) if !name.contains('/') => &rest[OFFICIAL_PREFIX.len()..],
            _ => rest,
        };
        let first = short.split('/').next().unwrap_or("");
        if short.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost")
        {
            return full;
        }
        short.to_string()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn scheme_is_explained() {
        let e = Reference::parse("http://localhost:5000/img")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("take no scheme") && e.contains("\"localhost:5000/img\""),
            "{e}"
        );
    }

    #[test]
    fn normalizes() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/app", "docker.io/user/app:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x/y:v1", "localhost:5000/x/y:v1"),
            (
                "127.0.0.1:5000/a-b/c__d.e",
                "127.0.0.1:5000/a-b/c__d.e:latest",
            ),
            ("quay.io/a/b/c:t_1.0-x", "quay.io/a/b/c:t_1.0-x"),
            ("[::1]:5000/x", "[::1]:5000/x:latest"),
        ];
        for (i, o) in cases {
            assert_eq!(Reference::parse(i).unwrap().to_string(), o, "{i}");
        }
        let r = Reference::parse(&format!("host:5000/x/y@{D}")).unwrap();
        assert_eq!(r.domain(), "host:5000");
        assert_eq!(r.repository(), "x/y");
        assert_eq!(r.tag(), None);
        assert_eq!(r.object(), D);
        let r = Reference::parse(&format!("busybox:1@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1@{D}"));
        assert_eq!(r.object(), D);
        assert_eq!(r.familiar(), format!("busybox:1@{D}"));
        assert_eq!(
            Reference::parse("user/app:2").unwrap().familiar(),
            "user/app:2"
        );
        // forms that would name another image when shortened more (found by fuzzing)
        for (i, f) in [
            ("docker.io/a.b/c", "docker.io/a.b/c:latest"),
            ("docker.io/localhost/c", "docker.io/localhost/c:latest"),
            ("docker.io/library/a/b", "library/a/b:latest"),
            ("library/a.b", "a.b:latest"),
        ] {
            let r = Reference::parse(i).unwrap();
            assert_eq!(r.familiar(), f);
            assert_eq!(Reference::parse(f).unwrap(), r, "{f}");
        }
    }

    #[test]
    fn rejects_with_reason() {
        let cases = [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("busybox:", "tag"),
            ("busybox:-x", "tag"),
            ("a b", "white space"),
            ("busybox@sha256:abc", "digest"),
            ("busybox@md5:abc", "algorithm"),
            ("host:5000/", "missing"),
            ("a//b", "component"),
            ("a/-b", "component"),
            ("a/b_", "component"),
            ("host:port/x", "registry host"),
            ("@sha256:abc", "digest"),
        ];
        for (i, why) in cases {
            let e = Reference::parse(i).unwrap_err().to_string();
            assert!(e.contains(why), "{i}: {e}");
        }
        assert!(Reference::parse(&format!("x/{}", "a".repeat(300))).is_err());
    }
}
