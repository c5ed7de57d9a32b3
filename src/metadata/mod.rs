//! The metadata store: one redb database at `<root>/meta.redb`.
//!
//! Records are JSON values in tables ("buckets"), keyed `<namespace>/<key>` for namespaced
//! buckets, so a namespace's records are one key range. Every API mutation is one write
//! transaction ([`Store::write`]): either all of it lands or none of it does, even on SIGKILL.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod namespaces;

/// A table of JSON records.
pub type Bucket = TableDefinition<'static, &'static str, &'static [u8]>;

/// Namespaces by name (not namespaced itself).
pub const NAMESPACES: Bucket = TableDefinition::new("namespaces");
/// Images by name, per namespace.
pub const IMAGES: Bucket = TableDefinition::new("images");
/// Content a namespace references (digest → labels), per namespace.
pub const CONTENT: Bucket = TableDefinition::new("content");
/// Snapshots by `<snapshotter>/<key>`, per namespace.
pub const SNAPSHOTS: Bucket = TableDefinition::new("snapshots");
/// Containers by id, per namespace.
pub const CONTAINERS: Bucket = TableDefinition::new("containers");
/// Leases by id, per namespace.
pub const LEASES: Bucket = TableDefinition::new("leases");
/// Networks by name, per namespace.
pub const NETWORKS: Bucket = TableDefinition::new("networks");
/// Named volumes by name, per namespace.
pub const VOLUMES: Bucket = TableDefinition::new("volumes");
/// Daemon-wide records (not namespaced): counters, allocations.
pub const SYSTEM: Bucket = TableDefinition::new("system");

/// The namespaced buckets; a namespace is empty when none of them holds a key under it.
pub const NAMESPACED: &[(&str, Bucket)] = &[
    ("images", IMAGES),
    ("content", CONTENT),
    ("snapshots", SNAPSHOTS),
    ("containers", CONTAINERS),
    ("leases", LEASES),
    ("networks", NETWORKS),
    ("volumes", VOLUMES),
];

/// A namespace record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
}

/// The database.
pub struct Store {
    db: Database,
}

/// A write transaction; dropped without [`Store::write`] returning Ok, it is rolled back.
pub struct Tx<'a> {
    txn: &'a redb::WriteTransaction,
}

/// Checks a namespace name: letters and digits, with `.`, `_` or `-` between them; 1..=76.
pub fn validate_namespace(name: &str) -> Result<()> {
    validate_name("namespace", name, 76)
}

/// Whether `name` follows docker's rule for container and network names,
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, in at most `max` bytes.
pub fn is_docker_name(name: &str, max: usize) -> bool {
    name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Checks an identifier (namespace, container name, lease id): `[A-Za-z0-9]` runs joined by
/// `.`, `_` or `-`, at most `max` bytes.
pub fn validate_name(what: &str, name: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("..")
        && !name.contains("--")
        && !name.contains("__");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid {what} name {name:?}: use 1 to {max} letters and digits, joined by single '.', '_' or '-'"
        )))
    }
}

fn nskey(ns: &str, key: &str) -> String {
    format!("{ns}/{key}")
}

impl Store {
    /// Opens (or creates) `<root>/meta.redb` and its tables; creates the `default` namespace.
    pub fn open(path: &Path) -> Result<Store> {
        let db = Database::create(path)
            .map_err(|e| Error::Metadata(format!("opening {}: {e}", path.display())))?;
        let store = Store { db };
        store.write(|tx| {
            for b in [NAMESPACES, SYSTEM]
                .into_iter()
                .chain(NAMESPACED.iter().map(|(_, b)| *b))
            {
                tx.txn.open_table(b)?;
            }
            if tx.get_raw::<Namespace>(NAMESPACES, "default")?.is_none() {
                tx.put_raw(
                    NAMESPACES,
                    "default",
                    &Namespace {
                        name: "default".into(),
                        labels: BTreeMap::new(),
                        created_at: chrono::Utc::now().timestamp(),
                    },
                )?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `f` in one write transaction, committed when `f` returns Ok.
    pub fn write<T>(&self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_write()?;
        let out = f(&Tx { txn: &txn })?;
        txn.commit()?;
        Ok(out)
    }

    /// Reads one namespaced record.
    pub fn get<T: DeserializeOwned>(
        &self,
        bucket: Bucket,
        ns: &str,
        key: &str,
    ) -> Result<Option<T>> {
        self.get_raw(bucket, &nskey(ns, key))
    }

    /// Reads one record by its full key.
    pub fn get_raw<T: DeserializeOwned>(&self, bucket: Bucket, key: &str) -> Result<Option<T>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(bucket)?;
        match t.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// Lists a namespace's records in a bucket, by key.
    pub fn list<T: DeserializeOwned>(&self, bucket: Bucket, ns: &str) -> Result<Vec<(String, T)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(bucket)?;
        list_prefix(&t, &format!("{ns}/"))
    }

    /// Lists every record of a bucket with its full key (`ns/key` for namespaced buckets).
    pub fn list_all<T: DeserializeOwned>(&self, bucket: Bucket) -> Result<Vec<(String, T)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(bucket)?;
        list_prefix(&t, "")
    }

    /// Lists the namespaces.
    pub fn namespaces(&self) -> Result<Vec<Namespace>> {
        Ok(self
            .list_all::<Namespace>(NAMESPACES)?
            .into_iter()
            .map(|(_, n)| n)
            .collect())
    }

    /// Checks that a namespace exists (FailedPrecondition-free NotFound otherwise).
    pub fn require_namespace(&self, ns: &str) -> Result<()> {
        validate_namespace(ns)?;
        if self.get_raw::<Namespace>(NAMESPACES, ns)?.is_none() {
            return Err(Error::NotFound(format!(
                "namespace {ns:?} does not exist (create it with `nook namespaces create {ns}`)"
            )));
        }
        Ok(())
    }
}

fn list_prefix<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for item in t.range(prefix..)? {
        let (k, v) = item?;
        let k = k.value();
        if !k.starts_with(prefix) {
            break;
        }
        out.push((
            k[prefix.len()..].to_string(),
            serde_json::from_slice(v.value())?,
        ));
    }
    Ok(out)
}

impl Tx<'_> {
    /// Reads a namespaced record inside the transaction.
    pub fn get<T: DeserializeOwned>(
        &self,
        bucket: Bucket,
        ns: &str,
        key: &str,
    ) -> Result<Option<T>> {
        self.get_raw(bucket, &nskey(ns, key))
    }

    /// Reads a record by full key inside the transaction.
    pub fn get_raw<T: DeserializeOwned>(&self, bucket: Bucket, key: &str) -> Result<Option<T>> {
        let t = self.txn.open_table(bucket)?;
        let v = t.get(key)?;
        match v {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// Writes (creates or replaces) a namespaced record.
    pub fn put<T: Serialize>(&self, bucket: Bucket, ns: &str, key: &str, value: &T) -> Result<()> {
        self.put_raw(bucket, &nskey(ns, key), value)
    }

    /// Writes a record by full key.
    pub fn put_raw<T: Serialize>(&self, bucket: Bucket, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value)?;
        let mut t = self.txn.open_table(bucket)?;
        t.insert(key, bytes.as_slice())?;
        Ok(())
    }

    /// Creates a namespaced record; AlreadyExists if the key is taken.
    pub fn create<T: Serialize>(
        &self,
        bucket: Bucket,
        ns: &str,
        key: &str,
        what: &str,
        value: &T,
    ) -> Result<()> {
        let k = nskey(ns, key);
        if self.txn.open_table(bucket)?.get(k.as_str())?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "{what} {key:?} already exists in namespace {ns:?}"
            )));
        }
        self.put_raw(bucket, &k, value)
    }

    /// Deletes a namespaced record; returns whether it existed.
    pub fn delete(&self, bucket: Bucket, ns: &str, key: &str) -> Result<bool> {
        self.delete_raw(bucket, &nskey(ns, key))
    }

    /// Deletes a record by full key; returns whether it existed.
    pub fn delete_raw(&self, bucket: Bucket, key: &str) -> Result<bool> {
        let mut t = self.txn.open_table(bucket)?;
        let existed = t.remove(key)?.is_some();
        Ok(existed)
    }

    /// Lists a namespace's records inside the transaction.
    pub fn list<T: DeserializeOwned>(&self, bucket: Bucket, ns: &str) -> Result<Vec<(String, T)>> {
        let t = self.txn.open_table(bucket)?;
        list_prefix(&t, &format!("{ns}/"))
    }

    /// Lists every record of a bucket inside the transaction.
    pub fn list_all<T: DeserializeOwned>(&self, bucket: Bucket) -> Result<Vec<(String, T)>> {
        let t = self.txn.open_table(bucket)?;
        list_prefix(&t, "")
    }

    /// Whether a namespace holds any record in a namespaced bucket; returns the first bucket's name.
    pub fn namespace_in_use(&self, ns: &str) -> Result<Option<&'static str>> {
        let prefix = format!("{ns}/");
        for (name, b) in NAMESPACED {
            let t = self.txn.open_table(*b)?;
            let first = match t.range(prefix.as_str()..)?.next() {
                Some(item) => Some(item?.0.value().to_string()),
                None => None,
            };
            if first.is_some_and(|k| k.starts_with(&prefix)) {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["default", "k8s.io", "a-b_c.d", "x1"] {
            validate_namespace(ok).unwrap();
        }
        for bad in ["", "-a", "a-", "a/b", "a..b", "with space", &"x".repeat(77)] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("meta.redb")).unwrap();
        assert_eq!(s.namespaces().unwrap().len(), 1);
        s.write(|tx| tx.create(IMAGES, "a", "img", "image", &1u32))
            .unwrap();
        let e = s
            .write(|tx| tx.create(IMAGES, "a", "img", "image", &2u32))
            .unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)));
        s.write(|tx| tx.put(IMAGES, "ab", "img", &3u32)).unwrap();
        let l: Vec<(String, u32)> = s.list(IMAGES, "a").unwrap();
        assert_eq!(l, vec![("img".to_string(), 1)]);
        assert_eq!(
            s.write(|tx| tx.namespace_in_use("a")).unwrap(),
            Some("images")
        );
        assert_eq!(s.write(|tx| tx.namespace_in_use("b")).unwrap(), None);
        // a failed transaction leaves nothing behind
        let _ = s.write(|tx| {
            tx.put(IMAGES, "c", "x", &1u32)?;
            Err::<(), _>(Error::Internal("boom".into()))
        });
        assert!(s.get::<u32>(IMAGES, "c", "x").unwrap().is_none());
    }
}
