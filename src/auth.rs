//! Sign-in state shared by every request and kept across reloads: sessions, logins in
//! progress, the cookie key and the identity providers.
//!
//! Owns the three login steps as plain async functions — look up the browser's session, start
//! a login, finish it at the callback — plus logout. They take and return plain values
//! (cookies, URLs, typed errors); the proxy turns those into HTTP responses.

use crate::config::{GatewayConfig, IdpConfig, SessionSettings};
use crate::idp::http::{HttpError, IdpHttpClient};
use crate::idp::oidc::{LoginError, OidcProvider};
use crate::session::cookies::{
    clear_cookie, is_gateway_cookie, login_cookie_name, session_cookie_name, set_cookie,
    CookieCodec,
};
use crate::session::pending::{PendingLogin, PendingLogins};
use crate::session::{Expired, Session, SessionId, SessionStore};
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
    /// A live session.
    Found(Arc<Session>),
    /// The cookie was present but names no usable session (tampered, unknown, logged out).
    Rejected(&'static str),
    /// The session existed but its time is up; it has been removed.
    Expired(Arc<Session>, Expired),
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
    /// No random bytes for a session id.
    #[error("could not create a session id")]
    NoRandom,
}

/// A finished login: where to send the browser and which cookies to set.
pub struct SignedIn {
    /// The new session.
    pub session: Arc<Session>,
    /// Same-host path to return to.
    pub return_to: String,
    /// `Set-Cookie` values (new session, cleared login cookie).
    pub cookies: Vec<String>,
}

/// A started login.
pub struct LoginRedirect {
    /// Authorization URL.
    pub location: String,
    /// `Set-Cookie` binding this login to the browser.
    pub cookie: String,
}

/// Shared sign-in state.
pub struct Auth {
    /// Signed-in sessions.
    pub sessions: SessionStore,
    pending: PendingLogins,
    cookies: CookieCodec,
    providers: HashMap<String, Arc<OidcProvider>>,
    settings: SessionSettings,
    idp_configs: Vec<IdpConfig>,
}

/// Building the shared sign-in state failed.
#[derive(Debug, Error)]
pub enum AuthError {
    /// The IdP HTTP client could not be created.
    #[error("cannot create the identity provider HTTP client: {0}")]
    Http(#[from] HttpError),
}

impl Auth {
    /// Sign-in state for this configuration (providers start undiscovered).
    pub fn new(config: &GatewayConfig) -> Result<Self, AuthError> {
        let mut providers = HashMap::new();
        for idp in &config.idps {
            let http = IdpHttpClient::new(
                Duration::from_secs(5),
                Duration::from_secs(15),
                idp.oidc.ca_pem.as_deref(),
            )?;
            let provider = OidcProvider::new(&idp.name, idp.oidc.clone(), http);
            providers.insert(idp.name.clone(), Arc::new(provider));
        }
        Ok(Self {
            sessions: SessionStore::new(config.sessions.max_sessions),
            pending: PendingLogins::new(
                config.sessions.login_timeout,
                config.sessions.max_pending_logins,
            ),
            cookies: CookieCodec::new(config.sessions.cookie_key.as_ref()),
            providers,
            settings: config.sessions.clone(),
            idp_configs: config.idps.clone(),
        })
    }

    /// Settings this state was built with (a reload keeps them; see `reload`).
    pub fn settings(&self) -> (&SessionSettings, &[IdpConfig]) {
        (&self.settings, &self.idp_configs)
    }

    /// The provider called `name`.
    pub fn provider(&self, name: &str) -> Option<&Arc<OidcProvider>> {
        self.providers.get(name)
    }

    /// Every provider (for discovery).
    pub fn providers(&self) -> impl Iterator<Item = &Arc<OidcProvider>> {
        self.providers.values()
    }

    /// The browser's session, checked against the app's idle and absolute limits.
    pub async fn lookup(
        &self,
        cookies: &[(String, String)],
        secure: bool,
        idle: Duration,
        absolute: Duration,
    ) -> SessionLookup {
        let name = session_cookie_name(secure);
        let Some((_, sealed)) = cookies.iter().find(|(n, _)| *n == name) else {
            return SessionLookup::None;
        };
        let Some(id) = self
            .cookies
            .open(&name, sealed)
            .and_then(|text| SessionId::decode(&text))
        else {
            return SessionLookup::Rejected(
                "session cookie failed authentication (tampered or from another key)",
            );
        };
        let Some(session) = self.sessions.get(&id).await else {
            return SessionLookup::Rejected(
                "session cookie names no live session (expired or logged out)",
            );
        };
        match session.touch(idle, absolute) {
            Ok(()) => SessionLookup::Found(session),
            Err(why) => {
                self.sessions.remove(&id).await;
                SessionLookup::Expired(session, why)
            }
        }
    }

    /// Starts a login: a pending record keyed by a fresh state, and a cookie binding it to
    /// this browser.
    pub async fn start_login(
        &self,
        provider: &OidcProvider,
        app: &str,
        origin: &Origin,
        return_to: &str,
    ) -> Result<LoginRedirect, LoginError> {
        let redirect_uri = format!("{}{CALLBACK_PATH}", origin.base());
        let start = provider.begin_login(&redirect_uri)?;
        let name = login_cookie_name(&start.state, origin.secure);
        let sealed = self
            .cookies
            .seal(&name, &start.state)
            .ok_or_else(|| LoginError::RedirectUri("cannot seal login cookie".into()))?;
        let cookie = set_cookie(
            &name,
            &sealed,
            origin.secure,
            Some(self.settings.login_timeout),
        );
        self.pending
            .insert(
                start.state,
                PendingLogin {
                    idp: provider.name().to_string(),
                    app: app.to_string(),
                    host: origin.authority.clone(),
                    return_to: return_to.to_string(),
                    redirect_uri,
                    nonce: start.nonce,
                    pkce_verifier: start.pkce_verifier,
                },
            )
            .await;
        Ok(LoginRedirect {
            location: start.url,
            cookie,
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
        let cookie_name = login_cookie_name(state, origin.secure);
        let bound = cookies
            .iter()
            .filter(|(n, _)| *n == cookie_name)
            .any(|(_, sealed)| self.cookies.open(&cookie_name, sealed).as_deref() == Some(state));
        if !bound {
            return Err((CallbackError::NotBound, None));
        }
        // One-time: whatever happens next, this state cannot be used again.
        let pending = self
            .pending
            .take(state)
            .await
            .ok_or((CallbackError::UnknownState, None))?;
        let fail = |e: CallbackError| (e, Some(pending.clone()));
        if pending.host != origin.authority {
            return Err(fail(CallbackError::WrongHost));
        }
        if let Some(error) = param("error") {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(fail(CallbackError::Idp(code)));
        }
        let code = param("code").ok_or_else(|| fail(CallbackError::Missing("code")))?;
        let provider = self
            .providers
            .get(&pending.idp)
            .ok_or_else(|| fail(CallbackError::UnknownIdp(pending.idp.clone())))?;
        if param("iss").is_some_and(|iss| iss != provider.issuer()) {
            return Err(fail(CallbackError::IssuerMismatch));
        }
        let done = provider
            .finish_login(
                code,
                &pending.redirect_uri,
                &pending.pkce_verifier,
                &pending.nonce,
            )
            .await
            .map_err(|e| fail(CallbackError::Login(e)))?;
        let (idle, absolute) = limits(&pending.app);
        let session = Session::new(
            done.identity,
            Some(done.id_token),
            &pending.app,
            idle,
            absolute,
        );
        let session = Arc::new(session);
        let id = SessionId::random().ok_or_else(|| fail(CallbackError::NoRandom))?;
        self.sessions.insert(id, session.clone()).await;
        let name = session_cookie_name(origin.secure);
        let sealed = self
            .cookies
            .seal(&name, &id.encode())
            .ok_or_else(|| fail(CallbackError::NoRandom))?;
        Ok(SignedIn {
            session,
            return_to: pending.return_to.clone(),
            cookies: vec![
                set_cookie(&name, &sealed, origin.secure, None),
                clear_cookie(&cookie_name, origin.secure),
            ],
        })
    }

    /// Ends the browser's session. Returns the session that ended (if any), where to send
    /// the browser (the IdP's logout, or the signed-out page) and cookies to clear.
    pub async fn logout(
        &self,
        cookies: &[(String, String)],
        origin: &Origin,
    ) -> (Option<Arc<Session>>, String, Vec<String>) {
        let name = session_cookie_name(origin.secure);
        let mut ended = None;
        if let Some((_, sealed)) = cookies.iter().find(|(n, _)| *n == name) {
            if let Some(id) = self
                .cookies
                .open(&name, sealed)
                .and_then(|t| SessionId::decode(&t))
            {
                ended = self.sessions.remove(&id).await;
            }
        }
        let mut clear: Vec<String> = vec![clear_cookie(&name, origin.secure)];
        // Leftover login cookies of abandoned logins go too.
        clear.extend(
            cookies
                .iter()
                .filter(|(n, _)| *n != name && is_gateway_cookie(n))
                .map(|(n, _)| clear_cookie(n, origin.secure)),
        );
        let signed_out_page = format!("{}{LOGGED_OUT_PATH}", origin.base());
        let location = ended
            .as_ref()
            .and_then(|s| {
                let provider = self.providers.get(&s.identity.idp)?;
                let after = provider
                    .post_logout_redirect_uri()
                    .map_or(signed_out_page.clone(), str::to_string);
                provider.logout_url(s.id_token.as_ref(), &after)
            })
            .unwrap_or(signed_out_page);
        (ended, location, clear)
    }
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
    use super::safe_return_to;

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
