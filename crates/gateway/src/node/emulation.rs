//! The emulated connections of this node by session id: where `/emulation`
//! requests (local, or routed here from another node over the control
//! path) find the connection their commands are for.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use parking_lot::Mutex;

/// Commands queued for an emulated connection before `/emulation` waits.
const QUEUE: usize = 16;

/// Client commands from one `/emulation` request, in the connection's
/// format; `taken` fires once the connection handled them.
#[derive(Debug)]
pub(crate) struct EmulatedCommands {
    pub(crate) data: Bytes,
    pub(crate) taken: oneshot::Sender<()>,
}

#[derive(Default)]
pub(crate) struct EmulationRegistry {
    sessions: Arc<Mutex<HashMap<String, mpsc::Sender<EmulatedCommands>>>>,
}

/// A connection's place in the registry; removed when dropped.
pub(crate) struct Registration {
    session: String,
    sessions: Arc<Mutex<HashMap<String, mpsc::Sender<EmulatedCommands>>>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.session);
    }
}

impl EmulationRegistry {
    /// Registers `session`; its commands arrive on the returned stream.
    pub(crate) fn register(
        &self,
        session: &str,
    ) -> (Registration, mpsc::Receiver<EmulatedCommands>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.sessions.lock().insert(session.to_owned(), tx);
        (
            Registration {
                session: session.to_owned(),
                sessions: self.sessions.clone(),
            },
            rx,
        )
    }

    /// Hands `data` to the connection `session` and waits until it handled
    /// the commands: false when this node has no such connection (or it
    /// ended meanwhile).
    pub(crate) async fn deliver(&self, session: &str, data: Bytes) -> bool {
        let Some(mut sender) = self.sessions.lock().get(session).cloned() else {
            return false;
        };
        let (taken, handled) = oneshot::channel();
        // Waits while the connection's queue is full (bounded).
        if std::future::poll_fn(|cx| sender.poll_ready(cx))
            .await
            .is_err()
            || sender.start_send(EmulatedCommands { data, taken }).is_err()
        {
            return false;
        }
        handled.await.is_ok()
    }

    /// Emulated connections registered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sessions.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn delivers_to_the_registered_session_and_forgets_it_on_drop() {
        let registry = EmulationRegistry::default();
        let (registration, mut commands) = registry.register("s1");
        let handler = tokio::spawn(async move {
            let c = commands.next().await.expect("commands");
            assert_eq!(&c.data[..], b"{\"id\":2}");
            let _ = c.taken.send(());
        });
        assert!(
            registry
                .deliver("s1", Bytes::from_static(b"{\"id\":2}"))
                .await
        );
        handler.await.unwrap();
        assert!(!registry.deliver("other", Bytes::new()).await);
        drop(registration);
        assert_eq!(registry.len(), 0);
        assert!(!registry.deliver("s1", Bytes::new()).await);
    }
}
