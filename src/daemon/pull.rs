//! Pulling an image into a namespace as every front door does it: fetch under the pull's own
//! lease, record the image, unpack it into the default snapshotter (when `[images] unpack` is
//! on), and leave no image behind when the unpack fails. nook's API and the CRI both call this.

use std::sync::Arc;

use super::Daemon;
use crate::error::{Error, Result};
use crate::image::manifest::PlatformSelector;
use crate::image::pull::{Progress, PullOptions, PullResult, Puller};
use crate::image::registry::Registry;
use crate::image::Reference;

/// Pulls `reference` into `ns` and unpacks it, reporting progress through `progress`.
pub async fn pull_unpacked(
    d: &Arc<Daemon>,
    registry: &Registry,
    ns: &str,
    reference: &str,
    opts: &PullOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<PullResult> {
    // The pull's temporary lease (taken before anything is written) keeps what it fetches from
    // collections, so a long download does not hold collections off (and, with them, every
    // container creation queued behind a waiting collection). Only the unpack, which makes
    // snapshots no lease names, excludes them.
    let puller = Puller {
        cs: &d.content,
        meta: &d.store,
        events: &d.events,
        ns,
        registry,
    };
    let existed = Reference::parse(reference)
        .map(|r| crate::image::get(&d.store, ns, &r.to_string()).is_ok())
        .unwrap_or(true);
    let mut res = puller.pull(reference, opts, progress).await;
    if let Ok(r) = &res {
        d.mutated(false);
        // the platform pulled (all platforms: this machine's)
        let platform = match &opts.platforms {
            PlatformSelector::All => PlatformSelector::default(),
            one => one.clone(),
        };
        let _gc = d.gc.lock.read().await;
        if let Err(e) = unpack_new(d, ns, vec![r.image.name.clone()], platform).await {
            // An image this pull added but could not unpack goes again, so a failed pull leaves
            // no image behind (its blobs stay for a retry, or for `nook gc`).
            if !existed {
                let _ = crate::image::delete(&d.store, &d.events, ns, &r.image.name);
            }
            res = Err(if e.is_no_space() {
                Error::NoSpace(format!("unpacking {}: {e}", r.image.name))
            } else {
                Error::Internal(format!(
                    "pulled {}, but unpacking it failed: {e}",
                    r.image.name
                ))
            });
        }
    }
    crate::daemon::metrics::global().pull(res.is_ok());
    match &res {
        Ok(r) => {
            tracing::info!(image = %r.image.name, digest = %r.image.target.digest, bytes = r.downloaded, "pulled")
        }
        Err(e) => tracing::warn!("pull {reference}: {e}"),
    }
    res
}

/// Unpacks freshly pulled or imported images into the default snapshotter (when
/// `[images] unpack` is on), so `nook run` finds them ready.
pub async fn unpack_new(
    d: &Arc<Daemon>,
    ns: &str,
    names: Vec<String>,
    platform: PlatformSelector,
) -> Result<()> {
    if !d.config.images.unpack {
        return Ok(());
    }
    let (d, ns) = (d.clone(), ns.to_string());
    tokio::task::spawn_blocking(move || {
        for name in names {
            let t0 = std::time::Instant::now();
            let u = crate::image::unpack::unpack_image(
                &d.content,
                &d.store,
                &d.snapshotters,
                &ns,
                &name,
                None,
                &platform,
            )?;
            tracing::info!(
                image = %name,
                snapshotter = %u.snapshotter,
                applied = u.applied,
                reused = u.reused,
                bytes = u.bytes,
                ms = t0.elapsed().as_millis() as u64,
                "unpacked"
            );
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::Internal(format!("unpack panicked: {e}")))?
}
