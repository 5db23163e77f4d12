//! A connection's bounded inbox for what reaches it from outside its own
//! socket: cluster-wide control commands and gaps.

use std::sync::Arc;

use herald_bus::ControlCommand;

use crate::outbox::Outbox;

/// What reaches a connection from outside its own socket: a cluster-wide
/// command, or a gap on one of its positioned subscriptions.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    /// Shared by every connection the command goes to.
    Control(Arc<ControlCommand>),
    Gap(Box<str>),
}

/// A connection's bounded inbox for [`SessionEvent`]s. A connection that
/// lets [`Mailbox::CAPACITY`] of them pile up (its actor starved, or a flood
/// of control commands) is closed with 3010 (reconnect and recover: it may
/// have missed an unsubscribe or a gap) rather than holding more memory.
///
/// futures' channel, with one sender shared behind a lock: its capacity is
/// then exactly `CAPACITY` + 1, and it allocates per event, so an idle
/// connection's mailbox holds a few hundred bytes, not a block of slots.
#[derive(Clone)]
pub(crate) struct Mailbox {
    sender: Arc<parking_lot::Mutex<futures_channel::mpsc::Sender<SessionEvent>>>,
    outbox: Arc<Outbox>,
}

impl Mailbox {
    /// Events waiting for one connection.
    pub(crate) const CAPACITY: usize = 64;

    /// A mailbox for the connection whose queue to clients is `outbox`, and
    /// the stream its actor reads.
    pub(crate) fn new(
        outbox: Arc<Outbox>,
    ) -> (
        Self,
        impl futures_util::Stream<Item = SessionEvent> + 'static,
    ) {
        let (sender, events) = futures_channel::mpsc::channel(Self::CAPACITY);
        let sender = Arc::new(parking_lot::Mutex::new(sender));
        (Self { sender, outbox }, events)
    }

    /// Hands `event` to the connection; never waits.
    pub(crate) fn deliver(&self, event: SessionEvent) {
        let sent = self.sender.lock().try_send(event);
        match sent {
            Ok(()) => {}
            Err(e) if e.is_full() => {
                crate::metrics::METRICS.mailbox_overflows.inc();
                self.outbox
                    .close(herald_protocol::Disconnect::INSUFFICIENT_STATE);
            }
            // The connection is gone.
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use herald_protocol::Disconnect;

    use super::*;
    use crate::outbox::Next;

    /// A connection whose actor stopped reading its mailbox: once
    /// `Mailbox::CAPACITY` events wait, the next one closes the connection
    /// with 3010 and is counted, instead of queueing without bound.
    #[tokio::test]
    async fn a_flooded_mailbox_closes_its_connection_with_3010() {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let (mailbox, events) = Mailbox::new(outbox.clone());
        let before = crate::metrics::METRICS.mailbox_overflows.get();
        let command = || {
            SessionEvent::Control(Arc::new(ControlCommand::RevokeToken {
                token_id: "t".into(),
            }))
        };
        for _ in 0..=Mailbox::CAPACITY {
            mailbox.deliver(command());
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            matches!(outbox.poll_next(&mut cx), Poll::Pending),
            "still open at capacity"
        );
        // 10,000 more: one close, nothing queued past the capacity.
        for _ in 0..10_000 {
            mailbox.deliver(command());
        }
        match outbox.poll_next(&mut cx) {
            Poll::Ready(Next::Close(d)) => assert_eq!(d, Disconnect::INSUFFICIENT_STATE),
            _ => panic!("the flooded connection was not closed"),
        }
        assert!(crate::metrics::METRICS.mailbox_overflows.get() > before);
        // What the actor would read: exactly the capacity.
        use futures_util::StreamExt as _;
        drop(mailbox);
        let waiting = events.count().await;
        // The capacity, and the one slot the channel keeps for its sender.
        assert_eq!(waiting, Mailbox::CAPACITY + 1);
    }
}
