//! Credentials to principal: JWT connection and subscription tokens, and the
//! channel permission policy of `[channel]`.
//!
//! Pure and synchronous: no I/O, no clock (callers pass `now`), no actix.
//! JWKS sets are parsed here and fetched by `herald-identity`.
//! Token rules follow Centrifugo v6 where compatibility demands it (`exp`,
//! `sub`, `iss`, `aud` and `typ` optional) and RFC 8725 everywhere else
//! (algorithm bound to the key family, `crit`/`jku`/`x5u`/`jwk`/`x5c`
//! refused, claim types checked, leeway at most 30s).

mod channel;
mod claim;
mod config;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod jwk;
mod token;

pub use channel::{ChannelError, ChannelPolicy, ResolvedChannel, MAX_CHANNEL_LENGTH};
pub use claim::{ChannelOverride, ConnectionClaims, SubOptions, SubscriptionClaims};
pub use config::{
    check_endpoint, AuthConfigError, ChannelConfig, ChannelOptions, DeltaType, NamespaceConfig,
    PublicationDataFormat, RecoveryMode, SubscriptionTokenConfig, TokenConfig,
};
pub use error::{InvalidReason, TokenError};
pub use jwk::{JwkKeys, JwksError, JwksSlot};
pub use token::TokenVerifier;

/// Installs jsonwebtoken's aws-lc-rs `CryptoProvider` as the process default.
///
/// Idempotent and safe to call from anywhere, any number of times. Explicit
/// because feature unification could enable a second backend, and then
/// jsonwebtoken would panic at the first signature check instead of picking
/// one (security.md SEC-JWT-1).
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is the goal.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
