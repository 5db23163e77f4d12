//! The socket side of one WebSocket connection, after the handshake: a
//! single future that owns the stream, writes whatever the connection's
//! Outbox holds and reads client frames for its Session actor.
//!
//! It is the only task a delivery wakes: a push into the Outbox wakes this
//! future (if it is waiting), which writes the queued frame (shared, framed
//! once per publication) or everything queued joined into one frame, with
//! one `send(2)`. An idle connection holds no buffer here: reads
//! go through a per-thread scratch buffer, and only the unfinished part of
//! a frame is kept.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_channel::mpsc;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use herald_protocol::Format;

use crate::conn::abort::AbortHandle;
use crate::format::{self, ClientMessage};
use crate::metrics;
use crate::outbox::{Next, Outbox, CLOSE_LINGER};
use crate::ws::deflate::Deflate;
use crate::ws::frame::{self as wsframe, DataFrame, Message, Reader, WsError};

/// Per-thread read buffer: a read lands here and only an unfinished frame
/// is copied out, so idle connections hold nothing.
const SCRATCH_BYTES: usize = 16 * 1024;

/// Most pongs owed at once. A client pinging faster than it reads gets a
/// pong for its latest pings only, as RFC 6455 §5.5.3 allows.
const MAX_PENDING_PONGS: usize = 16;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Why reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// End of stream or a read error: nobody is listening any more.
    PeerGone,
    /// A close frame or a protocol violation: a close frame is queued in reply.
    CloseQueued,
    /// The Session is gone; its Outbox close follows.
    SessionGone,
}

/// A stream the socket task can run on (listener.rs implements it for the
/// public listener's streams). `poll_send` writes one buffer; plain TCP
/// overrides it with `send(2)`, which skips the VFS layers a `write(2)` goes
/// through (measurable at one call per delivery).
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Unpin {
    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write(cx, buf)
    }

    /// The client's verified certificate (DER), when TLS asked for one and
    /// the client gave it.
    fn peer_certificate(&self) -> Option<&[u8]> {
        None
    }

    /// The switch that drops this connection from outside (`conn/abort.rs`).
    fn abort_handle(&self) -> Option<AbortHandle> {
        None
    }
}

/// One frame being written, from `written` on.
struct Outgoing {
    frame: Bytes,
    written: usize,
    /// The last frame: the stream is shut down after it.
    last: bool,
}

/// Drives one connection until either side closes.
pub(crate) struct Socket<T> {
    io: T,
    outbox: Arc<Outbox>,
    /// Where whole messages go: the Session; None on the conformance echo
    /// route, where each message goes straight back through the Outbox, in
    /// the order it was read.
    inbound: Option<mpsc::Sender<ClientMessage>>,
    reader: Reader,
    /// Bytes of an unfinished frame; empty (no allocation) between frames.
    unread: BytesMut,
    /// A decoded message waiting for room in the Session's channel.
    held: Option<ClientMessage>,
    /// Pongs owed to the client, oldest first, sent before the next Outbox batch.
    pongs: VecDeque<Bytes>,
    writing: Option<Outgoing>,
    read_end: Option<ReadEnd>,
    /// Runs once the close frame is on its way: a peer that does not read
    /// cannot hold the connection open past it.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    flushed: bool,
    /// `uni_websocket`: pushes go out without their `{"push":…}` wrapper,
    /// and a disconnect push goes before the close frame.
    unidirectional: bool,
    /// permessage-deflate was negotiated: messages from its minimum size
    /// go compressed (the Outbox sends those alone).
    deflate: Option<Deflate>,
}

impl<T: ByteStream> Socket<T> {
    /// `unread` is whatever the client sent after its handshake request.
    pub(crate) fn new(
        io: T,
        unread: BytesMut,
        outbox: Arc<Outbox>,
        inbound: Option<mpsc::Sender<ClientMessage>>,
        message_size_limit: usize,
        max_fragments: usize,
    ) -> Self {
        Self {
            io,
            outbox,
            inbound,
            reader: Reader::new(message_size_limit, max_fragments),
            unread,
            held: None,
            pongs: VecDeque::new(),
            writing: None,
            read_end: None,
            linger: None,
            flushed: true,
            unidirectional: false,
            deflate: None,
        }
    }

    /// A connection that negotiated permessage-deflate: compressed client
    /// messages are inflated, and what it sends is compressed with
    /// `deflate` (its Outbox must be `Outbox::compressing` with the same
    /// minimum size).
    pub(crate) fn compressing(mut self, deflate: Deflate) -> Self {
        self.reader.accept_compressed();
        self.deflate = Some(deflate);
        self
    }

    /// A `uni_websocket` connection (the `unidirectional` field).
    pub(crate) fn unidirectional(mut self) -> Self {
        self.unidirectional = true;
        self
    }

    /// Writes until the Outbox is empty or the socket is full. Ready(Ok) when
    /// the close frame went out and the stream is shut down.
    fn poll_write_side(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.writing.is_none() {
                if let Some(pong) = self.pongs.pop_front() {
                    self.writing = Some(Outgoing {
                        frame: pong,
                        written: 0,
                        last: false,
                    });
                } else {
                    match self.outbox.poll_next(cx) {
                        Poll::Ready(Next::Write(batch)) => {
                            let batch = if self.unidirectional {
                                format::push_objects(&batch)
                            } else {
                                batch
                            };
                            let frame = match &self.deflate {
                                Some(deflate) if deflate.wants(batch.payload().len()) => {
                                    batch.deflated(deflate)
                                }
                                _ => batch.as_bytes().clone(),
                            };
                            metrics::METRICS.bytes_sent.inc_by(frame.len() as u64);
                            self.writing = Some(Outgoing {
                                frame,
                                written: 0,
                                last: false,
                            });
                        }
                        Poll::Ready(Next::Close(disconnect)) => {
                            let close = wsframe::close_frame(disconnect.code, &disconnect.reason);
                            // A peer that closed first gets no push.
                            let frame = if self.unidirectional && self.read_end.is_none() {
                                let push = format::frame_disconnect(Format::Json, &disconnect);
                                let push = format::push_objects(&push);
                                let mut both = BytesMut::from(&push.as_bytes()[..]);
                                both.extend_from_slice(&close);
                                both.freeze()
                            } else {
                                close
                            };
                            self.linger = Some(Box::pin(tokio::time::sleep(CLOSE_LINGER)));
                            self.writing = Some(Outgoing {
                                frame,
                                written: 0,
                                last: true,
                            });
                        }
                        Poll::Pending => {
                            if !self.flushed {
                                ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                                self.flushed = true;
                            }
                            return Poll::Pending;
                        }
                    }
                }
            }
            let Some(out) = self.writing.as_mut() else {
                continue;
            };
            while out.written < out.frame.len() {
                let n = ready!(self.io.poll_send(cx, &out.frame[out.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                out.written += n;
                self.flushed = false;
            }
            let last = out.last;
            self.writing = None;
            if last {
                ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                return Pin::new(&mut self.io).poll_shutdown(cx);
            }
        }
    }

    /// Reads and decodes until the socket has nothing more or the Session's
    /// channel is full (Pending), or reading is over (Ready).
    fn poll_read_side(&mut self, cx: &mut Context<'_>) -> Poll<ReadEnd> {
        loop {
            if let Some(end) = self.read_end {
                return Poll::Ready(end);
            }
            if let Some(message) = self.held.take() {
                // Only the Session route holds messages.
                let Some(inbound) = self.inbound.as_mut() else {
                    continue;
                };
                match inbound.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        if inbound.start_send(message).is_err() {
                            self.read_end = Some(ReadEnd::SessionGone);
                        }
                        continue;
                    }
                    Poll::Ready(Err(_)) => {
                        self.read_end = Some(ReadEnd::SessionGone);
                        continue;
                    }
                    Poll::Pending => {
                        self.held = Some(message);
                        return Poll::Pending;
                    }
                }
            }
            // Whole messages already buffered go first.
            match self.reader.next(&mut self.unread) {
                Ok(Some(message)) => {
                    self.on_message(message);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    self.on_violation(e);
                    continue;
                }
            }
            if self.unread.is_empty() && self.unread.capacity() > 0 {
                // Give the allocation back between frames.
                self.unread = BytesMut::new();
            }
            let io = &mut self.io;
            let unread = &mut self.unread;
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                ready!(Pin::new(io).poll_read(cx, &mut buf))?;
                unread.extend_from_slice(buf.filled());
                Poll::Ready(Ok::<_, io::Error>(buf.filled().len()))
            });
            match ready!(read) {
                Ok(0) | Err(_) => self.read_end = Some(ReadEnd::PeerGone),
                Ok(_) => {}
            }
        }
    }

    fn on_message(&mut self, message: Message) {
        match message {
            Message::Text(text) if self.inbound.is_none() => {
                let _ = self.outbox.push(DataFrame::text(&text));
            }
            Message::Binary(body) if self.inbound.is_none() => {
                let _ = self.outbox.push(DataFrame::binary(&body));
            }
            Message::Text(text) => self.held = Some(ClientMessage::Text(text)),
            Message::Binary(body) => self.held = Some(ClientMessage::Binary(body)),
            Message::Ping(payload) => {
                if self.pongs.len() == MAX_PENDING_PONGS {
                    self.pongs.pop_front();
                }
                self.pongs.push_back(wsframe::pong_frame(&payload));
            }
            Message::Pong => {}
            Message::Close(close) => {
                // Answered with the client's own code (1000 when it gave none).
                let code = close.map_or(1000, |(code, _)| code);
                self.outbox.peer_closed(code);
                self.read_end = Some(ReadEnd::CloseQueued);
            }
        }
    }

    fn on_violation(&mut self, error: WsError) {
        tracing::debug!(error = %error, reason = error.label(), "websocket protocol violation");
        // Nothing the client sent after the violation is read. The echo
        // route first answers the messages read before it.
        if self.inbound.is_none() {
            self.outbox.close(error.disconnect());
        } else {
            self.outbox.close_now(error.disconnect());
        }
        self.unread = BytesMut::new();
        self.held = None;
        self.read_end = Some(ReadEnd::CloseQueued);
    }
}

impl<T: ByteStream> Future for Socket<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            // Writes first: deliveries waiting in the Outbox matter most.
            if this.poll_write_side(cx).is_ready() {
                // The close frame went out, or the socket failed: either way, done.
                return Poll::Ready(());
            }
            let before = this.read_end;
            let read = this.poll_read_side(cx);
            // A pong to send and a writer that is free (not stuck behind a
            // full socket, whose wake-up will send it): go and write it.
            if !this.pongs.is_empty() && this.writing.is_none() {
                continue;
            }
            match read {
                Poll::Ready(ReadEnd::PeerGone) => return Poll::Ready(()),
                // A close was just queued: go and write it.
                Poll::Ready(ReadEnd::CloseQueued) if before.is_none() => continue,
                _ => {}
            }
            // A close asked for while a write is stuck behind a peer that
            // does not read: the close frame cannot even start, so the linger
            // starts now, or a dead peer would hold the connection forever.
            if this.linger.is_none() && this.writing.is_some() && this.outbox.poll_closed(cx) {
                this.linger = Some(Box::pin(tokio::time::sleep(CLOSE_LINGER)));
            }
            if let Some(linger) = this.linger.as_mut() {
                if linger.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            return Poll::Pending;
        }
    }
}
