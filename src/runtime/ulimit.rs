//! `--ulimit NAME=SOFT[:HARD]`: docker's names, parsed and checked against nookd's own limits
//! (a rootless runtime cannot raise a hard limit above its own).

use crate::error::{Error, Result};

/// A `--ulimit NAME=SOFT[:HARD]` (docker's names; `-1` or `unlimited` is no limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// docker's name: `nofile`, `nproc`, ...
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// The names `--ulimit` takes, as docker: each is `RLIMIT_` + the name in capitals.
pub const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// RLIM_INFINITY.
pub const UNLIMITED: u64 = u64::MAX;

impl Ulimit {
    /// Parses `nofile=1024:4096`, `nofile=4096` (soft = hard), `core=-1`.
    pub fn parse(s: &str) -> Result<Ulimit> {
        let bad = |why: String| {
            Error::InvalidArgument(format!(
                "invalid --ulimit {s:?}: {why} (use --ulimit NAME=SOFT[:HARD], e.g. nofile=1024:4096)"
            ))
        };
        let (name, val) = s
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=SOFT[:HARD]".into()))?;
        if !ULIMIT_NAMES.contains(&name) {
            return Err(bad(format!(
                "unknown limit {name:?}: use one of {}",
                ULIMIT_NAMES.join(", ")
            )));
        }
        let num = |v: &str| -> Result<u64> {
            match v {
                "-1" | "unlimited" => Ok(UNLIMITED),
                _ => v
                    .parse::<u64>()
                    .map_err(|_| bad(format!("{v:?} is not a number"))),
            }
        };
        let (soft, hard) = match val.split_once(':') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(val)?, num(val)?),
        };
        if soft > hard {
            return Err(bad(format!(
                "the soft limit {soft} is above the hard limit {hard}"
            )));
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }

    /// The OCI name: `RLIMIT_NOFILE`.
    pub fn rlimit_type(&self) -> String {
        format!("RLIMIT_{}", self.name.to_ascii_uppercase())
    }

    pub(crate) fn resource(&self) -> Option<nix::sys::resource::Resource> {
        use nix::sys::resource::Resource as R;
        Some(match self.name.as_str() {
            "core" => R::RLIMIT_CORE,
            "cpu" => R::RLIMIT_CPU,
            "data" => R::RLIMIT_DATA,
            "fsize" => R::RLIMIT_FSIZE,
            "locks" => R::RLIMIT_LOCKS,
            "memlock" => R::RLIMIT_MEMLOCK,
            "msgqueue" => R::RLIMIT_MSGQUEUE,
            "nice" => R::RLIMIT_NICE,
            "nofile" => R::RLIMIT_NOFILE,
            "nproc" => R::RLIMIT_NPROC,
            "rss" => R::RLIMIT_RSS,
            "rtprio" => R::RLIMIT_RTPRIO,
            "rttime" => R::RLIMIT_RTTIME,
            "sigpending" => R::RLIMIT_SIGPENDING,
            "stack" => R::RLIMIT_STACK,
            _ => return None,
        })
    }

    /// A hard limit above nookd's own cannot be set (raising one needs privileges a user
    /// namespace lacks): refused with one line naming the limit that applies.
    pub fn check_allowed(&self) -> Result<()> {
        let Some(res) = self.resource() else {
            return Ok(());
        };
        let Ok((_, own_hard)) = nix::sys::resource::getrlimit(res) else {
            return Ok(());
        };
        if self.hard > own_hard {
            let show = |v: u64| {
                if v == UNLIMITED {
                    "unlimited".to_string()
                } else {
                    v.to_string()
                }
            };
            return Err(Error::InvalidArgument(format!(
                "--ulimit {}: the hard limit {} is over nookd's own hard limit of {} for {}, which a rootless container cannot exceed: ask for at most {} (or raise nookd's, e.g. Limit{}= in nook.service)",
                self.name,
                show(self.hard),
                show(own_hard),
                self.name,
                show(own_hard),
                self.name.to_ascii_uppercase()
            )));
        }
        Ok(())
    }
}
