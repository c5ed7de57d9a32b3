//! The image subsystem: references, manifests, the image records of a namespace, pull and push
//! against registries, and import / export of archives.
//!
//! An image is a name pointing at a target descriptor (a manifest or an index) in the content
//! store, recorded in the metadata bucket [`IMAGES`] as `<ns>/<name>` → [`ImageRecord`]. Removing
//! an image removes only that record; its blobs stay until garbage collection.

pub mod archive;
pub mod auth;
#[doc(hidden)]
pub mod fixture;
pub mod manifest;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod unpack;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::content::{ContentStore, Digest};
use crate::error::{Error, Result};
use crate::events::Publisher;
use crate::metadata::{Store, IMAGES};

pub use manifest::{Descriptor, Platform, PlatformSelector};
pub use reference::Reference;

/// Content label naming a child blob, read by garbage collection (containerd's convention).
pub const GC_REF_PREFIX: &str = "containerd.io/gc.ref.content";
/// Content label saying which repository a blob came from on a registry
/// (`containerd.io/distribution.source.<host>` = `<repo>`), used for cross-repository mounts.
pub const SOURCE_LABEL_PREFIX: &str = "containerd.io/distribution.source.";
/// Content label on a compressed layer naming its uncompressed digest.
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

/// An image of a namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The full normalized reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The manifest or index it points at.
    pub target: Descriptor,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One layer of a platform image, in order from the base: what the unpacker needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layer {
    /// The layer blob as stored (compressed or not).
    pub descriptor: Descriptor,
    /// Its uncompressed digest, from the image config's `rootfs.diff_ids`.
    pub diff_id: Digest,
}

/// A resolved platform image: manifest, config and layers.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub manifest_descriptor: Descriptor,
    pub manifest: manifest::Manifest,
    pub config: manifest::ImageConfig,
    /// The raw config JSON (for `inspect` and the runtime's OCI spec).
    pub config_bytes: Vec<u8>,
    pub layers: Vec<Layer>,
}

impl PlatformImage {
    /// The chain id of the top layer (`sha256(parent_chain + " " + diff_id)`), the key a
    /// snapshotter uses for the unpacked image.
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(self.layers.iter().map(|l| &l.diff_id))
    }
}

/// The OCI chain ids of a stack of diff ids.
pub fn chain_ids<'a>(diff_ids: impl Iterator<Item = &'a Digest>) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => Digest::sha256(format!("{p} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Normalizes a name given by a user into the key images are stored under.
pub fn normalize_name(name: &str) -> Result<String> {
    Ok(Reference::parse(name)?.to_string())
}

/// Reads an image record (`name` is normalized first).
pub fn get(meta: &Store, ns: &str, name: &str) -> Result<ImageRecord> {
    let key = normalize_name(name)?;
    meta.get::<ImageRecord>(IMAGES, ns, &key)?
        .ok_or_else(|| Error::NotFound(format!("image {name:?} not found in namespace {ns:?}")))
}

/// Lists a namespace's images by name.
pub fn list(meta: &Store, ns: &str) -> Result<Vec<ImageRecord>> {
    Ok(meta
        .list::<ImageRecord>(IMAGES, ns)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Creates or updates the image `name` to point at `target`; returns the record.
pub fn put(
    meta: &Store,
    events: &Publisher,
    ns: &str,
    name: &str,
    target: Descriptor,
    labels: BTreeMap<String, String>,
) -> Result<ImageRecord> {
    let key = normalize_name(name)?;
    let (rec, created) = meta.write(|tx| {
        let now = chrono::Utc::now().timestamp();
        let (rec, created) = match tx.get::<ImageRecord>(IMAGES, ns, &key)? {
            Some(mut r) => {
                r.target = target;
                r.labels.extend(labels);
                r.updated_at = now;
                (r, false)
            }
            None => (
                ImageRecord {
                    name: key.clone(),
                    target,
                    labels,
                    created_at: now,
                    updated_at: now,
                },
                true,
            ),
        };
        tx.put(IMAGES, ns, &key, &rec)?;
        Ok((rec, created))
    })?;
    events.publish(
        ns,
        if created {
            "/images/create"
        } else {
            "/images/update"
        },
        &[
            ("name", rec.name.clone()),
            ("digest", rec.target.digest.to_string()),
        ],
    );
    Ok(rec)
}

/// Changes an existing image: a new `target` if given, and label changes (an empty value
/// removes a label). NotFound when there is no such image.
pub fn update(
    meta: &Store,
    events: &Publisher,
    ns: &str,
    name: &str,
    target: Option<Descriptor>,
    label_changes: BTreeMap<String, String>,
) -> Result<ImageRecord> {
    let key = normalize_name(name)?;
    let rec = meta.write(|tx| {
        let mut r = tx.get::<ImageRecord>(IMAGES, ns, &key)?.ok_or_else(|| {
            Error::NotFound(format!("image {name:?} not found in namespace {ns:?}"))
        })?;
        if let Some(t) = target {
            r.target = t;
        }
        for (k, v) in label_changes {
            if v.is_empty() {
                r.labels.remove(&k);
            } else {
                r.labels.insert(k, v);
            }
        }
        r.updated_at = chrono::Utc::now().timestamp();
        tx.put(IMAGES, ns, &key, &r)?;
        Ok(r)
    })?;
    events.publish(
        ns,
        "/images/update",
        &[
            ("name", rec.name.clone()),
            ("digest", rec.target.digest.to_string()),
        ],
    );
    Ok(rec)
}

/// Removes an image record (the blobs stay until garbage collection).
pub fn delete(meta: &Store, events: &Publisher, ns: &str, name: &str) -> Result<ImageRecord> {
    let key = normalize_name(name)?;
    meta.write(|tx| {
        let rec = tx.get::<ImageRecord>(IMAGES, ns, &key)?.ok_or_else(|| {
            Error::NotFound(format!("image {name:?} not found in namespace {ns:?}"))
        })?;
        tx.delete(IMAGES, ns, &key)?;
        Ok(rec)
    })
    .inspect(|rec| events.publish(ns, "/images/delete", &[("name", rec.name.clone())]))
}

/// Gives the image `src` the additional name `dst`.
pub fn tag(
    meta: &Store,
    events: &Publisher,
    ns: &str,
    src: &str,
    dst: &str,
) -> Result<ImageRecord> {
    normalize_name(dst)?; // a bad new name is reported before a missing source
    let rec = get(meta, ns, src)?;
    put(meta, events, ns, dst, rec.target, rec.labels)
}

/// Resolves the platform images of `target` present in the content store (the ones a pull
/// selected). With [`PlatformSelector::One`] returns the single best match.
pub fn resolve(
    cs: &ContentStore,
    meta: &Store,
    ns: &str,
    target: &Descriptor,
    platforms: &PlatformSelector,
) -> Result<Vec<PlatformImage>> {
    let mut out = Vec::new();
    collect(cs, meta, ns, target, platforms, &mut out, 0)?;
    if out.is_empty() {
        return Err(Error::NotFound(format!(
            "image {} has no manifest for {} in the content store; pull it with --platform",
            target.digest,
            match platforms {
                PlatformSelector::One(p) => p.to_string(),
                PlatformSelector::All => "any platform".into(),
            }
        )));
    }
    if let PlatformSelector::One(_) = platforms {
        out.truncate(1);
    }
    Ok(out)
}

fn collect(
    cs: &ContentStore,
    meta: &Store,
    ns: &str,
    desc: &Descriptor,
    platforms: &PlatformSelector,
    out: &mut Vec<PlatformImage>,
    depth: u32,
) -> Result<()> {
    if depth > 4 {
        return Err(Error::InvalidArgument(
            "image index nested too deeply".into(),
        ));
    }
    let bytes = cs.read(meta, ns, &desc.digest)?;
    match manifest::parse(&desc.media_type, &bytes)? {
        manifest::Parsed::Index(idx) => {
            let chosen = match platforms {
                PlatformSelector::All => platforms.select(&idx)?,
                PlatformSelector::One(_) => {
                    // prefer the best match, but only among the manifests we actually have
                    let mut have = idx.clone();
                    have.manifests
                        .retain(|d| cs.exists(meta, ns, &d.digest).unwrap_or(false));
                    platforms.select(&have).map(|v| {
                        v.into_iter()
                            .filter_map(|d| idx.manifests.iter().find(|x| x.digest == d.digest))
                            .collect()
                    })?
                }
            };
            for d in chosen {
                if !cs.exists(meta, ns, &d.digest)? {
                    continue;
                }
                collect(cs, meta, ns, d, platforms, out, depth + 1)?;
            }
        }
        manifest::Parsed::Manifest(m) => {
            let config_bytes = cs.read(meta, ns, &m.config.digest)?;
            let config = manifest::parse_config(&config_bytes)?;
            if depth == 0 || platforms.accepts(&config.platform()) {
                out.push(platform_image(desc.clone(), m, config, config_bytes)?);
            }
        }
    }
    Ok(())
}

fn platform_image(
    manifest_descriptor: Descriptor,
    manifest: manifest::Manifest,
    config: manifest::ImageConfig,
    config_bytes: Vec<u8>,
) -> Result<PlatformImage> {
    let layers_only: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| manifest::is_layer(&l.media_type))
        .collect();
    if layers_only.len() != config.rootfs.diff_ids.len() {
        return Err(Error::InvalidArgument(format!(
            "image {} is inconsistent: {} layers but {} diff_ids in its config",
            manifest_descriptor.digest,
            layers_only.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let layers = layers_only
        .into_iter()
        .zip(config.rootfs.diff_ids.iter())
        .map(|(d, id)| Layer {
            descriptor: d.clone(),
            diff_id: id.clone(),
        })
        .collect();
    Ok(PlatformImage {
        manifest_descriptor,
        manifest,
        config,
        config_bytes,
        layers,
    })
}

/// Every blob digest an image references that is present (index, manifests, configs, layers).
pub fn blobs_of(
    cs: &ContentStore,
    meta: &Store,
    ns: &str,
    target: &Descriptor,
) -> Result<Vec<Descriptor>> {
    let mut out = vec![target.clone()];
    let mut i = 0;
    while i < out.len() {
        let d = out[i].clone();
        i += 1;
        if !(manifest::is_index(&d.media_type) || manifest::is_manifest(&d.media_type)) {
            continue;
        }
        let Ok(bytes) = cs.read(meta, ns, &d.digest) else {
            continue;
        };
        match manifest::parse(&d.media_type, &bytes)? {
            manifest::Parsed::Index(idx) => {
                for c in idx.manifests {
                    if cs.exists(meta, ns, &c.digest)? && !out.iter().any(|o| o.digest == c.digest)
                    {
                        out.push(c);
                    }
                }
            }
            manifest::Parsed::Manifest(m) => {
                for c in std::iter::once(m.config).chain(m.layers) {
                    if !out.iter().any(|o| o.digest == c.digest) {
                        out.push(c);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Total size of an image's blobs present in the store.
pub fn size(cs: &ContentStore, meta: &Store, ns: &str, target: &Descriptor) -> Result<u64> {
    Ok(blobs_of(cs, meta, ns, target)?
        .iter()
        .filter_map(|d| cs.blob_size(&d.digest))
        .sum())
}

/// The labels a parent blob carries so garbage collection keeps its children.
pub fn gc_labels(children: &[(String, Digest)]) -> BTreeMap<String, String> {
    children
        .iter()
        .map(|(k, d)| (format!("{GC_REF_PREFIX}.{k}"), d.to_string()))
        .collect()
}

/// The gc labels of a manifest (`config`, `l.<i>`) or index (`m.<i>`) document.
pub fn gc_labels_for(parsed: &manifest::Parsed) -> BTreeMap<String, String> {
    let mut v = Vec::new();
    match parsed {
        manifest::Parsed::Index(idx) => {
            for (i, m) in idx.manifests.iter().enumerate() {
                v.push((format!("m.{i}"), m.digest.clone()));
            }
        }
        manifest::Parsed::Manifest(m) => {
            v.push(("config".to_string(), m.config.digest.clone()));
            for (i, l) in m.layers.iter().enumerate() {
                v.push((format!("l.{i}"), l.digest.clone()));
            }
        }
    }
    gc_labels(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::sha256(b"a");
        let b = Digest::sha256(b"b");
        let c = chain_ids([a.clone(), b.clone()].iter());
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::sha256(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn records() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Store::open(&dir.path().join("m.redb")).unwrap();
        let t = Descriptor::new(manifest::OCI_MANIFEST, Digest::sha256(b"m"), 1);
        put(
            &meta,
            &Publisher::discard(),
            "default",
            "busybox",
            t.clone(),
            BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            get(&meta, "default", "docker.io/library/busybox:latest")
                .unwrap()
                .target,
            t
        );
        tag(
            &meta,
            &Publisher::discard(),
            "default",
            "busybox",
            "localhost:5000/b:1",
        )
        .unwrap();
        let names: Vec<String> = list(&meta, "default")
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(
            names,
            vec!["docker.io/library/busybox:latest", "localhost:5000/b:1"]
        );
        delete(&meta, &Publisher::discard(), "default", "busybox").unwrap();
        assert!(matches!(
            get(&meta, "default", "busybox"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            delete(&meta, &Publisher::discard(), "default", "busybox"),
            Err(Error::NotFound(_))
        ));
        assert!(get(&meta, "other", "localhost:5000/b:1").is_err());
    }
}
