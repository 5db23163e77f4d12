//! Console sessions: a signed, expiring cookie and the CSRF token bound to
//! it. Nothing is stored per session except the ids of sessions logged out
//! before they expired. No I/O and no clock: `now` is passed in (unix
//! seconds).

use std::collections::HashMap;

use aws_lc_rs::{constant_time, hmac, rand};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The cookie's name.
pub(crate) const COOKIE: &str = "herald_admin";

/// Logged-out sessions remembered at most; past it the ones expiring first
/// are forgotten (they are also the least useful to a thief).
const MAX_ENDED: usize = 10_000;

/// A logged-in operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// Who logged in: `admin` for the password, the token's `sub` otherwise.
    #[serde(rename = "u")]
    pub(crate) user: String,
    /// Random id: what the CSRF token and a logout are bound to.
    #[serde(rename = "i")]
    pub(crate) id: String,
    /// Unix seconds.
    #[serde(rename = "e")]
    pub(crate) expires_at: u64,
}

/// Why a cookie does not open a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// None, malformed, or signed with another key.
    Invalid,
    Expired,
    /// Logged out.
    Ended,
}

pub(crate) struct Sessions {
    key: hmac::Key,
    ttl_secs: u64,
    /// Session id -> its expiry, for sessions logged out early.
    ended: Mutex<HashMap<String, u64>>,
}

impl Sessions {
    /// `secret` signs cookies and CSRF tokens; `None`: a random key.
    pub(crate) fn new(secret: Option<&[u8]>, ttl_secs: u64) -> Self {
        let key = match secret {
            Some(secret) => hmac::Key::new(hmac::HMAC_SHA256, secret),
            None => {
                let mut random = [0u8; 32];
                // aws-lc's CSPRNG only fails if the OS has no randomness,
                // which nothing here could survive anyway.
                rand::fill(&mut random).expect("system randomness");
                hmac::Key::new(hmac::HMAC_SHA256, &random)
            }
        };
        Self {
            key,
            ttl_secs: ttl_secs.max(1),
            ended: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// A new session for `user` and its cookie value; it ends after the
    /// session TTL, or at `until` (unix seconds) if that comes first.
    pub(crate) fn issue(&self, user: &str, now: u64, until: Option<u64>) -> (Session, String) {
        let mut id = [0u8; 16];
        rand::fill(&mut id).expect("system randomness");
        let session = Session {
            user: user.to_owned(),
            id: URL_SAFE_NO_PAD.encode(id),
            expires_at: until.map_or(now + self.ttl_secs, |u| u.min(now + self.ttl_secs)),
        };
        let body = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&session).expect("a session always serializes"));
        let tag = hmac::sign(&self.key, &tagged(b"cookie", body.as_bytes()));
        let value = format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        (session, value)
    }

    /// The session a cookie value carries, if its tag, expiry and id hold.
    pub(crate) fn open(&self, value: &str, now: u64) -> Result<Session, Refusal> {
        let (body, tag) = value.split_once('.').ok_or(Refusal::Invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Refusal::Invalid)?;
        hmac::verify(&self.key, &tagged(b"cookie", body.as_bytes()), &tag)
            .map_err(|_| Refusal::Invalid)?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| Refusal::Invalid)?;
        let session: Session = serde_json::from_slice(&json).map_err(|_| Refusal::Invalid)?;
        if session.expires_at <= now {
            return Err(Refusal::Expired);
        }
        if self.ended.lock().contains_key(&session.id) {
            return Err(Refusal::Ended);
        }
        Ok(session)
    }

    /// The CSRF token of a session: state-changing requests send it in
    /// `X-CSRF-Token`; a page on another origin cannot read it.
    pub(crate) fn csrf(&self, session: &Session) -> String {
        let tag = hmac::sign(&self.key, &tagged(b"csrf", session.id.as_bytes()));
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `offered` is the session's CSRF token.
    pub(crate) fn csrf_matches(&self, session: &Session, offered: &str) -> bool {
        let want = self.csrf(session);
        want.len() == offered.len()
            && constant_time::verify_slices_are_equal(want.as_bytes(), offered.as_bytes()).is_ok()
    }

    /// Logs a session out: its cookie no longer opens it.
    pub(crate) fn end(&self, session: &Session, now: u64) {
        let mut ended = self.ended.lock();
        ended.retain(|_, expires| *expires > now);
        if ended.len() >= MAX_ENDED {
            if let Some(first) = ended
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(id, _)| id.clone())
            {
                ended.remove(&first);
            }
        }
        ended.insert(session.id.clone(), session.expires_at);
    }
}

/// What a tag covers: its purpose, a NUL, the text. A cookie's tag can
/// never pass as a CSRF token or the other way round.
fn tagged(purpose: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(purpose.len() + 1 + text.len());
    out.extend_from_slice(purpose);
    out.push(0);
    out.extend_from_slice(text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_cookie_opens_its_session_until_it_expires() {
        let sessions = Sessions::new(Some(b"0123456789abcdef0123456789abcdef"), 60);
        let (session, cookie) = sessions.issue("admin", NOW, None);
        assert_eq!(sessions.open(&cookie, NOW + 59), Ok(session.clone()));
        assert_eq!(sessions.open(&cookie, NOW + 60), Err(Refusal::Expired));
        // A token's expiry ends the session earlier.
        let (short, _) = sessions.issue("ops", NOW, Some(NOW + 10));
        assert_eq!(short.expires_at, NOW + 10);
        // Another key (another node without admin.secret, or a restart).
        let other = Sessions::new(None, 60);
        assert_eq!(other.open(&cookie, NOW), Err(Refusal::Invalid));
    }

    #[test]
    fn a_changed_cookie_is_refused() {
        let sessions = Sessions::new(None, 60);
        let (_, cookie) = sessions.issue("admin", NOW, None);
        let (body, tag) = cookie.split_once('.').unwrap();
        // A longer expiry, re-encoded, with the old tag.
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Session {
                user: "admin".into(),
                id: "x".into(),
                expires_at: NOW + 10_000,
            })
            .unwrap(),
        );
        for bad in [
            format!("{forged}.{tag}"),
            format!("{body}.{}", &tag[1..]),
            body.to_owned(),
            String::new(),
            "..".to_owned(),
            format!("{body}x.{tag}"),
        ] {
            assert_eq!(sessions.open(&bad, NOW), Err(Refusal::Invalid), "{bad}");
        }
    }

    #[test]
    fn the_csrf_token_belongs_to_one_session_and_a_logout_ends_it() {
        let sessions = Sessions::new(None, 60);
        let (a, cookie_a) = sessions.issue("admin", NOW, None);
        let (b, _) = sessions.issue("admin", NOW, None);
        let token = sessions.csrf(&a);
        assert!(sessions.csrf_matches(&a, &token));
        assert!(!sessions.csrf_matches(&b, &token));
        assert!(!sessions.csrf_matches(&a, ""));
        assert!(!sessions.csrf_matches(&a, &token[1..]));
        sessions.end(&a, NOW);
        assert_eq!(sessions.open(&cookie_a, NOW + 1), Err(Refusal::Ended));
    }
}
