//! The Images service: pull and push with streamed progress, image records, import/export of
//! archives as byte streams, registry logins. Thin: the work is in [`crate::image`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{blocking, namespace};
use crate::content::ContentStore;
use crate::daemon::pull::{pull_unpacked, unpack_new};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::image::archive::{self, ImportOptions};
use crate::image::auth::{self, AuthSources, Credentials};
use crate::image::manifest::{self, Parsed, PlatformSelector};
use crate::image::pull::{Progress, PullOptions, PullResult};
use crate::image::push::{PushResult, Pusher};
use crate::image::registry::Registry;
use crate::image::{self, ImageRecord, Reference};
use crate::proto::images as pb;
use crate::services::images::ImageInfo;

/// The service state: the daemon, its content store and one registry client (token cache).
pub struct Svc {
    d: Arc<Daemon>,
    cs: Arc<ContentStore>,
    registry: Arc<Registry>,
}

/// The content store of a daemon (`<root>/content`), shared by every subsystem.
pub fn content_store(d: &Daemon) -> Result<Arc<ContentStore>> {
    Ok(d.content.clone())
}

pub fn service(d: Arc<Daemon>) -> Result<pb::images_server::ImagesServer<Svc>> {
    let cs = content_store(&d)?;
    let registry = Registry::new(d.config.registry.clone(), AuthSources::default());
    Ok(
        pb::images_server::ImagesServer::new(Svc { d, cs, registry })
            .max_decoding_message_size(super::MAX_MESSAGE)
            .max_encoding_message_size(super::MAX_MESSAGE),
    )
}

fn desc_pb(d: &manifest::Descriptor) -> pb::Descriptor {
    pb::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size,
    }
}

/// An image record with its size and platforms, for listings.
pub fn image_pb(_cs: &ContentStore, d: &Daemon, ns: &str, r: &ImageRecord) -> pb::Image {
    info_pb(d.images.info(ns, r))
}

/// An image with its size and platforms, as the API shows it.
fn info_pb(i: ImageInfo) -> pb::Image {
    let r = i.record;
    pb::Image {
        name: r.name,
        target: Some(desc_pb(&r.target)),
        labels: r.labels.into_iter().collect(),
        created_at: r.created_at,
        updated_at: r.updated_at,
        size: i.size,
        platforms: i.platforms,
    }
}

fn progress_pb(p: Progress) -> pb::ProgressEvent {
    match p {
        Progress::Resolved {
            name,
            digest,
            media_type,
        } => pb::ProgressEvent {
            kind: "resolved".into(),
            name,
            digest: digest.to_string(),
            media_type,
            ..Default::default()
        },
        Progress::Blob {
            digest,
            kind,
            state,
            current,
            total,
        } => pb::ProgressEvent {
            kind: "blob".into(),
            digest: digest.to_string(),
            blob_kind: serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            state: serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            current,
            total,
            ..Default::default()
        },
    }
}

type EventStream = ReceiverStream<std::result::Result<pb::ProgressEvent, Status>>;

/// A reader fed by chunks from an async stream (for the blocking importer).
struct ChannelReader {
    rx: mpsc::Receiver<std::result::Result<Vec<u8>, String>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Svc {
    async fn check_ns(&self, ns: &str) -> std::result::Result<(), Status> {
        let d = self.d.clone();
        let ns = ns.to_string();
        blocking(move || d.store.require_namespace(&ns)).await
    }
}

fn done_pull(cs: &ContentStore, d: &Daemon, ns: &str, r: &PullResult) -> pb::ProgressEvent {
    pb::ProgressEvent {
        kind: "done".into(),
        name: r.image.name.clone(),
        digest: r.image.target.digest.to_string(),
        media_type: r.image.target.media_type.clone(),
        image: Some(image_pb(cs, d, ns, &r.image)),
        bytes: r.downloaded,
        layers: r
            .platforms
            .first()
            .map(|p| {
                p.layers
                    .iter()
                    .map(|l| pb::Layer {
                        descriptor: Some(desc_pb(&l.descriptor)),
                        diff_id: l.diff_id.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn done_push(r: &PushResult) -> pb::ProgressEvent {
    pb::ProgressEvent {
        kind: "done".into(),
        name: r.reference.clone(),
        digest: r.target.digest.to_string(),
        media_type: r.target.media_type.clone(),
        bytes: r.uploaded,
        mounted: r.mounted as u32,
        skipped: r.skipped as u32,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl pb::images_server::Images for Svc {
    type PullStream = EventStream;
    type PushStream = EventStream;
    type ExportStream = ReceiverStream<std::result::Result<pb::ExportChunk, Status>>;

    async fn pull(
        &self,
        r: Request<pb::PullRequest>,
    ) -> std::result::Result<Response<Self::PullStream>, Status> {
        let ns = namespace(&r)?;
        let req = r.into_inner();
        self.check_ns(&ns).await?;
        Reference::parse(&req.reference)?;
        let opts = PullOptions {
            platforms: PlatformSelector::from_args(Some(&req.platform), req.all_platforms)?,
            max_concurrent_downloads: self.d.config.images.max_concurrent_downloads as usize,
            labels: BTreeMap::new(),
        };
        let (tx, rx) = mpsc::channel(1024);
        let (d, cs, reg) = (self.d.clone(), self.cs.clone(), self.registry.clone());
        tokio::spawn(async move {
            let ptx = tx.clone();
            let progress = move |p: Progress| {
                let _ = ptx.try_send(Ok(progress_pb(p)));
            };
            let res = pull_unpacked(&d, &reg, &ns, &req.reference, &opts, &progress).await;
            let msg = match res {
                Ok(r) => Ok(done_pull(&cs, &d, &ns, &r)),
                Err(e) => Err(e.into()),
            };
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn push(
        &self,
        r: Request<pb::PushRequest>,
    ) -> std::result::Result<Response<Self::PushStream>, Status> {
        let ns = namespace(&r)?;
        let req = r.into_inner();
        self.check_ns(&ns).await?;
        if !req.destination.is_empty() {
            Reference::parse(&req.destination)?;
        }
        let platforms = PlatformSelector::from_args(Some(&req.platform), false)?;
        let (tx, rx) = mpsc::channel(1024);
        let (d, cs, reg) = (self.d.clone(), self.cs.clone(), self.registry.clone());
        let conc = self.d.config.images.max_concurrent_downloads as usize;
        tokio::spawn(async move {
            // a collection never runs while the pull is half recorded
            let _gc = d.gc.lock.read().await;
            let ptx = tx.clone();
            let progress = move |p: Progress| {
                let _ = ptx.try_send(Ok(progress_pb(p)));
            };
            let pusher = Pusher {
                cs: &cs,
                meta: &d.store,
                ns: &ns,
                registry: &reg,
            };
            let dest = (!req.destination.is_empty()).then_some(req.destination.as_str());
            let res = pusher
                .push(&req.name, dest, &platforms, conc, &progress)
                .await;
            let msg = match res {
                Ok(r) => Ok(done_push(&r)),
                Err(e) => {
                    tracing::warn!("push {}: {e}", req.name);
                    Err(e.into())
                }
            };
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list(
        &self,
        r: Request<pb::ListImagesRequest>,
    ) -> std::result::Result<Response<pb::ListImagesResponse>, Status> {
        let ns = namespace(&r)?;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let images = blocking(move || {
            Ok(image::list(&d.store, &ns)?
                .iter()
                .map(|r| image_pb(&cs, &d, &ns, r))
                .collect())
        })
        .await?;
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    async fn get(
        &self,
        r: Request<pb::GetImageRequest>,
    ) -> std::result::Result<Response<pb::Image>, Status> {
        let ns = namespace(&r)?;
        let name = r.into_inner().name;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let img = blocking(move || {
            let rec = image::get(&d.store, &ns, &name)?;
            Ok(image_pb(&cs, &d, &ns, &rec))
        })
        .await?;
        Ok(Response::new(img))
    }

    async fn inspect(
        &self,
        r: Request<pb::GetImageRequest>,
    ) -> std::result::Result<Response<pb::InspectImageResponse>, Status> {
        let ns = namespace(&r)?;
        let req = r.into_inner();
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let json = blocking(move || {
            let rec = image::get(&d.store, &ns, &req.name)?;
            let sel = if req.platform.is_empty() {
                PlatformSelector::All
            } else {
                PlatformSelector::from_args(Some(&req.platform), false)?
            };
            let mut out = serde_json::json!({
                "name": rec.name,
                "target": rec.target,
                "labels": rec.labels,
                "created_at": chrono::DateTime::from_timestamp(rec.created_at, 0).map(|t| t.to_rfc3339()),
                "size": image::size(&cs, &d.store, &ns, &rec.target)?,
            });
            let top = cs.read(&d.store, &ns, &rec.target.digest)?;
            if let Parsed::Index(_) = manifest::parse(&rec.target.media_type, &top)? {
                out["index"] = serde_json::from_slice(&top)?;
            }
            let mut ms = Vec::new();
            for p in image::resolve(&cs, &d.store, &ns, &rec.target, &sel)? {
                let m = cs.read(&d.store, &ns, &p.manifest_descriptor.digest)?;
                ms.push(serde_json::json!({
                    "descriptor": p.manifest_descriptor,
                    "platform": p.config.platform().to_string(),
                    "manifest": serde_json::from_slice::<serde_json::Value>(&m)?,
                    "config": serde_json::from_slice::<serde_json::Value>(&p.config_bytes)?,
                    "chain_id": p.chain_ids().last().map(|c| c.to_string()),
                }));
            }
            out["manifests"] = serde_json::Value::Array(ms);
            Ok(serde_json::to_string_pretty(&out)?)
        })
        .await?;
        Ok(Response::new(pb::InspectImageResponse { json }))
    }

    async fn remove(
        &self,
        r: Request<pb::RemoveImageRequest>,
    ) -> std::result::Result<Response<pb::RemoveImageResponse>, Status> {
        let ns = namespace(&r)?;
        let name = r.into_inner().name;
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let img = blocking(move || {
            let rec = image::delete(&d.store, &d.events, &ns, &name)?;
            d.mutated(true);
            Ok(image_pb(&cs, &d, &ns, &rec))
        })
        .await?;
        Ok(Response::new(pb::RemoveImageResponse { image: Some(img) }))
    }

    async fn tag(
        &self,
        r: Request<pb::TagImageRequest>,
    ) -> std::result::Result<Response<pb::Image>, Status> {
        let ns = namespace(&r)?;
        let req = r.into_inner();
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let img = blocking(move || {
            let rec = image::tag(&d.store, &d.events, &ns, &req.source, &req.target)?;
            Ok(image_pb(&cs, &d, &ns, &rec))
        })
        .await?;
        Ok(Response::new(img))
    }

    async fn import(
        &self,
        r: Request<Streaming<pb::ImportRequest>>,
    ) -> std::result::Result<Response<pb::ImportResponse>, Status> {
        let ns = namespace(&r)?;
        self.check_ns(&ns).await?;
        let mut stream = r.into_inner();
        let first = stream.message().await?.unwrap_or_default();
        let opts = ImportOptions {
            base_name: (!first.base_name.is_empty()).then_some(first.base_name.clone()),
        };
        if let Some(b) = &opts.base_name {
            Reference::parse(b)?;
        }
        let _gc = self.d.gc.lock.read().await;
        let (tx, rx) = mpsc::channel(64);
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let ns2 = ns.clone();
        let job = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            };
            archive::import(&cs, &d.store, &d.events, &ns2, reader, &opts)
        });
        if !first.data.is_empty() {
            let _ = tx.send(Ok(first.data)).await;
        }
        loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    if tx.send(Ok(m.data)).await.is_err() {
                        break; // the importer stopped (with an error we report below)
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx
                        .send(Err(format!("the upload broke off: {}", e.message())))
                        .await;
                    break;
                }
            }
        }
        drop(tx);
        let recs = match job.await {
            Ok(r) => r?,
            Err(e) => return Err(Status::internal(format!("import crashed: {e}"))),
        };
        self.d.mutated(false);
        let mut names: Vec<String> = recs.iter().map(|r| r.name.clone()).collect();
        names.dedup_by(|a, b| {
            // tags of one image unpack once
            recs.iter().find(|r| &r.name == a).map(|r| &r.target)
                == recs.iter().find(|r| &r.name == b).map(|r| &r.target)
        });
        match unpack_new(&self.d, &ns, names, PlatformSelector::default()).await {
            // an image for another platform imports fine; it just is not unpacked here
            Err(Error::NotFound(m)) => tracing::warn!("import: not unpacked: {m}"),
            r => r?,
        }
        let (d, cs) = (self.d.clone(), self.cs.clone());
        let images =
            blocking(move || Ok(recs.iter().map(|r| image_pb(&cs, &d, &ns, r)).collect())).await?;
        Ok(Response::new(pb::ImportResponse { images }))
    }

    async fn export(
        &self,
        r: Request<pb::ExportRequest>,
    ) -> std::result::Result<Response<Self::ExportStream>, Status> {
        let ns = namespace(&r)?;
        let mut req = r.into_inner();
        let platforms = PlatformSelector::from_args(Some(&req.platform), false)?;
        {
            // fail before streaming when a name is unknown
            let d = self.d.clone();
            let (ns, names, all) = (ns.clone(), req.names.clone(), req.all);
            req.names = blocking(move || {
                if all {
                    if !names.is_empty() {
                        return Err(Error::InvalidArgument(
                            "export either every image or the images named, not both".into(),
                        ));
                    }
                    let mut names: Vec<String> = image::list(&d.store, &ns)?
                        .into_iter()
                        .map(|r| r.name)
                        .collect();
                    names.sort();
                    if names.is_empty() {
                        return Err(Error::NotFound(format!(
                            "namespace {ns:?} has no images to export"
                        )));
                    }
                    return Ok(names);
                }
                if names.is_empty() {
                    return Err(Error::InvalidArgument(
                        "name at least one image to export".into(),
                    ));
                }
                for n in &names {
                    image::get(&d.store, &ns, n)?;
                }
                Ok(names)
            })
            .await?;
        }
        let (tx, rx) = mpsc::channel(8);
        let (d, cs) = (self.d.clone(), self.cs.clone());
        tokio::task::spawn_blocking(move || {
            let mut w = crate::chunks::ChannelWriter::new(tx.clone(), 1 << 20, |data| {
                Ok(pb::ExportChunk { data })
            });
            let res = archive::export(&cs, &d.store, &ns, &req.names, &platforms, &mut w).and_then(
                |_| {
                    w.flush()
                        .map_err(|e| Error::Unavailable(format!("sending the archive: {e}")))
                },
            );
            if let Err(e) = res {
                let _ = tx.blocking_send(Err(e.into()));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn login(
        &self,
        r: Request<pb::LoginRequest>,
    ) -> std::result::Result<Response<pb::LoginResponse>, Status> {
        let req = r.into_inner();
        let host = auth::normalize_host(&req.host);
        if host.is_empty() || req.username.is_empty() {
            return Err(Error::InvalidArgument(
                "login needs a registry host and a username".into(),
            )
            .into());
        }
        let creds = Credentials {
            username: req.username,
            password: req.password,
        };
        self.registry.ping(&host, Some(&creds)).await?;
        let file = auth::nook_auth_file().ok_or_else(|| {
            Error::Config("no config directory (HOME or XDG_CONFIG_HOME unset)".into())
        })?;
        let f2 = file.clone();
        self.registry.forget(&host);
        blocking(move || auth::store(&f2, &host, &creds)).await?;
        Ok(Response::new(pb::LoginResponse {
            file: file.display().to_string(),
        }))
    }

    async fn logout(
        &self,
        r: Request<pb::LogoutRequest>,
    ) -> std::result::Result<Response<pb::LogoutResponse>, Status> {
        let host = r.into_inner().host;
        let file = auth::nook_auth_file().ok_or_else(|| {
            Error::Config("no config directory (HOME or XDG_CONFIG_HOME unset)".into())
        })?;
        let host = auth::normalize_host(&host);
        self.registry.forget(&host);
        let removed = blocking(move || auth::remove(&file, &host)).await?;
        Ok(Response::new(pb::LogoutResponse { removed }))
    }

    async fn prune(
        &self,
        r: Request<pb::PruneImagesRequest>,
    ) -> std::result::Result<Response<pb::PruneImagesResponse>, Status> {
        let ns = namespace(&r)?;
        let all = r.into_inner().all;
        let p = self.d.images.prune(&ns, all).await?;
        Ok(Response::new(pb::PruneImagesResponse {
            images: p.removed.into_iter().map(info_pb).collect(),
            reclaimed_bytes: p.reclaimed_bytes,
        }))
    }
}
