//! Signals that end sessions from outside the browser: an IdP's OpenID Connect back-channel
//! logout, Okta Universal Logout and Shared Signals events ([`events`]), and an
//! administrator's revocation. Each ends the named sessions in the store — every node's, with
//! the shared store — and returns them for the audit trail.

pub mod events;
pub mod receivers;

use crate::auth::{Auth, Provider};
use crate::idp::jwt::JwtError;
use crate::idp::oidc::{OidcProvider, LOGOUT_TOKEN_MAX_AGE};
use crate::idp::Identity;
use crate::session::store::Selector;
use crate::session::{Session, SignInFamily, StoreError};
use serde_json::Value;
use std::sync::Arc;
use thiserror::Error;

/// Why a back-channel logout was refused.
#[derive(Debug, Error)]
pub enum BackchannelError {
    /// No `logout_token` in the form.
    #[error("no logout_token")]
    Missing,
    /// No OpenID Connect IdP of this gateway has the token's issuer and audience.
    #[error("no configured identity provider issued this token")]
    UnknownIssuer,
    /// The token failed verification.
    #[error("logout token refused: {0}")]
    Token(#[from] JwtError),
    /// The token was used before.
    #[error("logout token replayed (jti seen before)")]
    Replayed,
    /// The store could not end the sessions (the IdP should retry).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BackchannelError {
    /// The OAuth-style error code for the JSON answer (Back-Channel Logout 1.0 §2.8).
    pub fn code(&self) -> &'static str {
        match self {
            BackchannelError::Store(_) => "temporarily_unavailable",
            _ => "invalid_request",
        }
    }
}

/// The OIDC provider a token's (unverified) `iss` and `aud` point at: the configured IdP with
/// that issuer whose client the token is for.
fn issuer_of<'a>(auth: &'a Auth, raw: &str) -> Option<&'a Arc<OidcProvider>> {
    let claims = crate::idp::jwt::payload_of(raw)?;
    let iss = claims.get("iss")?.as_str()?;
    let for_client = |client: &str| match claims.get("aud") {
        Some(Value::String(a)) => a == client,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(client)),
        _ => false,
    };
    auth.providers().find_map(|p| match p {
        Provider::Oidc(o) if o.issuer() == iss && for_client(o.client_id()) => Some(o),
        _ => None,
    })
}

/// OpenID Connect Back-Channel Logout 1.0: verifies the IdP's logout token and ends the
/// sessions it names — those of its `sid` (the IdP session, with every session single
/// sign-on made from it), else every session of its `sub` at that IdP.
pub async fn backchannel_logout(
    auth: &Auth,
    logout_token: &str,
) -> Result<(String, Vec<Arc<Session>>), BackchannelError> {
    let provider = issuer_of(auth, logout_token).ok_or(BackchannelError::UnknownIssuer)?;
    let token = provider.verify_logout_token(logout_token).await?;
    let replay_key = format!("logout-jti\0{}\0{}", provider.issuer(), token.jti);
    if !auth
        .stores
        .replay
        .first_use(&replay_key, LOGOUT_TOKEN_MAX_AGE * 2)
        .await?
    {
        return Err(BackchannelError::Replayed);
    }
    let idp = provider.name().to_string();
    let mut ended = Vec::new();
    if let Some(sid) = &token.sid {
        let named = Identity {
            idp: crate::intern::intern(&idp),
            ..Identity::default()
        };
        if let Some(family) = SignInFamily::of(&named, Some(sid), None) {
            ended = auth.sessions.remove_families(&[family]).await?;
        }
    }
    // No session carries that sid (an IdP that put none in the ID token): the user's
    // sessions at this IdP end instead — more than asked, never less.
    if ended.is_empty() {
        if let Some(subject) = &token.subject {
            let which = Selector::Subject {
                idp: idp.clone(),
                subject: subject.clone(),
            };
            ended = auth.sessions.remove_selected(&which).await?;
        }
    }
    Ok((idp, ended))
}

/// An administrator's revocation: ends every session `which` names.
pub async fn revoke(auth: &Auth, which: &Selector) -> Result<Vec<Arc<Session>>, StoreError> {
    auth.sessions.remove_selected(which).await
}
