//! Client bytes, cut into reads at arbitrary points, through the WebSocket
//! frame reader, every text message through the JSON command decoder and
//! every binary message through the protobuf one.
//! The first byte of an input picks the fragment limit and the cuts; see
//! `herald_gateway::fuzzing::decode_client_bytes`.

#![no_main]

use libfuzzer_sys::fuzz_target;

/// Smaller than the default `client.message_size_limit` (65536) so that
/// fragments adding up past the limit fit in libFuzzer's default 4096-byte
/// inputs; the limit's code is the same whatever its value.
const MAX_MESSAGE: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let _ = herald_gateway::fuzzing::decode_client_bytes(data, MAX_MESSAGE);
});
