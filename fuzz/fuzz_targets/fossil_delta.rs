//! Fossil deltas (herald-fossil): arbitrary bytes split into a source and a
//! delta must decode to a target or an error, never a panic or an
//! allocation the input does not justify; and any (source, target) pair
//! must survive encode → decode unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len().saturating_sub(1));
    let rest = data.get(1..).unwrap_or_default();
    let (source, other) = rest.split_at(split.min(rest.len()));
    let _ = herald_fossil::decode(source, other);
    let delta = herald_fossil::encode(source, other);
    assert_eq!(herald_fossil::decode(source, &delta).as_deref(), Ok(other));
});
