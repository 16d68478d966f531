//! Time as a dependency: the system clock in production, a run's fixed instant ([`AsOf`]),
//! a fake one in tests.

use jiff::{SignedDuration, Timestamp};
use std::sync::Mutex;

/// Where "now" comes from.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock standing at one instant: a run evaluated as of a moment (the start of a weekly
/// audit), so that every part of it agrees on "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf(pub Timestamp);

impl Clock for AsOf {
    fn now(&self) -> Timestamp {
        self.0
    }
}

/// A clock that only moves when told to (for tests).
#[derive(Debug)]
pub struct FakeClock {
    now: Mutex<Timestamp>,
}

impl FakeClock {
    /// A fake clock standing at `at`.
    pub fn new(at: Timestamp) -> FakeClock {
        FakeClock {
            now: Mutex::new(at),
        }
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now = now.checked_add(by).unwrap_or(*now);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told() {
        let t0: Timestamp = "2025-01-16T09:00:00Z".parse().unwrap();
        let c = FakeClock::new(t0);
        assert_eq!(c.now(), t0);
        c.advance(SignedDuration::from_secs(90));
        assert_eq!(
            c.now(),
            "2025-01-16T09:01:30Z".parse::<Timestamp>().unwrap()
        );
        let mut m = MockClock::new();
        m.expect_now().return_const(t0);
        assert_eq!(m.now(), t0);
    }
}
