//! Resolving a container's `--user` against the image's own `/etc/passwd` and `/etc/group`.
//!
//! The files are read from the container's root filesystem, never from the host. Symlinks inside
//! the rootfs are followed *within* it (an image whose `/etc/passwd` points at `/../../home/x`
//! must not make nookd read a host file), see [`resolve_in_root`].

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The identity a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the primary gid first (as docker sets them: `id` shows
    /// `groups=0(root)`), then the groups of /etc/group that list the user by name.
    pub additional_gids: Vec<u32>,
    /// The home directory from /etc/passwd, if the user is listed there.
    pub home: Option<String>,
}

/// Resolves `path` (absolute, as seen inside the container) under `root`, following symlinks
/// without ever leaving `root` (`..` at the top stays at the top, absolute link targets are
/// taken relative to `root`). Gives up after 40 links, as the kernel does.
pub fn resolve_in_root(root: &Path, path: &str) -> PathBuf {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .rev()
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&cur);
        candidate.push(&c);
        match std::fs::read_link(&candidate) {
            Ok(target) if links < 40 => {
                links += 1;
                if target.is_absolute() {
                    cur.clear();
                }
                let mut parts: Vec<String> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                parts.reverse();
                pending.extend(parts);
            }
            _ => cur.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&cur);
    out
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn read_db(root: &Path, file: &str) -> String {
    std::fs::read_to_string(resolve_in_root(root, file)).unwrap_or_default()
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .unwrap_or(&"")
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// Resolves a docker-style user string — `""` (root), `name`, `uid`, `name:group`, `uid:gid`,
/// `name:gid`, `uid:group` — against the rootfs's /etc/passwd and /etc/group.
///
/// A numeric uid need not be listed (docker allows it; its gid is then 0 unless given). A name
/// that is not listed is an error naming the image file that was searched.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser> {
    let spec = spec.trim();
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = parse_passwd(&read_db(rootfs, "/etc/passwd"));
    let user = if user.is_empty() { "0" } else { user };
    let entry = if let Ok(uid) = user.parse::<u32>() {
        passwd.iter().find(|e| e.uid == uid)
    } else {
        Some(passwd.iter().find(|e| e.name == user).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "user {user:?} is not in the image's /etc/passwd: use a numeric uid (-u 1000:1000) or a user the image defines"
            ))
        })?)
    };
    let uid = match entry {
        Some(e) => e.uid,
        None => user.parse::<u32>().unwrap_or(0),
    };
    let groups = parse_group(&read_db(rootfs, "/etc/group"));
    let gid = match group {
        Some(g) if !g.is_empty() => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups.iter().find(|e| e.name == g).map(|e| e.gid).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "group {g:?} is not in the image's /etc/group: use a numeric gid or a group the image defines"
                ))
            })?,
        },
        _ => entry.map(|e| e.gid).unwrap_or(0),
    };
    let mut additional_gids = vec![gid];
    if let Some(e) = entry {
        // docker: supplementary groups come from /etc/group only when no group was forced
        if group.is_none() {
            for g in &groups {
                if g.members.contains(&e.name) && g.gid != gid && !additional_gids.contains(&g.gid)
                {
                    additional_gids.push(g.gid);
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()),
    })
}

/// Resolves a `--group-add` value, a group name of the image's /etc/group or a numeric gid.
pub fn resolve_group(rootfs: &Path, group: &str) -> Result<u32> {
    let group = group.trim();
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    parse_group(&read_db(rootfs, "/etc/group"))
        .iter()
        .find(|e| e.name == group)
        .map(|e| e.gid)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "--group-add {group:?}: no such group in the image's /etc/group: use a numeric gid or a group the image defines"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nwww-data:x:33:33:www:/var/www:/usr/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nwww-data:x:33:\nalice:x:1000:\naudio:x:29:alice,bob\nstaff:x:50:bob\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn empty_is_root() {
        let r = rootfs();
        let u = resolve_user(r.path(), "").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.home.as_deref(), Some("/root"));
    }

    #[test]
    fn by_name_with_supplementary_groups() {
        let r = rootfs();
        let u = resolve_user(r.path(), "alice").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![1000, 29]);
        assert_eq!(u.home.as_deref(), Some("/home/alice"));
    }

    #[test]
    fn name_and_group_names() {
        let r = rootfs();
        let u = resolve_user(r.path(), "www-data:staff").unwrap();
        assert_eq!((u.uid, u.gid), (33, 50));
        assert_eq!(u.additional_gids, vec![50]);
        assert_eq!(resolve_user(r.path(), "").unwrap().additional_gids, vec![0]);
        assert_eq!(
            resolve_user(r.path(), "www-data").unwrap().additional_gids,
            vec![33]
        );
    }

    #[test]
    fn numeric_forms() {
        let r = rootfs();
        assert_eq!(resolve_user(r.path(), "33").unwrap().gid, 33);
        let u = resolve_user(r.path(), "4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home), (4242, 0, None));
        let u = resolve_user(r.path(), "4242:77").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 77));
        let u = resolve_user(r.path(), "1000:audio").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 29));
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        let r = rootfs();
        let e = resolve_user(r.path(), "mallory").unwrap_err().to_string();
        assert!(e.contains("mallory") && e.contains("/etc/passwd"), "{e}");
        let e = resolve_user(r.path(), "alice:nogroup")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nogroup") && e.contains("/etc/group"), "{e}");
    }

    #[test]
    fn group_add_names_and_numbers() {
        let r = rootfs();
        assert_eq!(resolve_group(r.path(), "audio").unwrap(), 29);
        assert_eq!(resolve_group(r.path(), "4711").unwrap(), 4711);
        let e = resolve_group(r.path(), "wheel").unwrap_err().to_string();
        assert!(e.contains("wheel") && e.contains("/etc/group"), "{e}");
    }

    #[test]
    fn no_passwd_file_numeric_ok_names_fail() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(resolve_user(d.path(), "0").unwrap().uid, 0);
        assert!(resolve_user(d.path(), "root").is_err());
    }

    #[test]
    fn symlinks_stay_inside_the_rootfs() {
        let r = rootfs();
        // an absolute link that would escape on the host resolves inside the rootfs
        std::fs::create_dir_all(r.path().join("real")).unwrap();
        std::fs::write(
            r.path().join("real/passwd"),
            "bob:x:2000:2000::/home/bob:/bin/sh\n",
        )
        .unwrap();
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/../../../real/passwd", r.path().join("etc/passwd")).unwrap();
        assert_eq!(
            resolve_in_root(r.path(), "/etc/passwd"),
            r.path().join("real/passwd")
        );
        assert_eq!(resolve_user(r.path(), "bob").unwrap().uid, 2000);
        // relative link with .. beyond the top is clamped
        std::os::unix::fs::symlink("../../../../etc", r.path().join("real/up")).unwrap();
        assert_eq!(
            resolve_in_root(r.path(), "/real/up/group"),
            r.path().join("etc/group")
        );
    }
}
