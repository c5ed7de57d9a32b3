//! containerd's Version service.

use std::sync::Arc;

use containerd_client::services::v1 as cd;
use tonic::{Request, Response, Status};

use super::server::version_server::{Version, VersionServer};
use crate::daemon::Daemon;

pub struct Svc;

pub fn service(_d: Arc<Daemon>) -> VersionServer<Svc> {
    VersionServer::new(Svc)
}

#[tonic::async_trait]
impl Version for Svc {
    async fn version(&self, _r: Request<()>) -> Result<Response<cd::VersionResponse>, Status> {
        Ok(Response::new(cd::VersionResponse {
            version: format!("nook-{}", crate::VERSION),
            revision: option_env!("NOOK_REVISION").unwrap_or("").into(),
        }))
    }
}
