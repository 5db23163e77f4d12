use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// An application payload carried as raw JSON (`data`, `info`, `conn_info`, ...).
///
/// Kept byte-exact as received, except that `\n` bytes are removed: they can
/// only be insignificant whitespace in valid JSON, and `\n` separates commands
/// in a frame, so an embedded one would split the frame.
///
/// The data of a binary channel (`publication_data_format = "binary"`) is
/// carried as a JSON string of its bytes in standard base64, so the engine,
/// history and the bus store it as any other payload. The `binary` mark says
/// so to the protobuf encoder, which sends the bytes themselves; it is set
/// where the channel's namespace is known ([`RawJson::binary`],
/// [`RawJson::mark_binary`]) and is never stored: a payload read back from
/// the engine is marked again before it goes to a client.
#[derive(Clone)]
pub struct RawJson {
    raw: Box<RawValue>,
    binary: bool,
}

impl RawJson {
    /// Parses and validates `text` as one JSON value.
    // Not `FromStr`: this strips newlines and callers want the serde error.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str) -> Result<Self, serde_json::Error> {
        // Validate before stripping: removing a `\n` from invalid text can
        // join two tokens into valid JSON (`[1\n2]` -> `[12]`).
        let raw = RawValue::from_string(text.to_owned())?;
        if raw.get().contains('\n') {
            let stripped: String = raw.get().chars().filter(|c| *c != '\n').collect();
            return Ok(Self::json(RawValue::from_string(stripped)?));
        }
        Ok(Self::json(raw))
    }

    fn json(raw: Box<RawValue>) -> Self {
        Self { raw, binary: false }
    }

    /// Serializes any value into a payload.
    pub fn from_value<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::json(serde_json::value::to_raw_value(value)?))
    }

    /// The data of a binary channel: `bytes` as a JSON string of standard
    /// base64, marked binary.
    pub fn binary(bytes: &[u8]) -> Self {
        let text = format!(
            "\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        // Base64 text in quotes is a JSON string: nothing to escape.
        let raw = RawValue::from_string(text).unwrap_or_else(|_| Self::null_raw());
        Self { raw, binary: true }
    }

    /// Marks a payload of a binary channel read back from the engine (a
    /// JSON string of base64), so the protobuf encoder sends its bytes.
    pub fn mark_binary(&mut self) {
        self.binary = true;
    }

    /// Whether this is the data of a binary channel.
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// The bytes of a binary channel's data; None when the payload is not
    /// marked binary or is not a JSON string of base64.
    pub fn binary_bytes(&self) -> Option<Vec<u8>> {
        if !self.binary {
            return None;
        }
        let text = self.get().strip_prefix('"')?.strip_suffix('"')?;
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    }

    fn null_raw() -> Box<RawValue> {
        // Invariant: "null" is valid JSON.
        RawValue::from_string("null".to_owned()).expect("null is JSON")
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.raw.get()
    }

    /// JSON `null`, also what an absent-but-required payload looks like.
    pub fn is_null(&self) -> bool {
        self.raw.get() == "null"
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if raw.get().contains('\n') {
            return RawJson::from_str(raw.get()).map_err(serde::de::Error::custom);
        }
        Ok(Self::json(raw))
    }
}

/// `deserialize_with` for `Option<RawJson>` fields: a present JSON `null` is
/// the payload `null`, not an absent one. Plain `Option` would read it as
/// `None`, so `Some(null)`, which encodes as `"data":null`, would not decode
/// back to itself. An absent field still comes from the struct's `default`.
pub(crate) fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RawJson>, D::Error> {
    RawJson::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bytes_exact_but_strips_newlines() {
        let raw = RawJson::from_str("{ \"a\" :\n [1, 2] }").unwrap();
        assert_eq!(raw.get(), "{ \"a\" : [1, 2] }");
        let raw: RawJson = serde_json::from_str("{\"x\":  1}").unwrap();
        assert_eq!(raw.get(), "{\"x\":  1}");
    }

    #[test]
    fn binary_data_is_a_base64_string_marked_binary() {
        let raw = RawJson::binary(&[0, 1, 2, 0xFF]);
        assert_eq!(raw.get(), "\"AAEC/w==\"");
        assert!(raw.is_binary());
        assert_eq!(raw.binary_bytes(), Some(vec![0, 1, 2, 0xFF]));
        // The mark is not stored: read back, the payload is marked again.
        let mut back: RawJson =
            serde_json::from_str(&serde_json::to_string(&raw).unwrap()).unwrap();
        assert!(!back.is_binary());
        assert_eq!(back.binary_bytes(), None);
        back.mark_binary();
        assert_eq!(back.binary_bytes(), Some(vec![0, 1, 2, 0xFF]));
        // Not a base64 string: no bytes, whatever the mark.
        let mut json = RawJson::from_str("{\"a\":1}").unwrap();
        json.mark_binary();
        assert_eq!(json.binary_bytes(), None);
        assert_eq!(RawJson::binary(&[]).binary_bytes(), Some(vec![]));
    }

    #[test]
    fn rejects_invalid_json() {
        assert!(RawJson::from_str("{").is_err());
    }
}
