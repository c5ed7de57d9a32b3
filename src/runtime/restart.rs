//! Restart policies, as docker has them: `no`, `on-failure[:max]`, `always`, `unless-stopped`.
//!
//! nookd applies them when a task exits (the watcher of [`super::containers::Manager::monitor`]
//! learns of the exit from the shim): with a delay of 100 ms that doubles on each restart (at
//! most a minute) and starts over once a run lasted 10 s. A container the user stopped or
//! killed (`nook stop`, `nook kill`) is not restarted; `nook start` clears that and the count.
//! When nookd starts, `always` containers whose task is gone (exited, or lost in a reboot) are
//! started again, and `unless-stopped` and `on-failure` ones too unless the user stopped them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The first delay before a restart.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long starts the delays over.
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// A container's restart policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max` times (0: no limit).
    OnFailure {
        #[serde(default)]
        max: u32,
    },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses `no`, `on-failure`, `on-failure:N`, `always`, `unless-stopped` (empty: `no`).
    pub fn parse(s: &str) -> Result<RestartPolicy> {
        let bad = || {
            Error::InvalidArgument(format!(
                "invalid restart policy {s:?}: use no, on-failure[:MAX-RETRIES], always or unless-stopped"
            ))
        };
        let (name, max) = match s.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (s, None),
        };
        let p = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure {
                max: match max {
                    None => 0,
                    Some(m) => m.parse().map_err(|_| bad())?,
                },
            },
            _ => return Err(bad()),
        };
        if max.is_some() && !matches!(p, RestartPolicy::OnFailure { .. }) {
            return Err(Error::InvalidArgument(format!(
                "invalid restart policy {s:?}: a maximum retry count goes only with on-failure (on-failure:3)"
            )));
        }
        Ok(p)
    }

    /// docker's name of the policy.
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// The maximum retry count (on-failure only; 0: no limit).
    pub fn max_retries(&self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max } => *max,
            _ => 0,
        }
    }

    /// Whether a task that exited with `exit_code`, after `restarts` restarts, is restarted.
    pub fn should_restart(&self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max } => exit_code != 0 && (*max == 0 || restarts < *max),
        }
    }

    /// Whether nookd starts the container again at its own start (its task is gone).
    pub fn restart_at_boot(&self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        match self {
            // docker: `always` containers come back when the daemon starts, even if stopped
            RestartPolicy::Always => true,
            _ => self.should_restart(exit_code, restarts, stopped_by_user),
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::OnFailure { max } if *max > 0 => write!(f, "on-failure:{max}"),
            p => f.write_str(p.name()),
        }
    }
}

/// The delay before the next restart: 100 ms, doubled each time, at most a minute; back to
/// 100 ms when the last run lasted [`RESET_AFTER`]. `previous` is the last delay (zero: none).
pub fn next_delay(previous: Duration, ran: Duration) -> Duration {
    if previous.is_zero() || ran >= RESET_AFTER {
        FIRST_DELAY
    } else {
        (previous * 2).min(MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        for (s, p) in [
            ("", RestartPolicy::No),
            ("no", RestartPolicy::No),
            ("always", RestartPolicy::Always),
            ("unless-stopped", RestartPolicy::UnlessStopped),
            ("on-failure", RestartPolicy::OnFailure { max: 0 }),
            ("on-failure:3", RestartPolicy::OnFailure { max: 3 }),
        ] {
            assert_eq!(RestartPolicy::parse(s).unwrap(), p, "{s}");
        }
        for bad in ["sometimes", "always:3", "on-failure:x", "on-failure:-1"] {
            assert!(RestartPolicy::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RestartPolicy::OnFailure { max: 3 }.to_string(),
            "on-failure:3"
        );
        assert_eq!(
            RestartPolicy::OnFailure { max: 0 }.to_string(),
            "on-failure"
        );
        assert_eq!(RestartPolicy::UnlessStopped.to_string(), "unless-stopped");
        // stored form
        let j = serde_json::to_string(&RestartPolicy::OnFailure { max: 2 }).unwrap();
        assert_eq!(j, r#"{"name":"on-failure","max":2}"#);
        assert_eq!(
            serde_json::from_str::<RestartPolicy>(&j).unwrap(),
            RestartPolicy::OnFailure { max: 2 }
        );
    }

    #[test]
    fn decisions() {
        let of = RestartPolicy::OnFailure { max: 3 };
        assert!(of.should_restart(1, 0, false));
        assert!(of.should_restart(1, 2, false));
        assert!(!of.should_restart(1, 3, false));
        assert!(!of.should_restart(0, 0, false));
        assert!(!of.should_restart(1, 0, true));
        assert!(RestartPolicy::OnFailure { max: 0 }.should_restart(2, 1000, false));
        assert!(RestartPolicy::Always.should_restart(0, 99, false));
        assert!(!RestartPolicy::Always.should_restart(0, 0, true));
        assert!(RestartPolicy::Always.restart_at_boot(0, 0, true));
        assert!(!RestartPolicy::UnlessStopped.restart_at_boot(0, 0, true));
        assert!(RestartPolicy::UnlessStopped.restart_at_boot(0, 0, false));
        assert!(!RestartPolicy::No.should_restart(1, 0, false));
    }

    #[test]
    fn delays_double_and_reset() {
        let short = Duration::from_millis(50);
        let mut d = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..4 {
            d = next_delay(d, short);
            seen.push(d.as_millis());
        }
        assert_eq!(seen, [100, 200, 400, 800]);
        assert_eq!(next_delay(Duration::from_secs(50), short), MAX_DELAY);
        assert_eq!(next_delay(d, Duration::from_secs(10)), FIRST_DELAY);
    }
}
