//! Starting each subsystem before the API socket opens: report the snapshotters in the plugin
//! registry, set the network up and clean after containers that are gone, and recover the
//! containers' bookkeeping (`--rm`, restart policies) from what ran while nookd was away.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Daemon;
use crate::plugins;

/// Starts each subsystem (probes, recovery) before the socket opens.
pub async fn init_subsystems(d: &Arc<Daemon>) {
    init_snapshotters(d).await;
    init_network(d).await;
    init_containers(d).await;
}

/// Reports each snapshotter (probed at daemon start) in the plugin registry.
pub async fn init_snapshotters(d: &Arc<Daemon>) {
    let s = &d.snapshotters;
    for st in s.status() {
        let mut ex = BTreeMap::new();
        ex.insert(
            "root".to_string(),
            d.paths
                .root
                .join("snapshots")
                .join(&st.name)
                .display()
                .to_string(),
        );
        if st.name == s.default_name() {
            ex.insert("default".to_string(), "true".to_string());
        }
        let r = match &st.error {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        };
        if st.name == s.default_name() && r.is_err() {
            d.plugins.set_with(plugins::SNAPSHOTTER, &st.name, r, ex);
            d.plugins.error(
                plugins::SNAPSHOTTER,
                &st.name,
                format!(
                    "configured as the default snapshotter but unusable: {}",
                    st.error.clone().unwrap_or_default()
                ),
            );
            continue;
        }
        d.plugins.set_with(plugins::SNAPSHOTTER, &st.name, r, ex);
    }
    tracing::info!(default = s.default_name(), "snapshotters ready");
}

/// Sets the network subsystem up at start: bridges, NAT, and the clean-up of what containers
/// that no longer exist left behind. A failure is reported in `nook plugins ls`.
pub async fn init_network(d: &Arc<Daemon>) {
    let d2 = d.clone();
    let res = tokio::task::spawn_blocking(move || {
        d2.network.init()?;
        let store = d2.store.clone();
        let state = d2.paths.state.clone();
        d2.network.reconcile(|ns, id| {
            // a container is gone when its record is; it runs when its shim lives
            let exists = store
                .get::<serde_json::Value>(crate::metadata::CONTAINERS, ns, id)
                .ok()
                .flatten()
                .is_some();
            if exists {
                return Some(shim_alive(&state, ns, id));
            }
            // a pod's network: kept while its record is, relayed while its holder lives
            let pod = store
                .get::<serde_json::Value>(crate::metadata::PODS, ns, id)
                .ok()
                .flatten()?;
            Some(crate::services::pods::holder_alive(id, &pod))
        })
    })
    .await;
    let res = match res {
        Ok(r) => r,
        Err(e) => Err(crate::error::Error::Internal(e.to_string())),
    };
    match res {
        Ok(r) => {
            if r != Default::default() {
                tracing::info!(?r, "network: cleaned up after containers that are gone");
            }
            let mut ex = std::collections::BTreeMap::new();
            ex.insert("bridge".into(), d.config.network.bridge.clone());
            ex.insert("subnet".into(), d.config.network.subnet.clone());
            ex.insert(
                "source_address".into(),
                if d.network.transparent() {
                    "preserved (TCP)".into()
                } else {
                    "gateway".into()
                },
            );
            d.plugins
                .set_with(crate::plugins::NETWORK, "bridge", Ok(()), ex);
        }
        Err(e) => {
            tracing::error!("network: {e}");
            d.plugins
                .error(crate::plugins::NETWORK, "bridge", e.to_string());
        }
    }
}

/// Whether the shim of task `ns/id` is alive (`<state>/tasks/<ns>/<id>/shim.pid`).
pub fn shim_alive(state: &std::path::Path, ns: &str, id: &str) -> bool {
    std::fs::read_to_string(state.join("tasks").join(ns).join(id).join("shim.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Starts the subsystem: `--rm` bookkeeping of containers that ran while nookd was away.
pub async fn init_containers(d: &Arc<Daemon>) {
    match d.containers() {
        Ok(m) => m.recover().await,
        Err(e) => tracing::error!("containers: {e}"),
    }
    if let Ok(p) = d.pods() {
        p.recover().await;
    }
}
