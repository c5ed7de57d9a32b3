//! The Leases service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{blocking, namespace};
use crate::daemon::Daemon;
use crate::leases as lease;
use crate::proto::leases as pb;

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> pb::leases_server::LeasesServer<Svc> {
    pb::leases_server::LeasesServer::new(Svc(d)).max_decoding_message_size(super::MAX_MESSAGE)
}

fn to_pb(l: lease::Lease) -> pb::Lease {
    pb::Lease {
        id: l.id,
        labels: l.labels.into_iter().collect(),
        created_at: l.created_at,
        expires_at: l.expires_at,
        resources: l
            .resources
            .into_iter()
            .map(|r| pb::Resource {
                kind: r.kind,
                id: r.id,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::leases_server::Leases for Svc {
    async fn create(
        &self,
        r: Request<pb::CreateLeaseRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        super::check_labels(&r.labels)?;
        let d = self.0.clone();
        let l = blocking(move || {
            d.store.require_namespace(&ns)?;
            lease::create(
                &d.store,
                &ns,
                &r.id,
                r.labels.into_iter().collect(),
                r.expire_seconds,
            )
        })
        .await?;
        Ok(Response::new(to_pb(l)))
    }

    async fn list(
        &self,
        r: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        let ns = namespace(&r)?;
        let d = self.0.clone();
        let v = blocking(move || lease::list(&d.store, &ns)).await?;
        Ok(Response::new(pb::ListLeasesResponse {
            leases: v.into_iter().map(to_pb).collect(),
        }))
    }

    async fn delete(
        &self,
        r: Request<pb::DeleteLeaseRequest>,
    ) -> Result<Response<pb::DeleteLeaseResponse>, Status> {
        let ns = namespace(&r)?;
        let id = r.into_inner().id;
        let d = self.0.clone();
        blocking(move || lease::delete(&d.store, &ns, &id)).await?;
        Ok(Response::new(pb::DeleteLeaseResponse {}))
    }

    async fn add_resource(
        &self,
        r: Request<pb::AddResourceRequest>,
    ) -> Result<Response<pb::AddResourceResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let res = r
            .resource
            .ok_or_else(|| Status::invalid_argument("resource is required"))?;
        let d = self.0.clone();
        blocking(move || {
            lease::add_resource(
                &d.store,
                &ns,
                &r.id,
                lease::Resource {
                    kind: res.kind,
                    id: res.id,
                },
            )
        })
        .await?;
        Ok(Response::new(pb::AddResourceResponse {}))
    }
}
