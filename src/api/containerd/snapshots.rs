//! containerd's Snapshots service, on nook's snapshotters ([`crate::snapshot::Snapshotter`]).
//! What Prepare, View and Commit create is bound to the request's `containerd-lease`.

use std::pin::Pin;
use std::sync::Arc;

use containerd_client::services::v1::snapshots as cd;
use containerd_client::types::Mount as CdMount;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::server::snapshots_server::{Snapshots, SnapshotsServer};
use super::{namespace, ts};
use crate::api::blocking;
use crate::daemon::Daemon;
use crate::snapshot::{DirSnapshotter, Info, Kind, Mount, Snapshotter};

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> SnapshotsServer<Svc> {
    SnapshotsServer::new(Svc(d)).max_decoding_message_size(crate::api::MAX_MESSAGE)
}

impl Svc {
    fn sn(&self, name: &str) -> Result<Arc<DirSnapshotter>, Status> {
        Ok(self.0.snapshotters.get(Some(name))?)
    }
}

fn to_cd(i: Info) -> cd::Info {
    cd::Info {
        name: i.name,
        parent: i.parent.unwrap_or_default(),
        kind: match i.kind {
            Kind::View => cd::Kind::View,
            Kind::Active => cd::Kind::Active,
            Kind::Committed => cd::Kind::Committed,
        } as i32,
        created_at: ts(i.created_at.timestamp()),
        updated_at: ts(i.updated_at.timestamp()),
        labels: i.labels.into_iter().collect(),
    }
}

/// containerd's mounts of nook's.
pub fn mounts_cd(m: Vec<Mount>) -> Vec<CdMount> {
    m.into_iter()
        .map(|m| CdMount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        })
        .collect()
}

fn parent(p: &str) -> Option<String> {
    (!p.is_empty()).then(|| p.to_string())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for Svc {
    type ListStream = BoxStream<cd::ListSnapshotsResponse>;

    async fn prepare(
        &self,
        r: Request<cd::PrepareSnapshotRequest>,
    ) -> Result<Response<cd::PrepareSnapshotResponse>, Status> {
        let ns = namespace(&r)?;
        let lease = super::lease(&r);
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let l = super::labels(r.labels)?;
        let d = self.0.clone();
        let m = blocking(move || {
            crate::metadata::namespaces::ensure(&d.store, &d.events, &ns)?;
            let m = s.prepare(&ns, &r.key, parent(&r.parent).as_deref(), l)?;
            let kind = format!("snapshots/{}", s.name());
            super::hold(&d, &ns, lease.as_deref(), &kind, &r.key)?;
            Ok(m)
        })
        .await?;
        Ok(Response::new(cd::PrepareSnapshotResponse {
            mounts: mounts_cd(m),
        }))
    }

    async fn view(
        &self,
        r: Request<cd::ViewSnapshotRequest>,
    ) -> Result<Response<cd::ViewSnapshotResponse>, Status> {
        let ns = namespace(&r)?;
        let lease = super::lease(&r);
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let l = super::labels(r.labels)?;
        let d = self.0.clone();
        let m = blocking(move || {
            crate::metadata::namespaces::ensure(&d.store, &d.events, &ns)?;
            let m = s.view(&ns, &r.key, parent(&r.parent).as_deref(), l)?;
            let kind = format!("snapshots/{}", s.name());
            super::hold(&d, &ns, lease.as_deref(), &kind, &r.key)?;
            Ok(m)
        })
        .await?;
        Ok(Response::new(cd::ViewSnapshotResponse {
            mounts: mounts_cd(m),
        }))
    }

    async fn mounts(
        &self,
        r: Request<cd::MountsRequest>,
    ) -> Result<Response<cd::MountsResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let m = blocking(move || s.mounts(&ns, &r.key)).await?;
        Ok(Response::new(cd::MountsResponse {
            mounts: mounts_cd(m),
        }))
    }

    async fn commit(&self, r: Request<cd::CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let lease = super::lease(&r);
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let l = super::labels(r.labels)?;
        let d = self.0.clone();
        blocking(move || {
            s.commit(&ns, &r.name, &r.key, l)?;
            let kind = format!("snapshots/{}", s.name());
            super::hold(&d, &ns, lease.as_deref(), &kind, &r.name)
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn remove(&self, r: Request<cd::RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        blocking(move || s.remove(&ns, &r.key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        r: Request<cd::StatSnapshotRequest>,
    ) -> Result<Response<cd::StatSnapshotResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let i = blocking(move || s.stat(&ns, &r.key)).await?;
        Ok(Response::new(cd::StatSnapshotResponse {
            info: Some(to_cd(i)),
        }))
    }

    async fn update(
        &self,
        r: Request<cd::UpdateSnapshotRequest>,
    ) -> Result<Response<cd::UpdateSnapshotResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("info is required"))?;
        let cur = {
            let (s, ns, key) = (s.clone(), ns.clone(), info.name.clone());
            blocking(move || s.stat(&ns, &key)).await?
        };
        let changes = super::label_changes(&cur.labels, &info.labels, r.update_mask.as_ref())?;
        let mut labels = cur.labels;
        for (k, v) in changes {
            if v.is_empty() {
                labels.remove(&k);
            } else {
                labels.insert(k, v);
            }
        }
        let i = blocking(move || s.update(&ns, &info.name, labels)).await?;
        Ok(Response::new(cd::UpdateSnapshotResponse {
            info: Some(to_cd(i)),
        }))
    }

    async fn list(
        &self,
        r: Request<cd::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let f = super::filters::Filters::parse(&r.filters)?;
        let v = blocking(move || s.walk(&ns)).await?;
        let items: Vec<cd::Info> = v
            .into_iter()
            .filter(|i| {
                f.matches(|p| match p {
                    [x] if x == "name" => Some(i.name.clone()),
                    [x] if x == "parent" => i.parent.clone(),
                    [x] if x == "kind" => Some(i.kind.to_string()),
                    _ => super::filters::label(&i.labels, p),
                })
            })
            .map(to_cd)
            .collect();
        let chunks: Vec<Result<cd::ListSnapshotsResponse, Status>> = items
            .chunks(100)
            .map(|c| Ok(cd::ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn usage(
        &self,
        r: Request<cd::UsageRequest>,
    ) -> Result<Response<cd::UsageResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        let u = blocking(move || s.usage(&ns, &r.key)).await?;
        Ok(Response::new(cd::UsageResponse {
            size: u.size as i64,
            inodes: u.inodes as i64,
        }))
    }

    async fn cleanup(&self, r: Request<cd::CleanupRequest>) -> Result<Response<()>, Status> {
        let r = r.into_inner();
        let s = self.sn(&r.snapshotter)?;
        blocking(move || s.cleanup().map(|_| ())).await?;
        Ok(Response::new(()))
    }
}
