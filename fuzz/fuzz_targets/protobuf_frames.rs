//! One binary message of a protobuf client (varint-delimited Commands)
//! through the decoder: truncated, overlong or huge length prefixes,
//! lengths beyond the message, nested garbage, unknown fields, payloads
//! that are not JSON. Whatever decodes must encode back to the same
//! commands; see `herald_gateway::fuzzing::decode_protobuf_message`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = herald_gateway::fuzzing::decode_protobuf_message(data);
});
