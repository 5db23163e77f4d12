//! The one table from an error to what the client is told, keyed by the
//! stage of the client protocol it happened in (docs/protocol.md, "Error
//! codes" and "Disconnect codes"). A mapper and nothing else: side effects a
//! refusal calls for (a JWKS refetch for an unknown `kid`) are the
//! connection machine's to ask for.

use herald_auth::TokenError;
use herald_bus::BusError;
use herald_protocol::{Disconnect, ErrorCode};

use crate::config::ClientConfig;

/// Where in the protocol an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Checking the credentials of `connect`.
    Connect,
    /// Checking the token of `refresh`.
    Refresh,
    /// Checking the subscription token of `subscribe`.
    Subscribe,
    /// Checking the subscription token of `sub_refresh`.
    SubRefresh,
}

/// What the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wire {
    /// An error reply; the connection goes on.
    Error(ErrorCode),
    /// The connection is closed with this code.
    Close(Disconnect),
}

/// A refused token at `stage`.
///
/// | error | connect | refresh | subscribe, sub_refresh |
/// |---|---|---|---|
/// | expired | 109 | close 3005 | 109 |
/// | cannot be checked now (no key set, refetch rate limited or failed, introspection failing) | 100 | 100 | 100 |
/// | unknown `kid` (not refetched yet) | 100 | 100 | 100 |
/// | anything else invalid | close 3500 | close 3500 | 103 |
///
/// 100 is temporary: the SDK retries. A refresh that cannot be checked
/// leaves the connection to its expiry grace.
pub(crate) fn token(stage: Stage, error: &TokenError) -> Wire {
    let subscription = matches!(stage, Stage::Subscribe | Stage::SubRefresh);
    match error {
        TokenError::Expired if stage == Stage::Refresh => Wire::Close(Disconnect::EXPIRED),
        TokenError::Expired => Wire::Error(ErrorCode::TokenExpired),
        TokenError::Unavailable | TokenError::UnknownKey => Wire::Error(ErrorCode::Internal),
        _ if subscription => Wire::Error(ErrorCode::PermissionDenied),
        _ => Wire::Close(Disconnect::INVALID_TOKEN),
    }
}

/// An engine call that failed, at any stage: a position (or a record) that
/// cannot be given back is 112, anything else 100 (temporary).
pub(crate) fn engine(error: &BusError) -> ErrorCode {
    match error {
        BusError::UnrecoverablePosition | BusError::Undecryptable => {
            ErrorCode::UnrecoverablePosition
        }
        _ => ErrorCode::Internal,
    }
}

/// The disconnect a unidirectional client gets for a connect error: the
/// configured `client.connect_code_to_unidirectional_disconnect` transform
/// when one matches, else
///
/// | connect error | disconnect |
/// |---|---|
/// | 109 token expired, 110 expired | 3005 connection expired |
/// | 101 unauthorized, 103 permission denied | 3507 permission denied |
/// | 107 bad request | 3501 bad request |
/// | 108 not available | 3508 not available |
/// | 111 too many requests | 3013 too many requests |
/// | anything else (100 internal, 112 unrecoverable position…) | 3004 internal server error |
///
/// 3005, 3013 and 3004 reconnect; the others are terminal. A code the
/// backend chose (a proxy's error) is 3004 unless a transform names it.
pub(crate) fn unidirectional_disconnect_for(config: &ClientConfig, code: u32) -> Disconnect {
    match ErrorCode::ALL.iter().find(|c| c.code() == code) {
        Some(known) => unidirectional_disconnect(config, *known),
        None => config
            .connect_code_to_unidirectional_disconnect
            .disconnect_for(code)
            .map_or(Disconnect::INTERNAL, |(to, reason)| {
                Disconnect::custom(to, reason)
            }),
    }
}

/// [`unidirectional_disconnect_for`] of a code of the table.
pub(crate) fn unidirectional_disconnect(config: &ClientConfig, code: ErrorCode) -> Disconnect {
    if let Some((to, reason)) = config
        .connect_code_to_unidirectional_disconnect
        .disconnect_for(code.code())
    {
        return Disconnect::custom(to, reason);
    }
    match code {
        ErrorCode::TokenExpired | ErrorCode::Expired => Disconnect::EXPIRED,
        ErrorCode::Unauthorized | ErrorCode::PermissionDenied => Disconnect::PERMISSION_DENIED,
        ErrorCode::BadRequest => Disconnect::BAD_REQUEST,
        ErrorCode::NotAvailable => Disconnect::NOT_AVAILABLE,
        ErrorCode::TooManyRequests => Disconnect::TOO_MANY_REQUESTS,
        _ => Disconnect::INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use herald_auth::InvalidReason;

    use super::*;

    #[test]
    fn token_table() {
        use Stage::*;
        let invalid = TokenError::Invalid(InvalidReason::Signature);
        let close = |d: Disconnect| Wire::Close(d);
        let error = |c: ErrorCode| Wire::Error(c);
        let table: &[(Stage, TokenError, Wire)] = &[
            (Connect, TokenError::Expired, error(ErrorCode::TokenExpired)),
            (Refresh, TokenError::Expired, close(Disconnect::EXPIRED)),
            (
                Subscribe,
                TokenError::Expired,
                error(ErrorCode::TokenExpired),
            ),
            (
                SubRefresh,
                TokenError::Expired,
                error(ErrorCode::TokenExpired),
            ),
            (Connect, TokenError::Unavailable, error(ErrorCode::Internal)),
            (Refresh, TokenError::Unavailable, error(ErrorCode::Internal)),
            (
                Subscribe,
                TokenError::Unavailable,
                error(ErrorCode::Internal),
            ),
            (
                SubRefresh,
                TokenError::Unavailable,
                error(ErrorCode::Internal),
            ),
            (Connect, TokenError::UnknownKey, error(ErrorCode::Internal)),
            (Refresh, TokenError::UnknownKey, error(ErrorCode::Internal)),
            (
                Subscribe,
                TokenError::UnknownKey,
                error(ErrorCode::Internal),
            ),
            (
                SubRefresh,
                TokenError::UnknownKey,
                error(ErrorCode::Internal),
            ),
            (Connect, invalid.clone(), close(Disconnect::INVALID_TOKEN)),
            (Refresh, invalid.clone(), close(Disconnect::INVALID_TOKEN)),
            (
                Subscribe,
                invalid.clone(),
                error(ErrorCode::PermissionDenied),
            ),
            (SubRefresh, invalid, error(ErrorCode::PermissionDenied)),
        ];
        for (stage, error, want) in table {
            assert_eq!(&token(*stage, error), want, "{stage:?} {error:?}");
        }
        // Every invalid reason, at every stage, maps like any other.
        for reason in InvalidReason::ALL {
            let refused = TokenError::Invalid(reason);
            assert_eq!(token(Connect, &refused), close(Disconnect::INVALID_TOKEN));
            assert_eq!(
                token(Subscribe, &refused),
                error(ErrorCode::PermissionDenied)
            );
        }
    }

    #[test]
    fn engine_table() {
        let table = [
            (BusError::UnrecoverablePosition, 112),
            (BusError::Undecryptable, 112),
            (BusError::Unavailable("down".into()), 100),
            (BusError::Internal("bug".into()), 100),
        ];
        for (error, code) in table {
            assert_eq!(engine(&error).code(), code, "{error:?}");
        }
    }
}
