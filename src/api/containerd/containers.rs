//! containerd's Containers service, on nook's container records (the ones `nook ps -a`
//! shows): Get, List, ListStream, label Update and Delete. The record's OCI spec is given as
//! containerd's typed Any (JSON, `types.containerd.io/opencontainers/runtime-spec/1/Spec`).
//! Create records the client's spec, runtime, snapshot and extensions as given.

use std::pin::Pin;
use std::sync::Arc;

use containerd_client::services::v1 as cd;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::server::containers_server::{Containers, ContainersServer};
use super::{namespace, ts};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::runtime::containers::{ClientRecord, ContainerRecord, Manager};

/// The type URL containerd's Go client gives an OCI runtime spec (its value is JSON).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> ContainersServer<Svc> {
    ContainersServer::new(Svc(d))
        .max_decoding_message_size(crate::api::MAX_MESSAGE)
        .max_encoding_message_size(crate::api::MAX_MESSAGE)
}

/// containerd's container of a nook record.
pub fn to_cd(r: ContainerRecord) -> cd::Container {
    let mut labels: std::collections::HashMap<String, String> = r.labels.into_iter().collect();
    if r.name != r.id {
        labels.insert("nook/name".into(), r.name.clone());
    }
    cd::Container {
        id: r.id,
        labels,
        image: r.image,
        runtime: Some(match &r.client {
            Some(c) => cd::container::Runtime {
                name: c.runtime.clone(),
                options: c
                    .runtime_options
                    .clone()
                    .map(|(type_url, value)| prost_types::Any { type_url, value }),
            },
            None => cd::container::Runtime {
                name: r.runtime.clone(),
                options: None,
            },
        }),
        spec: Some(prost_types::Any {
            type_url: SPEC_TYPE_URL.into(),
            value: serde_json::to_vec(&r.spec).unwrap_or_default(),
        }),
        snapshotter: r.snapshotter,
        snapshot_key: r.snapshot_key,
        created_at: ts(r.created_at),
        updated_at: ts(r.created_at),
        extensions: r
            .client
            .map(|c| {
                c.extensions
                    .into_iter()
                    .map(|(k, (type_url, value))| (k, prost_types::Any { type_url, value }))
                    .collect()
            })
            .unwrap_or_default(),
        sandbox: String::new(),
    }
}

/// The manager of nook's containers.
pub fn containers(d: &Daemon) -> Result<&Arc<Manager>, Status> {
    Ok(d.containers()?)
}

/// A container by exact id (containerd's clients name containers by id).
pub fn find(d: &Daemon, ns: &str, id: &str) -> Result<ContainerRecord, Status> {
    let m = containers(d)?;
    let r = m.find(ns, id)?;
    if r.id != id && r.name != id {
        return Err(
            Error::NotFound(format!("container {id:?} not found in namespace {ns:?}")).into(),
        );
    }
    Ok(r)
}

impl Svc {
    fn list_filtered(&self, ns: &str, filters: &[String]) -> Result<Vec<cd::Container>, Status> {
        let f = super::filters::Filters::parse(filters)?;
        let v = containers(&self.0)?.records(ns)?;
        Ok(v.into_iter()
            .filter(|c| {
                f.matches(|p| match p {
                    [x] if x == "id" => Some(c.id.clone()),
                    [x] if x == "image" => Some(c.image.clone()),
                    [x] if x == "snapshotter" => Some(c.snapshotter.clone()),
                    [x, y] if x == "runtime" && y == "name" => Some(c.runtime.clone()),
                    _ => super::filters::label(&c.labels, p),
                })
            })
            .map(to_cd)
            .collect())
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Containers for Svc {
    type ListStreamStream = BoxStream<cd::ListContainerMessage>;

    async fn get(
        &self,
        r: Request<cd::GetContainerRequest>,
    ) -> Result<Response<cd::GetContainerResponse>, Status> {
        let ns = namespace(&r)?;
        let rec = find(&self.0, &ns, &r.into_inner().id)?;
        Ok(Response::new(cd::GetContainerResponse {
            container: Some(to_cd(rec)),
        }))
    }

    async fn list(
        &self,
        r: Request<cd::ListContainersRequest>,
    ) -> Result<Response<cd::ListContainersResponse>, Status> {
        let ns = namespace(&r)?;
        let containers = self.list_filtered(&ns, &r.into_inner().filters)?;
        Ok(Response::new(cd::ListContainersResponse { containers }))
    }

    async fn list_stream(
        &self,
        r: Request<cd::ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let ns = namespace(&r)?;
        let v = self.list_filtered(&ns, &r.into_inner().filters)?;
        let items: Vec<Result<cd::ListContainerMessage, Status>> = v
            .into_iter()
            .map(|c| Ok(cd::ListContainerMessage { container: Some(c) }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }

    async fn create(
        &self,
        r: Request<cd::CreateContainerRequest>,
    ) -> Result<Response<cd::CreateContainerResponse>, Status> {
        let ns = namespace(&r)?;
        let c = r
            .into_inner()
            .container
            .ok_or_else(|| Status::invalid_argument("container is required"))?;
        let spec = c
            .spec
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("container spec is required"))?;
        let spec: serde_json::Value = serde_json::from_slice(&spec.value).map_err(|e| {
            Status::invalid_argument(format!(
                "the spec ({}) is not an OCI runtime spec in JSON: {e}",
                spec.type_url
            ))
        })?;
        if c.snapshot_key.is_empty() {
            return Err(Status::invalid_argument(
                "nook needs the container's rootfs as a snapshot (snapshot_key)",
            ));
        }
        let labels = super::labels(c.labels)?;
        let client = ClientRecord {
            runtime: c
                .runtime
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            runtime_options: c
                .runtime
                .and_then(|r| r.options)
                .map(|o| (o.type_url, o.value)),
            extensions: c
                .extensions
                .into_iter()
                .map(|(k, v)| (k, (v.type_url, v.value)))
                .collect(),
        };
        let d = self.0.clone();
        let rec = crate::api::blocking(move || {
            crate::metadata::namespaces::ensure(&d.store, &d.events, &ns)?;
            d.containers()?.create_from_client(
                &ns,
                &c.id,
                &c.image,
                &c.snapshotter,
                &c.snapshot_key,
                spec,
                labels,
                client,
            )
        })
        .await?;
        Ok(Response::new(cd::CreateContainerResponse {
            container: Some(to_cd(rec)),
        }))
    }

    async fn update(
        &self,
        r: Request<cd::UpdateContainerRequest>,
    ) -> Result<Response<cd::UpdateContainerResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let c = r
            .container
            .ok_or_else(|| Status::invalid_argument("container is required"))?;
        let paths: Vec<String> = r
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        if paths.is_empty()
            || paths
                .iter()
                .any(|p| p != "labels" && !p.starts_with("labels."))
        {
            return Err(Status::unimplemented(
                "nook updates only a container's labels (update_mask labels or labels.KEY)",
            ));
        }
        let rec = find(&self.0, &ns, &c.id)?;
        let changes = super::label_changes(&rec.labels, &c.labels, r.update_mask.as_ref())?;
        let m = containers(&self.0)?;
        m.update_record(&ns, &rec.id, |x| {
            for (k, v) in &changes {
                if v.is_empty() {
                    x.labels.remove(k);
                } else {
                    x.labels.insert(k.clone(), v.clone());
                }
            }
        })?;
        let rec = find(&self.0, &ns, &rec.id)?;
        Ok(Response::new(cd::UpdateContainerResponse {
            container: Some(to_cd(rec)),
        }))
    }

    async fn delete(&self, r: Request<cd::DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let rec = find(&self.0, &ns, &r.into_inner().id)?;
        containers(&self.0)?.remove(&ns, &rec, false).await?;
        Ok(Response::new(()))
    }
}
