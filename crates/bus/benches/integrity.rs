//! What sealing a history record costs, and what signing costs per envelope: HMAC-SHA256 over the header, the Redis
//! channel name and the body (sign, at the publisher), and the same plus the
//! replay window (open, at every receiving node).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_bus::integrity::{BusKey, BusKeyring, Integrity};
use herald_bus::seal::{HistoryKey, HistoryKeyring};

const CHANNEL: &[u8] = b"herald.client.{chat:room-42}";
const NOW: u64 = 1_700_000_000_000;

fn ring() -> BusKeyring {
    let key = BusKey {
        id: "k1".into(),
        secret: zeroize::Zeroizing::new(vec![0x5a; 32]),
    };
    BusKeyring::new("k1", vec![key]).unwrap()
}

fn body(size: usize) -> Vec<u8> {
    let mut body = br#"{"data":""#.to_vec();
    body.resize(size.saturating_sub(2).max(body.len()), b'x');
    body.extend_from_slice(br#""}"#);
    body
}

fn envelope(c: &mut Criterion) {
    let sender = Integrity::new(ring(), "node-a");
    let receiver = Integrity::new(ring(), "node-b");
    let mut group = c.benchmark_group("bus_envelope");
    for size in [128usize, 4096] {
        let body = body(size);
        let mut inner = b"p1:17:epoch:".to_vec();
        inner.extend_from_slice(&body);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("sign", size), &body, |b, body| {
            b.iter(|| sender.sign(black_box(CHANNEL), b"p1", black_box(body), NOW))
        });
        // Each iteration opens a fresh envelope (a repeat is a replay).
        group.bench_with_input(
            BenchmarkId::new("sign_and_open", size),
            &inner,
            |b, inner| {
                b.iter(|| {
                    let mut sealed = sender.sign(CHANNEL, b"p1", &body, NOW);
                    sealed.extend_from_slice(inner);
                    assert!(receiver.open(black_box(CHANNEL), &sealed, NOW).is_ok());
                })
            },
        );
    }
    group.finish();
}

/// Sealing a publication for history (XChaCha20-Poly1305, random nonce) and
/// opening it on a history read or a recovery.
fn history_record(c: &mut Criterion) {
    let keys = HistoryKeyring::new(
        "h1",
        vec![HistoryKey {
            id: "h1".into(),
            key: zeroize::Zeroizing::new(vec![0x3c; 32]),
        }],
    )
    .unwrap();
    let mut group = c.benchmark_group("history_record");
    for size in [128usize, 4096] {
        let body = body(size);
        let record = keys.seal("chat:room-42", "AbCdEfGh", 17, &body).unwrap();
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("seal", size), &body, |b, body| {
            b.iter(|| keys.seal(black_box("chat:room-42"), "AbCdEfGh", 17, black_box(body)))
        });
        group.bench_with_input(BenchmarkId::new("open", size), &record, |b, record| {
            b.iter(|| {
                keys.open(black_box("chat:room-42"), "AbCdEfGh", 17, black_box(record))
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, envelope, history_record);
criterion_main!(benches);
