//! When to collect: containerd's GC scheduler, with its knobs.
//!
//! * `mutation_threshold`: after this many mutations (writes that may create garbage), a GC is
//!   scheduled;
//! * `deletion_threshold`: after this many deletions a GC is scheduled (0: deletions alone never
//!   trigger one, but any deletion makes the next mutation-triggered run happen);
//! * `schedule_delay`: how long after the trigger the GC runs (batches bursts);
//! * `startup_delay`: the first GC after start;
//! * `pause_threshold`: the database may be paused by GC at most this fraction of the time, so
//!   after a GC that held it for `p`, the next one waits at least `p / pause_threshold`.
//!
//! The decision logic is pure ([`Policy`]) so it is unit-tested without clocks.

use std::time::{Duration, Instant};

use crate::config::{parse_duration, GcConfig};

/// The scheduler's state.
#[derive(Debug, Clone)]
pub struct Policy {
    pub pause_threshold: f64,
    pub deletion_threshold: u64,
    pub mutation_threshold: u64,
    pub schedule_delay: Duration,
    pub startup_delay: Duration,
    mutations: u64,
    deletions: u64,
    /// When the next run is due, if one is scheduled.
    due: Option<Instant>,
    /// Not before this instant (pause budget).
    not_before: Option<Instant>,
}

impl Policy {
    /// Builds the policy from `[gc]` (already validated).
    pub fn new(cfg: &GcConfig, now: Instant) -> Policy {
        let startup = parse_duration(&cfg.startup_delay).unwrap_or(Duration::from_millis(100));
        Policy {
            pause_threshold: cfg.pause_threshold,
            deletion_threshold: cfg.deletion_threshold,
            mutation_threshold: cfg.mutation_threshold,
            schedule_delay: parse_duration(&cfg.schedule_delay).unwrap_or_default(),
            startup_delay: startup,
            mutations: 0,
            deletions: 0,
            due: Some(now + startup),
            not_before: None,
        }
    }

    /// Records a mutation (`deletion`: it removed something).
    pub fn mutated(&mut self, deletion: bool, now: Instant) {
        self.mutations += 1;
        if deletion {
            self.deletions += 1;
        }
        let by_mutations = self.mutation_threshold > 0 && self.mutations >= self.mutation_threshold;
        let by_deletions = self.deletion_threshold > 0 && self.deletions >= self.deletion_threshold;
        if (by_mutations || by_deletions) && self.due.is_none() {
            self.due = Some(now + self.schedule_delay);
        }
    }

    /// Requests a run now (`nook gc`).
    pub fn trigger(&mut self, now: Instant) {
        self.due = Some(now);
        self.not_before = None;
    }

    /// When the next run should start, honouring the pause budget.
    pub fn next_run(&self) -> Option<Instant> {
        let due = self.due?;
        Some(match self.not_before {
            Some(nb) if nb > due => nb,
            _ => due,
        })
    }

    /// Records a finished run that paused the database for `paused`.
    pub fn ran(&mut self, paused: Duration, now: Instant) {
        self.mutations = 0;
        self.deletions = 0;
        self.due = None;
        if self.pause_threshold > 0.0 {
            let wait = paused.as_secs_f64() / self.pause_threshold;
            self.not_before = Some(now + Duration::from_secs_f64(wait.min(3600.0)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GcConfig {
        GcConfig::default()
    }

    #[test]
    fn startup_then_mutation_threshold() {
        let t0 = Instant::now();
        let mut p = Policy::new(&cfg(), t0);
        assert_eq!(p.next_run(), Some(t0 + Duration::from_millis(100)));
        p.ran(Duration::from_millis(1), t0);
        assert_eq!(p.next_run(), None);
        for _ in 0..99 {
            p.mutated(false, t0);
        }
        assert_eq!(p.next_run(), None, "99 mutations are below the threshold");
        p.mutated(false, t0);
        // due now, but the pause budget (1 ms / 0.02 = 50 ms) pushes it back
        assert_eq!(p.next_run(), Some(t0 + Duration::from_millis(50)));
    }

    #[test]
    fn deletions_alone_do_not_trigger_by_default() {
        let t0 = Instant::now();
        let mut p = Policy::new(&cfg(), t0);
        p.ran(Duration::ZERO, t0);
        for _ in 0..10 {
            p.mutated(true, t0);
        }
        assert_eq!(p.next_run(), None);
        let mut c = cfg();
        c.deletion_threshold = 3;
        c.schedule_delay = "1s".into();
        let mut p = Policy::new(&c, t0);
        p.ran(Duration::ZERO, t0);
        for _ in 0..3 {
            p.mutated(true, t0);
        }
        assert_eq!(p.next_run(), Some(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn manual_trigger_ignores_the_budget() {
        let t0 = Instant::now();
        let mut p = Policy::new(&cfg(), t0);
        p.ran(Duration::from_secs(1), t0);
        p.trigger(t0);
        assert_eq!(p.next_run(), Some(t0));
    }
}
