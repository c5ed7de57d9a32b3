//! containerd's Images service, on [`crate::image`]'s records (the same ones `nook images`
//! shows). Names are stored as nook stores them: full references (`docker.io/library/x:tag`),
//! which is what containerd's clients send.

use std::sync::Arc;

use containerd_client::services::v1 as cd;
use containerd_client::types::Descriptor as CdDescriptor;
use tonic::{Request, Response, Status};

use super::server::images_server::{Images, ImagesServer};
use super::{namespace, ts};
use crate::api::blocking;
use crate::content::Digest;
use crate::daemon::Daemon;
use crate::error::Error;
use crate::image::{self, manifest::Descriptor, ImageRecord};

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> ImagesServer<Svc> {
    ImagesServer::new(Svc(d))
        .max_decoding_message_size(crate::api::MAX_MESSAGE)
        .max_encoding_message_size(crate::api::MAX_MESSAGE)
}

/// containerd's descriptor of a nook one.
pub fn desc_cd(d: &Descriptor) -> CdDescriptor {
    CdDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size as i64,
        annotations: d.annotations.clone().into_iter().collect(),
    }
}

/// nook's descriptor of a containerd one.
pub fn desc_nook(d: CdDescriptor) -> Result<Descriptor, Status> {
    Ok(Descriptor {
        media_type: d.media_type,
        digest: Digest::parse(&d.digest)?,
        size: u64::try_from(d.size)
            .map_err(|_| Status::invalid_argument("descriptor size must not be negative"))?,
        urls: vec![],
        annotations: d.annotations.into_iter().collect(),
        platform: None,
        artifact_type: None,
    })
}

fn to_cd(r: ImageRecord) -> cd::Image {
    cd::Image {
        name: r.name,
        labels: r.labels.into_iter().collect(),
        target: Some(desc_cd(&r.target)),
        created_at: ts(r.created_at),
        updated_at: ts(r.updated_at),
    }
}

#[tonic::async_trait]
impl Images for Svc {
    async fn get(
        &self,
        r: Request<cd::GetImageRequest>,
    ) -> Result<Response<cd::GetImageResponse>, Status> {
        let ns = namespace(&r)?;
        let name = r.into_inner().name;
        let d = self.0.clone();
        let rec = blocking(move || image::get(&d.store, &ns, &name)).await?;
        Ok(Response::new(cd::GetImageResponse {
            image: Some(to_cd(rec)),
        }))
    }

    async fn list(
        &self,
        r: Request<cd::ListImagesRequest>,
    ) -> Result<Response<cd::ListImagesResponse>, Status> {
        let ns = namespace(&r)?;
        let f = super::filters::Filters::parse(&r.into_inner().filters)?;
        let d = self.0.clone();
        let v = blocking(move || image::list(&d.store, &ns)).await?;
        Ok(Response::new(cd::ListImagesResponse {
            images: v
                .into_iter()
                .filter(|i| {
                    f.matches(|p| match p {
                        [x] if x == "name" => Some(i.name.clone()),
                        [t, x] if t == "target" && x == "digest" => {
                            Some(i.target.digest.to_string())
                        }
                        [t, x] if t == "target" && x == "mediatype" => {
                            Some(i.target.media_type.clone())
                        }
                        _ => super::filters::label(&i.labels, p),
                    })
                })
                .map(to_cd)
                .collect(),
        }))
    }

    async fn create(
        &self,
        r: Request<cd::CreateImageRequest>,
    ) -> Result<Response<cd::CreateImageResponse>, Status> {
        let ns = namespace(&r)?;
        let i = r
            .into_inner()
            .image
            .ok_or_else(|| Status::invalid_argument("image is required"))?;
        let target = desc_nook(
            i.target
                .ok_or_else(|| Status::invalid_argument("image target is required"))?,
        )?;
        let labels = super::labels(i.labels)?;
        let d = self.0.clone();
        let rec = blocking(move || {
            crate::metadata::namespaces::ensure(&d.store, &d.events, &ns)?;
            match image::get(&d.store, &ns, &i.name) {
                Ok(_) => {
                    return Err(Error::AlreadyExists(format!(
                        "image {:?} already exists",
                        i.name
                    )))
                }
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            image::put(&d.store, &d.events, &ns, &i.name, target, labels)
        })
        .await?;
        Ok(Response::new(cd::CreateImageResponse {
            image: Some(to_cd(rec)),
        }))
    }

    async fn update(
        &self,
        r: Request<cd::UpdateImageRequest>,
    ) -> Result<Response<cd::UpdateImageResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let i = r
            .image
            .ok_or_else(|| Status::invalid_argument("image is required"))?;
        let paths: Vec<String> = r
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        let all = paths.is_empty();
        let target = if all || paths.iter().any(|p| p == "target") {
            Some(desc_nook(i.target.clone().ok_or_else(|| {
                Status::invalid_argument("image target is required")
            })?)?)
        } else {
            None
        };
        // the label part of the mask (other paths than target and labels are refused there)
        let label_mask = prost_types::FieldMask {
            paths: paths
                .iter()
                .filter(|p| p.as_str() != "target" && !p.starts_with("annotations"))
                .cloned()
                .collect(),
        };
        let touches_labels = all || !label_mask.paths.is_empty();
        let d = self.0.clone();
        let rec = blocking(move || {
            let cur = image::get(&d.store, &ns, &i.name)?;
            let changes = if touches_labels {
                super::label_changes(&cur.labels, &i.labels, Some(&label_mask))
                    .map_err(|s| Error::InvalidArgument(s.message().to_string()))?
            } else {
                Default::default()
            };
            image::update(&d.store, &d.events, &ns, &i.name, target, changes)
        })
        .await?;
        Ok(Response::new(cd::UpdateImageResponse {
            image: Some(to_cd(rec)),
        }))
    }

    async fn delete(&self, r: Request<cd::DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let d = self.0.clone();
        blocking(move || {
            if let Some(t) = &r.target {
                let cur = image::get(&d.store, &ns, &r.name)?;
                if cur.target.digest.to_string() != t.digest {
                    return Err(Error::Precondition(format!(
                        "image {:?} points at {}, not {}",
                        r.name, cur.target.digest, t.digest
                    )));
                }
            }
            image::delete(&d.store, &d.events, &ns, &r.name)
        })
        .await?;
        Ok(Response::new(()))
    }
}
