//! The bounded outbound queue of one connection.
//!
//! Everything a client receives (replies, pushes, pings, the close frame)
//! goes through its Outbox, in order. Producers (the Session, the Hub's
//! fan-out) only take a short per-connection lock and never wait on the
//! socket; the connection's socket task drains the queue, joining whatever
//! is queued into one newline-separated frame and one write. The socket task
//! is woken only when it is waiting: pushes that land while it is busy cost
//! no wake-up at all.
//!
//! On a connection with permessage-deflate a message is compressed when its
//! payload reaches `websocket.compression_min_size`; such a frame goes out as
//! a message of its own (a publication's compressed form is then made once
//! per node and shared), and smaller frames are joined only while the
//! joined message stays below that size, so a batch always goes out
//! uncompressed and no connection compresses publications for itself.
//! Frames keep their order either way.
//!
//! The queue is bounded in bytes: a push that would pass `limit` closes the
//! connection with 3008 (slow) and drops what was queued, so one slow client
//! never costs more than `limit` bytes here nor slows anyone else.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use herald_protocol::Disconnect;
use parking_lot::Mutex;

use crate::ws::frame::DataFrame;

/// How long a close may wait for a peer that does not read: after that the
/// connection is dropped without its close (a close frame, or a disconnect
/// push). Long enough for a slow but live client to read what is in flight
/// and see its close code (3008).
pub(crate) const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// Most bytes joined into one WebSocket message by the writer.
const MAX_BATCH_BYTES: usize = 32 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The queue passed its limit: the connection is being closed as slow.
    Overflow,
    /// The connection is closing; the frame was dropped.
    Closed,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    limit: usize,
    /// Most payload bytes joined into one message; 0 never joins.
    max_batch: usize,
    /// Payload size from which a frame is compressed and so goes alone;
    /// joined messages stay below it. `usize::MAX` without compression.
    compress_from: usize,
}

struct State {
    frames: VecDeque<DataFrame>,
    bytes: usize,
    close: Option<Closing>,
    /// The socket task, when it found nothing to write and is waiting.
    waiting: Option<Waker>,
    /// Whoever waits for the close besides the writer (`Outbox::closed`).
    close_watch: Option<Waker>,
}

struct Closing {
    disconnect: Disconnect,
}

/// What the writer should do next.
#[derive(Debug, PartialEq)]
pub(crate) enum Next {
    /// One WebSocket message: queued frames joined (`DataFrame::join`).
    Write(DataFrame),
    /// Send a close frame and stop.
    Close(Disconnect),
}

impl Outbox {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                close: None,
                waiting: None,
                close_watch: None,
            }),
            limit,
            max_batch: MAX_BATCH_BYTES,
            compress_from: usize::MAX,
        }
    }

    /// For a connection that compresses messages of `min_size` payload
    /// bytes and more: such frames are never joined, and joined messages
    /// stay below `min_size`.
    pub(crate) fn compressing(self, min_size: usize) -> Self {
        Self {
            compress_from: min_size,
            ..self
        }
    }

    /// An Outbox whose frames always go out one message each (the
    /// conformance echo: a message is not a line of the client protocol).
    pub(crate) fn unbatched(limit: usize) -> Self {
        Self {
            max_batch: 0,
            ..Self::new(limit)
        }
    }

    /// Queues one frame (a reply or push). Never blocks on the socket.
    pub(crate) fn push(&self, frame: DataFrame) -> Pushed {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return Pushed::Closed;
        }
        if state.bytes + frame.len() > self.limit {
            state.frames.clear();
            state.bytes = 0;
            state.close = Some(Closing {
                disconnect: Disconnect::SLOW,
            });
            let waiting = state.waiting.take();
            let watch = state.close_watch.take();
            drop(state);
            crate::metrics::server_disconnect(Disconnect::SLOW.code);
            wake(waiting);
            wake(watch);
            return Pushed::Overflow;
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        let waiting = state.waiting.take();
        drop(state);
        wake(waiting);
        Pushed::Queued
    }

    /// The byte limit of the queue (`client.queue_max_size`).
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Closes after what is already queued has been written. The first close wins.
    pub(crate) fn close(&self, disconnect: Disconnect) {
        self.close_with(disconnect, true, true);
    }

    /// The client sent a close frame: answer it with its own code, dropping
    /// whatever is queued. Not a server disconnect, so not counted as one.
    pub(crate) fn peer_closed(&self, code: u16) {
        self.close_with(Disconnect::custom(code, ""), false, false);
    }

    /// Closes at once, dropping whatever is queued. The first close wins.
    pub(crate) fn close_now(&self, disconnect: Disconnect) {
        self.close_with(disconnect, false, true);
    }

    fn close_with(&self, disconnect: Disconnect, flush: bool, counted: bool) {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return;
        }
        if !flush {
            state.frames.clear();
            state.bytes = 0;
        }
        let code = disconnect.code;
        state.close = Some(Closing { disconnect });
        let waiting = state.waiting.take();
        let watch = state.close_watch.take();
        drop(state);
        if counted {
            crate::metrics::server_disconnect(code);
        }
        wake(waiting);
        wake(watch);
    }

    /// Bytes queued and not yet taken by the writer.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// Drops every queued frame, as a writer that keeps up would take them,
    /// and returns their bytes. Lets the fan-out benchmark reset without a writer task.
    pub(crate) fn take_all(&self) -> usize {
        let mut state = self.state.lock();
        state.frames.clear();
        std::mem::take(&mut state.bytes)
    }

    /// The next thing to write, or `Pending` with the task registered to be
    /// woken by the next push or close. Only the connection's socket task calls it.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut state = self.state.lock();
        match Self::take(&mut state, self.max_batch, self.compress_from) {
            Some(next) => Poll::Ready(next),
            None => {
                // Registered under the same lock a push takes, so no push is missed.
                register(&mut state.waiting, cx);
                Poll::Pending
            }
        }
    }

    /// True once a close was asked for; otherwise registers the task to be
    /// woken when one is (or a frame is pushed). For a socket task stuck
    /// behind a peer that stopped reading.
    pub(crate) fn poll_closed(&self, cx: &mut Context<'_>) -> bool {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return true;
        }
        register(&mut state.waiting, cx);
        false
    }

    /// Resolves once a close was asked for (an overflow included). For the
    /// Session of a streamed response, which must give up a reader that
    /// stopped reading (`conn/abort.rs`); the writer's own wake-ups are
    /// separate.
    pub(crate) async fn closed(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.state.lock();
            if state.close.is_some() {
                return Poll::Ready(());
            }
            register(&mut state.close_watch, cx);
            Poll::Pending
        })
        .await
    }

    /// Waits for the next thing to write.
    #[cfg(test)]
    pub(crate) async fn next(&self) -> Next {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn take(state: &mut State, max_batch: usize, compress_from: usize) -> Option<Next> {
        let Some(first) = state.frames.front() else {
            return state
                .close
                .as_ref()
                .map(|c| Next::Close(c.disconnect.clone()));
        };
        // How many queued frames of the first one's kind fit in one message.
        let mut count = 1;
        let mut joined = first.payload().len();
        // A frame to be compressed goes alone (never joined onto others
        // either: a joined message stays below `compress_from`).
        let alone = joined >= compress_from;
        for frame in state.frames.iter().skip(1) {
            let grown = joined + frame.joined_len();
            if alone
                || frame.is_binary() != first.is_binary()
                || grown > max_batch
                || grown >= compress_from
            {
                break;
            }
            joined += frame.joined_len();
            count += 1;
        }
        let batch = if count == 1 {
            let frame = state.frames.pop_front()?;
            state.bytes -= frame.len();
            frame
        } else {
            let frames: Vec<DataFrame> = state.frames.drain(..count).collect();
            state.bytes -= frames.iter().map(DataFrame::len).sum::<usize>();
            DataFrame::join(&frames)
        };
        Some(Next::Write(batch))
    }
}

/// Stores the task's waker, keeping the stored one when it would wake the same task.
fn register(waiting: &mut Option<Waker>, cx: &Context<'_>) {
    match waiting {
        Some(w) if w.will_wake(cx.waker()) => {}
        slot => *slot = Some(cx.waker().clone()),
    }
}

/// Wakes outside the lock, so the woken task never finds it held.
fn wake(waiting: Option<Waker>) {
    if let Some(w) = waiting {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn joins_queued_frames_into_one_message() {
        let outbox = Outbox::new(1024);
        assert_eq!(outbox.push(DataFrame::text(b"{\"a\":1}")), Pushed::Queued);
        assert_eq!(outbox.push(DataFrame::text(b"{\"b\":2}")), Pushed::Queued);
        assert_eq!(
            outbox.next().await,
            Next::Write(DataFrame::text(b"{\"a\":1}\n{\"b\":2}"))
        );
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn joins_binary_frames_back_to_back_and_never_mixes_kinds() {
        let outbox = Outbox::new(1024);
        outbox.push(DataFrame::binary(&[1, 7]));
        outbox.push(DataFrame::binary(&[0]));
        outbox.push(DataFrame::text(b"{}"));
        assert_eq!(
            outbox.next().await,
            Next::Write(DataFrame::binary(&[1, 7, 0]))
        );
        assert_eq!(outbox.next().await, Next::Write(DataFrame::text(b"{}")));
    }

    #[tokio::test]
    async fn a_compressing_connection_sends_big_frames_alone_and_small_ones_joined() {
        let outbox = Outbox::new(1 << 20).compressing(10);
        outbox.push(DataFrame::text(b"a"));
        outbox.push(DataFrame::text(b"b"));
        outbox.push(DataFrame::text(b"0123456789"));
        outbox.push(DataFrame::text(b"c"));
        outbox.push(DataFrame::text(b"1234"));
        outbox.push(DataFrame::text(b"5678"));
        let mut got = Vec::new();
        for _ in 0..4 {
            let Next::Write(frame) = outbox.next().await else {
                panic!("expected a write");
            };
            got.push(String::from_utf8(frame.payload().to_vec()).unwrap());
        }
        // In order; the 10-byte frame alone; "c\n1234\n5678" would reach
        // 10 bytes, so it stops before.
        assert_eq!(got, ["a\nb", "0123456789", "c\n1234", "5678"]);
        // Compressing everything (min size 0): nothing is joined.
        let outbox = Outbox::new(1 << 20).compressing(0);
        outbox.push(DataFrame::text(b"x"));
        outbox.push(DataFrame::text(b"y"));
        assert_eq!(outbox.next().await, Next::Write(DataFrame::text(b"x")));
        assert_eq!(outbox.next().await, Next::Write(DataFrame::text(b"y")));
    }

    #[tokio::test]
    async fn overflow_closes_slow_and_drops_queue() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(DataFrame::text(b"1234")), Pushed::Queued);
        assert_eq!(outbox.push(DataFrame::text(b"1234")), Pushed::Overflow);
        assert_eq!(outbox.push(DataFrame::text(b"1")), Pushed::Closed);
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(outbox.next().await, Next::Close(Disconnect::SLOW));
    }

    #[tokio::test]
    async fn close_flushes_queued_first() {
        let outbox = Outbox::new(100);
        outbox.push(DataFrame::text(b"x"));
        outbox.close(Disconnect::BAD_REQUEST);
        outbox.close(Disconnect::SHUTDOWN);
        assert_eq!(outbox.next().await, Next::Write(DataFrame::text(b"x")));
        assert_eq!(outbox.next().await, Next::Close(Disconnect::BAD_REQUEST));
    }

    #[tokio::test]
    async fn close_now_drops_queued() {
        let outbox = Outbox::new(100);
        outbox.push(DataFrame::text(b"x"));
        outbox.close_now(Disconnect::NO_PONG);
        assert_eq!(outbox.next().await, Next::Close(Disconnect::NO_PONG));
    }

    #[tokio::test]
    async fn batch_is_capped() {
        let outbox = Outbox::new(1 << 20);
        let frame = DataFrame::text(&[b'a'; 20 * 1024]);
        outbox.push(frame.clone());
        outbox.push(frame.clone());
        match outbox.next().await {
            Next::Write(b) => assert_eq!(b, frame),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn poll_closed_registers_and_reports() {
        let outbox = Outbox::new(100);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(!outbox.poll_closed(&mut cx));
        outbox.close_now(Disconnect::SLOW);
        assert!(outbox.poll_closed(&mut cx));
    }

    #[tokio::test]
    async fn closed_resolves_on_an_overflow_from_another_task() {
        let outbox = std::sync::Arc::new(Outbox::new(4));
        let o = outbox.clone();
        let watcher = tokio::spawn(async move { o.closed().await });
        tokio::task::yield_now().await;
        assert!(!watcher.is_finished());
        assert_eq!(outbox.push(DataFrame::text(b"too long")), Pushed::Overflow);
        watcher.await.unwrap();
    }

    #[tokio::test]
    async fn writer_wakes_on_push_from_other_task() {
        let outbox = std::sync::Arc::new(Outbox::new(100));
        let o = outbox.clone();
        let writer = tokio::spawn(async move { o.next().await });
        tokio::task::yield_now().await;
        outbox.push(DataFrame::text(b"late"));
        assert_eq!(writer.await.unwrap(), Next::Write(DataFrame::text(b"late")));
    }
}
