//! containerd's Diff service. Apply unpacks a layer from the content store onto the mounts of
//! an active snapshot (how `ctr images pull` unpacks): the mounts are matched back to the
//! snapshot that gave them, and nook's own layer applier ([`crate::diff::apply_layer`]) writes
//! into it, whiteouts in the snapshotter's form. Diff (making a layer from two mounts) is not
//! implemented yet.

use std::sync::Arc;

use containerd_client::services::v1 as cd;
use containerd_client::types::Descriptor as CdDescriptor;
use tonic::{Request, Response, Status};

use super::namespace;
use super::server::diff_server::{Diff, DiffServer};
use crate::api::blocking;
use crate::content::Digest;
use crate::daemon::Daemon;
use crate::error::Error;
use crate::snapshot::{Kind, Snapshotter};

pub struct Svc(Arc<Daemon>);

pub fn service(d: Arc<Daemon>) -> DiffServer<Svc> {
    DiffServer::new(Svc(d)).max_decoding_message_size(crate::api::MAX_MESSAGE)
}

#[tonic::async_trait]
impl Diff for Svc {
    async fn apply(
        &self,
        r: Request<cd::ApplyRequest>,
    ) -> Result<Response<cd::ApplyResponse>, Status> {
        let ns = namespace(&r)?;
        let r = r.into_inner();
        let desc = r
            .diff
            .ok_or_else(|| Status::invalid_argument("diff descriptor is required"))?;
        let dg = Digest::parse(&desc.digest)?;
        let d = self.0.clone();
        let applied = blocking(move || {
            let wanted: Vec<(String, String, Vec<String>)> = r
                .mounts
                .into_iter()
                .map(|m| (m.r#type, m.source, m.options))
                .collect();
            // the active snapshot whose mounts these are
            let mut target = None;
            for st in d.snapshotters.status() {
                if st.error.is_some() {
                    continue;
                }
                let s = d.snapshotters.get(Some(&st.name))?;
                for i in s.walk(&ns)? {
                    if i.kind != Kind::Active {
                        continue;
                    }
                    let m: Vec<(String, String, Vec<String>)> = s
                        .mounts(&ns, &i.name)?
                        .into_iter()
                        .map(|m| (m.kind, m.source, m.options))
                        .collect();
                    if m == wanted {
                        target = Some(s.apply_target(&ns, &i.name)?);
                        break;
                    }
                }
                if target.is_some() {
                    break;
                }
            }
            let (root, whiteouts) = target.ok_or_else(|| {
                Error::InvalidArgument(
                    "the mounts are not those of an active snapshot of this namespace: nook applies layers only into its own snapshots".into(),
                )
            })?;
            let blob = d.content.open_blob(&d.store, &ns, &dg)?;
            crate::diff::apply_layer(blob, &desc.media_type, &root, &whiteouts, None)
        })
        .await?;
        Ok(Response::new(cd::ApplyResponse {
            applied: Some(CdDescriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                digest: applied.diff_id,
                size: applied.size as i64,
                annotations: Default::default(),
            }),
        }))
    }

    async fn diff(
        &self,
        _r: Request<cd::DiffRequest>,
    ) -> Result<Response<cd::DiffResponse>, Status> {
        Err(Status::unimplemented(
            "nook's containerd API does not make layers from mounts yet (Diff)",
        ))
    }
}
