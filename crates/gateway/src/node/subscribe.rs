//! Subscribing a session to a channel: engine first, then history, so no
//! publication is lost between the two, with recovery per docs/protocol.md
//! ("History, positioning and recovery"). Shared by client-side subscribe
//! and the server-side subscriptions of a connection token.

use std::sync::Arc;

use herald_bus::{BusError, HistoryOptions, HistoryPage, HistoryQuery};
use herald_protocol::{ErrorCode, StreamPosition, SubscribeResult};

use crate::node::delta;
use crate::node::hub::Subscriber;
use crate::node::plan::{Position, SubscribePlan};
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
                    if plan.delta {
                        // The first full, then deltas; live delivery goes
                        // on from the last one.
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
