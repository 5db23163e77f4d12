//! Subscribing a session to a channel: engine first, then history, so no
//! publication is lost between the two, with recovery per docs/protocol.md
//! ("History, positioning and recovery"). Shared by client-side subscribe
//! and the server-side subscriptions of a connection token.

use std::sync::Arc;

use herald_bus::{BusError, HistoryOptions, HistoryPage, HistoryQuery};
use herald_protocol::{ErrorCode, StreamPosition, SubscribeResult};

use crate::node::delta;
use crate::node::hub::Subscriber;
use crate::node::plan::{self, Position, SubscribePlan};
use crate::node::{unix_now, Node};

/// Runs the engine side of a subscribe. On success the subscriber is in the
/// Hub, buffering; the caller queues the reply and then calls
/// `Subscriber::go_live` with the returned position. On error nothing is left behind.
pub(crate) async fn subscribe(
    node: Arc<Node>,
    plan: SubscribePlan,
    subscriber: Arc<Subscriber>,
) -> Result<(SubscribeResult, Option<Position>), ErrorCode> {
    let session = subscriber.session();
    node.attach(&plan.channel, subscriber.clone())
        .await
        .map_err(|e| engine_error(&e))?;
    match finish(&node, &plan, &subscriber).await {
        Ok(done) => Ok(done),
        Err(code) => {
            node.detach(&plan.channel, session).await;
            Err(code)
        }
    }
}

async fn finish(
    node: &Node,
    plan: &SubscribePlan,
    subscriber: &Subscriber,
) -> Result<(SubscribeResult, Option<Position>), ErrorCode> {
    let mut result = SubscribeResult {
        delta: plan.delta,
        ..SubscribeResult::default()
    };
    let mut position = None;
    if let Some(history) = plan.history {
        // Read even when not positioned: a subscribe keeps an existing
        // stream's meta (epoch, top offset) alive, as history_meta_ttl
        // promises. A stream nobody published to is not created by it.
        let (top, recovered) = read_position(node, plan, history).await?;
        if !plan.positioned {
            return finish_common(node, plan, result).await.map(|r| (r, None));
        }
        result.positioned = true;
        result.recoverable = plan.recoverable;
        result.epoch = top.epoch.clone();
        result.offset = top.offset;
        if let Some(requested) = &plan.recover {
            result.was_recovering = true;
            match recovered {
                Some(mut publications) => {
                    result.recovered = true;
                    result.offset = requested.offset;
                    if plan.options.binary_data() {
                        for p in &mut publications {
                            p.data.mark_binary();
                        }
                    }
                    // `offset` stays the requested one: the client moves to
                    // the stream top through what it receives next, and a
                    // filtered-out offset is no gap (hub.rs, `go_live`).
                    let mut publications = plan::deliverable(plan, publications);
                    if plan.delta {
                        // The first full, then deltas; live delivery goes
                        // on from the last one. (Never with a tags filter.)
                        let (chain, last) = delta::chain(subscriber.format(), publications);
                        subscriber.set_delta_base(last);
                        publications = chain;
                    }
                    result.publications = publications;
                }
                None if plan.reject_unrecovered => return Err(ErrorCode::UnrecoverablePosition),
                None => {}
            }
        }
        position = Some(Position {
            offset: top.offset,
            epoch: top.epoch,
        });
    }
    finish_common(node, plan, result)
        .await
        .map(|r| (r, position))
}

/// Presence, join and expiry: the part every subscribe shares.
async fn finish_common(
    node: &Node,
    plan: &SubscribePlan,
    mut result: SubscribeResult,
) -> Result<SubscribeResult, ErrorCode> {
    if plan.options.presence {
        node.engine
            .presence
            .add_presence(&plan.channel, plan.info.clone(), node.presence_ttl())
            .await
            .map_err(|e| engine_error(&e))?;
    }
    if plan.options.join_leave {
        node.engine
            .broker
            .publish_join(&plan.channel, plan.info.clone())
            .await
            .map_err(|e| engine_error(&e))?;
    }
    if let Some(at) = plan.expires_at.filter(|_| !plan.refreshed_by_backend) {
        result.expires = true;
        result.ttl = at.saturating_sub(unix_now()).min(u64::from(u32::MAX)) as u32;
    }
    result.data = plan.data.clone();
    Ok(result)
}

/// Reads the stream top, and with a recovery request the missed publications:
/// `Some(publications)` when the client can continue without a gap.
async fn read_position(
    node: &Node,
    plan: &SubscribePlan,
    history: HistoryOptions,
) -> Result<(StreamPosition, Option<Vec<herald_protocol::Publication>>), ErrorCode> {
    let broker = &node.engine.broker;
    let top_only = HistoryQuery {
        since: None,
        limit: Some(0),
        reverse: false,
        meta_ttl: history.meta_ttl,
    };
    let Some(requested) = &plan.recover else {
        let page = broker
            .history(&plan.channel, &top_only)
            .await
            .map_err(|e| engine_error(&e))?;
        return Ok((page.position, None));
    };
    if plan.cache_recovery {
        return read_latest(node, plan, requested, &top_only).await;
    }
    let max = node.client.recovery_max_publication_limit;
    let query = HistoryQuery {
        since: Some(requested.clone()),
        limit: Some(max + 1),
        reverse: false,
        meta_ttl: history.meta_ttl,
    };
    match broker.history(&plan.channel, &query).await {
        Ok(page) => {
            let recovered = recovered(requested, &page, max);
            let top = page.position.clone();
            Ok((top, recovered.then_some(page.publications)))
        }
        // A shredded (or tampered) record cannot be given back: as for a
        // lost position, the client is told `recovered: false`.
        Err(BusError::UnrecoverablePosition | BusError::Undecryptable) => {
            let page = broker
                .history(&plan.channel, &top_only)
                .await
                .map_err(|e| engine_error(&e))?;
            Ok((page.position, None))
        }
        Err(e) => Err(engine_error(&e)),
    }
}

/// Cache recovery (docs/protocol.md, "Cache recovery"): the stream's
/// latest publication, read newest first, instead of every missed one.
async fn read_latest(
    node: &Node,
    plan: &SubscribePlan,
    requested: &StreamPosition,
    top_only: &HistoryQuery,
) -> Result<(StreamPosition, Option<Vec<herald_protocol::Publication>>), ErrorCode> {
    let broker = &node.engine.broker;
    // With a tags filter the subscriber takes the newest publication its
    // filter passes: look back as far as recovery may.
    let depth = match plan.tags_filter {
        Some(_) => node.client.recovery_max_publication_limit.max(1),
        None => 1,
    };
    let newest = HistoryQuery {
        since: None,
        limit: Some(depth),
        reverse: true,
        meta_ttl: top_only.meta_ttl,
    };
    match broker.history(&plan.channel, &newest).await {
        Ok(page) => {
            let latest = page.publications.first().cloned();
            let given = match &plan.tags_filter {
                Some(filter) => page
                    .publications
                    .into_iter()
                    .find(|p| filter.matches(&p.tags)),
                None => latest.clone(),
            };
            let recovered = cache_recovered(requested, &page.position, latest.as_ref(), given);
            Ok((page.position, recovered))
        }
        Err(BusError::UnrecoverablePosition | BusError::Undecryptable) => {
            let page = broker
                .history(&plan.channel, top_only)
                .await
                .map_err(|e| engine_error(&e))?;
            Ok((page.position, None))
        }
        Err(e) => Err(engine_error(&e)),
    }
}

/// The cache recovery rule, Centrifugo's: `latest` is the stream's newest
/// publication, `given` the one the subscriber takes (the same, or the
/// newest its filter passes). Recovered when the newest publication is the
/// stream's top, giving `given` unless the client already has the top;
/// with nothing to give, recovered only when the client is at the top.
fn cache_recovered(
    requested: &StreamPosition,
    top: &StreamPosition,
    latest: Option<&herald_protocol::Publication>,
    given: Option<herald_protocol::Publication>,
) -> Option<Vec<herald_protocol::Publication>> {
    let at_top =
        requested.offset > 0 && requested.offset == top.offset && requested.epoch == top.epoch;
    let (Some(latest), Some(given)) = (latest, given) else {
        return at_top.then(Vec::new);
    };
    if latest.offset != top.offset {
        return None;
    }
    Some(if at_top { Vec::new() } else { vec![given] })
}

/// The recovery rule (docs/protocol.md, "History, positioning and recovery").
fn recovered(requested: &StreamPosition, page: &HistoryPage, max: usize) -> bool {
    let top = &page.position;
    if !requested.epoch.is_empty() && requested.epoch != top.epoch {
        return false;
    }
    let pubs = &page.publications;
    if pubs.len() > max {
        return false;
    }
    match (pubs.first(), pubs.last()) {
        // Every offset in between too: a record deleted from the middle of
        // a stream (nothing herald does; someone with Redis access) is a
        // gap, not a recovery.
        (Some(first), Some(last)) => {
            first.offset == requested.offset + 1
                && last.offset == top.offset
                && pubs.windows(2).all(|w| w[1].offset == w[0].offset + 1)
        }
        _ => top.offset == requested.offset,
    }
}

/// The wire code of an engine error (codes.rs), logging what is not a
/// lost position.
pub(crate) fn engine_error(e: &BusError) -> ErrorCode {
    let code = crate::codes::engine(e);
    if code == ErrorCode::Internal {
        tracing::warn!(error = %e, "engine call failed");
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::{Publication, RawJson};

    fn page(offsets: &[u64], top: u64, epoch: &str) -> HistoryPage {
        HistoryPage {
            publications: offsets
                .iter()
                .map(|o| Publication {
                    data: RawJson::from_str("1").unwrap(),
                    info: None,
                    offset: *o,
                    tags: Default::default(),
                    delta: false,
                })
                .collect(),
            position: StreamPosition {
                offset: top,
                epoch: epoch.into(),
            },
        }
    }

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn cache_recovery_rule_table() {
        let publication = |offset: u64| Publication {
            data: RawJson::from_str("1").unwrap(),
            info: None,
            offset,
            tags: Default::default(),
            delta: false,
        };
        // (requested, top, latest offset, want: None = not recovered,
        // Some(offsets given))
        type Case = (
            StreamPosition,
            StreamPosition,
            Option<u64>,
            Option<Vec<u64>>,
        );
        let cases: [Case; 8] = [
            // A fresh subscriber (empty `since`) gets the latest.
            (at(0, ""), at(7, "E"), Some(7), Some(vec![7])),
            // Behind, in another epoch or a lost one: still just the latest.
            (at(3, "E"), at(7, "E"), Some(7), Some(vec![7])),
            (at(3, "OLD"), at(7, "E"), Some(7), Some(vec![7])),
            // Already at the top: recovered, nothing to give again.
            (at(7, "E"), at(7, "E"), Some(7), Some(vec![])),
            // Nothing kept (history expired): only a client at the top is recovered.
            (at(0, ""), at(7, "E"), None, None),
            (at(7, "E"), at(7, "E"), None, Some(vec![])),
            (at(0, ""), at(0, ""), None, None),
            // The newest kept is not the top (a torn read): not recovered.
            (at(0, ""), at(7, "E"), Some(6), None),
        ];
        for (i, (requested, top, latest, want)) in cases.into_iter().enumerate() {
            let latest = latest.map(publication);
            let got = cache_recovered(&requested, &top, latest.as_ref(), latest.clone())
                .map(|pubs| pubs.iter().map(|p| p.offset).collect::<Vec<_>>());
            assert_eq!(got, want, "case {i}");
        }
        // What is given may differ from the newest (a filter's pick).
        let got = cache_recovered(
            &at(0, ""),
            &at(7, "E"),
            Some(&publication(7)),
            Some(publication(5)),
        );
        assert_eq!(got.map(|p| p[0].offset), Some(5));
        let got = cache_recovered(&at(0, ""), &at(7, "E"), Some(&publication(7)), None);
        assert_eq!(got, None);
    }

    #[test]
    fn recovery_rule_table() {
        let cases = [
            (at(3, "E"), page(&[4, 5], 5, "E"), 300, true),
            (at(3, ""), page(&[4, 5], 5, "E"), 300, true),
            (at(5, "E"), page(&[], 5, "E"), 300, true),
            (at(3, "E"), page(&[], 5, "E"), 300, false),
            (at(3, "OLD"), page(&[4, 5], 5, "E"), 300, false),
            (at(3, "E"), page(&[5], 5, "E"), 300, false),
            (at(3, "E"), page(&[4], 5, "E"), 300, false),
            (at(3, "E"), page(&[4, 5], 5, "E"), 1, false),
            (at(3, "E"), page(&[4, 6, 7], 7, "E"), 300, false),
            (at(3, "E"), page(&[4, 5, 6, 7], 7, "E"), 300, true),
        ];
        for (i, (requested, page, max, want)) in cases.into_iter().enumerate() {
            assert_eq!(recovered(&requested, &page, max), want, "case {i}");
        }
    }
}
