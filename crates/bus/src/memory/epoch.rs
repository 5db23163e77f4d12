//! The epoch of a stream that does not exist yet.
//!
//! A read of a stream nobody published to creates nothing (a client must not
//! be able to make the node keep state per name it asks about), yet its
//! answer must carry the epoch the first publish will give the stream: a
//! client that subscribed with recovery at `(epoch, 0)` stays positioned when
//! publication 1 arrives. So that epoch is *derived*, not drawn and stored:
//! a hash of the channel, a random seed of this engine, an eviction
//! generation and the meta-TTL period the clock is in.
//!
//! Why each part: a stream that existed and was forgotten must come back
//! with another epoch, or a client holding a position in the old one would
//! recover into the new one and silently miss publications.
//!
//! - The seed is drawn once per engine: a restart forgets every stream, and
//!   every derived epoch changes with it.
//! - A stream is forgotten when its meta expires, `meta_ttl` after its last
//!   touch, which came after its creation: the stream that follows is made
//!   in a later period of length `meta_ttl`, so with another epoch.
//! - A stream evicted by the engine's stream limit may come back within the
//!   same period: every eviction bumps the generation.
//!
//! The price is a harmless false alarm: a client that read an empty stream
//! just before a period boundary (or an eviction) and sees publication 1
//! after it is told that its position is lost (unsubscribe 2500, then
//! `recovered: false`), though nothing was.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::digest;
use rand::RngCore as _;
use tokio::time::Instant;

/// Length of a stream epoch, in ASCII letters.
pub(super) const EPOCH_LEN: usize = 8;

const LETTERS: &[u8; 52] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub(super) struct FreshEpochs {
    seed: [u8; 16],
    started: Instant,
    generation: AtomicU64,
}

impl FreshEpochs {
    pub(super) fn new(now: Instant) -> Self {
        let mut seed = [0u8; 16];
        rand::rng().fill_bytes(&mut seed);
        Self {
            seed,
            started: now,
            generation: AtomicU64::new(0),
        }
    }

    /// The epoch a stream of `channel` created at `now` gets.
    pub(super) fn epoch(&self, channel: &str, now: Instant, meta_ttl: Duration) -> String {
        let period = if meta_ttl.is_zero() {
            // Metas without a TTL are never forgotten by time.
            0
        } else {
            // u128 → u64: a period count does not reach 2^64.
            (now.saturating_duration_since(self.started).as_nanos() / meta_ttl.as_nanos()) as u64
        };
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(&self.seed);
        context.update(&self.generation.load(Ordering::Acquire).to_be_bytes());
        context.update(&period.to_be_bytes());
        context.update(channel.as_bytes());
        let digest = context.finish();
        digest.as_ref()[..EPOCH_LEN]
            .iter()
            .map(|b| char::from(LETTERS[usize::from(*b) % LETTERS.len()]))
            .collect()
    }

    /// Every stream created from now on gets another epoch than it would
    /// have: called before a stream is evicted.
    pub(super) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_epochs() {
        let now = Instant::now();
        let epochs = FreshEpochs::new(now);
        let hour = Duration::from_secs(3600);
        let epoch = epochs.epoch("news", now, hour);
        assert_eq!(epoch.len(), EPOCH_LEN);
        assert!(epoch.bytes().all(|b| b.is_ascii_alphabetic()), "{epoch}");
        // Stable within a period, for a channel.
        assert_eq!(epochs.epoch("news", now + hour / 2, hour), epoch);
        assert_ne!(epochs.epoch("sport", now, hour), epoch);
        // Another period, another generation, another engine: another epoch.
        assert_ne!(epochs.epoch("news", now + hour, hour), epoch);
        assert_ne!(FreshEpochs::new(now).epoch("news", now, hour), epoch);
        epochs.bump();
        assert_ne!(epochs.epoch("news", now, hour), epoch);
        // No TTL: one period forever.
        let never = epochs.epoch("news", now, Duration::ZERO);
        assert_eq!(
            epochs.epoch("news", now + hour * 10_000, Duration::ZERO),
            never
        );
    }
}
