//! The Volumes service: thin translation onto [`crate::services::Volumes`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{blocking, namespace};
use crate::daemon::Daemon;
use crate::proto::volumes as pb;
use crate::services::volumes::{PruneFilter, VolumeInfo};

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> pb::volumes_server::VolumesServer<Svc> {
    pb::volumes_server::VolumesServer::new(Svc(d)).max_decoding_message_size(super::MAX_MESSAGE)
}

fn to_pb(i: VolumeInfo, size: Option<u64>) -> pb::Volume {
    let r = i.volume.record;
    pb::Volume {
        name: r.name,
        driver: r.driver,
        labels: r.labels.into_iter().collect(),
        created_at: r.created_at,
        mountpoint: i.volume.mountpoint.display().to_string(),
        anonymous: r.anonymous,
        containers: i.users,
        size: size.map_or(-1, |s| s as i64),
    }
}

#[tonic::async_trait]
impl pb::volumes_server::Volumes for Svc {
    async fn create(
        &self,
        r: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        super::check_labels(&q.labels)?;
        let v = self
            .0
            .volumes
            .create(
                &ns,
                crate::volumes::CreateRequest {
                    name: q.name,
                    driver: q.driver,
                    options: q.options.into_iter().collect(),
                    labels: q.labels.into_iter().collect(),
                    anonymous: false,
                },
            )
            .await?;
        let d = self.0.clone();
        let name = v.record.name.clone();
        let i = blocking(move || d.volumes.inspect(&ns, &name)).await?;
        Ok(Response::new(to_pb(i, None)))
    }

    async fn list(
        &self,
        r: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let ns = namespace(&r)?;
        let with_size = r.into_inner().size;
        let d = self.0.clone();
        let v = blocking(move || {
            let l = d.volumes.list(&ns)?;
            Ok(l.into_iter()
                .map(|i| {
                    let size =
                        with_size.then(|| d.volumes.volumes().size(&ns, &i.volume.record.name));
                    to_pb(i, size)
                })
                .collect())
        })
        .await?;
        Ok(Response::new(pb::ListVolumesResponse { volumes: v }))
    }

    async fn inspect(
        &self,
        r: Request<pb::InspectVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let ns = namespace(&r)?;
        let name = r.into_inner().name;
        let d = self.0.clone();
        let v = blocking(move || {
            let i = d.volumes.inspect(&ns, &name)?;
            let size = d.volumes.volumes().size(&ns, &name);
            Ok(to_pb(i, Some(size)))
        })
        .await?;
        Ok(Response::new(v))
    }

    async fn remove(
        &self,
        r: Request<pb::RemoveVolumeRequest>,
    ) -> Result<Response<pb::RemoveVolumeResponse>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        self.0.volumes.remove(&ns, &q.name, q.force).await?;
        Ok(Response::new(pb::RemoveVolumeResponse {}))
    }

    async fn prune(
        &self,
        r: Request<pb::PruneVolumesRequest>,
    ) -> Result<Response<pb::PruneVolumesResponse>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let p = self
            .0
            .volumes
            .prune(
                &ns,
                &PruneFilter {
                    all: q.all,
                    labels: q.labels,
                    not_labels: q.not_labels,
                },
            )
            .await?;
        Ok(Response::new(pb::PruneVolumesResponse {
            removed: p.removed,
            reclaimed_bytes: p.reclaimed_bytes,
        }))
    }
}
