//! permessage-deflate negotiation (RFC 7692 §5, §7.1), without I/O: the
//! client's `Sec-WebSocket-Extensions` offers in, the one herald accepts
//! (if any) out.
//!
//! herald takes the first offer it can honour, in the client's order, and
//! always answers with `server_no_context_takeover` and
//! `client_no_context_takeover` (§7.1.1.1 and §7.1.1.2 let a server add
//! both): every message in either direction is a deflate stream of its own,
//! which is what lets one compressed publication go to every subscriber.
//! An offer herald cannot honour or that breaks the RFC's rules (an unknown
//! or repeated parameter, a bad value, `server_max_window_bits=8`, which
//! zlib cannot compress with) is declined, never refused: the upgrade goes
//! on without compression, as §5.1 has it.

use actix_http::header::{self, HeaderMap};

use super::deflate::DEFAULT_WINDOW_BITS;

const EXTENSION: &str = "permessage-deflate";

/// The offer herald accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The window herald compresses with: the client's
    /// `server_max_window_bits`, else 15.
    pub(crate) window_bits: u8,
    /// The client sent `server_max_window_bits`: the answer repeats it.
    window_asked: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub(crate) fn response(&self) -> String {
        let mut out =
            format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if self.window_asked {
            out.push_str(&format!("; server_max_window_bits={}", self.window_bits));
        }
        out
    }
}

/// The first permessage-deflate offer of the request herald can honour.
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Agreed> {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        // A value that is not visible ASCII offers nothing herald can read.
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_top_level_commas)
        .filter_map(parse_extension)
        .filter(|(name, _)| name.eq_ignore_ascii_case(EXTENSION))
        .find_map(|(_, params)| accept(&params))
}

/// The answer to one permessage-deflate offer: None declines it.
fn accept(params: &Params) -> Option<Agreed> {
    let mut seen: Vec<&str> = Vec::new();
    let mut window: Option<u8> = None;
    for (name, value) in params {
        let name = name.as_str();
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return None;
        }
        seen.push(name);
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => {
                if value.is_some() {
                    return None;
                }
            }
            "server_max_window_bits" => {
                let bits = window_bits(value.as_deref()?)?;
                window = Some(bits);
            }
            "client_max_window_bits" => {
                // No value, or a valid one; herald inflates any window, so
                // the answer says nothing about it (§7.1.2.2).
                if let Some(v) = value.as_deref() {
                    window_bits(v)?;
                }
            }
            _ => return None,
        }
    }
    match window {
        // zlib's raw deflate has no 8-bit window: decline (§7.1.2.1).
        Some(8) => None,
        Some(bits) => Some(Agreed {
            window_bits: bits,
            window_asked: true,
        }),
        None => Some(Agreed {
            window_bits: DEFAULT_WINDOW_BITS,
            window_asked: false,
        }),
    }
}

/// A window size value: a decimal 8–15 without leading zeros (§7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// The elements of a header's comma-separated list, commas inside quoted
/// strings kept.
fn split_top_level_commas(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// An extension's parameters: name, and value if it has one.
type Params = Vec<(String, Option<String>)>;

/// One extension of the list (RFC 6455 §9.1): its name and parameters,
/// quoted values unquoted. None for an empty element or one that does not
/// follow the grammar.
fn parse_extension(element: &str) -> Option<(String, Params)> {
    let mut parts = split_params(element).into_iter();
    let name = parts.next()?.trim();
    if !is_token(name) {
        return None;
    }
    let mut params = Vec::new();
    for part in parts {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(param_value(v.trim())?)),
            None => (part.trim(), None),
        };
        if !is_token(key) {
            return None;
        }
        params.push((key.to_owned(), value));
    }
    Some((name.to_owned(), params))
}

/// An element split at `;` outside quoted strings.
fn split_params(element: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in element.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&element[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&element[start..]);
    out
}

/// A parameter's value: a token, or a quoted string whose content is one.
fn param_value(raw: &str) -> Option<String> {
    let value = match raw.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?),
                    '"' => return None,
                    c => out.push(c),
                }
            }
            out
        }
        None => raw.to_owned(),
    };
    is_token(&value).then_some(value)
}

/// RFC 7230's token: one or more tchars.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::header::{HeaderName, HeaderValue};

    fn offers(values: &[&str]) -> Option<Agreed> {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                HeaderName::from_static("sec-websocket-extensions"),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        negotiate(&map)
    }

    const PLAIN: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn what_browsers_and_ws_offer() {
        // Chromium and Firefox.
        let agreed = offers(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(agreed.window_bits, 15);
        assert_eq!(agreed.response(), PLAIN);
        // The ws package's default.
        let agreed = offers(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(agreed.response(), PLAIN);
        assert_eq!(offers(&["permessage-deflate"]).unwrap().response(), PLAIN);
        assert_eq!(
            offers(&["Permessage-Deflate; Client_Max_Window_Bits=10"])
                .unwrap()
                .response(),
            PLAIN
        );
    }

    #[test]
    fn the_server_window_is_honoured_and_repeated() {
        let agreed = offers(&["permessage-deflate; server_max_window_bits=10"]).unwrap();
        assert_eq!(agreed.window_bits, 10);
        assert_eq!(
            agreed.response(),
            format!("{PLAIN}; server_max_window_bits=10")
        );
        let quoted = offers(&["permessage-deflate; server_max_window_bits=\"12\""]).unwrap();
        assert_eq!(quoted.window_bits, 12);
        let spaced = offers(&["permessage-deflate ; server_max_window_bits = 9 "]).unwrap();
        assert_eq!(spaced.window_bits, 9);
    }

    #[test]
    fn the_first_acceptable_offer_wins() {
        let agreed = offers(&[
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=11",
            "permessage-deflate",
        ])
        .unwrap();
        assert_eq!(agreed.window_bits, 11);
        // Over two headers, in order.
        let agreed = offers(&[
            "x-webkit-deflate-frame",
            "permessage-deflate; unknown_param, permessage-deflate; server_no_context_takeover",
        ])
        .unwrap();
        assert_eq!(agreed.response(), PLAIN);
    }

    #[test]
    fn offers_that_break_the_rules_are_declined() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=1a",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=\"\"",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; server_max_window_bits=\"1,2\"",
            "permessage-deflate; server_max_window_bits=\"10",
            "permessage deflate",
            "",
            ",,,",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offers(&[bad]), None, "{bad}");
        }
        assert_eq!(offers(&[]), None);
    }

    #[test]
    fn quoted_commas_do_not_split_offers() {
        // The quoted value holds a comma: one (bad) offer, not two.
        assert_eq!(
            offers(&["permessage-deflate; x=\"a, permessage-deflate\""]),
            None
        );
    }
}
