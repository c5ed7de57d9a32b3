//! Prerequisite checks before nookd touches any namespace. Each failure is one line that names
//! the missing piece and the fix.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A subordinate id range from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// What the checks found, needed to build the namespaces.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub subuid: SubRange,
    pub subgid: SubRange,
    pub newuidmap: PathBuf,
    pub newgidmap: PathBuf,
}

/// Finds `name` in PATH (or returns it if it is a path).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Parses a subuid/subgid file's text and returns every range for the user (by name or uid).
pub fn parse_subid(text: &str, user: &str, uid: u32) -> Vec<SubRange> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let mut it = l.split(':');
            let (who, start, count) = (it.next()?, it.next()?, it.next()?);
            if who != user && who != uid.to_string() {
                return None;
            }
            Some(SubRange {
                start: start.trim().parse().ok()?,
                count: count.trim().parse().ok()?,
            })
        })
        .filter(|r| r.count > 0)
        .collect()
}

/// Suggests a free 65536-id range after every range in the file.
fn suggest_range(text: &str) -> u64 {
    let end = text
        .lines()
        .filter_map(|l| {
            let v: Vec<&str> = l.split(':').collect();
            let s: u64 = v.get(1)?.parse().ok()?;
            let c: u64 = v.get(2)?.parse().ok()?;
            Some(s + c)
        })
        .max()
        .unwrap_or(100000);
    end.max(100000)
}

fn subid(file: &str, user: &str, uid: u32) -> Result<SubRange> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let ranges = parse_subid(&text, user, uid);
    match ranges.into_iter().max_by_key(|r| r.count) {
        Some(r) if r.count >= 65536 => Ok(r),
        Some(r) => {
            tracing::warn!(
                "{file} gives {user} only {} ids (65536 are needed for most images); images owning higher ids will fail to unpack",
                r.count
            );
            Ok(r)
        }
        None => {
            let s = suggest_range(&text);
            let opt = if file.ends_with("subuid") {
                "subuids"
            } else {
                "subgids"
            };
            Err(Error::Precondition(format!(
                "no entry for user {user} in {file}: ask an administrator to add the line \"{user}:{s}:65536\" (e.g. `sudo usermod --add-{opt} {s}-{} {user}`)",
                s + 65535
            )))
        }
    }
}

fn setuid_helper(name: &str, pkg: &str) -> Result<PathBuf> {
    let p = which(name).ok_or_else(|| {
        Error::Precondition(format!(
            "{name} not found: install it (`sudo apt-get install {pkg}` or your distribution's shadow-utils/uidmap package)"
        ))
    })?;
    let md = std::fs::metadata(&p).map_err(|e| Error::io(format!("stat {}", p.display()), e))?;
    let setuid_root = md.uid() == 0 && md.permissions().mode() & 0o4000 != 0;
    let has_caps = xattr_present(&p, "security.capability");
    if !setuid_root && !has_caps {
        return Err(Error::Precondition(format!(
            "{} is neither setuid root nor has file capabilities: run `sudo chmod u+s {}` (or reinstall {pkg})",
            p.display(),
            p.display()
        )));
    }
    Ok(p)
}

fn xattr_present(p: &Path, name: &str) -> bool {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Ok(path), Ok(name)) = (CString::new(p.as_os_str().as_bytes()), CString::new(name)) else {
        return false;
    };
    // SAFETY: both strings are valid NUL-terminated C strings; a NULL buffer of size 0 asks
    // only for the size.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    n > 0
}

/// Checks a directory nook keeps state in: exists (or can be made), owned by us, private.
pub fn check_owned_dir(dir: &Path, what: &str, uid: u32) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(md) => {
            if md.uid() != uid {
                return Err(Error::Precondition(format!(
                    "{what} {} is owned by uid {}, not by you (uid {uid}): after `su`/`sudo -u`, log in properly (e.g. `machinectl shell {}@`) or export XDG_RUNTIME_DIR to a directory you own",
                    dir.display(),
                    md.uid(),
                    nix::unistd::User::from_uid(uid.into()).ok().flatten().map(|u| u.name).unwrap_or_default()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Precondition(format!(
            "{what} {} does not exist: log in through a session manager (systemd-logind creates /run/user/$UID), or create it (mode 0700) and export XDG_RUNTIME_DIR",
            dir.display()
        ))),
        Err(e) => Err(Error::io(format!("checking {what} {}", dir.display()), e)),
    }
}

/// Whether `/dev/net/tun` can be opened for reading and writing.
pub fn check_tun() -> Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map(|_| ())
        .map_err(|e| {
            Error::Precondition(format!(
                "cannot open /dev/net/tun ({e}): containers need it for their network; ask an administrator to run `sudo chmod 0666 /dev/net/tun` (and `modprobe tun`), or set [network] driver = \"none\""
            ))
        })
}

/// Runs every check. `state_from_xdg` tells whether the state dir came from XDG_RUNTIME_DIR.
pub fn preflight(net_driver: &str, state_from_xdg: bool) -> Result<Preflight> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    if uid == 0 {
        return Err(Error::Precondition(
            "nookd is running as root: rootful mode is not supported yet; run nookd as an ordinary user (systemctl --user start nook)".into(),
        ));
    }
    let user = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    if state_from_xdg {
        match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            None => return Err(Error::Precondition(
                "XDG_RUNTIME_DIR is not set: log in through a session manager (not plain `su`), or export XDG_RUNTIME_DIR=/run/user/$(id -u), or pass --state DIR".into(),
            )),
            Some(d) => check_owned_dir(Path::new(&d), "XDG_RUNTIME_DIR", uid)?,
        }
    }
    let subuid = subid("/etc/subuid", &user, uid)?;
    let subgid = subid("/etc/subgid", &user, uid)?;
    let newuidmap = setuid_helper("newuidmap", "uidmap")?;
    let newgidmap = setuid_helper("newgidmap", "uidmap")?;
    match net_driver {
        "none" => {}
        d => {
            let slirp = which("slirp4netns");
            let pasta = which("pasta");
            let ok = match d {
                "slirp4netns" => slirp.is_some(),
                "pasta" => pasta.is_some(),
                _ => slirp.is_some() || pasta.is_some(),
            };
            if !ok {
                let (bin, pkg) = if d == "pasta" {
                    ("pasta", "passt")
                } else {
                    ("slirp4netns", "slirp4netns")
                };
                return Err(Error::Precondition(format!(
                    "{bin} not found: install it (`sudo apt-get install {pkg}`), or set [network] driver = \"none\" in config.toml"
                )));
            }
            check_tun()?;
        }
    }
    Ok(Preflight {
        uid,
        gid,
        user,
        subuid,
        subgid,
        newuidmap,
        newgidmap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_parsing() {
        let t = "alice:100000:65536\n# c\nbob:165536:65536\n1001:231072:1000\n";
        assert_eq!(
            parse_subid(t, "bob", 1000),
            vec![SubRange {
                start: 165536,
                count: 65536
            }]
        );
        assert_eq!(parse_subid(t, "carol", 1001)[0].start, 231072);
        assert!(parse_subid(t, "dave", 5).is_empty());
        assert_eq!(suggest_range(t), 232072);
    }
}
