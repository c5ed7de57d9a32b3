//! The Snapshots service: a thin translation onto [`crate::snapshot::Snapshotter`], plus
//! unpacking layer files (used by `nook snapshots unpack` and the unpack benchmark).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{blocking, namespace};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::proto::snapshots as pb;
use crate::snapshot::{DirSnapshotter, Info, Snapshotter};

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> pb::snapshots_server::SnapshotsServer<Svc> {
    pb::snapshots_server::SnapshotsServer::new(Svc(d)).max_decoding_message_size(super::MAX_MESSAGE)
}

impl Svc {
    fn sn(&self, name: &str) -> Result<Arc<DirSnapshotter>, Status> {
        Ok(self.0.snapshotters.get(Some(name))?)
    }
}

fn to_pb(i: Info, snapshotter: &str) -> pb::Info {
    pb::Info {
        name: i.name,
        parent: i.parent.unwrap_or_default(),
        kind: i.kind.to_string(),
        labels: i.labels.into_iter().collect(),
        created_at: i.created_at.timestamp(),
        updated_at: i.updated_at.timestamp(),
        snapshotter: snapshotter.to_string(),
    }
}

fn mounts_pb(m: Vec<crate::snapshot::Mount>, snapshotter: &str) -> pb::MountsResponse {
    pb::MountsResponse {
        mounts: m
            .into_iter()
            .map(|m| pb::Mount {
                r#type: m.kind,
                source: m.source,
                options: m.options,
            })
            .collect(),
        snapshotter: snapshotter.to_string(),
    }
}

fn labels(l: HashMap<String, String>) -> Result<BTreeMap<String, String>, Error> {
    super::check_labels(&l)?;
    Ok(l.into_iter().collect())
}

fn parent(p: &str) -> Option<String> {
    (!p.is_empty()).then(|| p.to_string())
}

#[tonic::async_trait]
impl pb::snapshots_server::Snapshots for Svc {
    async fn prepare(
        &self,
        r: Request<pb::PrepareRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let l = labels(r.labels)?;
        let name = s.name().to_string();
        let m = blocking(move || s.prepare(&ns, &r.key, parent(&r.parent).as_deref(), l)).await?;
        Ok(Response::new(mounts_pb(m, &name)))
    }

    async fn view(
        &self,
        r: Request<pb::PrepareRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let l = labels(r.labels)?;
        let name = s.name().to_string();
        let m = blocking(move || s.view(&ns, &r.key, parent(&r.parent).as_deref(), l)).await?;
        Ok(Response::new(mounts_pb(m, &name)))
    }

    async fn mounts(
        &self,
        r: Request<pb::KeyRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let name = s.name().to_string();
        let m = blocking(move || s.mounts(&ns, &r.key)).await?;
        Ok(Response::new(mounts_pb(m, &name)))
    }

    async fn commit(
        &self,
        r: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let l = labels(r.labels)?;
        blocking(move || s.commit(&ns, &r.name, &r.key, l)).await?;
        Ok(Response::new(pb::CommitResponse {}))
    }

    async fn remove(
        &self,
        r: Request<pb::KeyRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        blocking(move || s.remove(&ns, &r.key)).await?;
        Ok(Response::new(pb::RemoveResponse {}))
    }

    async fn stat(&self, r: Request<pb::KeyRequest>) -> Result<Response<pb::Info>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let name = s.name().to_string();
        let i = blocking(move || s.stat(&ns, &r.key)).await?;
        Ok(Response::new(to_pb(i, &name)))
    }

    async fn update(&self, r: Request<pb::UpdateRequest>) -> Result<Response<pb::Info>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let l = labels(r.labels)?;
        let name = s.name().to_string();
        let i = blocking(move || s.update(&ns, &r.key, l)).await?;
        Ok(Response::new(to_pb(i, &name)))
    }

    async fn list(
        &self,
        r: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let name = s.name().to_string();
        let v = blocking(move || s.walk(&ns)).await?;
        Ok(Response::new(pb::ListResponse {
            snapshots: v.into_iter().map(|i| to_pb(i, &name)).collect(),
            snapshotter: name,
        }))
    }

    async fn usage(
        &self,
        r: Request<pb::KeyRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let u = blocking(move || s.usage(&ns, &r.key)).await?;
        Ok(Response::new(pb::UsageResponse {
            size: u.size as i64,
            inodes: u.inodes as i64,
        }))
    }

    async fn unpack(
        &self,
        r: Request<pb::UnpackRequest>,
    ) -> Result<Response<pb::UnpackResponse>, Status> {
        let ns = namespace(&r)?;
        self.0.store.require_namespace(&ns)?;
        let r = r.into_inner();
        if r.layers.is_empty() {
            return Err(Status::invalid_argument("no layers to unpack"));
        }
        let s = self.sn(&r.snapshotter)?;
        let name = s.name().to_string();
        let layers: Vec<crate::diff::Layer> = r
            .layers
            .into_iter()
            .map(|l| crate::diff::Layer {
                digest: l.path,
                media_type: l.media_type,
                diff_id: l.diff_id,
            })
            .collect();
        let st = blocking(move || {
            crate::diff::unpack(s.as_ref(), &ns, &layers, |path: &str| {
                let f = std::fs::File::open(path)
                    .map_err(|e| Error::io(format!("opening layer {path}"), e))?;
                Ok(Box::new(f) as Box<dyn std::io::Read + Send>)
            })
        })
        .await?;
        Ok(Response::new(pb::UnpackResponse {
            chain_id: st.chain_id,
            applied: st.applied as u32,
            reused: st.reused as u32,
            bytes: st.bytes,
            snapshotter: name,
        }))
    }
}
