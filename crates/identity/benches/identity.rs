//! The cost of a connect with an opaque token whose introspection answer is
//! cached: SHA-256 of the token and one map lookup under a lock. The answer
//! comes from a one-request HTTP responder on loopback, started here.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_auth::{SubscriptionTokenConfig, TokenConfig, TokenVerifier};
use herald_identity::{Authenticator, IntrospectionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "2YotnFZFEjr1zCsicMWpAA-opaque-access-token-of-typical-length";

fn cached_introspection(c: &mut Criterion) {
    herald_auth::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = runtime.block_on(answer_once());
    let verifier =
        TokenVerifier::new(&TokenConfig::default(), &SubscriptionTokenConfig::default()).unwrap();
    let config = IntrospectionConfig {
        endpoint: url,
        client_id: "herald".into(),
        client_secret: "bench-secret".into(),
        ..Default::default()
    };
    let auth = Authenticator::new(verifier, &config).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let first = runtime.block_on(auth.connection(TOKEN, now)).unwrap();
    assert_eq!(first.claims.user, "svc");

    let mut group = c.benchmark_group("introspection");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cached_lookup", |b| {
        b.iter(|| {
            let principal = auth.connection_now(black_box(TOKEN), black_box(now));
            assert!(matches!(principal, Some(Ok(_))));
            principal
        })
    });
    group.finish();
}

/// Serves one introspection answer (active for an hour) and returns the URL.
async fn answer_once() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/introspect", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 8192];
        let _ = stream.read(&mut request).await;
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let body = format!(r#"{{"active":true,"client_id":"svc","exp":{exp}}}"#);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
    });
    url
}

criterion_group!(benches, cached_introspection);
criterion_main!(benches);
