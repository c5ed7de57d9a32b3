//! Copying into and out of a container: what `nook cp` (nook's API) and the Docker API's
//! archive endpoints share. Each works on the container's root filesystem, mounted first if
//! need be, under the container's lock (a removal waits), with the tar work on a blocking
//! thread; the doors only turn their own chunks into bytes and back.

use crate::chunks::{ChannelReader, ChannelWriter};
use crate::error::{Error, Result};
use crate::runtime::containers::ContainerRecord;
use crate::runtime::copy::{self, PathInfo};

use super::Containers;

/// Feeds the tar of [`Containers::archive_in`] to its extractor.
pub struct ArchiveSink {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl ArchiveSink {
    /// Hands one chunk to the extractor, waiting off the async threads while its queue is
    /// full. False when the extractor has stopped: its job's result says why.
    pub async fn send(&self, data: Vec<u8>) -> bool {
        if data.is_empty() {
            return true;
        }
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || tx.send(data).is_ok())
            .await
            .unwrap_or(false)
    }
}

impl Containers {
    /// What is at `path` inside the container.
    pub async fn stat_path(&self, ns: &str, r: &ContainerRecord, path: &str) -> Result<PathInfo> {
        let path = path.to_string();
        self.manager()
            .with_rootfs(ns, r, move |root| copy::stat(root, &path))
            .await
    }

    /// Streams a tar of `path` inside the container (its top entry named `top`) into `out`.
    /// Runs in the background; the stream ends when the job does, and the job's result says
    /// whether it was whole.
    pub fn archive_out<T: Send + 'static>(
        &self,
        ns: &str,
        r: &ContainerRecord,
        path: &str,
        top: &str,
        mut out: ChannelWriter<T>,
    ) -> tokio::task::JoinHandle<Result<()>> {
        let m = self.manager().clone();
        let (ns, r, path, top) = (ns.to_string(), r.clone(), path.to_string(), top.to_string());
        tokio::spawn(async move {
            m.with_rootfs(&ns, &r, move |root| {
                copy::tar_out(root, &path, &top, &mut out)?;
                std::io::Write::flush(&mut out).map_err(|e| Error::io("sending the archive", e))
            })
            .await
        })
    }

    /// Extracts a tar into directory `dir` inside the container: the tar goes into the
    /// returned sink chunk by chunk; dropping the sink ends it, and the job's result says
    /// whether the extraction worked.
    pub fn archive_in(
        &self,
        ns: &str,
        r: &ContainerRecord,
        dir: &str,
    ) -> (ArchiveSink, tokio::task::JoinHandle<Result<()>>) {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let m = self.manager().clone();
        let (ns, r, dir) = (ns.to_string(), r.clone(), dir.to_string());
        let job = tokio::spawn(async move {
            m.with_rootfs(&ns, &r, move |root| {
                copy::tar_in(root, &dir, ChannelReader::new(rx))
            })
            .await
        });
        (ArchiveSink { tx }, job)
    }
}
