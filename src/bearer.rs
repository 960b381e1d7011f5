//! Access tokens from API callers (`Authorization: Bearer`, RFC 6750), for apps whose policy
//! has a `[bearer]` table. A JWT access token (RFC 9068; what Okta's custom authorization
//! servers issue) is verified against its IdP's JWKS; an opaque one, when the app allows it, is
//! asked about at the IdP's introspection endpoint (RFC 7662), the answer cached no longer than
//! the token lives. Either way the same claims must hold: the issuer, an accepted audience, not
//! expired, an accepted client, and the caller's identity (`sub`) — which then stands in for a
//! browser session, with the token's scopes for rules that name `scopes`.

use crate::config::BearerConfig;
use crate::idp::jwt::{Claims, Expect, JwtError};
use crate::idp::oidc::OidcProvider;
use crate::idp::Identity;
use http::HeaderMap;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Longest a bearer token may be (a header of this size is already suspicious).
const MAX_TOKEN_LEN: usize = 8192;

/// How long an introspection answer is trusted at most (the token's own `exp` may end it
/// sooner); revoking an opaque token at the IdP takes effect within this.
pub const INTROSPECTION_CACHE_MAX: Duration = Duration::from_secs(60);

/// How long "not active" is remembered (a caller retrying a dead token does not reach the
/// IdP each time).
const INACTIVE_CACHE: Duration = Duration::from_secs(10);

/// Introspection answers kept at most.
const INTROSPECTION_CACHE_ENTRIES: u64 = 100_000;

/// Why a bearer token was not accepted. Never carries the token.
#[derive(Debug, Error)]
pub enum BearerError {
    /// The `Authorization` header is not one well-formed `Bearer <token>` (RFC 6750 §2.1).
    #[error("malformed bearer request: {0}")]
    Malformed(&'static str),
    /// The token is not valid here (bad signature, expired, other audience, issuer, client…).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token is valid but lacks a scope the rules ask for.
    #[error("token lacks a required scope")]
    InsufficientScope(Vec<String>),
    /// The token cannot be checked now (IdP not discovered, introspection unreachable).
    #[error("cannot verify tokens of `{0}` now: {1}")]
    Unavailable(String, String),
}

impl BearerError {
    /// HTTP status (RFC 6750 §3.1).
    pub fn status(&self) -> u16 {
        match self {
            BearerError::Malformed(_) => 400,
            BearerError::Invalid(_) => 401,
            BearerError::InsufficientScope(_) => 403,
            BearerError::Unavailable(..) => 503,
        }
    }

    /// The RFC 6750 error code.
    pub fn code(&self) -> &'static str {
        match self {
            BearerError::Malformed(_) => "invalid_request",
            BearerError::Invalid(_) => "invalid_token",
            BearerError::InsufficientScope(_) => "insufficient_scope",
            BearerError::Unavailable(..) => "temporarily_unavailable",
        }
    }

    /// The `WWW-Authenticate` challenge for `realm` (the app id), if this answer carries one.
    pub fn challenge(&self, realm: &str) -> Option<String> {
        let base = format!("Bearer realm=\"{realm}\", error=\"{}\"", self.code());
        match self {
            BearerError::Unavailable(..) => None,
            BearerError::InsufficientScope(scopes) if !scopes.is_empty() => {
                Some(format!("{base}, scope=\"{}\"", scopes.join(" ")))
            }
            _ => Some(base),
        }
    }

    /// The JSON body: the code and a description that helps the API's developer (never the
    /// token or its claims).
    pub fn body(&self, request_id: &str) -> String {
        let description = match self {
            BearerError::Malformed(why) => (*why).to_string(),
            BearerError::Invalid(_) => "the access token is not valid for this API".to_string(),
            BearerError::InsufficientScope(scopes) => {
                format!(
                    "the access token lacks a required scope ({})",
                    scopes.join(" ")
                )
            }
            BearerError::Unavailable(..) => {
                "access tokens cannot be verified right now; retry shortly".to_string()
            }
        };
        serde_json::json!({
            "error": self.code(),
            "error_description": description,
            "request_id": request_id,
        })
        .to_string()
    }
}

/// The token of a request's `Authorization: Bearer` header. `Ok(None)`: no `Authorization`
/// header, or one with another scheme (Basic for the backend, say). Several `Authorization`
/// headers, or a bearer credential that is not one RFC 6750 `b64token`, are refused: the
/// backend might read another one than the gateway checked.
pub fn token_of(headers: &HeaderMap) -> Result<Option<&str>, BearerError> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    let several = all.next().is_some();
    let text = first
        .to_str()
        .map_err(|_| BearerError::Malformed("Authorization header is not ASCII"))?;
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return if several {
            Err(BearerError::Malformed("several Authorization headers"))
        } else {
            Ok(None)
        };
    }
    if several {
        return Err(BearerError::Malformed("several Authorization headers"));
    }
    let b64token = |t: &str| {
        let body = t.trim_end_matches('=');
        !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
    };
    if rest.len() > MAX_TOKEN_LEN {
        return Err(BearerError::Malformed("bearer token too long"));
    }
    if !b64token(rest) {
        return Err(BearerError::Malformed(
            "Authorization must be `Bearer <token>` with one token of RFC 6750 characters",
        ));
    }
    Ok(Some(rest))
}

/// A caller the token proved.
#[derive(Debug, Clone)]
pub struct BearerCaller {
    /// Who the token says the caller is.
    pub identity: Identity,
    /// The token's scopes.
    pub scopes: Vec<Arc<str>>,
    /// The client the token was issued to, when it says.
    pub client_id: Option<String>,
    /// When the token expires (Unix seconds).
    pub expires_unix: u64,
}

/// What the IdP answered about an opaque token.
#[derive(Clone)]
enum Introspected {
    Active(Arc<Claims>),
    Inactive,
}

/// Checks bearer tokens; holds the introspection cache (one per gateway, shared by apps).
pub struct BearerVerifier {
    introspected: moka::future::Cache<[u8; 32], (Introspected, u64)>,
}

impl Default for BearerVerifier {
    fn default() -> Self {
        Self::new()
    }
}

/// Each introspection answer lives until its own deadline (`.1`, Unix seconds).
struct UntilDeadline;

impl moka::Expiry<[u8; 32], (Introspected, u64)> for UntilDeadline {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &(Introspected, u64),
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let now = crate::clock::unix_now();
        Some(Duration::from_secs(value.1.saturating_sub(now)))
    }
}

impl BearerVerifier {
    /// A verifier with an empty cache.
    pub fn new() -> Self {
        Self {
            introspected: moka::future::Cache::builder()
                .max_capacity(INTROSPECTION_CACHE_ENTRIES)
                .expire_after(UntilDeadline)
                .build(),
        }
    }

    /// Checks `token` for an app's `[bearer]` settings against its IdP, at `now` (Unix
    /// seconds).
    pub async fn authenticate(
        &self,
        provider: &OidcProvider,
        config: &BearerConfig,
        token: &str,
        now: u64,
    ) -> Result<BearerCaller, BearerError> {
        let unavailable = |why: String| BearerError::Unavailable(provider.name().to_string(), why);
        if !provider.is_ready() {
            return Err(unavailable("identity provider not discovered yet".into()));
        }
        let claims = if looks_like_jwt(token) {
            let (typ, claims) = provider.verify_jwt(token).await.map_err(invalid)?;
            // RFC 9068 §2.1 `at+jwt`; Okta's access tokens carry no `typ` or `JWT`. Other
            // kinds of JWT (logout tokens, security events) are never access tokens.
            if typ.as_deref().is_some_and(|t| {
                !["at+jwt", "application/at+jwt", "jwt"]
                    .iter()
                    .any(|ok| t.eq_ignore_ascii_case(ok))
            }) {
                return Err(invalid(JwtError::Type("at+jwt")));
            }
            // An ID token has a nonce (the gateway asks for one in every login); an access
            // token never does.
            if claims.contains_key("nonce") {
                return Err(invalid(JwtError::Claim("nonce")));
            }
            Arc::new(claims)
        } else if config.introspect() {
            self.introspect(provider, token, now)
                .await?
                .ok_or_else(|| {
                    BearerError::Invalid("the IdP says the token is not active".into())
                })?
        } else {
            return Err(BearerError::Invalid(
                "not a JWT, and this app does not introspect opaque tokens".into(),
            ));
        };
        // An introspection answer need not repeat the issuer; if it does, it must be ours.
        let mut claims_to_check = (*claims).clone();
        if !looks_like_jwt(token) && !claims_to_check.contains_key("iss") {
            claims_to_check.insert("iss".into(), Value::String(provider.issuer().into()));
        }
        Expect {
            issuer: provider.issuer(),
            audiences: config.audiences(),
            now,
            skew: provider.clock_skew().as_secs(),
            require_exp: true,
            max_age: None,
        }
        .check(&claims_to_check)
        .map_err(invalid)?;
        let client_id = ["cid", "client_id", "azp"]
            .iter()
            .find_map(|name| claims.get(*name).and_then(Value::as_str))
            .map(str::to_string);
        if !config.client_ids().is_empty()
            && !client_id
                .as_deref()
                .is_some_and(|c| config.client_ids().iter().any(|ok| ok == c))
        {
            return Err(BearerError::Invalid(
                "issued to a client this app does not accept".into(),
            ));
        }
        // A service's own token (client credentials) may name no user: RFC 7662 makes `sub`
        // optional; RFC 9068 then has it be the client id, which is what stands in here.
        let identity = if claims.contains_key("sub") {
            provider.identity_from_claims(&claims)
        } else {
            client_id.as_ref().and_then(|c| {
                let mut with_subject = (*claims).clone();
                with_subject.insert("sub".into(), Value::String(c.clone()));
                provider.identity_from_claims(&with_subject)
            })
        }
        .ok_or_else(|| invalid(JwtError::Claim("sub")))?;
        Ok(BearerCaller {
            identity,
            scopes: scopes_of(&claims),
            client_id,
            expires_unix: claims.get("exp").and_then(Value::as_u64).unwrap_or(now),
        })
    }

    /// The IdP's answer for an opaque token, from the cache while it is fresh.
    async fn introspect(
        &self,
        provider: &OidcProvider,
        token: &str,
        now: u64,
    ) -> Result<Option<Arc<Claims>>, BearerError> {
        // Keyed by IdP and token digest: the cache never holds a usable token.
        let mut hasher = openssl::sha::Sha256::new();
        hasher.update(provider.name().as_bytes());
        hasher.update(&[0]);
        hasher.update(token.as_bytes());
        let key = hasher.finish();
        if let Some((answer, deadline)) = self.introspected.get(&key).await {
            if deadline > now {
                return Ok(match answer {
                    Introspected::Active(claims) => Some(claims),
                    Introspected::Inactive => None,
                });
            }
        }
        let answer = provider
            .introspect(token)
            .await
            .map_err(|e| BearerError::Unavailable(provider.name().to_string(), e.to_string()))?;
        let (entry, claims) = match answer {
            Some(claims) => {
                let claims = Arc::new(claims);
                let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
                let deadline = exp.min(now + INTROSPECTION_CACHE_MAX.as_secs());
                (
                    (Introspected::Active(claims.clone()), deadline),
                    Some(claims),
                )
            }
            None => (
                (Introspected::Inactive, now + INACTIVE_CACHE.as_secs()),
                None,
            ),
        };
        self.introspected.insert(key, entry).await;
        Ok(claims)
    }
}

fn invalid(e: JwtError) -> BearerError {
    BearerError::Invalid(e.to_string())
}

/// Three dot-separated parts: a JWS compact serialisation (verified as one, never
/// introspected).
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// `scp` (Okta: an array; some servers a string) and `scope` (RFC 9068 / 7662: a
/// space-separated string).
fn scopes_of(claims: &Claims) -> Vec<Arc<str>> {
    let mut out: Vec<&str> = Vec::new();
    for name in ["scp", "scope"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split(' ').filter(|s| !s.is_empty())),
            Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out.sort_unstable();
    out.dedup();
    crate::intern::intern_all(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn reads_one_bearer_token_and_refuses_ambiguous_headers() {
        assert_eq!(token_of(&headers(&[])).unwrap(), None);
        assert_eq!(token_of(&headers(&["Basic dTpw"])).unwrap(), None);
        assert_eq!(
            token_of(&headers(&["Bearer abc.def-_~+/=="])).unwrap(),
            Some("abc.def-_~+/==")
        );
        assert_eq!(token_of(&headers(&["bearer abc"])).unwrap(), Some("abc"));
        for bad in [
            &["Bearer "][..],
            &["Bearer a b"],
            &["Bearer  abc"],
            &["Bearer a\"b"],
            &["Bearer =="],
            &["Bearer abc", "Bearer def"],
            &["Basic dTpw", "Bearer abc"],
            &["Bearer abc", "Basic dTpw"],
        ] {
            assert!(
                matches!(token_of(&headers(bad)), Err(BearerError::Malformed(_))),
                "{bad:?} was accepted"
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert!(token_of(&headers(&[&long])).is_err());
    }

    #[test]
    fn scopes_come_from_scp_arrays_and_scope_strings() {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "scp": ["orders:read", "profile"], "scope": "orders:write  orders:read"
        }))
        .unwrap();
        let scopes = scopes_of(&claims);
        let scopes: Vec<&str> = scopes.iter().map(|s| &**s).collect();
        assert_eq!(scopes, ["orders:read", "orders:write", "profile"]);
    }

    #[test]
    fn errors_follow_rfc_6750() {
        let e = BearerError::InsufficientScope(vec!["orders:write".into()]);
        assert_eq!(e.status(), 403);
        assert_eq!(
            e.challenge("orders").unwrap(),
            "Bearer realm=\"orders\", error=\"insufficient_scope\", scope=\"orders:write\""
        );
        let body: Value = serde_json::from_str(&e.body("r1")).unwrap();
        assert_eq!(body["error"], "insufficient_scope");
        assert_eq!(BearerError::Invalid("x".into()).status(), 401);
        assert_eq!(BearerError::Malformed("x").code(), "invalid_request");
    }
}
