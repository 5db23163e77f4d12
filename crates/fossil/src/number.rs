//! Fossil's base-64 numbers: digits `0-9A-Z_a-z~`, most significant first.

const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// The value of one digit, or `None` for a byte that is not one.
pub(crate) fn digit_value(byte: u8) -> Option<u64> {
    let v = match byte {
        b'0'..=b'9' => byte - b'0',
        b'A'..=b'Z' => byte - b'A' + 10,
        b'_' => 36,
        b'a'..=b'z' => byte - b'a' + 37,
        b'~' => 63,
        _ => return None,
    };
    Some(u64::from(v))
}

/// Appends `value` in base 64 (`0` for zero).
pub(crate) fn write(out: &mut Vec<u8>, mut value: u64) {
    let mut buf = [0u8; 11];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[(value & 63) as usize];
        value >>= 6;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// How many digits `write` uses for `value`.
pub(crate) fn digits(value: u64) -> u64 {
    let mut n = 1;
    let mut v = value >> 6;
    while v > 0 {
        n += 1;
        v >>= 6;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_round_trip_and_count() {
        for (i, d) in DIGITS.iter().enumerate() {
            assert_eq!(digit_value(*d), Some(i as u64));
        }
        assert_eq!(digit_value(b'@'), None);
        for value in [0u64, 1, 63, 64, 4095, 4096, 1 << 40, u64::MAX] {
            let mut out = Vec::new();
            write(&mut out, value);
            assert_eq!(out.len() as u64, digits(value), "{value}");
            let back = out
                .iter()
                .fold(0u64, |acc, d| (acc << 6) | digit_value(*d).unwrap());
            assert_eq!(back, value);
        }
        let mut out = Vec::new();
        write(&mut out, 0);
        write(&mut out, 64);
        assert_eq!(out, b"010");
    }
}
