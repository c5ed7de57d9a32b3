//! The volumes service: named volumes as every front door offers them (nook's `volume`
//! commands, the Docker API's `/volumes`): create, list, inspect, remove and prune over
//! [`crate::volumes::Volumes`], with the rule that a volume a container mounts is never
//! removed (checked in the transaction that deletes its record, so a container being created
//! with it cannot slip in between).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Pruned;
use crate::error::{Error, Result};
use crate::events::Publisher;
use crate::metadata::Store;
use crate::runtime::containers::blocking;
use crate::runtime::containers::{volume_users, ContainerRecord};
use crate::volumes::{CreateRequest, Volume, Volumes as Store2};

/// A volume with the containers that mount it.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub volume: Volume,
    /// Names of the containers that mount it.
    pub users: Vec<String>,
}

/// What `prune` removes.
#[derive(Debug, Clone, Default)]
pub struct PruneFilter {
    /// Named volumes too (docker's `prune --all`); otherwise only anonymous ones.
    pub all: bool,
    /// `label=KEY` or `label=KEY=VALUE`: only volumes with each of these.
    pub labels: Vec<String>,
    /// `label!=...`: only volumes with none of these.
    pub not_labels: Vec<String>,
}

/// Whether `labels` satisfy a `KEY` or `KEY=VALUE` filter.
pub fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

/// Named volumes.
pub struct Volumes {
    store: Arc<Store>,
    volumes: Arc<Store2>,
    events: Publisher,
}

impl Volumes {
    pub fn new(store: Arc<Store>, volumes: Arc<Store2>, events: Publisher) -> Volumes {
        Volumes {
            store,
            volumes,
            events,
        }
    }

    /// The subsystem underneath.
    pub fn volumes(&self) -> &Arc<Store2> {
        &self.volumes
    }

    /// Creates a volume (or returns the one of that name); publishes `/volumes/create` when
    /// it is new.
    pub async fn create(&self, ns: &str, req: CreateRequest) -> Result<Volume> {
        let (v, ns2) = (self.volumes.clone(), ns.to_string());
        let (vol, made) = blocking(move || v.create(&ns2, &req)).await?;
        if made {
            self.events.publish(
                ns,
                "/volumes/create",
                &[
                    ("name", vol.record.name.clone()),
                    ("driver", vol.record.driver.clone()),
                ],
            );
        }
        Ok(vol)
    }

    fn users_of(&self, ns: &str, name: &str) -> Result<Vec<String>> {
        Ok(self
            .store
            .list::<ContainerRecord>(crate::metadata::CONTAINERS, ns)?
            .into_iter()
            .filter(|(_, r)| r.volumes.iter().any(|m| m.name == name))
            .map(|(_, r)| r.name)
            .collect())
    }

    /// One volume and the containers using it.
    pub fn inspect(&self, ns: &str, name: &str) -> Result<VolumeInfo> {
        let volume = self.volumes.get(ns, name)?;
        let users = self.users_of(ns, name)?;
        Ok(VolumeInfo { volume, users })
    }

    /// Every volume of `ns` with its users.
    pub fn list(&self, ns: &str) -> Result<Vec<VolumeInfo>> {
        let vols = self.volumes.list(ns)?;
        let recs = self
            .store
            .list::<ContainerRecord>(crate::metadata::CONTAINERS, ns)?;
        Ok(vols
            .into_iter()
            .map(|volume| {
                let users = recs
                    .iter()
                    .filter(|(_, r)| r.volumes.iter().any(|m| m.name == volume.record.name))
                    .map(|(_, r)| r.name.clone())
                    .collect();
                VolumeInfo { volume, users }
            })
            .collect())
    }

    /// Removes a volume no container uses; one in use is refused, naming the containers.
    /// With `force`, a volume that does not exist is no error (docker's `volume rm -f`).
    pub async fn remove(&self, ns: &str, name: &str, force: bool) -> Result<()> {
        let (store, ns2, name2) = (self.store.clone(), ns.to_string(), name.to_string());
        let res = blocking(move || {
            store.write(|tx| {
                let users = volume_users(tx, &ns2, &name2)?;
                if !users.is_empty() {
                    return Err(Error::Precondition(format!(
                        "volume {name2:?} is in use by container {}: remove {} first (`nook rm {}`)",
                        users.join(", "),
                        if users.len() == 1 { "it" } else { "them" },
                        users.join(" ")
                    )));
                }
                if !Store2::delete_record(tx, &ns2, &name2)? {
                    return Err(Error::NotFound(format!(
                        "no such volume {name2:?} in namespace {ns2:?} (see `nook volume ls`)"
                    )));
                }
                Ok(())
            })
        })
        .await;
        match res {
            Ok(()) => {}
            Err(Error::NotFound(_)) if force => return Ok(()),
            Err(e) => return Err(e),
        }
        let (v, ns2, name2) = (self.volumes.clone(), ns.to_string(), name.to_string());
        blocking(move || v.remove_data(&ns2, &name2)).await?;
        self.events
            .publish(ns, "/volumes/delete", &[("name", name.to_string())]);
        Ok(())
    }

    /// Removes the volumes no container uses (anonymous ones only unless `f.all`) that pass
    /// the label filters; reports them and the bytes freed.
    pub async fn prune(&self, ns: &str, f: &PruneFilter) -> Result<Pruned<String>> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for info in self.list(ns)? {
            let r = &info.volume.record;
            if !info.users.is_empty() || (!f.all && !r.anonymous) {
                continue;
            }
            if !f.labels.iter().all(|l| label_matches(&r.labels, l))
                || f.not_labels.iter().any(|l| label_matches(&r.labels, l))
            {
                continue;
            }
            let size = self.volumes.size(ns, &r.name);
            match self.remove(ns, &r.name, false).await {
                Ok(()) => {
                    bytes += size;
                    removed.push(r.name.clone());
                }
                // taken by a container meanwhile, or removed by someone else
                Err(Error::Precondition(_)) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Pruned {
            removed,
            reclaimed_bytes: bytes,
        })
    }

    /// The bytes each volume of `ns` takes (`system df`), by name.
    pub async fn sizes(&self, ns: &str) -> Result<BTreeMap<String, u64>> {
        let (v, ns2) = (self.volumes.clone(), ns.to_string());
        blocking(move || {
            Ok(v.list(&ns2)?
                .into_iter()
                .map(|x| {
                    let s = v.size(&ns2, &x.record.name);
                    (x.record.name, s)
                })
                .collect())
        })
        .await
    }
}
