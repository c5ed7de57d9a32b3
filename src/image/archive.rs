//! Import and export of image archives.
//!
//! Import reads, in one pass over a tar stream, either a docker-archive (`docker save`,
//! `podman save`: `manifest.json` with `RepoTags`, configs and layer tars, possibly several
//! images) or an OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`). Every file
//! that may be a blob is ingested into the content store as it streams by (blobs under `blobs/`
//! are verified against their names); once the index is known, the reachable blobs are recorded
//! in the namespace and the unreachable new ones are removed again.
//!
//! Export writes an OCI image layout tar with a docker-compatible `manifest.json` beside it, so
//! both `nook images import` and `podman load` / `docker load` accept it. Blobs are copied
//! byte for byte, so an export → import round trip keeps every digest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::{self, Descriptor, Index, Manifest, Parsed, PlatformSelector};
use super::{ImageRecord, Reference};
use crate::content::{ContentStore, Digest};
use crate::error::{Error, IoContext, Result};
use crate::events::Publisher;
use crate::metadata::Store;

/// Annotation holding the full image name (containerd, docker ≥ 25).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation holding the reference (usually the tag) of a manifest in a layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const SMALL_FILE: u64 = 8 << 20;

/// An entry of a docker-archive `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// Options for an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Name for images the archive does not name (a reference; `:tag` added per image if
    /// several). Unnamed images without it are called `import-<digest12>:latest`.
    pub base_name: Option<String>,
}

/// A file seen in the archive.
#[derive(Debug, Clone)]
enum Entry {
    Blob(Digest, u64),
    Small(Vec<u8>),
    Link(String),
}

fn clean(p: &Path) -> Option<String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out.to_string_lossy().to_string())
}

/// Imports a docker-archive or OCI-layout tar from `input` into namespace `ns`; returns the
/// images created or updated.
pub fn import(
    cs: &ContentStore,
    meta: &Store,
    events: &Publisher,
    ns: &str,
    input: impl Read,
    opts: &ImportOptions,
) -> Result<Vec<ImageRecord>> {
    let mut files: HashMap<String, Entry> = HashMap::new();
    let mut created: HashSet<Digest> = HashSet::new();
    let mut ar = tar::Archive::new(input);
    let entries = ar
        .entries()
        .map_err(|e| Error::InvalidArgument(format!("reading the archive: {e}")))?;
    let nonce: u32 = rand::random();
    for (i, entry) in entries.enumerate() {
        let mut entry =
            entry.map_err(|e| Error::InvalidArgument(format!("reading the archive: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| Error::InvalidArgument(format!("reading the archive: {e}")))?
            .to_path_buf();
        let Some(name) = clean(&path) else { continue };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Ok(Some(target)) = entry.link_name() {
                let target = if kind.is_symlink() {
                    Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(target)
                } else {
                    target.to_path_buf()
                };
                if let Some(t) = clean(&target) {
                    files.insert(name, Entry::Link(t));
                }
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        // blobs/<alg>/<hex> carries its digest: verify it while ingesting.
        let expected = name
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(alg, hex)| Digest::parse(&format!("{alg}:{hex}")).ok());
        if expected.is_none() && size <= SMALL_FILE && !name.ends_with(".tar") {
            let mut buf = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut buf).map_err(|e| {
                Error::InvalidArgument(format!("reading {name} from the archive: {e}"))
            })?;
            files.insert(name, Entry::Small(buf));
            continue;
        }
        let reference = format!("import-{nonce}-{i}");
        let mut w = cs.writer(&reference, expected.clone().map(|d| (d, size)))?;
        w.truncate()?;
        if let Err(e) = std::io::copy(&mut entry, &mut w) {
            // nothing of a failed import stays: neither this ingest nor the blobs before it
            drop(w);
            let _ = cs.abort(&reference);
            cleanup_unreferenced(cs, meta, &created);
            return Err(if crate::error::is_no_space(&e) {
                Error::no_space(&format!(
                    "importing {name} of the archive into {}",
                    cs.root().display()
                ))
            } else {
                Error::InvalidArgument(format!("reading {name} from the archive: {e}"))
            });
        }
        let digest = match w.commit_blob_status() {
            Ok((d, new)) => {
                if new {
                    created.insert(d.clone());
                }
                d
            }
            Err(e) => {
                cleanup_unreferenced(cs, meta, &created);
                if e.is_no_space() {
                    return Err(e);
                }
                return Err(Error::InvalidArgument(format!(
                    "{name} in the archive: {e}"
                )));
            }
        };
        files.insert(name, Entry::Blob(digest, size));
    }
    let result = if files.contains_key("index.json") {
        import_oci(cs, meta, events, ns, &files, opts)
    } else if files.contains_key("manifest.json") {
        import_docker(cs, meta, events, ns, &files, opts)
    } else {
        Err(Error::InvalidArgument(
            "the file is neither a docker-archive (manifest.json) nor an OCI image layout (index.json)".into(),
        ))
    };
    match result {
        Ok((images, reachable)) => {
            let unused: HashSet<Digest> = created.difference(&reachable).cloned().collect();
            cleanup_unreferenced(cs, meta, &unused);
            Ok(images)
        }
        Err(e) => {
            cleanup_unreferenced(cs, meta, &created);
            Err(e)
        }
    }
}

fn cleanup_unreferenced(cs: &ContentStore, meta: &Store, digests: &HashSet<Digest>) {
    if digests.is_empty() {
        return;
    }
    let referenced: HashSet<String> = meta
        .list_all::<crate::content::ContentRecord>(crate::metadata::CONTENT)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, _)| k.split_once('/').map(|(_, d)| d.to_string()))
        .collect();
    for d in digests {
        if !referenced.contains(&d.to_string()) {
            let _ = cs.remove_blob(d);
        }
    }
}

fn lookup<'a>(files: &'a HashMap<String, Entry>, name: &str) -> Option<&'a Entry> {
    let mut n = clean(Path::new(name))?;
    for _ in 0..16 {
        match files.get(&n)? {
            Entry::Link(t) => n = t.clone(),
            e => return Some(e),
        }
    }
    None
}

/// The bytes of a small file or of a blob (read back from the store).
fn file_bytes(cs: &ContentStore, files: &HashMap<String, Entry>, name: &str) -> Result<Vec<u8>> {
    match lookup(files, name) {
        Some(Entry::Small(b)) => Ok(b.clone()),
        Some(Entry::Blob(d, _)) => cs.read_blob(d),
        _ => Err(Error::InvalidArgument(format!("the archive lacks {name}"))),
    }
}

/// Makes `name` a blob of `ns` (writing it if it was kept in memory).
fn file_blob(
    cs: &ContentStore,
    meta: &Store,
    ns: &str,
    files: &HashMap<String, Entry>,
    name: &str,
    labels: BTreeMap<String, String>,
) -> Result<(Digest, u64)> {
    match lookup(files, name) {
        Some(Entry::Small(b)) => {
            let d = cs.write_blob(meta, ns, b, None, labels)?;
            Ok((d, b.len() as u64))
        }
        Some(Entry::Blob(d, s)) => {
            cs.add_ref(meta, ns, d, labels)?;
            Ok((d.clone(), *s))
        }
        _ => Err(Error::InvalidArgument(format!("the archive lacks {name}"))),
    }
}

/// Records an OCI layout's blobs reachable from `desc` in `ns`, with gc labels.
fn record_tree(
    cs: &ContentStore,
    meta: &Store,
    ns: &str,
    desc: &Descriptor,
    reachable: &mut HashSet<Digest>,
    depth: u32,
) -> Result<()> {
    if depth > 4 {
        return Err(Error::InvalidArgument(
            "image index nested too deeply".into(),
        ));
    }
    if cs.blob_size(&desc.digest).is_none() {
        return Err(Error::InvalidArgument(format!(
            "the archive lacks blob {} ({})",
            desc.digest, desc.media_type
        )));
    }
    let mut labels = BTreeMap::new();
    if manifest::is_index(&desc.media_type) || manifest::is_manifest(&desc.media_type) {
        let bytes = cs.read_blob(&desc.digest)?;
        let parsed = manifest::parse(&desc.media_type, &bytes)?;
        labels = super::gc_labels_for(&parsed);
        match &parsed {
            Parsed::Index(idx) => {
                for c in &idx.manifests {
                    // a partial index (one platform exported) is fine: skip missing children
                    if cs.blob_size(&c.digest).is_some() {
                        record_tree(cs, meta, ns, c, reachable, depth + 1)?;
                    }
                }
            }
            Parsed::Manifest(m) => {
                record_tree(cs, meta, ns, &m.config, reachable, depth + 1)?;
                for l in &m.layers {
                    if l.urls.is_empty() || cs.blob_size(&l.digest).is_some() {
                        record_tree(cs, meta, ns, l, reachable, depth + 1)?;
                    }
                }
            }
        }
    }
    cs.add_ref(meta, ns, &desc.digest, labels)?;
    reachable.insert(desc.digest.clone());
    Ok(())
}

fn fallback_name(opts: &ImportOptions, digest: &Digest, n: usize, count: usize) -> Result<String> {
    match &opts.base_name {
        Some(b) => {
            let r = Reference::parse(b)?;
            if count > 1 && n > 0 {
                Ok(format!("{}:{}-{n}", r.name(), r.tag().unwrap_or("latest")))
            } else {
                Ok(r.to_string())
            }
        }
        None => Ok(format!("import-{}:latest", digest.short())),
    }
}

type Imported = (Vec<ImageRecord>, HashSet<Digest>);

fn import_oci(
    cs: &ContentStore,
    meta: &Store,
    events: &Publisher,
    ns: &str,
    files: &HashMap<String, Entry>,
    opts: &ImportOptions,
) -> Result<Imported> {
    if let Some(Entry::Small(b)) = lookup(files, "oci-layout") {
        {
            let v: serde_json::Value = serde_json::from_slice(b)
                .map_err(|e| Error::InvalidArgument(format!("invalid oci-layout file: {e}")))?;
            let ver = v
                .get("imageLayoutVersion")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            if !ver.starts_with("1.") {
                return Err(Error::InvalidArgument(format!(
                    "unsupported OCI layout version {ver:?} (nook reads 1.x)"
                )));
            }
        }
    }
    let idx_bytes = file_bytes(cs, files, "index.json")?;
    let index: Index = serde_json::from_slice(&idx_bytes)
        .map_err(|e| Error::InvalidArgument(format!("invalid index.json: {e}")))?;
    // docker's manifest.json beside it may carry names the index lacks
    let docker_tags: HashMap<String, Vec<String>> = match lookup(files, "manifest.json") {
        Some(_) => {
            let b = file_bytes(cs, files, "manifest.json")?;
            let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(&b).unwrap_or_default();
            entries
                .into_iter()
                .map(|e| {
                    (
                        e.config.rsplit('/').next().unwrap_or("").to_string(),
                        e.repo_tags.unwrap_or_default(),
                    )
                })
                .collect()
        }
        None => HashMap::new(),
    };
    let mut reachable = HashSet::new();
    let mut images = Vec::new();
    let count = index.manifests.len();
    for (n, desc) in index.manifests.iter().enumerate() {
        if !(manifest::is_index(&desc.media_type) || manifest::is_manifest(&desc.media_type)) {
            continue;
        }
        record_tree(cs, meta, ns, desc, &mut reachable, 0)?;
        let mut names = Vec::new();
        if let Some(n) = desc.annotations.get(ANNOTATION_IMAGE_NAME) {
            names.push(n.clone());
        } else if let Some(r) = desc.annotations.get(ANNOTATION_REF_NAME) {
            // a full reference, or only a tag (then combined with base_name)
            if r.contains('/') || Reference::parse(r).is_ok() && r.contains(':') {
                names.push(r.clone());
            } else if let Some(b) = &opts.base_name {
                names.push(format!("{}:{r}", Reference::parse(b)?.name()));
            }
        }
        if names.is_empty() && manifest::is_manifest(&desc.media_type) {
            if let Ok(m) = serde_json::from_slice::<Manifest>(&cs.read_blob(&desc.digest)?) {
                if let Some(t) = docker_tags.get(m.config.digest.hex()) {
                    names.extend(t.iter().cloned());
                }
            }
        }
        if names.is_empty() {
            names.push(fallback_name(opts, &desc.digest, n, count)?);
        }
        let mut target = desc.clone();
        target.annotations.clear();
        target.platform = None;
        for name in names {
            images.push(super::put(
                meta,
                events,
                ns,
                &name,
                target.clone(),
                BTreeMap::new(),
            )?);
        }
    }
    if images.is_empty() {
        return Err(Error::InvalidArgument(
            "index.json names no image manifest".into(),
        ));
    }
    Ok((images, reachable))
}

fn sniff_layer(cs: &ContentStore, d: &Digest) -> Result<&'static str> {
    let p = cs.blob_path(d);
    let mut f = std::fs::File::open(&p).ctx(|| format!("opening {}", p.display()))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .ctx(|| format!("reading {}", p.display()))?;
    Ok(if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        manifest::DOCKER_LAYER_GZIP
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        manifest::OCI_LAYER_ZSTD
    } else {
        manifest::DOCKER_LAYER
    })
}

fn import_docker(
    cs: &ContentStore,
    meta: &Store,
    events: &Publisher,
    ns: &str,
    files: &HashMap<String, Entry>,
    opts: &ImportOptions,
) -> Result<Imported> {
    let b = file_bytes(cs, files, "manifest.json")?;
    let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(&b)
        .map_err(|e| Error::InvalidArgument(format!("invalid manifest.json: {e}")))?;
    let mut reachable = HashSet::new();
    let mut images = Vec::new();
    let count = entries.len();
    for (n, e) in entries.iter().enumerate() {
        let cfg_bytes = file_bytes(cs, files, &e.config)?;
        let cfg = manifest::parse_config(&cfg_bytes)?;
        if cfg.rootfs.diff_ids.len() != e.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "manifest.json entry {} lists {} layers but its config has {} diff_ids",
                e.config,
                e.layers.len(),
                cfg.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (l, diff_id) in e.layers.iter().zip(&cfg.rootfs.diff_ids) {
            let (d, size) = file_blob(cs, meta, ns, files, l, BTreeMap::new())?;
            let mt = sniff_layer(cs, &d)?;
            if mt == manifest::DOCKER_LAYER && &d != diff_id {
                return Err(Error::InvalidArgument(format!(
                    "layer {l} hashes to {d} but the config says {diff_id}: the archive is corrupt"
                )));
            }
            if mt != manifest::DOCKER_LAYER {
                let mut lab = BTreeMap::new();
                lab.insert(super::UNCOMPRESSED_LABEL.to_string(), diff_id.to_string());
                cs.add_ref(meta, ns, &d, lab)?;
            }
            reachable.insert(d.clone());
            layers.push(Descriptor::new(mt, d, size));
        }
        let (cfg_digest, cfg_size) = file_blob(cs, meta, ns, files, &e.config, BTreeMap::new())?;
        reachable.insert(cfg_digest.clone());
        let m = Manifest {
            schema_version: 2,
            media_type: manifest::DOCKER_MANIFEST.into(),
            config: Descriptor::new(manifest::DOCKER_CONFIG, cfg_digest, cfg_size),
            layers,
            annotations: BTreeMap::new(),
        };
        let mbytes = serde_json::to_vec_pretty(&m)?;
        let labels = super::gc_labels_for(&Parsed::Manifest(m));
        let md = cs.write_blob(meta, ns, &mbytes, None, labels)?;
        reachable.insert(md.clone());
        let target = Descriptor::new(manifest::DOCKER_MANIFEST, md.clone(), mbytes.len() as u64);
        let mut names: Vec<String> = e.repo_tags.clone().unwrap_or_default();
        if names.is_empty() {
            names.push(fallback_name(opts, &md, n, count)?);
        }
        for name in names {
            images.push(super::put(
                meta,
                events,
                ns,
                &name,
                target.clone(),
                BTreeMap::new(),
            )?);
        }
    }
    if images.is_empty() {
        return Err(Error::InvalidArgument(
            "manifest.json lists no image".into(),
        ));
    }
    Ok((images, reachable))
}

fn append(
    builder: &mut tar::Builder<impl Write>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut h, name, data)
        .ctx(|| format!("writing {name} to the archive"))
}

fn append_dir(builder: &mut tar::Builder<impl Write>, name: &str) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Directory);
    builder
        .append_data(&mut h, name, std::io::empty())
        .ctx(|| format!("writing {name} to the archive"))
}

/// Exports the images `names` of `ns` as an OCI image-layout tar (with a docker `manifest.json`)
/// to `out`. An index whose platforms were not all pulled is exported as the manifest of
/// `platform` (the host's by default).
pub fn export(
    cs: &ContentStore,
    meta: &Store,
    ns: &str,
    names: &[String],
    platform: &PlatformSelector,
    out: impl Write,
) -> Result<()> {
    if names.is_empty() {
        return Err(Error::InvalidArgument(
            "name at least one image to export".into(),
        ));
    }
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen = HashSet::new();
    let mut index = Index {
        schema_version: 2,
        media_type: manifest::OCI_INDEX.into(),
        manifests: Vec::new(),
        annotations: BTreeMap::new(),
    };
    let mut docker: Vec<DockerArchiveEntry> = Vec::new();
    for name in names {
        let rec = super::get(meta, ns, name)?;
        let r = Reference::parse(&rec.name)?;
        let mut target = rec.target.clone();
        let all = super::blobs_of(cs, meta, ns, &target)?;
        let complete = all.iter().all(|d| cs.blob_size(&d.digest).is_some())
            && complete_index(cs, meta, ns, &target)?;
        let pimgs = super::resolve(cs, meta, ns, &target, platform)?;
        let chosen = if complete {
            all
        } else {
            let p = &pimgs[0];
            target = p.manifest_descriptor.clone();
            target.platform = None;
            super::blobs_of(cs, meta, ns, &target)?
        };
        for d in chosen {
            if cs.blob_size(&d.digest).is_none() {
                return Err(Error::NotFound(format!(
                    "image {name} lacks blob {} in the content store; pull it again",
                    d.digest
                )));
            }
            if seen.insert(d.digest.clone()) {
                blobs.push(d);
            }
        }
        let mut desc = target.clone();
        desc.annotations
            .insert(ANNOTATION_IMAGE_NAME.into(), rec.name.clone());
        desc.annotations.insert(
            ANNOTATION_REF_NAME.into(),
            r.tag()
                .map(str::to_string)
                .unwrap_or_else(|| rec.name.clone()),
        );
        index.manifests.push(desc);
        let p = &pimgs[0];
        let tag = if r.tag().is_some() && r.digest().is_none() {
            Some(r.familiar())
        } else {
            None
        };
        let cfg_name = format!(
            "blobs/{}/{}",
            p.manifest.config.digest.algorithm().name(),
            p.manifest.config.digest.hex()
        );
        match docker.iter_mut().find(|e| e.config == cfg_name) {
            Some(e) => e.repo_tags.get_or_insert_with(Vec::new).extend(tag),
            None => docker.push(DockerArchiveEntry {
                config: cfg_name,
                repo_tags: Some(tag.into_iter().collect()),
                layers: p
                    .layers
                    .iter()
                    .map(|l| {
                        format!(
                            "blobs/{}/{}",
                            l.descriptor.digest.algorithm().name(),
                            l.descriptor.digest.hex()
                        )
                    })
                    .collect(),
            }),
        }
    }
    let mut b = tar::Builder::new(out);
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append(&mut b, "oci-layout", layout.len() as u64, &layout[..])?;
    append_dir(&mut b, "blobs")?;
    let mut algs: Vec<&str> = blobs.iter().map(|d| d.digest.algorithm().name()).collect();
    algs.sort();
    algs.dedup();
    for a in algs {
        append_dir(&mut b, &format!("blobs/{a}"))?;
    }
    for d in &blobs {
        let p = cs.blob_path(&d.digest);
        let f = std::fs::File::open(&p).ctx(|| format!("opening {}", p.display()))?;
        let size = f
            .metadata()
            .ctx(|| format!("reading {}", p.display()))?
            .len();
        append(
            &mut b,
            &format!("blobs/{}/{}", d.digest.algorithm().name(), d.digest.hex()),
            size,
            f,
        )?;
    }
    let ib = serde_json::to_vec(&index)?;
    append(&mut b, "index.json", ib.len() as u64, &ib[..])?;
    let mb = serde_json::to_vec(&docker)?;
    append(&mut b, "manifest.json", mb.len() as u64, &mb[..])?;
    b.into_inner()
        .ctx(|| "finishing the archive".to_string())?
        .flush()
        .ctx(|| "writing the archive".to_string())?;
    Ok(())
}

/// Whether every manifest an index names (recursively) is in the store.
fn complete_index(cs: &ContentStore, meta: &Store, ns: &str, d: &Descriptor) -> Result<bool> {
    if !manifest::is_index(&d.media_type) {
        return Ok(true);
    }
    let bytes = cs.read(meta, ns, &d.digest)?;
    if let Parsed::Index(idx) = manifest::parse(&d.media_type, &bytes)? {
        for c in &idx.manifests {
            if !cs.exists(meta, ns, &c.digest)? || !complete_index(cs, meta, ns, c)? {
                return Ok(false);
            }
            if manifest::is_manifest(&c.media_type) {
                let mb = cs.read(meta, ns, &c.digest)?;
                if let Parsed::Manifest(m) = manifest::parse(&c.media_type, &mb)? {
                    if std::iter::once(&m.config)
                        .chain(m.layers.iter())
                        .any(|x| cs.blob_size(&x.digest).is_none())
                    {
                        return Ok(false);
                    }
                }
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{self, TestImage};
    use super::*;
    use std::sync::Arc;

    fn setup() -> (tempfile::TempDir, Arc<ContentStore>, Store) {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(&dir.path().join("content"), Publisher::discard()).unwrap();
        let meta = Store::open(&dir.path().join("meta.redb")).unwrap();
        (dir, cs, meta)
    }

    fn one() -> PlatformSelector {
        PlatformSelector::default()
    }

    #[test]
    fn docker_archive_several_images_shared_layers() {
        let (_t, cs, meta) = setup();
        let a = TestImage::busybox("a", false).unwrap();
        let b = TestImage::busybox("b", false).unwrap();
        let tar = fixture::docker_archive(&[
            (&["busybox:a", "example.com/x/y:1"], &a),
            (&["busybox:b"], &b),
        ]);
        let imgs = import(
            &cs,
            &meta,
            &Publisher::discard(),
            "default",
            &tar[..],
            &ImportOptions::default(),
        )
        .unwrap();
        let names: Vec<&str> = imgs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "docker.io/library/busybox:a",
                "example.com/x/y:1",
                "docker.io/library/busybox:b"
            ]
        );
        let pa = &super::super::resolve(&cs, &meta, "default", &imgs[0].target, &one()).unwrap()[0];
        let pb = &super::super::resolve(&cs, &meta, "default", &imgs[2].target, &one()).unwrap()[0];
        assert_eq!(pa.layers.len(), 3);
        // uncompressed layers: the blob digest is the diff id
        for (l, d) in pa.layers.iter().zip(&a.diffs) {
            assert_eq!(l.diff_id, Digest::sha256(d));
            assert_eq!(l.descriptor.digest, l.diff_id);
            assert_eq!(l.descriptor.media_type, manifest::DOCKER_LAYER);
        }
        assert_eq!(pa.config_bytes, a.config);
        assert_eq!(
            pa.layers[0].descriptor.digest,
            pb.layers[0].descriptor.digest
        );
        assert_ne!(
            pa.layers[2].descriptor.digest,
            pb.layers[2].descriptor.digest
        );
        // the shared base layer is stored once: 2 configs + 2 manifests + 4 distinct layers
        let blobs = cs.blobs().unwrap();
        assert_eq!(blobs.len(), 8, "{blobs:?}");
        let base = &pa.layers[0].descriptor.digest;
        assert_eq!(std::fs::read(cs.blob_path(base)).unwrap(), a.diffs[0]);
        // manifests carry gc labels for their children
        let mi = cs.info(&meta, "default", &imgs[0].target.digest).unwrap();
        assert_eq!(
            mi.labels["containerd.io/gc.ref.content.l.0"],
            base.to_string()
        );
        assert!(cs.ingests().unwrap().is_empty());
    }

    #[test]
    fn oci_layout_import_and_corrupt_blob_refused() {
        let (_t, cs, meta) = setup();
        let a = TestImage::busybox("a", true).unwrap();
        let tar = fixture::oci_layout(&[("localhost:5000/bb:v1", &a), ("", &a)]);
        let imgs = import(
            &cs,
            &meta,
            &Publisher::discard(),
            "ns1",
            &tar[..],
            &ImportOptions {
                base_name: Some("unnamed/img".into()),
            },
        )
        .unwrap();
        assert_eq!(imgs[0].name, "localhost:5000/bb:v1");
        assert_eq!(imgs[0].target.digest, a.manifest_descriptor.digest);
        assert!(
            imgs[1].name.starts_with("docker.io/unnamed/img:"),
            "{}",
            imgs[1].name
        );
        let p = &super::super::resolve(&cs, &meta, "ns1", &imgs[0].target, &one()).unwrap()[0];
        assert_eq!(p.layers[2].descriptor.media_type, manifest::OCI_LAYER_GZIP);
        assert_eq!(p.layers[2].diff_id, Digest::sha256(&a.diffs[2]));
        assert!(cs
            .info(&meta, "other", &a.manifest_descriptor.digest)
            .is_err());

        // a blob whose bytes do not match its name is refused and not stored
        let (_t2, cs2, meta2) = setup();
        let mut bad = TestImage::busybox("bad", true).unwrap();
        let victim = bad.layers[1].0.digest.clone();
        bad.layers[1].1 = fixture::gzip(b"tampered");
        let tar = fixture::oci_layout(&[("bad:1", &bad)]);
        let e = import(
            &cs2,
            &meta2,
            &Publisher::discard(),
            "default",
            &tar[..],
            &ImportOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(!cs2.blob_path(&victim).exists());
        assert!(!cs2
            .blob_path(&Digest::sha256(&fixture::gzip(b"tampered")))
            .exists());
        assert!(crate::image::list(&meta2, "default").unwrap().is_empty());
        assert!(cs2.ingests().unwrap().is_empty());

        // neither format
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        b.append_data(&mut h, "x", &b"x"[..]).unwrap();
        let e = import(
            &cs2,
            &meta2,
            &Publisher::discard(),
            "default",
            &b.into_inner().unwrap()[..],
            &ImportOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("neither"), "{e}");
        assert!(import(
            &cs2,
            &meta2,
            &Publisher::discard(),
            "default",
            &b"garbage"[..],
            &ImportOptions::default()
        )
        .is_err());
    }

    #[test]
    fn export_import_round_trip_keeps_digests() {
        let (_t, cs, meta) = setup();
        let a = TestImage::busybox("a", true).unwrap();
        let b = TestImage::busybox("b", false).unwrap();
        let tar = fixture::oci_layout(&[("docker.io/library/a:1", &a)]);
        import(
            &cs,
            &meta,
            &Publisher::discard(),
            "default",
            &tar[..],
            &ImportOptions::default(),
        )
        .unwrap();
        let tar = fixture::docker_archive(&[(&["b:2"], &b)]);
        let ib = import(
            &cs,
            &meta,
            &Publisher::discard(),
            "default",
            &tar[..],
            &ImportOptions::default(),
        )
        .unwrap();
        let mut out = Vec::new();
        export(
            &cs,
            &meta,
            "default",
            &["a:1".into(), "b:2".into()],
            &one(),
            &mut out,
        )
        .unwrap();

        let (_t2, cs2, meta2) = setup();
        let imgs = import(
            &cs2,
            &meta2,
            &Publisher::discard(),
            "default",
            &out[..],
            &ImportOptions::default(),
        )
        .unwrap();
        assert_eq!(imgs.len(), 2);
        assert_eq!(imgs[0].name, "docker.io/library/a:1");
        assert_eq!(imgs[0].target.digest, a.manifest_descriptor.digest);
        assert_eq!(imgs[1].name, "docker.io/library/b:2");
        assert_eq!(imgs[1].target.digest, ib[0].target.digest);
        let mut b1: Vec<_> = cs.blobs().unwrap();
        let mut b2: Vec<_> = cs2.blobs().unwrap();
        b1.sort();
        b2.sort();
        assert_eq!(b1, b2);

        // the docker manifest.json in the export names the right config and layers
        let mut ar = tar::Archive::new(&out[..]);
        let mut mj = None;
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("manifest.json") {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                mj = Some(s);
            }
        }
        let mj: Vec<DockerArchiveEntry> = serde_json::from_str(&mj.unwrap()).unwrap();
        assert_eq!(mj[0].repo_tags.as_deref(), Some(&["a:1".to_string()][..]));
        assert_eq!(
            mj[0].config,
            format!("blobs/sha256/{}", a.config_descriptor.digest.hex())
        );
        assert_eq!(mj[0].layers.len(), 3);
        assert!(export(&cs, &meta, "default", &["nope".into()], &one(), Vec::new()).is_err());
    }
}
