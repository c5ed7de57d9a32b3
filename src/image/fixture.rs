//! Test images built from files on this machine (no network): layers as tars, an image config,
//! a manifest, and the archives (`docker save` style and OCI layout) that hold them. Used by the
//! unit tests, the integration tests and the benchmark.

use std::collections::BTreeMap;
use std::io::Write;

use flate2::write::GzEncoder;

use super::manifest::{self, Descriptor, Index, Manifest};
use crate::content::Digest;

/// A file in a test layer.
#[derive(Debug, Clone)]
pub enum FileSpec {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        path: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// An OCI whiteout deleting `path` of a lower layer.
    Whiteout {
        path: String,
    },
    /// Another entry with an owner (uid, gid) and mode other than root's and the default.
    Owned {
        entry: Box<FileSpec>,
        uid: u64,
        gid: u64,
        mode: u32,
    },
}

impl FileSpec {
    pub fn file(path: &str, data: impl Into<Vec<u8>>) -> FileSpec {
        FileSpec::File {
            path: path.into(),
            data: data.into(),
            mode: 0o644,
        }
    }
    pub fn exec(path: &str, data: impl Into<Vec<u8>>) -> FileSpec {
        FileSpec::File {
            path: path.into(),
            data: data.into(),
            mode: 0o755,
        }
    }
    pub fn dir(path: &str) -> FileSpec {
        FileSpec::Dir { path: path.into() }
    }
    pub fn symlink(path: &str, target: &str) -> FileSpec {
        FileSpec::Symlink {
            path: path.into(),
            target: target.into(),
        }
    }
    pub fn whiteout(path: &str) -> FileSpec {
        FileSpec::Whiteout { path: path.into() }
    }
    /// This entry owned by `uid:gid` with `mode`.
    pub fn owned(self, uid: u64, gid: u64, mode: u32) -> FileSpec {
        FileSpec::Owned {
            entry: Box::new(self),
            uid,
            gid,
            mode,
        }
    }
}

/// Builds an uncompressed layer tar.
pub fn layer_tar(files: &[FileSpec]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let mut f = f;
        let mut owner = None;
        if let FileSpec::Owned {
            entry,
            uid,
            gid,
            mode,
        } = f
        {
            f = entry;
            owner = Some((*uid, *gid, *mode));
        }
        let mut h = OwnedHeader { h, owner };
        let h = &mut h;
        match f {
            FileSpec::File { path, data, mode } => {
                h.h.set_entry_type(tar::EntryType::Regular);
                h.mode(*mode);
                h.h.set_size(data.len() as u64);
                b.append_data(&mut h.h, path, &data[..])
                    .expect("tar in memory");
            }
            FileSpec::Dir { path } => {
                h.h.set_entry_type(tar::EntryType::Directory);
                h.mode(0o755);
                h.h.set_size(0);
                b.append_data(&mut h.h, path, std::io::empty())
                    .expect("tar in memory");
            }
            FileSpec::Symlink { path, target } => {
                h.h.set_entry_type(tar::EntryType::Symlink);
                h.mode(0o777);
                h.h.set_size(0);
                b.append_link(&mut h.h, path, target)
                    .expect("tar in memory");
            }
            FileSpec::Owned { .. } => panic!("FileSpec::owned of an owned entry"),
            FileSpec::Whiteout { path } => {
                let (dir, base) = match path.rsplit_once('/') {
                    Some((d, b)) => (format!("{d}/"), b.to_string()),
                    None => (String::new(), path.clone()),
                };
                h.h.set_entry_type(tar::EntryType::Regular);
                h.mode(0o644);
                h.h.set_size(0);
                b.append_data(&mut h.h, format!("{dir}.wh.{base}"), std::io::empty())
                    .expect("tar in memory");
            }
        }
    }
    b.into_inner().expect("tar in memory")
}

/// A tar header with the owner and mode of [`FileSpec::Owned`] applied over the defaults.
struct OwnedHeader {
    h: tar::Header,
    owner: Option<(u64, u64, u32)>,
}

impl OwnedHeader {
    fn mode(&mut self, default: u32) {
        match self.owner {
            Some((uid, gid, mode)) => {
                self.h.set_uid(uid);
                self.h.set_gid(gid);
                self.h.set_mode(mode);
            }
            None => self.h.set_mode(default),
        }
    }
}

pub use crate::diff::fixture::sparse_tar;

/// Gzips bytes.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip in memory");
    e.finish().expect("gzip in memory")
}

/// A built image: its blobs and descriptors.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub manifest: Vec<u8>,
    pub manifest_descriptor: Descriptor,
    pub config: Vec<u8>,
    pub config_descriptor: Descriptor,
    /// Layer blobs as stored (gzip when built so) with their descriptors.
    pub layers: Vec<(Descriptor, Vec<u8>)>,
    /// The uncompressed tars.
    pub diffs: Vec<Vec<u8>>,
}

impl TestImage {
    /// Builds an OCI image from layers; `gzip_layers` compresses them.
    pub fn build(layers: &[Vec<FileSpec>], gzip_layers: bool, cmd: &[&str]) -> TestImage {
        Self::build_for(layers, gzip_layers, cmd, &manifest::Platform::host())
    }

    /// The same for another platform (the config names it).
    pub fn build_for(
        layers: &[Vec<FileSpec>],
        gzip_layers: bool,
        cmd: &[&str],
        platform: &manifest::Platform,
    ) -> TestImage {
        Self::build_with(layers, gzip_layers, cmd, platform, serde_json::json!({}))
    }

    /// The same with more keys of the image config's `config` (`ExposedPorts`, `User`...).
    pub fn build_with(
        layers: &[Vec<FileSpec>],
        gzip_layers: bool,
        cmd: &[&str],
        platform: &manifest::Platform,
        config_extra: serde_json::Value,
    ) -> TestImage {
        let diffs: Vec<Vec<u8>> = layers.iter().map(|l| layer_tar(l)).collect();
        let diff_ids: Vec<String> = diffs
            .iter()
            .map(|d| Digest::sha256(d).to_string())
            .collect();
        let mut inner = serde_json::json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": cmd});
        if let (Some(o), Some(extra)) = (inner.as_object_mut(), config_extra.as_object()) {
            o.extend(extra.clone());
        }
        let config = serde_json::json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "variant": platform.variant,
            "created": "2024-01-01T00:00:00Z",
            "config": inner,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": diffs.iter().map(|_| serde_json::json!({"created_by": "nook test fixture"})).collect::<Vec<_>>(),
        });
        let config = serde_json::to_vec(&config).expect("json");
        let config_descriptor = Descriptor::new(
            manifest::OCI_CONFIG,
            Digest::sha256(&config),
            config.len() as u64,
        );
        let layers: Vec<(Descriptor, Vec<u8>)> = diffs
            .iter()
            .map(|d| {
                let (mt, blob) = if gzip_layers {
                    (manifest::OCI_LAYER_GZIP, gzip(d))
                } else {
                    (manifest::OCI_LAYER, d.clone())
                };
                (
                    Descriptor::new(mt, Digest::sha256(&blob), blob.len() as u64),
                    blob,
                )
            })
            .collect();
        let m = Manifest {
            schema_version: 2,
            media_type: manifest::OCI_MANIFEST.into(),
            config: config_descriptor.clone(),
            layers: layers.iter().map(|(d, _)| d.clone()).collect(),
            annotations: BTreeMap::new(),
        };
        let manifest = serde_json::to_vec(&m).expect("json");
        TestImage {
            manifest_descriptor: Descriptor::new(
                manifest::OCI_MANIFEST,
                Digest::sha256(&manifest),
                manifest.len() as u64,
            ),
            manifest,
            config,
            config_descriptor,
            layers,
            diffs,
        }
    }

    /// A busybox image from `/bin/busybox` (busybox-static): a base layer with the binary, a
    /// second adding files, a third deleting `/etc/motd` of the second and adding `extra`.
    pub fn busybox(extra: &str, gzip_layers: bool) -> std::io::Result<TestImage> {
        let bb = std::fs::read("/bin/busybox")?;
        Ok(TestImage::build(
            &busybox_layers(bb, extra),
            gzip_layers,
            &["sh"],
        ))
    }

    /// Every blob (manifest, config, layers) with its digest.
    pub fn blobs(&self) -> Vec<(Digest, Vec<u8>)> {
        let mut v = vec![
            (
                self.manifest_descriptor.digest.clone(),
                self.manifest.clone(),
            ),
            (self.config_descriptor.digest.clone(), self.config.clone()),
        ];
        v.extend(
            self.layers
                .iter()
                .map(|(d, b)| (d.digest.clone(), b.clone())),
        );
        v
    }
}

/// The layers of [`TestImage::busybox`].
pub fn busybox_layers(busybox: Vec<u8>, extra: &str) -> Vec<Vec<FileSpec>> {
    vec![
        vec![
            FileSpec::dir("bin"),
            FileSpec::exec("bin/busybox", busybox),
            FileSpec::symlink("bin/sh", "busybox"),
            FileSpec::symlink("bin/ls", "busybox"),
            FileSpec::symlink("bin/cat", "busybox"),
            FileSpec::dir("etc"),
            FileSpec::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            FileSpec::file("etc/group", "root:x:0:\n"),
            FileSpec::dir("tmp"),
        ],
        vec![
            FileSpec::dir("etc"),
            FileSpec::file("etc/motd", "deleted by the next layer\n"),
            FileSpec::file("etc/hostname", "nook\n"),
        ],
        vec![
            FileSpec::dir("etc"),
            FileSpec::whiteout("etc/motd"),
            FileSpec::file("etc/extra", extra.as_bytes().to_vec()),
        ],
    ]
}

fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).expect("tar in memory");
}

fn add_symlink(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_mode(0o777);
    h.set_entry_type(tar::EntryType::Symlink);
    b.append_link(&mut h, name, target).expect("tar in memory");
}

/// A docker-archive (as `docker save` writes: `<id>/layer.tar`, `<id>.json`, `manifest.json`,
/// shared layers as symlinks) of images with their tags. Layers are stored uncompressed.
pub fn docker_archive(images: &[(&[&str], &TestImage)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut entries = Vec::new();
    let mut written: BTreeMap<String, String> = BTreeMap::new();
    for (tags, img) in images {
        let cfg_name = format!("{}.json", img.config_descriptor.digest.hex());
        if !written.contains_key(&cfg_name) {
            add(&mut b, &cfg_name, &img.config);
            written.insert(cfg_name.clone(), cfg_name.clone());
        }
        let mut layers = Vec::new();
        for d in &img.diffs {
            let id = Digest::sha256(d).hex().to_string();
            let name = format!("{id}/layer.tar");
            // a layer shared with an earlier image becomes a symlink, like docker does
            let alias = format!(
                "{}-{}/layer.tar",
                &id[..8],
                img.config_descriptor.digest.short()
            );
            if written.contains_key(&name) {
                add_symlink(&mut b, &alias, &format!("../{id}/layer.tar"));
                layers.push(alias);
            } else {
                add(&mut b, &name, d);
                written.insert(name.clone(), name.clone());
                layers.push(name);
            }
        }
        entries.push(serde_json::json!({
            "Config": cfg_name,
            "RepoTags": tags,
            "Layers": layers,
        }));
    }
    let m = serde_json::to_vec(&entries).expect("json");
    add(&mut b, "manifest.json", &m);
    b.into_inner().expect("tar in memory")
}

/// An OCI image-layout tar of images; `names` go into `io.containerd.image.name` (full) and
/// `org.opencontainers.image.ref.name` (tag), as containerd and docker write them.
pub fn oci_layout(images: &[(&str, &TestImage)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let mut idx = Index {
        schema_version: 2,
        media_type: manifest::OCI_INDEX.into(),
        manifests: Vec::new(),
        annotations: BTreeMap::new(),
    };
    let mut seen = std::collections::HashSet::new();
    for (name, img) in images {
        for (d, data) in img.blobs() {
            if seen.insert(d.clone()) {
                add(&mut b, &format!("blobs/sha256/{}", d.hex()), &data);
            }
        }
        let mut desc = img.manifest_descriptor.clone();
        if !name.is_empty() {
            desc.annotations.insert(
                super::archive::ANNOTATION_IMAGE_NAME.into(),
                name.to_string(),
            );
            let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            desc.annotations
                .insert(super::archive::ANNOTATION_REF_NAME.into(), tag.to_string());
        }
        idx.manifests.push(desc);
    }
    add(
        &mut b,
        "index.json",
        &serde_json::to_vec(&idx).expect("json"),
    );
    b.into_inner().expect("tar in memory")
}

/// A Debian `docker-registry` serving on 127.0.0.1 for tests, killed on drop.
pub struct TestRegistry {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

/// TLS and auth settings of a [`TestRegistry`].
#[derive(Debug, Clone, Default)]
pub struct TestRegistryOptions {
    /// Server certificate and key (PEM).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// An htpasswd file (bcrypt) for basic auth.
    pub htpasswd: Option<std::path::PathBuf>,
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl TestRegistry {
    /// Starts a registry storing under `dir` on a free port.
    pub fn start(
        dir: &std::path::Path,
        opts: &TestRegistryOptions,
    ) -> std::io::Result<TestRegistry> {
        let port = free_port()?;
        std::fs::create_dir_all(dir.join("data"))?;
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some((c, k)) = &opts.tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                c.display(),
                k.display()
            ));
        }
        if let Some(h) = &opts.htpasswd {
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: nook-test\n    path: {}\n",
                h.display()
            ));
        }
        std::fs::write(dir.join("config.yml"), cfg)?;
        let mut r = TestRegistry {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        r.restart()?;
        Ok(r)
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps a blob's bytes (to corrupt it in tests).
    pub fn blob_file(&self, d: &Digest) -> std::path::PathBuf {
        self.dir
            .join("data/docker/registry/v2/blobs")
            .join(d.algorithm().name())
            .join(&d.hex()[..2])
            .join(d.hex())
            .join("data")
    }

    /// The registry's access log since it was last (re)started: one line per request.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// How many `GET` requests of each blob the registry served since its last (re)start.
    pub fn blob_gets(&self) -> BTreeMap<String, usize> {
        let mut n = BTreeMap::new();
        for line in self.access_log().lines() {
            let Some(i) = line.find("\"GET /v2/") else {
                continue;
            };
            let req = line[i + 1..].split(' ').nth(1).unwrap_or("");
            if let Some((_, d)) = req.split_once("/blobs/") {
                *n.entry(d.to_string()).or_insert(0) += 1;
            }
        }
        n
    }

    /// Stops the registry (the port stays reserved for [`TestRegistry::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts it on the same port and waits until it accepts connections.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let log = std::fs::File::create(self.dir.join("registry.log"))?;
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
        Err(std::io::Error::other(format!(
            "docker-registry did not start: {log}"
        )))
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An OCI image index over images (each descriptor carrying its platform): bytes and descriptor.
pub fn index(images: &[(&TestImage, manifest::Platform)]) -> (Vec<u8>, Descriptor) {
    let idx = Index {
        schema_version: 2,
        media_type: manifest::OCI_INDEX.into(),
        manifests: images
            .iter()
            .map(|(i, p)| {
                let mut d = i.manifest_descriptor.clone();
                d.platform = Some(p.clone());
                d
            })
            .collect(),
        annotations: BTreeMap::new(),
    };
    let b = serde_json::to_vec(&idx).expect("json");
    let d = Descriptor::new(manifest::OCI_INDEX, Digest::sha256(&b), b.len() as u64);
    (b, d)
}

/// An OCI image-layout tar whose one entry, named `name`, is a multi-platform index.
pub fn oci_layout_index(name: &str, images: &[(&TestImage, manifest::Platform)]) -> Vec<u8> {
    let (ib, idesc) = index(images);
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let mut seen = std::collections::HashSet::new();
    for (img, _) in images {
        for (d, data) in img.blobs() {
            if seen.insert(d.clone()) {
                add(&mut b, &format!("blobs/sha256/{}", d.hex()), &data);
            }
        }
    }
    add(&mut b, &format!("blobs/sha256/{}", idesc.digest.hex()), &ib);
    let mut top = idesc;
    top.annotations.insert(
        super::archive::ANNOTATION_IMAGE_NAME.into(),
        name.to_string(),
    );
    let outer = Index {
        schema_version: 2,
        media_type: manifest::OCI_INDEX.into(),
        manifests: vec![top],
        annotations: BTreeMap::new(),
    };
    add(
        &mut b,
        "index.json",
        &serde_json::to_vec(&outer).expect("json"),
    );
    b.into_inner().expect("tar in memory")
}
