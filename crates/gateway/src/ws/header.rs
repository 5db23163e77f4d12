//! The header of a server frame (RFC 6455 §5.2): unmasked, with the
//! shortest length encoding. Its own module so that the frame layer
//! (`frame.rs`) and permessage-deflate (`deflate.rs`) both write headers
//! without depending on each other.

/// Longest server frame header: 2 bytes + 8 bytes of length (no mask).
pub(crate) const MAX_HEADER: usize = 10;

/// Writes the header of an unmasked, final server frame carrying `len`
/// bytes into `out`; returns how many bytes of `out` it used.
pub(crate) fn server_header(opcode: u8, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    header_with(0x80 | opcode, len, out)
}

/// The same with the whole first byte given (FIN, RSV bits, opcode).
pub(crate) fn header_with(first: u8, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = first;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}
