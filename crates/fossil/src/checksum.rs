//! The trailer's checksum.

/// The sum, modulo 2^32, of `data` read as big-endian 32-bit words; a last
/// partial word counts as if padded with zero bytes on the right.
pub fn checksum(data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(4);
    let mut sum = 0u32;
    for word in &mut words {
        sum = sum.wrapping_add(u32::from_be_bytes([word[0], word[1], word[2], word[3]]));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        sum = sum.wrapping_add(u32::from_be_bytes(last));
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn words_are_big_endian_and_the_tail_is_padded_right() {
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum(&[1, 2, 3, 4]), 0x0102_0304);
        assert_eq!(checksum(&[1, 2, 3, 4, 5]), 0x0102_0304 + 0x0500_0000);
        assert_eq!(checksum(&[0xff; 8]), 0xffff_fffe);
    }
}
