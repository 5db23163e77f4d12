//! Fossil SCM's delta format (www/delta_format.wiki in the Fossil sources),
//! as the Centrifugo SDKs decode it for `delta: "fossil"` subscriptions.
//!
//! A delta turns a source into a target:
//!
//! ```text
//! <target length> "\n"  { <n> "@" <offset> ","  |  <n> ":" <n literal bytes> }  <checksum> ";"
//! ```
//!
//! Every number is written in Fossil's base-64 digits, most significant
//! first. A copy (`@`) takes `n` bytes of the source from `offset`; an
//! insert (`:`) carries `n` bytes of the target. The checksum is the sum of
//! the target read as big-endian 32-bit words, the last one zero-padded.
//!
//! [`encode`] follows Fossil's published encoder algorithm
//! (www/delta_encoder_algorithm.wiki): the source is cut into 16-byte blocks
//! indexed by a rolling hash; the target is scanned with the same hash, and
//! each candidate match is extended both ways and taken when it is longer
//! than the command that names it. [`decode`] applies a delta and checks
//! every bound, the length and the checksum: bad input is an error, never a
//! panic.

#![forbid(unsafe_code)]

mod checksum;
mod decode;
mod encode;
mod number;

pub use checksum::checksum;
pub use decode::{decode, target_size, DecodeError};
pub use encode::{encode, encode_into};
