//! `-v` values that name volumes: `NAME:/path[:ro,nocopy]` and docker's anonymous `-v /path`,
//! beside the host-directory binds of [`super::spec::BindMount`].

use super::spec::BindMount;
use crate::error::{Error, Result};

/// A container's use of a named (or anonymous) volume: `-v NAME:/path[:ro,nocopy]`,
/// `-v /path`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeMount {
    /// The volume's name; empty in a request for an anonymous volume (one is made).
    pub name: String,
    pub destination: String,
    #[serde(default)]
    pub read_only: bool,
    /// `nocopy`: the image's content at the path is not copied into a new volume.
    #[serde(default)]
    pub nocopy: bool,
    /// Made for this container (`-v /path`): `rm -v` and `--rm` remove it with it.
    #[serde(default)]
    pub anonymous: bool,
}

/// One `-v` value: a host directory bound, or a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeArg {
    Bind(BindMount),
    Volume(VolumeMount),
}

impl VolumeArg {
    /// Parses `-v`: `/host:/ctr[:opts]` is a bind; `NAME:/ctr[:ro,nocopy]` (a source
    /// without `/`) a named volume; `/ctr[:ro]` alone an anonymous volume, as docker.
    pub fn parse(s: &str) -> Result<VolumeArg> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "invalid volume {s:?}: {why} (use -v /host/path:/container/path[:ro] or -v NAME:/container/path[:ro])"
            ))
        };
        let (name, dst, opts) = match parts.as_slice() {
            [dst] => ("", *dst, ""),
            [dst, opts] if dst.starts_with('/') && !opts.starts_with('/') => ("", *dst, *opts),
            [src, ..] if src.starts_with('/') => return BindMount::parse(s).map(VolumeArg::Bind),
            [src, dst] => (*src, *dst, ""),
            [src, dst, opts] => (*src, *dst, *opts),
            _ => return Err(bad("expected SOURCE:CONTAINER[:OPTIONS]")),
        };
        if !name.is_empty() && crate::volumes::validate_name(name).is_err() {
            return Err(bad(&format!(
                "{name:?} is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
            )));
        }
        if !dst.starts_with('/') {
            return Err(bad("the container path must be absolute"));
        }
        if dst == "/" {
            return Err(bad("cannot mount over the container's /"));
        }
        let mut m = VolumeMount {
            name: name.to_string(),
            destination: dst.to_string(),
            read_only: false,
            nocopy: false,
            anonymous: name.is_empty(),
        };
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => m.read_only = true,
                "rw" => m.read_only = false,
                "nocopy" => m.nocopy = true,
                "z" | "Z" => {}
                other => return Err(bad(&format!("unknown option {other:?} for a volume"))),
            }
        }
        Ok(VolumeArg::Volume(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_args_parse() {
        let v = |s: &str| VolumeArg::parse(s).unwrap();
        assert!(matches!(v("/a:/b"), VolumeArg::Bind(_)));
        let VolumeArg::Volume(m) = v("data:/var/lib/db:ro,nocopy") else {
            panic!()
        };
        assert_eq!(
            (
                m.name.as_str(),
                m.destination.as_str(),
                m.read_only,
                m.nocopy,
                m.anonymous
            ),
            ("data", "/var/lib/db", true, true, false)
        );
        let VolumeArg::Volume(m) = v("/scratch") else {
            panic!()
        };
        assert!(m.anonymous && m.name.is_empty() && !m.read_only);
        let VolumeArg::Volume(m) = v("/scratch:ro") else {
            panic!()
        };
        assert!(m.anonymous && m.read_only);
        for bad in [
            "x:/a",
            "data:rel",
            "data:/",
            "data:/a:shared",
            "rel",
            "a b:/c",
        ] {
            assert!(VolumeArg::parse(bad).is_err(), "{bad}");
        }
    }
}
