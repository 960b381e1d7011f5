//! Okta Universal Logout and the Shared Signals Framework: signed requests and events that
//! end a user's sessions on every node.
//!
//! - Global Token Revocation (draft-parecki-oauth-global-token-revocation, what Okta Universal
//!   Logout sends): `Authorization: Bearer <JWT signed by the IdP>` and a JSON body naming the
//!   user (`sub_id`, RFC 9493: `email`, `iss_sub`, `opaque`).
//! - Push delivery (RFC 8935) of Security Event Tokens (RFC 8417) with CAEP events:
//!   `session-revoked` and `credential-change` end the user's sessions; `token-claims-change`
//!   and a lowered `assurance-level-change` end them too, so that the next page load signs in
//!   again at the IdP (silently, while the IdP session lasts) and reads the claims and the
//!   assurance the IdP holds now — a rule asking for a stronger sign-in then steps up.
//!
//! Every JWT is checked the one strict way ([`crate::idp::jwt`]): the source's keys, its
//! issuer, this gateway's audience, a recent `iat`, a `jti` never seen before.

use super::receivers::SignalReceiver;
use crate::auth::Auth;
use crate::idp::jwt::{text_claim, Claims, Expect, JwtError};
use crate::session::store::Selector;
use crate::session::{Session, StoreError};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";

/// Oldest Global Token Revocation request accepted (by `iat`).
const REVOCATION_MAX_AGE: Duration = Duration::from_secs(300);

/// Oldest security event accepted (a transmitter retries a failed push for a while).
const EVENT_MAX_AGE: Duration = Duration::from_secs(1800);

/// Tolerated clock difference with the source.
const SKEW: u64 = 60;

/// Why a signal was refused. Never carries the token.
#[derive(Debug, Error)]
pub enum SignalError {
    /// No usable credential or body.
    #[error("malformed: {0}")]
    Malformed(String),
    /// No configured source has the JWT's issuer and audience.
    #[error("no configured source issued this token")]
    UnknownIssuer,
    /// The JWT failed verification.
    #[error("token refused: {0}")]
    Token(#[from] JwtError),
    /// The JWT was used before.
    #[error("token replayed (jti seen before)")]
    Replayed,
    /// The subject names no user of the source's IdP.
    #[error("subject refused: {0}")]
    Subject(String),
    /// The store could not end the sessions (the sender should retry).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SignalError {
    /// The HTTP status for a Global Token Revocation request.
    pub fn revocation_status(&self) -> u16 {
        match self {
            SignalError::Malformed(_) | SignalError::Subject(_) | SignalError::Replayed => 400,
            SignalError::UnknownIssuer | SignalError::Token(_) => 401,
            SignalError::Store(_) => 503,
        }
    }

    /// The RFC 8935 §2.4 error code for a refused push (503 for the store: retry).
    pub fn push_code(&self) -> &'static str {
        match self {
            SignalError::UnknownIssuer => "invalid_issuer",
            SignalError::Token(JwtError::Audience(_)) => "invalid_audience",
            SignalError::Token(JwtError::Issuer(_)) => "invalid_issuer",
            SignalError::Token(
                JwtError::UnknownKey | JwtError::Signature | JwtError::Algorithm(_),
            ) => "invalid_key",
            SignalError::Token(_) => "authentication_failed",
            SignalError::Store(_) => "temporarily_unavailable",
            SignalError::Malformed(_) | SignalError::Replayed | SignalError::Subject(_) => {
                "invalid_request"
            }
        }
    }
}

/// What one signal did: which IdP's sessions, why (the event), which ended.
pub struct Effect {
    /// The IdP whose sessions the signal named.
    pub idp: String,
    /// What asked for it: `universal_logout` or the CAEP event's name.
    pub event: String,
    /// Who, in words (for the log).
    pub subject: String,
    /// The sessions that ended.
    pub ended: Vec<Arc<Session>>,
}

/// Okta Universal Logout: verifies the bearer JWT and ends every session of the user the body
/// names at that IdP.
pub async fn universal_logout(
    auth: &Auth,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Effect, SignalError> {
    let raw = authorization
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| {
            SignalError::Token(JwtError::Malformed("no `Authorization: Bearer` JWT".into()))
        })?;
    let receiver = receiver_for(&auth.receivers.universal_logout, raw)?;
    let claims = verify(
        auth,
        receiver,
        raw,
        &["jwt", "global-token-revocation+jwt"],
        REVOCATION_MAX_AGE,
    )
    .await?;
    // A security event token is not a revocation request, whatever its signature.
    if claims.contains_key("events") {
        return Err(SignalError::Token(JwtError::Claim("events")));
    }
    let request: Value = serde_json::from_slice(body)
        .map_err(|_| SignalError::Malformed("the body is not JSON".into()))?;
    let sub_id = request
        .get("sub_id")
        .ok_or_else(|| SignalError::Malformed("no `sub_id` in the body".into()))?;
    let which = selector_for(receiver, sub_id)?;
    let ended = auth.sessions.remove_selected(&which).await?;
    Ok(Effect {
        idp: receiver.idp.clone(),
        event: "universal_logout".into(),
        subject: which.to_string(),
        ended,
    })
}

/// RFC 8935 push: verifies the Security Event Token and acts on each CAEP event it carries
/// (unknown events are accepted and ignored, as §2.2 asks).
pub async fn security_event(auth: &Auth, body: &[u8]) -> Result<Vec<Effect>, SignalError> {
    let raw = std::str::from_utf8(body)
        .map_err(|_| SignalError::Malformed("the body is not a JWT".into()))?
        .trim();
    let receiver = receiver_for(&auth.receivers.shared_signals, raw)?;
    let claims = verify(auth, receiver, raw, &["secevent+jwt"], EVENT_MAX_AGE).await?;
    let events = claims
        .get("events")
        .and_then(Value::as_object)
        .filter(|e| !e.is_empty())
        .ok_or(SignalError::Token(JwtError::Claim("events")))?;
    // SSF 1.0 names the subject once, at the top; earlier CAEP drafts inside each event.
    let top_subject = claims.get("sub_id");
    let mut out = Vec::new();
    for (uri, payload) in events {
        let Some(name) = uri.strip_prefix(CAEP) else {
            tracing::info!(event = %crate::idp::loggable(uri), "security event ignored (not CAEP)");
            continue;
        };
        let ends_sessions = match name {
            "session-revoked" | "credential-change" | "token-claims-change" => true,
            // A raised assurance changes nothing the gateway holds.
            "assurance-level-change" => {
                payload.get("change_direction").and_then(Value::as_str) != Some("increase")
            }
            _ => false,
        };
        if !ends_sessions {
            tracing::info!(event = name, "security event needs no action");
            continue;
        }
        let subject = top_subject
            .or_else(|| payload.get("subject"))
            .ok_or_else(|| SignalError::Subject("the event names no subject".into()))?;
        let which = selector_for(receiver, subject)?;
        let ended = auth.sessions.remove_selected(&which).await?;
        out.push(Effect {
            idp: receiver.idp.clone(),
            event: name.to_string(),
            subject: which.to_string(),
            ended,
        });
    }
    Ok(out)
}

/// The receiver a JWT's (unverified) `iss` and `aud` point at.
fn receiver_for<'a>(
    receivers: &'a [SignalReceiver],
    raw: &str,
) -> Result<&'a SignalReceiver, SignalError> {
    let claims = crate::idp::jwt::payload_of(raw)
        .ok_or_else(|| SignalError::Malformed("not a JWT".into()))?;
    let iss = text_claim(&claims, "iss").ok_or(SignalError::UnknownIssuer)?;
    let names = |aud: &str| match claims.get("aud") {
        Some(Value::String(a)) => a == aud,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud)),
        _ => false,
    };
    let mut of_issuer = receivers
        .iter()
        .filter(|r| r.source.issuer == iss)
        .peekable();
    let first = of_issuer
        .peek()
        .copied()
        .ok_or(SignalError::UnknownIssuer)?;
    of_issuer
        .find(|r| names(&r.source.audience))
        .ok_or_else(|| SignalError::Token(JwtError::Audience(first.source.audience.clone())))
}

/// Signature, `typ` (one of `types`, or none), issuer, audience, `iat` within `max_age`, and
/// a `jti` used once.
async fn verify(
    auth: &Auth,
    receiver: &SignalReceiver,
    raw: &str,
    types: &[&'static str],
    max_age: Duration,
) -> Result<Claims, SignalError> {
    let (typ, claims) = receiver.verify(raw).await?;
    if typ
        .as_deref()
        .is_some_and(|t| !types.iter().any(|ok| t.eq_ignore_ascii_case(ok)))
    {
        return Err(SignalError::Token(JwtError::Type(
            types.first().copied().unwrap_or("jwt"),
        )));
    }
    let audiences = [receiver.source.audience.clone()];
    Expect {
        issuer: &receiver.source.issuer,
        audiences: &audiences,
        now: auth.clock().now_unix(),
        skew: SKEW,
        require_exp: false,
        max_age: Some(max_age.as_secs()),
    }
    .check(&claims)?;
    let jti = text_claim(&claims, "jti").ok_or(JwtError::Claim("jti"))?;
    let key = format!("signal-jti\0{}\0{jti}", receiver.source.issuer);
    if !auth.stores.replay.first_use(&key, max_age * 2).await? {
        return Err(SignalError::Replayed);
    }
    Ok(claims)
}

/// The sessions a subject identifier (RFC 9493) names at the receiver's IdP.
fn selector_for(receiver: &SignalReceiver, sub_id: &Value) -> Result<Selector, SignalError> {
    let field = |name: &str| {
        sub_id
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SignalError::Subject(format!("no `{name}`")))
    };
    let idp = receiver.idp.clone();
    match sub_id.get("format").and_then(Value::as_str) {
        Some("email") => Ok(Selector::EmailAt {
            idp,
            email: field("email")?.to_ascii_lowercase(),
        }),
        Some("iss_sub") => {
            let iss = field("iss")?;
            if !receiver.subject_issuers.iter().any(|i| i == iss) {
                return Err(SignalError::Subject(format!(
                    "issuer `{}` is not this IdP's",
                    crate::idp::loggable(iss)
                )));
            }
            Ok(Selector::Subject {
                idp,
                subject: field("sub")?.to_string(),
            })
        }
        // Okta's user id: the `sub` of its ID tokens.
        Some("opaque") => Ok(Selector::Subject {
            idp,
            subject: field("id")?.to_string(),
        }),
        Some("complex") => match sub_id.get("user") {
            Some(user) => selector_for(receiver, user),
            None => Err(SignalError::Subject(
                "complex subject without `user`".into(),
            )),
        },
        other => Err(SignalError::Subject(format!(
            "subject format {} is not supported (email, iss_sub, opaque)",
            crate::idp::loggable(other.unwrap_or("(none)"))
        ))),
    }
}
