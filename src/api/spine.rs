//! Version, Namespaces and Introspection services.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use crate::daemon::Daemon;
use crate::metadata::{namespaces, Namespace};
use crate::proto::v1 as pb;

pub struct Svc(Arc<Daemon>);

pub fn version(d: Arc<Daemon>) -> pb::version_server::VersionServer<Svc> {
    pb::version_server::VersionServer::new(Svc(d)).max_decoding_message_size(super::MAX_MESSAGE)
}
pub fn namespaces(d: Arc<Daemon>) -> pb::namespaces_server::NamespacesServer<Svc> {
    pb::namespaces_server::NamespacesServer::new(Svc(d))
        .max_decoding_message_size(super::MAX_MESSAGE)
}
pub fn introspection(d: Arc<Daemon>) -> pb::introspection_server::IntrospectionServer<Svc> {
    pb::introspection_server::IntrospectionServer::new(Svc(d))
        .max_decoding_message_size(super::MAX_MESSAGE)
}

#[tonic::async_trait]
impl pb::version_server::Version for Svc {
    async fn version(
        &self,
        _r: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: crate::VERSION.into(),
            revision: option_env!("NOOK_REVISION").unwrap_or("").into(),
            pid: std::process::id(),
            api: "nook.v1".into(),
        }))
    }
}

fn to_pb(n: Namespace) -> pb::Namespace {
    pb::Namespace {
        name: n.name,
        labels: n.labels.into_iter().collect(),
        created_at: n.created_at,
    }
}

use super::check_labels;

#[tonic::async_trait]
impl pb::namespaces_server::Namespaces for Svc {
    async fn list(
        &self,
        _r: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let d = self.0.clone();
        let v = blocking(move || d.store.namespaces()).await?;
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces: v.into_iter().map(to_pb).collect(),
        }))
    }

    async fn create(
        &self,
        r: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        let r = r.into_inner();
        check_labels(&r.labels)?;
        let d = self.0.clone();
        let n = blocking(move || {
            namespaces::create(&d.store, &d.events, &r.name, r.labels.into_iter().collect())
        })
        .await?;
        Ok(Response::new(to_pb(n)))
    }

    async fn remove(
        &self,
        r: Request<pb::RemoveNamespaceRequest>,
    ) -> Result<Response<pb::RemoveNamespaceResponse>, Status> {
        let name = r.into_inner().name;
        let d = self.0.clone();
        blocking(move || namespaces::remove(&d.store, &d.events, &name)).await?;
        Ok(Response::new(pb::RemoveNamespaceResponse {}))
    }

    async fn update(
        &self,
        r: Request<pb::UpdateNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        let r = r.into_inner();
        check_labels(&r.labels)?;
        let d = self.0.clone();
        let n = blocking(move || {
            namespaces::update(
                &d.store,
                &d.events,
                &r.name,
                r.labels.into_iter().collect(),
                false,
            )
        })
        .await?;
        Ok(Response::new(to_pb(n)))
    }
}

fn idmap(which: &str) -> Vec<pb::IdMap> {
    crate::bootstrap::read_id_map("self", which)
        .into_iter()
        .map(|(c, h, s)| pb::IdMap {
            container_id: c,
            host_id: h,
            size: s,
        })
        .collect()
}

/// Whether the machine runs cgroup v1, v2 or both.
pub fn cgroup_version() -> &'static str {
    crate::daemon::sysinfo::cgroup_version()
}

#[tonic::async_trait]
impl pb::introspection_server::Introspection for Svc {
    async fn plugins(
        &self,
        _r: Request<pb::PluginsRequest>,
    ) -> Result<Response<pb::PluginsResponse>, Status> {
        let plugins = self
            .0
            .plugins
            .list()
            .into_iter()
            .map(|p| pb::Plugin {
                r#type: p.kind,
                id: p.id,
                status: p.status.as_str().into(),
                reason: p.reason,
                exports: p.exports.into_iter().collect(),
            })
            .collect();
        Ok(Response::new(pb::PluginsResponse { plugins }))
    }

    async fn info(
        &self,
        _r: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let d = &self.0;
        let plugins = d.plugins.list();
        let snap = plugins
            .iter()
            .find(|p| p.kind == crate::plugins::SNAPSHOTTER && p.exports.contains_key("default"))
            .map(|p| p.id.clone())
            .unwrap_or_else(|| d.config.snapshotter.default.clone());
        // the link (slirp4netns/pasta) and the bridges on it: ok only when both are; else
        // the first that is not, with its reason
        let net = |id: &str| {
            plugins
                .iter()
                .find(|p| p.kind == crate::plugins::NETWORK && p.id == id)
        };
        let net_status = match (net("link"), net("bridge")) {
            (Some(l), Some(b)) if l.status.as_str() == "ok" && b.status.as_str() != "ok" => {
                format!("{}: bridge: {}", b.status.as_str(), b.reason)
            }
            (Some(p), _) | (None, Some(p)) => {
                if p.reason.is_empty() {
                    p.status.as_str().to_string()
                } else {
                    format!("{}: {}", p.status.as_str(), p.reason)
                }
            }
            (None, None) => String::new(),
        };
        let mut extra = BTreeMap::new();
        extra.insert("pause_pid".to_string(), d.pause_pid.to_string());
        extra.insert("netns".to_string(), d.netns_path());
        Ok(Response::new(pb::InfoResponse {
            version: crate::VERSION.into(),
            pid: std::process::id(),
            host_uid: d.host_uid,
            host_gid: d.host_gid,
            uid_map: idmap("uid_map"),
            gid_map: idmap("gid_map"),
            root: d.paths.root.display().to_string(),
            state: d.paths.state.display().to_string(),
            address: d.paths.address.display().to_string(),
            network_driver: d.network_driver(),
            network_status: net_status,
            default_snapshotter: snap,
            default_runtime: crate::runtime::plugin::default_name(&d.config),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().to_string())
                .unwrap_or_default(),
            cgroup_version: cgroup_version().into(),
            extra: extra.into_iter().collect(),
            uptime_seconds: d.started.elapsed().as_secs(),
            components: crate::daemon::sysinfo::components(d)
                .await
                .into_iter()
                .map(|c| pb::Component {
                    name: c.name,
                    path: c.path,
                    version: c.version,
                    version_line: c.version_line,
                    error: c.error,
                })
                .collect(),
            features: crate::daemon::sysinfo::features(d)
                .into_iter()
                .map(|f| pb::Feature {
                    name: f.name,
                    value: f.value,
                    detail: f.detail,
                })
                .collect(),
        }))
    }
}
