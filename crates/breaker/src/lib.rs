//! The breaker of an outbound call (the introspection client, each proxy):
//! a server that stopped answering is not asked by every caller at once.
//! After [`BREAKER_THRESHOLD`] failures in a row nothing goes out for a
//! pause (from [`BREAKER_PAUSE`], doubling to [`BREAKER_MAX_PAUSE`]); then
//! one call probes, and its answer closes the breaker while its failure
//! starts the next, longer pause. What counts as a failure is the caller's
//! to say. Time comes in as an argument: the rules are tested without a
//! clock.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failures in a row after which the server is not asked for a while.
pub const BREAKER_THRESHOLD: u32 = 5;

/// The first pause after [`BREAKER_THRESHOLD`] failures; each failed probe
/// doubles it, up to [`BREAKER_MAX_PAUSE`].
pub const BREAKER_PAUSE: Duration = Duration::from_secs(1);

/// The longest pause between probes.
pub const BREAKER_MAX_PAUSE: Duration = Duration::from_secs(4);

/// When calls to one server may go out. Shared by all its callers (`&self`
/// methods; a lock held for a few instructions).
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Failures since the last answer.
    failures: u32,
    /// The current pause; zero while closed.
    pause: Duration,
    /// While paused: when the next probe may go out.
    resume_at: Option<Instant>,
}

impl Breaker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a call may go out at `now`: false while paused. The first
    /// caller after a pause is the probe: it starts the next pause itself,
    /// so the others wait for its outcome (and a probe whose outcome is
    /// never recorded lets another go after one more pause).
    pub fn admit(&self, now: Instant) -> bool {
        let mut state = self.state.lock();
        match state.resume_at {
            None => true,
            Some(at) if now < at => false,
            Some(_) => {
                state.resume_at = Some(now + state.pause);
                true
            }
        }
    }

    /// Records an admitted call's outcome: an answer closes the breaker; a
    /// failure past the threshold starts (or doubles) the pause. Returns
    /// the pause when one starts, for a log line.
    pub fn record(&self, answered: bool, now: Instant) -> Option<Duration> {
        let mut state = self.state.lock();
        if answered {
            *state = State::default();
            return None;
        }
        state.failures = state.failures.saturating_add(1);
        if state.failures < BREAKER_THRESHOLD {
            return None;
        }
        state.pause = if state.pause.is_zero() {
            BREAKER_PAUSE
        } else {
            (state.pause * 2).min(BREAKER_MAX_PAUSE)
        };
        state.resume_at = Some(now + state.pause);
        Some(state.pause)
    }

    /// Whether calls are held back at `now`.
    pub fn paused(&self, now: Instant) -> bool {
        self.state.lock().resume_at.is_some_and(|at| now < at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_after_the_threshold_probes_once_and_doubles_to_the_cap() {
        let t0 = Instant::now();
        let breaker = Breaker::new();
        for _ in 1..BREAKER_THRESHOLD {
            assert!(breaker.admit(t0));
            assert_eq!(breaker.record(false, t0), None);
        }
        // An answer in between starts the count again.
        assert_eq!(breaker.record(true, t0), None);
        for _ in 1..BREAKER_THRESHOLD {
            assert_eq!(breaker.record(false, t0), None);
        }
        assert!(!breaker.paused(t0));
        assert_eq!(breaker.record(false, t0), Some(BREAKER_PAUSE));
        assert!(breaker.paused(t0) && !breaker.admit(t0 + BREAKER_PAUSE / 2));
        let t1 = t0 + BREAKER_PAUSE;
        assert!(breaker.admit(t1), "the probe");
        assert!(!breaker.admit(t1), "only one probe");
        assert_eq!(breaker.record(false, t1), Some(BREAKER_PAUSE * 2));
        let t2 = t1 + BREAKER_PAUSE * 2;
        assert!(breaker.admit(t2));
        assert_eq!(breaker.record(false, t2), Some(BREAKER_MAX_PAUSE));
        let t3 = t2 + BREAKER_MAX_PAUSE;
        assert!(breaker.admit(t3));
        assert_eq!(breaker.record(false, t3), Some(BREAKER_MAX_PAUSE), "capped");
        // A probe whose outcome never comes lets another go after a pause.
        let t4 = t3 + BREAKER_MAX_PAUSE;
        assert!(breaker.admit(t4));
        assert!(breaker.admit(t4 + BREAKER_MAX_PAUSE));
        assert_eq!(breaker.record(true, t4), None);
        assert!(!breaker.paused(t4) && breaker.admit(t4));
    }
}
