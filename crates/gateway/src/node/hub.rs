//! The node-local index channel -> subscribed sessions, and the fan-out.
//!
//! Sharded by channel hash so fan-out of different channels runs on every
//! core without a global lock. A publication is encoded once per format its
//! subscribers on this node speak (JSON, and protobuf only when one of them
//! speaks it) into a WebSocket frame, and every recipient's Outbox gets a
//! reference-counted copy of the same bytes.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use herald_protocol::{ClientInfo, Disconnect, Format, Publication};
use parking_lot::{Mutex, RwLock};

use crate::format::{self, LazyFrames};
use crate::node::plan::Position;
use crate::outbox::{Outbox, Pushed};
use crate::ws::frame::DataFrame;

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
}

#[derive(Default)]
struct Channel {
    subscribers: HashMap<u64, Arc<Subscriber>>,
}

/// One session's subscription to one channel, as the fan-out sees it.
pub(crate) struct Subscriber {
    session: u64,
    channel: String,
    outbox: Arc<Outbox>,
    format: Format,
    join_leave: bool,
    delivery: Mutex<Delivery>,
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
    frame: DataFrame,
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
            delivery: Mutex::new(Delivery::Buffering(Vec::new(), 0)),
            gaps,
        }
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
        for item in buffered {
            let keep_going = match &item.position {
                Some((offset, epoch)) => {
                    self.deliver_locked(&mut delivery, *offset, epoch, item.frame)
                }
                None => self.push(&mut delivery, item.frame),
            };
            if !keep_going {
                break;
            }
        }
    }

    /// The engine lost delivery for a while: a positioned subscription can
    /// no longer trust its position and must recover.
    fn interrupted(&self) {
        let mut delivery = self.delivery.lock();
        if matches!(*delivery, Delivery::Positioned { .. }) {
            self.gap(&mut delivery);
        }
    }

    /// Stops all delivery (unsubscribe, disconnect).
    pub(crate) fn close(&self) {
        *self.delivery.lock() = Delivery::Gone;
    }

    fn deliver_publication(&self, offset: u64, epoch: &str, frame: &DataFrame) {
        let mut delivery = self.delivery.lock();
        if let Delivery::Buffering(..) = &*delivery {
            let item = Buffered {
                position: Some((offset, epoch.to_owned())),
                frame: frame.clone(),
            };
            self.buffer(&mut delivery, item);
            return;
        }
        self.deliver_locked(&mut delivery, offset, epoch, frame.clone());
    }

    /// A join or leave push (only for subscribers with `join_leave`).
    fn deliver_event(&self, frame: &DataFrame) {
        let mut delivery = self.delivery.lock();
        if let Delivery::Buffering(..) = &*delivery {
            let item = Buffered {
                position: None,
                frame: frame.clone(),
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
        if *bytes + item.frame.len() > self.outbox.limit() {
            *delivery = Delivery::Gone;
            self.outbox.close_now(Disconnect::SLOW);
            return;
        }
        *bytes += item.frame.len();
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
        if let Delivery::Positioned {
            next,
            epoch: expected,
        } = delivery
        {
            if offset > 0 {
                if epoch != expected.as_str() && !expected.is_empty() {
                    return self.gap(delivery);
                }
                if offset < *next {
                    // Already delivered (in the subscribe reply or live).
                    return true;
                }
                if offset > *next {
                    return self.gap(delivery);
                }
                *next = offset + 1;
                if expected.is_empty() {
                    *expected = epoch.to_owned();
                }
            }
        }
        self.push(delivery, frame)
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
        }
    }

    fn shard(&self, channel: &str) -> &RwLock<HashMap<String, Channel>> {
        let index = self.hasher.hash_one(channel) as usize % self.shards.len();
        &self.shards[index]
    }

    /// Adds a subscriber; true when it is the channel's first on this node.
    pub(crate) fn add(&self, subscriber: Arc<Subscriber>) -> bool {
        let mut shard = self.shard(&subscriber.channel).write();
        let channel = shard.entry(subscriber.channel.clone()).or_default();
        let first = channel.subscribers.is_empty();
        if channel
            .subscribers
            .insert(subscriber.session, subscriber)
            .is_none()
        {
            self.num_subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        if first {
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
        if let Some(subscriber) = entry.subscribers.remove(&session) {
            subscriber.close();
            self.num_subscriptions.fetch_sub(1, Ordering::Relaxed);
        } else {
            return false;
        }
        if entry.subscribers.is_empty() {
            shard.remove(channel);
            self.num_channels.fetch_sub(1, Ordering::Relaxed);
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
            for (name, channel) in shard.read().iter() {
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

    pub(crate) fn on_publication(&self, channel: &str, publication: Publication, epoch: &str) {
        if !self.has_subscribers(channel) {
            return;
        }
        let mut frames = LazyFrames::new(|f| format::frame_publication(f, channel, &publication));
        let offset = publication.offset;
        let n = self.for_each(channel, |s| {
            s.deliver_publication(offset, epoch, frames.get(s.format))
        });
        crate::metrics::METRICS.sent_publication.inc_by(n);
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
    use herald_protocol::RawJson;

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
}
