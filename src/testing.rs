//! Test support shared by the in-memory fakes of privileged operations (network kernel,
//! mounts, OCI runtime): [`Faults`] counts the calls a fake receives, records them, and fails
//! (or "crashes" on) the call the test chose, the way youki's recording `Syscall` does.

use std::sync::Mutex;

/// What happens at the chosen call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// That call fails; the ones after it succeed.
    Once,
    /// That call and every later one fail (the kernel went away).
    From,
    /// That call panics: the caller stops between two steps, as a killed daemon would.
    Crash,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<String>,
    at: Option<(usize, Mode)>,
}

/// A fake's call log and its scripted failure.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<Inner>,
}

impl Faults {
    fn set(&self, n: usize, mode: Mode) {
        assert!(n >= 1, "calls are counted from 1");
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let at = i.calls.len() + n;
        i.at = Some((at, mode));
    }

    /// The `n`th call from now (1 = the next) fails.
    pub fn fail_nth(&self, n: usize) {
        self.set(n, Mode::Once)
    }

    /// The `n`th call from now and every one after it fail.
    pub fn fail_from(&self, n: usize) {
        self.set(n, Mode::From)
    }

    /// The `n`th call from now panics (a crash between two steps).
    pub fn crash_at(&self, n: usize) {
        self.set(n, Mode::Crash)
    }

    /// No more failures.
    pub fn heal(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).at = None;
    }

    /// How many calls were made.
    pub fn count(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .calls
            .len()
    }

    /// The calls made, in order (`op detail`).
    pub fn calls(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .calls
            .clone()
    }

    /// Records call `op` and says whether it fails. Every fake method calls it first.
    pub fn call(&self, op: &str, detail: &str) -> std::io::Result<()> {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        i.calls.push(format!("{op} {detail}"));
        let n = i.calls.len();
        let hit = match i.at {
            Some((at, Mode::Once)) => n == at,
            Some((at, Mode::From)) => n >= at,
            Some((at, Mode::Crash)) if n == at => {
                drop(i);
                panic!("injected crash at call {n} ({op} {detail})");
            }
            _ => false,
        };
        if hit {
            Err(std::io::Error::other(format!(
                "injected failure of call {n} ({op} {detail})"
            )))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_from_and_crash() {
        let f = Faults::default();
        f.fail_nth(2);
        assert!(f.call("a", "").is_ok());
        assert!(f.call("b", "").is_err());
        assert!(f.call("c", "").is_ok());
        f.fail_from(1);
        assert!(f.call("d", "").is_err() && f.call("e", "").is_err());
        f.heal();
        assert!(f.call("f", "").is_ok());
        assert_eq!(f.count(), 6);
        assert_eq!(f.calls()[1], "b ");
        f.crash_at(1);
        assert!(std::panic::catch_unwind(|| f.call("g", "x")).is_err());
    }
}
