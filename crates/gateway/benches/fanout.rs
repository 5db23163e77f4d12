//! Hub fan-out: one publication delivered to every local subscriber of its
//! channel (encode once, one shared `Bytes` queued in each Outbox).
//!
//! Only the publish is timed; the outboxes are emptied after each one,
//! outside the measurement, as writers that keep up would.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_gateway::bench::FanoutRig;

const SUBSCRIBERS: [usize; 2] = [1_000, 10_000];

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_fanout");
    // 10,000 deliveries take about a millisecond, and the untimed drain as
    // long again: the default 5 s cannot fit 100 samples.
    group.measurement_time(Duration::from_secs(10));
    for n in SUBSCRIBERS {
        bench_publish(&mut group, "publish_80b", FanoutRig::new(n), n);
    }
    // Half the subscribers speak protobuf: one more encoding per
    // publication, not one per subscriber.
    let n = 10_000;
    let rig = FanoutRig::mixed(n / 2, n / 2);
    bench_publish(&mut group, "publish_80b_half_protobuf", rig, n);
    group.finish();
}

/// Times `rig.publish` to its `n` subscribers, emptying the outboxes
/// between publications outside the measurement.
fn bench_publish(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    rig: FanoutRig,
    n: usize,
) {
    // A fan-out that delivers nothing would measure nothing.
    rig.publish(1);
    assert!(rig.drain() >= n * 80, "every subscriber gets the payload");
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new(name, n), |b| {
        let mut offset = 1;
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                offset += 1;
                let start = Instant::now();
                rig.publish(black_box(offset));
                timed += start.elapsed();
                black_box(rig.drain());
            }
            timed
        });
    });
}

criterion_group!(benches, fanout);
criterion_main!(benches);
