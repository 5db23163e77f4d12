//! The breaker of one proxy: a backend that stopped answering is not asked
//! by every client at once. After [`BREAKER_THRESHOLD`] failed calls in a
//! row no call goes out for a pause (from [`BREAKER_PAUSE`], doubling to
//! [`BREAKER_MAX_PAUSE`]); then one call probes the backend, and its answer
//! closes the breaker while its failure starts the next, longer pause. The
//! numbers are the introspection client's (herald-identity's
//! `introspection.rs`), so both outbound calls back off alike.
//!
//! Any [`Answer`] (a result, an error for the client, a disconnect), or an
//! answer that is only wrong, means the backend is up; an outage
//! ([`Failure::is_outage`]: unreachable, timeout, 5xx, a gRPC status)
//! counts against it. The rule itself is herald-breaker's.

use std::time::{Duration, Instant};

use herald_breaker::Breaker;
pub use herald_breaker::{BREAKER_MAX_PAUSE, BREAKER_PAUSE, BREAKER_THRESHOLD};

use crate::wire::{Answer, Failure};

/// When calls to one proxy's backend may go out (herald-breaker's rule),
/// shared by every call of the proxy.
#[derive(Debug, Default)]
pub struct ProxyBreaker {
    breaker: Breaker,
}

impl ProxyBreaker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a call may go out at `now`; `false` while paused: the caller
    /// fails the call at once ([`Failure::Paused`]).
    pub fn admit(&self, now: Instant) -> bool {
        self.breaker.admit(now)
    }

    /// Records an admitted call's outcome (`ok`: the backend answered).
    /// Returns the pause when one starts, for a log line.
    pub fn record(&self, ok: bool, now: Instant) -> Option<Duration> {
        self.breaker.record(ok, now)
    }

    /// [`record`](Self::record) of a call's result: a failure that says
    /// the backend is down or overloaded ([`Failure::is_outage`]) counts
    /// against it; an [`Answer`], or an answer that is not a proxy answer
    /// (the backend is up, only wrong), does not.
    pub fn record_result<T>(
        &self,
        result: &Result<Answer<T>, Failure>,
        now: Instant,
    ) -> Option<Duration> {
        let outage = result.as_ref().err().is_some_and(Failure::is_outage);
        self.record(!outage, now)
    }

    /// Whether calls are being held back at `now`.
    pub fn paused(&self, now: Instant) -> bool {
        self.breaker.paused(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RpcReply;

    #[test]
    fn closed_until_the_threshold_of_failures_in_a_row() {
        let t0 = Instant::now();
        let breaker = ProxyBreaker::new();
        for _ in 1..BREAKER_THRESHOLD {
            assert!(breaker.admit(t0));
            assert_eq!(breaker.record(false, t0), None);
        }
        // An answer in between starts the count again.
        assert!(breaker.admit(t0));
        assert_eq!(breaker.record(true, t0), None);
        for _ in 1..BREAKER_THRESHOLD {
            assert!(breaker.admit(t0));
            assert_eq!(breaker.record(false, t0), None);
        }
        assert!(!breaker.paused(t0));
        assert!(breaker.admit(t0));
        assert_eq!(breaker.record(false, t0), Some(BREAKER_PAUSE));
        assert!(breaker.paused(t0));
    }

    #[test]
    fn paused_then_one_probe_which_doubles_or_closes() {
        let t0 = Instant::now();
        let breaker = ProxyBreaker::new();
        for _ in 0..BREAKER_THRESHOLD {
            assert!(breaker.admit(t0));
            breaker.record(false, t0);
        }
        assert!(!breaker.admit(t0));
        assert!(!breaker.admit(t0 + BREAKER_PAUSE - Duration::from_millis(1)));

        // One probe after the pause; the others wait for its outcome.
        let t1 = t0 + BREAKER_PAUSE;
        assert!(breaker.admit(t1));
        assert!(!breaker.admit(t1), "only one probe");
        assert!(!breaker.admit(t1 + BREAKER_PAUSE / 2));
        assert_eq!(
            breaker.record(false, t1),
            Some(BREAKER_PAUSE * 2),
            "doubled"
        );
        assert!(!breaker.admit(t1 + BREAKER_PAUSE));

        // Doubling stops at the cap.
        let mut at = t1 + BREAKER_PAUSE * 2;
        let mut pauses = Vec::new();
        for _ in 0..4 {
            assert!(breaker.admit(at));
            let pause = breaker.record(false, at).unwrap();
            pauses.push(pause);
            at += pause;
        }
        assert_eq!(pauses, [BREAKER_MAX_PAUSE; 4], "1 s, 2 s, then the 4 s cap");

        // An answer from the probe closes it: everyone goes, the count restarts.
        assert!(breaker.admit(at));
        assert_eq!(breaker.record(true, at), None);
        assert!(breaker.admit(at) && breaker.admit(at) && !breaker.paused(at));
        assert_eq!(breaker.record(false, at), None, "the count starts again");
        assert!(breaker.admit(at));
    }

    #[test]
    fn a_lost_probe_lets_another_go_after_one_more_pause() {
        let t0 = Instant::now();
        let breaker = ProxyBreaker::new();
        for _ in 0..BREAKER_THRESHOLD {
            breaker.admit(t0);
            breaker.record(false, t0);
        }
        let t1 = t0 + BREAKER_PAUSE;
        assert!(breaker.admit(t1), "the probe, whose caller goes away");
        assert!(!breaker.admit(t1 + BREAKER_PAUSE / 2));
        assert!(breaker.admit(t1 + BREAKER_PAUSE), "the next probe");
    }

    #[test]
    fn answers_of_every_kind_are_ok_and_outages_are_not() {
        let t0 = Instant::now();
        let breaker = ProxyBreaker::new();
        // A backend that answers, however wrongly, is up: no pause.
        for wrong in [
            Failure::Invalid("not json".into()),
            Failure::CodeOutOfRange(100),
            Failure::Status(404),
        ]
        .iter()
        .cycle()
        .take(10)
        {
            breaker.record_result::<RpcReply>(&Err(wrong.clone()), t0);
        }
        assert!(!breaker.paused(t0), "wrong answers are not an outage");
        let failures = [
            Failure::Transport("timed out".into()),
            Failure::Transport("connection failed".into()),
            Failure::Status(500),
            Failure::GrpcStatus(14),
            Failure::Status(503),
        ];
        for failure in &failures {
            let result: Result<Answer<RpcReply>, Failure> = Err(failure.clone());
            breaker.record_result(&result, t0);
        }
        assert!(breaker.paused(t0), "five outage failures");

        let t1 = t0 + BREAKER_PAUSE;
        let answers: [Answer<RpcReply>; 3] = [
            Answer::Result(RpcReply::default()),
            Answer::Error {
                code: 1000,
                message: "no".into(),
                temporary: false,
            },
            Answer::Disconnect {
                code: 4501,
                reason: "bye".into(),
            },
        ];
        for answer in answers {
            let breaker = ProxyBreaker::new();
            for failure in &failures {
                breaker.record_result::<RpcReply>(&Err(failure.clone()), t0);
            }
            assert!(breaker.admit(t1));
            assert_eq!(breaker.record_result(&Ok(answer.clone()), t1), None);
            assert!(!breaker.paused(t1) && breaker.admit(t1), "{answer:?}");
        }
    }

    #[test]
    fn shared_across_threads() {
        let breaker = std::sync::Arc::new(ProxyBreaker::new());
        let t0 = Instant::now();
        let threads: Vec<_> = (0..BREAKER_THRESHOLD)
            .map(|_| {
                let breaker = breaker.clone();
                std::thread::spawn(move || {
                    assert!(breaker.admit(t0));
                    breaker.record(false, t0)
                })
            })
            .collect();
        let pauses: Vec<_> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(pauses, [BREAKER_PAUSE], "exactly one call starts the pause");
        assert!(!breaker.admit(t0));
    }
}
