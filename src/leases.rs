//! Leases: named holds on content and snapshots that garbage collection must not delete.
//!
//! Pulls, unpacks and container creation take a lease for the resources they are building, so
//! a GC running meanwhile keeps them; when the operation finishes, the image or container
//! record references them and the lease is removed. An expired lease (label
//! `containerd.io/gc.expire`, RFC 3339, or `expires_at`) holds nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metadata::{Store, LEASES};

/// The containerd label that sets a lease's expiry (RFC 3339).
pub const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// A resource held by a lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Resource {
    /// `content` or `snapshots/<snapshotter>`.
    pub kind: String,
    /// A digest or a snapshot key.
    pub id: String,
}

/// A lease record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    /// Unix seconds; 0 = never.
    pub expires_at: i64,
    pub resources: Vec<Resource>,
}

impl Lease {
    /// Whether the lease has expired at `now` (unix seconds).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at > 0 && self.expires_at <= now
    }
}

fn check_kind(kind: &str) -> Result<()> {
    let ok = kind == "content"
        || kind
            .strip_prefix("snapshots/")
            .is_some_and(|s| !s.is_empty() && !s.contains('/'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid lease resource kind {kind:?}: use \"content\" or \"snapshots/<snapshotter>\""
        )))
    }
}

/// Checks a lease id: 1..256 printable ASCII characters without spaces or '/'. Wider than
/// nook's names because containerd's Go client makes ids like `150454214-AbC_x-=`.
fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(Error::InvalidArgument(format!(
            "invalid lease id {id:?}: use 1 to 256 printable characters without spaces or '/'"
        )));
    }
    Ok(())
}

/// Creates a lease. `id` empty → a generated one. `expire` in seconds, 0 = never.
pub fn create(
    store: &Store,
    ns: &str,
    id: &str,
    mut labels: BTreeMap<String, String>,
    expire: u64,
) -> Result<Lease> {
    let id = if id.is_empty() {
        format!("lease-{}", hex::encode(rand::random::<[u8; 8]>()))
    } else {
        validate_id(id)?;
        id.to_string()
    };
    let now = chrono::Utc::now();
    let mut expires_at = 0;
    if let Some(v) = labels.get(EXPIRE_LABEL) {
        expires_at = chrono::DateTime::parse_from_rfc3339(v)
            .map_err(|e| {
                Error::InvalidArgument(format!("label {EXPIRE_LABEL}={v:?} is not RFC 3339: {e}"))
            })?
            .timestamp();
    }
    if expire > 0 {
        let at = now + chrono::Duration::seconds(expire.min(10 * 365 * 86400) as i64);
        expires_at = at.timestamp();
        labels.insert(EXPIRE_LABEL.into(), at.to_rfc3339());
    }
    let lease = Lease {
        id: id.clone(),
        labels,
        created_at: now.timestamp(),
        expires_at,
        resources: vec![],
    };
    store.write(|tx| tx.create(LEASES, ns, &id, "lease", &lease))?;
    Ok(lease)
}

/// Lists a namespace's leases.
pub fn list(store: &Store, ns: &str) -> Result<Vec<Lease>> {
    Ok(store
        .list::<Lease>(LEASES, ns)?
        .into_iter()
        .map(|(_, l)| l)
        .collect())
}

/// Removes a lease (what it held becomes collectable unless something else references it).
pub fn delete(store: &Store, ns: &str, id: &str) -> Result<()> {
    store.write(|tx| {
        if !tx.delete(LEASES, ns, id)? {
            return Err(Error::NotFound(format!(
                "lease {id:?} not found in namespace {ns:?}"
            )));
        }
        Ok(())
    })
}

/// Adds a resource to a lease.
pub fn add_resource(store: &Store, ns: &str, id: &str, r: Resource) -> Result<()> {
    check_kind(&r.kind)?;
    if r.id.is_empty() || r.id.len() > 1024 {
        return Err(Error::InvalidArgument(
            "lease resource id must be 1..1024 bytes".into(),
        ));
    }
    store.write(|tx| {
        let mut l: Lease = tx.get(LEASES, ns, id)?.ok_or_else(|| {
            Error::NotFound(format!("lease {id:?} not found in namespace {ns:?}"))
        })?;
        if !l.resources.contains(&r) {
            l.resources.push(r);
        }
        tx.put(LEASES, ns, id, &l)
    })
}

/// Reads one lease.
pub fn get(store: &Store, ns: &str, id: &str) -> Result<Lease> {
    store
        .get::<Lease>(LEASES, ns, id)?
        .ok_or_else(|| Error::NotFound(format!("lease {id:?} not found in namespace {ns:?}")))
}

/// Removes a resource from a lease (absent: nothing to do).
pub fn delete_resource(store: &Store, ns: &str, id: &str, r: &Resource) -> Result<()> {
    store.write(|tx| {
        let mut l: Lease = tx.get(LEASES, ns, id)?.ok_or_else(|| {
            Error::NotFound(format!("lease {id:?} not found in namespace {ns:?}"))
        })?;
        l.resources.retain(|x| x != r);
        tx.put(LEASES, ns, id, &l)
    })
}

/// A lease that is deleted when dropped: used by pulls, unpacks and container creation so
/// a GC racing them keeps what they build.
pub struct TempLease<'a> {
    store: &'a Store,
    pub ns: String,
    pub id: String,
}

impl<'a> TempLease<'a> {
    /// Takes a lease that expires after an hour even if nookd dies before dropping it.
    pub fn new(store: &'a Store, ns: &str, purpose: &str) -> Result<TempLease<'a>> {
        let mut labels = BTreeMap::new();
        labels.insert("nook.purpose".to_string(), purpose.to_string());
        let l = create(store, ns, "", labels, 3600)?;
        Ok(TempLease {
            store,
            ns: ns.to_string(),
            id: l.id,
        })
    }

    /// Holds a resource.
    pub fn hold(&self, kind: &str, id: &str) -> Result<()> {
        add_resource(
            self.store,
            &self.ns,
            &self.id,
            Resource {
                kind: kind.into(),
                id: id.into(),
            },
        )
    }
}

impl Drop for TempLease<'_> {
    fn drop(&mut self) {
        let _ = delete(self.store, &self.ns, &self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("m.redb")).unwrap();
        let l = create(&s, "default", "pull-1", BTreeMap::new(), 0).unwrap();
        assert_eq!(l.expires_at, 0);
        assert!(create(&s, "default", "pull-1", BTreeMap::new(), 0).is_err());
        add_resource(
            &s,
            "default",
            "pull-1",
            Resource {
                kind: "content".into(),
                id: "sha256:ab".into(),
            },
        )
        .unwrap();
        assert!(add_resource(
            &s,
            "default",
            "pull-1",
            Resource {
                kind: "bogus".into(),
                id: "x".into()
            }
        )
        .is_err());
        assert_eq!(list(&s, "default").unwrap()[0].resources.len(), 1);
        let e = create(&s, "default", "", BTreeMap::new(), 60).unwrap();
        assert!(e.expires_at > chrono::Utc::now().timestamp());
        assert!(e.labels.contains_key(EXPIRE_LABEL));
        assert!(!e.expired(chrono::Utc::now().timestamp()));
        assert!(e.expired(e.expires_at));
        delete(&s, "default", "pull-1").unwrap();
        assert!(matches!(
            delete(&s, "default", "pull-1"),
            Err(Error::NotFound(_))
        ));
        {
            let t = TempLease::new(&s, "default", "test").unwrap();
            t.hold("snapshots/overlayfs", "k").unwrap();
            assert_eq!(list(&s, "default").unwrap().len(), 2);
        }
        assert_eq!(list(&s, "default").unwrap().len(), 1);
    }
}
