//! OpenID Connect relying party: authorization code flow with PKCE, via the `openidconnect`
//! crate.
//!
//! Owns discovery (with retry), building the authorization redirect, exchanging the code,
//! verifying the ID token (signature by JWKS with one rate-limited re-fetch on an unknown key,
//! `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`), optional userinfo, and the RP-initiated logout
//! URL. It knows nothing of cookies or sessions.

use super::http::IdpHttpClient;
use super::jwt::{text_claim, Claims, Expect, JwtError};
use super::{error_chain, Identity};
use crate::config::{OidcIdpConfig, TokenAuth};
use crate::secret::Secret;
use crate::session::pending::StepUp;
use crate::session::SessionTokens;
use arc_swap::ArcSwapOption;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod, CoreGrantType,
    CoreIdToken, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::OAuth2TokenResponse as _;
use openidconnect::{
    AdditionalProviderMetadata, AuthType, AuthenticationFlow, AuthorizationCode,
    ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, EndSessionUrl, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKeySet, LogoutRequest, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadata, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Least time between two JWKS re-fetches triggered by unknown key ids (an attacker sending
/// tokens with random `kid`s must not turn the gateway into a JWKS flooder).
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// A kept access token is refreshed this long before it expires.
const ACCESS_TOKEN_MARGIN_MS: u64 = 60_000;

/// How old a back-channel logout token may be (its `iat`); its `jti` is remembered this long.
pub const LOGOUT_TOKEN_MAX_AGE: Duration = Duration::from_secs(600);

/// The event a back-channel logout token carries (Back-Channel Logout 1.0 §2.4).
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A verified back-channel logout token: whose sessions end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// The user (`sub`), when named.
    pub subject: Option<String>,
    /// The IdP session (`sid`), when named.
    pub sid: Option<String>,
    /// The token's id, counted once.
    pub jti: String,
}

/// Discovery metadata plus the non-core fields the gateway needs: where to log out, and where
/// to introspect opaque access tokens (RFC 8414 / RFC 7662).
#[derive(Clone, Debug, Deserialize, Serialize)]
struct LogoutMetadata {
    end_session_endpoint: Option<EndSessionUrl>,
    #[serde(default)]
    introspection_endpoint: Option<openidconnect::IntrospectionUrl>,
}
impl AdditionalProviderMetadata for LogoutMetadata {}

type Metadata = ProviderMetadata<
    LogoutMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type DiscoveredClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a login could not start or finish. The text is safe for logs: no codes or tokens.
#[derive(Debug, Error)]
pub enum LoginError {
    /// Discovery has not succeeded yet.
    #[error("identity provider not reachable yet (discovery pending)")]
    NotReady,
    /// Discovery or a JWKS fetch failed.
    #[error("discovery failed: {0}")]
    Discovery(String),
    /// The redirect URI could not be built.
    #[error("invalid redirect uri: {0}")]
    RedirectUri(String),
    /// The token endpoint refused the code (reused, expired, wrong PKCE verifier, ...).
    #[error("code exchange failed: {0}")]
    Exchange(String),
    /// The token endpoint could not be reached (connection refused, timeout, TLS).
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    /// The token endpoint's answer is not a token response (not JSON, or an ID token that
    /// is not a JWT or lacks a required claim).
    #[error("token response unreadable: {0}")]
    TokenResponse(String),
    /// The token response had no ID token.
    #[error("token response has no id_token")]
    NoIdToken,
    /// The ID token failed verification.
    #[error("id token rejected: {0}")]
    IdToken(String),
    /// The userinfo call failed or disagreed with the ID token.
    #[error("userinfo failed: {0}")]
    UserInfo(String),
}

impl LoginError {
    /// A fixed name for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            LoginError::NotReady => "not_ready",
            LoginError::Discovery(_) => "discovery",
            LoginError::RedirectUri(_) => "redirect_uri",
            LoginError::Exchange(_) => "code_exchange",
            LoginError::Unreachable(_) => "idp_unreachable",
            LoginError::TokenResponse(_) => "token_response",
            LoginError::NoIdToken => "no_id_token",
            LoginError::IdToken(_) => "id_token",
            LoginError::UserInfo(_) => "userinfo",
        }
    }
}

/// What the proxy needs to send the browser to the IdP and to remember meanwhile.
pub struct LoginStart {
    /// The authorization URL (302 target).
    pub url: String,
    /// Random `state`, also the pending login's key.
    pub state: String,
    /// Random `nonce` the ID token must carry.
    pub nonce: Secret,
    /// PKCE verifier for the code exchange.
    pub pkce_verifier: Secret,
}

/// The result of a finished login.
pub struct LoginDone {
    /// Who signed in.
    pub identity: Identity,
    /// The raw ID token, kept only as `id_token_hint` for logout.
    pub id_token: Secret,
    /// The IdP's session id (`sid`, OpenID Connect Front-/Back-Channel Logout), when sent.
    pub idp_session: Option<String>,
    /// The tokens to keep, when this IdP is configured for refresh.
    pub tokens: Option<SessionTokens>,
}

/// A refresh the IdP answered.
pub struct Refreshed {
    /// Who the user is now (groups and claims as the IdP says them today); `None` when the
    /// IdP sent no ID token (the claims stay as they were).
    pub identity: Option<Identity>,
    /// The tokens to keep from now on (a rotated refresh token replaces the old one).
    pub tokens: SessionTokens,
}

/// Why a refresh did not happen.
#[derive(Debug, Error)]
pub enum RefreshError {
    /// The IdP refused the grant (revoked, user deactivated, token reused): the session ends.
    #[error("refresh refused by the identity provider: {0}")]
    Refused(String),
    /// The IdP could not be reached, or answered with something unusable: try again later.
    #[error("refresh failed: {0}")]
    Unavailable(String),
}

struct Discovered {
    metadata: Metadata,
    client: DiscoveredClient,
}

/// One OpenID Provider, discovered lazily and shared by every request.
pub struct OidcProvider {
    name: String,
    config: OidcIdpConfig,
    http: IdpHttpClient,
    discovered: ArcSwapOption<Discovered>,
    /// The JWKS again, for tokens other than ID tokens (logout tokens, access tokens).
    jwt_keys: arc_swap::ArcSwap<super::jwt::JwtKeys>,
    last_jwks_fetch: Mutex<Option<Instant>>,
    clock: crate::clock::SharedClock,
    /// Whether the provider answers (watched in the background, marked by failed calls).
    pub health: super::health::Reachability,
}

impl OidcProvider {
    /// A provider that is not discovered yet.
    pub fn new(
        name: &str,
        config: OidcIdpConfig,
        http: IdpHttpClient,
        clock: crate::clock::SharedClock,
    ) -> Self {
        Self {
            name: name.to_string(),
            config,
            http,
            discovered: ArcSwapOption::empty(),
            jwt_keys: arc_swap::ArcSwap::from_pointee(super::jwt::JwtKeys::default()),
            last_jwks_fetch: Mutex::new(None),
            clock,
            health: super::health::Reachability::default(),
        }
    }

    /// One reachability check: does the discovery document answer 200?
    pub async fn probe(&self) -> Result<(), String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        match self.http.get("discovery", &url).await {
            Ok((200, _)) => Ok(()),
            Ok((status, _)) => Err(format!("discovery document answered HTTP {status}")),
            Err(e) => Err(error_chain(&e)),
        }
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Where the IdP sends the browser after logout, if configured.
    pub fn post_logout_redirect_uri(&self) -> Option<&str> {
        self.config.post_logout_redirect_uri.as_deref()
    }

    /// Has discovery succeeded?
    pub fn is_ready(&self) -> bool {
        self.discovered.load().is_some()
    }

    /// One discovery attempt: fetches `.well-known/openid-configuration` and the JWKS.
    pub async fn discover(&self) -> Result<(), LoginError> {
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| LoginError::Discovery(e.to_string()))?;
        let metadata = Metadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| LoginError::Discovery(error_chain(&e)))?;
        self.install(metadata);
        self.health.loaded();
        Ok(())
    }

    /// Discovers, retrying with exponential backoff (1 s to 60 s) until it succeeds.
    pub async fn discover_until_ready(&self) {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.discover().await {
                Ok(()) => {
                    tracing::info!(idp = %self.name, issuer = %self.config.issuer, "identity provider discovered");
                    return;
                }
                Err(e) => {
                    tracing::warn!(idp = %self.name, issuer = %self.config.issuer, error = %e, retry_in_s = delay.as_secs(), "identity provider discovery failed; protected apps answer 'sign-in unavailable' until it succeeds");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }

    fn install(&self, metadata: Metadata) {
        let mut client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(
                self.config.client_secret.expose().to_string(),
            )),
        );
        if self.config.token_auth == TokenAuth::ClientSecretPost {
            client = client.set_auth_type(AuthType::RequestBody);
        }
        let jwks = serde_json::to_value(metadata.jwks()).unwrap_or_default();
        self.jwt_keys
            .store(std::sync::Arc::new(super::jwt::JwtKeys::from_jwks(&jwks)));
        self.discovered
            .store(Some(std::sync::Arc::new(Discovered { metadata, client })));
    }

    /// Builds the authorization redirect with fresh `state`, `nonce` and PKCE (S256).
    pub fn begin_login(
        &self,
        redirect_uri: &str,
        step_up: Option<&StepUp>,
    ) -> Result<LoginStart, LoginError> {
        let discovered = self.discovered.load_full().ok_or(LoginError::NotReady)?;
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| LoginError::RedirectUri(e.to_string()))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = discovered
            .client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge)
            .set_redirect_uri(Cow::Owned(redirect));
        for scope in self.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        // A step-up asks for a fresh, stronger authentication (OpenID Connect Core §3.1.2.1).
        let mut step_params: Vec<(&str, String)> = Vec::new();
        if let Some(s) = step_up {
            step_params.push(("prompt", "login".to_string()));
            if !s.acr.is_empty() {
                step_params.push(("acr_values", s.acr.join(" ")));
            }
            // max_age also makes `auth_time` mandatory in the ID token; 0 = "just now".
            let age = s.max_age.map_or(0, |a| a.as_secs());
            step_params.push(("max_age", age.to_string()));
        }
        for (key, value) in &self.config.auth_params {
            if !step_params.iter().any(|(k, _)| k == key) {
                request = request.add_extra_param(key.as_str(), value.as_str());
            }
        }
        for (key, value) in step_params {
            request = request.add_extra_param(key, value);
        }
        let (url, state, nonce) = request.url();
        Ok(LoginStart {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: Secret::new(nonce.secret().clone()),
            pkce_verifier: Secret::new(verifier.secret().clone()),
        })
    }

    /// Exchanges the code and verifies the ID token against the pending login's nonce.
    pub async fn finish_login(
        &self,
        code: &str,
        redirect_uri: &str,
        pkce_verifier: &Secret,
        nonce: &Secret,
    ) -> Result<LoginDone, LoginError> {
        let discovered = self.discovered.load_full().ok_or(LoginError::NotReady)?;
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| LoginError::RedirectUri(e.to_string()))?;
        let token = discovered
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| LoginError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.expose().to_string()))
            .set_redirect_uri(Cow::Owned(redirect))
            .request_async(&self.http)
            .await
            .map_err(|e| match &e {
                openidconnect::RequestTokenError::Request(_) => {
                    let why = error_chain(&e);
                    self.health.reachable(false, Some(why.clone()));
                    LoginError::Unreachable(why)
                }
                // Not an answer a provider gives: a malformed ID token (no `exp`, no `sub`,
                // not a JWT) fails here, before any signature check.
                openidconnect::RequestTokenError::Parse(..) => {
                    LoginError::TokenResponse(error_chain(&e))
                }
                _ => LoginError::Exchange(error_chain(&e)),
            })?;
        let raw = token.id_token().ok_or(LoginError::NoIdToken)?.to_string();
        let mut identity = self.verify_id_token(&raw, nonce.expose()).await?;
        if self.config.userinfo {
            self.merge_userinfo(&discovered, token.access_token().secret(), &mut identity)
                .await?;
        }
        let idp_session = super::jwt::payload_of(&raw)
            .and_then(|claims| claims.get("sid")?.as_str().map(str::to_string))
            .filter(|sid| !sid.is_empty() && sid.len() <= 256);
        let tokens = self.config.refresh_interval.map(|interval| {
            self.tokens_to_keep(
                token.access_token().secret(),
                token.refresh_token().map(|r| r.secret().as_str()),
                token.expires_in(),
                None,
                interval,
            )
        });
        Ok(LoginDone {
            identity,
            id_token: Secret::new(raw),
            idp_session,
            tokens,
        })
    }

    /// The tokens a session keeps, and when its claims are next due: after the configured
    /// interval, or a minute before the access token expires, whichever is first.
    fn tokens_to_keep(
        &self,
        access: &str,
        refresh: Option<&str>,
        expires_in: Option<Duration>,
        previous_refresh: Option<&Secret>,
        interval: Duration,
    ) -> SessionTokens {
        let now = self.clock.now_ms();
        let access_expires_ms = expires_in.map(|e| now.saturating_add(crate::clock::millis(e)));
        let by_schedule = now.saturating_add(crate::clock::millis(interval));
        let before_expiry = access_expires_ms.map(|e| e.saturating_sub(ACCESS_TOKEN_MARGIN_MS));
        SessionTokens {
            refresh: refresh
                .map(Secret::new)
                .or_else(|| previous_refresh.cloned()),
            access: Secret::new(access),
            access_expires_ms,
            refresh_due_ms: before_expiry
                .map_or(by_schedule, |b| b.min(by_schedule).max(now + 1000)),
        }
    }

    /// Uses the session's refresh token: new tokens and, from the new ID token (verified like
    /// the first, with the same subject), the user's claims as the IdP says them now.
    pub async fn refresh(
        &self,
        tokens: &SessionTokens,
        subject: &str,
    ) -> Result<Refreshed, RefreshError> {
        let interval = self
            .config
            .refresh_interval
            .ok_or_else(|| RefreshError::Unavailable("refresh is off for this IdP".into()))?;
        let refresh_token = tokens
            .refresh
            .as_ref()
            .ok_or_else(|| RefreshError::Refused("no refresh token was issued".into()))?;
        let discovered = self
            .discovered
            .load_full()
            .ok_or_else(|| RefreshError::Unavailable("provider not discovered".into()))?;
        let token = discovered
            .client
            .exchange_refresh_token(&openidconnect::RefreshToken::new(
                refresh_token.expose().to_string(),
            ))
            .map_err(|e| RefreshError::Unavailable(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| match &e {
                openidconnect::RequestTokenError::ServerResponse(r) => {
                    RefreshError::Refused(r.error().to_string())
                }
                openidconnect::RequestTokenError::Request(_) => {
                    let why = error_chain(&e);
                    self.health.reachable(false, Some(why.clone()));
                    RefreshError::Unavailable(why)
                }
                _ => RefreshError::Unavailable(error_chain(&e)),
            })?;
        let identity = match token.id_token() {
            Some(id_token) => {
                let raw = id_token.to_string();
                self.verify_refreshed_id_token(&raw)
                    .await
                    .map_err(|e| RefreshError::Unavailable(e.to_string()))?;
                let identity = self
                    .identity_from(&raw)
                    .map_err(|e| RefreshError::Unavailable(e.to_string()))?;
                // OpenID Connect Core 12.2: the same user, or not this session's token.
                if identity.subject != subject {
                    return Err(RefreshError::Refused(
                        "the refreshed ID token names another subject".into(),
                    ));
                }
                Some(identity)
            }
            None => None,
        };
        Ok(Refreshed {
            identity,
            tokens: self.tokens_to_keep(
                token.access_token().secret(),
                token.refresh_token().map(|r| r.secret().as_str()),
                token.expires_in(),
                Some(refresh_token),
                interval,
            ),
        })
    }

    /// Verifies an ID token from a refresh: as at login, except for the nonce, which a
    /// refreshed token need not carry (OpenID Connect Core 12.2).
    async fn verify_refreshed_id_token(&self, raw: &str) -> Result<(), LoginError> {
        let token = CoreIdToken::from_str(raw)
            .map_err(|e| LoginError::IdToken(format!("not a JWT: {e}")))?;
        let check = |token: &CoreIdToken| -> Result<(), ClaimsVerificationError> {
            let Some(discovered) = self.discovered.load_full() else {
                return Err(ClaimsVerificationError::Other(
                    "provider not discovered".into(),
                ));
            };
            let skew = i64::try_from(self.config.clock_skew.as_secs()).unwrap_or(i64::MAX);
            let clock = self.clock.clone();
            let verifier = discovered
                .client
                .id_token_verifier()
                .set_time_fn(move || crate::clock::utc_now_shifted(&*clock, -skew));
            token
                .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                .map(|_| ())
        };
        match check(&token) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) if self.jwks_refetch_allowed() => {
                self.refetch_jwks().await?;
                check(&token)
            }
            other => other,
        }
        .map_err(|e| LoginError::IdToken(error_chain(&e)))
    }

    /// Verifies a raw ID token for this client and `nonce`; on a key id the JWKS does not
    /// hold, re-fetches the JWKS once (rate-limited) and tries again.
    pub async fn verify_id_token(&self, raw: &str, nonce: &str) -> Result<Identity, LoginError> {
        let token = CoreIdToken::from_str(raw)
            .map_err(|e| LoginError::IdToken(format!("not a JWT: {e}")))?;
        match self.verify_with_current_keys(&token, nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) if self.jwks_refetch_allowed() => {
                self.refetch_jwks().await?;
                self.verify_with_current_keys(&token, nonce)
            }
            other => other,
        }
        .map_err(|e| LoginError::IdToken(error_chain(&e)))?;
        self.identity_from(raw)
    }

    /// Every check [`OidcProvider::verify_id_token`] makes, run on a pasted ID token, each
    /// with its verdict; the nonce is left aside (there is no sign-in of this gateway to
    /// match), so the gateway's own verifier is run with the token's nonce. For `portcullis
    /// idp inspect`.
    pub async fn inspect_id_token(&self, raw: &str) -> super::inspect::Inspection {
        let mut report = super::inspect::Inspection::new("OpenID Connect ID token");
        let raw = raw.trim();
        let (Ok(header), Some(claims)) = (
            jsonwebtoken::decode_header(raw),
            super::jwt::payload_of(raw),
        ) else {
            report.fail("shape", "not a signed JWT (header.payload.signature)");
            return report;
        };
        report.pass("shape", "a signed JWT");
        report.said("alg", &format!("{:?}", header.alg));
        report.said("kid", header.kid.as_deref().unwrap_or("(none)"));
        report.said("typ", header.typ.as_deref().unwrap_or("(none)"));
        // Values that bind the token to one sign-in are not shown.
        const UNSHOWN: &[&str] = &["nonce", "at_hash", "c_hash", "s_hash"];
        for (name, value) in &claims {
            let shown = if UNSHOWN.contains(&name.as_str()) {
                "(redacted)".to_string()
            } else {
                match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            };
            report.said(name, &shown);
        }
        if !self.is_ready() {
            if let Err(e) = self.discover().await {
                report.fail("discovery", &e.to_string());
                return report;
            }
        }
        report.pass("discovery", &format!("issuer {}", self.config.issuer));
        let signature = match self.jwt_keys.load().verify(raw) {
            Err(JwtError::UnknownKey) if self.jwks_refetch_allowed() => {
                let _ = self.refetch_jwks().await;
                self.jwt_keys.load().verify(raw)
            }
            other => other,
        };
        report.check("signature (the IdP's JWKS)", signature.map(|_| ()));
        let issuer = text_claim(&claims, "iss").unwrap_or_default();
        report.check(
            "iss is the IdP's",
            if issuer == self.config.issuer {
                Ok(())
            } else {
                Err(JwtError::Issuer(self.config.issuer.clone()))
            },
        );
        let client = &self.config.client_id;
        let audience_named = match claims.get("aud") {
            Some(Value::String(aud)) => aud == client,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(client.as_str())),
            _ => false,
        };
        report.check(
            "aud names this client",
            if audience_named {
                Ok(())
            } else {
                Err(JwtError::Audience(client.clone()))
            },
        );
        let times = Expect {
            issuer,
            audiences: &[],
            now: self.clock.now_unix(),
            skew: self.config.clock_skew.as_secs(),
            require_exp: true,
            max_age: None,
        };
        report.check(
            "exp, nbf, iat (with the configured clock skew)",
            times.check(&claims),
        );
        report.note("nonce", "left aside: no sign-in of this gateway to match");
        let nonce = text_claim(&claims, "nonce").unwrap_or_default();
        let whole = match CoreIdToken::from_str(raw) {
            Ok(token) => self
                .verify_with_current_keys(&token, nonce)
                .map_err(|e| error_chain(&e)),
            Err(e) => Err(format!("not a JWT: {e}")),
        };
        report.check("the gateway's ID token verification (also azp)", whole);
        if let Ok(identity) = self.identity_from(raw) {
            report.said("→ user", &identity.display());
            report.said("→ groups", &identity.groups.join(", "));
        }
        report
    }

    fn verify_with_current_keys(
        &self,
        token: &CoreIdToken,
        nonce: &str,
    ) -> Result<(), ClaimsVerificationError> {
        let Some(discovered) = self.discovered.load_full() else {
            return Err(ClaimsVerificationError::Other(
                "provider not discovered".into(),
            ));
        };
        let skew = i64::try_from(self.config.clock_skew.as_secs()).unwrap_or(i64::MAX);
        let (exp_clock, iat_clock) = (self.clock.clone(), self.clock.clone());
        let verifier = discovered
            .client
            .id_token_verifier()
            // `exp` gets the configured leeway; `iat` may not lie further in the future.
            .set_time_fn(move || crate::clock::utc_now_shifted(&*exp_clock, -skew))
            .set_issue_time_verifier_fn(move |iat| {
                if iat > crate::clock::utc_now_shifted(&*iat_clock, skew) {
                    Err(format!("issued in the future ({iat})"))
                } else {
                    Ok(())
                }
            });
        let claims = token.claims(&verifier, &Nonce::new(nonce.to_string()))?;
        // `azp`: required when several audiences, and must name this client when present
        // (OpenID Connect Core 3.1.3.7 steps 4-5; the crate leaves this to the client).
        let client_id = &self.config.client_id;
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != client_id => {
                return Err(ClaimsVerificationError::InvalidAudience(format!(
                    "azp `{}` is not this client",
                    azp.as_str()
                )))
            }
            None if claims.audiences().len() > 1 => {
                return Err(ClaimsVerificationError::InvalidAudience(
                    "several audiences and no azp".into(),
                ))
            }
            _ => {}
        }
        Ok(())
    }

    fn jwks_refetch_allowed(&self) -> bool {
        let Ok(mut last) = self.last_jwks_fetch.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < JWKS_REFETCH_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    async fn refetch_jwks(&self) -> Result<(), LoginError> {
        let discovered = self.discovered.load_full().ok_or(LoginError::NotReady)?;
        let jwks = JsonWebKeySet::fetch_async(discovered.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| LoginError::Discovery(format!("jwks: {}", error_chain(&e))))?;
        tracing::info!(idp = %self.name, keys = jwks.keys().len(), "re-fetched JWKS after an unknown key id");
        self.install(discovered.metadata.clone().set_jwks(jwks));
        Ok(())
    }

    /// Reads the user's attributes from an already verified token's payload.
    fn identity_from(&self, raw: &str) -> Result<Identity, LoginError> {
        let claims = super::jwt::payload_of(raw)
            .ok_or_else(|| LoginError::IdToken("unreadable payload".into()))?;
        let mut identity = Identity {
            idp: crate::intern::intern(&self.name),
            ..Identity::default()
        };
        apply_claims(&mut identity, &claims, &self.config, true);
        if identity.subject.is_empty() {
            return Err(LoginError::IdToken("no sub claim".into()));
        }
        Ok(identity)
    }

    async fn merge_userinfo(
        &self,
        discovered: &Discovered,
        access_token: &str,
        identity: &mut Identity,
    ) -> Result<(), LoginError> {
        let Some(url) = discovered.metadata.userinfo_endpoint() else {
            return Err(LoginError::UserInfo(
                "provider has no userinfo endpoint".into(),
            ));
        };
        let request = http::Request::builder()
            .uri(url.as_str())
            .header("Authorization", format!("Bearer {access_token}"))
            .header("Accept", "application/json")
            .body(Vec::new())
            .map_err(|e| LoginError::UserInfo(e.to_string()))?;
        let response = self
            .http
            .call_as("userinfo", request)
            .await
            .map_err(|e| LoginError::UserInfo(e.to_string()))?;
        if !response.status().is_success() {
            return Err(LoginError::UserInfo(format!(
                "status {}",
                response.status()
            )));
        }
        let claims: serde_json::Map<String, Value> = serde_json::from_slice(response.body())
            .map_err(|_| LoginError::UserInfo("response is not a JSON object".into()))?;
        // OpenID Connect Core 5.3.2: the userinfo `sub` must match the ID token's.
        if claims.get("sub").and_then(Value::as_str) != Some(identity.subject.as_str()) {
            return Err(LoginError::UserInfo("sub differs from the ID token".into()));
        }
        apply_claims(identity, &claims, &self.config, false);
        Ok(())
    }

    /// Verifies a signed JWT from this IdP against its JWKS (re-fetched once, rate-limited,
    /// for a key id it does not hold), returning the header's `typ` and the claims.
    pub async fn verify_jwt(&self, raw: &str) -> Result<(Option<String>, Claims), JwtError> {
        match self.jwt_keys.load().verify(raw) {
            Err(JwtError::UnknownKey) if self.jwks_refetch_allowed() => {
                if let Err(e) = self.refetch_jwks().await {
                    tracing::warn!(idp = %self.name, error = %e, "JWKS re-fetch failed");
                }
                self.jwt_keys.load().verify(raw)
            }
            other => other,
        }
    }

    /// Verifies an OpenID Connect Back-Channel Logout token (§2.6): signed by this IdP, `iss`
    /// this issuer, `aud` this client, `iat` recent and `exp` not passed, the back-channel
    /// logout event present, no `nonce`, a `jti`, and `sub` and/or `sid`.
    pub async fn verify_logout_token(&self, raw: &str) -> Result<LogoutToken, JwtError> {
        let (typ, claims) = self.verify_jwt(raw).await?;
        // Explicit typing (§2.4) when the IdP uses it; an ID token's `JWT` is told apart by
        // the checks below.
        if typ.as_deref().is_some_and(|t| {
            !t.eq_ignore_ascii_case("logout+jwt") && !t.eq_ignore_ascii_case("jwt")
        }) {
            return Err(JwtError::Type("logout+jwt"));
        }
        let audiences = [self.config.client_id.clone()];
        Expect {
            issuer: &self.config.issuer,
            audiences: &audiences,
            now: self.clock.now_unix(),
            skew: self.config.clock_skew.as_secs(),
            require_exp: true,
            max_age: Some(LOGOUT_TOKEN_MAX_AGE.as_secs()),
        }
        .check(&claims)?;
        let event = claims
            .get("events")
            .and_then(Value::as_object)
            .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT));
        if !event.is_some_and(Value::is_object) {
            return Err(JwtError::Claim("events"));
        }
        if claims.contains_key("nonce") {
            return Err(JwtError::Claim("nonce"));
        }
        let jti = text_claim(&claims, "jti").ok_or(JwtError::Claim("jti"))?;
        let subject = text_claim(&claims, "sub").map(str::to_string);
        let sid = text_claim(&claims, "sid").map(str::to_string);
        if subject.is_none() && sid.is_none() {
            return Err(JwtError::Claim("sub"));
        }
        Ok(LogoutToken {
            subject,
            sid,
            jti: jti.to_string(),
        })
    }

    /// Who an access token's verified claims (JWT payload or introspection answer) say the
    /// caller is: `sub`, email, name, groups and kept claims, as for an ID token.
    pub fn identity_from_claims(&self, claims: &Claims) -> Option<Identity> {
        let mut identity = Identity {
            idp: crate::intern::intern(&self.name),
            ..Identity::default()
        };
        apply_claims(&mut identity, claims, &self.config, true);
        (!identity.subject.is_empty()).then_some(identity)
    }

    /// Asks the IdP's introspection endpoint (RFC 7662) about an opaque token, as this
    /// client. `Ok(None)`: the IdP says the token is not active.
    pub async fn introspect(&self, token: &str) -> Result<Option<Claims>, LoginError> {
        let discovered = self.discovered.load_full().ok_or(LoginError::NotReady)?;
        let Some(url) = discovered
            .metadata
            .additional_metadata()
            .introspection_endpoint
            .as_ref()
        else {
            return Err(LoginError::Discovery(
                "provider publishes no introspection_endpoint".into(),
            ));
        };
        let mut form: Vec<(&str, &str)> =
            vec![("token", token), ("token_type_hint", "access_token")];
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(url.as_str())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json");
        match self.config.token_auth {
            TokenAuth::ClientSecretBasic => {
                // RFC 6749 §2.3.1: each part form-encoded before Basic.
                let encode = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let pair = format!(
                    "{}:{}",
                    encode(&self.config.client_id),
                    encode(self.config.client_secret.expose())
                );
                request = request.header(
                    "Authorization",
                    format!(
                        "Basic {}",
                        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair)
                    ),
                );
            }
            TokenAuth::ClientSecretPost => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", self.config.client_secret.expose()));
            }
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = request
            .body(body.into_bytes())
            .map_err(|e| LoginError::Discovery(e.to_string()))?;
        let response = self
            .http
            .call_as("introspection", request)
            .await
            .map_err(|e| {
                let why = format!("introspection: {}", error_chain(&e));
                self.health.reachable(false, Some(why.clone()));
                LoginError::Discovery(why)
            })?;
        if !response.status().is_success() {
            return Err(LoginError::Discovery(format!(
                "introspection answered {}",
                response.status()
            )));
        }
        let claims: Claims = serde_json::from_slice(response.body()).map_err(|_| {
            LoginError::Discovery("introspection answer is not a JSON object".into())
        })?;
        Ok(claims
            .get("active")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .then_some(claims))
    }

    /// How often sessions' claims are re-read, when refresh is on.
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.config.refresh_interval
    }

    /// Tolerated clock difference with the IdP.
    pub fn clock_skew(&self) -> Duration {
        self.config.clock_skew
    }

    /// The configured client id.
    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    /// The IdP's logout URL for RP-initiated logout, when it has one.
    pub fn logout_url(
        &self,
        id_token: Option<&Secret>,
        post_logout_redirect: &str,
    ) -> Option<String> {
        let discovered = self.discovered.load_full()?;
        let endpoint = discovered
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let mut request = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.config.client_id.clone()));
        if let Some(token) = id_token.and_then(|t| CoreIdToken::from_str(t.expose()).ok()) {
            request = request.set_id_token_hint(&token);
        }
        if let Ok(uri) = PostLogoutRedirectUrl::new(post_logout_redirect.to_string()) {
            request = request.set_post_logout_redirect_uri(uri);
        }
        Some(request.http_get_url().to_string())
    }
}

/// Copies standard and configured claims; `overwrite = false` only fills gaps (userinfo).
fn apply_claims(
    identity: &mut Identity,
    claims: &serde_json::Map<String, Value>,
    config: &OidcIdpConfig,
    overwrite: bool,
) {
    let text = |key: &str| claims.get(key).and_then(Value::as_str).map(str::to_string);
    if overwrite {
        identity.subject = text("sub").unwrap_or_default();
        identity.acr = text("acr").map(|a| crate::intern::intern(&a));
        identity.amr = crate::intern::intern_all(strings(claims.get("amr")));
        identity.auth_time = claims.get("auth_time").and_then(Value::as_u64);
    }
    // An address the IdP marks unverified says nothing about who the user is.
    let verified = claims.get("email_verified").and_then(Value::as_bool) != Some(false);
    if overwrite || identity.email.is_none() {
        if let Some(email) = text("email").filter(|_| verified) {
            identity.email = Some(email);
        }
    }
    if overwrite || identity.name.is_none() {
        if let Some(name) = text("name") {
            identity.name = Some(name);
        }
    }
    if overwrite || identity.groups.is_empty() {
        let groups = strings(claims.get(config.groups_claim.as_str()));
        if !groups.is_empty() {
            identity.groups = crate::intern::intern_all(groups);
        }
    }
    for name in &config.extra_claims {
        if identity.claims.iter().any(|(n, _)| n == name) {
            continue;
        }
        let values = strings(claims.get(name.as_str()));
        if !values.is_empty() {
            identity.claims.push((name.clone(), values));
        }
    }
}

/// A claim as a list of strings: a string, an array of scalars, or a scalar.
fn strings(value: Option<&Value>) -> Vec<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
        Some(v) => scalar(v).into_iter().collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(groups_claim: &str, extra: &[&str]) -> OidcIdpConfig {
        OidcIdpConfig {
            issuer: "https://idp.example".into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
            scopes: vec!["openid".into()],
            auth_params: vec![],
            token_auth: TokenAuth::ClientSecretBasic,
            userinfo: false,
            groups_claim: groups_claim.into(),
            extra_claims: extra.iter().map(|c| c.to_string()).collect(),
            clock_skew: std::time::Duration::from_secs(60),
            refresh_interval: None,
            allow_insecure_issuer: false,
            post_logout_redirect_uri: None,
            ca_pem: None,
        }
    }

    fn claims(json: serde_json::Value) -> serde_json::Map<String, Value> {
        json.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn claims_map_to_the_identity_with_a_configurable_groups_claim() {
        let token = claims(serde_json::json!({
            "sub": "00u1", "email": "ana@corp.example", "name": "Ana",
            "groups": ["ignored"], "https://corp.example/roles": ["Finance", "Staff"],
            "acr": "mfa", "amr": ["pwd", "otp"], "auth_time": 1800000000u64,
            "department": "Payroll", "level": 3
        }));
        let mut who = Identity::default();
        apply_claims(
            &mut who,
            &token,
            &config("https://corp.example/roles", &["department", "level"]),
            true,
        );
        assert_eq!(who.subject, "00u1");
        assert_eq!(
            who.groups,
            [
                std::sync::Arc::<str>::from("Finance"),
                std::sync::Arc::<str>::from("Staff")
            ]
        );
        assert_eq!(
            who.amr,
            [
                std::sync::Arc::<str>::from("pwd"),
                std::sync::Arc::<str>::from("otp")
            ]
        );
        assert_eq!(who.auth_time, Some(1_800_000_000));
        assert_eq!(
            who.claims,
            vec![
                ("department".to_string(), vec!["Payroll".to_string()]),
                ("level".to_string(), vec!["3".to_string()])
            ]
        );
    }

    #[test]
    fn unverified_email_is_dropped_and_userinfo_only_fills_gaps() {
        let token = claims(
            serde_json::json!({ "sub": "u", "email": "x@corp.example", "email_verified": false }),
        );
        let mut who = Identity::default();
        apply_claims(&mut who, &token, &config("groups", &[]), true);
        assert_eq!(who.email, None, "unverified email must not be trusted");
        let userinfo =
            claims(serde_json::json!({ "sub": "u", "name": "From Userinfo", "groups": ["g"] }));
        who.name = Some("From Token".into());
        apply_claims(&mut who, &userinfo, &config("groups", &[]), false);
        assert_eq!(who.name.as_deref(), Some("From Token"));
        assert_eq!(who.groups, [std::sync::Arc::<str>::from("g")]);
    }
}
