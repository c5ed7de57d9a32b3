//! The Gc service: `nook gc`, `nook system df`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use crate::daemon::Daemon;
use crate::proto::gc as pb;

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> pb::gc_server::GcServer<Svc> {
    pb::gc_server::GcServer::new(Svc(d)).max_decoding_message_size(super::MAX_MESSAGE)
}

#[tonic::async_trait]
impl pb::gc_server::Gc for Svc {
    async fn collect(
        &self,
        _r: Request<pb::CollectRequest>,
    ) -> Result<Response<pb::CollectResponse>, Status> {
        let r = self.0.collector.collect_now().await?;
        Ok(Response::new(pb::CollectResponse {
            content_records: r.content_records,
            blobs: r.blobs,
            bytes_freed: r.bytes_freed,
            snapshots: r.snapshots,
            pause_ms: r.pause_ms,
            total_ms: r.total_ms,
        }))
    }

    async fn disk_usage(
        &self,
        _r: Request<pb::DiskUsageRequest>,
    ) -> Result<Response<pb::DiskUsageResponse>, Status> {
        let d = self.0.clone();
        let usage = blocking(move || d.collector.disk_usage()).await?;
        Ok(Response::new(pb::DiskUsageResponse {
            usage: usage
                .into_iter()
                .map(|u| pb::Usage {
                    kind: u.kind,
                    count: u.count,
                    bytes: u.bytes,
                    reclaimable: 0,
                })
                .collect(),
        }))
    }
}

/// The Check service (`nook check`).
pub struct CheckSvc(Arc<Daemon>);

pub fn check_service(d: Arc<Daemon>) -> pb::check_server::CheckServer<CheckSvc> {
    pb::check_server::CheckServer::new(CheckSvc(d))
}

#[tonic::async_trait]
impl pb::check_server::Check for CheckSvc {
    async fn check(
        &self,
        r: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let repair = r.into_inner().repair;
        // nothing may be half-written while we look: hold the GC lock for writing
        let _w = self.0.gc.lock.write().await;
        let d = self.0.clone();
        let rep = blocking(move || {
            crate::gc::check::check(&d.store, &d.content, &d.snapshotters, repair)
        })
        .await?;
        Ok(Response::new(pb::CheckResponse {
            blobs_checked: rep.blobs_checked,
            bytes_checked: rep.bytes_checked,
            records_checked: rep.records_checked,
            problems: rep
                .problems
                .into_iter()
                .map(|p| pb::Problem {
                    kind: p.kind,
                    subject: p.subject,
                    problem: p.problem,
                    repaired: p.repaired,
                })
                .collect(),
        }))
    }
}
