//! Unpacking an image: its layers, in order, into committed snapshots keyed by chain ID, so that
//! images sharing base layers share their snapshots.

use std::collections::BTreeMap;
use std::io::Read;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::snapshot::Snapshotter;

/// One layer of an image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Digest of the blob (`sha256:…`), as in the manifest.
    pub digest: String,
    pub media_type: String,
    /// Digest of the uncompressed tar (`sha256:…`), as in the image config's rootfs.diff_ids.
    /// Empty when unknown: then it is computed while applying (and nothing is verified).
    pub diff_id: String,
}

/// What an unpack did.
#[derive(Debug, Clone, Default)]
pub struct UnpackStats {
    /// Chain ID of the top layer: the snapshot to prepare a container from.
    pub chain_id: String,
    /// Layers applied now.
    pub applied: usize,
    /// Layers whose snapshot already existed.
    pub reused: usize,
    /// Uncompressed bytes applied.
    pub bytes: u64,
}

/// chainID(L0) = diffID(L0); chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln)).
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(p) => {
            let mut h = Sha256::new();
            h.update(p.as_bytes());
            h.update(b" ");
            h.update(diff_id.as_bytes());
            format!("sha256:{}", hex::encode(h.finalize()))
        }
    }
}

/// The chain IDs of a list of diff IDs.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let c = chain_id(out.last().map(String::as_str), d);
        out.push(c);
    }
    out
}

/// Label on committed layer snapshots: the layer's uncompressed digest.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// Applies `layers` (bottom first) into `sn`, in namespace `ns`. `open` opens a blob by
/// digest. A layer whose chain-ID snapshot exists is skipped; a layer that fails leaves no
/// snapshot behind.
pub fn unpack<F>(
    sn: &dyn Snapshotter,
    ns: &str,
    layers: &[Layer],
    mut open: F,
) -> Result<UnpackStats>
where
    F: FnMut(&str) -> Result<Box<dyn Read + Send>>,
{
    let mut stats = UnpackStats::default();
    let mut parent: Option<String> = None;
    for (i, layer) in layers.iter().enumerate() {
        let known = !layer.diff_id.is_empty();
        if known && !layer.diff_id.starts_with("sha256:") {
            return Err(Error::InvalidArgument(format!(
                "layer {i} has diff ID {:?}: only sha256 is supported",
                layer.diff_id
            )));
        }
        if known {
            let chain = chain_id(parent.as_deref(), &layer.diff_id);
            match sn.stat(ns, &chain) {
                Ok(_) => {
                    stats.reused += 1;
                    parent = Some(chain);
                    continue;
                }
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let key = format!("extract-{:016x}-{i}", rand::random::<u64>());
        let mut labels = BTreeMap::new();
        labels.insert("nook.io/unpack".to_string(), "true".to_string());
        sn.prepare(ns, &key, parent.as_deref(), labels)?;
        let res = (|| -> Result<(u64, String, bool)> {
            let (dir, whiteouts) = sn.apply_target(ns, &key)?;
            let blob = open(&layer.digest)?;
            let applied = super::apply_layer(
                blob,
                &layer.media_type,
                &dir,
                &whiteouts,
                known.then_some(layer.diff_id.as_str()),
            )
            .map_err(|e| match e {
                Error::InvalidArgument(m) => {
                    Error::InvalidArgument(format!("layer {i} ({}): {m}", layer.digest))
                }
                e => e,
            })?;
            let chain = chain_id(parent.as_deref(), &applied.diff_id);
            let mut labels = BTreeMap::new();
            labels.insert(LABEL_UNCOMPRESSED.to_string(), applied.diff_id.clone());
            let fresh = match sn.commit(ns, &chain, &key, labels) {
                Ok(()) => true,
                // Someone else unpacked the same layer meanwhile: theirs is as good.
                Err(Error::AlreadyExists(_)) => {
                    sn.remove(ns, &key)?;
                    false
                }
                Err(e) => return Err(e),
            };
            Ok((applied.size, chain, fresh))
        })();
        let chain = match res {
            Ok((n, chain, fresh)) => {
                if fresh {
                    stats.applied += 1;
                    stats.bytes += n;
                } else {
                    stats.reused += 1;
                }
                chain
            }
            Err(e) => {
                if let Err(re) = sn.remove(ns, &key) {
                    tracing::warn!(key, error = %re, "removing the failed unpack's snapshot");
                }
                return Err(e);
            }
        };
        parent = Some(chain);
    }
    stats.chain_id = parent.unwrap_or_default();
    Ok(stats)
}
