//! The node-local index channel -> subscribed sessions, and the fan-out.
//!
//! Sharded by channel hash so fan-out of different channels runs on every
//! core without a global lock. A publication is encoded once per format its
//! subscribers on this node speak (JSON, and protobuf only when one of them
//! speaks it) into a WebSocket frame, and every recipient's Outbox gets a
//! reference-counted copy of the same bytes. A subscriber with a tags
//! filter gets that frame only when the publication's tags match; whether
//! or not it does, its position moves past the offset.
//!
//! Delta subscribers (`delta: "fossil"`, node/delta.rs) get their data
//! relative to the last publication they were sent. The channel keeps its
//! previous publication on this node while it has delta subscribers, and the
//! delta against it is computed once per format and shared by every
//! subscriber that received that previous publication; only a subscriber
//! out of step (just recovered, say) gets a delta of its own.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use herald_protocol::{ClientInfo, Disconnect, Format, Publication, TagsFilter};
use parking_lot::{Mutex, RwLock};

use crate::format::{self, LazyFrames};
use crate::node::delta::PublicationFrames;
use crate::node::plan::Position;
use crate::outbox::{Outbox, Pushed};
use crate::ws::frame::DataFrame;

/// Channels only the node itself uses (the web console's stats channel)
/// start with this character, which no client or API channel name may
/// hold (`ChannelPolicy::resolve` refuses control characters). They are
/// left out of the node's counts, its metrics and the `channels` API.
pub(crate) const INTERNAL_PREFIX: char = '\u{1}';

pub(crate) fn is_internal(channel: &str) -> bool {
    channel.starts_with(INTERNAL_PREFIX)
}

/// Told when live delivery finds a gap or epoch change on a positioned
/// subscription: the session must drop it (the client recovers by resubscribing).
pub(crate) trait GapListener: Send + Sync {
    fn on_gap(&self, channel: &str);
}

pub(crate) struct Hub {
    shards: Box<[RwLock<HashMap<String, Channel>>]>,
    hasher: BuildHasherDefault<DefaultHasher>,
    num_channels: AtomicUsize,
    num_subscriptions: AtomicUsize,
    /// Publications the engine handed over (internal channels aside), with
    /// or without local subscribers: the console's publications/s.
    publications: AtomicU64,
}

#[derive(Default)]
struct Channel {
    subscribers: HashMap<u64, Arc<Subscriber>>,
    /// How many of the subscribers use delta compression.
    delta_subscribers: usize,
    /// The channel's last publication on this node, kept while it has delta
    /// subscribers: the base of the delta they share.
    last: Mutex<Option<Arc<Publication>>>,
}

/// One session's subscription to one channel, as the fan-out sees it.
pub(crate) struct Subscriber {
    session: u64,
    channel: String,
    outbox: Arc<Outbox>,
    format: Format,
    join_leave: bool,
    /// Delta compression was negotiated (never with a tags filter).
    delta: bool,
    /// Only publications whose tags match are delivered.
    filter: Option<Arc<TagsFilter>>,
    delivery: Mutex<Delivery>,
    /// A delta subscriber's last received publication, the base of its next
    /// delta. Locked only under `delivery`.
    held: Mutex<Option<Arc<Publication>>>,
    gaps: Arc<dyn GapListener>,
}

enum Delivery {
    /// Subscribe in progress: hold everything until the reply is queued.
    /// Bounded like the outbox: what would overflow it closes the client as
    /// slow, as it would once flushed.
    Buffering(Vec<Buffered>, usize),
    /// Positioned: `next` is the offset expected next within `epoch`.
    Positioned {
        next: u64,
        epoch: String,
    },
    Live,
    Gone,
}

struct Buffered {
    /// `None` for join/leave.
    position: Option<(u64, String)>,
    item: BufferedItem,
}

enum BufferedItem {
    Frame(DataFrame),
    /// For a delta subscriber, whose frame depends on what it holds when it
    /// goes live: the publication and whether its publisher asked for delta.
    Publication(Arc<Publication>, bool),
    /// A publication the tags filter holds back: only its position is
    /// kept, so that going live counts it as seen.
    HeldBack,
    /// The engine signalled a possible loss while the subscribe ran: the
    /// stream read may or may not hold what was lost, so a positioned
    /// subscription recovers again once live.
    Gap,
}

impl BufferedItem {
    fn len(&self) -> usize {
        match self {
            BufferedItem::Frame(frame) => frame.len(),
            BufferedItem::Publication(p, _) => p.data.get().len() + 64,
            // Counted so that filtered-out traffic cannot grow the buffer
            // without bound either.
            BufferedItem::HeldBack | BufferedItem::Gap => std::mem::size_of::<Buffered>(),
        }
    }
}

/// Whether a publication goes to a positioned subscriber.
enum Admit {
    Deliver,
    /// Already delivered.
    Skip,
    /// The subscription ended (a gap).
    Ended,
}

impl Subscriber {
    pub(crate) fn new(
        session: u64,
        channel: String,
        outbox: Arc<Outbox>,
        format: Format,
        join_leave: bool,
        gaps: Arc<dyn GapListener>,
    ) -> Self {
        Self {
            session,
            channel,
            outbox,
            format,
            join_leave,
            delta: false,
            filter: None,
            delivery: Mutex::new(Delivery::Buffering(Vec::new(), 0)),
            held: Mutex::new(None),
            gaps,
        }
    }

    /// A subscriber with delta compression (`delta: "fossil"` negotiated).
    pub(crate) fn with_delta(mut self, delta: bool) -> Self {
        self.delta = delta;
        self
    }

    /// Delivers only the publications this filter passes.
    pub(crate) fn with_filter(mut self, filter: Option<Arc<TagsFilter>>) -> Self {
        self.filter = filter;
        self
    }

    /// Whether a publication with these tags is for this subscriber.
    fn wants(&self, publication: &Publication) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| f.matches(&publication.tags))
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// The publication a delta subscriber holds once its subscribe reply is
    /// queued (the last recovered one): its next delta's base.
    pub(crate) fn set_delta_base(&self, base: Option<Arc<Publication>>) {
        let _delivery = self.delivery.lock();
        *self.held.lock() = base;
    }

    pub(crate) fn session(&self) -> u64 {
        self.session
    }

    /// Ends buffering: called right after the subscribe reply was queued.
    /// Buffered frames the client already has (offset <= position) are dropped.
    pub(crate) fn go_live(&self, position: Option<Position>) {
        let mut delivery = self.delivery.lock();
        let buffered = match std::mem::replace(&mut *delivery, Delivery::Live) {
            Delivery::Buffering(b, _) => b,
            Delivery::Gone => {
                *delivery = Delivery::Gone;
                return;
            }
            other => {
                *delivery = other;
                return;
            }
        };
        if let Some(p) = position {
            *delivery = Delivery::Positioned {
                next: p.offset + 1,
                epoch: p.epoch,
            };
        }
        for buffered in buffered {
            let keep_going = match (&buffered.position, buffered.item) {
                (Some((offset, epoch)), BufferedItem::Frame(frame)) => {
                    self.deliver_locked(&mut delivery, *offset, epoch, frame)
                }
                (Some((offset, epoch)), BufferedItem::Publication(publication, wants_delta)) => {
                    // Not in step with the channel: a delta of its own.
                    let mut frames =
                        PublicationFrames::new(&self.channel, publication, wants_delta, None);
                    self.deliver_delta_locked(&mut delivery, *offset, epoch, &mut frames)
                }
                (Some((offset, epoch)), BufferedItem::HeldBack) => {
                    self.pass_locked(&mut delivery, *offset, epoch)
                }
                (None, BufferedItem::Frame(frame)) => self.push(&mut delivery, frame),
                (_, BufferedItem::Gap) => {
                    if matches!(*delivery, Delivery::Positioned { .. }) {
                        self.gap(&mut delivery)
                    } else {
                        true
                    }
                }
                (None, BufferedItem::Publication(..) | BufferedItem::HeldBack) => true,
            };
            if !keep_going {
                break;
            }
        }
    }

    /// The engine lost delivery for a while: a positioned subscription can
    /// no longer trust its position and must recover. One still subscribing
    /// remembers it: the stream read of its subscribe may have missed what
    /// was lost, so it recovers again once live (if positioned).
    fn interrupted(&self) {
        let mut delivery = self.delivery.lock();
        match *delivery {
            Delivery::Positioned { .. } => {
                self.gap(&mut delivery);
            }
            Delivery::Buffering(ref buffered, _)
                if buffered
                    .last()
                    .is_some_and(|b| matches!(b.item, BufferedItem::Gap)) => {}
            Delivery::Buffering(..) => {
                let item = Buffered {
                    position: None,
                    item: BufferedItem::Gap,
                };
                self.buffer(&mut delivery, item);
            }
            Delivery::Live | Delivery::Gone => {}
        }
    }

    /// Stops all delivery (unsubscribe, disconnect).
    pub(crate) fn close(&self) {
        *self.delivery.lock() = Delivery::Gone;
    }

    /// Returns whether the publication was for this subscriber (its tags
    /// filter passed it); one held back still moves a positioned
    /// subscription past its offset.
    fn deliver_publication(
        &self,
        offset: u64,
        epoch: &str,
        frames: &mut PublicationFrames<'_>,
    ) -> bool {
        let wanted = self.wants(&frames.publication);
        let mut delivery = self.delivery.lock();
        if let Delivery::Buffering(..) = &*delivery {
            if !wanted && offset == 0 {
                // Neither delivered nor positioned: nothing to remember.
                return false;
            }
            let item = if !wanted {
                BufferedItem::HeldBack
            } else if self.delta {
                BufferedItem::Publication(frames.publication.clone(), frames.wants_delta)
            } else {
                BufferedItem::Frame(frames.plain(self.format).clone())
            };
            let item = Buffered {
                position: Some((offset, epoch.to_owned())),
                item,
            };
            self.buffer(&mut delivery, item);
            return wanted;
        }
        if !wanted {
            self.pass_locked(&mut delivery, offset, epoch);
        } else if self.delta {
            self.deliver_delta_locked(&mut delivery, offset, epoch, frames);
        } else {
            self.deliver_locked(
                &mut delivery,
                offset,
                epoch,
                frames.plain(self.format).clone(),
            );
        }
        wanted
    }

    /// A publication the tags filter holds back: checked and counted like a
    /// delivered one, so the next matching offset is not taken for a gap.
    /// Returns false when the subscription ended.
    fn pass_locked(&self, delivery: &mut Delivery, offset: u64, epoch: &str) -> bool {
        match self.admit(delivery, offset, epoch) {
            Admit::Deliver | Admit::Skip => !matches!(delivery, Delivery::Gone),
            Admit::Ended => false,
        }
    }

    /// A delta subscriber's delivery: the frame depends on what it holds,
    /// and what it is sent becomes what it holds.
    fn deliver_delta_locked(
        &self,
        delivery: &mut Delivery,
        offset: u64,
        epoch: &str,
        frames: &mut PublicationFrames<'_>,
    ) -> bool {
        match self.admit(delivery, offset, epoch) {
            Admit::Deliver => {
                let mut held = self.held.lock();
                let frame = frames.for_delta_subscriber(self.format, held.as_ref());
                *held = Some(frames.publication.clone());
                drop(held);
                self.push(delivery, frame)
            }
            Admit::Skip => true,
            Admit::Ended => false,
        }
    }

    /// A join or leave push (only for subscribers with `join_leave`).
    fn deliver_event(&self, frame: &DataFrame) {
        let mut delivery = self.delivery.lock();
        if let Delivery::Buffering(..) = &*delivery {
            let item = Buffered {
                position: None,
                item: BufferedItem::Frame(frame.clone()),
            };
            self.buffer(&mut delivery, item);
            return;
        }
        self.push(&mut delivery, frame.clone());
    }

    fn buffer(&self, delivery: &mut Delivery, item: Buffered) {
        let Delivery::Buffering(buffer, bytes) = delivery else {
            return;
        };
        let len = item.item.len();
        if *bytes + len > self.outbox.limit() {
            *delivery = Delivery::Gone;
            self.outbox.close_now(Disconnect::SLOW);
            return;
        }
        *bytes += len;
        buffer.push(item);
    }

    /// Returns false when the subscription ended.
    fn deliver_locked(
        &self,
        delivery: &mut Delivery,
        offset: u64,
        epoch: &str,
        frame: DataFrame,
    ) -> bool {
        match self.admit(delivery, offset, epoch) {
            Admit::Deliver => self.push(delivery, frame),
            Admit::Skip => true,
            Admit::Ended => false,
        }
    }

    fn admit(&self, delivery: &mut Delivery, offset: u64, epoch: &str) -> Admit {
        if let Delivery::Positioned {
            next,
            epoch: expected,
        } = delivery
        {
            if offset > 0 {
                if epoch != expected.as_str() && !expected.is_empty() {
                    self.gap(delivery);
                    return Admit::Ended;
                }
                if offset < *next {
                    // Already delivered (in the subscribe reply or live).
                    return Admit::Skip;
                }
                if offset > *next {
                    self.gap(delivery);
                    return Admit::Ended;
                }
                *next = offset + 1;
                if expected.is_empty() {
                    *expected = epoch.to_owned();
                }
            }
        }
        Admit::Deliver
    }

    fn push(&self, delivery: &mut Delivery, frame: DataFrame) -> bool {
        if matches!(delivery, Delivery::Gone) {
            return false;
        }
        match self.outbox.push(frame) {
            Pushed::Queued => true,
            Pushed::Overflow | Pushed::Closed => {
                *delivery = Delivery::Gone;
                false
            }
        }
    }

    fn gap(&self, delivery: &mut Delivery) -> bool {
        *delivery = Delivery::Gone;
        self.gaps.on_gap(&self.channel);
        false
    }
}

impl Hub {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| RwLock::new(HashMap::new()))
                .collect(),
            hasher: BuildHasherDefault::default(),
            num_channels: AtomicUsize::new(0),
            num_subscriptions: AtomicUsize::new(0),
            publications: AtomicU64::new(0),
        }
    }

    fn shard(&self, channel: &str) -> &RwLock<HashMap<String, Channel>> {
        let index = self.hasher.hash_one(channel) as usize % self.shards.len();
        &self.shards[index]
    }

    /// Adds a subscriber; true when it is the channel's first on this node.
    pub(crate) fn add(&self, subscriber: Arc<Subscriber>) -> bool {
        let counted = !is_internal(&subscriber.channel);
        let mut shard = self.shard(&subscriber.channel).write();
        let channel = shard.entry(subscriber.channel.clone()).or_default();
        let first = channel.subscribers.is_empty();
        channel.delta_subscribers += usize::from(subscriber.delta);
        match channel.subscribers.insert(subscriber.session, subscriber) {
            None if counted => {
                self.num_subscriptions.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
            Some(replaced) => channel.delta_subscribers -= usize::from(replaced.delta),
        }
        if first && counted {
            self.num_channels.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Removes a session's subscriber; true when the channel has none left on this node.
    pub(crate) fn remove(&self, channel: &str, session: u64) -> bool {
        let mut shard = self.shard(channel).write();
        let Some(entry) = shard.get_mut(channel) else {
            return false;
        };
        let counted = !is_internal(channel);
        if let Some(subscriber) = entry.subscribers.remove(&session) {
            subscriber.close();
            entry.delta_subscribers -= usize::from(subscriber.delta);
            if counted {
                self.num_subscriptions.fetch_sub(1, Ordering::Relaxed);
            }
        } else {
            return false;
        }
        if entry.subscribers.is_empty() {
            shard.remove(channel);
            if counted {
                self.num_channels.fetch_sub(1, Ordering::Relaxed);
            }
            return true;
        }
        false
    }

    pub(crate) fn has_subscribers(&self, channel: &str) -> bool {
        self.shard(channel).read().contains_key(channel)
    }

    pub(crate) fn num_channels(&self) -> usize {
        self.num_channels.load(Ordering::Relaxed)
    }

    /// Every channel with local subscribers, and how many.
    pub(crate) fn channel_counts(&self) -> std::collections::BTreeMap<String, u32> {
        let mut counts = std::collections::BTreeMap::new();
        for shard in self.shards.iter() {
            for (name, channel) in shard.read().iter().filter(|(name, _)| !is_internal(name)) {
                let n = channel.subscribers.len().try_into().unwrap_or(u32::MAX);
                counts.insert(name.clone(), n);
            }
        }
        counts
    }

    pub(crate) fn num_subscriptions(&self) -> usize {
        self.num_subscriptions.load(Ordering::Relaxed)
    }

    /// Calls `f` for every subscriber of `channel`; returns how many.
    fn for_each(&self, channel: &str, mut f: impl FnMut(&Subscriber)) -> u64 {
        let shard = self.shard(channel).read();
        let Some(entry) = shard.get(channel) else {
            return 0;
        };
        for subscriber in entry.subscribers.values() {
            f(subscriber);
        }
        entry.subscribers.len() as u64
    }
}

impl Hub {
    /// Every positioned subscriber of `channel` may have missed publications.
    pub(crate) fn on_gap(&self, channel: &str) {
        let _ = self.for_each(channel, |s| s.interrupted());
    }

    /// Publications the engine handed to this node since it started.
    pub(crate) fn publications_received(&self) -> u64 {
        self.publications.load(Ordering::Relaxed)
    }

    pub(crate) fn on_publication(&self, channel: &str, publication: Publication, epoch: &str) {
        if !is_internal(channel) {
            self.publications.fetch_add(1, Ordering::Relaxed);
        }
        if !self.has_subscribers(channel) {
            return;
        }
        let mut publication = publication;
        // The publisher's request, not something a client is told as such.
        let wants_delta = std::mem::take(&mut publication.delta);
        let publication = Arc::new(publication);
        let offset = publication.offset;
        let shard = self.shard(channel).read();
        let Some(entry) = shard.get(channel) else {
            return;
        };
        let previous = {
            let mut last = entry.last.lock();
            if entry.delta_subscribers > 0 {
                last.replace(publication.clone())
            } else {
                last.take();
                None
            }
        };
        let mut frames = PublicationFrames::new(channel, publication, wants_delta, previous);
        let mut n = 0;
        for subscriber in entry.subscribers.values() {
            n += u64::from(subscriber.deliver_publication(offset, epoch, &mut frames));
        }
        drop(shard);
        if !is_internal(channel) {
            crate::metrics::METRICS.sent_publication.inc_by(n);
        }
    }

    pub(crate) fn on_join(&self, channel: &str, info: ClientInfo) {
        self.on_join_leave(channel, &info, true);
    }

    pub(crate) fn on_leave(&self, channel: &str, info: ClientInfo) {
        self.on_join_leave(channel, &info, false);
    }

    /// A join or leave push to the subscribers that receive them, framed
    /// once per format among those subscribers only.
    fn on_join_leave(&self, channel: &str, info: &ClientInfo, join: bool) {
        if !self.has_subscribers(channel) {
            return;
        }
        let mut frames = LazyFrames::new(|f| format::frame_join_leave(f, channel, info, join));
        let mut sent = 0;
        self.for_each(channel, |s| {
            if s.join_leave {
                s.deliver_event(frames.get(s.format));
                sent += 1;
            }
        });
        let counter = if join {
            &crate::metrics::METRICS.sent_join
        } else {
            &crate::metrics::METRICS.sent_leave
        };
        counter.inc_by(sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Next;
    use herald_protocol::{Push, PushBody, RawJson};

    #[derive(Default)]
    struct Gaps(Mutex<Vec<String>>);
    impl GapListener for Gaps {
        fn on_gap(&self, channel: &str) {
            self.0.lock().push(channel.to_owned());
        }
    }

    fn publication(offset: u64) -> Publication {
        Publication {
            data: RawJson::from_str(&format!("{{\"n\":{offset}}}")).unwrap(),
            info: None,
            offset,
            tags: Default::default(),
            delta: false,
        }
    }

    fn subscriber(id: u64, outbox: &Arc<Outbox>, gaps: &Arc<Gaps>) -> Arc<Subscriber> {
        Arc::new(Subscriber::new(
            id,
            "ch".into(),
            outbox.clone(),
            Format::Json,
            true,
            gaps.clone(),
        ))
    }

    async fn drain(outbox: &Outbox) -> String {
        match outbox.next().await {
            Next::Write(b) => String::from_utf8(b.payload().to_vec()).unwrap(),
            Next::Close(d) => format!("close {}", d.code),
        }
    }

    #[tokio::test]
    async fn buffers_until_live_and_dedupes_by_offset() {
        let hub = Hub::new(4);
        let gaps = Arc::new(Gaps::default());
        let outbox = Arc::new(Outbox::new(1 << 20));
        let sub = subscriber(1, &outbox, &gaps);
        assert!(hub.add(sub.clone()));
        hub.on_publication("ch", publication(5), "E");
        hub.on_publication("ch", publication(6), "E");
        // The reply (recovering up to offset 5) goes first, then only offset 6.
        outbox.push(DataFrame::text(b"REPLY"));
        sub.go_live(Some(Position {
            offset: 5,
            epoch: "E".into(),
        }));
        let frame = drain(&outbox).await;
        assert!(frame.starts_with("REPLY\n"), "{frame}");
        assert!(
            frame.contains("\"n\":6") && !frame.contains("\"n\":5"),
            "{frame}"
        );
        hub.on_publication("ch", publication(7), "E");
        assert!(drain(&outbox).await.contains("\"offset\":7"));
        assert!(gaps.0.lock().is_empty());
    }

    #[tokio::test]
    async fn internal_channels_are_delivered_but_left_out_of_the_figures() {
        let hub = Hub::new(4);
        let gaps = Arc::new(Gaps::default());
        let outbox = Arc::new(Outbox::new(1 << 20));
        let internal = format!("{INTERNAL_PREFIX}stats");
        let sub = Arc::new(Subscriber::new(
            1,
            internal.clone(),
            outbox.clone(),
            Format::Json,
            false,
            gaps.clone(),
        ));
        assert!(hub.add(sub.clone()));
        sub.go_live(None);
        hub.add(subscriber(2, &Arc::new(Outbox::new(1 << 20)), &gaps));
        assert_eq!((hub.num_channels(), hub.num_subscriptions()), (1, 1));
        assert_eq!(hub.channel_counts().keys().collect::<Vec<_>>(), ["ch"]);
        hub.on_publication(&internal, publication(0), "");
        assert!(drain(&outbox).await.contains("\"n\":0"));
        assert_eq!(hub.publications_received(), 0);
        hub.on_publication("ch", publication(1), "E");
        assert_eq!(hub.publications_received(), 1);
        assert!(hub.remove(&internal, 1));
        assert_eq!((hub.num_channels(), hub.num_subscriptions()), (1, 1));
    }

    #[tokio::test]
    async fn gap_and_epoch_change_end_positioned_subscription() {
        let hub = Hub::new(4);
        let gaps = Arc::new(Gaps::default());
        let outbox = Arc::new(Outbox::new(1 << 20));
        let sub = subscriber(1, &outbox, &gaps);
        hub.add(sub.clone());
        sub.go_live(Some(Position {
            offset: 1,
            epoch: "E".into(),
        }));
        hub.on_publication("ch", publication(3), "E");
        assert_eq!(gaps.0.lock().as_slice(), ["ch".to_string()]);

        let sub2 = subscriber(2, &outbox, &gaps);
        hub.add(sub2.clone());
        sub2.go_live(Some(Position {
            offset: 1,
            epoch: "E".into(),
        }));
        hub.on_publication("ch", publication(2), "OTHER");
        assert_eq!(gaps.0.lock().len(), 2);
    }

    /// A gap signalled while the subscribe runs (say, a publication refused
    /// as stale after the stream was read) is not forgotten: the subscription
    /// recovers again as soon as it is live and positioned, after what was
    /// buffered before the gap. An unpositioned one just goes live.
    #[tokio::test]
    async fn a_gap_while_subscribing_ends_the_subscription_once_live() {
        let hub = Hub::new(4);
        let gaps = Arc::new(Gaps::default());
        let outbox = Arc::new(Outbox::new(1 << 20));
        let sub = subscriber(1, &outbox, &gaps);
        hub.add(sub.clone());
        hub.on_publication("ch", publication(6), "E");
        hub.on_gap("ch");
        hub.on_gap("ch");
        // In sequence: only the buffered signal can end the subscription.
        hub.on_publication("ch", publication(7), "E");
        assert!(gaps.0.lock().is_empty(), "told once live, not before");
        outbox.push(DataFrame::text(b"REPLY"));
        sub.go_live(Some(Position {
            offset: 5,
            epoch: "E".into(),
        }));
        assert_eq!(gaps.0.lock().as_slice(), ["ch".to_string()]);
        let frame = drain(&outbox).await;
        assert!(frame.starts_with("REPLY\n"), "{frame}");
        assert!(
            frame.contains("\"n\":6") && !frame.contains("\"n\":7"),
            "{frame}"
        );
        // Gone: later publications do not reach it.
        hub.on_publication("ch", publication(9), "E");
        assert_eq!(outbox.queued_bytes(), 0);

        let unpositioned = subscriber(2, &outbox, &gaps);
        hub.add(unpositioned.clone());
        hub.on_gap("ch");
        unpositioned.go_live(None);
        hub.on_publication("ch", publication(0), "");
        assert!(drain(&outbox).await.contains("\"n\":0"));
        assert_eq!(gaps.0.lock().len(), 1);
    }

    #[tokio::test]
    async fn buffering_is_bounded_like_the_outbox() {
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let outbox = Arc::new(Outbox::new(4096));
        let sub = subscriber(1, &outbox, &gaps);
        hub.add(sub.clone());
        // The subscribe reply is not queued yet: everything is held.
        for offset in 1..=200 {
            hub.on_publication("ch", publication(offset), "E");
        }
        assert_eq!(
            drain(&outbox).await,
            format!("close {}", Disconnect::SLOW.code)
        );
        sub.go_live(None);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn counts_channels_and_first_last() {
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let outbox = Arc::new(Outbox::new(1 << 20));
        assert!(hub.add(subscriber(1, &outbox, &gaps)));
        assert!(!hub.add(subscriber(2, &outbox, &gaps)));
        assert_eq!(hub.num_channels(), 1);
        assert_eq!(hub.num_subscriptions(), 2);
        assert!(!hub.remove("ch", 1));
        assert!(hub.remove("ch", 2));
        assert!(!hub.remove("ch", 2));
        assert_eq!(hub.num_channels(), 0);
        assert_eq!(hub.num_subscriptions(), 0);
    }

    #[tokio::test]
    async fn each_format_gets_its_own_encoding_shared_by_its_recipients() {
        let hub = Hub::new(2);
        let gaps: Arc<Gaps> = Arc::new(Gaps::default());
        let outboxes: Vec<Arc<Outbox>> = (0..4).map(|_| Arc::new(Outbox::new(1 << 20))).collect();
        for (i, outbox) in outboxes.iter().enumerate() {
            let format = if i % 2 == 0 {
                Format::Json
            } else {
                Format::Protobuf
            };
            let sub = Arc::new(Subscriber::new(
                i as u64,
                "ch".into(),
                outbox.clone(),
                format,
                true,
                gaps.clone(),
            ));
            hub.add(sub.clone());
            sub.go_live(None);
        }
        hub.on_publication("ch", publication(9), "");
        let mut frames = Vec::new();
        for outbox in &outboxes {
            let Next::Write(frame) = outbox.next().await else {
                panic!("expected a write");
            };
            frames.push(frame);
        }
        assert!(!frames[0].is_binary() && frames[1].is_binary());
        assert_eq!(frames[0].as_bytes().as_ptr(), frames[2].as_bytes().as_ptr());
        assert_eq!(frames[1].as_bytes().as_ptr(), frames[3].as_bytes().as_ptr());
        assert!(String::from_utf8_lossy(frames[0].payload()).contains("\"n\":9"));
        let replies =
            herald_protocol::protobuf::client::decode_replies(frames[1].payload()).unwrap();
        assert!(matches!(&replies[..], [herald_protocol::Reply::Push(p)] if p.channel == "ch"));
        // Join pushes too: one encoding per format.
        hub.on_join("ch", ClientInfo::default());
        let Next::Write(a) = outboxes[1].next().await else {
            panic!()
        };
        let Next::Write(b) = outboxes[3].next().await else {
            panic!()
        };
        assert!(a.is_binary());
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
    }

    #[test]
    fn join_and_leave_go_only_to_subscribers_that_asked() {
        let hub = Hub::new(2);
        let gaps: Arc<Gaps> = Arc::new(Gaps::default());
        let quiet = Arc::new(Outbox::new(1 << 20));
        let sub = Arc::new(Subscriber::new(
            1,
            "ch".into(),
            quiet.clone(),
            Format::Protobuf,
            false,
            gaps.clone(),
        ));
        hub.add(sub.clone());
        sub.go_live(None);
        hub.on_join("ch", ClientInfo::default());
        hub.on_leave("ch", ClientInfo::default());
        assert_eq!(quiet.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn one_encoding_shared_by_all_recipients() {
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let a = Arc::new(Outbox::new(1 << 20));
        let b = Arc::new(Outbox::new(1 << 20));
        let sa = subscriber(1, &a, &gaps);
        let sb = subscriber(2, &b, &gaps);
        hub.add(sa.clone());
        hub.add(sb.clone());
        sa.go_live(None);
        sb.go_live(None);
        hub.on_publication("ch", publication(0), "");
        let (Next::Write(x), Next::Write(y)) = (a.next().await, b.next().await) else {
            panic!("expected writes");
        };
        assert_eq!(
            x.as_bytes().as_ptr(),
            y.as_bytes().as_ptr(),
            "recipients share one buffer"
        );
    }

    fn delta_subscriber(
        id: u64,
        format: Format,
        gaps: &Arc<Gaps>,
    ) -> (Arc<Subscriber>, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let sub = Arc::new(
            Subscriber::new(id, "ch".into(), outbox.clone(), format, false, gaps.clone())
                .with_delta(true),
        );
        (sub, outbox)
    }

    fn document(offset: u64, value: &str) -> Publication {
        let mut p = publication(offset);
        p.data = RawJson::from_str(&format!(
            "{{\"title\":\"a fairly long document that barely changes\",\"value\":\"{value}\",\"tail\":\"0123456789abcdefghijklmnopqrstuvwxyz\"}}"
        ))
        .unwrap();
        p.delta = true;
        p
    }

    /// The `pub` object of a JSON publication push.
    fn json_pub(frame: &DataFrame) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(frame.payload()).unwrap();
        v["push"]["pub"].clone()
    }

    async fn write(outbox: &Outbox) -> DataFrame {
        match outbox.next().await {
            Next::Write(frame) => frame,
            Next::Close(d) => panic!("closed {}", d.code),
        }
    }

    #[tokio::test]
    async fn delta_subscribers_in_step_share_one_delta_per_format() {
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let (a, a_out) = delta_subscriber(1, Format::Json, &gaps);
        let (b, b_out) = delta_subscriber(2, Format::Json, &gaps);
        let (c, c_out) = delta_subscriber(3, Format::Protobuf, &gaps);
        let (d, d_out) = delta_subscriber(4, Format::Protobuf, &gaps);
        let plain_out = Arc::new(Outbox::new(1 << 20));
        let plain = subscriber(5, &plain_out, &gaps);
        for s in [&a, &b, &c, &d, &plain] {
            hub.add(s.clone());
            s.go_live(None);
        }
        let first = document(1, "one");
        let second = document(2, "two");
        hub.on_publication("ch", first.clone(), "E");
        // First: the full payload as a JSON string, without `delta`, shared.
        let (fa, fb) = (write(&a_out).await, write(&b_out).await);
        assert_eq!(fa.as_bytes().as_ptr(), fb.as_bytes().as_ptr());
        let full = json_pub(&fa);
        assert_eq!(full["data"].as_str(), Some(first.data.get()));
        assert!(full.get("delta").is_none(), "{full}");
        // In protobuf the full payload is the plain push: one encoding.
        let (fc, fd) = (write(&c_out).await, write(&d_out).await);
        assert_eq!(fc.as_bytes().as_ptr(), fd.as_bytes().as_ptr());
        // A subscriber without delta gets the plain push, no `delta` anywhere.
        let plain_first = write(&plain_out).await;
        assert!(json_pub(&plain_first)["data"].is_object());
        assert!(json_pub(&plain_first).get("delta").is_none());

        hub.on_publication("ch", second.clone(), "E");
        let (da, db) = (write(&a_out).await, write(&b_out).await);
        assert_eq!(
            da.as_bytes().as_ptr(),
            db.as_bytes().as_ptr(),
            "one delta shared by the subscribers in step"
        );
        let patch = json_pub(&da);
        assert_eq!(patch["delta"], serde_json::Value::Bool(true));
        let patch = patch["data"].as_str().unwrap().as_bytes().to_vec();
        assert!(patch.len() < second.data.get().len());
        assert_eq!(
            herald_fossil::decode(first.data.get().as_bytes(), &patch).unwrap(),
            second.data.get().as_bytes()
        );
        let (dc, dd) = (write(&c_out).await, write(&d_out).await);
        assert_eq!(dc.as_bytes().as_ptr(), dd.as_bytes().as_ptr());
        let replies = herald_protocol::protobuf::client::decode_replies(dc.payload()).unwrap();
        let [herald_protocol::Reply::Push(Push {
            body: PushBody::Publication(p),
            ..
        })] = &replies[..]
        else {
            panic!("{replies:?}");
        };
        assert!(p.delta);
        let bytes = p.data.binary_bytes().unwrap();
        assert_eq!(
            herald_fossil::decode(first.data.get().as_bytes(), &bytes).unwrap(),
            second.data.get().as_bytes()
        );
        let plain_second = write(&plain_out).await;
        assert_eq!(json_pub(&plain_second)["data"]["value"], "two");
        assert!(json_pub(&plain_second).get("delta").is_none());

        // A subscriber out of step (it holds the first publication) gets a
        // delta of its own, against what it holds.
        let (late, late_out) = delta_subscriber(6, Format::Json, &gaps);
        hub.add(late.clone());
        late.set_delta_base(Some(Arc::new(first.clone())));
        late.go_live(None);
        let third = document(3, "three");
        hub.on_publication("ch", third.clone(), "E");
        let (ta, tl) = (write(&a_out).await, write(&late_out).await);
        assert_ne!(ta.as_bytes().as_ptr(), tl.as_bytes().as_ptr());
        let own = json_pub(&tl)["data"].as_str().unwrap().as_bytes().to_vec();
        assert_eq!(
            herald_fossil::decode(first.data.get().as_bytes(), &own).unwrap(),
            third.data.get().as_bytes()
        );
        // From then on it is in step and shares the channel's delta.
        hub.on_publication("ch", document(4, "four"), "E");
        let (qa, ql) = (write(&a_out).await, write(&late_out).await);
        assert_eq!(qa.as_bytes().as_ptr(), ql.as_bytes().as_ptr());
    }

    #[tokio::test]
    async fn without_the_publishers_request_delta_subscribers_get_full_payloads() {
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let (a, a_out) = delta_subscriber(1, Format::Json, &gaps);
        hub.add(a.clone());
        a.go_live(None);
        for offset in 1..=3 {
            let mut p = document(offset, "same");
            p.delta = false;
            hub.on_publication("ch", p.clone(), "E");
            let frame = json_pub(&write(&a_out).await);
            assert_eq!(frame["data"].as_str(), Some(p.data.get()));
            assert!(frame.get("delta").is_none());
        }
    }

    #[tokio::test]
    async fn buffered_publications_of_a_delta_subscriber_chain_from_its_base() {
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let (a, a_out) = delta_subscriber(1, Format::Json, &gaps);
        hub.add(a.clone());
        let base = document(5, "five");
        hub.on_publication("ch", base.clone(), "E");
        hub.on_publication("ch", document(6, "six"), "E");
        // The reply recovered up to offset 5, ending the chain at `base`.
        a.set_delta_base(Some(Arc::new(base.clone())));
        a_out.push(DataFrame::text(b"REPLY"));
        a.go_live(Some(Position {
            offset: 5,
            epoch: "E".into(),
        }));
        let batch = write(&a_out).await;
        let text = String::from_utf8(batch.payload().to_vec()).unwrap();
        let mut lines = text.split('\n');
        assert_eq!(lines.next(), Some("REPLY"));
        let v: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        let p = &v["push"]["pub"];
        assert_eq!(p["offset"], 6);
        assert_eq!(p["delta"], true);
        let target = herald_fossil::decode(
            base.data.get().as_bytes(),
            p["data"].as_str().unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(target, document(6, "six").data.get().as_bytes());
    }

    fn tagged(offset: u64, kind: &str) -> Publication {
        Publication {
            tags: [("kind".to_string(), kind.to_string())].into(),
            ..publication(offset)
        }
    }

    fn goals_only() -> Option<Arc<TagsFilter>> {
        let node = herald_protocol::FilterNode {
            key: "kind".into(),
            cmp: "eq".into(),
            val: "goal".into(),
            ..Default::default()
        };
        Some(Arc::new(TagsFilter::new(&node).unwrap()))
    }

    fn filtered(id: u64, outbox: &Arc<Outbox>, gaps: &Arc<Gaps>) -> Arc<Subscriber> {
        Arc::new(
            Subscriber::new(
                id,
                "ch".into(),
                outbox.clone(),
                Format::Json,
                false,
                gaps.clone(),
            )
            .with_filter(goals_only()),
        )
    }

    /// Everything queued so far, as text.
    async fn drain_all(outbox: &Outbox) -> String {
        let mut all = String::new();
        while outbox.queued_bytes() > 0 {
            all.push_str(&drain(outbox).await);
        }
        all
    }

    #[tokio::test]
    async fn a_filter_delivers_only_matching_publications_and_skips_no_position() {
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let outbox = Arc::new(Outbox::new(1 << 20));
        let sub = filtered(1, &outbox, &gaps);
        hub.add(sub.clone());
        sub.go_live(Some(Position {
            offset: 0,
            epoch: "E".into(),
        }));
        hub.on_publication("ch", tagged(1, "goal"), "E");
        hub.on_publication("ch", tagged(2, "shot"), "E");
        hub.on_publication("ch", tagged(3, "shot"), "E");
        hub.on_publication("ch", tagged(4, "goal"), "E");
        let text = drain_all(&outbox).await;
        assert!(
            text.contains("\"offset\":1") && text.contains("\"offset\":4"),
            "{text}"
        );
        assert!(
            !text.contains("\"offset\":2") && !text.contains("\"offset\":3"),
            "{text}"
        );
        // Offsets 2 and 3 were held back, not lost: no gap.
        assert!(gaps.0.lock().is_empty());
        // A real gap is still one, even when it hides only unwanted offsets.
        hub.on_publication("ch", tagged(6, "shot"), "E");
        assert_eq!(gaps.0.lock().as_slice(), ["ch".to_string()]);
    }

    #[tokio::test]
    async fn held_back_publications_while_buffering_count_as_seen() {
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let outbox = Arc::new(Outbox::new(1 << 20));
        let sub = filtered(1, &outbox, &gaps);
        hub.add(sub.clone());
        // Published while the subscribe is in flight: 5 is in the reply
        // (position 5), 6 and 7 are filtered out, 8 matches.
        for (offset, kind) in [(5, "goal"), (6, "shot"), (7, "shot"), (8, "goal")] {
            hub.on_publication("ch", tagged(offset, kind), "E");
        }
        outbox.push(DataFrame::text(b"REPLY"));
        sub.go_live(Some(Position {
            offset: 5,
            epoch: "E".into(),
        }));
        let text = drain_all(&outbox).await;
        assert!(text.starts_with("REPLY\n"), "{text}");
        assert!(text.contains("\"offset\":8"), "{text}");
        assert!(
            !text.contains("\"offset\":5") && !text.contains("\"offset\":6"),
            "{text}"
        );
        hub.on_publication("ch", tagged(9, "goal"), "E");
        assert!(drain_all(&outbox).await.contains("\"offset\":9"));
        assert!(gaps.0.lock().is_empty());
    }

    #[tokio::test]
    async fn held_back_publications_are_bounded_while_buffering() {
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let outbox = Arc::new(Outbox::new(4096));
        let sub = filtered(1, &outbox, &gaps);
        hub.add(sub.clone());
        for offset in 1..=10_000 {
            hub.on_publication("ch", tagged(offset, "shot"), "E");
        }
        assert_eq!(
            drain(&outbox).await,
            format!("close {}", Disconnect::SLOW.code)
        );
    }

    #[tokio::test]
    async fn filtering_subscribers_share_the_one_encoding() {
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let (a, b, c) = (
            Arc::new(Outbox::new(1 << 20)),
            Arc::new(Outbox::new(1 << 20)),
            Arc::new(Outbox::new(1 << 20)),
        );
        let (sa, sb, sc) = (
            filtered(1, &a, &gaps),
            subscriber(2, &b, &gaps),
            filtered(3, &c, &gaps),
        );
        for s in [&sa, &sb, &sc] {
            hub.add(s.clone());
            s.go_live(None);
        }
        // The unfiltered one gets the shot; the filtered ones nothing.
        hub.on_publication("ch", tagged(0, "shot"), "");
        let Next::Write(shot) = b.next().await else {
            panic!("expected a write")
        };
        assert!(String::from_utf8_lossy(shot.payload()).contains("shot"));
        assert_eq!(a.queued_bytes() + c.queued_bytes(), 0);
        // The goal reaches all three in the very same buffer.
        hub.on_publication("ch", tagged(0, "goal"), "");
        let (Next::Write(x), Next::Write(y), Next::Write(z)) =
            (a.next().await, b.next().await, c.next().await)
        else {
            panic!("expected writes");
        };
        assert!(String::from_utf8_lossy(x.payload()).contains("\"tags\":{\"kind\":\"goal\"}"));
        assert_eq!(x.as_bytes().as_ptr(), y.as_bytes().as_ptr());
        assert_eq!(z.as_bytes().as_ptr(), y.as_bytes().as_ptr());
    }

    #[tokio::test]
    async fn one_compression_shared_by_all_compressing_recipients() {
        use crate::ws::deflate::{inflate, Deflate, DEFAULT_WINDOW_BITS};
        let deflate = Deflate::new(1, 64);
        assert_eq!(deflate.window_bits, DEFAULT_WINDOW_BITS);
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let outboxes: Vec<Arc<Outbox>> = (0..3)
            .map(|_| Arc::new(Outbox::new(1 << 20).compressing(deflate.min_size)))
            .collect();
        for (i, outbox) in outboxes.iter().enumerate() {
            let sub = subscriber(i as u64, outbox, &gaps);
            hub.add(sub.clone());
            sub.go_live(None);
        }
        let big = Publication {
            data: RawJson::from_str(&format!("{{\"text\":\"{}\"}}", "abc".repeat(100))).unwrap(),
            info: None,
            offset: 1,
            tags: Default::default(),
            delta: false,
        };
        let before = crate::metrics::METRICS
            .compressions
            .with_label_values(&["shared"])
            .get();
        hub.on_publication("ch", big, "");
        let mut wire = Vec::new();
        for outbox in &outboxes {
            let Next::Write(frame) = outbox.next().await else {
                panic!("expected a write");
            };
            // What each connection's socket task writes.
            wire.push(frame.deflated(&deflate));
        }
        assert_eq!(wire[0].as_ptr(), wire[1].as_ptr(), "one compressed buffer");
        assert_eq!(wire[0].as_ptr(), wire[2].as_ptr(), "one compressed buffer");
        assert_eq!(wire[0][0] & 0x40, 0x40, "RSV1: compressed");
        let header = if wire[0][1] & 0x7f < 126 { 2 } else { 4 };
        let inflated = inflate(&wire[0][header..], 1 << 20).unwrap();
        assert!(String::from_utf8(inflated).unwrap().contains("abcabc"));
        // Compressed once (other tests may compress in parallel: at least one,
        // and the three recipients did not each compress).
        let after = crate::metrics::METRICS
            .compressions
            .with_label_values(&["shared"])
            .get();
        assert!(after > before);
    }

    #[tokio::test]
    async fn delta_frames_are_compressed_once_for_all_compressing_subscribers() {
        use crate::ws::deflate::Deflate;
        let deflate = Deflate::new(1, 0);
        let hub = Hub::new(2);
        let gaps = Arc::new(Gaps::default());
        let outboxes: Vec<Arc<Outbox>> = (0..3)
            .map(|_| Arc::new(Outbox::new(1 << 20).compressing(deflate.min_size)))
            .collect();
        for (i, outbox) in outboxes.iter().enumerate() {
            let sub = Arc::new(
                Subscriber::new(
                    i as u64,
                    "ch".into(),
                    outbox.clone(),
                    Format::Json,
                    false,
                    gaps.clone(),
                )
                .with_delta(true),
            );
            hub.add(sub.clone());
            sub.go_live(None);
        }
        // The first goes full, the second as a delta: both frames are the
        // node's one copy, so the one compression of each is shared too.
        for (offset, value) in [(1, "one"), (2, "two")] {
            hub.on_publication("ch", document(offset, value), "E");
            let mut wire = Vec::new();
            for outbox in &outboxes {
                let Next::Write(frame) = outbox.next().await else {
                    panic!("expected a write");
                };
                wire.push(frame.deflated(&deflate));
            }
            assert_eq!(wire[0].as_ptr(), wire[1].as_ptr(), "offset {offset}");
            assert_eq!(wire[0].as_ptr(), wire[2].as_ptr(), "offset {offset}");
        }
    }
}
