//! The WebSocket protocol, without I/O: the handshake's checks
//! (`handshake.rs`), permessage-deflate's negotiation (`offer.rs`) and
//! messages (`deflate.rs`), and the frame layer (`frame.rs`, with the
//! header writer both use in `header.rs`).

pub(crate) mod deflate;
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod header;
pub(crate) mod offer;
