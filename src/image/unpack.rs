//! Unpacking an image's layers into a snapshotter: the join of the content store, the image
//! model and the diff applier. Pull and import call it (when `[images] unpack` is on), and
//! `nook run` calls it for an image not yet unpacked in the chosen snapshotter.

use crate::content::{ContentStore, Digest};
use crate::error::{Error, Result};
use crate::image::manifest::PlatformSelector;
use crate::metadata::Store;
use crate::snapshot::{Snapshotter, Snapshotters};

/// The result of unpacking one image.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The snapshotter used.
    pub snapshotter: String,
    /// Chain ID of the top layer: the parent to prepare a container's snapshot from.
    pub chain_id: String,
    /// Layers applied now / already present.
    pub applied: usize,
    pub reused: usize,
    /// Uncompressed bytes applied.
    pub bytes: u64,
}

/// Unpacks image `name` of namespace `ns` (the host platform's manifest, or the one given)
/// into `snapshotter` (None: the default).
pub fn unpack_image(
    cs: &ContentStore,
    meta: &Store,
    snapshotters: &Snapshotters,
    ns: &str,
    name: &str,
    snapshotter: Option<&str>,
    platform: &PlatformSelector,
) -> Result<Unpacked> {
    let rec = super::get(meta, ns, name)?;
    let img = super::resolve(cs, meta, ns, &rec.target, platform)?
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::NotFound(format!("image {name:?} has no manifest for this platform"))
        })?;
    let sn = snapshotters.get(snapshotter)?;
    let layers: Vec<crate::diff::unpack::Layer> = img
        .layers
        .iter()
        .map(|l| crate::diff::unpack::Layer {
            digest: l.descriptor.digest.to_string(),
            media_type: l.descriptor.media_type.clone(),
            diff_id: l.diff_id.to_string(),
        })
        .collect();
    if layers.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "image {name:?} has no layers to unpack"
        )));
    }
    let stats = crate::diff::unpack::unpack(sn.as_ref(), ns, &layers, |digest| {
        let d = Digest::parse(digest)?;
        let f = cs.open_blob(meta, ns, &d)?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f))
            as Box<dyn std::io::Read + Send>)
    })?;
    Ok(Unpacked {
        snapshotter: sn.name().to_string(),
        chain_id: stats.chain_id,
        applied: stats.applied,
        reused: stats.reused,
        bytes: stats.bytes,
    })
}
