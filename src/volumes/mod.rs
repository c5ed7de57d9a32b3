//! Named volumes: directories nook keeps for containers' data apart from their writable layer,
//! as docker's `local` volume driver does. A volume is a record in the VOLUMES bucket
//! (`<ns>/<name>`: driver, labels, creation time) and a directory
//! `<root>/volumes/<ns>/<name>/_data` that a container gets bind-mounted (`-v NAME:/path`).
//!
//! Volumes outlive containers and nookd restarts; garbage collection never looks at them, only
//! `volume rm` and `volume prune` remove them. Which containers use a volume is in the
//! containers' records, so the check that refuses removing one in use lives a layer up (the
//! volumes service and the containers' manager, inside the same write transaction).
//!
//! A new, empty volume is filled from the image's content at the path it is mounted on
//! (docker's copy-up), with the owners, modes and times of the image's files: nookd runs as
//! root of its user namespace, so the ids land mapped exactly as in the container's rootfs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::metadata::{Store, Tx, VOLUMES};

/// The only driver: a directory under nook's root.
pub const LOCAL: &str = "local";

/// The label docker (23 and later) puts on anonymous volumes.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// A volume's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeRecord {
    pub name: String,
    /// Always [`LOCAL`].
    pub driver: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Made for a container's `-v /path` (a random name); `rm -v` and `--rm` remove it.
    #[serde(default)]
    pub anonymous: bool,
}

/// A volume with where its data lives.
#[derive(Debug, Clone)]
pub struct Volume {
    pub record: VolumeRecord,
    /// The directory containers get mounted (`<root>/volumes/<ns>/<name>/_data`).
    pub mountpoint: PathBuf,
}

/// What `create` takes.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// Empty: a random 64-hex name (an anonymous volume when `anonymous`).
    pub name: String,
    /// Empty or `local`.
    pub driver: String,
    /// Driver options (`-o`): none is supported yet, each is refused by name.
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub anonymous: bool,
}

/// The volumes of every namespace, their records and directories.
pub struct Volumes {
    store: Arc<Store>,
    /// `<root>/volumes`.
    dir: PathBuf,
}

/// Checks a volume name: docker's rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_name(name: &str) -> Result<()> {
    if name.len() >= 2 && crate::metadata::is_docker_name(name, 255) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid volume name {name:?}: use at least two of [a-zA-Z0-9_.-], starting with a letter or digit"
        )))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Volumes {
    /// The volumes under `<root>/volumes`.
    pub fn new(store: Arc<Store>, root: &Path) -> Volumes {
        Volumes {
            store,
            dir: root.join("volumes"),
        }
    }

    /// `<root>/volumes/<ns>/<name>`: the volume's directory (its data is in `_data`).
    fn volume_dir(&self, ns: &str, name: &str) -> PathBuf {
        self.dir.join(ns).join(name)
    }

    /// Where the volume's data lives (what containers get mounted).
    pub fn mountpoint(&self, ns: &str, name: &str) -> PathBuf {
        self.volume_dir(ns, name).join("_data")
    }

    fn with_path(&self, ns: &str, record: VolumeRecord) -> Volume {
        Volume {
            mountpoint: self.mountpoint(ns, &record.name),
            record,
        }
    }

    /// Creates a volume, or returns the one of that name (docker's create is idempotent). An
    /// option of the driver nook does not have is refused by name.
    pub fn create(&self, ns: &str, req: &CreateRequest) -> Result<(Volume, bool)> {
        if !req.driver.is_empty() && req.driver != LOCAL {
            return Err(Error::InvalidArgument(format!(
                "volume driver {:?} is not supported: nook has the local driver only (drop --driver)",
                req.driver
            )));
        }
        if let Some(k) = req.options.keys().next() {
            return Err(Error::InvalidArgument(format!(
                "volume driver option {k:?} is not supported: nook's local driver takes no options yet (drop -o {k}=...)"
            )));
        }
        let name = if req.name.is_empty() {
            hex::encode(rand::random::<[u8; 32]>())
        } else {
            validate_name(&req.name)?;
            req.name.clone()
        };
        self.store.require_namespace(ns)?;
        let mut labels = req.labels.clone();
        if req.anonymous {
            labels.entry(ANONYMOUS_LABEL.into()).or_default();
        }
        let rec = VolumeRecord {
            name: name.clone(),
            driver: LOCAL.into(),
            labels,
            created_at: now(),
            anonymous: req.anonymous,
        };
        // the directory first: a record always has its directory
        let data = self.mountpoint(ns, &name);
        std::fs::create_dir_all(&data).ctx(|| format!("creating {}", data.display()))?;
        let made = self.store.write(|tx| {
            if let Some(old) = tx.get::<VolumeRecord>(VOLUMES, ns, &name)? {
                return Ok((old, false));
            }
            tx.put(VOLUMES, ns, &name, &rec)?;
            Ok((rec.clone(), true))
        })?;
        Ok((self.with_path(ns, made.0), made.1))
    }

    /// One volume.
    pub fn get(&self, ns: &str, name: &str) -> Result<Volume> {
        match self.store.get::<VolumeRecord>(VOLUMES, ns, name)? {
            Some(r) => Ok(self.with_path(ns, r)),
            None => Err(Error::NotFound(format!(
                "no such volume {name:?} in namespace {ns:?} (see `nook volume ls`)"
            ))),
        }
    }

    /// Every volume of `ns`, by name.
    pub fn list(&self, ns: &str) -> Result<Vec<Volume>> {
        Ok(self
            .store
            .list::<VolumeRecord>(VOLUMES, ns)?
            .into_iter()
            .map(|(_, r)| self.with_path(ns, r))
            .collect())
    }

    /// Deletes the record inside a transaction (the caller checked that no container uses
    /// it); [`Volumes::remove_data`] follows once the transaction committed.
    pub fn delete_record(tx: &Tx, ns: &str, name: &str) -> Result<bool> {
        tx.delete(VOLUMES, ns, name)
    }

    /// Removes a volume's directory (after its record went).
    pub fn remove_data(&self, ns: &str, name: &str) -> Result<()> {
        let dir = self.volume_dir(ns, name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", dir.display()), e)),
        }
    }

    /// The bytes a volume's data takes on disk.
    pub fn size(&self, ns: &str, name: &str) -> u64 {
        crate::snapshot::copy::disk_usage(&self.mountpoint(ns, name))
            .map(|u| u.size)
            .unwrap_or(0)
    }

    /// Docker's copy-up: fills the volume from `src` (the image's directory at the mount
    /// path, inside the container's mounted rootfs) when the volume is empty, with the
    /// owners, modes, times and xattrs of the image's files, and gives the volume's top
    /// directory the owner and mode of `src`. Nothing happens when `src` is not a directory
    /// or the volume holds anything already. Returns whether it copied.
    pub fn copy_up(&self, ns: &str, name: &str, src: &Path) -> Result<bool> {
        let data = self.mountpoint(ns, name);
        let empty = std::fs::read_dir(&data)
            .ctx(|| format!("reading {}", data.display()))?
            .next()
            .is_none();
        if !empty || !std::fs::symlink_metadata(src).is_ok_and(|m| m.is_dir()) {
            return Ok(false);
        }
        crate::snapshot::copy::copy_tree(src, &data)?;
        Ok(true)
    }

    /// Removes volume directories under `<root>/volumes/<ns>` that have no record (a volume
    /// whose removal was cut by a crash between the record and its data); returns how many.
    pub fn remove_orphans(&self) -> usize {
        let mut n = 0;
        let Ok(nss) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        for ns in nss.flatten() {
            let nsname = ns.file_name().to_string_lossy().to_string();
            let Ok(vols) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for v in vols.flatten() {
                let name = v.file_name().to_string_lossy().to_string();
                let known = self
                    .store
                    .get::<VolumeRecord>(VOLUMES, &nsname, &name)
                    .map(|r| r.is_some())
                    // never remove data on a read error
                    .unwrap_or(true);
                if !known && self.remove_data(&nsname, &name).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vols() -> (tempfile::TempDir, Volumes) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("meta.redb")).unwrap());
        let v = Volumes::new(store, dir.path());
        (dir, v)
    }

    #[test]
    fn create_is_idempotent_and_refuses_drivers_and_options() {
        let (_d, v) = vols();
        let (a, made) = v
            .create(
                "default",
                &CreateRequest {
                    name: "data".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(made && a.mountpoint.is_dir());
        assert_eq!(a.record.driver, "local");
        let (_, made) = v
            .create(
                "default",
                &CreateRequest {
                    name: "data".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(!made);
        let e = v
            .create(
                "default",
                &CreateRequest {
                    name: "x1".into(),
                    driver: "nfs".into(),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("\"nfs\""), "{e}");
        let mut options = BTreeMap::new();
        options.insert("type".to_string(), "tmpfs".to_string());
        let e = v
            .create(
                "default",
                &CreateRequest {
                    name: "x1".into(),
                    options,
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("\"type\""), "{e}");
        for bad in ["a", "-x", "a/b", ""] {
            assert!(validate_name(bad).is_err() || bad.is_empty(), "{bad}");
        }
        let (anon, _) = v
            .create(
                "default",
                &CreateRequest {
                    anonymous: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(anon.record.name.len(), 64);
        assert!(anon.record.labels.contains_key(ANONYMOUS_LABEL));
        assert_eq!(v.list("default").unwrap().len(), 2);
    }

    #[test]
    fn copy_up_only_into_an_empty_volume() {
        let (d, v) = vols();
        let src = d.path().join("img/data");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "from the image").unwrap();
        let (vol, _) = v
            .create(
                "default",
                &CreateRequest {
                    name: "db".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(v.copy_up("default", "db", &src).unwrap());
        assert_eq!(
            std::fs::read_to_string(vol.mountpoint.join("sub/f")).unwrap(),
            "from the image"
        );
        std::fs::write(src.join("later"), "x").unwrap();
        assert!(!v.copy_up("default", "db", &src).unwrap());
        assert!(!vol.mountpoint.join("later").exists());
        // an orphan directory goes, a recorded volume stays
        std::fs::create_dir_all(d.path().join("volumes/default/orphan/_data")).unwrap();
        assert_eq!(v.remove_orphans(), 1);
        assert!(vol.mountpoint.is_dir());
    }
}
