//! The decoder: applies a delta to its source, checking every bound.

use std::fmt;

use crate::checksum::checksum;
use crate::number;

/// Why a delta could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A number is missing, too large, or followed by the wrong byte.
    Malformed,
    /// A copy reaches past the end of the source.
    CopyOutOfBounds,
    /// An insert is longer than what is left of the delta.
    TruncatedInsert,
    /// The commands make a target longer or shorter than the header says.
    WrongLength,
    /// The target does not match the trailer's checksum.
    BadChecksum,
    /// The delta ends before its trailer.
    Unterminated,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Malformed => "malformed delta",
            DecodeError::CopyOutOfBounds => "copy beyond the end of the source",
            DecodeError::TruncatedInsert => "insert beyond the end of the delta",
            DecodeError::WrongLength => "target length differs from the header",
            DecodeError::BadChecksum => "target checksum mismatch",
            DecodeError::Unterminated => "delta ends before its trailer",
        })
    }
}

impl std::error::Error for DecodeError {}

/// Reads the numbers and separators of a delta.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    /// A number (possibly of no digits, which is 0, as Fossil reads it).
    fn number(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        while let Some(d) = self
            .bytes
            .get(self.at)
            .and_then(|b| number::digit_value(*b))
        {
            value = value
                .checked_mul(64)
                .map(|v| v | d)
                .ok_or(DecodeError::Malformed)?;
            self.at += 1;
        }
        Ok(value)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = self.bytes.get(self.at).copied();
        self.at += usize::from(b.is_some());
        b
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
}

/// The target length a delta announces.
pub fn target_size(delta: &[u8]) -> Result<u64, DecodeError> {
    let mut reader = Reader {
        bytes: delta,
        at: 0,
    };
    let size = reader.number()?;
    match reader.byte() {
        Some(b'\n') => Ok(size),
        _ => Err(DecodeError::Malformed),
    }
}

/// The target that `delta` makes of `source`.
pub fn decode(source: &[u8], delta: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let limit = target_size(delta)?;
    let mut reader = Reader {
        bytes: delta,
        at: 0,
    };
    reader.number()?;
    reader.byte();
    let limit = usize::try_from(limit).map_err(|_| DecodeError::WrongLength)?;
    // The header is not trusted for the allocation: a target can be at most
    // the delta's inserts plus copies of the source, grown as it is built.
    let mut out = Vec::with_capacity(limit.min(source.len() + delta.len()));
    while reader.at < delta.len() {
        let count = usize::try_from(reader.number()?).map_err(|_| DecodeError::Malformed)?;
        match reader.byte() {
            Some(b'@') => {
                let offset =
                    usize::try_from(reader.number()?).map_err(|_| DecodeError::Malformed)?;
                if reader.byte() != Some(b',') {
                    return Err(DecodeError::Malformed);
                }
                if out.len().checked_add(count).is_none_or(|n| n > limit) {
                    return Err(DecodeError::WrongLength);
                }
                let end = offset
                    .checked_add(count)
                    .ok_or(DecodeError::CopyOutOfBounds)?;
                let copied = source
                    .get(offset..end)
                    .ok_or(DecodeError::CopyOutOfBounds)?;
                out.extend_from_slice(copied);
            }
            Some(b':') => {
                if out.len().checked_add(count).is_none_or(|n| n > limit) {
                    return Err(DecodeError::WrongLength);
                }
                let inserted = reader.take(count).ok_or(DecodeError::TruncatedInsert)?;
                out.extend_from_slice(inserted);
            }
            Some(b';') => {
                if out.len() != limit {
                    return Err(DecodeError::WrongLength);
                }
                if u64::from(checksum(&out)) != count as u64 {
                    return Err(DecodeError::BadChecksum);
                }
                return Ok(out);
            }
            None => return Err(DecodeError::Unterminated),
            Some(_) => return Err(DecodeError::Malformed),
        }
    }
    Err(DecodeError::Unterminated)
}
