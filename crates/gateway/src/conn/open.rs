//! Opening a connection: its Outbox, mailbox and Session actor, for every
//! transport. What differs between transports (the socket task, a streamed
//! response, a gRPC stream) only reads the Outbox and feeds the inbound
//! channel returned here.

use std::sync::Arc;

use actix::{Actor, AsyncContext};
use futures_channel::mpsc;

use super::session::{Opening, Session};
use crate::format::ClientMessage;
use crate::node::{Mailbox, Node};
use crate::outbox::Outbox;

/// Messages read ahead of the Session before reading pauses.
const INBOUND_QUEUE: usize = 8;

/// A connection just opened.
pub(crate) struct Opened {
    pub(crate) outbox: Arc<Outbox>,
    /// Client messages for the Session, in order. Dropping it ends the
    /// Session: whoever reads the client holds it as long as the client is
    /// there.
    pub(crate) inbound: mpsc::Sender<ClientMessage>,
}

/// Starts the Session of a new connection on this thread's arbiter.
pub(crate) fn open(node: Arc<Node>, opening: Opening) -> Opened {
    let (inbound, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let mut outbox = Outbox::new(node.client.queue_max_size);
    if let Some(min_size) = opening.compress_from {
        outbox = outbox.compressing(min_size);
    }
    let outbox = Arc::new(outbox);
    let session_outbox = outbox.clone();
    let (mailbox, events) = Mailbox::new(outbox.clone());
    Session::create(move |ctx| {
        ctx.add_stream(inbound_rx);
        ctx.add_stream(events);
        Session::new(node, session_outbox, mailbox, opening, ctx)
    });
    Opened { outbox, inbound }
}
