//! The content store: blobs addressed by digest under `<root>/content/`.
//!
//! Blobs live at `blobs/<algorithm>/<hex>` (sha256, sha512). Nothing becomes a blob without
//! passing through the ingest area: a [`Writer`] appends to `ingest/<hash of ref>/data`, and
//! [`Writer::commit`] checks the size and the digest before it renames the data into `blobs/`
//! atomically. A writer opened again for the same ref resumes at the size already written
//! (its [`Writer::offset`]), which is how an interrupted download continues with a Range request.
//!
//! Blobs are shared by every namespace on disk (one copy), while each namespace sees only the
//! content it references: the metadata bucket [`CONTENT`](crate::metadata::CONTENT) holds
//! `<ns>/<digest>` → [`ContentRecord`] (size, labels). Deleting content from a namespace drops the
//! reference only; the bytes stay until garbage collection finds nothing referencing them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{Error, IoContext, Result};
use crate::events::Publisher;
use crate::metadata::{Store, CONTENT};

/// A digest algorithm the store accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name used in digests and in the blob path.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest `algorithm:hex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses and validates `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase hex).
    pub fn parse(s: &str) -> Result<Digest> {
        let (algo, hex) = s.split_once(':').ok_or_else(|| {
            Error::InvalidArgument(format!("invalid digest {s:?}: expected algorithm:hex"))
        })?;
        let algorithm = match algo {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unsupported digest algorithm {other:?} in {s:?}: use sha256 or sha512"
                )))
            }
        };
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::InvalidArgument(format!(
                "invalid digest {s:?}: {algo} needs {} lowercase hex digits",
                algorithm.hex_len()
            )));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The sha256 digest of `data`.
    pub fn sha256(data: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    /// The digest of `data` with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(data);
        h.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as shown to users.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An incremental hash of either algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// What a namespace records about a blob it references.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ContentRecord {
    pub size: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

/// A blob as a namespace sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Info {
    pub digest: Digest,
    pub size: u64,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An ingest in progress (or interrupted).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IngestStatus {
    pub reference: String,
    pub offset: u64,
    pub expected: Option<Digest>,
    pub total: Option<u64>,
}

/// The content store (shared: clone the `Arc`). nookd opens one per root and hands it to
/// every subsystem, so the in-process writer locks hold across them.
pub struct ContentStore {
    root: PathBuf,
    /// Refs with an open writer, each with a channel closed when that writer goes away.
    active: Arc<Mutex<HashMap<String, tokio::sync::watch::Sender<()>>>>,
    /// Where `/content/delete` events go.
    events: Publisher,
}

impl ContentStore {
    /// Opens (creating) the store at `dir` (normally `<root>/content`), publishing its events
    /// through `events`.
    pub fn open(dir: &Path, events: Publisher) -> Result<Arc<ContentStore>> {
        for sub in ["blobs/sha256", "blobs/sha512", "ingest"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        }
        Ok(Arc::new(ContentStore {
            root: dir.to_path_buf(),
            active: Arc::new(Mutex::new(HashMap::new())),
            events,
        }))
    }

    /// The directory of the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm.name())
            .join(&digest.hex)
    }

    /// The size of the blob on disk, if it is there (namespaces ignored).
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    fn ingest_dir(&self, reference: &str) -> PathBuf {
        self.root
            .join("ingest")
            .join(hex::encode(&Sha256::digest(reference.as_bytes())[..16]))
    }

    /// Opens a writer for `reference`, resuming an earlier interrupted one with the same ref.
    ///
    /// `expected` (digest and size) is checked at commit; a changed expectation for an existing
    /// ingest restarts it. Two writers for one ref at once: the second gets `Unavailable`.
    pub fn writer(&self, reference: &str, expected: Option<(Digest, u64)>) -> Result<Writer> {
        if reference.is_empty() {
            return Err(Error::InvalidArgument(
                "ingest ref must not be empty".into(),
            ));
        }
        {
            let mut active = lock(&self.active);
            if active.contains_key(reference) {
                return Err(Error::Unavailable(format!(
                    "ref {reference:?} is being written by another writer; retry when it ends"
                )));
            }
            active.insert(reference.to_string(), tokio::sync::watch::channel(()).0);
        }
        let guard = ActiveGuard {
            set: self.active.clone(),
            reference: reference.to_string(),
        };
        let dir = self.ingest_dir(reference);
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let meta = IngestMeta {
            reference: reference.to_string(),
            expected: expected.as_ref().map(|(d, _)| d.clone()),
            total: expected.as_ref().map(|(_, s)| *s),
            started_at: chrono::Utc::now().timestamp(),
        };
        let meta_path = dir.join("ref.json");
        let old: Option<IngestMeta> = fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let data_path = dir.join("data");
        let mut restart = match &old {
            Some(o) => o.expected != meta.expected || o.total != meta.total,
            None => true,
        };
        if !restart {
            restart = !data_path.exists();
        }
        if restart {
            fs::write(&meta_path, serde_json::to_vec(&meta)?)
                .ctx(|| format!("writing {}", meta_path.display()))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(restart)
            .open(&data_path)
            .ctx(|| format!("opening {}", data_path.display()))?;
        let algorithm = expected
            .as_ref()
            .map(|(d, _)| d.algorithm)
            .unwrap_or(Algorithm::Sha256);
        let mut hasher = Hasher::new(algorithm);
        // Rehash what an earlier writer left, so the digest covers the whole blob.
        let mut offset = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file
                .read(&mut buf)
                .ctx(|| format!("reading {}", data_path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        if let Some((_, size)) = &expected {
            if offset > *size {
                file.set_len(0)
                    .ctx(|| format!("truncating {}", data_path.display()))?;
                file.seek(SeekFrom::Start(0))
                    .ctx(|| "seeking ingest".to_string())?;
                hasher = Hasher::new(algorithm);
                offset = 0;
            }
        }
        Ok(Writer {
            root: self.root.clone(),
            dir,
            file: Some(file),
            hasher,
            offset,
            algorithm,
            expected,
            _guard: guard,
        })
    }

    /// Waits until the writer now open for `reference` (if any) is gone: committed, failed or
    /// dropped. Returns at once when there is none. Lets a second pull of a blob wait for the
    /// download in flight instead of polling or downloading it again.
    pub async fn wait_writer(&self, reference: &str) {
        let rx = lock(&self.active).get(reference).map(|tx| tx.subscribe());
        if let Some(mut rx) = rx {
            // the sender is dropped with the writer: `changed` then fails, which is the signal
            while rx.changed().await.is_ok() {}
        }
    }

    /// Lists the ingests present (active or interrupted).
    pub fn ingests(&self) -> Result<Vec<IngestStatus>> {
        let mut out = Vec::new();
        let dir = self.root.join("ingest");
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let e = e.ctx(|| format!("reading {}", dir.display()))?;
            let meta: Option<IngestMeta> = fs::read(e.path().join("ref.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(m) = meta {
                let offset = fs::metadata(e.path().join("data"))
                    .map(|m| m.len())
                    .unwrap_or(0);
                out.push(IngestStatus {
                    reference: m.reference,
                    offset,
                    expected: m.expected,
                    total: m.total,
                });
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Drops an interrupted ingest.
    pub fn abort(&self, reference: &str) -> Result<()> {
        if lock(&self.active).contains_key(reference) {
            return Err(Error::Unavailable(format!(
                "ref {reference:?} is being written"
            )));
        }
        let dir = self.ingest_dir(reference);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("no ingest with ref {reference:?}")))
            }
            Err(e) => Err(Error::io(format!("removing {}", dir.display()), e)),
        }
    }

    /// Records that namespace `ns` references the blob `digest` (which must be on disk), merging
    /// `labels` into any it has. Returns the record.
    pub fn add_ref(
        &self,
        meta: &Store,
        ns: &str,
        digest: &Digest,
        labels: BTreeMap<String, String>,
    ) -> Result<ContentRecord> {
        let size = self.blob_size(digest).ok_or_else(|| {
            Error::NotFound(format!("content {digest} is not in the content store"))
        })?;
        let key = digest.to_string();
        meta.write(|tx| {
            let now = chrono::Utc::now().timestamp();
            let mut rec = tx
                .get::<ContentRecord>(CONTENT, ns, &key)?
                .unwrap_or(ContentRecord {
                    size,
                    labels: BTreeMap::new(),
                    created_at: now,
                    updated_at: now,
                });
            if !labels.is_empty() {
                rec.labels.extend(labels);
                rec.updated_at = now;
            }
            rec.size = size;
            tx.put(CONTENT, ns, &key, &rec)?;
            Ok(rec)
        })
    }

    /// Whether `ns` references `digest` and the blob is on disk.
    pub fn exists(&self, meta: &Store, ns: &str, digest: &Digest) -> Result<bool> {
        Ok(meta
            .get::<ContentRecord>(CONTENT, ns, &digest.to_string())?
            .is_some()
            && self.blob_size(digest).is_some())
    }

    /// The blob `digest` as namespace `ns` sees it.
    pub fn info(&self, meta: &Store, ns: &str, digest: &Digest) -> Result<Info> {
        let rec = meta
            .get::<ContentRecord>(CONTENT, ns, &digest.to_string())?
            .ok_or_else(|| not_found(ns, digest))?;
        if self.blob_size(digest).is_none() {
            return Err(not_found(ns, digest));
        }
        Ok(Info {
            digest: digest.clone(),
            size: rec.size,
            labels: rec.labels,
            created_at: rec.created_at,
            updated_at: rec.updated_at,
        })
    }

    /// Replaces the labels of `digest` in `ns` (an empty value removes a label).
    pub fn update_labels(
        &self,
        meta: &Store,
        ns: &str,
        digest: &Digest,
        labels: BTreeMap<String, String>,
    ) -> Result<Info> {
        let key = digest.to_string();
        let rec = meta.write(|tx| {
            let mut rec = tx
                .get::<ContentRecord>(CONTENT, ns, &key)?
                .ok_or_else(|| not_found(ns, digest))?;
            for (k, v) in labels {
                if v.is_empty() {
                    rec.labels.remove(&k);
                } else {
                    rec.labels.insert(k, v);
                }
            }
            rec.updated_at = chrono::Utc::now().timestamp();
            tx.put(CONTENT, ns, &key, &rec)?;
            Ok(rec)
        })?;
        Ok(Info {
            digest: digest.clone(),
            size: rec.size,
            labels: rec.labels,
            created_at: rec.created_at,
            updated_at: rec.updated_at,
        })
    }

    /// Opens the blob for reading, if `ns` references it.
    pub fn open_blob(&self, meta: &Store, ns: &str, digest: &Digest) -> Result<File> {
        self.info(meta, ns, digest)?;
        let p = self.blob_path(digest);
        File::open(&p).ctx(|| format!("opening {}", p.display()))
    }

    /// Reads a whole blob (manifests, configs) if `ns` references it.
    pub fn read(&self, meta: &Store, ns: &str, digest: &Digest) -> Result<Vec<u8>> {
        self.info(meta, ns, digest)?;
        self.read_blob(digest)
    }

    /// Reads a whole blob from disk, without a namespace check (internal use).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(digest);
        fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("content {digest} is not in the content store"))
            } else {
                Error::io(format!("reading {}", p.display()), e)
            }
        })
    }

    /// Removes `ns`'s reference to `digest`. The bytes stay until garbage collection.
    pub fn delete(&self, meta: &Store, ns: &str, digest: &Digest) -> Result<()> {
        let key = digest.to_string();
        let existed = meta.write(|tx| tx.delete(CONTENT, ns, &key))?;
        if existed {
            self.events
                .publish(ns, "/content/delete", &[("digest", key)]);
            Ok(())
        } else {
            Err(not_found(ns, digest))
        }
    }

    /// Removes a blob from disk (for garbage collection: the caller has checked that nothing
    /// references it).
    pub fn remove_blob(&self, digest: &Digest) -> Result<bool> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("removing {}", p.display()), e)),
        }
    }

    /// Every blob on disk (all namespaces), with its size.
    pub fn blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for algo in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(algo.name());
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
            };
            for e in rd {
                let e = e.ctx(|| format!("reading {}", dir.display()))?;
                let name = e.file_name().to_string_lossy().to_string();
                if let Ok(d) = Digest::parse(&format!("{}:{name}", algo.name())) {
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push((d, size));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The content `ns` references, sorted by digest.
    pub fn list(&self, meta: &Store, ns: &str) -> Result<Vec<Info>> {
        let mut out = Vec::new();
        for (k, rec) in meta.list::<ContentRecord>(CONTENT, ns)? {
            let Ok(digest) = Digest::parse(&k) else {
                continue;
            };
            out.push(Info {
                digest,
                size: rec.size,
                labels: rec.labels,
                created_at: rec.created_at,
                updated_at: rec.updated_at,
            });
        }
        Ok(out)
    }

    /// Bytes referenced by `ns` (each blob counted once).
    pub fn usage(&self, meta: &Store, ns: &str) -> Result<u64> {
        Ok(self.list(meta, ns)?.iter().map(|i| i.size).sum())
    }

    /// Writes `data` as one blob (manifests, configs, small files) and references it from `ns`.
    /// With `expected`, the data must match it.
    pub fn write_blob(
        &self,
        meta: &Store,
        ns: &str,
        data: &[u8],
        expected: Option<&Digest>,
        labels: BTreeMap<String, String>,
    ) -> Result<Digest> {
        let digest = match expected {
            Some(d) => {
                let got = Digest::of(d.algorithm, data);
                if &got != d {
                    return Err(Error::InvalidArgument(format!(
                        "digest mismatch: expected {d}, the data hashes to {got}; nothing stored"
                    )));
                }
                got
            }
            None => Digest::sha256(data),
        };
        if self.blob_size(&digest) != Some(data.len() as u64) {
            let mut w = self.writer(
                &format!("write-{digest}-{}", rand::random::<u32>()),
                Some((digest.clone(), data.len() as u64)),
            )?;
            w.write_all(data).ctx(|| format!("writing {digest}"))?;
            w.commit_blob()?;
        }
        self.add_ref(meta, ns, &digest, labels)?;
        Ok(digest)
    }
}

fn not_found(ns: &str, digest: &Digest) -> Error {
    Error::NotFound(format!("content {digest} not found in namespace {ns:?}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Serialize, Deserialize)]
struct IngestMeta {
    reference: String,
    expected: Option<Digest>,
    total: Option<u64>,
    started_at: i64,
}

struct ActiveGuard {
    set: Arc<Mutex<HashMap<String, tokio::sync::watch::Sender<()>>>>,
    reference: String,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.reference);
    }
}

/// A resumable writer into the ingest area; [`Writer::commit`] turns it into a blob.
///
/// Dropped without commit, its data stays in the ingest area for a later writer to resume.
pub struct Writer {
    root: PathBuf,
    dir: PathBuf,
    file: Option<File>,
    hasher: Hasher,
    offset: u64,
    algorithm: Algorithm,
    expected: Option<(Digest, u64)>,
    _guard: ActiveGuard,
}

impl Writer {
    /// Bytes written so far (including those of an earlier, interrupted writer).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The expected digest and size, if given.
    pub fn expected(&self) -> Option<&(Digest, u64)> {
        self.expected.as_ref()
    }

    /// Starts over from zero (when a server ignores a Range request).
    pub fn truncate(&mut self) -> Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.set_len(0).ctx(|| "truncating ingest".to_string())?;
            f.seek(SeekFrom::Start(0))
                .ctx(|| "seeking ingest".to_string())?;
        }
        self.hasher = Hasher::new(self.algorithm);
        self.offset = 0;
        Ok(())
    }

    /// Verifies size and digest, then moves the data into `blobs/` (or drops it when the blob is
    /// already there). On a mismatch the ingest is removed and nothing is stored.
    pub fn commit_blob(self) -> Result<Digest> {
        Ok(self.commit_blob_status()?.0)
    }

    /// Like [`Writer::commit_blob`], also telling whether the blob is new on disk.
    pub fn commit_blob_status(mut self) -> Result<(Digest, bool)> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::Internal("writer already committed".into()))?;
        file.sync_all().ctx(|| "syncing ingest".to_string())?;
        drop(file);
        let got = self.hasher.clone().finish();
        if let Some((digest, size)) = &self.expected {
            if self.offset != *size {
                let _ = fs::remove_dir_all(&self.dir);
                return Err(Error::InvalidArgument(format!(
                    "size mismatch for {digest}: expected {size} bytes, got {}; nothing stored",
                    self.offset
                )));
            }
            if &got != digest {
                let _ = fs::remove_dir_all(&self.dir);
                return Err(Error::InvalidArgument(format!(
                    "digest mismatch: expected {digest}, the data hashes to {got}; nothing stored"
                )));
            }
        }
        let target = self
            .root
            .join("blobs")
            .join(got.algorithm.name())
            .join(&got.hex);
        let data = self.dir.join("data");
        let created = !target.exists();
        if !created {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            fs::rename(&data, &target).ctx(|| format!("committing {}", target.display()))?;
            // Blobs are immutable.
            let _ =
                fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o444));
            let _ = fs::remove_dir_all(&self.dir);
        }
        Ok((got, created))
    }

    /// Commits the blob and records that `ns` references it, with `labels`.
    pub fn commit(
        self,
        cs: &ContentStore,
        meta: &Store,
        ns: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Digest> {
        let d = self.commit_blob()?;
        cs.add_ref(meta, ns, &d, labels)?;
        Ok(d)
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("writer already committed"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Arc<ContentStore>, Store) {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(&dir.path().join("content"), Publisher::discard()).unwrap();
        let meta = Store::open(&dir.path().join("meta.redb")).unwrap();
        (dir, cs, meta)
    }

    #[test]
    fn digest_parse() {
        let d = Digest::sha256(b"hello");
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(Digest::parse(&d.to_string().to_uppercase()).is_err());
        let d5 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(Digest::parse(&d5.to_string()).unwrap(), d5);
    }

    #[test]
    fn write_commit_read() {
        let (_t, cs, meta) = setup();
        let data = b"some layer bytes".repeat(1000);
        let d = Digest::sha256(&data);
        let mut w = cs
            .writer("layer-1", Some((d.clone(), data.len() as u64)))
            .unwrap();
        w.write_all(&data).unwrap();
        let got = w.commit(&cs, &meta, "default", BTreeMap::new()).unwrap();
        assert_eq!(got, d);
        assert_eq!(cs.read(&meta, "default", &d).unwrap(), data);
        assert_eq!(cs.usage(&meta, "default").unwrap(), data.len() as u64);
        assert!(cs.ingests().unwrap().is_empty());
        // another namespace does not see it
        assert!(matches!(
            cs.info(&meta, "other", &d),
            Err(Error::NotFound(_))
        ));
        // sha512 blobs too
        let d5 = Digest::of(Algorithm::Sha512, &data);
        let d5b = cs
            .write_blob(&meta, "default", &data, Some(&d5), BTreeMap::new())
            .unwrap();
        assert_eq!(d5, d5b);
        assert!(cs
            .blob_path(&d5)
            .starts_with(cs.root().join("blobs/sha512")));
    }

    #[test]
    fn resume_after_interruption() {
        let (_t, cs, meta) = setup();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::sha256(&data);
        let exp = Some((d.clone(), data.len() as u64));
        {
            let mut w = cs.writer("pull-x", exp.clone()).unwrap();
            assert_eq!(w.offset(), 0);
            w.write_all(&data[..70_000]).unwrap();
            // a second writer for the same ref is refused while the first is open
            assert!(matches!(
                cs.writer("pull-x", exp.clone()),
                Err(Error::Unavailable(_))
            ));
        } // dropped: interrupted
        let st = cs.ingests().unwrap();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].offset, 70_000);
        assert_eq!(st[0].total, Some(data.len() as u64));
        let mut w = cs.writer("pull-x", exp).unwrap();
        assert_eq!(w.offset(), 70_000);
        let off = w.offset() as usize;
        w.write_all(&data[off..]).unwrap();
        assert_eq!(w.commit(&cs, &meta, "default", BTreeMap::new()).unwrap(), d);
        assert_eq!(fs::read(cs.blob_path(&d)).unwrap(), data);
        // changed expectation restarts the ingest
        let mut w = cs.writer("pull-y", Some((d.clone(), 5))).unwrap();
        w.write_all(b"abc").unwrap();
        drop(w);
        let w = cs
            .writer("pull-y", Some((d.clone(), data.len() as u64)))
            .unwrap();
        assert_eq!(w.offset(), 0);
        drop(w);
        cs.abort("pull-y").unwrap();
        assert!(cs.ingests().unwrap().is_empty());
    }

    #[test]
    fn digest_mismatch_refused_and_not_stored() {
        let (_t, cs, meta) = setup();
        let claimed = Digest::sha256(b"the real thing");
        let mut w = cs.writer("bad", Some((claimed.clone(), 14))).unwrap();
        w.write_all(b"something else").unwrap();
        let e = w
            .commit(&cs, &meta, "default", BTreeMap::new())
            .unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(!cs.blob_path(&claimed).exists());
        assert!(!cs.blob_path(&Digest::sha256(b"something else")).exists());
        assert!(cs.blobs().unwrap().is_empty());
        assert!(cs.ingests().unwrap().is_empty());
        assert!(cs.list(&meta, "default").unwrap().is_empty());
        // short data is refused too
        let mut w = cs.writer("short", Some((claimed.clone(), 14))).unwrap();
        w.write_all(b"the real").unwrap();
        assert!(w
            .commit_blob()
            .unwrap_err()
            .to_string()
            .contains("size mismatch"));
        assert!(cs
            .write_blob(&meta, "default", b"x", Some(&claimed), BTreeMap::new())
            .is_err());
        assert!(cs.blobs().unwrap().is_empty());
    }

    #[test]
    fn dedup_across_namespaces_and_labels() {
        let (_t, cs, meta) = setup();
        let data = b"shared base layer".to_vec();
        let mut labels = BTreeMap::new();
        labels.insert("a".to_string(), "1".to_string());
        let d1 = cs.write_blob(&meta, "ns1", &data, None, labels).unwrap();
        let d2 = cs
            .write_blob(&meta, "ns2", &data, None, BTreeMap::new())
            .unwrap();
        assert_eq!(d1, d2);
        assert_eq!(cs.blobs().unwrap().len(), 1);
        assert_eq!(
            cs.info(&meta, "ns1", &d1).unwrap().labels.get("a").unwrap(),
            "1"
        );
        assert!(cs.info(&meta, "ns2", &d1).unwrap().labels.is_empty());
        let mut upd = BTreeMap::new();
        upd.insert("a".to_string(), String::new());
        upd.insert("b".to_string(), "2".to_string());
        let i = cs.update_labels(&meta, "ns1", &d1, upd).unwrap();
        assert_eq!(i.labels.len(), 1);
        assert_eq!(i.labels["b"], "2");
        cs.delete(&meta, "ns1", &d1).unwrap();
        assert!(cs.info(&meta, "ns1", &d1).is_err());
        assert!(cs.info(&meta, "ns2", &d1).is_ok());
        assert!(cs.blob_path(&d1).exists(), "blob stays until gc");
        assert!(matches!(
            cs.delete(&meta, "ns1", &d1),
            Err(Error::NotFound(_))
        ));
    }
}
