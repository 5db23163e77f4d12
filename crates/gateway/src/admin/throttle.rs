//! Failed console logins, per client address: after [`MAX_FAILURES`] within
//! [`WINDOW`] the address is refused for a lock that doubles with each
//! further failure (1 minute up to 15), the right password included.
//! Bounded: at most [`MAX_ADDRESSES`] addresses are tracked. Time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub(crate) const MAX_FAILURES: u32 = 5;
pub(crate) const WINDOW: Duration = Duration::from_secs(15 * 60);
const FIRST_LOCK: Duration = Duration::from_secs(60);
const LONGEST_LOCK: Duration = Duration::from_secs(15 * 60);
const MAX_ADDRESSES: usize = 10_000;

struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct LoginThrottle {
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

impl LoginThrottle {
    /// `Err(wait)` while `address` is locked out.
    pub(crate) fn check(&self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.by_address.lock();
        match map.get(&address).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failed login; returns the lock it started, if any.
    pub(crate) fn failed(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let mut map = self.by_address.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&address) {
            map.retain(|_, f| {
                now.duration_since(f.first) < WINDOW || f.locked_until.is_some_and(|u| u > now)
            });
            if map.len() >= MAX_ADDRESSES {
                // Full of live entries: forget the oldest one.
                if let Some(oldest) = map.iter().min_by_key(|(_, f)| f.first).map(|(a, _)| *a) {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(address).or_insert(Failures {
            count: 0,
            first: now,
            locked_until: None,
        });
        let locked = entry.locked_until.is_some_and(|u| u > now);
        if !locked && now.duration_since(entry.first) >= WINDOW {
            *entry = Failures {
                count: 0,
                first: now,
                locked_until: None,
            };
        }
        entry.count += 1;
        if entry.count < MAX_FAILURES {
            return None;
        }
        let doublings = (entry.count - MAX_FAILURES).min(10);
        let lock = FIRST_LOCK.saturating_mul(1 << doublings).min(LONGEST_LOCK);
        entry.locked_until = Some(now + lock);
        Some(lock)
    }

    /// A login succeeded: the address starts afresh.
    pub(crate) fn succeeded(&self, address: IpAddr) {
        self.by_address.lock().remove(&address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fifth_failure_locks_the_address_and_further_ones_lock_longer() {
        let throttle = LoginThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            assert_eq!(throttle.failed(a, t0), None);
            assert!(throttle.check(a, t0).is_ok());
        }
        assert_eq!(throttle.failed(a, t0), Some(FIRST_LOCK));
        assert_eq!(throttle.check(a, t0), Err(FIRST_LOCK));
        // Another address is not affected.
        assert!(throttle.check(b, t0).is_ok());
        let after = t0 + FIRST_LOCK;
        assert!(throttle.check(a, after).is_ok());
        assert_eq!(throttle.failed(a, after), Some(FIRST_LOCK * 2));
        // A success starts afresh.
        throttle.succeeded(a);
        assert!(throttle.check(a, after).is_ok());
        assert_eq!(throttle.failed(a, after), None);
    }

    #[test]
    fn failures_spread_beyond_the_window_never_lock() {
        let throttle = LoginThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..20u32 {
            let at = t0 + (WINDOW / 4) * i;
            assert_eq!(throttle.failed(a, at), None, "failure {i}");
        }
    }
}
