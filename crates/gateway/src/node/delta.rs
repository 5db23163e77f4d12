//! Delta compression (`delta: "fossil"` subscriptions, docs/protocol.md
//! "Delta compression"): what a delta subscriber receives instead of a
//! publication's data, in each format.
//!
//! A delta subscriber's data is always relative to the last publication it
//! was sent: a fossil delta when that is smaller than the data, else the
//! full data. In the JSON format the data goes as a JSON string (of the
//! delta or of the full payload), which is what the SDKs decode; in
//! protobuf, as bytes. The delta is computed over the bytes the client's
//! decoder holds: the JSON text in the JSON format, the payload bytes in
//! protobuf (a binary channel's raw bytes).

use std::borrow::Cow;
use std::sync::Arc;

use herald_protocol::{Format, Publication, RawJson};

use crate::format;
use crate::ws::frame::DataFrame;

/// The bytes a delta is computed over, as the client holds them.
fn payload(format: Format, data: &RawJson) -> Cow<'_, [u8]> {
    match format {
        Format::Json => Cow::Borrowed(data.get().as_bytes()),
        Format::Protobuf => match data.binary_bytes() {
            Some(bytes) => Cow::Owned(bytes),
            None => Cow::Borrowed(data.get().as_bytes()),
        },
    }
}

/// `publication` with `bytes` (a delta or the full payload) as its data.
/// `None` in the JSON format when `bytes` is not UTF-8 (a delta whose
/// copies split a character): a JSON string cannot carry it.
fn with_data(
    format: Format,
    publication: &Publication,
    bytes: &[u8],
    delta: bool,
) -> Option<Publication> {
    let data = match format {
        Format::Json => RawJson::from_value(&std::str::from_utf8(bytes).ok()?).ok()?,
        Format::Protobuf => RawJson::binary(bytes),
    };
    Some(Publication {
        data,
        info: publication.info.clone(),
        offset: publication.offset,
        tags: publication.tags.clone(),
        delta,
    })
}

/// The full payload as a delta subscriber receives it (`delta` false).
pub(crate) fn full(format: Format, publication: &Publication) -> Publication {
    match format {
        // The JSON text is UTF-8: a JSON string of it always exists.
        Format::Json => with_data(
            format,
            publication,
            publication.data.get().as_bytes(),
            false,
        )
        .unwrap_or_else(|| plain(publication)),
        Format::Protobuf => plain(publication),
    }
}

/// The publication as it is, without the publisher's delta request.
pub(crate) fn plain(publication: &Publication) -> Publication {
    let mut plain = publication.clone();
    plain.delta = false;
    plain
}

/// What a delta subscriber that holds `previous` receives for `next`: the
/// delta when it is smaller than the data, else the full payload.
pub(crate) fn against(format: Format, previous: &Publication, next: &Publication) -> Publication {
    let source = payload(format, &previous.data);
    let target = payload(format, &next.data);
    let patch = herald_fossil::encode(&source, &target);
    if patch.len() < target.len() {
        if let Some(publication) = with_data(format, next, &patch, true) {
            crate::metrics::METRICS.delta_patch.inc();
            return publication;
        }
    }
    crate::metrics::METRICS.delta_full.inc();
    full(format, next)
}

/// The publications of a recovery for a delta subscriber: the first full,
/// each next one against the one before it. Returns the last one, the base
/// of the next live delta.
pub(crate) fn chain(
    format: Format,
    publications: Vec<Publication>,
) -> (Vec<Publication>, Option<Arc<Publication>>) {
    let mut out = Vec::with_capacity(publications.len());
    let mut previous: Option<Publication> = None;
    for publication in publications {
        out.push(match &previous {
            None => full(format, &publication),
            Some(prev) => against(format, prev, &publication),
        });
        previous = Some(publication);
    }
    (out, previous.map(Arc::new))
}

/// The frames one publication needs on this node, each made at most once:
/// the plain push for subscribers without delta, and for delta subscribers
/// the full-payload push and the delta against the channel's previous
/// publication on this node, which every subscriber that received that
/// previous publication shares. Each of these is `shared()`: a compressing
/// connection compresses it once for all of them (ws/frame.rs).
pub(crate) struct PublicationFrames<'a> {
    channel: &'a str,
    pub(crate) publication: Arc<Publication>,
    /// The publisher asked for delta delivery.
    pub(crate) wants_delta: bool,
    /// The channel's previous publication on this node.
    pub(crate) previous: Option<Arc<Publication>>,
    plain: [Option<DataFrame>; 2],
    full: [Option<DataFrame>; 2],
    shared_delta: [Option<DataFrame>; 2],
}

fn slot(format: Format) -> usize {
    match format {
        Format::Json => 0,
        Format::Protobuf => 1,
    }
}

impl<'a> PublicationFrames<'a> {
    pub(crate) fn new(
        channel: &'a str,
        publication: Arc<Publication>,
        wants_delta: bool,
        previous: Option<Arc<Publication>>,
    ) -> Self {
        Self {
            channel,
            publication,
            wants_delta,
            previous,
            plain: [None, None],
            full: [None, None],
            shared_delta: [None, None],
        }
    }

    /// The push for a subscriber without delta.
    pub(crate) fn plain(&mut self, format: Format) -> &DataFrame {
        let (channel, publication) = (self.channel, &self.publication);
        self.plain[slot(format)]
            .get_or_insert_with(|| format::frame_publication(format, channel, publication).shared())
    }

    /// The full payload for a delta subscriber.
    pub(crate) fn full(&mut self, format: Format) -> DataFrame {
        if format == Format::Protobuf {
            // The full payload is the plain push in protobuf.
            return self.plain(format).clone();
        }
        let (channel, publication) = (self.channel, &self.publication);
        self.full[slot(format)]
            .get_or_insert_with(|| {
                format::frame_publication(format, channel, &full(format, publication)).shared()
            })
            .clone()
    }

    /// What a delta subscriber that last received `held` gets.
    pub(crate) fn for_delta_subscriber(
        &mut self,
        format: Format,
        held: Option<&Arc<Publication>>,
    ) -> DataFrame {
        let Some(held) = held else {
            return self.full(format);
        };
        if !self.wants_delta {
            return self.full(format);
        }
        let in_sync = self
            .previous
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, held) || p.data == held.data);
        if in_sync {
            let (channel, publication) = (self.channel, &self.publication);
            return self.shared_delta[slot(format)]
                .get_or_insert_with(|| {
                    format::frame_publication(format, channel, &against(format, held, publication))
                        .shared()
                })
                .clone();
        }
        format::frame_publication(
            format,
            self.channel,
            &against(format, held, &self.publication),
        )
    }
}
