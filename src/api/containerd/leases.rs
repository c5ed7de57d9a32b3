//! containerd's Leases service, on [`crate::leases`].

use std::sync::Arc;

use containerd_client::services::v1 as cd;
use tonic::{Request, Response, Status};

use super::server::leases_server::{Leases, LeasesServer};
use super::{namespace, ts};
use crate::api::blocking;
use crate::daemon::Daemon;
use crate::leases as lease;

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> LeasesServer<Svc> {
    LeasesServer::new(Svc(d)).max_decoding_message_size(crate::api::MAX_MESSAGE)
}

fn to_cd(l: lease::Lease) -> cd::Lease {
    cd::Lease {
        id: l.id,
        created_at: ts(l.created_at),
        labels: l.labels.into_iter().collect(),
    }
}

fn resource(r: Option<cd::Resource>) -> Result<lease::Resource, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("resource is required"))?;
    Ok(lease::Resource {
        kind: r.r#type,
        id: r.id,
    })
}

#[tonic::async_trait]
impl Leases for Svc {
    async fn create(
        &self,
        r: Request<cd::CreateRequest>,
    ) -> Result<Response<cd::CreateResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let labels = super::labels(r.labels)?;
        let d = self.0.clone();
        let l = blocking(move || {
            crate::metadata::namespaces::ensure(&d.store, &d.events, &ns)?;
            lease::create(&d.store, &ns, &r.id, labels, 0)
        })
        .await?;
        Ok(Response::new(cd::CreateResponse {
            lease: Some(to_cd(l)),
        }))
    }

    async fn delete(&self, r: Request<cd::DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let id = r.into_inner().id;
        let d = self.0.clone();
        blocking(move || lease::delete(&d.store, &ns, &id)).await?;
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        r: Request<cd::ListRequest>,
    ) -> Result<Response<cd::ListResponse>, Status> {
        let ns = namespace(&r)?;
        let f = super::filters::Filters::parse(&r.into_inner().filters)?;
        let d = self.0.clone();
        let v = blocking(move || lease::list(&d.store, &ns)).await?;
        Ok(Response::new(cd::ListResponse {
            leases: v
                .into_iter()
                .filter(|l| {
                    f.matches(|p| match p {
                        [x] if x == "id" => Some(l.id.clone()),
                        _ => super::filters::label(&l.labels, p),
                    })
                })
                .map(to_cd)
                .collect(),
        }))
    }

    async fn add_resource(
        &self,
        r: Request<cd::AddResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let res = resource(r.resource)?;
        let d = self.0.clone();
        blocking(move || lease::add_resource(&d.store, &ns, &r.id, res)).await?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        r: Request<cd::DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let res = resource(r.resource)?;
        let d = self.0.clone();
        blocking(move || lease::delete_resource(&d.store, &ns, &r.id, &res)).await?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        r: Request<cd::ListResourcesRequest>,
    ) -> Result<Response<cd::ListResourcesResponse>, Status> {
        let ns = namespace(&r)?;
        let id = r.into_inner().id;
        let d = self.0.clone();
        let l = blocking(move || lease::get(&d.store, &ns, &id)).await?;
        Ok(Response::new(cd::ListResourcesResponse {
            resources: l
                .resources
                .into_iter()
                .map(|r| cd::Resource {
                    id: r.id,
                    r#type: r.kind,
                })
                .collect(),
        }))
    }
}
