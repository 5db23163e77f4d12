use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// An application payload carried as raw JSON (`data`, `info`, `conn_info`, ...).
///
/// Kept byte-exact as received, except that `\n` bytes are removed: they can
/// only be insignificant whitespace in valid JSON, and `\n` separates commands
/// in a frame, so an embedded one would split the frame.
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

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
            return Ok(Self(RawValue::from_string(stripped)?));
        }
        Ok(Self(raw))
    }

    /// Serializes any value into a payload.
    pub fn from_value<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self(serde_json::value::to_raw_value(value)?))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// JSON `null`, also what an absent-but-required payload looks like.
    pub fn is_null(&self) -> bool {
        self.0.get() == "null"
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
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if raw.get().contains('\n') {
            return RawJson::from_str(raw.get()).map_err(serde::de::Error::custom);
        }
        Ok(Self(raw))
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
    fn rejects_invalid_json() {
        assert!(RawJson::from_str("{").is_err());
    }
}
