//! The JWT header pre-parser (`alg`, `kid`, `typ`, forbidden headers) and
//! full verification against a fixed HMAC configuration: the input as a
//! whole token, and as header JSON (then, after a NUL byte, payload JSON)
//! of a token signed with the right key. See
//! `herald_auth::fuzzing::fuzz_token`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = herald_auth::fuzzing::fuzz_token(data);
});
