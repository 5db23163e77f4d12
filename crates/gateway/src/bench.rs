//! A fixed Hub for the criterion benchmarks in `benches/`, which can only
//! reach public items. Not an API: hidden from the docs and free to change.

use std::sync::Arc;

use herald_protocol::{Format, Publication, RawJson};

use crate::node::hub::{GapListener, Hub, Subscriber};
use crate::outbox::Outbox;

/// The channel every subscriber of a [`FanoutRig`] is on.
const CHANNEL: &str = "bench:fanout";

/// A Hub with `n` live subscribers of one channel, each with its own Outbox,
/// as after `n` sessions subscribed and got their subscribe reply.
pub struct FanoutRig {
    hub: Hub,
    outboxes: Vec<Arc<Outbox>>,
    data: RawJson,
}

impl FanoutRig {
    /// Builds the Hub with `subscribers` JSON sessions. Outboxes hold 64
    /// MiB, so nothing is dropped as slow between two [`FanoutRig::drain`] calls.
    pub fn new(subscribers: usize) -> Self {
        Self::mixed(subscribers, 0)
    }

    /// Builds the Hub with `json` JSON sessions and `protobuf` protobuf ones,
    /// interleaved as they would join.
    pub fn mixed(json: usize, protobuf: usize) -> Self {
        let subscribers = json + protobuf;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // Sharded as `serve` does it.
        let hub = Hub::new(cores * 8);
        let gaps: Arc<dyn GapListener> = Arc::new(NoGaps);
        let outboxes: Vec<_> = (0..subscribers)
            .map(|_| Arc::new(Outbox::new(64 << 20)))
            .collect();
        for (session, outbox) in (1..).zip(&outboxes) {
            // `protobuf` of them spread evenly over the sessions.
            let k = session as usize;
            let format = if k * protobuf / subscribers > (k - 1) * protobuf / subscribers {
                Format::Protobuf
            } else {
                Format::Json
            };
            let subscriber = Arc::new(Subscriber::new(
                session,
                CHANNEL.to_owned(),
                outbox.clone(),
                format,
                false,
                gaps.clone(),
            ));
            hub.add(subscriber.clone());
            subscriber.go_live(None);
        }
        Self {
            hub,
            outboxes,
            data: payload(),
        }
    }

    /// Fans one publication with an 80-byte JSON payload out to every
    /// subscriber: encode once, queue the shared bytes in each Outbox.
    pub fn publish(&self, offset: u64) {
        let publication = Publication {
            data: self.data.clone(),
            info: None,
            offset,
            tags: Default::default(),
            delta: false,
        };
        self.hub.on_publication(CHANNEL, publication, "");
    }

    /// Empties every Outbox, as writers that keep up would; returns the bytes taken.
    pub fn drain(&self) -> usize {
        self.outboxes.iter().map(|o| o.take_all()).sum()
    }
}

/// Live, unpositioned subscriptions never report a gap.
struct NoGaps;

impl GapListener for NoGaps {
    fn on_gap(&self, _channel: &str) {}
}

/// An 80-byte JSON object, the size of a short chat message.
fn payload() -> RawJson {
    let text = "x".repeat(61);
    let json = format!("{{\"text\":\"{text}\",\"seq\":1}}");
    debug_assert_eq!(json.len(), 80);
    // Invariant: the literal above is valid JSON.
    RawJson::from_str(&json).expect("valid JSON literal")
}

/// herald's TLS server configuration for a certificate/key pair in PEM
/// files, as `serve` builds it (TLS 1.3, X25519MLKEM768 first, tickets).
pub fn tls_server_config(
    cert_pem_file: &str,
    key_pem_file: &str,
) -> Result<Arc<rustls::ServerConfig>, crate::error::GatewayError> {
    let config = crate::TlsConfig {
        enabled: true,
        cert_pem_file: cert_pem_file.to_owned(),
        key_pem_file: key_pem_file.to_owned(),
        ..crate::TlsConfig::default()
    };
    let (server, _cert) = crate::tls::server_config(&config)?;
    Ok(Arc::new(server))
}

/// The crypto provider herald's TLS runs on (for a benchmark's client side).
pub fn tls_provider() -> rustls::crypto::CryptoProvider {
    crate::tls::provider()
}
