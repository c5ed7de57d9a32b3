//! Bridge networks as the user sees them: `nook network create / rm / ls / inspect`. Each
//! network is a record with its own subnets and address pool, and a bridge in the containers'
//! namespace; creating or removing one also rewrites the rules that keep networks apart.

use std::collections::{BTreeMap, HashSet};

use super::ipam::{self, Pool, Subnet, Subnet6};
use super::manager::*;
use crate::error::{Error, Result};
use crate::metadata::SYSTEM;

impl Manager {
    /// Lists the networks with their members.
    pub fn list(&self) -> Result<Vec<NetworkInfo>> {
        let atts = self.attachments()?;
        let mut out: Vec<NetworkInfo> = self
            .networks_raw()?
            .into_iter()
            .map(|record| {
                let members = atts
                    .iter()
                    .flat_map(|a| {
                        a.endpoints()
                            .into_iter()
                            .filter(|(n, _, _)| *n == record.name)
                            .map(|(_, ip, _)| {
                                (
                                    a.namespace.clone(),
                                    a.container_id.clone(),
                                    a.name.clone(),
                                    ip,
                                )
                            })
                    })
                    .collect();
                NetworkInfo {
                    default: record.name == DEFAULT_NETWORK,
                    record,
                    members,
                }
            })
            .collect();
        out.sort_by(|a, b| (!a.default, &a.record.name).cmp(&(!b.default, &b.record.name)));
        Ok(out)
    }

    /// One network by name.
    pub fn inspect(&self, name: &str) -> Result<NetworkInfo> {
        self.list()?
            .into_iter()
            .find(|n| n.record.name == name)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "network {name:?} not found (see `nook network ls`)"
                ))
            })
    }

    /// Creates a user network with its own bridge; `subnet` None picks a free 10.89.x.0/24.
    pub fn create(
        &self,
        name: &str,
        subnet: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<NetworkRecord> {
        validate_network_name(name)?;
        let _g = self.lock();
        let existing = self.networks_raw()?;
        if existing.iter().any(|n| n.name == name) {
            return Err(Error::AlreadyExists(format!(
                "network {name:?} already exists"
            )));
        }
        let taken: Vec<Subnet> = existing.iter().map(|n| n.subnet).collect();
        let subnet = match subnet {
            Some(s) if !s.is_empty() => {
                let s = Subnet::parse(s)?;
                if let Some(o) = existing.iter().find(|n| n.subnet.overlaps(&s)) {
                    return Err(Error::InvalidArgument(format!(
                        "subnet {s} overlaps network {:?} ({}): choose another --subnet",
                        o.name, o.subnet
                    )));
                }
                s
            }
            _ => ipam::pick_subnet(&taken)?,
        };
        let subnet6 = match self.s.subnet6.trim() {
            "" => None,
            base => {
                let base = Subnet6::parse(base)?;
                let taken6: HashSet<Subnet6> = existing.iter().filter_map(|n| n.subnet6).collect();
                (1..=u64::from(u16::MAX))
                    .map(|k| base.sibling(k))
                    .find(|s| !taken6.contains(s))
            }
        };
        let used: HashSet<&str> = existing.iter().map(|n| n.bridge.as_str()).collect();
        let bridge = (1..10000)
            .map(|i| format!("nook{i}"))
            .find(|b| !used.contains(b.as_str()))
            .ok_or_else(|| Error::Unavailable("no free bridge name".into()))?;
        let rec = NetworkRecord {
            name: name.into(),
            bridge,
            subnet,
            gateway: subnet.gateway(),
            subnet6,
            created_at: chrono::Utc::now().timestamp(),
            labels,
            pool: Pool::new(subnet),
        };
        self.store.write(|tx| {
            if tx
                .get_raw::<NetworkRecord>(SYSTEM, &net_key(name))?
                .is_some()
            {
                return Err(Error::AlreadyExists(format!(
                    "network {name:?} already exists"
                )));
            }
            tx.put_raw(SYSTEM, &net_key(name), &rec)
        })?;
        if let Err(e) = self.ensure_bridge(&rec).and_then(|()| self.isolate()) {
            let _ = self.store.write(|tx| tx.delete_raw(SYSTEM, &net_key(name)));
            let _ = self.kernel.delete_link(&self.s.netns, &rec.bridge);
            return Err(e);
        }
        let mut attrs = vec![
            ("name", name.to_string()),
            ("subnet", rec.subnet.to_string()),
        ];
        if let Some(s6) = &rec.subnet6 {
            attrs.push(("subnet6", s6.to_string()));
        }
        self.events.publish("", "/networks/create", &attrs);
        Ok(rec)
    }

    /// Removes a user network that no container uses.
    pub fn remove(&self, name: &str) -> Result<()> {
        if name == DEFAULT_NETWORK {
            return Err(Error::InvalidArgument(format!(
                "{DEFAULT_NETWORK:?} is the default network and cannot be removed"
            )));
        }
        let _g = self.lock();
        let info = self.inspect(name)?;
        if !info.members.is_empty() {
            let names: Vec<&str> = info.members.iter().map(|m| m.2.as_str()).collect();
            return Err(Error::Precondition(format!(
                "network {name:?} is used by {}: remove those containers first",
                names.join(", ")
            )));
        }
        match self.kernel.delete_link(&self.s.netns, &info.record.bridge) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(
                    format!("deleting bridge {}", info.record.bridge),
                    e,
                ))
            }
            _ => {}
        }
        self.store
            .write(|tx| tx.delete_raw(SYSTEM, &net_key(name)))?;
        if let Err(e) = self.isolate() {
            tracing::warn!("after removing network {name:?}: {e}");
        }
        self.events
            .publish("", "/networks/delete", &[("name", name.to_string())]);
        Ok(())
    }
}
