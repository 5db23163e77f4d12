//! The config loader (`config::load`: file layer, `HERALD_*` environment
//! layer, validation) on a file of any format and any variables; an
//! accepted config must load back unchanged. The first byte picks the
//! format, NUL bytes separate the file from `NAME=VALUE` variables; see
//! `herald::fuzzing::fuzz_config`.

#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    match herald::fuzzing::fuzz_config(data) {
        // Not UTF-8, or could name a `*_file` key (the loader would read
        // that path): not worth keeping in the corpus.
        None => Corpus::Reject,
        Some(_) => Corpus::Keep,
    }
});
