//! containerd's Diff service. Apply unpacks a layer from the content store onto the mounts of
//! an active snapshot (how `ctr images pull` unpacks): the mounts are matched back to the
//! snapshot that gave them, and nook's own layer applier ([`crate::diff::apply_layer`]) writes
//! into it, whiteouts in the snapshotter's form. Diff makes a layer from two mounts (mounted
//! by nookd under its state directory, compared by [`crate::diff::changes`]) into the content
//! store, compressed as the media type asks, labelled with its uncompressed digest.

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
        r: Request<cd::DiffRequest>,
    ) -> Result<Response<cd::DiffResponse>, Status> {
        let ns = namespace(&r)?;
        let lease = super::lease(&r);
        let r = r.into_inner();
        let media_type = if r.media_type.is_empty() {
            "application/vnd.oci.image.layer.v1.tar+gzip".to_string()
        } else {
            r.media_type.clone()
        };
        let compression = crate::diff::compression_of_media_type(&media_type)?;
        let mut labels = super::labels(r.labels)?;
        let d = self.0.clone();
        let conv = |m: Vec<containerd_client::types::Mount>| -> Vec<crate::snapshot::mount::Mount> {
            m.into_iter()
                .map(|m| crate::snapshot::mount::Mount {
                    kind: m.r#type,
                    source: m.source,
                    options: m.options,
                })
                .collect()
        };
        let (left, right) = (conv(r.left), conv(r.right));
        if right.is_empty() {
            return Err(Status::invalid_argument(
                "the right (upper) mounts are required",
            ));
        }
        let reference = if r.r#ref.is_empty() {
            format!("diff-{}", rand::random::<u64>())
        } else {
            r.r#ref
        };
        let ns2 = ns.clone();
        let (digest, size) = blocking(move || {
            let tmp = d
                .paths
                .state
                .join("diff")
                .join(format!("{}", rand::random::<u64>()));
            let (lower, upper) = (tmp.join("lower"), tmp.join("upper"));
            for p in [&lower, &upper] {
                std::fs::create_dir_all(p)
                    .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
            }
            let res = (|| {
                if !left.is_empty() {
                    crate::snapshot::mount::mount_all(&left, &lower)?;
                }
                crate::snapshot::mount::mount_all(&right, &upper)?;
                let mut w = d.content.writer(&reference, None)?;
                let mut hasher = crate::content::Hasher::new(crate::content::Algorithm::Sha256);
                let err = |e| Error::io("compressing the layer", e);
                match compression {
                    Some(crate::diff::Compression::Gzip) => {
                        let mut z =
                            flate2::write::GzEncoder::new(&mut w, flate2::Compression::fast());
                        crate::diff::changes::write_diff(
                            &lower,
                            &upper,
                            Hashing(&mut z, &mut hasher),
                        )?;
                        z.finish().map_err(err)?;
                    }
                    Some(crate::diff::Compression::Zstd) => {
                        let mut z = zstd::Encoder::new(&mut w, 3).map_err(err)?;
                        crate::diff::changes::write_diff(
                            &lower,
                            &upper,
                            Hashing(&mut z, &mut hasher),
                        )?;
                        z.finish().map_err(err)?;
                    }
                    None | Some(crate::diff::Compression::None) => {
                        crate::diff::changes::write_diff(
                            &lower,
                            &upper,
                            Hashing(&mut w, &mut hasher),
                        )?
                    }
                }
                let size = w.offset();
                labels.insert(
                    "containerd.io/uncompressed".into(),
                    hasher.finish().to_string(),
                );
                let dg = w.commit(&d.content, &d.store, &ns2, labels)?;
                Ok((dg, size))
            })();
            for p in [&upper, &lower] {
                if crate::runtime::containers::is_mountpoint(p) {
                    let _ = crate::snapshot::mount::unmount(p);
                }
            }
            let _ = std::fs::remove_dir_all(&tmp);
            res
        })
        .await?;
        super::hold(
            &self.0,
            &ns,
            lease.as_deref(),
            "content",
            &digest.to_string(),
        )?;
        Ok(Response::new(cd::DiffResponse {
            diff: Some(CdDescriptor {
                media_type,
                digest: digest.to_string(),
                size: size as i64,
                annotations: Default::default(),
            }),
        }))
    }
}

/// Hands what it is given to `.0` and hashes it into `.1` (the layer's diff ID is the digest
/// of the uncompressed tar).
struct Hashing<'a, W: std::io::Write>(&'a mut W, &'a mut crate::content::Hasher);

impl<W: std::io::Write> std::io::Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
