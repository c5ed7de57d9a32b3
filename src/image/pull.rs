//! Pull: resolve a reference on its registry, pick the platform(s), fetch configs and layers in
//! parallel straight into the content store (skipping blobs already there, resuming partial
//! ones), verify every digest, then record the image.
//!
//! Children are committed before their parents (layers and config, then the manifest, then the
//! index), so a manifest in the store always has its blobs. Each parent carries
//! `containerd.io/gc.ref.content.*` labels naming its children, and each blob a
//! `containerd.io/distribution.source.<host>` label naming the repository it came from, which
//! push uses for cross-repository mounts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::{self, TryStreamExt};
use serde::Serialize;

use super::manifest::{self, Descriptor, Parsed, PlatformSelector};
use super::registry::Registry;
use super::{ImageRecord, PlatformImage, Reference, SOURCE_LABEL_PREFIX};
use crate::content::{ContentStore, Digest};
use crate::error::{Error, Result};
use crate::events::Publisher;
use crate::metadata::Store;

/// What a blob is, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    Index,
    Manifest,
    Config,
    Layer,
}

/// Where a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobState {
    Waiting,
    Downloading,
    /// Already in the content store: skipped.
    Exists,
    Done,
}

/// A progress event of a pull or push.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Progress {
    /// The reference resolved to this digest.
    Resolved {
        name: String,
        digest: Digest,
        media_type: String,
    },
    /// A blob's state (`current` of `total` bytes).
    Blob {
        digest: Digest,
        kind: BlobKind,
        state: BlobState,
        current: u64,
        total: u64,
    },
}

/// Options of a pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platforms: PlatformSelector,
    /// Blobs fetched at once (`images.max_concurrent_downloads`).
    pub max_concurrent_downloads: usize,
    /// Labels for the image record.
    pub labels: BTreeMap<String, String>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platforms: PlatformSelector::default(),
            max_concurrent_downloads: 3,
            labels: BTreeMap::new(),
        }
    }
}

/// The outcome of a pull.
#[derive(Debug, Clone)]
pub struct PullResult {
    pub image: ImageRecord,
    /// The platform images fetched, with their ordered layers and diff ids (for unpacking).
    pub platforms: Vec<PlatformImage>,
    /// Bytes downloaded (not counting blobs already present).
    pub downloaded: u64,
}

/// The ingest ref of a blob: the same for every pull, so an interrupted download resumes.
fn ingest_ref(d: &Digest) -> String {
    format!("fetch-{d}")
}

/// Everything a pull touches.
pub struct Puller<'a> {
    pub cs: &'a ContentStore,
    pub meta: &'a Store,
    /// Where the image's create/update event goes.
    pub events: &'a Publisher,
    pub ns: &'a str,
    pub registry: &'a Registry,
}

struct Job {
    desc: Descriptor,
    kind: BlobKind,
}

impl Puller<'_> {
    fn source_labels(&self, r: &Reference) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        l.insert(
            format!("{SOURCE_LABEL_PREFIX}{}", r.domain()),
            r.repository().to_string(),
        );
        l
    }

    /// Pulls `name` and records it as an image of the namespace.
    pub async fn pull(
        &self,
        name: &str,
        opts: &PullOptions,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<PullResult> {
        let r = Reference::parse(name)?;
        // hold what this pull writes against garbage collection until the image records it
        let lease = crate::leases::TempLease::new(self.meta, self.ns, "pull")?;
        let (root, _) = self
            .registry
            .fetch_manifest(&r, &r.object(), r.digest())
            .await?;
        progress(Progress::Resolved {
            name: r.to_string(),
            digest: root.digest.clone(),
            media_type: root.media_type.clone(),
        });
        let root_desc = Descriptor::new(
            &root.media_type,
            root.digest.clone(),
            root.bytes.len() as u64,
        );

        // Walk indexes down to the selected manifests (documents are kept in memory and
        // committed after their children).
        let mut docs: Vec<(Descriptor, Vec<u8>, Parsed)> = Vec::new();
        let mut manifests: Vec<(Descriptor, manifest::Manifest)> = Vec::new();
        let mut queue = vec![(root_desc.clone(), root.bytes.clone(), 0u32)];
        while let Some((desc, bytes, depth)) = queue.pop() {
            let parsed = manifest::parse(&desc.media_type, &bytes)?;
            match &parsed {
                Parsed::Index(idx) => {
                    if depth > 3 {
                        return Err(Error::InvalidArgument(format!(
                            "{name}: image index nested too deeply"
                        )));
                    }
                    for child in opts.platforms.select(idx)? {
                        let (fm, _) = self
                            .registry
                            .fetch_manifest(&r, &child.digest.to_string(), Some(&child.digest))
                            .await?;
                        let mut cd = child.clone();
                        cd.media_type = fm.media_type.clone();
                        queue.push((cd, fm.bytes, depth + 1));
                    }
                }
                Parsed::Manifest(m) => manifests.push((desc.clone(), m.clone())),
            }
            docs.push((desc, bytes, parsed));
        }

        // The blobs: configs and layers of every selected manifest, each once.
        let mut jobs: Vec<Job> = Vec::new();
        for (_, m) in &manifests {
            for (desc, kind) in std::iter::once((&m.config, BlobKind::Config))
                .chain(m.layers.iter().map(|l| (l, BlobKind::Layer)))
            {
                if !desc.urls.is_empty() && desc.media_type.contains("foreign") {
                    continue; // non-distributable layers are fetched from their urls by nobody
                }
                if !jobs.iter().any(|j| j.desc.digest == desc.digest) {
                    jobs.push(Job {
                        desc: desc.clone(),
                        kind,
                    });
                }
            }
        }
        for (d, _, _) in &docs {
            lease.hold("content", &d.digest.to_string())?;
        }
        for j in &jobs {
            lease.hold("content", &j.desc.digest.to_string())?;
            progress(Progress::Blob {
                digest: j.desc.digest.clone(),
                kind: j.kind,
                state: BlobState::Waiting,
                current: 0,
                total: j.desc.size,
            });
        }
        let labels = self.source_labels(&r);
        let downloaded = AtomicU64::new(0);
        let conc = opts.max_concurrent_downloads.max(1);
        stream::iter(jobs.iter().map(Ok::<_, Error>))
            .try_for_each_concurrent(conc, |j| {
                let labels = labels.clone();
                let r = &r;
                let downloaded = &downloaded;
                async move {
                    let n = self.fetch(r, &j.desc, j.kind, labels, progress).await?;
                    downloaded.fetch_add(n, Ordering::Relaxed);
                    Ok(())
                }
            })
            .await?;

        // Commit the documents, children first (the walk pushed parents before children).
        for (desc, bytes, parsed) in docs.iter().rev() {
            let mut l = super::gc_labels_for(parsed);
            l.extend(labels.clone());
            self.cs
                .write_blob(self.meta, self.ns, bytes, Some(&desc.digest), l)?;
            progress(Progress::Blob {
                digest: desc.digest.clone(),
                kind: if matches!(parsed, Parsed::Index(_)) {
                    BlobKind::Index
                } else {
                    BlobKind::Manifest
                },
                state: BlobState::Done,
                current: bytes.len() as u64,
                total: bytes.len() as u64,
            });
        }
        let image = super::put(
            self.meta,
            self.events,
            self.ns,
            &r.to_string(),
            root_desc.clone(),
            opts.labels.clone(),
        )?;
        let platforms = super::resolve(self.cs, self.meta, self.ns, &root_desc, &opts.platforms)
            .or_else(|e| {
                // a single manifest for another platform: still report it
                if manifest::is_manifest(&root_desc.media_type) {
                    super::resolve(
                        self.cs,
                        self.meta,
                        self.ns,
                        &root_desc,
                        &PlatformSelector::All,
                    )
                } else {
                    Err(e)
                }
            })?;
        drop(lease);
        Ok(PullResult {
            image,
            platforms,
            downloaded: downloaded.into_inner(),
        })
    }

    /// Fetches one blob unless present; returns the bytes downloaded.
    async fn fetch(
        &self,
        r: &Reference,
        desc: &Descriptor,
        kind: BlobKind,
        labels: BTreeMap<String, String>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<u64> {
        let total = desc.size;
        let done = |state| {
            progress(Progress::Blob {
                digest: desc.digest.clone(),
                kind,
                state,
                current: total,
                total,
            })
        };
        if self.cs.blob_size(&desc.digest) == Some(desc.size) {
            self.cs.add_ref(self.meta, self.ns, &desc.digest, labels)?;
            done(BlobState::Exists);
            return Ok(0);
        }
        // Another pull may be writing the same blob: wait for it, then reuse its result.
        let mut w = loop {
            match self.cs.writer(
                &ingest_ref(&desc.digest),
                Some((desc.digest.clone(), desc.size)),
            ) {
                Ok(w) => break w,
                Err(Error::Unavailable(_)) => {
                    // one download per digest: wait for the one in flight; if it failed, the
                    // next turn of the loop takes the writer and resumes what it left
                    self.cs.wait_writer(&ingest_ref(&desc.digest)).await;
                    if self.cs.blob_size(&desc.digest) == Some(desc.size) {
                        self.cs.add_ref(self.meta, self.ns, &desc.digest, labels)?;
                        done(BlobState::Exists);
                        return Ok(0);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        if self.cs.blob_size(&desc.digest) == Some(desc.size) {
            drop(w);
            let _ = self.cs.abort(&ingest_ref(&desc.digest));
            self.cs.add_ref(self.meta, self.ns, &desc.digest, labels)?;
            done(BlobState::Exists);
            return Ok(0);
        }
        let start = w.offset();
        progress(Progress::Blob {
            digest: desc.digest.clone(),
            kind,
            state: BlobState::Downloading,
            current: start,
            total,
        });
        let last = AtomicU64::new(0);
        let cb = |cur: u64| {
            // at most ~100 events per blob
            let step = (total / 100).max(256 * 1024);
            let prev = last.load(Ordering::Relaxed);
            if cur == total || cur >= prev + step {
                last.store(cur, Ordering::Relaxed);
                progress(Progress::Blob {
                    digest: desc.digest.clone(),
                    kind,
                    state: BlobState::Downloading,
                    current: cur,
                    total,
                });
            }
        };
        let fetched = self.registry.fetch_blob(r, desc, &mut w, &cb).await;
        let got = w.offset() - start;
        let res = fetched.and_then(|()| w.commit(self.cs, self.meta, self.ns, labels));
        if let Err(e) = res {
            return Err(match e {
                Error::InvalidArgument(m) => {
                    Error::InvalidArgument(format!("{m} (blob of {r} from {})", r.domain()))
                }
                // a partial download only keeps the disk full: drop it
                Error::NoSpace(_) => {
                    let _ = self.cs.abort(&ingest_ref(&desc.digest));
                    Error::no_space(&format!(
                        "downloading {} {} of {r} into {}",
                        format!("{kind:?}").to_lowercase(),
                        desc.digest,
                        self.cs.root().display()
                    ))
                }
                e => e,
            });
        }
        done(BlobState::Done);
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::super::archive::{self, ImportOptions};
    use super::super::auth::AuthSources;
    use super::super::fixture::{self, TestImage, TestRegistry, TestRegistryOptions};
    use super::super::push::Pusher;
    use super::*;
    use std::io::Write as _;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    struct Env {
        _t: tempfile::TempDir,
        cs: Arc<ContentStore>,
        meta: Store,
    }

    fn env() -> Env {
        let t = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(&t.path().join("content"), Publisher::discard()).unwrap();
        let meta = Store::open(&t.path().join("meta.redb")).unwrap();
        Env { _t: t, cs, meta }
    }

    fn registry() -> Arc<Registry> {
        Registry::with_retries(
            BTreeMap::new(),
            AuthSources {
                files: vec![],
                given: None,
            },
            2,
            Duration::from_millis(20),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn push_pull_real_registry() {
        let rdir = tempfile::tempdir().unwrap();
        let mut reg_srv =
            TestRegistry::start(rdir.path(), &TestRegistryOptions::default()).unwrap();
        let host = reg_srv.host();
        let reg = registry();

        // build two images sharing their lower layers; import them locally
        let a = env();
        let i1 = TestImage::busybox("one", true).unwrap();
        let i2 = TestImage::busybox("two", true).unwrap();
        let tar = fixture::oci_layout(&[("local/one:1", &i1), ("local/two:1", &i2)]);
        archive::import(
            &a.cs,
            &a.meta,
            &Publisher::discard(),
            "default",
            &tar[..],
            &ImportOptions::default(),
        )
        .unwrap();
        let pusher = Pusher {
            cs: &a.cs,
            meta: &a.meta,
            ns: "default",
            registry: &reg,
        };
        let sel = PlatformSelector::default();
        let noop = |_: Progress| {};
        let p1 = pusher
            .push(
                "local/one:1",
                Some(&format!("{host}/test/bb:1")),
                &sel,
                3,
                &noop,
            )
            .await
            .unwrap();
        assert_eq!(p1.target.digest, i1.manifest_descriptor.digest);
        assert_eq!(p1.skipped + p1.mounted, 0);
        // the second image to another repository mounts the shared layers
        let p2 = pusher
            .push(
                "local/two:1",
                Some(&format!("{host}/other/bb:2")),
                &sel,
                3,
                &noop,
            )
            .await
            .unwrap();
        assert_eq!(p2.mounted, 2, "{p2:?}");
        // pushing again skips everything
        let p3 = pusher
            .push(
                "local/one:1",
                Some(&format!("{host}/test/bb:1")),
                &sel,
                3,
                &noop,
            )
            .await
            .unwrap();
        assert_eq!(p3.skipped, 4);
        assert_eq!(p3.uploaded, 0);

        // an independent client reads what we pushed
        let odir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{host}/test/bb:1"))
            .arg(format!("oci:{}:x", odir.path().join("o").display()))
            .status()
            .unwrap();
        assert!(st.success());

        // pull into an empty store
        let b = env();
        let puller = Puller {
            events: &Publisher::discard(),
            cs: &b.cs,
            meta: &b.meta,
            ns: "default",
            registry: &reg,
        };
        let events = Mutex::new(Vec::new());
        let rec = |p: Progress| events.lock().unwrap().push(p);
        let r = puller
            .pull(&format!("{host}/test/bb:1"), &PullOptions::default(), &rec)
            .await
            .unwrap();
        assert_eq!(r.image.name, format!("{host}/test/bb:1"));
        assert_eq!(r.image.target.digest, i1.manifest_descriptor.digest);
        let total: u64 =
            i1.layers.iter().map(|(d, _)| d.size).sum::<u64>() + i1.config.len() as u64;
        assert_eq!(r.downloaded, total);
        let p = &r.platforms[0];
        assert_eq!(p.layers.len(), 3);
        for (l, d) in p.layers.iter().zip(&i1.diffs) {
            assert_eq!(l.diff_id, Digest::sha256(d));
        }
        for (d, data) in i1.blobs() {
            assert_eq!(std::fs::read(b.cs.blob_path(&d)).unwrap(), data);
        }
        {
            let ev = events.lock().unwrap();
            assert!(matches!(ev[0], Progress::Resolved { .. }));
            assert!(ev.iter().any(|e| matches!(
                e,
                Progress::Blob {
                    state: BlobState::Done,
                    kind: BlobKind::Layer,
                    ..
                }
            )));
        }
        // the same again downloads nothing; the second image shares two layers
        let r = puller
            .pull(&format!("{host}/test/bb:1"), &PullOptions::default(), &noop)
            .await
            .unwrap();
        assert_eq!(r.downloaded, 0);
        let r2 = puller
            .pull(
                &format!("{host}/other/bb:2"),
                &PullOptions::default(),
                &noop,
            )
            .await
            .unwrap();
        assert_eq!(r2.downloaded, i2.layers[2].0.size + i2.config.len() as u64);
        // by digest
        let by = format!("{host}/test/bb@{}", i1.manifest_descriptor.digest);
        let r3 = puller
            .pull(&by, &PullOptions::default(), &noop)
            .await
            .unwrap();
        assert_eq!(r3.image.target.digest, i1.manifest_descriptor.digest);
        assert_eq!(b.cs.blobs().unwrap().len(), 5 + 3);

        // manifest unknown
        let e = puller
            .pull(
                &format!("{host}/test/bb:nope"),
                &PullOptions::default(),
                &noop,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("manifest unknown"), "{e}");

        // a partial download resumes where it stopped (Range)
        let c = env();
        let big = &i1.layers[0];
        {
            let mut w =
                c.cs.writer(
                    &ingest_ref(&big.0.digest),
                    Some((big.0.digest.clone(), big.0.size)),
                )
                .unwrap();
            w.write_all(&big.1[..big.1.len() / 2]).unwrap();
        }
        let pc = Puller {
            events: &Publisher::discard(),
            cs: &c.cs,
            meta: &c.meta,
            ns: "default",
            registry: &reg,
        };
        let r = pc
            .pull(&format!("{host}/test/bb:1"), &PullOptions::default(), &noop)
            .await
            .unwrap();
        assert_eq!(r.downloaded, total - (big.1.len() / 2) as u64);
        assert_eq!(std::fs::read(c.cs.blob_path(&big.0.digest)).unwrap(), big.1);

        // bytes that do not match the digest are refused and not stored
        let d = env();
        let victim = &i2.layers[2].0;
        let f = reg_srv.blob_file(&victim.digest);
        let mut bytes = std::fs::read(&f).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        std::fs::write(&f, &bytes).unwrap();
        let pd = Puller {
            events: &Publisher::discard(),
            cs: &d.cs,
            meta: &d.meta,
            ns: "default",
            registry: &reg,
        };
        let e = pd
            .pull(
                &format!("{host}/other/bb:2"),
                &PullOptions::default(),
                &noop,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(!d.cs.blob_path(&victim.digest).exists());
        assert!(crate::image::list(&d.meta, "default").unwrap().is_empty());

        // registry down: a clear error
        reg_srv.stop();
        let e = pd
            .pull(&format!("{host}/test/bb:1"), &PullOptions::default(), &noop)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("connection refused"), "{e}");
    }
}
