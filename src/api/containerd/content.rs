//! containerd's Content service, on [`crate::content::ContentStore`]: Info/Update with field
//! masks, List with filters, Read with offset and size, Delete, and the bidirectional Write
//! with offsets and resume by ref (the ingest area keeps an interrupted write), Status,
//! ListStatuses and Abort. A committed blob is bound to the request's `containerd-lease`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::pin::Pin;
use std::sync::Arc;

use containerd_client::services::v1 as cd;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::server::content_server::{Content, ContentServer};
use super::{namespace, ts};
use crate::api::blocking;
use crate::content::{ContentStore, Digest, Info, IngestStatus, Writer};
use crate::daemon::Daemon;
use crate::error::Error;

pub struct Svc {
    d: Arc<Daemon>,
    cs: Arc<ContentStore>,
}

pub fn service(d: Arc<Daemon>) -> ContentServer<Svc> {
    let cs = d.content.clone();
    ContentServer::new(Svc { d, cs })
        .max_decoding_message_size(crate::api::MAX_MESSAGE)
        .max_encoding_message_size(crate::api::MAX_MESSAGE)
}

fn to_cd(i: Info) -> cd::Info {
    cd::Info {
        digest: i.digest.to_string(),
        size: i.size as i64,
        created_at: ts(i.created_at),
        updated_at: ts(i.updated_at),
        labels: i.labels.into_iter().collect(),
    }
}

fn status_cd(s: IngestStatus) -> cd::Status {
    cd::Status {
        started_at: None,
        updated_at: None,
        r#ref: s.reference,
        offset: s.offset as i64,
        total: s.total.unwrap_or(0) as i64,
        expected: s.expected.map(|d| d.to_string()).unwrap_or_default(),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Content for Svc {
    type ListStream = BoxStream<cd::ListContentResponse>;
    type ReadStream = ReceiverStream<Result<cd::ReadContentResponse, Status>>;
    type WriteStream = ReceiverStream<Result<cd::WriteContentResponse, Status>>;

    async fn info(
        &self,
        r: Request<cd::InfoRequest>,
    ) -> Result<Response<cd::InfoResponse>, Status> {
        let ns = namespace(&r)?;
        let dg = Digest::parse(&r.into_inner().digest)?;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let i = blocking(move || cs.info(&d.store, &ns, &dg)).await?;
        Ok(Response::new(cd::InfoResponse {
            info: Some(to_cd(i)),
        }))
    }

    async fn update(
        &self,
        r: Request<cd::UpdateRequest>,
    ) -> Result<Response<cd::UpdateResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("info is required"))?;
        let dg = Digest::parse(&info.digest)?;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let i = blocking(move || {
            let cur = cs.info(&d.store, &ns, &dg)?;
            let changes = super::label_changes(&cur.labels, &info.labels, r.update_mask.as_ref())
                .map_err(|s| Error::InvalidArgument(s.message().to_string()))?;
            cs.update_labels(&d.store, &ns, &dg, changes)
        })
        .await?;
        Ok(Response::new(cd::UpdateResponse {
            info: Some(to_cd(i)),
        }))
    }

    async fn list(
        &self,
        r: Request<cd::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&r)?;
        let f = super::filters::Filters::parse(&r.into_inner().filters)?;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let v = blocking(move || cs.list(&d.store, &ns)).await?;
        let items: Vec<cd::Info> = v
            .into_iter()
            .filter(|i| {
                f.matches(|p| match p {
                    [x] if x == "digest" => Some(i.digest.to_string()),
                    [x] if x == "size" => Some(i.size.to_string()),
                    _ => super::filters::label(&i.labels, p),
                })
            })
            .map(to_cd)
            .collect();
        // in chunks, as containerd does, so a large store stays under the message limit
        let chunks: Vec<Result<cd::ListContentResponse, Status>> = items
            .chunks(1000)
            .map(|c| Ok(cd::ListContentResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn delete(&self, r: Request<cd::DeleteContentRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let dg = Digest::parse(&r.into_inner().digest)?;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        blocking(move || cs.delete(&d.store, &ns, &dg)).await?;
        Ok(Response::new(()))
    }

    async fn read(
        &self,
        r: Request<cd::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let dg = Digest::parse(&r.digest)?;
        if r.offset < 0 || r.size < 0 {
            return Err(Status::invalid_argument(
                "offset and size must not be negative",
            ));
        }
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let dg2 = dg.clone();
        let mut f = blocking(move || cs.open_blob(&d.store, &ns, &dg2)).await?;
        let (tx, rx) = mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let mut offset = r.offset as u64;
            if let Err(e) = f.seek(SeekFrom::Start(offset)) {
                let _ = tx.blocking_send(Err(Error::io(format!("seeking {dg}"), e).into()));
                return;
            }
            // size 0: to the end
            let mut left = if r.size == 0 { u64::MAX } else { r.size as u64 };
            let mut buf = vec![0u8; 1 << 20];
            while left > 0 {
                let want = buf.len().min(left.min(usize::MAX as u64) as usize);
                match f.read(&mut buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => {
                        let msg = cd::ReadContentResponse {
                            offset: offset as i64,
                            data: buf[..n].to_vec(),
                        };
                        if tx.blocking_send(Ok(msg)).is_err() {
                            return;
                        }
                        offset += n as u64;
                        left -= n as u64;
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Error::io(format!("reading {dg}"), e).into()));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        r: Request<cd::StatusRequest>,
    ) -> Result<Response<cd::StatusResponse>, Status> {
        let reference = r.into_inner().r#ref;
        let cs = self.cs.clone();
        let v = blocking(move || cs.ingests()).await?;
        let s = v
            .into_iter()
            .find(|s| s.reference == reference)
            .ok_or_else(|| Status::not_found(format!("no ingest with ref {reference:?}")))?;
        Ok(Response::new(cd::StatusResponse {
            status: Some(status_cd(s)),
        }))
    }

    async fn list_statuses(
        &self,
        r: Request<cd::ListStatusesRequest>,
    ) -> Result<Response<cd::ListStatusesResponse>, Status> {
        let f = super::filters::Filters::parse(&r.into_inner().filters)?;
        let cs = self.cs.clone();
        let v = blocking(move || cs.ingests()).await?;
        Ok(Response::new(cd::ListStatusesResponse {
            statuses: v
                .into_iter()
                .filter(|s| {
                    f.matches(|p| match p {
                        [x] if x == "ref" => Some(s.reference.clone()),
                        _ => None,
                    })
                })
                .map(status_cd)
                .collect(),
        }))
    }

    async fn abort(&self, r: Request<cd::AbortRequest>) -> Result<Response<()>, Status> {
        let reference = r.into_inner().r#ref;
        let cs = self.cs.clone();
        blocking(move || cs.abort(&reference)).await?;
        Ok(Response::new(()))
    }

    async fn write(
        &self,
        r: Request<Streaming<cd::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = namespace(&r)?;
        let lease = super::lease(&r);
        let mut inbound = r.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let (d, cs) = (self.d.clone(), self.cs.clone());
        tokio::spawn(async move {
            let mut session = WriteSession {
                d,
                cs,
                ns,
                lease,
                writer: None,
                reference: String::new(),
                started_at: chrono::Utc::now().timestamp(),
            };
            while let Some(msg) = inbound.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    Err(_) => return,
                };
                let (done, out) = match session.step(msg).await {
                    Ok((done, resp)) => (done, Ok(resp)),
                    Err(e) => (true, Err(e)),
                };
                if tx.send(out).await.is_err() || done {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One Write stream: the first message names the ref; later ones stat, write or commit.
struct WriteSession {
    d: Arc<Daemon>,
    cs: Arc<ContentStore>,
    ns: String,
    lease: Option<String>,
    writer: Option<Writer>,
    reference: String,
    started_at: i64,
}

impl WriteSession {
    /// Handles one request; returns whether the stream is done (after a commit) and the answer.
    async fn step(
        &mut self,
        m: cd::WriteContentRequest,
    ) -> Result<(bool, cd::WriteContentResponse), Status> {
        if self.writer.is_none() {
            if m.r#ref.is_empty() {
                return Err(Status::invalid_argument(
                    "first message must have a reference",
                ));
            }
            self.reference = m.r#ref.clone();
            let expected = if m.expected.is_empty() {
                None
            } else {
                Some(Digest::parse(&m.expected)?)
            };
            let (d, cs, ns, lease) = (
                self.d.clone(),
                self.cs.clone(),
                self.ns.clone(),
                self.lease.clone(),
            );
            let reference = m.r#ref.clone();
            let total = m.total;
            let w = blocking(move || {
                // containerd answers AlreadyExists for content the store holds: the client then
                // skips the write. A blob on disk another namespace wrote is referenced here.
                if let Some(dg) = &expected {
                    if cs.blob_size(dg).is_some() {
                        crate::metadata::namespaces::ensure(&d.store, &d.events, &ns)?;
                        cs.add_ref(&d.store, &ns, dg, Default::default())?;
                        super::hold(&d, &ns, lease.as_deref(), "content", &dg.to_string())?;
                        return Err(Error::AlreadyExists(format!("content {dg} already exists")));
                    }
                }
                let exp = match (expected, total) {
                    (Some(dg), t) if t > 0 => Some((dg, t as u64)),
                    _ => None,
                };
                cs.writer(&reference, exp)
            })
            .await?;
            self.writer = Some(w);
        } else if !m.r#ref.is_empty() && m.r#ref != self.reference {
            return Err(Status::invalid_argument(format!(
                "ref {:?} differs from the stream's {:?}",
                m.r#ref, self.reference
            )));
        }
        let mut w = self.writer.take().expect("writer opened above");
        let action = cd::WriteAction::try_from(m.action)
            .map_err(|_| Status::invalid_argument(format!("unknown write action {}", m.action)))?;
        let resp = |w: &Writer, action: cd::WriteAction, total: i64, digest: String| {
            cd::WriteContentResponse {
                action: action as i32,
                started_at: ts(self.started_at),
                updated_at: ts(chrono::Utc::now().timestamp()),
                offset: w.offset() as i64,
                total: w.expected().map(|(_, s)| *s as i64).unwrap_or(total),
                digest,
            }
        };
        match action {
            cd::WriteAction::Stat => {
                let out = resp(&w, action, m.total, String::new());
                self.writer = Some(w);
                Ok((false, out))
            }
            cd::WriteAction::Write | cd::WriteAction::Commit => {
                let (d, cs, ns, lease) = (
                    self.d.clone(),
                    self.cs.clone(),
                    self.ns.clone(),
                    self.lease.clone(),
                );
                let total = m.total;
                let (w, digest, size) = blocking(move || {
                    if m.offset > 0 && m.offset as u64 != w.offset() {
                        return Err(Error::InvalidArgument(format!(
                            "write at {} must occur at the current offset {}",
                            m.offset,
                            w.offset()
                        )));
                    }
                    if m.offset == 0 && w.offset() > 0 && !m.data.is_empty() {
                        w.truncate()?;
                    }
                    if !m.data.is_empty() {
                        w.write_all(&m.data)
                            .map_err(|e| Error::io("writing the ingest", e))?;
                    }
                    if action == cd::WriteAction::Write {
                        return Ok((Some(w), String::new(), 0));
                    }
                    let size = w.offset();
                    if total > 0 && total as u64 != size {
                        return Err(Error::InvalidArgument(format!(
                            "unexpected commit size {size}, expected {total}"
                        )));
                    }
                    let expected = if m.expected.is_empty() {
                        None
                    } else {
                        Some(Digest::parse(&m.expected)?)
                    };
                    let dg = w.commit_blob()?;
                    if let Some(e) = expected {
                        if e != dg {
                            return Err(Error::InvalidArgument(format!(
                                "unexpected commit digest {dg}, expected {e}"
                            )));
                        }
                    }
                    crate::metadata::namespaces::ensure(&d.store, &d.events, &ns)?;
                    let labels = super::labels(m.labels)
                        .map_err(|s| Error::InvalidArgument(s.message().to_string()))?;
                    cs.add_ref(&d.store, &ns, &dg, labels)?;
                    super::hold(&d, &ns, lease.as_deref(), "content", &dg.to_string())?;
                    Ok((None, dg.to_string(), size))
                })
                .await?;
                match w {
                    Some(w) => {
                        let out = resp(&w, action, total, digest);
                        self.writer = Some(w);
                        Ok((false, out))
                    }
                    None => {
                        let now = ts(chrono::Utc::now().timestamp());
                        Ok((
                            true,
                            cd::WriteContentResponse {
                                action: action as i32,
                                started_at: ts(self.started_at),
                                updated_at: now,
                                offset: size as i64,
                                total: size as i64,
                                digest,
                            },
                        ))
                    }
                }
            }
        }
    }
}
