//! Push: upload an image's missing blobs (HEAD first; a cross-repository mount when the blob
//! came from another repository of the same registry), then its manifests, children before the
//! index, the top one under the destination tag.

use std::collections::BTreeMap;

use futures::stream::{self, TryStreamExt};

use super::manifest::{self, Descriptor, Parsed, PlatformSelector};
use super::pull::{BlobKind, BlobState, Progress};
use super::registry::Registry;
use super::{Reference, SOURCE_LABEL_PREFIX};
use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::metadata::Store;

/// Everything a push touches.
pub struct Pusher<'a> {
    pub cs: &'a ContentStore,
    pub meta: &'a Store,
    pub ns: &'a str,
    pub registry: &'a Registry,
}

/// The outcome of a push.
#[derive(Debug, Clone)]
pub struct PushResult {
    /// Where it went (`dest` normalized).
    pub reference: String,
    /// The manifest or index pushed.
    pub target: Descriptor,
    pub uploaded: u64,
    pub mounted: usize,
    pub skipped: usize,
}

impl Pusher<'_> {
    /// Pushes the local image `local` to `dest` (default: its own name). An index whose
    /// platforms were not all pulled is pushed as the manifest of `platforms`.
    pub async fn push(
        &self,
        local: &str,
        dest: Option<&str>,
        platforms: &PlatformSelector,
        max_concurrent: usize,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<PushResult> {
        let rec = super::get(self.meta, self.ns, local)?;
        let dest = Reference::parse(dest.unwrap_or(&rec.name))?;
        let mut target = rec.target.clone();
        target.annotations.clear();
        target.platform = None;
        // documents (children first) and blobs
        let mut docs: Vec<(Descriptor, Vec<u8>)> = Vec::new();
        let mut blobs: Vec<(Descriptor, BlobKind)> = Vec::new();
        if !self.complete(&target)? {
            let p = super::resolve(self.cs, self.meta, self.ns, &target, platforms)?;
            target = p[0].manifest_descriptor.clone();
            target.platform = None;
        }
        self.walk(&target, &mut docs, &mut blobs, 0)?;
        // scopes: push to dest, pull from mount sources on the same registry
        let mut scopes = vec![format!("repository:{}:pull,push", dest.repository())];
        let mut sources: BTreeMap<String, String> = BTreeMap::new();
        for (d, _) in &blobs {
            if let Ok(info) = self.cs.info(self.meta, self.ns, &d.digest) {
                if let Some(src) = info
                    .labels
                    .get(&format!("{SOURCE_LABEL_PREFIX}{}", dest.domain()))
                {
                    let src = src.split(',').next().unwrap_or("").to_string();
                    if !src.is_empty() && src != dest.repository() {
                        let s = format!("repository:{src}:pull");
                        if !scopes.contains(&s) {
                            scopes.push(s);
                        }
                        sources.insert(d.digest.to_string(), src);
                    }
                }
            }
        }
        for (d, kind) in &blobs {
            progress(Progress::Blob {
                digest: d.digest.clone(),
                kind: *kind,
                state: BlobState::Waiting,
                current: 0,
                total: d.size,
            });
        }
        let counts = std::sync::Mutex::new((0u64, 0usize, 0usize));
        let scopes_ref = &scopes;
        let dest_ref = &dest;
        let sources_ref = &sources;
        let counts_ref = &counts;
        stream::iter(blobs.iter().map(Ok::<_, Error>))
            .try_for_each_concurrent(max_concurrent.max(1), |(d, kind)| async move {
                let ev = |state, current| {
                    progress(Progress::Blob {
                        digest: d.digest.clone(),
                        kind: *kind,
                        state,
                        current,
                        total: d.size,
                    })
                };
                if self.registry.blob_exists(dest_ref, &d.digest, scopes_ref).await? {
                    ev(BlobState::Exists, d.size);
                    counts_ref.lock().unwrap_or_else(|p| p.into_inner()).2 += 1;
                    return Ok(());
                }
                let path = self.cs.blob_path(&d.digest);
                if self.cs.blob_size(&d.digest) != Some(d.size) {
                    return Err(Error::NotFound(format!(
                        "blob {} of the image is missing or truncated in the content store; pull the image again",
                        d.digest
                    )));
                }
                ev(BlobState::Downloading, 0);
                let from = sources_ref.get(&d.digest.to_string()).map(String::as_str);
                let mounted = self
                    .registry
                    .push_blob(dest_ref, d, &path, from, scopes_ref)
                    .await?;
                {
                    let mut c = counts_ref.lock().unwrap_or_else(|p| p.into_inner());
                    if mounted {
                        c.1 += 1;
                    } else {
                        c.0 += d.size;
                    }
                }
                ev(if mounted { BlobState::Exists } else { BlobState::Done }, d.size);
                Ok(())
            })
            .await?;
        // documents: children by digest, the top one under the tag
        for (i, (d, bytes)) in docs.iter().enumerate() {
            let top = i + 1 == docs.len();
            let object = if top {
                dest.tag()
                    .map(str::to_string)
                    .unwrap_or_else(|| d.digest.to_string())
            } else {
                d.digest.to_string()
            };
            if let Some(want) = dest.digest() {
                if top && want != &d.digest {
                    return Err(Error::InvalidArgument(format!(
                        "destination {dest} names digest {want} but the image is {}",
                        d.digest
                    )));
                }
            }
            self.registry
                .push_manifest(&dest, &object, &d.media_type, bytes, &scopes)
                .await?;
            progress(Progress::Blob {
                digest: d.digest.clone(),
                kind: if manifest::is_index(&d.media_type) {
                    BlobKind::Index
                } else {
                    BlobKind::Manifest
                },
                state: BlobState::Done,
                current: d.size,
                total: d.size,
            });
        }
        // remember where the blobs now are, for later mounts
        let label = format!("{SOURCE_LABEL_PREFIX}{}", dest.domain());
        for (d, _) in blobs
            .iter()
            .map(|(d, k)| (d, k))
            .chain(docs.iter().map(|(d, _)| (d, &BlobKind::Manifest)))
        {
            if let Ok(info) = self.cs.info(self.meta, self.ns, &d.digest) {
                if !info.labels.contains_key(&label) {
                    let mut l = BTreeMap::new();
                    l.insert(label.clone(), dest.repository().to_string());
                    let _ = self.cs.update_labels(self.meta, self.ns, &d.digest, l);
                }
            }
        }
        let (uploaded, mounted, skipped) = counts.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(PushResult {
            reference: dest.to_string(),
            target,
            uploaded,
            mounted,
            skipped,
        })
    }

    fn complete(&self, d: &Descriptor) -> Result<bool> {
        if !manifest::is_index(&d.media_type) {
            return Ok(true);
        }
        let bytes = self.cs.read(self.meta, self.ns, &d.digest)?;
        if let Parsed::Index(idx) = manifest::parse(&d.media_type, &bytes)? {
            for c in &idx.manifests {
                if !self.cs.exists(self.meta, self.ns, &c.digest)? || !self.complete(c)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn walk(
        &self,
        d: &Descriptor,
        docs: &mut Vec<(Descriptor, Vec<u8>)>,
        blobs: &mut Vec<(Descriptor, BlobKind)>,
        depth: u32,
    ) -> Result<()> {
        if depth > 4 {
            return Err(Error::InvalidArgument(
                "image index nested too deeply".into(),
            ));
        }
        let bytes = self.cs.read(self.meta, self.ns, &d.digest)?;
        match manifest::parse(&d.media_type, &bytes)? {
            Parsed::Index(idx) => {
                for c in &idx.manifests {
                    self.walk(c, docs, blobs, depth + 1)?;
                }
            }
            Parsed::Manifest(m) => {
                for (b, k) in std::iter::once((&m.config, BlobKind::Config))
                    .chain(m.layers.iter().map(|l| (l, BlobKind::Layer)))
                {
                    if !blobs.iter().any(|(x, _)| x.digest == b.digest) {
                        blobs.push((b.clone(), k));
                    }
                }
            }
        }
        if !docs.iter().any(|(x, _)| x.digest == d.digest) {
            let mut dd = d.clone();
            dd.annotations.clear();
            dd.platform = None;
            docs.push((dd, bytes));
        }
        Ok(())
    }
}
