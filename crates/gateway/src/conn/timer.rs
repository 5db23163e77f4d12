//! Every timer of a connection in one table; the driver sleeps until the
//! earliest and hands the machine the time it woke at.

use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// `client.handshake_timeout`: connect must be done by then (3502).
    Handshake,
    /// The next server ping (`client.ping_interval`).
    Ping,
    /// The pong of the last ping is due (`client.pong_timeout`, 3012).
    Pong,
    /// The connection's expiry plus `client.expired_close_delay` (3005).
    Expiry,
    /// Presence refresh, subscription expiry and the introspection re-check
    /// (`client.presence_update_interval`).
    Periodic,
}

impl Timer {
    const ALL: [Timer; 5] = [
        Timer::Handshake,
        Timer::Ping,
        Timer::Pong,
        Timer::Expiry,
        Timer::Periodic,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; 5],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer.index()] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.at[timer.index()] = None;
    }

    #[cfg(test)]
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer.index()]
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Takes every timer due at `now`, in table order.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Timer> {
        Timer::ALL
            .into_iter()
            .filter(|t| {
                let due = self.at[t.index()].is_some_and(|at| at <= now);
                if due {
                    self.at[t.index()] = None;
                }
                due
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn earliest_deadline_and_expiry() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.next_timeout(), None);
        table.set(Timer::Ping, t0 + Duration::from_secs(25));
        table.set(Timer::Handshake, t0 + Duration::from_secs(10));
        assert_eq!(table.next_timeout(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(table.expired(t0 + Duration::from_secs(9)), []);
        assert_eq!(
            table.expired(t0 + Duration::from_secs(30)),
            [Timer::Handshake, Timer::Ping]
        );
        assert_eq!(table.next_timeout(), None);
        table.set(Timer::Pong, t0);
        table.stop(Timer::Pong);
        assert_eq!(table.get(Timer::Pong), None);
    }
}
