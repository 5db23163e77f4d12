//! A way to drop a connection from outside its I/O task: the public
//! listener's streams check it on every read, write and flush. For a
//! streamed HTTP response (SSE, HTTP-streaming) whose reader stopped: once
//! its Outbox is closed and the close did not go out within the linger,
//! nothing of the HTTP layer would ever give the socket up, since actix-http
//! only polls a body while it can write.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

#[derive(Default)]
struct Abort {
    aborted: AtomicBool,
    /// The connection's I/O task, while it waits on the socket.
    waker: AtomicWaker,
}

/// One connection's abort switch, shared by its stream and whoever may pull it.
#[derive(Clone, Default)]
pub(crate) struct AbortHandle(Arc<Abort>);

impl AbortHandle {
    /// Makes the connection's next (or pending) read, write and flush fail.
    pub(crate) fn abort(&self) {
        self.0.aborted.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    fn aborted(&self) -> bool {
        self.0.aborted.load(Ordering::Acquire)
    }

    /// `poll`, unless the connection was aborted: then an error. A pending
    /// poll leaves the task to be woken by [`AbortHandle::abort`] too.
    pub(crate) fn guard<T>(
        &self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.aborted() {
            return Poll::Ready(Err(aborted()));
        }
        if poll.is_pending() {
            self.0.waker.register(cx.waker());
            // An abort between the check and the registration woke nobody.
            if self.aborted() {
                return Poll::Ready(Err(aborted()));
            }
        }
        poll
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the connection's reader stopped reading",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_fails_the_next_poll_and_wakes_a_waiting_one() {
        let handle = AbortHandle::default();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(handle
            .guard(&mut cx, Poll::<io::Result<()>>::Pending)
            .is_pending());
        assert!(matches!(
            handle.guard(&mut cx, Poll::Ready(Ok(3))),
            Poll::Ready(Ok(3))
        ));
        handle.abort();
        assert!(matches!(
            handle.guard(&mut cx, Poll::Ready(Ok(3))),
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::ConnectionAborted
        ));
    }
}
