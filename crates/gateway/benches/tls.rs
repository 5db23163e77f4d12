//! Cost of one full TLS 1.3 handshake on the server side, with herald's own
//! server configuration and an ECDSA P-256 certificate, in memory (no
//! sockets): what a `wss://` connect costs a core before any WebSocket work.
//!
//! `cargo bench -p herald-gateway --bench tls`. The rate it predicts for a
//! node is `cores / server time per handshake`; docs/benchmarks.md compares
//! it with the `connect` row of herald-bench over `wss://`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rustls::crypto::aws_lc_rs::kx_group;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConnection};

struct Pki {
    server: Arc<rustls::ServerConfig>,
    client: Arc<ClientConfig>,
}

fn pki(kx: &'static dyn rustls::crypto::SupportedKxGroup) -> Pki {
    let dir = std::env::temp_dir().join(format!("herald-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    let server = herald_gateway::bench::tls_server_config(
        cert_path.to_str().expect("utf-8 path"),
        key_path.to_str().expect("utf-8 path"),
    )
    .expect("server config");
    let _ = std::fs::remove_dir_all(&dir);

    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(cert.pem().as_bytes()) {
        roots.add(der.expect("PEM")).expect("root");
    }
    let provider = rustls::crypto::CryptoProvider {
        kx_groups: vec![kx],
        ..herald_gateway::bench::tls_provider()
    };
    let client = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Pki {
        server,
        client: Arc::new(client),
    }
}

/// Everything `side` wants to send.
fn drain(side: &mut Connection) -> Vec<u8> {
    let mut buf = Vec::new();
    while side.wants_write() {
        side.write_tls(&mut buf).expect("write_tls");
    }
    buf
}

/// Feeds `bytes` to `side`.
fn feed(side: &mut Connection, bytes: &[u8]) {
    let mut slice = bytes;
    while !slice.is_empty() {
        side.read_tls(&mut slice).expect("read_tls");
        side.process_new_packets().expect("process_new_packets");
    }
}

/// One full handshake (tickets included); returns the time the server side
/// spent in it.
fn handshake(pki: &Pki) -> Duration {
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut client =
        Connection::from(ClientConnection::new(pki.client.clone(), name).expect("client"));
    let mut server_time = Duration::ZERO;
    let started = Instant::now();
    let mut server = Connection::from(ServerConnection::new(pki.server.clone()).expect("server"));
    server_time += started.elapsed();
    loop {
        let to_server = drain(&mut client);
        let started = Instant::now();
        if !to_server.is_empty() {
            feed(&mut server, &to_server);
        }
        let to_client = drain(&mut server);
        server_time += started.elapsed();
        if !to_client.is_empty() {
            feed(&mut client, &to_client);
        }
        if to_server.is_empty() && to_client.is_empty() {
            assert!(
                !client.is_handshaking() && !server.is_handshaking(),
                "handshake stalled"
            );
            return server_time;
        }
    }
}

fn tls_handshake(c: &mut Criterion) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut group = c.benchmark_group("tls13_handshake_p256_server_side");
    for (name, kx) in [
        ("x25519mlkem768", kx_group::X25519MLKEM768),
        ("x25519", kx_group::X25519),
    ] {
        let pki = pki(kx);
        // Only the server's share of each handshake is timed: that is what
        // a node's cores pay per `wss://` connect.
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| handshake(&pki)).sum())
        });
    }
    group.finish();
}

criterion_group!(benches, tls_handshake);
criterion_main!(benches);
