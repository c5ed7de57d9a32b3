//! The Networks service: thin translation onto [`crate::network::Manager`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{blocking, namespace};
use crate::daemon::Daemon;
use crate::network::manager::NetworkInfo;
use crate::network::ports::PortMapping;
use crate::proto::networks as pb;

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> pb::networks_server::NetworksServer<Svc> {
    pb::networks_server::NetworksServer::new(Svc(d)).max_decoding_message_size(super::MAX_MESSAGE)
}

fn to_pb(n: NetworkInfo, driver: &str) -> pb::Network {
    pb::Network {
        name: n.record.name,
        bridge: n.record.bridge,
        subnet: n.record.subnet.to_string(),
        gateway: n.record.gateway.to_string(),
        created_at: n.record.created_at,
        labels: n.record.labels.into_iter().collect(),
        default: n.default,
        members: n
            .members
            .into_iter()
            .map(|(namespace, container_id, name, ip)| pb::Member {
                namespace,
                container_id,
                name,
                ip: ip.to_string(),
            })
            .collect(),
        link_driver: driver.to_string(),
    }
}

/// A port mapping for the wire.
pub fn port_to_pb(m: &PortMapping) -> pb::PortMapping {
    pb::PortMapping {
        host_ip: m.host_ip.to_string(),
        host_port: m.host_port.into(),
        container_port: m.container_port.into(),
        protocol: m.proto.to_string(),
    }
}

#[tonic::async_trait]
impl pb::networks_server::Networks for Svc {
    async fn list(
        &self,
        _r: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let d = self.0.clone();
        let v = blocking(move || d.network.list()).await?;
        let driver = self.0.network_driver();
        Ok(Response::new(pb::ListNetworksResponse {
            networks: v.into_iter().map(|n| to_pb(n, &driver)).collect(),
        }))
    }

    async fn create(
        &self,
        r: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let r = r.into_inner();
        super::check_labels(&r.labels)?;
        let d = self.0.clone();
        let n = blocking(move || {
            d.network.create(
                &r.name,
                Some(r.subnet.as_str()),
                r.labels.into_iter().collect(),
            )?;
            d.network.inspect(&r.name)
        })
        .await?;
        Ok(Response::new(to_pb(n, &self.0.network_driver())))
    }

    async fn remove(
        &self,
        r: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        let name = r.into_inner().name;
        let d = self.0.clone();
        blocking(move || d.network.remove(&name)).await?;
        Ok(Response::new(pb::RemoveNetworkResponse {}))
    }

    async fn inspect(
        &self,
        r: Request<pb::InspectNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let name = r.into_inner().name;
        let d = self.0.clone();
        let n = blocking(move || d.network.inspect(&name)).await?;
        Ok(Response::new(to_pb(n, &self.0.network_driver())))
    }

    async fn connect_container(
        &self,
        r: Request<pb::ConnectRequest>,
    ) -> Result<Response<pb::ConnectResponse>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let svc = self.0.container_service()?;
        let rec = svc.manager().find(&ns, &q.container)?;
        svc.connect(&ns, &rec, &q.network, q.aliases).await?;
        Ok(Response::new(pb::ConnectResponse {}))
    }

    async fn disconnect_container(
        &self,
        r: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        let ns = namespace(&r)?;
        let q = r.into_inner();
        let svc = self.0.container_service()?;
        let rec = svc.manager().find(&ns, &q.container)?;
        svc.disconnect(&ns, &rec, &q.network).await?;
        Ok(Response::new(pb::DisconnectResponse {}))
    }

    async fn ports(
        &self,
        r: Request<pb::PortsRequest>,
    ) -> Result<Response<pb::PortsResponse>, Status> {
        let ns = namespace(&r)?;
        let c = r.into_inner().container;
        let d = self.0.clone();
        let a = blocking(move || d.network.find(&ns, &c)).await?;
        let published = !a.published.is_empty();
        let ports = if published { &a.published } else { &a.ports };
        Ok(Response::new(pb::PortsResponse {
            container_id: a.container_id.clone(),
            ports: ports.iter().map(port_to_pb).collect(),
            published,
        }))
    }
}
