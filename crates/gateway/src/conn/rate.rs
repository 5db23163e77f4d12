//! `client.command_rate_limit`: a token bucket per connection. Time is
//! passed in.

use std::time::Instant;

/// A token bucket of `limit` commands per second (burst `limit`).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: f64,
    tokens: f64,
    at: Instant,
    /// Commands refused with 111 since the last one allowed.
    refused: u32,
}

impl RateLimiter {
    pub(crate) fn new(limit: u32, now: Instant) -> Self {
        Self {
            limit: f64::from(limit),
            tokens: f64::from(limit),
            at: now,
            refused: 0,
        }
    }

    /// True when one more command may run now.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.limit).min(self.limit);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            true
        } else {
            self.refused = self.refused.saturating_add(1);
            false
        }
    }

    /// A client that keeps sending after a second's worth of refusals is
    /// not slowing down: it is disconnected.
    pub(crate) fn persistent(&self) -> bool {
        f64::from(self.refused) > self.limit.max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_refills_and_persistence_is_a_seconds_worth() {
        let t0 = Instant::now();
        let mut rate = RateLimiter::new(5, t0);
        assert!((0..5).all(|_| rate.allow(t0)), "a burst of the limit");
        assert!(!rate.allow(t0));
        assert!(!rate.persistent());
        // 200 ms later one more token.
        assert!(rate.allow(t0 + Duration::from_millis(200)));
        let t1 = t0 + Duration::from_millis(200);
        for _ in 0..5 {
            assert!(!rate.allow(t1));
        }
        assert!(!rate.persistent(), "five refusals at a limit of five");
        assert!(!rate.allow(t1));
        assert!(rate.persistent());
    }
}
