//! OCI and Docker v2 manifests, indexes and image configs, and platform matching.
//!
//! The types keep only what nook reads; the original bytes are what gets stored and pushed, so
//! fields nook does not know survive a round trip untouched.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::content::Digest;
use crate::error::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_SCHEMA1_PLAIN: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// The manifest types nook accepts, for the `Accept` header.
pub const ACCEPT_MANIFESTS: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// The content descriptor of the OCI image spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }
}

/// An image manifest (OCI or Docker v2 schema 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The parts of an image config nook reads (`inspect` shows the whole JSON).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub rootfs: RootFs,
}

/// `rootfs` of an image config: the uncompressed digests of the layers, in order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// What a manifest-ish document is.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Manifest(Manifest),
    Index(Index),
}

/// Whether a media type names an index.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Whether a media type names an image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Whether a media type is a layer nook can unpack.
pub fn is_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_LAYER
            | OCI_LAYER_GZIP
            | OCI_LAYER_ZSTD
            | DOCKER_LAYER
            | DOCKER_LAYER_GZIP
            | DOCKER_FOREIGN_LAYER
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
    )
}

/// Parses a manifest or index. `media_type` is what the registry or descriptor said (may be
/// empty); the document's own `mediaType` field, then its shape, decide otherwise.
pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Parsed> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| {
        Error::InvalidArgument(format!(
            "manifest is not valid JSON ({e}); is this an image?"
        ))
    })?;
    let declared = media_type.split(';').next().unwrap_or("").trim();
    let mt = match probe.media_type.as_deref() {
        Some(m) if !m.is_empty() => m.to_string(),
        _ if is_index(declared) || is_manifest(declared) => declared.to_string(),
        _ if probe.manifests.is_some() => OCI_INDEX.to_string(),
        _ if probe.config.is_some() => OCI_MANIFEST.to_string(),
        _ => declared.to_string(),
    };
    if probe.schema_version == Some(1) || mt == DOCKER_SCHEMA1 || mt == DOCKER_SCHEMA1_PLAIN {
        return Err(Error::InvalidArgument(
            "unsupported media type: Docker schema 1 manifests are deprecated and not supported; \
             push the image again with a current client"
                .into(),
        ));
    }
    if is_index(&mt) {
        let idx: Index = serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidArgument(format!("invalid image index: {e}")))?;
        Ok(Parsed::Index(idx))
    } else if is_manifest(&mt) {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidArgument(format!("invalid image manifest: {e}")))?;
        Ok(Parsed::Manifest(m))
    } else {
        Err(Error::InvalidArgument(format!(
            "unsupported media type {mt:?}: nook handles OCI and Docker v2 images and indexes"
        )))
    }
}

/// Parses an image config.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidArgument(format!("invalid image config: {e}")))
}

/// An OS/architecture pair, as in the OCI spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, Hash)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform nook runs on (`linux/amd64`, `linux/arm64/v8`, …).
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            architecture: arch.into(),
            os: std::env::consts::OS.into(),
            variant: variant.map(str::to_string),
            ..Default::default()
        }
    }

    /// Parses `os[/arch[/variant]]` or `arch` (docker's `--platform`), normalizing aliases.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            Error::InvalidArgument(format!(
                "invalid platform {s:?}: use os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
            ))
        };
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(bad());
        }
        let known_os = [
            "linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos",
            "aix", "plan9", "android", "ios", "js", "wasip1",
        ];
        let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
        let (os, arch, variant) = match lower.len() {
            1 if known_os.contains(&lower[0].as_str()) => (
                lower[0].clone(),
                Platform::host().architecture,
                Platform::host().variant,
            ),
            1 => ("linux".to_string(), lower[0].clone(), None),
            2 => (lower[0].clone(), lower[1].clone(), None),
            _ => (lower[0].clone(), lower[1].clone(), Some(lower[2].clone())),
        };
        let (arch, variant) = normalize_arch(&arch, variant);
        Ok(Platform {
            architecture: arch,
            os,
            variant,
            ..Default::default()
        })
    }

    /// Whether an image for `other` runs here when `self` is wanted.
    pub fn matches(&self, other: &Platform) -> bool {
        let (a1, v1) = normalize_arch(&self.architecture, self.variant.clone());
        let (a2, v2) = normalize_arch(&other.architecture, other.variant.clone());
        if self.os != other.os || a1 != a2 {
            return false;
        }
        match (&v1, &v2) {
            (Some(w), Some(h)) => {
                // an arm v7 host runs v6 and v5 images too
                if a1 == "arm" {
                    arm_level(h) <= arm_level(w)
                } else {
                    w == h
                }
            }
            _ => true,
        }
    }

    /// How well `other` fits (higher is better) among matching platforms.
    fn score(&self, other: &Platform) -> u32 {
        let (_, v1) = normalize_arch(&self.architecture, self.variant.clone());
        let (_, v2) = normalize_arch(&other.architecture, other.variant.clone());
        match (v1, v2) {
            (Some(a), Some(b)) if a == b => 100,
            (Some(_), Some(b)) => arm_level(&b),
            (None, None) => 100,
            _ => 50,
        }
    }
}

fn arm_level(v: &str) -> u32 {
    v.trim_start_matches('v').parse().unwrap_or(0)
}

fn normalize_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    match arch {
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), variant.filter(|v| v != "v1")),
        "i386" | "386" => ("386".into(), variant),
        "aarch64" | "arm64" => (
            "arm64".into(),
            match variant.as_deref() {
                None | Some("8") | Some("v8") => Some("v8".into()),
                _ => variant,
            },
        ),
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => (
            "arm".into(),
            match variant.as_deref() {
                None | Some("7") => Some("v7".into()),
                Some("5") => Some("v5".into()),
                Some("6") => Some("v6".into()),
                Some("8") => Some("v8".into()),
                _ => variant,
            },
        ),
        other => (other.into(), variant),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            if !v.is_empty() {
                write!(f, "/{v}")?;
            }
        }
        Ok(())
    }
}

/// Which manifests of an index to take.
#[derive(Debug, Clone, PartialEq)]
pub enum PlatformSelector {
    /// The best match for this platform.
    One(Platform),
    /// Every manifest.
    All,
}

impl Default for PlatformSelector {
    fn default() -> Self {
        PlatformSelector::One(Platform::host())
    }
}

impl PlatformSelector {
    /// From `--platform` / `--all-platforms`.
    pub fn from_args(platform: Option<&str>, all: bool) -> Result<PlatformSelector> {
        if all {
            return Ok(PlatformSelector::All);
        }
        match platform.filter(|p| !p.is_empty()) {
            Some(p) => Ok(PlatformSelector::One(Platform::parse(p)?)),
            None => Ok(PlatformSelector::default()),
        }
    }

    /// Picks the manifests of `index` to use. A descriptor without a platform matches any.
    pub fn select<'a>(&self, index: &'a Index) -> Result<Vec<&'a Descriptor>> {
        // buildx attestations (platform unknown/unknown) are not images: never select them
        let candidates = index.manifests.iter().filter(|d| {
            (is_manifest(&d.media_type) || is_index(&d.media_type))
                && d.annotations
                    .get("vnd.docker.reference.type")
                    .map(String::as_str)
                    != Some("attestation-manifest")
                && d.platform.as_ref().map(|p| p.os.as_str()) != Some("unknown")
        });
        match self {
            PlatformSelector::All => Ok(candidates.collect()),
            PlatformSelector::One(want) => {
                let mut best: Option<(&Descriptor, u32)> = None;
                for d in candidates {
                    let score = match &d.platform {
                        Some(p) if want.matches(p) => want.score(p),
                        Some(_) => continue,
                        None => 1,
                    };
                    if best.map(|(_, s)| score > s).unwrap_or(true) {
                        best = Some((d, score));
                    }
                }
                match best {
                    Some((d, _)) => Ok(vec![d]),
                    None => {
                        let offered: Vec<String> = index
                            .manifests
                            .iter()
                            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                            .collect();
                        Err(Error::NotFound(format!(
                            "no image for platform {want} (the index offers {}); choose one with --platform",
                            if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
                        )))
                    }
                }
            }
        }
    }

    /// Whether an image config's platform is wanted.
    pub fn accepts(&self, p: &Platform) -> bool {
        match self {
            PlatformSelector::All => true,
            PlatformSelector::One(w) => w.matches(p),
        }
    }
}

impl ImageConfig {
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    #[test]
    fn parses_docker_and_oci() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{}","size":10}},
            "layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","digest":"{}","size":20,"x":1}}]}}"#,
            d(1),
            d(2)
        );
        let Parsed::Manifest(m) = parse("", m.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 20);
        // an OCI manifest without mediaType, told by the registry header
        let o = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":1}},"layers":[]}}"#,
            d(3)
        );
        assert!(matches!(
            parse(OCI_MANIFEST, o.as_bytes()).unwrap(),
            Parsed::Manifest(_)
        ));
        assert!(matches!(
            parse("", o.as_bytes()).unwrap(),
            Parsed::Manifest(_)
        ));
        let i = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":5,"platform":{{"architecture":"arm","os":"linux","variant":"v6"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":5,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":5,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#,
            d(4),
            d(5),
            d(6),
            d(7)
        );
        let Parsed::Index(idx) = parse("", i.as_bytes()).unwrap() else {
            panic!()
        };
        let pick = |p: &str| {
            PlatformSelector::from_args(Some(p), false)
                .unwrap()
                .select(&idx)
                .unwrap()[0]
                .digest
                .to_string()
        };
        assert_eq!(pick("linux/amd64"), d(5));
        assert_eq!(pick("linux/arm64"), d(6));
        assert_eq!(pick("linux/aarch64"), d(6));
        assert_eq!(pick("linux/arm"), d(7));
        assert_eq!(pick("linux/arm/v6"), d(4));
        assert_eq!(pick("amd64"), d(5));
        let e = PlatformSelector::from_args(Some("linux/s390x"), false)
            .unwrap()
            .select(&idx)
            .unwrap_err();
        assert!(e.to_string().contains("linux/amd64"), "{e}");
        assert_eq!(PlatformSelector::All.select(&idx).unwrap().len(), 4);
        // a buildx attestation manifest is never selected
        let mut with_att = idx.clone();
        let mut att = with_att.manifests[1].clone();
        att.media_type = OCI_MANIFEST.into();
        att.platform = Some(Platform {
            architecture: "unknown".into(),
            os: "unknown".into(),
            ..Default::default()
        });
        att.annotations.insert(
            "vnd.docker.reference.type".into(),
            "attestation-manifest".into(),
        );
        with_att.manifests.push(att);
        assert_eq!(PlatformSelector::All.select(&with_att).unwrap().len(), 4);
        assert!(Platform::parse("linux//x").is_err());
    }

    #[test]
    fn rejects_unsupported() {
        let e = parse("", br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#).unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
        let e = parse(
            "",
            br#"{"schemaVersion":2,"mediaType":"application/x-foo"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unsupported media type"), "{e}");
        assert!(parse("", b"not json").is_err());
        let c = parse_config(
            format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{{"Env":["A=1"]}}}}"#, d(9)).as_bytes(),
        )
        .unwrap();
        assert_eq!(c.rootfs.diff_ids.len(), 1);
        assert_eq!(c.platform().to_string(), "linux/amd64");
        assert!(Platform::host().matches(&c.platform()) || std::env::consts::ARCH != "x86_64");
    }
}
