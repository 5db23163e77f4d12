//! Who is connecting: the credential checks that may need the network.
//!
//! [`Authenticator`] wraps herald-auth's pure [`TokenVerifier`] with the I/O
//! it cannot do: JWKS sources fetched at start, refreshed in the background
//! and refetched (single flight, rate limited) when a token names an unknown
//! key; and RFC 7662 introspection of opaque access tokens, cached by the
//! token's SHA-256. Most checks finish without waiting
//! ([`Authenticator::connection_now`]); the rest are futures the caller
//! awaits ([`Authenticator::connection`]).

mod http;
mod introspection;
mod jwks;
mod metrics;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use herald_auth::{
    check_endpoint, ConnectionClaims, InvalidReason, JwksSlot, SubscriptionClaims, TokenError,
    TokenVerifier,
};

pub use http::ClientError;
pub use introspection::{
    parse_answer, Introspected, IntrospectionConfig, IntrospectionError, Introspector,
    BREAKER_PAUSE, BREAKER_THRESHOLD, NEGATIVE_TTL,
};
pub use jwks::{
    refresh_interval, JwksSource, Refetch, REFRESH_BOUNDS, UNKNOWN_KID_REFETCH_INTERVAL,
};

/// A config value this crate refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A bad `client.introspection` value (the message starts with the key).
    #[error("{0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Who a connection is, once its credentials checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The claims of the token; for an introspected token only `user` and
    /// `exp` are set.
    pub claims: ConnectionClaims,
    /// Channels the credentials grant subscription to (introspection scopes).
    pub channels: Vec<String>,
    /// The token was introspected: re-check it while the connection lives.
    pub introspected: bool,
}

impl Principal {
    fn from_claims(claims: ConnectionClaims) -> Self {
        Self {
            claims,
            channels: Vec::new(),
            introspected: false,
        }
    }
}

/// Connection and subscription credential checks.
#[derive(Debug)]
pub struct Authenticator {
    verifier: TokenVerifier,
    /// One per JWKS slot of the verifier.
    jwks: Vec<Arc<JwksSource>>,
    introspector: Option<Introspector>,
    warnings: Vec<String>,
}

impl Authenticator {
    /// Builds the checks from the verifier and `client.introspection`.
    /// Nothing is fetched until [`Authenticator::start`].
    pub fn new(
        verifier: TokenVerifier,
        introspection: &IntrospectionConfig,
    ) -> Result<Self, IdentityError> {
        metrics::init();
        let mut warnings = Vec::new();
        let slots = verifier.jwks_slots();
        let needs_http = !slots.is_empty() || !introspection.endpoint.is_empty();
        let http = if needs_http {
            Some(http::client()?)
        } else {
            None
        };
        warnings.extend(check_introspection(introspection)?);
        let introspector = if introspection.endpoint.is_empty() {
            None
        } else {
            http.clone()
                .map(|http| Introspector::new(introspection, http))
        };
        let jwks = match &http {
            Some(http) => slots
                .into_iter()
                .map(|slot| Arc::new(JwksSource::new(slot, http.clone())))
                .collect(),
            None => Vec::new(),
        };
        Ok(Self {
            verifier,
            jwks,
            introspector,
            warnings,
        })
    }

    /// Starts the background JWKS refresh of every source (one task each).
    /// Must run inside a tokio runtime.
    pub fn start(&self) {
        for source in &self.jwks {
            tokio::spawn(source.clone().run());
        }
    }

    /// Fetches every JWKS source once, now (for one-shot commands).
    pub async fn load_keys(&self) -> Vec<(String, Result<(), String>)> {
        let mut outcomes = Vec::new();
        for source in &self.jwks {
            let outcome = source.refresh().await.map(|_| ());
            outcomes.push((source.slot().url().to_owned(), outcome));
        }
        outcomes
    }

    /// Startup warnings of the verifier and of this crate (no secrets).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.verifier.warnings();
        warnings.extend(self.warnings.iter().cloned());
        warnings
    }

    /// The pure verifier (subscription tokens are checked with it directly).
    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// The JWKS sources, in the verifier's order.
    pub fn jwks_sources(&self) -> &[Arc<JwksSource>] {
        &self.jwks
    }

    /// The introspection client, when configured.
    pub fn introspector(&self) -> Option<&Introspector> {
        self.introspector.as_ref()
    }

    /// Checks a connection token without waiting, when that is possible;
    /// `None` means the answer needs [`Authenticator::connection`].
    pub fn connection_now(&self, token: &str, now: u64) -> Option<Result<Principal, TokenError>> {
        match &self.introspector {
            Some(introspector) if !self.is_local_jwt(token) => {
                introspector.cached(token).map(principal_of)
            }
            _ => match self.verifier.verify_connection(token, now) {
                Err(TokenError::UnknownKey) => None,
                // No JWKS set loaded yet: the async path may fetch one.
                Err(TokenError::Unavailable) if self.verifier.connection_jwks().is_some() => None,
                other => Some(other.map(Principal::from_claims)),
            },
        }
    }

    /// Checks a connection token, fetching keys or introspecting as needed.
    pub async fn connection(&self, token: &str, now: u64) -> Result<Principal, TokenError> {
        if let Some(introspector) = &self.introspector {
            if !self.is_local_jwt(token) {
                return match introspector.introspect(token, now).await {
                    Ok(answer) => principal_of(answer),
                    Err(_) => Err(TokenError::Unavailable),
                };
            }
        }
        match self.verifier.verify_connection(token, now) {
            // An unknown kid, or no set loaded yet (the provider was down at
            // start): one rate-limited fetch, then verify again.
            Err(TokenError::UnknownKey | TokenError::Unavailable)
                if self.verifier.connection_jwks().is_some() =>
            {
                self.after_refetch(self.verifier.connection_jwks(), || {
                    self.verifier.verify_connection(token, unix_now())
                })
                .await
            }
            other => other,
        }
        .map(Principal::from_claims)
    }

    /// Whether an introspected token is still active: `Some(false)` when the
    /// server now says inactive (revoked), `None` when it cannot be asked
    /// (the connection keeps its expiry).
    pub async fn still_active(&self, token: &str, now: u64) -> Option<bool> {
        let introspector = self.introspector.as_ref()?;
        match introspector.introspect(token, now).await {
            Ok(Introspected::Active { .. }) => Some(true),
            Ok(Introspected::Inactive) => Some(false),
            Err(_) => None,
        }
    }

    /// Checks a subscription token without waiting, when that is possible;
    /// `None` means the answer needs [`Authenticator::subscription`] (an
    /// unknown kid, or no JWKS set loaded yet).
    pub fn subscription_now(
        &self,
        token: &str,
        now: u64,
    ) -> Option<Result<SubscriptionClaims, TokenError>> {
        match self.verifier.verify_subscription(token, now) {
            Err(TokenError::UnknownKey | TokenError::Unavailable)
                if self.verifier.subscription_jwks().is_some() =>
            {
                None
            }
            other => Some(other),
        }
    }

    /// Checks a subscription token like [`Authenticator::connection`] checks
    /// a connection token: an unknown kid, or no set loaded yet, costs one
    /// rate-limited JWKS fetch, then the token is verified again. A kid still
    /// absent from a fresh set is `Invalid(UnknownKey)`; a fetch that failed or
    /// was rate limited is `Unavailable` (the client retries).
    pub async fn subscription(
        &self,
        token: &str,
        now: u64,
    ) -> Result<SubscriptionClaims, TokenError> {
        let slot = self.verifier.subscription_jwks();
        match self.verifier.verify_subscription(token, now) {
            Err(TokenError::UnknownKey | TokenError::Unavailable) if slot.is_some() => {
                self.after_refetch(slot, || {
                    self.verifier.verify_subscription(token, unix_now())
                })
                .await
            }
            other => other,
        }
    }

    /// A subscription token being refreshed (`sub_refresh`, answered without
    /// waiting) named a key the subscription JWKS set lacks: refetch in the
    /// background (rate limited); the client retries on the temporary error
    /// it gets meanwhile.
    pub fn subscription_key_missing(&self) {
        if let Some(source) = self.source_of(self.verifier.subscription_jwks()) {
            tokio::spawn(async move {
                source.refetch_for_unknown_kid().await;
            });
        }
    }

    /// A JWT this node can verify itself: three base64url parts with a JSON
    /// header, and some connection key configured. Anything else goes to
    /// introspection when it is configured.
    fn is_local_jwt(&self, token: &str) -> bool {
        self.verifier.has_connection_keys() && looks_like_jwt(token)
    }

    fn source_of(&self, slot: Option<&Arc<JwksSlot>>) -> Option<Arc<JwksSource>> {
        let slot = slot?;
        self.jwks
            .iter()
            .find(|source| Arc::ptr_eq(source.slot(), slot))
            .cloned()
    }

    async fn after_refetch<T>(
        &self,
        slot: Option<&Arc<JwksSlot>>,
        verify: impl Fn() -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let Some(source) = self.source_of(slot) else {
            return Err(TokenError::Invalid(InvalidReason::UnknownKey));
        };
        match source.refetch_for_unknown_kid().await {
            Refetch::Fresh => match verify() {
                Err(TokenError::UnknownKey) => Err(TokenError::Invalid(InvalidReason::UnknownKey)),
                other => other,
            },
            Refetch::RateLimited | Refetch::Failed => Err(TokenError::Unavailable),
        }
    }
}

/// Checks `client.introspection` without building anything; returns
/// warnings (no secrets).
pub fn check_introspection(config: &IntrospectionConfig) -> Result<Vec<String>, IdentityError> {
    let mut warnings = Vec::new();
    if config.endpoint.is_empty() {
        return Ok(warnings);
    }
    let key = "client.introspection.endpoint";
    if let Some(warning) =
        check_endpoint(key, &config.endpoint).map_err(|e| IdentityError::Config(e.to_string()))?
    {
        warnings.push(warning);
    }
    if config.client_id.is_empty() || config.client_secret.is_empty() {
        return Err(IdentityError::Config(
            "client.introspection: client_id and client_secret are required with an endpoint (RFC 7662 §2.1: the caller authenticates)".into(),
        ));
    }
    if config.cache_ttl.is_zero() {
        warnings.push("client.introspection.cache_ttl is 0: every connect and re-check asks the authorization server".into());
    }
    Ok(warnings)
}

fn principal_of(answer: Introspected) -> Result<Principal, TokenError> {
    match answer {
        Introspected::Active {
            user,
            exp,
            channels,
        } => Ok(Principal {
            claims: ConnectionClaims {
                user,
                exp,
                ..Default::default()
            },
            channels,
            introspected: true,
        }),
        Introspected::Inactive => Err(TokenError::Invalid(InvalidReason::Inactive)),
    }
}

/// Three dot-separated parts whose first is base64url of a JSON object.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(header)
        .is_ok_and(|bytes| bytes.trim_ascii_start().first() == Some(&b'{'))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.e30.sig"));
        assert!(!looks_like_jwt("opaque-access-token"));
        assert!(!looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.e30"));
        assert!(!looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.e30.sig.extra"));
    }
}
