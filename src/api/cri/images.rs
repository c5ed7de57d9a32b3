//! CRI's ImageService on nook's images in the `k8s.io` namespace. An image's CRI id is its
//! config digest (as containerd's CRI plugin has it); the image records naming the same config
//! are its tags and digests. Pulls go through the same pull-and-unpack path as `nook pull`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::cri::v1 as cri;
use crate::api::cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::{ensure_namespace, NAMESPACE};
use crate::api::blocking;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::image::auth::{self, AuthSources, Credentials};
use crate::image::manifest::PlatformSelector;
use crate::image::pull::PullOptions;
use crate::image::registry::Registry;
use crate::image::{self, ImageRecord, Reference};

/// The ImageService over a daemon, with one registry client (its token cache) for pulls
/// without credentials of their own.
pub struct Images {
    d: Arc<Daemon>,
    registry: Arc<Registry>,
}

impl Images {
    pub fn new(d: Arc<Daemon>) -> Images {
        let registry = Registry::new(d.config.registry.clone(), AuthSources::default());
        Images { d, registry }
    }
}

type R<T> = std::result::Result<Response<T>, Status>;

/// One CRI image: the records sharing a config digest.
struct Found {
    id: String,
    records: Vec<ImageRecord>,
    manifest_digest: String,
    size: u64,
    user: String,
}

/// The image records of `k8s.io` grouped by config digest (this machine's platform), in the
/// order of their first name.
fn all_images(d: &Daemon) -> Result<Vec<Found>> {
    let mut out: Vec<Found> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for r in image::list(&d.store, NAMESPACE)? {
        let Ok(p) = image::resolve(
            &d.content,
            &d.store,
            NAMESPACE,
            &r.target,
            &PlatformSelector::default(),
        ) else {
            continue; // not for this platform, or content missing: not runnable here
        };
        let Some(p) = p.into_iter().next() else {
            continue;
        };
        let id = p.manifest.config.digest.to_string();
        if let Some(&i) = at.get(&id) {
            out[i].records.push(r);
            continue;
        }
        let user = serde_json::from_slice::<serde_json::Value>(&p.config_bytes)
            .ok()
            .and_then(|v| v["config"]["User"].as_str().map(str::to_string))
            .unwrap_or_default();
        let size = image::size(&d.content, &d.store, NAMESPACE, &r.target).unwrap_or(0);
        at.insert(id.clone(), out.len());
        out.push(Found {
            id,
            manifest_digest: p.manifest_descriptor.digest.to_string(),
            records: vec![r],
            size,
            user,
        });
    }
    Ok(out)
}

/// Whether `s` names an image by its id (`sha256:<hex>` or a hex prefix of at least 12).
fn id_matches(s: &str, id: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let full = id.strip_prefix("sha256:").unwrap_or(id);
    hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && full.starts_with(hex)
}

/// Finds the image `s` names: its id (or an id prefix), a tag or a repo digest.
fn find(d: &Daemon, s: &str) -> Result<Option<Found>> {
    let all = all_images(d)?;
    let want = if s.starts_with("sha256:") {
        None
    } else {
        Reference::parse(s).ok()
    };
    let mut hit = None;
    for f in all {
        if id_matches(s, &f.id) {
            hit = Some(f);
            break;
        }
        if let Some(w) = &want {
            let name = w.to_string();
            let by_name = f.records.iter().any(|r| r.name == name);
            let by_digest = w.digest().is_some_and(|dg| {
                dg.to_string() == f.manifest_digest
                    && f.records
                        .iter()
                        .any(|r| Reference::parse(&r.name).is_ok_and(|x| x.name() == w.name()))
            });
            if by_name || by_digest {
                hit = Some(f);
                break;
            }
        }
    }
    Ok(hit)
}

/// The image a container config names: (a name of its record, its id, its repo digest).
pub(super) fn lookup(d: &Daemon, s: &str) -> Result<Option<(String, String, String)>> {
    Ok(find(d, s)?.map(|f| {
        let name = f
            .records
            .iter()
            .find(|r| !r.name.contains('@'))
            .or(f.records.first())
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let repo = Reference::parse(&name)
            .map(|r| r.name().to_string())
            .unwrap_or_default();
        (name, f.id.clone(), format!("{repo}@{}", f.manifest_digest))
    }))
}

/// The CRI view of an image: tags, `repo@digest`s, size and user.
fn to_cri(f: &Found) -> cri::Image {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for r in &f.records {
        let Ok(rf) = Reference::parse(&r.name) else {
            continue;
        };
        if rf.digest().is_none() {
            tags.push(r.name.clone());
        }
        let d = format!("{}@{}", rf.name(), f.manifest_digest);
        if !digests.contains(&d) {
            digests.push(d);
        }
    }
    // `USER uid[:gid]` gives a uid, `USER name[:group]` a username
    let user = f.user.split(':').next().unwrap_or("");
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(cri::Int64Value { value: n }), String::new()),
        Err(_) if user.is_empty() => (Some(cri::Int64Value { value: 0 }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    cri::Image {
        id: f.id.clone(),
        repo_tags: tags,
        repo_digests: digests,
        size: f.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: f.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// The credentials an AuthConfig carries: username/password, or a docker `auth` field;
/// identity and registry tokens are refused as not supported.
fn credentials(a: &cri::AuthConfig) -> Result<Option<Credentials>> {
    if !a.identity_token.is_empty() || !a.registry_token.is_empty() {
        return Err(Error::InvalidArgument(
            "identity_token and registry_token auth are not supported by nook: give username and password (or auth)".into(),
        ));
    }
    if !a.username.is_empty() {
        return Ok(Some(Credentials {
            username: a.username.clone(),
            password: a.password.clone(),
        }));
    }
    if !a.auth.is_empty() {
        return auth::decode_auth(&a.auth).map(Some).ok_or_else(|| {
            Error::InvalidArgument("auth is not base64 of username:password".into())
        });
    }
    Ok(None)
}

fn spec_image(s: Option<cri::ImageSpec>) -> std::result::Result<String, Status> {
    match s.map(|s| s.image) {
        Some(i) if !i.is_empty() => Ok(i),
        _ => Err(Status::invalid_argument(
            "no image given (ImageSpec.image is empty)",
        )),
    }
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(&self, r: Request<cri::ListImagesRequest>) -> R<cri::ListImagesResponse> {
        let filter = r
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let d = self.d.clone();
        let images = blocking(move || {
            let list = match filter {
                Some(f) => find(&d, &f)?.into_iter().collect(),
                None => all_images(&d)?,
            };
            Ok(list.iter().map(to_cri).collect())
        })
        .await?;
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        r: Request<cri::ImageStatusRequest>,
    ) -> R<cri::ImageStatusResponse> {
        let req = r.into_inner();
        let name = spec_image(req.image)?;
        let d = self.d.clone();
        let (image, info) = blocking(move || {
            let Some(f) = find(&d, &name)? else {
                // CRI: an unknown image is no error, just no image
                return Ok((None, HashMap::new()));
            };
            let mut info = HashMap::new();
            if req.verbose {
                let v = serde_json::json!({
                    "id": f.id,
                    "names": f.records.iter().map(|r| &r.name).collect::<Vec<_>>(),
                    "manifest": f.manifest_digest,
                    "namespace": NAMESPACE,
                    "snapshotter": d.snapshotters.default_name(),
                });
                info.insert("info".to_string(), v.to_string());
            }
            Ok((Some(to_cri(&f)), info))
        })
        .await?;
        Ok(Response::new(cri::ImageStatusResponse { image, info }))
    }

    async fn pull_image(&self, r: Request<cri::PullImageRequest>) -> R<cri::PullImageResponse> {
        let req = r.into_inner();
        let name = spec_image(req.image)?;
        let reference = Reference::parse(&name)?;
        ensure_namespace(&self.d).await?;
        let registry = match req.auth.as_ref().map(credentials).transpose()?.flatten() {
            // credentials for this pull only: a registry client of its own
            Some(c) => Registry::new(
                self.d.config.registry.clone(),
                AuthSources {
                    given: Some((reference.domain().to_string(), c)),
                    ..AuthSources::default()
                },
            ),
            None => self.registry.clone(),
        };
        let opts = PullOptions {
            platforms: PlatformSelector::default(),
            max_concurrent_downloads: self.d.config.images.max_concurrent_downloads as usize,
            labels: BTreeMap::new(),
        };
        let pulled = crate::daemon::pull::pull_unpacked(
            &self.d,
            &registry,
            NAMESPACE,
            &name,
            &opts,
            &|_| {},
        )
        .await?;
        let d = self.d.clone();
        let id = blocking(move || {
            let p = image::resolve(
                &d.content,
                &d.store,
                NAMESPACE,
                &pulled.image.target,
                &PlatformSelector::default(),
            )?;
            p.into_iter()
                .next()
                .map(|p| p.manifest.config.digest.to_string())
                .ok_or_else(|| Error::NotFound(format!("{name}: no image for this platform")))
        })
        .await?;
        Ok(Response::new(cri::PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        r: Request<cri::RemoveImageRequest>,
    ) -> R<cri::RemoveImageResponse> {
        let name = spec_image(r.into_inner().image)?;
        let d = self.d.clone();
        blocking(move || {
            // CRI: removing an image that is not there succeeds
            let Some(f) = find(&d, &name)? else {
                return Ok(());
            };
            for rec in &f.records {
                match image::delete(&d.store, &d.events, NAMESPACE, &rec.name) {
                    Ok(_) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            d.mutated(true);
            Ok(())
        })
        .await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _r: Request<cri::ImageFsInfoRequest>,
    ) -> R<cri::ImageFsInfoResponse> {
        let d = self.d.clone();
        let fs = blocking(move || {
            let dir = d
                .paths
                .root
                .join("snapshots")
                .join(d.snapshotters.default_name());
            let u = crate::snapshot::copy::disk_usage(&dir).unwrap_or_default();
            Ok(cri::FilesystemUsage {
                timestamp: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: dir.display().to_string(),
                }),
                used_bytes: Some(cri::UInt64Value { value: u.size }),
                inodes_used: Some(cri::UInt64Value { value: u.inodes }),
            })
        })
        .await?;
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_by_full_digest_or_long_prefix() {
        let id = format!("sha256:{}", "ab12".repeat(16));
        assert!(id_matches(&id, &id));
        assert!(id_matches(&"ab12".repeat(16), &id));
        assert!(id_matches("ab12ab12ab12", &id));
        assert!(id_matches("sha256:ab12ab12ab12", &id));
        // too short to be an id, not hex, or another image
        assert!(!id_matches("ab12ab12ab1", &id));
        assert!(!id_matches("busybox:latest", &id));
        assert!(!id_matches("ab12ab12ab13", &id));
    }

    #[test]
    fn auth_config_credentials() {
        let a = cri::AuthConfig {
            username: "alice".into(),
            password: "s3cret".into(),
            ..Default::default()
        };
        assert_eq!(credentials(&a).unwrap().unwrap().password, "s3cret");
        // docker's base64 `auth` field
        let a = cri::AuthConfig {
            auth: "Ym9iOnB3".into(),
            ..Default::default()
        };
        let c = credentials(&a).unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("bob", "pw"));
        assert!(credentials(&cri::AuthConfig::default()).unwrap().is_none());
        let e = credentials(&cri::AuthConfig {
            auth: "not base64!".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("username:password"), "{e}");
        let e = credentials(&cri::AuthConfig {
            identity_token: "t".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}
