//! The WebSocket protocol, without I/O: the handshake's checks
//! (`handshake.rs`) and the frame layer (`frame.rs`).

pub(crate) mod frame;
pub(crate) mod handshake;
