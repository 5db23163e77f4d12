//! Verified token claims, and the typed reading of a JWT payload.
//!
//! The payload is read field by field from raw JSON so that every claim's
//! JSON type is checked here, not left to a library: a string `exp` must be
//! refused, never read as "absent" (CVE-2026-25537).

use std::collections::BTreeMap;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use herald_protocol::RawJson;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::ChannelOptions;
use crate::error::InvalidReason;

/// Claims of a verified connection token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionClaims {
    /// `sub`; `""` (anonymous) when absent.
    pub user: String,
    /// `exp`; `None` = the token never expires.
    pub exp: Option<u64>,
    /// The raw `expire_at` claim; see [`ConnectionClaims::expires_at`].
    pub expire_at: Option<u64>,
    /// `iat`.
    pub iat: Option<u64>,
    /// `jti`.
    pub jti: Option<String>,
    /// `info` (any JSON), or `b64info` decoded (must be JSON); becomes
    /// `conn_info`.
    pub info: Option<RawJson>,
    /// Server-side subscriptions with namespace defaults.
    pub channels: Vec<String>,
    /// Server-side subscriptions with per-subscription options; take
    /// precedence over `channels`.
    pub subs: BTreeMap<String, SubOptions>,
    /// `admin: true`: the bearer may log in to the web console when
    /// `admin.token_auth` is on. Any other value (or none) is false; it
    /// never changes what a client connection may do.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

impl ConnectionClaims {
    /// When the connection expires (unix seconds): `expire_at` overrides
    /// `exp`, and `expire_at == 0` means never.
    pub fn expires_at(&self) -> Option<u64> {
        expiry(self.exp, self.expire_at)
    }
}

/// Options of one entry of the `subs` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubOptions {
    /// `info`, or `b64info` decoded: the subscription's `chan_info`.
    pub info: Option<RawJson>,
    /// `data`, or `b64data` decoded: sent with the subscribe push.
    pub data: Option<RawJson>,
    /// `override`: per-subscription channel option overrides.
    #[serde(rename = "override")]
    pub override_: ChannelOverride,
}

/// Per-subscription overrides of channel options.
///
/// Wire form: `{"presence": {"value": true}, ...}`; an absent key keeps the
/// namespace's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireOverride", into = "WireOverride")]
pub struct ChannelOverride {
    /// Overrides `presence`.
    pub presence: Option<bool>,
    /// Overrides `join_leave`.
    pub join_leave: Option<bool>,
    /// Overrides `force_push_join_leave`.
    pub force_push_join_leave: Option<bool>,
    /// Overrides `force_recovery`.
    pub force_recovery: Option<bool>,
    /// Overrides `force_positioning`.
    pub force_positioning: Option<bool>,
}

impl ChannelOverride {
    /// `options` with every present override applied.
    pub fn apply(&self, options: &ChannelOptions) -> ChannelOptions {
        let mut out = options.clone();
        let pairs = [
            (self.presence, &mut out.presence),
            (self.join_leave, &mut out.join_leave),
            (self.force_push_join_leave, &mut out.force_push_join_leave),
            (self.force_recovery, &mut out.force_recovery),
            (self.force_positioning, &mut out.force_positioning),
        ];
        for (value, target) in pairs {
            if let Some(value) = value {
                *target = value;
            }
        }
        out
    }

    /// Whether no option is overridden.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Claims of a verified subscription token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubscriptionClaims {
    /// `sub`; must equal the connection's user (`""` for anonymous).
    pub user: String,
    /// `channel`; always non-empty.
    pub channel: String,
    /// `client`; when set must equal the connection's client id.
    pub client: Option<String>,
    /// `exp`; `None` = never expires.
    pub exp: Option<u64>,
    /// The raw `expire_at` claim; see [`SubscriptionClaims::expires_at`].
    pub expire_at: Option<u64>,
    /// `iat`.
    pub iat: Option<u64>,
    /// `info`, or `b64info` decoded: the subscription's `chan_info`.
    pub info: Option<RawJson>,
    /// `data`, or `b64data` decoded: returned in the subscribe result.
    pub data: Option<RawJson>,
    /// `override`.
    #[serde(rename = "override")]
    pub override_: ChannelOverride,
}

impl SubscriptionClaims {
    /// When the subscription expires: `expire_at` overrides `exp`, and
    /// `expire_at == 0` means never.
    pub fn expires_at(&self) -> Option<u64> {
        expiry(self.exp, self.expire_at)
    }
}

/// Every claim we read, still as raw JSON. A JSON `null` reads as absent, as
/// in Centrifugo. A claim given twice is a decoding error.
#[derive(Deserialize)]
pub(crate) struct Payload<'a> {
    #[serde(borrow)]
    sub: Option<&'a RawValue>,
    #[serde(borrow)]
    exp: Option<&'a RawValue>,
    #[serde(borrow)]
    nbf: Option<&'a RawValue>,
    #[serde(borrow)]
    iat: Option<&'a RawValue>,
    #[serde(borrow)]
    iss: Option<&'a RawValue>,
    #[serde(borrow)]
    aud: Option<&'a RawValue>,
    #[serde(borrow)]
    jti: Option<&'a RawValue>,
    #[serde(borrow)]
    expire_at: Option<&'a RawValue>,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
    #[serde(borrow)]
    b64info: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    b64data: Option<&'a RawValue>,
    #[serde(borrow)]
    channels: Option<&'a RawValue>,
    #[serde(borrow)]
    subs: Option<&'a RawValue>,
    #[serde(borrow)]
    channel: Option<&'a RawValue>,
    #[serde(borrow)]
    client: Option<&'a RawValue>,
    #[serde(borrow, rename = "override")]
    override_: Option<&'a RawValue>,
    #[serde(borrow)]
    admin: Option<&'a RawValue>,
}

/// The registered claims every token kind shares, type-checked.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) user: String,
    pub(crate) exp: Option<u64>,
    pub(crate) nbf: Option<u64>,
    pub(crate) iat: Option<u64>,
    pub(crate) expire_at: Option<u64>,
    pub(crate) iss: Option<String>,
    /// `aud` as a list (a single string becomes one entry).
    pub(crate) aud: Vec<String>,
    pub(crate) jti: Option<String>,
}

impl<'a> Payload<'a> {
    /// Reads a decoded payload, which must be one JSON object.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, InvalidReason> {
        object(bytes).ok_or(InvalidReason::Malformed)
    }

    pub(crate) fn registered(&self) -> Result<Registered, InvalidReason> {
        Ok(Registered {
            user: string(self.sub)?.unwrap_or_default(),
            exp: numeric_date(self.exp)?,
            nbf: numeric_date(self.nbf)?,
            iat: numeric_date(self.iat)?,
            expire_at: numeric_date(self.expire_at)?,
            iss: string(self.iss)?,
            aud: audience(self.aud)?,
            jti: string(self.jti)?,
        })
    }

    pub(crate) fn connection(
        &self,
        registered: Registered,
    ) -> Result<ConnectionClaims, InvalidReason> {
        // Centrifugo reads `channel` as a string and refuses it when
        // non-empty; any other value is refused too.
        if let Some(channel) = self.channel {
            if channel.get() != "\"\"" {
                return Err(InvalidReason::ChannelInConnectionToken);
            }
        }
        let channels = match self.channels {
            Some(raw) => serde_json::from_str(raw.get()).map_err(|_| InvalidReason::ClaimType)?,
            None => Vec::new(),
        };
        let mut subs = BTreeMap::new();
        if let Some(raw) = self.subs {
            let entries: BTreeMap<String, &RawValue> =
                object(raw.get().as_bytes()).ok_or(InvalidReason::ClaimType)?;
            for (channel, entry) in entries {
                let entry: RawSubOptions<'_> =
                    object(entry.get().as_bytes()).ok_or(InvalidReason::ClaimType)?;
                subs.insert(channel, entry.options()?);
            }
        }
        Ok(ConnectionClaims {
            user: registered.user,
            exp: registered.exp,
            expire_at: registered.expire_at,
            iat: registered.iat,
            jti: registered.jti,
            info: json_or_base64(self.info, self.b64info)?,
            channels,
            subs,
            admin: self.admin.is_some_and(|raw| raw.get() == "true"),
        })
    }

    pub(crate) fn subscription(
        &self,
        registered: Registered,
    ) -> Result<SubscriptionClaims, InvalidReason> {
        let channel = string(self.channel)?.unwrap_or_default();
        if channel.is_empty() {
            return Err(InvalidReason::MissingChannel);
        }
        Ok(SubscriptionClaims {
            user: registered.user,
            channel,
            client: string(self.client)?.filter(|client| !client.is_empty()),
            exp: registered.exp,
            expire_at: registered.expire_at,
            iat: registered.iat,
            info: json_or_base64(self.info, self.b64info)?,
            data: json_or_base64(self.data, self.b64data)?,
            override_: channel_override(self.override_)?,
        })
    }
}

/// One `subs` entry as raw JSON.
#[derive(Deserialize)]
struct RawSubOptions<'a> {
    #[serde(borrow)]
    info: Option<&'a RawValue>,
    #[serde(borrow)]
    b64info: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    b64data: Option<&'a RawValue>,
    #[serde(borrow, rename = "override")]
    override_: Option<&'a RawValue>,
}

impl RawSubOptions<'_> {
    fn options(&self) -> Result<SubOptions, InvalidReason> {
        Ok(SubOptions {
            info: json_or_base64(self.info, self.b64info)?,
            data: json_or_base64(self.data, self.b64data)?,
            override_: channel_override(self.override_)?,
        })
    }
}

#[derive(Default, Serialize, Deserialize)]
struct WireOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<WireBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    join_leave: Option<WireBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    force_push_join_leave: Option<WireBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    force_recovery: Option<WireBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    force_positioning: Option<WireBool>,
}

/// `{"value": bool}`; a missing `value` is `false`, as Go decodes it.
#[derive(Serialize, Deserialize)]
struct WireBool {
    #[serde(default)]
    value: bool,
}

impl From<WireOverride> for ChannelOverride {
    fn from(wire: WireOverride) -> Self {
        let value = |v: Option<WireBool>| v.map(|v| v.value);
        Self {
            presence: value(wire.presence),
            join_leave: value(wire.join_leave),
            force_push_join_leave: value(wire.force_push_join_leave),
            force_recovery: value(wire.force_recovery),
            force_positioning: value(wire.force_positioning),
        }
    }
}

impl From<ChannelOverride> for WireOverride {
    fn from(o: ChannelOverride) -> Self {
        let wire = |v: Option<bool>| v.map(|value| WireBool { value });
        Self {
            presence: wire(o.presence),
            join_leave: wire(o.join_leave),
            force_push_join_leave: wire(o.force_push_join_leave),
            force_recovery: wire(o.force_recovery),
            force_positioning: wire(o.force_positioning),
        }
    }
}

/// Standard base64, padding optional: Go's `StdEncoding` wants padding, but
/// refusing a token for a missing `=` helps no one.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn expiry(exp: Option<u64>, expire_at: Option<u64>) -> Option<u64> {
    match expire_at {
        Some(0) => None,
        Some(at) => Some(at),
        None => exp,
    }
}

/// Deserializes `bytes` as `T` only if they hold a JSON object: a derived
/// struct would otherwise also accept an array, field by position.
fn object<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

fn string(raw: Option<&RawValue>) -> Result<Option<String>, InvalidReason> {
    raw.map(|raw| serde_json::from_str(raw.get()).map_err(|_| InvalidReason::ClaimType))
        .transpose()
}

/// A JSON number of seconds, non-negative; a fraction is truncated.
fn numeric_date(raw: Option<&RawValue>) -> Result<Option<u64>, InvalidReason> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let number: serde_json::Number =
        serde_json::from_str(raw.get()).map_err(|_| InvalidReason::ClaimType)?;
    if let Some(seconds) = number.as_u64() {
        return Ok(Some(seconds));
    }
    match number.as_f64() {
        // `u64::MAX as f64` rounds up to 2^64, the first value that does not fit.
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 && seconds < u64::MAX as f64 => {
            // Truncation toward zero is the intent: whole seconds.
            Ok(Some(seconds as u64))
        }
        _ => Err(InvalidReason::ClaimType),
    }
}

/// `aud`: one string or an array of strings.
fn audience(raw: Option<&RawValue>) -> Result<Vec<String>, InvalidReason> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Audience {
        One(String),
        Many(Vec<String>),
    }
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    match serde_json::from_str(raw.get()).map_err(|_| InvalidReason::ClaimType)? {
        Audience::One(aud) => Ok(vec![aud]),
        Audience::Many(aud) => Ok(aud),
    }
}

/// `plain` as any JSON, unless `b64` is a non-empty string, which wins (as in
/// Centrifugo) and must decode to JSON.
fn json_or_base64(
    plain: Option<&RawValue>,
    b64: Option<&RawValue>,
) -> Result<Option<RawJson>, InvalidReason> {
    let encoded = string(b64)?.unwrap_or_default();
    if !encoded.is_empty() {
        let bytes = BASE64
            .decode(encoded.as_bytes())
            .map_err(|_| InvalidReason::ClaimType)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| InvalidReason::ClaimType)?;
        return RawJson::from_str(text)
            .map(Some)
            .map_err(|_| InvalidReason::ClaimType);
    }
    plain
        .map(|raw| RawJson::from_str(raw.get()).map_err(|_| InvalidReason::ClaimType))
        .transpose()
}

fn channel_override(raw: Option<&RawValue>) -> Result<ChannelOverride, InvalidReason> {
    match raw {
        Some(raw) => object(raw.get().as_bytes()).ok_or(InvalidReason::ClaimType),
        None => Ok(ChannelOverride::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(json: &str) -> Result<Registered, InvalidReason> {
        Payload::parse(json.as_bytes())?.registered()
    }

    #[test]
    fn payload_must_be_one_object() {
        let table = [
            ("{}", true),
            ("  {\"sub\":\"a\"}", true),
            ("[]", false),
            ("[\"a\"]", false),
            ("\"x\"", false),
            ("", false),
            ("{", false),
            ("{\"sub\":\"a\",\"sub\":\"b\"}", false),
            ("{} {}", false),
        ];
        for (json, ok) in table {
            assert_eq!(Payload::parse(json.as_bytes()).is_ok(), ok, "{json}");
        }
    }

    #[test]
    fn registered_claim_types() {
        // (payload, Ok(exp) or Err)
        let table: [(&str, Result<Option<u64>, InvalidReason>); 14] = [
            ("{}", Ok(None)),
            ("{\"exp\":null}", Ok(None)),
            ("{\"exp\":1700000000}", Ok(Some(1_700_000_000))),
            ("{\"exp\":1700000000.9}", Ok(Some(1_700_000_000))),
            ("{\"exp\":1.7e9}", Ok(Some(1_700_000_000))),
            ("{\"exp\":\"1700000000\"}", Err(InvalidReason::ClaimType)),
            ("{\"exp\":-1}", Err(InvalidReason::ClaimType)),
            ("{\"exp\":1e30}", Err(InvalidReason::ClaimType)),
            ("{\"exp\":true}", Err(InvalidReason::ClaimType)),
            ("{\"nbf\":\"1\"}", Err(InvalidReason::ClaimType)),
            ("{\"iat\":\"1\"}", Err(InvalidReason::ClaimType)),
            ("{\"expire_at\":\"1\"}", Err(InvalidReason::ClaimType)),
            ("{\"sub\":42}", Err(InvalidReason::ClaimType)),
            ("{\"jti\":[1]}", Err(InvalidReason::ClaimType)),
        ];
        for (json, want) in table {
            assert_eq!(registered(json).map(|r| r.exp), want, "{json}");
        }
    }

    #[test]
    fn audience_shapes() {
        let table: [(&str, Result<Vec<&str>, InvalidReason>); 6] = [
            ("{}", Ok(vec![])),
            ("{\"aud\":\"a\"}", Ok(vec!["a"])),
            ("{\"aud\":[\"a\",\"b\"]}", Ok(vec!["a", "b"])),
            ("{\"aud\":[]}", Ok(vec![])),
            ("{\"aud\":1}", Err(InvalidReason::ClaimType)),
            ("{\"aud\":[\"a\",1]}", Err(InvalidReason::ClaimType)),
        ];
        for (json, want) in table {
            let got = registered(json).map(|r| r.aud);
            let want = want.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "{json}");
        }
        let r = registered("{\"iss\":\"me\",\"sub\":\"42\",\"jti\":\"j\"}").unwrap();
        assert_eq!(r.iss.as_deref(), Some("me"));
        assert_eq!(r.user, "42");
        assert_eq!(r.jti.as_deref(), Some("j"));
        assert_eq!(
            registered("{\"iss\":[\"me\"]}").unwrap_err(),
            InvalidReason::ClaimType
        );
    }

    #[test]
    fn info_and_b64info() {
        // {"a":1} in standard base64, with and without padding.
        let padded = "eyJhIjoxfQ==";
        let unpadded = "eyJhIjoxfQ";
        let table: Vec<(String, Result<Option<&str>, InvalidReason>)> = vec![
            ("{}".into(), Ok(None)),
            ("{\"info\":null}".into(), Ok(None)),
            (
                "{\"info\":{\"k\": [1, 2]}}".into(),
                Ok(Some("{\"k\": [1, 2]}")),
            ),
            ("{\"info\":\"text\"}".into(), Ok(Some("\"text\""))),
            ("{\"info\":7}".into(), Ok(Some("7"))),
            (
                format!("{{\"b64info\":\"{padded}\"}}"),
                Ok(Some("{\"a\":1}")),
            ),
            (
                format!("{{\"b64info\":\"{unpadded}\"}}"),
                Ok(Some("{\"a\":1}")),
            ),
            (
                format!("{{\"info\":1,\"b64info\":\"{padded}\"}}"),
                Ok(Some("{\"a\":1}")),
            ),
            ("{\"info\":1,\"b64info\":\"\"}".into(), Ok(Some("1"))),
            // "not json" in base64.
            (
                "{\"b64info\":\"bm90IGpzb24=\"}".into(),
                Err(InvalidReason::ClaimType),
            ),
            (
                "{\"b64info\":\"%%%\"}".into(),
                Err(InvalidReason::ClaimType),
            ),
            ("{\"b64info\":5}".into(), Err(InvalidReason::ClaimType)),
            // 0xff 0xfe: not UTF-8.
            (
                "{\"b64info\":\"//4=\"}".into(),
                Err(InvalidReason::ClaimType),
            ),
        ];
        for (json, want) in table {
            let payload = Payload::parse(json.as_bytes()).unwrap();
            let got = payload
                .registered()
                .and_then(|r| payload.connection(r))
                .map(|c| c.info.map(|i| i.get().to_owned()));
            assert_eq!(got, want.map(|w| w.map(String::from)), "{json}");
        }
    }

    #[test]
    fn connection_specific_claims() {
        type Check = fn(&ConnectionClaims);
        let table: Vec<(&str, Result<Check, InvalidReason>)> = vec![
            ("{\"channel\":\"news\"}", Err(InvalidReason::ChannelInConnectionToken)),
            ("{\"channel\":7}", Err(InvalidReason::ChannelInConnectionToken)),
            ("{\"channel\":\"\"}", Ok(|c| assert!(c.channels.is_empty()))),
            ("{\"channel\":null}", Ok(|c| assert!(c.subs.is_empty()))),
            (
                "{\"channels\":[\"a\",\"b:c\"]}",
                Ok(|c| assert_eq!(c.channels, ["a", "b:c"])),
            ),
            ("{\"channels\":\"a\"}", Err(InvalidReason::ClaimType)),
            ("{\"channels\":[1]}", Err(InvalidReason::ClaimType)),
            ("{\"subs\":[]}", Err(InvalidReason::ClaimType)),
            ("{\"subs\":{\"a\":1}}", Err(InvalidReason::ClaimType)),
            ("{\"subs\":{\"a\":{\"override\":{\"presence\":true}}}}", Err(InvalidReason::ClaimType)),
            ("{\"subs\":{\"a\":{\"override\":[]}}}", Err(InvalidReason::ClaimType)),
            ("{\"subs\":{\"a\":{\"b64data\":\"!\"}}}", Err(InvalidReason::ClaimType)),
            (
                "{\"subs\":{\"a\":{}}}",
                Ok(|c| assert_eq!(c.subs["a"], SubOptions::default())),
            ),
            (
                "{\"subs\":{\"chat:1\":{\"info\":{\"i\":1},\"b64data\":\"WzFd\",\"override\":{\"presence\":{\"value\":true},\"join_leave\":{\"value\":false},\"force_recovery\":{}}}}}",
                Ok(|c| {
                    let sub = &c.subs["chat:1"];
                    assert_eq!(sub.info.as_ref().map(RawJson::get), Some("{\"i\":1}"));
                    assert_eq!(sub.data.as_ref().map(RawJson::get), Some("[1]"));
                    assert_eq!(
                        sub.override_,
                        ChannelOverride {
                            presence: Some(true),
                            join_leave: Some(false),
                            force_recovery: Some(false),
                            ..ChannelOverride::default()
                        }
                    );
                }),
            ),
        ];
        for (json, want) in table {
            let payload = Payload::parse(json.as_bytes()).unwrap();
            let got = payload.registered().and_then(|r| payload.connection(r));
            match (got, want) {
                (Ok(claims), Ok(check)) => check(&claims),
                (Err(got), Err(want)) => assert_eq!(got, want, "{json}"),
                (got, want) => panic!("{json}: got {got:?}, want {:?}", want.map(|_| "Ok")),
            }
        }
    }

    #[test]
    fn subscription_specific_claims() {
        // Ok((channel, client)) or the error.
        type Want = Result<(&'static str, Option<&'static str>), InvalidReason>;
        let table: [(&str, Want); 7] = [
            ("{\"channel\":\"$chat:1\"}", Ok(("$chat:1", None))),
            (
                "{\"channel\":\"c\",\"client\":\"abc\"}",
                Ok(("c", Some("abc"))),
            ),
            ("{\"channel\":\"c\",\"client\":\"\"}", Ok(("c", None))),
            ("{}", Err(InvalidReason::MissingChannel)),
            ("{\"channel\":\"\"}", Err(InvalidReason::MissingChannel)),
            ("{\"channel\":1}", Err(InvalidReason::ClaimType)),
            (
                "{\"channel\":\"c\",\"client\":1}",
                Err(InvalidReason::ClaimType),
            ),
        ];
        for (json, want) in table {
            let payload = Payload::parse(json.as_bytes()).unwrap();
            let got = payload.registered().and_then(|r| payload.subscription(r));
            let got = got
                .as_ref()
                .map(|c| (c.channel.as_str(), c.client.as_deref()));
            assert_eq!(got.map_err(|e| *e), want, "{json}");
        }
    }

    #[test]
    fn expires_at_table() {
        // (exp, expire_at, want)
        let table = [
            (None, None, None),
            (Some(100), None, Some(100)),
            (Some(100), Some(200), Some(200)),
            (Some(100), Some(0), None),
            (None, Some(0), None),
            (None, Some(50), Some(50)),
        ];
        for (exp, expire_at, want) in table {
            let c = ConnectionClaims {
                exp,
                expire_at,
                ..ConnectionClaims::default()
            };
            assert_eq!(c.expires_at(), want, "exp={exp:?} expire_at={expire_at:?}");
            let s = SubscriptionClaims {
                exp,
                expire_at,
                ..SubscriptionClaims::default()
            };
            assert_eq!(s.expires_at(), want, "exp={exp:?} expire_at={expire_at:?}");
        }
    }

    #[test]
    fn override_applies_only_present_values() {
        let base = ChannelOptions {
            presence: true,
            join_leave: true,
            history_size: 10,
            history_ttl: std::time::Duration::from_secs(60),
            ..ChannelOptions::default()
        };
        let table = [
            (ChannelOverride::default(), base.clone()),
            (
                ChannelOverride {
                    presence: Some(false),
                    force_recovery: Some(true),
                    ..ChannelOverride::default()
                },
                ChannelOptions {
                    presence: false,
                    force_recovery: true,
                    ..base.clone()
                },
            ),
            (
                ChannelOverride {
                    join_leave: Some(true),
                    force_push_join_leave: Some(true),
                    force_positioning: Some(true),
                    ..ChannelOverride::default()
                },
                ChannelOptions {
                    force_push_join_leave: true,
                    force_positioning: true,
                    ..base.clone()
                },
            ),
        ];
        for (o, want) in table {
            assert_eq!(o.apply(&base), want, "{o:?}");
        }
        assert!(ChannelOverride::default().is_empty());
        assert!(!ChannelOverride {
            presence: Some(false),
            ..ChannelOverride::default()
        }
        .is_empty());
    }

    #[test]
    fn override_wire_form_round_trips() {
        let o = ChannelOverride {
            presence: Some(true),
            force_positioning: Some(false),
            ..ChannelOverride::default()
        };
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(
            text,
            "{\"presence\":{\"value\":true},\"force_positioning\":{\"value\":false}}"
        );
        let back: ChannelOverride = serde_json::from_str(&text).unwrap();
        assert_eq!(back, o);
    }
}
