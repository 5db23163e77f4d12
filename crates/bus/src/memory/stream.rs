//! One channel's history stream: epoch, top offset, the kept publications and
//! the idempotency results. Plain state: time is passed in, nothing locks.
//!
//! It mirrors what the Redis engine keeps in two keys with separate TTLs: the
//! meta (epoch and top, refreshed by every publish and history read) and the
//! stream (publications, which all expire together after the last publish).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use herald_protocol::{Publication, StreamPosition};
use tokio::time::Instant;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::seal::{HistoryKeyring, OpenError};
use crate::{BusError, HistoryOptions, HistoryPage, HistoryQuery};

/// How long a publish result is remembered under its idempotency key.
pub(super) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
pub(super) struct Stream {
    meta: Option<Meta>,
    /// Ascending, contiguous offsets (trimming only drops the oldest).
    entries: VecDeque<Kept>,
    /// When every kept publication vanishes at once; `None`: never.
    entries_expire_at: Option<Instant>,
    idempotency: HashMap<String, Remembered>,
}

/// A kept publication: in clear, or sealed for its place (seal.rs).
pub(super) enum Kept {
    Clear(Publication),
    Sealed { offset: u64, record: Vec<u8> },
}

impl Kept {
    fn offset(&self) -> u64 {
        match self {
            Self::Clear(publication) => publication.offset,
            Self::Sealed { offset, .. } => *offset,
        }
    }

    /// The publication, opened with `keys` when sealed.
    fn open(
        &self,
        channel: &str,
        epoch: &str,
        keys: &HistoryKeyring,
    ) -> Result<Publication, OpenError> {
        match self {
            Self::Clear(publication) => Ok(publication.clone()),
            Self::Sealed { offset, record } => {
                let body = keys.open(channel, epoch, *offset, record)?;
                let mut publication: Publication =
                    serde_json::from_slice(&body).map_err(|_| OpenError::Forged)?;
                publication.offset = *offset;
                Ok(publication)
            }
        }
    }
}

struct Meta {
    epoch: String,
    top: u64,
    /// `None`: never.
    expires_at: Option<Instant>,
    /// The last publish or read: what the stream limit evicts by.
    touched_at: Instant,
}

struct Remembered {
    position: StreamPosition,
    expires_at: Instant,
}

impl Stream {
    /// Takes the next offset for a publication, creating the meta (with the
    /// epoch `fresh` gives, epoch.rs) or refreshing it. The caller stores the
    /// publication with [`Stream::keep`].
    pub(super) fn advance(
        &mut self,
        now: Instant,
        options: &HistoryOptions,
        fresh: impl FnOnce() -> String,
    ) -> StreamPosition {
        self.expire(now);
        let meta = self.meta.get_or_insert_with(|| Meta {
            epoch: fresh(),
            top: 0,
            expires_at: None,
            touched_at: now,
        });
        meta.expires_at = deadline(now, options.meta_ttl);
        meta.touched_at = now;
        meta.top += 1;
        StreamPosition {
            offset: meta.top,
            epoch: meta.epoch.clone(),
        }
    }

    /// Stores a publication that [`Stream::advance`] just numbered, trims the
    /// stream to its size and restarts its TTL.
    pub(super) fn keep(&mut self, now: Instant, options: &HistoryOptions, kept: Kept) {
        self.entries.push_back(kept);
        let excess = self.entries.len().saturating_sub(options.size);
        self.entries.drain(..excess);
        self.entries_expire_at = deadline(now, options.ttl);
    }

    /// Reads a page of history and refreshes the meta. A stream without a
    /// meta stays without one: the page is empty, at offset 0 of the epoch
    /// `fresh` gives (the one its first publish will take, epoch.rs).
    /// Sealed entries are opened with `keys`; one that cannot be is counted
    /// in `undecryptable` and fails the read.
    pub(super) fn page(
        &mut self,
        now: Instant,
        query: &HistoryQuery,
        channel: &str,
        keys: &HistoryKeyring,
        undecryptable: &AtomicU64,
        fresh: impl FnOnce() -> String,
    ) -> Result<HistoryPage, BusError> {
        self.expire(now);
        let position = match self.meta.as_mut() {
            Some(meta) => {
                meta.expires_at = deadline(now, query.meta_ttl);
                meta.touched_at = now;
                StreamPosition {
                    offset: meta.top,
                    epoch: meta.epoch.clone(),
                }
            }
            None => StreamPosition {
                offset: 0,
                epoch: fresh(),
            },
        };
        if let Some(since) = &query.since {
            if !since.epoch.is_empty() && since.epoch != position.epoch {
                return Err(BusError::UnrecoverablePosition);
            }
        }
        let limit = query.limit.unwrap_or(usize::MAX);
        let selected: Vec<&Kept> = if query.reverse {
            let before = query.since.as_ref().map_or(u64::MAX, |since| since.offset);
            let end = self.entries.partition_point(|p| p.offset() < before);
            self.entries.range(..end).rev().take(limit).collect()
        } else {
            let after = query.since.as_ref().map_or(0, |since| since.offset);
            let start = self.entries.partition_point(|p| p.offset() <= after);
            self.entries.range(start..).take(limit).collect()
        };
        let mut publications = Vec::with_capacity(selected.len());
        let mut unopened = 0;
        for kept in selected {
            match kept.open(channel, &position.epoch, keys) {
                Ok(mut publication) => {
                    // The publisher's delta request concerns live delivery only.
                    publication.delta = false;
                    publications.push(publication);
                }
                Err(_) => unopened += 1,
            }
        }
        if unopened > 0 {
            undecryptable.fetch_add(unopened, Ordering::Relaxed);
            tracing::warn!(channel, unopened, "history records cannot be opened");
            return Err(BusError::Undecryptable);
        }
        Ok(HistoryPage {
            publications,
            position,
        })
    }

    /// Drops the kept publications; epoch and top stay.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.entries_expire_at = None;
    }

    /// The result of an earlier publish with this key, if still remembered.
    pub(super) fn remembered(&mut self, now: Instant, key: &str) -> Option<StreamPosition> {
        let remembered = self.idempotency.get(key)?;
        if remembered.expires_at <= now {
            self.idempotency.remove(key);
            return None;
        }
        Some(remembered.position.clone())
    }

    pub(super) fn remember(&mut self, now: Instant, key: &str, position: StreamPosition) {
        let remembered = Remembered {
            position,
            expires_at: now + IDEMPOTENCY_TTL,
        };
        self.idempotency.insert(key.to_owned(), remembered);
    }

    /// Drops everything that expired by `now`.
    pub(super) fn prune(&mut self, now: Instant) {
        self.expire(now);
        self.idempotency
            .retain(|_, remembered| remembered.expires_at > now);
    }

    /// Nothing kept: the channel may be forgotten (after [`Stream::prune`]).
    pub(super) fn is_empty(&self) -> bool {
        self.meta.is_none() && self.entries.is_empty() && self.idempotency.is_empty()
    }

    /// The stream exists: it has an epoch and a top offset (what the
    /// engine's stream limit counts).
    pub(super) fn exists(&self) -> bool {
        self.meta.is_some()
    }

    /// When the stream was last published to or read; `None` when it does
    /// not exist.
    pub(super) fn touched_at(&self) -> Option<Instant> {
        self.meta.as_ref().map(|meta| meta.touched_at)
    }

    /// Forgets the stream (epoch, top and publications), as if its meta had
    /// expired. Idempotency results stay: they expire on their own.
    pub(super) fn evict(&mut self) {
        self.meta = None;
        self.clear();
    }

    fn expire(&mut self, now: Instant) {
        if self
            .meta
            .as_ref()
            .is_some_and(|meta| expired(meta.expires_at, now))
        {
            // A new epoch starts from offset 1: the old publications would
            // carry offsets of the old one.
            self.meta = None;
            self.clear();
        }
        if expired(self.entries_expire_at, now) {
            self.clear();
        }
    }
}

/// A zero TTL means no expiry, as in the Redis engine (which only sets
/// `EXPIRE` for a positive TTL).
fn deadline(now: Instant, ttl: Duration) -> Option<Instant> {
    if ttl.is_zero() {
        return None;
    }
    Some(now + ttl)
}

fn expired(at: Option<Instant>, now: Instant) -> bool {
    at.is_some_and(|at| at <= now)
}
