//! Start-up repairs after a crash (SIGKILL, power loss): whatever a killed nookd was in the
//! middle of is undone before the socket opens. Each multi-step operation is ordered so that
//! its half-done state is recognisable:
//!
//! * an unpack works in an active snapshot labelled `nook.io/unpack` and commits it under its
//!   chain ID only when complete — a leftover one is removed here;
//! * content is written into `content/ingest/` and renamed into place only after its digest
//!   checks — a pull's partial ingests stay and the next pull resumes them, an import's are
//!   dropped here (they are named per run);
//! * metadata changes are single redb transactions: all or nothing;
//! * temporary leases of a killed pull expire by themselves and are dropped here.

use crate::error::Result;
use crate::leases as lease;
use crate::snapshot::{Kind, Snapshotter};

use super::Daemon;

/// What recovery did.
#[derive(Debug, Default)]
pub struct Recovered {
    pub unpack_leftovers: usize,
    pub expired_leases: usize,
    pub dropped_ingests: usize,
}

/// Runs the start-up repairs.
pub fn recover(d: &Daemon) -> Result<Recovered> {
    let mut r = Recovered::default();
    let now = chrono::Utc::now().timestamp();
    // an import's ingests are named per run and can never be resumed: drop them
    for ing in d.content.ingests()? {
        if ing.reference.starts_with("import-") && d.content.abort(&ing.reference).is_ok() {
            r.dropped_ingests += 1;
        }
    }
    for ns in d.store.namespaces()? {
        let ns = ns.name;
        for st in d.snapshotters.status() {
            let Ok(sn) = d.snapshotters.get(Some(&st.name)) else {
                continue;
            };
            for info in sn.walk(&ns)? {
                let leftover = info.kind == Kind::Active
                    && info.labels.get("nook.io/unpack").map(String::as_str) == Some("true");
                if leftover {
                    match sn.remove(&ns, &info.name) {
                        Ok(()) => r.unpack_leftovers += 1,
                        Err(e) => tracing::warn!(ns, key = %info.name, "recovery: {e}"),
                    }
                }
            }
        }
        for l in lease::list(&d.store, &ns)? {
            let temp = l.labels.contains_key("nook.purpose");
            if l.expired(now) || temp {
                // temporary leases belonged to operations of a previous nookd: they are over
                if lease::delete(&d.store, &ns, &l.id).is_ok() {
                    r.expired_leases += 1;
                }
            }
        }
    }
    if r.unpack_leftovers + r.expired_leases + r.dropped_ingests > 0 {
        tracing::info!(
            unpack_leftovers = r.unpack_leftovers,
            ingests = r.dropped_ingests,
            leases = r.expired_leases,
            "recovered from an interrupted run"
        );
    }
    Ok(r)
}
