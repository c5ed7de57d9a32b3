//! containerd's Namespaces service, on [`crate::metadata::namespaces`].

use std::sync::Arc;

use containerd_client::services::v1 as cd;
use tonic::{Request, Response, Status};

use super::server::namespaces_server::{Namespaces, NamespacesServer};
use crate::api::blocking;
use crate::daemon::Daemon;
use crate::error::Error;
use crate::metadata::{namespaces, Namespace, NAMESPACES};

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> NamespacesServer<Svc> {
    NamespacesServer::new(Svc(d)).max_decoding_message_size(crate::api::MAX_MESSAGE)
}

fn to_cd(n: Namespace) -> cd::Namespace {
    cd::Namespace {
        name: n.name,
        labels: n.labels.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl Namespaces for Svc {
    async fn get(
        &self,
        r: Request<cd::GetNamespaceRequest>,
    ) -> Result<Response<cd::GetNamespaceResponse>, Status> {
        let name = r.into_inner().name;
        crate::metadata::validate_namespace(&name)?;
        let d = self.0.clone();
        let n = blocking(move || {
            d.store
                .get_raw::<Namespace>(NAMESPACES, &name)?
                .ok_or_else(|| Error::NotFound(format!("namespace {name:?} does not exist")))
        })
        .await?;
        Ok(Response::new(cd::GetNamespaceResponse {
            namespace: Some(to_cd(n)),
        }))
    }

    async fn list(
        &self,
        r: Request<cd::ListNamespacesRequest>,
    ) -> Result<Response<cd::ListNamespacesResponse>, Status> {
        let f = r.into_inner().filter;
        let f = super::filters::Filters::parse(&[f])?;
        let d = self.0.clone();
        let v = blocking(move || d.store.namespaces()).await?;
        Ok(Response::new(cd::ListNamespacesResponse {
            namespaces: v
                .into_iter()
                .filter(|n| {
                    f.matches(|p| match p {
                        [x] if x == "name" => Some(n.name.clone()),
                        _ => super::filters::label(&n.labels, p),
                    })
                })
                .map(to_cd)
                .collect(),
        }))
    }

    async fn create(
        &self,
        r: Request<cd::CreateNamespaceRequest>,
    ) -> Result<Response<cd::CreateNamespaceResponse>, Status> {
        let n = r
            .into_inner()
            .namespace
            .ok_or_else(|| Status::invalid_argument("namespace is required"))?;
        let labels = super::labels(n.labels)?;
        let d = self.0.clone();
        let n = blocking(move || namespaces::create(&d.store, &d.events, &n.name, labels)).await?;
        Ok(Response::new(cd::CreateNamespaceResponse {
            namespace: Some(to_cd(n)),
        }))
    }

    async fn update(
        &self,
        r: Request<cd::UpdateNamespaceRequest>,
    ) -> Result<Response<cd::UpdateNamespaceResponse>, Status> {
        let r = r.into_inner();
        let n = r
            .namespace
            .ok_or_else(|| Status::invalid_argument("namespace is required"))?;
        crate::metadata::validate_namespace(&n.name)?;
        let d = self.0.clone();
        let current = {
            let (d, name) = (d.clone(), n.name.clone());
            blocking(move || {
                d.store
                    .get_raw::<Namespace>(NAMESPACES, &name)?
                    .ok_or_else(|| Error::NotFound(format!("namespace {name:?} does not exist")))
            })
            .await?
        };
        let changes = super::label_changes(&current.labels, &n.labels, r.update_mask.as_ref())?;
        let n = blocking(move || namespaces::update(&d.store, &d.events, &n.name, changes, false))
            .await?;
        Ok(Response::new(cd::UpdateNamespaceResponse {
            namespace: Some(to_cd(n)),
        }))
    }

    async fn delete(&self, r: Request<cd::DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        let name = r.into_inner().name;
        let d = self.0.clone();
        blocking(move || namespaces::remove(&d.store, &d.events, &name)).await?;
        Ok(Response::new(()))
    }
}
