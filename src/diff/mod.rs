//! The diff subsystem: applying image layers to snapshots.
//!
//! A layer is a tar stream, possibly gzip- or zstd-compressed. [`apply_layer`] detects the
//! compression (media type, then the stream's magic bytes, which win), decompresses while
//! streaming — no layer is ever held in memory — applies the tar with [`apply::apply_tar`] and
//! computes the layer's diff ID (sha256 of the uncompressed stream) on the way.
//! [`unpack`] applies an image's layers into committed snapshots keyed by chain ID.

pub mod apply;
pub mod changes;
pub mod fixture;
pub mod unpack;

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

pub use apply::{apply_tar, clean_path, ApplyStats, Whiteouts};
pub use unpack::{chain_id, chain_ids, unpack, Layer, UnpackStats};

use crate::error::{Error, Result};

/// Compression of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type declares; InvalidArgument for media types that are not
/// layers nook can apply.
pub fn compression_of_media_type(media_type: &str) -> Result<Option<Compression>> {
    let mt = media_type.trim();
    if mt.is_empty() {
        return Ok(None);
    }
    let base = mt.split(';').next().unwrap_or(mt).trim();
    let c = match base {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
        other => {
            return Err(Error::InvalidArgument(format!(
                "unsupported layer media type {other:?}: nook applies tar, tar+gzip and tar+zstd layers"
            )))
        }
    };
    Ok(Some(c))
}

/// The compression the first bytes of a stream show.
pub fn compression_of_magic(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Feeds everything read through it into a sha256.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// `sha256:<hex>` of everything read so far, and its length.
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.bytes,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Result of applying one layer.
#[derive(Debug, Clone)]
pub struct Applied {
    /// `sha256:` of the uncompressed tar stream.
    pub diff_id: String,
    /// Uncompressed size.
    pub size: u64,
    pub stats: ApplyStats,
}

/// Opens a decompressing reader over a layer stream.
pub fn decompress<'a, R: Read + 'a>(reader: R, media_type: &str) -> Result<Box<dyn Read + 'a>> {
    let declared = compression_of_media_type(media_type)?;
    let mut br = BufReader::with_capacity(256 * 1024, reader);
    let head = br
        .fill_buf()
        .map_err(|e| Error::io("reading layer", e))?
        .to_vec();
    let mut found = compression_of_magic(&head);
    if head.len() < 4 && found == Compression::None {
        // Too short to tell (an empty stream is an empty tar for our purpose).
        found = declared.unwrap_or(Compression::None);
    }
    if let Some(d) = declared {
        if d != found {
            tracing::debug!(
                media_type,
                ?d,
                ?found,
                "layer compression differs from its media type; using the stream's"
            );
        }
    }
    Ok(match found {
        Compression::None => Box::new(br),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(br)
                .map_err(|e| Error::io("starting zstd decoder", e))?,
        ),
    })
}

/// Size of the chunks handed from the decompressing thread to the applying one.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight: at most CHUNK * DEPTH bytes of a layer are in memory.
const DEPTH: usize = 8;

/// Reads the chunks the decompressing thread sends; EOF when it is done.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// How the decompressing thread ended.
enum Produced {
    /// The whole stream: its digest and length.
    Done(String, u64),
    /// The applier stopped reading (it failed).
    Stopped,
}

/// Decompresses and hashes `reader`, sending the plain bytes in chunks.
fn produce<R: Read>(
    reader: R,
    media_type: &str,
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
) -> Result<Produced> {
    let mut plain = decompress(reader, media_type)?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0;
        while n < CHUNK {
            match plain.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let msg = format!("layer is corrupt or truncated: {e}");
                    let _ = tx.send(Err(io::Error::new(e.kind(), msg.clone())));
                    return Err(Error::InvalidArgument(msg));
                }
            }
        }
        if n == 0 {
            break;
        }
        buf.truncate(n);
        hasher.update(&buf);
        total += n as u64;
        if tx.send(Ok(buf)).is_err() {
            return Ok(Produced::Stopped);
        }
    }
    Ok(Produced::Done(
        format!("sha256:{}", hex::encode(hasher.finalize())),
        total,
    ))
}

/// Applies a layer stream (compressed or not) to `root`, computing its diff ID. When
/// `expected_diff_id` is given and differs, fails (the caller discards the directory).
///
/// Decompression and hashing run on a second thread, the tar is applied on this one; at most
/// a few MiB of the layer are in memory at any time.
pub fn apply_layer<R: Read + Send>(
    reader: R,
    media_type: &str,
    root: &Path,
    whiteouts: &Whiteouts,
    expected_diff_id: Option<&str>,
) -> Result<Applied> {
    // Refuse unknown media types before starting anything.
    compression_of_media_type(media_type)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(DEPTH);
    let (applied, produced) = std::thread::scope(|s| {
        let producer = s.spawn(move || produce(reader, media_type, tx));
        let mut chunks = ChunkReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        let applied = apply_tar(&mut chunks, root, whiteouts).and_then(|stats| {
            // The tar reader stops at the end-of-archive marker: hash (and verify, for
            // compressed streams) the rest too.
            io::copy(&mut chunks, &mut io::sink()).map_err(|e| {
                Error::InvalidArgument(format!(
                    "layer is corrupt or truncated after its last entry: {e}"
                ))
            })?;
            Ok(stats)
        });
        // Unblocks the producer if we stopped early.
        drop(chunks);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("layer decompression panicked".into())));
        (applied, produced)
    });
    let (diff_id, size, stats) = match (produced, applied) {
        // A broken stream explains whatever the applier saw.
        (Err(e), _) => return Err(e),
        (Ok(_), Err(e)) => return Err(e),
        (Ok(Produced::Stopped), Ok(_)) => {
            return Err(Error::Internal("layer reader stopped early".into()))
        }
        (Ok(Produced::Done(d, n)), Ok(st)) => (d, n, st),
    };
    if let Some(want) = expected_diff_id {
        if want != diff_id {
            return Err(Error::InvalidArgument(format!(
                "layer content does not match the image: diff ID is {diff_id}, the image config says {want}; the blob is corrupt or the image is inconsistent"
            )));
        }
    }
    Ok(Applied {
        diff_id,
        size,
        stats,
    })
}

#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
pub(crate) mod tests;
