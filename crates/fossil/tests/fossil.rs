//! Known vectors (deltas made by Centrifugo, from centrifuge-python's tests)
//! and the encode → decode round trip on random inputs.

use herald_fossil::{checksum, decode, encode, target_size, DecodeError};
use proptest::prelude::*;

struct Vector {
    source: Vec<u8>,
    delta: Vec<u8>,
    target: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("vectors.json");
    let list: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
    list.iter()
        .map(|v| {
            let field = |name: &str| v[name].as_str().unwrap().as_bytes().to_vec();
            Vector {
                source: field("source"),
                delta: field("delta"),
                target: field("target"),
            }
        })
        .collect()
}

#[test]
fn centrifugo_deltas_decode_to_their_targets() {
    for (i, v) in vectors().iter().enumerate() {
        assert_eq!(
            decode(&v.source, &v.delta).as_deref(),
            Ok(&v.target[..]),
            "vector {i}"
        );
        assert_eq!(target_size(&v.delta), Ok(v.target.len() as u64));
    }
}

#[test]
fn the_encoder_makes_the_same_deltas_as_centrifugo() {
    for (i, v) in vectors().iter().enumerate() {
        let ours = encode(&v.source, &v.target);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&v.delta),
            "vector {i}"
        );
    }
}

#[test]
fn damaged_deltas_are_errors() {
    let v = &vectors()[0];
    let truncated = &v.delta[..v.delta.len() - 1];
    assert_eq!(decode(&v.source, truncated), Err(DecodeError::Unterminated));
    let mut bad_sum = v.delta.clone();
    let n = bad_sum.len();
    bad_sum[n - 2] = if bad_sum[n - 2] == b'1' { b'2' } else { b'1' };
    assert_eq!(decode(&v.source, &bad_sum), Err(DecodeError::BadChecksum));
    assert_eq!(
        decode(&v.source[..10], &v.delta),
        Err(DecodeError::CopyOutOfBounds)
    );
    assert_eq!(decode(b"", b"3\n9:abc0;"), Err(DecodeError::WrongLength));
    assert_eq!(decode(b"", b"3\n3:ab"), Err(DecodeError::TruncatedInsert));
    assert_eq!(decode(b"", b"3\n3?abc"), Err(DecodeError::Malformed));
    assert_eq!(decode(b"", b"~~~~~~~~~~~~\n"), Err(DecodeError::Malformed));
    assert_eq!(decode(b"", b""), Err(DecodeError::Malformed));
    assert_eq!(
        decode(b"abc", b"2\n2@~~~~~~~~~~~,0;"),
        Err(DecodeError::Malformed)
    );
    assert_eq!(
        decode(b"abc", b"2\n2@2,0;"),
        Err(DecodeError::CopyOutOfBounds)
    );
}

#[test]
fn edge_cases_round_trip() {
    let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let cases: [(&[u8], &[u8]); 7] = [
        (b"", b""),
        (b"", b"abc"),
        (b"abc", b""),
        (&big, &big),
        (&big, b"totally different"),
        (
            b"0123456789abcdefghijklmnopqrstuvwxyz",
            b"0123456789abcdefghijklmnopqrstuvwxyz!",
        ),
        (&big[..5000], &big),
    ];
    for (source, target) in cases {
        let delta = encode(source, target);
        assert_eq!(decode(source, &delta).as_deref(), Ok(target));
    }
    // An unchanged 10 KB document costs a handful of bytes.
    assert!(
        encode(&big, &big).len() < 20,
        "{}",
        encode(&big, &big).len()
    );
    assert_eq!(checksum(b"abcd"), 0x6162_6364);
}

/// A target made from the source by a few edits, so that copies happen.
fn edited() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (
        proptest::collection::vec(any::<u8>(), 0..4000),
        proptest::collection::vec(
            (
                any::<usize>(),
                0usize..64,
                proptest::collection::vec(any::<u8>(), 0..32),
            ),
            0..8,
        ),
    )
        .prop_map(|(source, edits)| {
            let mut target = source.clone();
            for (at, remove, insert) in edits {
                let at = if target.is_empty() {
                    0
                } else {
                    at % target.len()
                };
                let end = (at + remove).min(target.len());
                target.splice(at..end, insert);
            }
            (source, target)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_pairs_round_trip(source in proptest::collection::vec(any::<u8>(), 0..600),
                               target in proptest::collection::vec(any::<u8>(), 0..600)) {
        let delta = encode(&source, &target);
        prop_assert_eq!(decode(&source, &delta), Ok(target));
    }

    #[test]
    fn edited_documents_round_trip((source, target) in edited()) {
        let delta = encode(&source, &target);
        prop_assert_eq!(decode(&source, &delta), Ok(target));
    }

    #[test]
    fn any_bytes_decode_without_panicking(source in proptest::collection::vec(any::<u8>(), 0..64),
                                          delta in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode(&source, &delta);
    }
}
