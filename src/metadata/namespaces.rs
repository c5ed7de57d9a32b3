//! Namespaces: create, update, remove and the implicit creation containerd's clients expect
//! (a namespace springs into being when something is first stored in it). Used by nook's own
//! API and by containerd's.

use std::collections::BTreeMap;

use super::{validate_namespace, Namespace, Store, NAMESPACES};
use crate::error::{Error, Result};
use crate::events::Publisher;

/// Creates namespace `name`; AlreadyExists if it is there.
pub fn create(
    store: &Store,
    events: &Publisher,
    name: &str,
    labels: BTreeMap<String, String>,
) -> Result<Namespace> {
    validate_namespace(name)?;
    let n = Namespace {
        name: name.to_string(),
        labels,
        created_at: chrono::Utc::now().timestamp(),
    };
    store.write(|tx| {
        if tx.get_raw::<Namespace>(NAMESPACES, &n.name)?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "namespace {:?} already exists",
                n.name
            )));
        }
        tx.put_raw(NAMESPACES, &n.name, &n)
    })?;
    events.publish(&n.name, "/namespaces/create", &[("name", n.name.clone())]);
    Ok(n)
}

/// Creates namespace `name` unless it exists (containerd creates a namespace on first use).
pub fn ensure(store: &Store, events: &Publisher, name: &str) -> Result<()> {
    validate_namespace(name)?;
    if store.get_raw::<Namespace>(NAMESPACES, name)?.is_some() {
        return Ok(());
    }
    match create(store, events, name, BTreeMap::new()) {
        Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Changes a namespace's labels: with `replace` the labels become `labels`; otherwise they are
/// merged in, an empty value removing a label.
pub fn update(
    store: &Store,
    events: &Publisher,
    name: &str,
    labels: BTreeMap<String, String>,
    replace: bool,
) -> Result<Namespace> {
    validate_namespace(name)?;
    let n = store.write(|tx| {
        let mut n: Namespace = tx
            .get_raw(NAMESPACES, name)?
            .ok_or_else(|| Error::NotFound(format!("namespace {name:?} does not exist")))?;
        if replace {
            n.labels.clear();
        }
        for (k, v) in labels {
            if v.is_empty() {
                n.labels.remove(&k);
            } else {
                n.labels.insert(k, v);
            }
        }
        tx.put_raw(NAMESPACES, name, &n)?;
        Ok(n)
    })?;
    events.publish(&n.name, "/namespaces/update", &[("name", n.name.clone())]);
    Ok(n)
}

/// Removes an empty namespace; FailedPrecondition naming what it still holds otherwise.
pub fn remove(store: &Store, events: &Publisher, name: &str) -> Result<()> {
    validate_namespace(name)?;
    store.write(|tx| {
        if tx.get_raw::<Namespace>(NAMESPACES, name)?.is_none() {
            return Err(Error::NotFound(format!("namespace {name:?} does not exist")));
        }
        if let Some(what) = tx.namespace_in_use(name)? {
            return Err(Error::Precondition(format!(
                "namespace {name:?} is not empty: it still holds {what}; remove them first (e.g. `nook -n {name} {what} ls`)"
            )));
        }
        tx.delete_raw(NAMESPACES, name)?;
        Ok(())
    })?;
    events.publish(name, "/namespaces/delete", &[("name", name.to_string())]);
    Ok(())
}
