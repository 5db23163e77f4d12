//! Why a token was refused: the errors every module of the crate (claims,
//! tokens, key sets) and its callers share, so none of them imports another
//! for its error type.

use std::fmt;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// `exp` has passed, beyond the leeway (wire error 109: the SDK fetches a
    /// new token).
    #[error("token expired")]
    Expired,
    /// Anything else (disconnect 3500 for a connection token, error 103 for a
    /// subscription token).
    #[error("invalid token: {0}")]
    Invalid(InvalidReason),
    /// The header's `kid` is not in the current JWKS set: fetch the set
    /// again (rate limited) and retry, else the token is invalid.
    #[error("unknown key id")]
    UnknownKey,
    /// Cannot decide now: no JWKS set loaded yet, or the authorization
    /// server is unreachable (error 100, temporary: the client retries).
    #[error("credentials cannot be checked now")]
    Unavailable,
}

impl TokenError {
    /// Short snake_case label for metrics and logs: `expired` or the
    /// [`InvalidReason`] label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Invalid(reason) => reason.as_str(),
            Self::UnknownKey => "unknown_key_pending",
            Self::Unavailable => "unavailable",
        }
    }
}

impl From<InvalidReason> for TokenError {
    fn from(reason: InvalidReason) -> Self {
        Self::Invalid(reason)
    }
}

/// What made a token invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidReason {
    /// Not three base64url parts of JSON objects, a bad `kid`, `typ` or `alg`
    /// type, or a claim given twice.
    Malformed,
    /// No configured key of the algorithm's family verifies the signature.
    Signature,
    /// `alg` is `none`, unknown, or of a family with no configured key.
    Algorithm,
    /// No key is configured at all.
    NoKey,
    /// An audience is configured and the token's `aud` does not contain it.
    Audience,
    /// An issuer is configured and the token's `iss` differs.
    Issuer,
    /// `nbf` or `iat` lies in the future beyond the leeway.
    NotYetValid,
    /// The header carries `crit`, `jku`, `x5u`, `jwk` or `x5c`.
    ForbiddenHeader,
    /// A claim has the wrong JSON type (e.g. a string `exp`), or a
    /// `b64info`/`b64data` is not base64 of JSON.
    ClaimType,
    /// A connection token carries a `channel` claim.
    ChannelInConnectionToken,
    /// A subscription token has no `channel` claim.
    MissingChannel,
    /// The header's `typ` is not one of a JWT or an access token.
    Type,
    /// The `kid` is still unknown after the JWKS set was fetched again.
    UnknownKey,
    /// The authorization server says the token is not active (RFC 7662).
    Inactive,
}

impl InvalidReason {
    /// Every reason, for pre-initialising metric label sets.
    pub const ALL: [InvalidReason; 14] = [
        Self::Malformed,
        Self::Signature,
        Self::Algorithm,
        Self::NoKey,
        Self::Audience,
        Self::Issuer,
        Self::NotYetValid,
        Self::ForbiddenHeader,
        Self::ClaimType,
        Self::ChannelInConnectionToken,
        Self::MissingChannel,
        Self::Type,
        Self::UnknownKey,
        Self::Inactive,
    ];

    /// Short snake_case label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Signature => "signature",
            Self::Algorithm => "algorithm",
            Self::NoKey => "no_key",
            Self::Audience => "audience",
            Self::Issuer => "issuer",
            Self::NotYetValid => "not_yet_valid",
            Self::ForbiddenHeader => "forbidden_header",
            Self::ClaimType => "claim_type",
            Self::ChannelInConnectionToken => "channel_in_connection_token",
            Self::MissingChannel => "missing_channel",
            Self::Type => "type",
            Self::UnknownKey => "unknown_key",
            Self::Inactive => "inactive",
        }
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
