//! containerd's Introspection service: nook's plugin registry in containerd's shape and type
//! names (`io.containerd.snapshotter.v1` / `overlayfs`), with nook's own init errors.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use containerd_client::google::rpc::Status as RpcStatus;
use containerd_client::services::v1 as cd;
use tonic::{Request, Response, Status};

use super::server::introspection_server::{Introspection, IntrospectionServer};
use crate::api::blocking;
use crate::daemon::Daemon;
use crate::metadata::SYSTEM;
use crate::plugins;

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> IntrospectionServer<Svc> {
    IntrospectionServer::new(Svc(d)).max_decoding_message_size(crate::api::MAX_MESSAGE)
}

/// The containerd gRPC services this door serves (listed as `io.containerd.grpc.v1` plugins).
const SERVED: &[&str] = &[
    "version",
    "namespaces",
    "introspection",
    "content",
    "images",
    "leases",
    "snapshots",
    "diff",
    "containers",
    "tasks",
    "events",
];

/// containerd's type name for a nook plugin type.
fn cd_type(kind: &str) -> String {
    match kind {
        plugins::RUNTIME => "io.containerd.runtime.v2".into(),
        k => match k.strip_prefix("nook.") {
            Some(rest) => format!("io.containerd.{rest}"),
            None => k.to_string(),
        },
    }
}

/// containerd's form of a plugin: a skipped one carries an init error containing
/// "skip plugin" (how ctr tells skip from error).
fn to_cd(p: plugins::Plugin) -> cd::Plugin {
    let init_err = match p.status {
        plugins::Status::Ok => None,
        plugins::Status::Skip => Some(RpcStatus {
            code: tonic::Code::FailedPrecondition as i32,
            message: format!("skip plugin: {}", p.reason),
            details: vec![],
        }),
        plugins::Status::Error => Some(RpcStatus {
            code: tonic::Code::Unknown as i32,
            message: p.reason,
            details: vec![],
        }),
    };
    cd::Plugin {
        r#type: cd_type(&p.kind),
        id: p.id,
        requires: vec![],
        platforms: vec![],
        exports: p.exports.into_iter().collect(),
        capabilities: vec![],
        init_err,
    }
}

impl Svc {
    fn plugins(&self) -> Vec<cd::Plugin> {
        let mut v: Vec<cd::Plugin> = self.0.plugins.list().into_iter().map(to_cd).collect();
        v.extend(SERVED.iter().map(|id| cd::Plugin {
            r#type: "io.containerd.grpc.v1".into(),
            id: id.to_string(),
            ..Default::default()
        }));
        v
    }
}

#[tonic::async_trait]
impl Introspection for Svc {
    async fn plugins(
        &self,
        r: Request<cd::PluginsRequest>,
    ) -> Result<Response<cd::PluginsResponse>, Status> {
        let f = super::filters::Filters::parse(&r.into_inner().filters)?;
        let plugins = self
            .plugins()
            .into_iter()
            .filter(|p| {
                f.matches(|path| match path {
                    [x] if x == "type" => Some(p.r#type.clone()),
                    [x] if x == "id" => Some(p.id.clone()),
                    _ => None,
                })
            })
            .collect();
        Ok(Response::new(cd::PluginsResponse { plugins }))
    }

    async fn server(&self, _r: Request<()>) -> Result<Response<cd::ServerResponse>, Status> {
        let d = self.0.clone();
        // a uuid for this nook root, made once (containerd keeps one per root too)
        let uuid = blocking(move || {
            d.store.write(|tx| {
                if let Some(u) = tx.get_raw::<String>(SYSTEM, "uuid")? {
                    return Ok(u);
                }
                let b: [u8; 16] = rand::random();
                let h = hex::encode(b);
                let u = format!(
                    "{}-{}-4{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[13..16],
                    &h[16..20],
                    &h[20..32]
                );
                tx.put_raw(SYSTEM, "uuid", &u)?;
                Ok(u)
            })
        })
        .await?;
        let pidns = std::fs::metadata("/proc/self/ns/pid")
            .map(|m| m.ino())
            .unwrap_or(0);
        Ok(Response::new(cd::ServerResponse {
            uuid,
            pid: std::process::id() as u64,
            pidns,
            deprecations: vec![],
        }))
    }

    async fn plugin_info(
        &self,
        r: Request<cd::PluginInfoRequest>,
    ) -> Result<Response<cd::PluginInfoResponse>, Status> {
        let r = r.into_inner();
        let p = self
            .plugins()
            .into_iter()
            .find(|p| p.r#type == r.r#type && p.id == r.id)
            .ok_or_else(|| Status::not_found(format!("plugin {}/{} not found", r.r#type, r.id)))?;
        Ok(Response::new(cd::PluginInfoResponse {
            plugin: Some(p),
            extra: None,
        }))
    }
}
