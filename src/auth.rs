//! Sign-in state shared by every request and kept across reloads: sessions, logins in
//! progress, the cookie key and the identity providers.
//!
//! Owns the three login steps as plain async functions — look up the browser's session, start
//! a login, finish it at the callback — plus logout. They take and return plain values
//! (cookies, URLs, typed errors); the proxy turns those into HTTP responses.

use crate::clock::SharedClock;
use crate::config::{GatewayConfig, IdpConfig, IdpProtocol, SessionSettings};
use crate::idp::http::{HttpError, IdpHttpClient};
use crate::idp::oidc::{LoginError, OidcProvider};
use crate::idp::saml::{IdpLogout, SamlError, SamlProvider};
use crate::idp::Identity;
use crate::secret::Secret;
use crate::session::cookies::{
    clear_cookie, clear_id_token_cookie, find_cookie, id_token_cookie_fits, id_token_cookie_name,
    is_gateway_cookie, login_cookie_name, session_cookie_name, set_cookie, set_cross_site_cookie,
    set_id_token_cookie, CookieCodec,
};
use crate::session::pending::{PendingFlow, PendingLogin, PendingLogins, StepUp};
use crate::session::store::{StoreError, Stores};
use crate::session::{
    Expired, LogoutHint, NotValid, Scope, Session, SessionId, SessionStore, SignInFamily,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Path of the OpenID Connect redirect URI on every app host.
pub const CALLBACK_PATH: &str = "/.portcullis/oidc/callback";
/// Path that starts a login explicitly (`?return_to=/path`).
pub const LOGIN_PATH: &str = "/.portcullis/login";
/// Path that ends the session here and at the IdP.
pub const LOGOUT_PATH: &str = "/.portcullis/logout";
/// Who the browser is signed in as, as JSON (for single-page apps).
pub const USERINFO_PATH: &str = "/.portcullis/userinfo";
/// The gateway's "you are signed out" page (default post-logout redirect).
pub const LOGGED_OUT_PATH: &str = "/.portcullis/logged-out";

/// The scheme and authority the browser used, which the redirect URI must repeat.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Came over TLS.
    pub secure: bool,
    /// `host[:port]` as the browser sent it (validated).
    pub authority: String,
}

impl Origin {
    /// `https://host[:port]` or `http://...`.
    pub fn base(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

/// The result of looking for the browser's session.
pub enum SessionLookup {
    /// No session cookie.
    None,
    /// A live session, valid here.
    Found {
        /// Its id (for values bound to the session, such as form tokens).
        id: SessionId,
        /// The session.
        session: Arc<Session>,
    },
    /// A live session that does not count here — another host's, another IdP's, or past this
    /// app's stricter limits — and is left as it is: the request is treated as anonymous.
    NotHere(&'static str),
    /// The cookie was present but names no usable session (tampered, unknown, logged out).
    Rejected(&'static str),
    /// The session existed but its time is up; it has been removed.
    Expired(Arc<Session>, Expired),
    /// The session store could not say (Redis down): the request is refused with a 503 page,
    /// never treated as anonymous.
    Unavailable(StoreError),
}

/// Why a callback did not sign the user in. Safe to log: no codes, states or tokens.
#[derive(Debug, Error)]
pub enum CallbackError {
    /// A required query parameter is missing.
    #[error("callback without `{0}`")]
    Missing(&'static str),
    /// The IdP answered with an OAuth error.
    #[error("identity provider returned error `{0}`")]
    Idp(String),
    /// No login cookie for this state in this browser (login CSRF, or cookies blocked).
    #[error("state is not bound to this browser")]
    NotBound,
    /// The state is unknown, already used, or its login timed out.
    #[error("unknown, reused or expired state")]
    UnknownState,
    /// The callback arrived on another host than the login started on.
    #[error("callback on another host than the login")]
    WrongHost,
    /// The IdP that started the login is no longer configured.
    #[error("identity provider `{0}` is not configured")]
    UnknownIdp(String),
    /// The `iss` parameter names another issuer (mix-up attack, RFC 9207).
    #[error("iss parameter does not match the issuer")]
    IssuerMismatch,
    /// Code exchange or token verification failed.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The SAML response was refused.
    #[error("SAML: {0}")]
    Saml(#[from] SamlError),
    /// The step-up sign-in did not bring what the rule asked for.
    #[error("step-up refused: {0}")]
    StepUp(#[from] StepUpRefused),
    /// The login was started for another protocol than the endpoint it came back to.
    #[error("login came back on the wrong protocol endpoint")]
    WrongProtocol,
    /// No random bytes for a session id.
    #[error("could not create a session id")]
    NoRandom,
    /// The session store could not keep or give back the login (Redis down).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This authorization code was presented before (here or at another node).
    #[error("authorization code already used")]
    CodeReplayed,
}

impl CallbackError {
    /// A fixed name for metrics (`portcullis_logins_total{reason}`).
    pub fn code(&self) -> &'static str {
        match self {
            CallbackError::Missing(_) => "missing_parameter",
            CallbackError::Idp(_) => "idp_error",
            CallbackError::NotBound => "not_bound_to_browser",
            CallbackError::UnknownState => "unknown_state",
            CallbackError::WrongHost => "wrong_host",
            CallbackError::UnknownIdp(_) => "unknown_idp",
            CallbackError::IssuerMismatch => "issuer_mismatch",
            CallbackError::Login(e) => e.code(),
            CallbackError::Saml(e) => e.code(),
            CallbackError::StepUp(_) => "step_up_refused",
            CallbackError::WrongProtocol => "wrong_protocol",
            CallbackError::NoRandom => "internal",
            CallbackError::Store(_) => "store_unavailable",
            CallbackError::CodeReplayed => "code_replayed",
        }
    }
}

/// A finished login: where to send the browser and which cookies to set.
pub struct SignedIn {
    /// The new session.
    pub session: Arc<Session>,
    /// Same-host path to return to.
    pub return_to: String,
    /// `Set-Cookie` values (new session, cleared login cookie).
    pub cookies: Vec<String>,
    /// The require rule this login stepped up for, if it was a step-up.
    pub stepped_up_for: Option<String>,
}

/// One identity provider, whichever protocol it speaks.
#[derive(Clone)]
pub enum Provider {
    /// OpenID Connect.
    Oidc(Arc<OidcProvider>),
    /// SAML 2.0.
    Saml(Arc<SamlProvider>),
}

impl Provider {
    /// The configured name.
    pub fn name(&self) -> &str {
        match self {
            Provider::Oidc(p) => p.name(),
            Provider::Saml(p) => p.name(),
        }
    }

    /// Discovered / metadata loaded, and answering: a login may be sent there now.
    pub fn is_available(&self) -> bool {
        let loaded = match self {
            Provider::Oidc(p) => p.is_ready(),
            Provider::Saml(p) => p.is_ready(),
        };
        loaded && self.health().is_reachable()
    }

    /// What the gateway knows about reaching it.
    pub fn health(&self) -> &crate::idp::health::Reachability {
        match self {
            Provider::Oidc(p) => &p.health,
            Provider::Saml(p) => &p.health,
        }
    }

    /// One reachability check.
    pub async fn probe(&self) -> Result<(), String> {
        match self {
            Provider::Oidc(p) => p.probe().await,
            Provider::Saml(p) => p.probe().await,
        }
    }

    /// `oidc` or `saml`.
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::Oidc(_) => "oidc",
            Provider::Saml(_) => "saml",
        }
    }

    /// Runs discovery or metadata loading until ready (SAML: and refreshes after).
    pub async fn load_until_ready(&self) {
        match self {
            Provider::Oidc(p) => p.discover_until_ready().await,
            Provider::Saml(p) => p.load_until_ready().await,
        }
    }
}

/// What an app host allows for IdP-initiated SAML logins (asked only for unsolicited ones).
pub struct UnsolicitedTarget {
    /// The app on this host.
    pub app: String,
    /// Its IdP.
    pub idp: String,
    /// Whether the app's policy allows IdP-initiated login.
    pub allowed: bool,
    /// Where such a login lands (`/`, or a deep link the app's policy lets the RelayState
    /// name).
    pub landing: String,
}

/// What a logout ended and where the browser goes next.
pub struct LoggedOut {
    /// The browser's own session, if it had one.
    pub session: Option<Arc<Session>>,
    /// The other sessions of the same sign-in (other app hosts), ended with it.
    pub family: Vec<Arc<Session>>,
    /// The store could not end them (Redis down): the cookies are cleared, but the session
    /// may still be live on the server, and the user is told so.
    pub incomplete: Option<StoreError>,
    /// The IdP's logout URL, or the signed-out page.
    pub location: String,
    /// `Set-Cookie` values clearing the gateway's cookies.
    pub cookies: Vec<String>,
}

/// A started login.
pub struct LoginRedirect {
    /// Where the browser goes: the authorization URL, or a form posted to the IdP.
    pub to_idp: crate::idp::ToIdp,
    /// `Set-Cookie` binding this login to the browser.
    pub cookie: String,
}

/// Shared sign-in state.
pub struct Auth {
    /// Signed-in sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Every store (sessions, one-time records, replay caches, locks).
    pub stores: Stores,
    pending: PendingLogins,
    cookies: CookieCodec,
    providers: HashMap<String, Provider>,
    settings: SessionSettings,
    idp_configs: Vec<IdpConfig>,
    clock: SharedClock,
    /// Checks API callers' access tokens (its introspection cache outlives reloads).
    pub bearer: crate::bearer::BearerVerifier,
    /// Sources of Universal Logout requests and security events.
    pub receivers: crate::signals::receivers::Receivers,
    /// Directories users are looked up in at sign-in, by the IdP they sign in with.
    directories: HashMap<String, Arc<crate::directory::Directory>>,
}

/// Building the shared sign-in state failed.
#[derive(Debug, Error)]
pub enum AuthError {
    /// The IdP HTTP client could not be created.
    #[error("cannot create the identity provider HTTP client: {0}")]
    Http(#[from] HttpError),
    /// A SAML IdP could not be set up (metadata, keys).
    #[error("SAML IdP `{0}`: {1}")]
    Saml(String, SamlError),
    /// The session store could not be set up.
    #[error("session store: {0}")]
    Store(#[from] StoreError),
}

/// The back-channel client for one IdP, with its CA and its `timeout` (connecting gets at
/// most 5 s of it).
fn idp_http_client(idp: &IdpConfig) -> Result<IdpHttpClient, HttpError> {
    let ca = match &idp.protocol {
        IdpProtocol::Oidc(o) => o.ca_pem.as_deref(),
        IdpProtocol::Saml(s) => s.ca_pem.as_deref(),
    };
    IdpHttpClient::new(
        &idp.name,
        idp.timeout.min(Duration::from_secs(5)),
        idp.timeout,
        ca,
    )
}

impl Auth {
    /// Sign-in state for this configuration (providers start undiscovered), keeping time by
    /// `clock`.
    pub fn new(config: &GatewayConfig, clock: SharedClock) -> Result<Self, AuthError> {
        let cookies = CookieCodec::new(config.sessions.cookie_key.as_ref());
        let stores = Stores::for_settings(&config.sessions, &cookies, clock.clone())?;
        let mut providers = HashMap::new();
        for idp in &config.idps {
            let http = idp_http_client(idp)?;
            let provider = match &idp.protocol {
                IdpProtocol::Oidc(o) => Provider::Oidc(Arc::new(OidcProvider::new(
                    &idp.name,
                    o.clone(),
                    http,
                    clock.clone(),
                ))),
                IdpProtocol::Saml(s) => Provider::Saml(Arc::new(
                    SamlProvider::new(&idp.name, s.clone(), http, clock.clone(), &stores)
                        .map_err(|e| AuthError::Saml(idp.name.clone(), e))?,
                )),
            };
            providers.insert(idp.name.clone(), provider);
        }
        let receivers = crate::signals::receivers::Receivers::new(
            &config.idps,
            |name| match providers.get(name) {
                Some(Provider::Oidc(o)) => Some(o.clone()),
                _ => None,
            },
            |name| match providers.get(name) {
                Some(Provider::Saml(s)) => s.idp_entity_id(),
                _ => None,
            },
            |idp| idp_http_client(idp).ok(),
        );
        Ok(Self {
            sessions: stores.sessions.clone(),
            pending: PendingLogins::new(
                stores.one_time.clone(),
                config.sessions.login_timeout,
                clock.clone(),
            ),
            stores,
            cookies,
            providers,
            settings: config.sessions.clone(),
            idp_configs: config.idps.clone(),
            clock,
            bearer: crate::bearer::BearerVerifier::new(),
            receivers,
            directories: config
                .directories
                .iter()
                .flat_map(|d| {
                    let directory = Arc::new(crate::directory::Directory::new(d.clone()));
                    d.idps
                        .iter()
                        .map(move |idp| (idp.clone(), directory.clone()))
                })
                .collect(),
        })
    }

    /// The directory users of IdP `idp` are looked up in, if any.
    pub fn directory(&self, idp: &str) -> Option<&Arc<crate::directory::Directory>> {
        self.directories.get(idp)
    }

    /// The keys the store seals with (derived from the cookie key).
    pub fn store_keys(&self) -> Option<crate::session::seal::StoreKeys> {
        crate::session::seal::StoreKeys::from_codec(&self.cookies)
    }

    /// The clock sessions, logins and token checks are reckoned by.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Settings this state was built with (a reload keeps them; see `reload`).
    pub fn settings(&self) -> (&SessionSettings, &[IdpConfig]) {
        (&self.settings, &self.idp_configs)
    }

    /// The provider called `name`.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    /// The SAML provider called `name`, if it is one.
    pub fn saml_provider(&self, name: &str) -> Option<&Arc<SamlProvider>> {
        match self.providers.get(name)? {
            Provider::Saml(p) => Some(p),
            Provider::Oidc(_) => None,
        }
    }

    /// Every provider (for discovery).
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values()
    }

    /// How often the provider called `name` is checked while it answers.
    pub fn health_check_interval(&self, name: &str) -> Duration {
        self.idp_configs
            .iter()
            .find(|i| i.name == name)
            .map_or(crate::config::idp::DEFAULT_HEALTH_CHECK_INTERVAL, |i| {
                i.health_check_interval
            })
    }

    /// The browser's session for an app in `scope` (this host, the app's IdP), checked against
    /// the app's idle and absolute limits. `cookie_headers` are the request's `Cookie` headers.
    ///
    /// A session is valid only on the host its cookie was issued for and only at apps that
    /// sign in with the IdP that proved it: a cookie carried by hand to another host, or to an
    /// app that trusts another IdP, counts as no session there. Apps sharing a host (path
    /// prefixes) and an IdP share its session, each applying its own limits and rules.
    pub async fn lookup<'a>(
        &self,
        cookie_headers: impl Iterator<Item = &'a http::HeaderValue>,
        secure: bool,
        scope: Scope<'_>,
        idle: Duration,
        absolute: Duration,
    ) -> SessionLookup {
        let name = session_cookie_name(secure);
        let Some(sealed) = find_cookie(cookie_headers, name) else {
            return SessionLookup::None;
        };
        let Some(id) = self
            .cookies
            .open(name, sealed)
            .and_then(|text| SessionId::decode(&text))
        else {
            return SessionLookup::Rejected(
                "session cookie failed authentication (tampered or from another key)",
            );
        };
        let session = match self.sessions.get(&id).await {
            Ok(Some(session)) => session,
            Ok(None) => {
                return SessionLookup::Rejected(
                    "session cookie names no live session (expired or logged out)",
                )
            }
            Err(e) => return SessionLookup::Unavailable(e),
        };
        if !session.is_scoped_to(scope) {
            return SessionLookup::NotHere(if *session.identity.idp != *scope.idp {
                "the session was signed in through another identity provider than this app's"
            } else {
                "the session belongs to another host"
            });
        }
        let (seen_before, now) = (session.last_seen_ms(), self.clock.now_ms());
        match session.touch(now, idle, absolute) {
            Ok(()) => {
                let recorded = if self.sessions.records_uses() {
                    self.sessions
                        .record_use(&id, &session, seen_before, now)
                        .await
                } else {
                    Ok(())
                };
                if let Err(e) = recorded {
                    // The session is valid; only its last use went unrecorded this time.
                    tracing::warn!(error = %e, "session use not recorded");
                }
                SessionLookup::Found { id, session }
            }
            Err(NotValid::TooOldHere(_)) => {
                SessionLookup::NotHere("the session is older than this app's limits allow")
            }
            Err(NotValid::Ended(why)) => {
                if let Err(e) = self.sessions.remove(&id).await {
                    tracing::warn!(error = %e, "expired session not removed (the store lets it lapse)");
                }
                SessionLookup::Expired(session, why)
            }
        }
    }

    /// Starts a login: a pending record keyed by a fresh state (OIDC `state`, SAML
    /// `RelayState`), and a cookie binding it to this browser.
    pub async fn start_login(
        &self,
        provider: &Provider,
        app: &str,
        origin: &Origin,
        return_to: &str,
        step_up: Option<StepUp>,
    ) -> Result<LoginRedirect, CallbackError> {
        let (state, to_idp, flow) = match provider {
            Provider::Oidc(p) => {
                let redirect_uri = format!("{}{CALLBACK_PATH}", origin.base());
                let start = p.begin_login(&redirect_uri, step_up.as_ref())?;
                let flow = PendingFlow::Oidc {
                    redirect_uri,
                    nonce: start.nonce,
                    pkce_verifier: start.pkce_verifier,
                };
                (start.state, crate::idp::ToIdp::Redirect(start.url), flow)
            }
            Provider::Saml(p) => {
                let relay = random_key().ok_or(CallbackError::NoRandom)?;
                let request =
                    p.begin_login(&p.endpoints(&origin.base()), &relay, step_up.as_ref())?;
                let flow = PendingFlow::Saml {
                    request_id: request.request_id,
                };
                (relay, request.to_idp, flow)
            }
        };
        let name = login_cookie_name(&state, origin.secure);
        let sealed = self
            .cookies
            .seal(&name, &state)
            .ok_or(CallbackError::NoRandom)?;
        let cookie = match provider {
            // The IdP comes back with a cross-site POST, which SameSite=Lax cookies miss.
            Provider::Saml(_) => {
                set_cross_site_cookie(&name, &sealed, origin.secure, self.settings.login_timeout)
            }
            Provider::Oidc(_) => set_cookie(
                &name,
                &sealed,
                origin.secure,
                Some(self.settings.login_timeout),
            ),
        };
        self.pending
            .insert(
                &state,
                &PendingLogin {
                    idp: provider.name().to_string(),
                    app: app.to_string(),
                    host: origin.authority.clone(),
                    return_to: return_to.to_string(),
                    flow,
                    step_up,
                },
            )
            .await?;
        Ok(LoginRedirect { to_idp, cookie })
    }

    /// Is this browser holding the login cookie for `state`?
    fn bound(&self, state: &str, cookies: &[(String, String)], secure: bool) -> bool {
        let cookie_name = login_cookie_name(state, secure);
        cookies
            .iter()
            .filter(|(n, _)| *n == cookie_name)
            .any(|(_, sealed)| self.cookies.open(&cookie_name, sealed).as_deref() == Some(state))
    }

    /// Ends the session the browser's cookie names (a step-up replaces it with a new one, so
    /// the weaker session cannot be replayed) and returns it.
    async fn end_session_named_in(
        &self,
        cookies: &[(String, String)],
        secure: bool,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let name = session_cookie_name(secure);
        let Some(id) = cookies
            .iter()
            .filter(|(n, _)| *n == name)
            .find_map(|(_, sealed)| self.cookies.open(name, sealed))
            .and_then(|text| SessionId::decode(&text))
        else {
            return Ok(None);
        };
        self.sessions.remove(&id).await
    }

    /// The family of a finished login: a step-up stays in the family of the session it
    /// replaces (the same IdP sign-in, authenticated again); otherwise the IdP's session id or
    /// the authentication time decides.
    async fn family_for(
        &self,
        identity: &Identity,
        idp_session: Option<&str>,
        authenticated_ms: Option<u64>,
        step_up: bool,
        cookies: &[(String, String)],
        secure: bool,
    ) -> Result<SignInFamily, CallbackError> {
        if step_up {
            if let Some(replaced) = self.end_session_named_in(cookies, secure).await? {
                return Ok(replaced.family);
            }
        }
        SignInFamily::of(identity, idp_session, authenticated_ms).ok_or(CallbackError::NoRandom)
    }

    /// Random bytes keyed to a session, for a value the browser must echo (form tokens): the
    /// same for as long as the session lives, different for every other session and purpose,
    /// unguessable without the cookie key.
    pub fn session_token(&self, id: &SessionId, purpose: &str) -> Option<String> {
        self.cookies
            .keyed_token(&[b"session-token", purpose.as_bytes(), id.as_bytes()])
    }

    /// A new session for a verified identity, and the cookie that carries it. Every finished
    /// login ends here; the session-scale benchmark (`bench/session_scale.rs`) loads its
    /// sessions through it too, so what it measures is what a login stores.
    #[allow(clippy::too_many_arguments)] // each is one fact a login proved
    pub async fn sign_in(
        &self,
        identity: Identity,
        logout: LogoutHint,
        app: &str,
        limits: (Duration, Duration),
        origin: &Origin,
        family: SignInFamily,
        tokens: Option<crate::session::SessionTokens>,
    ) -> Result<(Arc<Session>, SessionId, String), CallbackError> {
        let host =
            crate::routing::normalise_host(&origin.authority).ok_or(CallbackError::WrongHost)?;
        // Attributes and groups from the directory, read once here and kept in the session.
        let identity = match self.directories.get(&*identity.idp) {
            Some(directory) => directory.enrich(identity).await,
            None => identity,
        };
        let session = Arc::new(
            Session::new(
                identity,
                logout,
                app,
                &host,
                family,
                limits,
                self.clock.now_ms(),
            )
            .with_tokens(tokens),
        );
        let id = SessionId::random().ok_or(CallbackError::NoRandom)?;
        self.sessions.insert(id, session.clone()).await?;
        let name = session_cookie_name(origin.secure);
        let sealed = self
            .cookies
            .seal(name, &id.encode())
            .ok_or(CallbackError::NoRandom)?;
        Ok((session, id, set_cookie(name, &sealed, origin.secure, None)))
    }

    /// The ID-token cookie for session `id`: the token sealed together with the session id,
    /// so it is used only to log out the session it came with.
    fn id_token_cookie(&self, id: &SessionId, token: &Secret, secure: bool) -> Option<String> {
        let name = id_token_cookie_name(secure);
        let sealed = self
            .cookies
            .seal(&name, &format!("{}.{}", id.encode(), token.expose()))?;
        Some(set_id_token_cookie(&sealed, secure))
    }

    /// The ID token the browser keeps for session `id`, if its cookie is genuine and was
    /// issued with that session.
    fn id_token_from_cookie(
        &self,
        cookies: &[(String, String)],
        id: &SessionId,
        secure: bool,
    ) -> Option<Secret> {
        let name = id_token_cookie_name(secure);
        let expected = id.encode();
        cookies
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, sealed)| self.cookies.open(&name, sealed))
            .find_map(|text| {
                let (sid, token) = text.split_once('.')?;
                (sid == expected).then(|| Secret::new(token))
            })
    }

    /// Finishes a login at the callback. `limits` gives an app's (idle, absolute) timeouts.
    pub async fn finish_login(
        &self,
        query: &[(String, String)],
        cookies: &[(String, String)],
        origin: &Origin,
        limits: impl Fn(&str) -> (Duration, Duration),
    ) -> Result<SignedIn, (CallbackError, Option<Arc<PendingLogin>>)> {
        let param = |key: &str| {
            query
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let state = param("state").ok_or((CallbackError::Missing("state"), None))?;
        if !self.bound(state, cookies, origin.secure) {
            return Err((CallbackError::NotBound, None));
        }
        // One-time: whatever happens next, this state cannot be used again.
        let pending = self
            .pending
            .take(state)
            .await
            .map_err(|e| (CallbackError::Store(e), None))?
            .ok_or((CallbackError::UnknownState, None))?;
        let fail = |e: CallbackError| (e, Some(pending.clone()));
        if pending.host != origin.authority {
            return Err(fail(CallbackError::WrongHost));
        }
        let PendingFlow::Oidc {
            redirect_uri,
            nonce,
            pkce_verifier,
        } = &pending.flow
        else {
            return Err(fail(CallbackError::WrongProtocol));
        };
        if let Some(error) = param("error") {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(fail(CallbackError::Idp(code)));
        }
        let code = param("code").ok_or_else(|| fail(CallbackError::Missing("code")))?;
        let Some(Provider::Oidc(provider)) = self.providers.get(&pending.idp) else {
            return Err(fail(CallbackError::UnknownIdp(pending.idp.clone())));
        };
        if param("iss").is_some_and(|iss| iss != provider.issuer()) {
            return Err(fail(CallbackError::IssuerMismatch));
        }
        // A code counts once across every node (the IdP refuses a second exchange too).
        let code_key = format!(
            "oidc-code\0{}\0{}",
            provider.issuer(),
            hex_sha256(code.as_bytes())
        );
        match self
            .stores
            .replay
            .first_use(&code_key, self.settings.login_timeout)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Err(fail(CallbackError::CodeReplayed)),
            Err(e) => return Err(fail(CallbackError::Store(e))),
        }
        let done = provider
            .finish_login(code, redirect_uri, pkce_verifier, nonce)
            .await
            .map_err(|e| fail(CallbackError::Login(e)))?;
        if let Some(step) = &pending.step_up {
            check_step_up(step, &done.identity, self.clock.now_unix())
                .map_err(|e| fail(e.into()))?;
        }
        let family = self
            .family_for(
                &done.identity,
                done.idp_session.as_deref(),
                done.identity.auth_time.map(|t| t.saturating_mul(1000)),
                pending.step_up.is_some(),
                cookies,
                origin.secure,
            )
            .await
            .map_err(fail)?;
        // The ID token (about 1 KB) is needed only to log out: the browser keeps it, sealed,
        // unless it is too large for a cookie.
        let token_in_cookie = id_token_cookie_fits(done.id_token.len());
        let hint = if token_in_cookie {
            LogoutHint::IdTokenInCookie
        } else {
            LogoutHint::IdToken(done.id_token.clone())
        };
        let (session, id, cookie) = self
            .sign_in(
                done.identity,
                hint,
                &pending.app,
                limits(&pending.app),
                origin,
                family,
                done.tokens,
            )
            .await
            .map_err(fail)?;
        let mut set = vec![
            cookie,
            clear_cookie(&login_cookie_name(state, origin.secure), origin.secure),
        ];
        if token_in_cookie {
            set.push(
                self.id_token_cookie(&id, &done.id_token, origin.secure)
                    .ok_or_else(|| fail(CallbackError::NoRandom))?,
            );
        }
        Ok(SignedIn {
            session,
            return_to: pending.return_to.clone(),
            cookies: set,
            stepped_up_for: pending.step_up.as_ref().map(|s| s.rule.clone()),
        })
    }

    /// Finishes a SAML login at the ACS. A `RelayState` naming a login this browser started
    /// makes it SP-initiated; anything else is IdP-initiated, accepted only where `target`
    /// (this host's app) allows it.
    pub async fn finish_saml_login(
        &self,
        form: &[(String, String)],
        cookies: &[(String, String)],
        origin: &Origin,
        target: Option<UnsolicitedTarget>,
        limits: impl Fn(&str) -> (Duration, Duration),
    ) -> Result<SignedIn, (CallbackError, Option<Arc<PendingLogin>>)> {
        let param = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let response =
            param("SAMLResponse").ok_or((CallbackError::Missing("SAMLResponse"), None))?;
        let relay = param("RelayState").filter(|r| !r.is_empty() && r.len() <= 80);
        let mut clear = Vec::new();
        let pending = match relay {
            Some(r) => {
                let bound = self.bound(r, cookies, origin.secure);
                let taken = self
                    .pending
                    .take(r)
                    .await
                    .map_err(|e| (CallbackError::Store(e), None))?;
                match (taken, bound) {
                    (Some(p), true) => {
                        clear.push(clear_cookie(
                            &login_cookie_name(r, origin.secure),
                            origin.secure,
                        ));
                        Some(p)
                    }
                    (Some(p), false) => return Err((CallbackError::NotBound, Some(p))),
                    (None, true) => return Err((CallbackError::UnknownState, None)),
                    (None, false) => None,
                }
            }
            None => None,
        };
        let (idp, app, return_to, request_id) = match &pending {
            Some(p) => {
                let PendingFlow::Saml { request_id } = &p.flow else {
                    return Err((CallbackError::WrongProtocol, Some(p.clone())));
                };
                if p.host != origin.authority {
                    return Err((CallbackError::WrongHost, Some(p.clone())));
                }
                (
                    p.idp.clone(),
                    p.app.clone(),
                    p.return_to.clone(),
                    Some(request_id.clone()),
                )
            }
            None => match target {
                Some(t) if t.allowed => (t.idp, t.app, t.landing, None),
                _ => return Err((SamlError::UnsolicitedNotAllowed.into(), None)),
            },
        };
        let fail = |e: CallbackError| (e, pending.clone());
        let Some(Provider::Saml(provider)) = self.providers.get(&idp) else {
            return Err(fail(CallbackError::UnknownIdp(idp)));
        };
        let sp = provider.endpoints(&origin.base());
        let login = provider
            .finish_login(response, &sp, request_id.as_deref())
            .await
            .map_err(|e| fail(e.into()))?;
        let step_up = pending.as_ref().and_then(|p| p.step_up.clone());
        if let Some(step) = &step_up {
            check_step_up(step, &login.identity, self.clock.now_unix())
                .map_err(|e| fail(e.into()))?;
        }
        let family = self
            .family_for(
                &login.identity,
                None,
                login.authenticated_ms,
                step_up.is_some(),
                cookies,
                origin.secure,
            )
            .await
            .map_err(fail)?;
        let (session, _id, cookie) = self
            .sign_in(
                login.identity,
                LogoutHint::Saml(Box::new(login.subject)),
                &app,
                limits(&app),
                origin,
                family,
                None,
            )
            .await
            .map_err(fail)?;
        let mut set = vec![cookie];
        set.extend(clear);
        Ok(SignedIn {
            session,
            return_to,
            cookies: set,
            stepped_up_for: step_up.map(|s| s.rule),
        })
    }

    /// An IdP-initiated SAML logout (already verified): ends the subject's sessions with this
    /// IdP — only those of the named IdP sessions when SessionIndex elements are given — and
    /// every other session their sign-ins created; returns them all.
    pub async fn end_saml_sessions(
        &self,
        provider: &SamlProvider,
        logout: &IdpLogout,
    ) -> Result<Vec<Arc<Session>>, StoreError> {
        let mut ended = self
            .sessions
            .remove_saml_subject(provider.name(), &logout.name_id, &logout.session_indexes)
            .await?;
        let families: Vec<SignInFamily> = ended.iter().map(|s| s.family).collect();
        ended.extend(self.sessions.remove_families(&families).await?);
        Ok(ended)
    }

    /// Ends the browser's session and every other session its sign-in created (the same user's
    /// sessions at other app hosts, made by single sign-on). Returns the browser's own session
    /// (if any), the others that ended, where to send the browser (the IdP's logout, or the
    /// signed-out page) and cookies to clear.
    pub async fn logout(&self, cookies: &[(String, String)], origin: &Origin) -> LoggedOut {
        let name = session_cookie_name(origin.secure);
        let mut ended = None;
        let mut kept_token = None;
        let mut incomplete = None;
        if let Some((_, sealed)) = cookies.iter().find(|(n, _)| *n == name) {
            if let Some(id) = self
                .cookies
                .open(name, sealed)
                .and_then(|t| SessionId::decode(&t))
            {
                match self.sessions.remove(&id).await {
                    Ok(s) => ended = s,
                    Err(e) => incomplete = Some(e),
                }
                kept_token = self.id_token_from_cookie(cookies, &id, origin.secure);
            }
        }
        let mut clear: Vec<String> = vec![
            clear_cookie(name, origin.secure),
            clear_id_token_cookie(origin.secure),
        ];
        let id_token_cookie = id_token_cookie_name(origin.secure);
        // Leftover login cookies of abandoned logins go too.
        clear.extend(
            cookies
                .iter()
                .filter(|(n, _)| *n != name && *n != id_token_cookie && is_gateway_cookie(n))
                .map(|(n, _)| clear_cookie(n, origin.secure)),
        );
        let signed_out_page = format!("{}{LOGGED_OUT_PATH}", origin.base());
        let idp_logout = match &ended {
            Some(s) => match (self.providers.get(&*s.identity.idp), &s.logout) {
                (Some(Provider::Oidc(p)), hint) => {
                    let after = p
                        .post_logout_redirect_uri()
                        .map_or(signed_out_page.clone(), str::to_string);
                    let token = match hint {
                        LogoutHint::IdToken(t) => Some(t),
                        LogoutHint::IdTokenInCookie => kept_token.as_ref(),
                        _ => None,
                    };
                    p.logout_url(token, &after)
                }
                (Some(Provider::Saml(p)), LogoutHint::Saml(subject)) => {
                    p.logout_url(&p.endpoints(&origin.base()), subject).await
                }
                _ => None,
            },
            None => None,
        };
        let location = idp_logout.unwrap_or(signed_out_page);
        let family_ended = match &ended {
            Some(s) => match self.sessions.remove_families(&[s.family]).await {
                Ok(list) => list,
                Err(e) => {
                    incomplete = Some(e);
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        LoggedOut {
            session: ended,
            family: family_ended,
            location,
            cookies: clear,
            incomplete,
        }
    }
}

/// Lower-case hex SHA-256 (replay-cache keys: the code itself is never stored).
fn hex_sha256(data: &[u8]) -> String {
    openssl::sha::sha256(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a step-up sign-in does not count.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StepUpRefused {
    /// Someone else signed in at the IdP.
    #[error("a different user signed in than the one stepping up")]
    OtherUser,
    /// No `auth_time` / `AuthnInstant`.
    #[error("the IdP did not say when the user authenticated")]
    NoAuthTime,
    /// The IdP reused the earlier authentication.
    #[error("the IdP did not authenticate the user again")]
    NotAgain,
    /// The authentication is older than the rule's `max_age`.
    #[error("the authentication is too old")]
    TooOld,
    /// The `acr` is not one the rule accepts.
    #[error("the IdP returned acr {got:?}, not one of {wanted:?}")]
    Acr {
        /// What came back.
        got: Option<String>,
        /// What the rule accepts.
        wanted: Vec<String>,
    },
    /// No `amr` the rule accepts.
    #[error("the IdP returned amr {got:?}, none of {wanted:?}")]
    Amr {
        /// What came back.
        got: Vec<String>,
        /// What the rule accepts.
        wanted: Vec<String>,
    },
}

/// Clock skew granted between the gateway and the IdP, in seconds.
const STEP_UP_SKEW: u64 = 60;

/// What a step-up must bring back: the same subject, a fresh authentication (after the
/// step-up began, within `max_age`), an acceptable `acr` and `amr`. The IdP's word alone
/// ("I asked for MFA") is not enough: the verified token or assertion must say so.
fn check_step_up(step: &StepUp, who: &Identity, now: u64) -> Result<(), StepUpRefused> {
    if who.subject != step.subject {
        return Err(StepUpRefused::OtherUser);
    }
    let at = who.auth_time.ok_or(StepUpRefused::NoAuthTime)?;
    if at + STEP_UP_SKEW < step.started_unix {
        return Err(StepUpRefused::NotAgain);
    }
    if step
        .max_age
        .is_some_and(|max| now.saturating_sub(at) > max.as_secs() + STEP_UP_SKEW)
    {
        return Err(StepUpRefused::TooOld);
    }
    if !step.acr.is_empty()
        && !who
            .acr
            .as_ref()
            .is_some_and(|a| step.acr.iter().any(|want| **want == **a))
    {
        return Err(StepUpRefused::Acr {
            got: who.acr.as_deref().map(str::to_string),
            wanted: step.acr.clone(),
        });
    }
    if !step.amr.is_empty()
        && !who
            .amr
            .iter()
            .any(|m| step.amr.iter().any(|want| **want == **m))
    {
        return Err(StepUpRefused::Amr {
            got: who.amr.iter().map(|m| m.to_string()).collect(),
            wanted: step.amr.clone(),
        });
    }
    Ok(())
}

/// 256 random bits, URL-safe: a SAML RelayState key.
fn random_key() -> Option<String> {
    SessionId::random().map(|id| id.encode())
}

/// A safe place to return to after login: a same-host absolute path, never a URL, a
/// scheme-relative `//host`, a backslash trick or a control character. Anything else → `/`.
pub fn safe_return_to(candidate: &str) -> String {
    let ok = candidate.starts_with('/')
        && !candidate.starts_with("//")
        && !candidate.starts_with("/\\")
        && !candidate.contains('\\')
        && !candidate
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        && candidate.len() <= 2048;
    if ok {
        candidate.to_string()
    } else {
        "/".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::{check_step_up, safe_return_to, StepUpRefused};
    use crate::idp::Identity;
    use crate::session::pending::StepUp;
    use std::time::Duration;

    const STARTED: u64 = 1_800_000_000;

    fn step(acr: &[&str], amr: &[&str], max_age: Option<u64>) -> StepUp {
        StepUp {
            rule: "admin-mfa".into(),
            subject: "00u1".into(),
            acr: acr.iter().map(|a| a.to_string()).collect(),
            amr: amr.iter().map(|a| a.to_string()).collect(),
            max_age: max_age.map(Duration::from_secs),
            started_unix: STARTED,
        }
    }

    fn who(subject: &str, auth_time: Option<u64>, acr: Option<&str>, amr: &[&str]) -> Identity {
        Identity {
            subject: subject.into(),
            auth_time,
            acr: acr.map(Into::into),
            amr: amr.iter().map(|&m| m.into()).collect(),
            ..Identity::default()
        }
    }

    #[test]
    fn a_fresh_strong_sign_in_of_the_same_user_counts() {
        let fresh = who("00u1", Some(STARTED + 5), Some("mfa"), &["pwd", "otp"]);
        let now = STARTED + 10;
        assert_eq!(
            check_step_up(&step(&["mfa"], &["otp"], Some(300)), &fresh, now),
            Ok(())
        );
        // Nothing asked beyond a fresh sign-in.
        assert_eq!(check_step_up(&step(&[], &[], None), &fresh, now), Ok(()));
        // Clock skew: an IdP clock a little behind is forgiven.
        let behind = who("00u1", Some(STARTED - 50), Some("mfa"), &[]);
        assert_eq!(
            check_step_up(&step(&["mfa"], &[], None), &behind, now),
            Ok(())
        );
    }

    #[test]
    fn every_shortfall_is_refused_with_its_reason() {
        let now = STARTED + 10;
        let strong = |subject, at| who(subject, at, Some("mfa"), &["otp"]);
        let cases = [
            (
                step(&[], &[], None),
                strong("00u2", Some(STARTED)),
                StepUpRefused::OtherUser,
            ),
            (
                step(&[], &[], None),
                strong("00u1", None),
                StepUpRefused::NoAuthTime,
            ),
            (
                step(&[], &[], None),
                strong("00u1", Some(STARTED - 61)),
                StepUpRefused::NotAgain,
            ),
            (
                step(&["mfa"], &[], None),
                who("00u1", Some(STARTED), Some("pwd"), &[]),
                StepUpRefused::Acr {
                    got: Some("pwd".into()),
                    wanted: vec!["mfa".into()],
                },
            ),
            (
                step(&["mfa"], &[], None),
                who("00u1", Some(STARTED), None, &[]),
                StepUpRefused::Acr {
                    got: None,
                    wanted: vec!["mfa".into()],
                },
            ),
            (
                step(&[], &["hwk"], None),
                who("00u1", Some(STARTED), None, &["pwd", "otp"]),
                StepUpRefused::Amr {
                    got: vec!["pwd".into(), "otp".into()],
                    wanted: vec!["hwk".into()],
                },
            ),
        ];
        for (step, identity, refusal) in cases {
            assert_eq!(check_step_up(&step, &identity, now), Err(refusal));
        }
        // Within the step-up's own window, but older than max_age by the time it comes back.
        let slow = strong("00u1", Some(STARTED));
        assert_eq!(
            check_step_up(&step(&[], &[], Some(60)), &slow, STARTED + 121),
            Err(StepUpRefused::TooOld)
        );
        assert_eq!(
            check_step_up(&step(&[], &[], Some(60)), &slow, STARTED + 120),
            Ok(())
        );
    }

    #[test]
    fn return_to_never_leaves_the_host() {
        for good in ["/", "/a/b?c=d", "/deep/link#x"] {
            assert_eq!(safe_return_to(good), good);
        }
        for evil in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "\\\\evil.example",
            "/a\r\nSet-Cookie: x=y",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/%0d%0a x",
        ] {
            assert_eq!(safe_return_to(evil), "/", "{evil:?}");
        }
    }
}
