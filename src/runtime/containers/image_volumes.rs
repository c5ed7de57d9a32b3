//! Image volumes (CRI's `Mount.image`, Kubernetes' ImageVolume): an image's filesystem mounted
//! read-only into a container, whole or one directory of it. Each is a view snapshot of the
//! image, labelled with its container as the rootfs snapshot is (the container record names it,
//! so GC keeps it while the container lives and collects it after), mounted at
//! `<bundle>/image-volumes/<n>` in nookd's mount namespace and bound from there, read-only, at
//! its destination. Like the rootfs it is mounted when a task is made and unmounted when the
//! task is deleted.

use super::*;

/// The bundle's directory of image volume mount points.
const DIR: &str = "image-volumes";

/// What a new container asks for: an image (as stored in the namespace), mounted at
/// `destination`, only its `sub_path` if that is given.
#[derive(Debug, Clone, Default)]
pub struct ImageMount {
    pub image: String,
    /// The image's id (its config's digest), reported back as the mount's image ref.
    pub image_id: String,
    pub destination: String,
    pub sub_path: String,
}

/// An image volume of a container, as its record keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageVolume {
    pub image: String,
    #[serde(default)]
    pub image_id: String,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub destination: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub_path: String,
}

/// Where image volume `n` of the container whose bundle is `bundle` is mounted.
fn mountpoint(bundle: &Path, n: usize) -> PathBuf {
    bundle.join(DIR).join(n.to_string())
}

/// The key of the view snapshot of image volume `n` of container `id`.
fn snapshot_key(id: &str, n: usize) -> String {
    format!("{id}-image-volume-{n}")
}

/// Makes and mounts the image volumes a new container asks for, in its `snapshotter`. Returns
/// each with the path to bind at its destination. On failure nothing made here is left.
pub(super) fn mount_new(
    d: &Deps,
    ns: &str,
    id: &str,
    snapshotter: &str,
    bundle: &Path,
    want: &[ImageMount],
) -> Result<Vec<(ImageVolume, PathBuf)>> {
    let mut out = Vec::new();
    for (n, m) in want.iter().enumerate() {
        match mount_one(d, ns, id, snapshotter, bundle, n, m) {
            Ok(v) => out.push(v),
            Err(e) => {
                undo(d, ns, id, snapshotter, bundle);
                return Err(e);
            }
        }
    }
    Ok(out)
}

fn mount_one(
    d: &Deps,
    ns: &str,
    id: &str,
    snapshotter: &str,
    bundle: &Path,
    n: usize,
    m: &ImageMount,
) -> Result<(ImageVolume, PathBuf)> {
    let sub = relative_sub_path(&m.sub_path).map_err(|why| {
        Error::InvalidArgument(format!(
            "image volume at {}: sub-path {:?} {why}",
            m.destination, m.sub_path
        ))
    })?;
    let platform = crate::image::PlatformSelector::One(crate::image::Platform::host());
    let unpacked = crate::image::unpack::unpack_image(
        &d.content,
        &d.store,
        &d.snapshotters,
        ns,
        &m.image,
        Some(snapshotter).filter(|s| !s.is_empty()),
        &platform,
    )?;
    let sn = d.snapshotters.get(Some(&unpacked.snapshotter))?;
    let target = mountpoint(bundle, n);
    std::fs::create_dir_all(&target)
        .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
    let key = snapshot_key(id, n);
    let mut labels = BTreeMap::new();
    labels.insert("nook.container".to_string(), id.to_string());
    let mounts = crate::snapshot::Snapshotter::view(
        sn.as_ref(),
        ns,
        &key,
        Some(&unpacked.chain_id),
        labels,
    )?;
    d.mounts.mount_all(&mounts, &target)?;
    let source = if sub.is_empty() {
        target.clone()
    } else {
        let p = super::user::resolve_in_root(&target, &sub);
        if std::fs::symlink_metadata(&p).is_err() {
            return Err(Error::NotFound(format!(
                "image volume at {}: image {} has no {sub:?}: give a sub-path that is in the image",
                m.destination, m.image
            )));
        }
        p
    };
    Ok((
        ImageVolume {
            image: m.image.clone(),
            image_id: m.image_id.clone(),
            snapshotter: unpacked.snapshotter,
            snapshot_key: key,
            destination: m.destination.clone(),
            sub_path: sub,
        },
        source,
    ))
}

/// A sub-path as a path inside the image: relative, with no `..`.
fn relative_sub_path(p: &str) -> std::result::Result<String, &'static str> {
    if p.starts_with('/') {
        return Err("must be relative to the image's root");
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err("must not contain \"..\"");
    }
    Ok(parts.join("/"))
}

/// Mounts the image volumes of `r` again where they are not (a task made again after its
/// delete, or after a reboot).
pub(super) fn ensure_mounted(d: &Deps, ns: &str, r: &ContainerRecord, bundle: &Path) -> Result<()> {
    for (n, v) in r.image_volumes.iter().enumerate() {
        super::mount_snapshot_at(
            d,
            ns,
            &v.snapshotter,
            &v.snapshot_key,
            &mountpoint(bundle, n),
        )?;
    }
    Ok(())
}

/// Unmounts every image volume mounted under the bundle (their snapshots stay).
pub(super) fn unmount_all(d: &Deps, bundle: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(bundle.join(DIR)) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if d.mounts.is_mounted(&p) {
            d.mounts.unmount(&p)?;
        }
    }
    Ok(())
}

/// Undoes a creation's image volumes: unmounts them and removes their snapshots.
pub(super) fn undo(d: &Deps, ns: &str, id: &str, snapshotter: &str, bundle: &Path) {
    let _ = unmount_all(d, bundle);
    let Ok(entries) = std::fs::read_dir(bundle.join(DIR)) else {
        return;
    };
    let Ok(sn) = d
        .snapshotters
        .get(Some(snapshotter).filter(|s| !s.is_empty()))
    else {
        return;
    };
    for e in entries.flatten() {
        if let Some(n) = e.file_name().to_str().and_then(|n| n.parse::<usize>().ok()) {
            let _ = crate::snapshot::Snapshotter::remove(sn.as_ref(), ns, &snapshot_key(id, n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_inside_the_image() {
        assert_eq!(relative_sub_path("").unwrap(), "");
        assert_eq!(relative_sub_path("etc").unwrap(), "etc");
        assert_eq!(relative_sub_path("./usr//share/").unwrap(), "usr/share");
        assert!(relative_sub_path("/etc").is_err());
        assert!(relative_sub_path("../x").is_err());
        assert!(relative_sub_path("a/../../x").is_err());
    }
}
