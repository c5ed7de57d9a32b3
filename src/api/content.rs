//! The Content service: what a namespace references in the content store.

use std::io::Read;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{blocking, namespace};
use crate::content::{ContentStore, Digest, Info};
use crate::daemon::Daemon;
use crate::error::{IoContext, Result};
use crate::proto::content as pb;

pub struct Svc {
    d: Arc<Daemon>,
    cs: Arc<ContentStore>,
}

pub fn service(d: Arc<Daemon>) -> Result<pb::content_server::ContentServer<Svc>> {
    let cs = super::images::content_store(&d)?;
    Ok(pb::content_server::ContentServer::new(Svc { d, cs })
        .max_decoding_message_size(super::MAX_MESSAGE))
}

fn info_pb(i: Info) -> pb::ContentInfo {
    pb::ContentInfo {
        digest: i.digest.to_string(),
        size: i.size,
        labels: i.labels.into_iter().collect(),
        created_at: i.created_at,
        updated_at: i.updated_at,
    }
}

#[tonic::async_trait]
impl pb::content_server::Content for Svc {
    type ReadStream = ReceiverStream<std::result::Result<pb::ReadContentResponse, Status>>;

    async fn list(
        &self,
        r: Request<pb::ListContentRequest>,
    ) -> std::result::Result<Response<pb::ListContentResponse>, Status> {
        let ns = namespace(&r)?;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let items =
            blocking(move || Ok(cs.list(&d.store, &ns)?.into_iter().map(info_pb).collect()))
                .await?;
        Ok(Response::new(pb::ListContentResponse { items }))
    }

    async fn info(
        &self,
        r: Request<pb::InfoRequest>,
    ) -> std::result::Result<Response<pb::ContentInfo>, Status> {
        let ns = namespace(&r)?;
        let dg = Digest::parse(&r.into_inner().digest)?;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let i = blocking(move || cs.info(&d.store, &ns, &dg)).await?;
        Ok(Response::new(info_pb(i)))
    }

    async fn read(
        &self,
        r: Request<pb::ReadContentRequest>,
    ) -> std::result::Result<Response<Self::ReadStream>, Status> {
        let ns = namespace(&r)?;
        let dg = Digest::parse(&r.into_inner().digest)?;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let dg2 = dg.clone();
        let mut f = blocking(move || cs.open_blob(&d.store, &ns, &dg2)).await?;
        let (tx, rx) = mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match f.read(&mut buf).ctx(|| format!("reading {dg}")) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx
                            .blocking_send(Ok(pb::ReadContentResponse {
                                data: buf[..n].to_vec(),
                            }))
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e.into()));
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delete(
        &self,
        r: Request<pb::DeleteContentRequest>,
    ) -> std::result::Result<Response<pb::DeleteContentResponse>, Status> {
        let ns = namespace(&r)?;
        let dg = Digest::parse(&r.into_inner().digest)?;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        blocking(move || cs.delete(&d.store, &ns, &dg)).await?;
        Ok(Response::new(pb::DeleteContentResponse {}))
    }

    async fn update(
        &self,
        r: Request<pb::UpdateContentRequest>,
    ) -> std::result::Result<Response<pb::ContentInfo>, Status> {
        let ns = namespace(&r)?;
        let req = r.into_inner();
        let dg = Digest::parse(&req.digest)?;
        super::check_labels(&req.labels)?;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let i = blocking(move || {
            cs.update_labels(&d.store, &ns, &dg, req.labels.into_iter().collect())
        })
        .await?;
        Ok(Response::new(info_pb(i)))
    }

    async fn list_ingests(
        &self,
        _r: Request<pb::ListIngestsRequest>,
    ) -> std::result::Result<Response<pb::ListIngestsResponse>, Status> {
        let cs = self.cs.clone();
        let v = blocking(move || cs.ingests()).await?;
        Ok(Response::new(pb::ListIngestsResponse {
            ingests: v
                .into_iter()
                .map(|i| pb::Ingest {
                    r#ref: i.reference,
                    offset: i.offset,
                    total: i.total.unwrap_or(0),
                    expected: i.expected.map(|d| d.to_string()).unwrap_or_default(),
                })
                .collect(),
        }))
    }
}
