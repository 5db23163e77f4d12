//! Every error code and disconnect code of the protocol, with its message and
//! reconnect meaning, in one table.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Error codes sent in `Reply.error` (docs/protocol.md, "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    Internal,
    Unauthorized,
    UnknownChannel,
    PermissionDenied,
    MethodNotFound,
    AlreadySubscribed,
    LimitExceeded,
    BadRequest,
    NotAvailable,
    TokenExpired,
    Expired,
    TooManyRequests,
    UnrecoverablePosition,
    ConcurrentPagination,
}

impl ErrorCode {
    /// Every code, for metrics pre-initialisation and exhaustive tests.
    pub const ALL: [ErrorCode; 14] = [
        Self::Internal,
        Self::Unauthorized,
        Self::UnknownChannel,
        Self::PermissionDenied,
        Self::MethodNotFound,
        Self::AlreadySubscribed,
        Self::LimitExceeded,
        Self::BadRequest,
        Self::NotAvailable,
        Self::TokenExpired,
        Self::Expired,
        Self::TooManyRequests,
        Self::UnrecoverablePosition,
        Self::ConcurrentPagination,
    ];

    /// (wire code, message, temporary)
    const fn row(self) -> (u32, &'static str, bool) {
        match self {
            Self::Internal => (100, "internal server error", true),
            Self::Unauthorized => (101, "unauthorized", false),
            Self::UnknownChannel => (102, "unknown channel", false),
            Self::PermissionDenied => (103, "permission denied", false),
            Self::MethodNotFound => (104, "method not found", false),
            Self::AlreadySubscribed => (105, "already subscribed", false),
            Self::LimitExceeded => (106, "limit exceeded", false),
            Self::BadRequest => (107, "bad request", false),
            Self::NotAvailable => (108, "not available", false),
            Self::TokenExpired => (109, "token expired", false),
            Self::Expired => (110, "expired", false),
            Self::TooManyRequests => (111, "too many requests", true),
            Self::UnrecoverablePosition => (112, "unrecoverable position", false),
            Self::ConcurrentPagination => (113, "concurrent pagination", true),
        }
    }

    pub const fn code(self) -> u32 {
        self.row().0
    }

    pub const fn message(self) -> &'static str {
        self.row().1
    }

    pub const fn temporary(self) -> bool {
        self.row().2
    }

    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// The `error` object of a reply: `{"code":N,"message":"...","temporary":true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: u32,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub temporary: bool,
}

impl From<ErrorCode> for ErrorReply {
    fn from(code: ErrorCode) -> Self {
        Self {
            code: code.code(),
            message: code.message().to_owned(),
            temporary: code.temporary(),
        }
    }
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// A server-initiated close: WebSocket close code plus a plain-text reason
/// (docs/protocol.md, "Disconnect codes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u16,
    pub reason: Cow<'static, str>,
}

macro_rules! disconnects {
    ($($name:ident = $code:literal, $reason:literal;)*) => {
        impl Disconnect {
            $(pub const $name: Disconnect = Disconnect { code: $code, reason: Cow::Borrowed($reason) };)*
            /// Every predefined disconnect, for metrics pre-initialisation.
            pub const ALL: &'static [Disconnect] = &[$(Self::$name),*];
        }
    };
}

disconnects! {
    SHUTDOWN = 3001, "shutdown";
    INTERNAL = 3004, "internal server error";
    EXPIRED = 3005, "connection expired";
    SUBSCRIPTION_EXPIRED = 3006, "subscription expired";
    SLOW = 3008, "slow";
    WRITE_ERROR = 3009, "write error";
    INSUFFICIENT_STATE = 3010, "insufficient state";
    FORCE_RECONNECT = 3011, "force reconnect";
    NO_PONG = 3012, "no pong";
    TOO_MANY_REQUESTS = 3013, "too many requests";
    STATE_INVALIDATED = 3014, "state invalidated";
    INVALID_TOKEN = 3500, "invalid token";
    BAD_REQUEST = 3501, "bad request";
    STALE = 3502, "stale";
    FORCE_DISCONNECT = 3503, "force disconnect";
    CONNECTION_LIMIT = 3504, "connection limit";
    CHANNEL_LIMIT = 3505, "channel limit";
    INAPPROPRIATE_PROTOCOL = 3506, "inappropriate protocol";
    PERMISSION_DENIED = 3507, "permission denied";
    NOT_AVAILABLE = 3508, "not available";
    TOO_MANY_ERRORS = 3509, "too many errors";
    MESSAGE_TOO_BIG = 1009, "message size limit exceeded";
    PROTOCOL_ERROR = 1002, "protocol error";
    INVALID_TEXT = 1007, "invalid text";
}

impl Disconnect {
    /// A custom disconnect (server API). The reason is cut to the 123 bytes a
    /// close frame can carry, on a character boundary.
    pub fn custom(code: u16, reason: &str) -> Self {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            code,
            reason: Cow::Owned(reason[..end].to_owned()),
        }
    }

    /// The SDKs' reconnect rule: 3000-3499, 4000-4499 and >= 5000 reconnect;
    /// 3500-3999 and 4500-4999 are terminal; transport codes below 3000
    /// reconnect except 1009.
    pub fn reconnect(&self) -> bool {
        match self.code {
            1009 => false,
            0..=2999 => true,
            3000..=3499 | 4000..=4499 => true,
            3500..=3999 | 4500..=4999 => false,
            _ => true,
        }
    }
}

/// Codes of the `unsubscribe` push (2000-2999; >= 2500 makes the SDK resubscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsubscribeCode {
    Server,
    InsufficientState,
    Expired,
    StateInvalidated,
}

impl UnsubscribeCode {
    pub const fn code(self) -> u32 {
        match self {
            Self::Server => 2000,
            Self::InsufficientState => 2500,
            Self::Expired => 2501,
            Self::StateInvalidated => 2502,
        }
    }

    pub const fn reason(self) -> &'static str {
        match self {
            Self::Server => "server unsubscribe",
            Self::InsufficientState => "insufficient state",
            Self::Expired => "subscription expired",
            Self::StateInvalidated => "state invalidated",
        }
    }

    pub const fn resubscribe(self) -> bool {
        self.code() >= 2500
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_table_matches_reference() {
        let expect = [
            (100, true),
            (101, false),
            (102, false),
            (103, false),
            (104, false),
            (105, false),
            (106, false),
            (107, false),
            (108, false),
            (109, false),
            (110, false),
            (111, true),
            (112, false),
            (113, true),
        ];
        for (code, (wire, temporary)) in ErrorCode::ALL.iter().zip(expect) {
            assert_eq!(code.code(), wire);
            assert_eq!(code.temporary(), temporary, "{wire}");
            assert_eq!(ErrorCode::from_code(wire), Some(*code));
        }
        let reply = ErrorReply::from(ErrorCode::Internal);
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"code":100,"message":"internal server error","temporary":true}"#
        );
        let reply = ErrorReply::from(ErrorCode::UnknownChannel);
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"code":102,"message":"unknown channel"}"#
        );
    }

    #[test]
    fn reconnect_rule() {
        assert!(Disconnect::SHUTDOWN.reconnect());
        assert!(Disconnect::SLOW.reconnect());
        assert!(Disconnect::NO_PONG.reconnect());
        assert!(!Disconnect::INVALID_TOKEN.reconnect());
        assert!(!Disconnect::BAD_REQUEST.reconnect());
        assert!(!Disconnect::STALE.reconnect());
        assert!(!Disconnect::MESSAGE_TOO_BIG.reconnect());
        assert!(Disconnect::custom(4000, "x").reconnect());
        assert!(!Disconnect::custom(4500, "x").reconnect());
        assert!(Disconnect::custom(5000, "x").reconnect());
        for d in Disconnect::ALL {
            assert!(d.reason.len() < 123);
        }
    }

    #[test]
    fn custom_reason_is_cut_on_char_boundary() {
        let long = "é".repeat(100);
        let d = Disconnect::custom(4000, &long);
        assert!(d.reason.len() <= 123);
        assert!(long.starts_with(d.reason.as_ref()));
    }

    #[test]
    fn unsubscribe_codes() {
        assert!(!UnsubscribeCode::Server.resubscribe());
        assert!(UnsubscribeCode::InsufficientState.resubscribe());
        assert_eq!(UnsubscribeCode::Expired.code(), 2501);
    }
}
