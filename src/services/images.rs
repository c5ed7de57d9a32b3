//! The images service: the image operations whose rules a front door must not have to know —
//! which images containers use, and pruning the others followed by a collection.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Gc, Pruned};
use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::events::Publisher;
use crate::image::manifest::PlatformSelector;
use crate::image::{self, ImageRecord, Reference};
use crate::metadata::Store;
use crate::runtime::containers::ContainerRecord;

/// An image with what its record alone does not say.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub record: ImageRecord,
    /// Bytes of its blobs in the content store.
    pub size: u64,
    /// The platforms it has (`linux/amd64`, …).
    pub platforms: Vec<String>,
}

/// Images of every namespace.
pub struct Images {
    store: Arc<Store>,
    content: Arc<ContentStore>,
    events: Publisher,
    gc: Arc<Gc>,
}

impl Images {
    pub fn new(
        store: Arc<Store>,
        content: Arc<ContentStore>,
        events: Publisher,
        gc: Arc<Gc>,
    ) -> Images {
        Images {
            store,
            content,
            events,
            gc,
        }
    }

    /// The image with its size and platforms. Blocking (reads manifests).
    pub fn info(&self, ns: &str, r: &ImageRecord) -> ImageInfo {
        let size = image::size(&self.content, &self.store, ns, &r.target).unwrap_or(0);
        let platforms = image::resolve(
            &self.content,
            &self.store,
            ns,
            &r.target,
            &PlatformSelector::All,
        )
        .map(|v| v.iter().map(|p| p.config.platform().to_string()).collect())
        .unwrap_or_default();
        ImageInfo {
            record: r.clone(),
            size,
            platforms,
        }
    }

    /// The image names and target digests that containers of `ns` were created from.
    /// Blocking.
    pub fn in_use(&self, ns: &str) -> Result<HashSet<String>> {
        Ok(self
            .store
            .list::<ContainerRecord>(crate::metadata::CONTAINERS, ns)?
            .into_iter()
            .flat_map(|(_, c)| [c.image, c.image_digest])
            .collect())
    }

    /// Removes the images of `ns` that no container uses: dangling ones (untagged, by digest
    /// only), or with `all` every unused one; then collects what they held.
    pub async fn prune(self: &Arc<Self>, ns: &str, all: bool) -> Result<Pruned<ImageInfo>> {
        let before = self.gc.disk_total().await;
        // Container creations hold the GC lock for reading until their record is written:
        // holding it for writing, no container is half made from an image removed here.
        let held = self.gc.state().lock.write().await;
        let (me, ns2) = (self.clone(), ns.to_string());
        let removed = tokio::task::spawn_blocking(move || me.prune_unused(&ns2, all))
            .await
            .map_err(|e| Error::Internal(format!("image prune panicked: {e}")))??;
        drop(held);
        self.gc.collect_now().await?;
        let after = self.gc.disk_total().await;
        Ok(Pruned {
            removed,
            reclaimed_bytes: before.saturating_sub(after),
        })
    }

    fn prune_unused(&self, ns: &str, all: bool) -> Result<Vec<ImageInfo>> {
        let used = self.in_use(ns)?;
        let mut removed = Vec::new();
        for img in image::list(&self.store, ns)? {
            let tagged = Reference::parse(&img.name)
                .map(|r| r.digest().is_none() || r.tag().is_some())
                .unwrap_or(true);
            if used.contains(&img.name)
                || used.contains(&img.target.digest.to_string())
                || (tagged && !all)
            {
                continue;
            }
            let info = self.info(ns, &img);
            match image::delete(&self.store, &self.events, ns, &img.name) {
                Ok(_) | Err(Error::NotFound(_)) => removed.push(info),
                Err(e) => return Err(e),
            }
        }
        if !removed.is_empty() {
            self.gc.state().mutated(true);
        }
        Ok(removed)
    }
}
