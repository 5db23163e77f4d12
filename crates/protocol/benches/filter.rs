//! Tags filter evaluation: the per-subscriber CPU cost it adds to the
//! fan-out of one publication (docs/protocol.md, "Tags filter").

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use herald_protocol::{FilterNode, TagsFilter};

fn leaf(key: &str, cmp: &str, val: &str) -> FilterNode {
    FilterNode {
        key: key.into(),
        cmp: cmp.into(),
        val: val.into(),
        ..Default::default()
    }
}

fn logical(op: &str, nodes: Vec<FilterNode>) -> FilterNode {
    FilterNode {
        op: op.into(),
        nodes,
        ..Default::default()
    }
}

fn evaluate(c: &mut Criterion) {
    // Centrifugo's documented example publication.
    let tags: BTreeMap<String, String> = [
        ("ticker", "AAPL"),
        ("source", "NASDAQ"),
        ("price", "150.25"),
        ("category", "tech"),
        ("volume", "1000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let eq = leaf("ticker", "eq", "AAPL");
    // (ticker = AAPL) and (price >= 100) and (source in [NASDAQ, NYSE])
    let three = logical(
        "and",
        vec![
            leaf("ticker", "eq", "AAPL"),
            leaf("price", "gte", "100"),
            FilterNode {
                key: "source".into(),
                cmp: "in".into(),
                vals: vec!["NASDAQ".into(), "NYSE".into()],
                ..Default::default()
            },
        ],
    );
    // The largest filter accepted: 255 numeric leaves under one `or`, none
    // passing, so every one is evaluated.
    let widest = logical(
        "or",
        (0..255)
            .map(|i| leaf("price", "gt", &(1000 + i).to_string()))
            .collect(),
    );
    let mut group = c.benchmark_group("tags_filter");
    for (name, node, want) in [
        ("eq", &eq, true),
        ("and_of_3", &three, true),
        ("or_of_255_numeric", &widest, false),
    ] {
        let filter = TagsFilter::new(node).expect("valid");
        assert_eq!(filter.matches(&tags), want, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| black_box(&filter).matches(black_box(&tags)))
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
