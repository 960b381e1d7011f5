//! Sessions and logins in progress, held in memory (moka), plus the cookies that name them.
//!
//! Owns the session model, its expiry (idle and absolute, per entry), the cap on how many are
//! held, and the one-time pending-login records. It does not know how a login is proven (see
//! `idp`) or what the backend receives (see `inject`).

pub mod cookies;
pub mod pending;
pub mod seal;
pub mod store;

use crate::clock::millis;
use crate::idp::saml::assertion::SamlSubject;
use crate::idp::Identity;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use store::{SessionStore, StoreError, Stores};

/// Extra time an expired session stays in a store, refused, so its expiry is audited.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// A session id: 256 random bits. Never logged; the cookie carries it encrypted.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 32]);

impl SessionId {
    /// A fresh random id from OpenSSL's CSPRNG.
    pub fn random() -> Option<Self> {
        let mut bytes = [0u8; 32];
        openssl::rand::rand_bytes(&mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// The raw bits (never sent anywhere; for keyed derivations).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Text form for the (encrypted) cookie.
    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses the text form; anything else is `None`.
    pub fn decode(text: &str) -> Option<Self> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

/// The IdP sign-in a session came from: every session one sign-in created (the first app's,
/// and those made silently by single sign-on at other app hosts) carries the same value, so
/// one logout can end them all. 128 bits of a hash of the IdP and its own session id (OIDC
/// `sid`), else of the subject and the time they authenticated (OIDC `auth_time`, SAML
/// `AuthnInstant`, which single sign-on repeats); a random value when the IdP says neither.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignInFamily([u8; 16]);

impl SignInFamily {
    /// The family of `identity`'s sign-in: `idp_session` is the IdP's own session id when it
    /// sent one, `authenticated_ms` when the user authenticated (Unix milliseconds, as precise
    /// as the IdP says).
    pub fn of(
        identity: &Identity,
        idp_session: Option<&str>,
        authenticated_ms: Option<u64>,
    ) -> Option<Self> {
        let key = match (idp_session, authenticated_ms) {
            (Some(sid), _) if !sid.is_empty() => format!("sid\0{}\0{sid}", identity.idp),
            (_, Some(at)) => format!("at\0{}\0{}\0{at}", identity.idp, identity.subject),
            _ => return Self::random(),
        };
        let digest = openssl::sha::sha256(key.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(digest.get(..16)?);
        Some(Self(out))
    }

    /// The raw bits (store index keys).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A family of one (an IdP that names neither its session nor the authentication time).
    pub fn random() -> Option<Self> {
        let mut out = [0u8; 16];
        openssl::rand::rand_bytes(&mut out).ok()?;
        Some(Self(out))
    }
}

impl std::fmt::Debug for SignInFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignInFamily(..)")
    }
}

/// Where a session may be used: the host its cookie was issued on and the IdP that proved it.
/// A session is honoured only by apps on that host that sign in with that IdP (see
/// `Auth::lookup`).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The normalised host (no port) the request came to.
    pub host: &'a str,
    /// The IdP the app signs in with.
    pub idp: &'a str,
}

/// One signed-in browser. Plain data: every time in it is Unix milliseconds of the gateway's
/// clock, and nothing in it belongs to one node (the backend jars of form-fill and Basic
/// replay live beside it, in `delivery::jars`).
#[derive(Debug)]
pub struct Session {
    /// Who signed in.
    pub identity: Identity,
    /// What logging out at the IdP needs.
    pub logout: LogoutHint,
    /// The app the login was made for (shared with every session of that app).
    pub app: Arc<str>,
    /// The host the session's cookie was issued on (normalised, shared).
    pub host: Arc<str>,
    /// The IdP sign-in this session belongs to.
    pub family: SignInFamily,
    /// When the session began (Unix milliseconds).
    pub created_ms: u64,
    /// When it was last used (Unix milliseconds).
    last_seen_ms: AtomicU64,
    // Milliseconds, not `Duration`s: a session is held a million times over.
    idle_ms: u64,
    absolute_ms: u64,
    /// The IdP's tokens, kept only when its config asks for refresh (boxed: most sessions
    /// have none).
    pub tokens: Option<Box<SessionTokens>>,
}

/// Tokens a session keeps for refresh (OpenID Connect, `refresh = true`). Never sent to the
/// browser; sealed whenever the session leaves the process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionTokens {
    /// The refresh token, when the IdP issued one.
    pub refresh: Option<Secret>,
    /// The current access token (for backends configured to receive it).
    pub access: Secret,
    /// When the access token expires (Unix milliseconds), when the IdP said.
    pub access_expires_ms: Option<u64>,
    /// When the claims are next re-read from the IdP (Unix milliseconds).
    pub refresh_due_ms: u64,
}

/// A session's stored form (see [`Session::to_stored`]).
#[derive(Serialize, Deserialize)]
struct StoredSession<'a> {
    identity: std::borrow::Cow<'a, Identity>,
    logout: std::borrow::Cow<'a, LogoutHint>,
    app: std::borrow::Cow<'a, str>,
    host: std::borrow::Cow<'a, str>,
    family: SignInFamily,
    created_ms: u64,
    idle_ms: u64,
    absolute_ms: u64,
    tokens: Option<std::borrow::Cow<'a, SessionTokens>>,
}

/// The stored form written before sessions kept tokens: still read, so sessions written by
/// the previous release (in Redis, in a snapshot) survive an upgrade.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct StoredSessionWithoutTokens<'a> {
    identity: std::borrow::Cow<'a, Identity>,
    logout: std::borrow::Cow<'a, LogoutHint>,
    app: std::borrow::Cow<'a, str>,
    host: std::borrow::Cow<'a, str>,
    family: SignInFamily,
    created_ms: u64,
    idle_ms: u64,
    absolute_ms: u64,
}

/// What the IdP needs to end its side of the session.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub enum LogoutHint {
    /// Nothing (the IdP offers no logout).
    #[default]
    None,
    /// OpenID Connect: the ID token, sent only as `id_token_hint`.
    IdToken(Secret),
    /// OpenID Connect, with the ID token kept by the browser in a sealed cookie bound to this
    /// session and sent only to the gateway's endpoints (about 1 KB less held per session).
    IdTokenInCookie,
    /// SAML: the NameID and session index for the LogoutRequest (boxed: the rarer, larger
    /// variant should not size every session).
    Saml(Box<SamlSubject>),
}

/// Why a session does not count for the app it was shown to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotValid {
    /// Its own time is up: it has ended, for every app.
    Ended(Expired),
    /// This app's stricter limit is exceeded: the session stays valid for apps whose limits
    /// it still meets, but this app asks for a new sign-in.
    TooOldHere(Expired),
}

/// Why a stored session no longer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Unused for longer than the idle timeout.
    Idle,
    /// Older than the absolute lifetime.
    Absolute,
}

impl Expired {
    /// Name used in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Expired::Idle => "idle",
            Expired::Absolute => "absolute",
        }
    }
}

impl Session {
    /// A new session for `app` on `host`, begun at `now_ms`, with the creating app's limits.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        identity: Identity,
        logout: LogoutHint,
        app: &str,
        host: &str,
        family: SignInFamily,
        (idle, absolute): (Duration, Duration),
        now_ms: u64,
    ) -> Self {
        Self {
            identity,
            logout,
            app: crate::intern::intern(app),
            host: crate::intern::intern(host),
            family,
            created_ms: now_ms,
            last_seen_ms: AtomicU64::new(now_ms),
            idle_ms: millis(idle),
            absolute_ms: millis(absolute),
            tokens: None,
        }
    }

    /// This session with `tokens` kept.
    pub fn with_tokens(mut self, tokens: Option<SessionTokens>) -> Self {
        self.tokens = tokens.map(Box::new);
        self
    }

    /// Are the claims due to be re-read from the IdP at `now_ms`?
    pub fn refresh_due(&self, now_ms: u64) -> bool {
        self.tokens
            .as_ref()
            .is_some_and(|t| t.refresh.is_some() && now_ms >= t.refresh_due_ms)
    }

    /// The same session with refreshed claims and tokens: its sign-in, app, host, times and
    /// limits stay; the identity's step-up facts (acr, amr, auth time) stay too, since a
    /// refresh proves nothing new about how the user authenticated.
    pub fn refreshed(&self, identity: Option<Identity>, tokens: SessionTokens) -> Self {
        let mut identity = identity.unwrap_or_else(|| self.identity.clone());
        identity.acr = self.identity.acr.clone();
        identity.amr = self.identity.amr.clone();
        identity.auth_time = self.identity.auth_time;
        Self {
            identity,
            logout: self.logout.clone(),
            app: self.app.clone(),
            host: self.host.clone(),
            family: self.family,
            created_ms: self.created_ms,
            last_seen_ms: AtomicU64::new(self.last_seen_ms()),
            idle_ms: self.idle_ms,
            absolute_ms: self.absolute_ms,
            tokens: Some(Box::new(tokens)),
        }
    }

    /// When the session began, in Unix seconds (audit, userinfo).
    pub fn created_unix(&self) -> u64 {
        self.created_ms / 1000
    }

    /// When it was last used (Unix milliseconds).
    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    /// How long a store keeps the entry after a use at `now_ms`: the time left before
    /// expiry, plus a grace period so the next use finds it and [`Session::touch`] can tell —
    /// and audit — *why* it ended. Entries nobody asks for again are evicted after the grace.
    pub fn remaining_after_use(&self, now_ms: u64) -> Duration {
        let age = now_ms.saturating_sub(self.created_ms);
        let left = self.absolute_ms.saturating_sub(age);
        Duration::from_millis(self.idle_ms.min(left)) + EXPIRY_GRACE
    }

    /// How long the absolute limit leaves a session `age_ms` old.
    pub fn absolute_left(&self, age_ms: u64) -> Duration {
        Duration::from_millis(self.absolute_ms.saturating_sub(age_ms))
    }

    /// Has the session's own time run out by `now_ms` (without counting a use)?
    pub fn has_ended(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.created_ms) >= self.absolute_ms
            || now_ms.saturating_sub(self.last_seen_ms()) >= self.idle_ms
    }

    /// Checks, at `now_ms`, the session's own limits and an app's (possibly stricter) ones,
    /// and records the use when both hold. A session past only the app's limit is left as it
    /// is.
    pub fn touch(&self, now_ms: u64, idle: Duration, absolute: Duration) -> Result<(), NotValid> {
        let age = now_ms.saturating_sub(self.created_ms);
        let unused = now_ms.saturating_sub(self.last_seen_ms());
        if age >= self.absolute_ms {
            return Err(NotValid::Ended(Expired::Absolute));
        }
        if unused >= self.idle_ms {
            return Err(NotValid::Ended(Expired::Idle));
        }
        if age >= millis(absolute) {
            return Err(NotValid::TooOldHere(Expired::Absolute));
        }
        if unused >= millis(idle) {
            return Err(NotValid::TooOldHere(Expired::Idle));
        }
        self.last_seen_ms.fetch_max(now_ms, Ordering::Relaxed);
        Ok(())
    }

    /// The session as stored outside this process (postcard, compact; sealed by the store):
    /// everything but the last use, which a shared store keeps beside it.
    pub fn to_stored(&self) -> Option<Vec<u8>> {
        postcard::to_stdvec(&StoredSession {
            identity: std::borrow::Cow::Borrowed(&self.identity),
            logout: std::borrow::Cow::Borrowed(&self.logout),
            app: std::borrow::Cow::Borrowed(&self.app),
            host: std::borrow::Cow::Borrowed(&self.host),
            family: self.family,
            created_ms: self.created_ms,
            idle_ms: self.idle_ms,
            absolute_ms: self.absolute_ms,
            tokens: self.tokens.as_deref().map(std::borrow::Cow::Borrowed),
        })
        .ok()
    }

    /// A session read back from [`Session::to_stored`], last used at `last_seen_ms`.
    pub fn from_stored(bytes: &[u8], last_seen_ms: u64) -> Option<Self> {
        // The current form first: the older one is a prefix of it, and would read it too.
        let stored: StoredSession<'_> = match postcard::from_bytes(bytes) {
            Ok(s) => s,
            Err(_) => {
                let old: StoredSessionWithoutTokens<'_> = postcard::from_bytes(bytes).ok()?;
                StoredSession {
                    identity: old.identity,
                    logout: old.logout,
                    app: old.app,
                    host: old.host,
                    family: old.family,
                    created_ms: old.created_ms,
                    idle_ms: old.idle_ms,
                    absolute_ms: old.absolute_ms,
                    tokens: None,
                }
            }
        };
        let mut identity = stored.identity.into_owned();
        // Shared copies, as a login makes them (a million sessions name a few groups).
        identity.groups = identity
            .groups
            .iter()
            .map(|g| crate::intern::intern(g))
            .collect();
        identity.idp = crate::intern::intern(&identity.idp);
        Some(Self {
            identity,
            logout: stored.logout.into_owned(),
            app: crate::intern::intern(&stored.app),
            host: crate::intern::intern(&stored.host),
            family: stored.family,
            created_ms: stored.created_ms,
            last_seen_ms: AtomicU64::new(last_seen_ms.max(stored.created_ms)),
            idle_ms: stored.idle_ms,
            absolute_ms: stored.absolute_ms,
            tokens: stored.tokens.map(|t| Box::new(t.into_owned())),
        })
    }

    /// The NameID a SAML IdP's logout names this session by, else the subject (the store's
    /// index for ending a user's sessions).
    pub fn logout_subject(&self) -> &str {
        match &self.logout {
            LogoutHint::Saml(subject) => &subject.name_id,
            _ => &self.identity.subject,
        }
    }

    /// Is this session one a SAML logout for `name_id` (and, when given, one of
    /// `session_indexes`) at `idp` names?
    pub fn matches_saml_logout(
        &self,
        idp: &str,
        name_id: &str,
        session_indexes: &[String],
    ) -> bool {
        *self.identity.idp == *idp
            && match &self.logout {
                LogoutHint::Saml(subject) => {
                    subject.name_id == name_id
                        && (session_indexes.is_empty()
                            || subject
                                .session_index
                                .as_ref()
                                .is_some_and(|i| session_indexes.contains(i)))
                }
                _ => false,
            }
    }

    /// May this session be used here: the host its cookie was issued on, and an app that signs
    /// in with the IdP that proved it?
    pub fn is_scoped_to(&self, scope: Scope<'_>) -> bool {
        *self.host == *scope.host && *self.identity.idp == *scope.idp
    }
}

/// A session for store tests: subject `s` at IdP `corp`, app `app` on `app.example`.
#[cfg(test)]
pub(crate) fn test_session(now_ms: u64, idle_ms: u64, absolute_ms: u64) -> Session {
    Session::new(
        Identity {
            subject: "s".into(),
            idp: "corp".into(),
            ..Identity::default()
        },
        LogoutHint::None,
        "app",
        "app.example",
        SignInFamily::random().unwrap_or(SignInFamily([0; 16])),
        (
            Duration::from_millis(idle_ms),
            Duration::from_millis(absolute_ms),
        ),
        now_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn session_at(now_ms: u64, idle_ms: u64, absolute_ms: u64) -> Session {
        Session::new(
            Identity {
                subject: "s".into(),
                ..Identity::default()
            },
            LogoutHint::None,
            "app",
            "app.example",
            SignInFamily::random().unwrap(),
            (
                Duration::from_millis(idle_ms),
                Duration::from_millis(absolute_ms),
            ),
            now_ms,
        )
    }

    fn session(idle_ms: u64, absolute_ms: u64) -> Session {
        session_at(T0, idle_ms, absolute_ms)
    }

    #[test]
    fn stored_sessions_keep_their_tokens_and_the_previous_form_still_reads() {
        let s = session(60_000, 600_000).with_tokens(Some(SessionTokens {
            refresh: Some(Secret::new("rt")),
            access: Secret::new("at"),
            access_expires_ms: Some(T0 + 3_600_000),
            refresh_due_ms: T0 + 300_000,
        }));
        let back = Session::from_stored(&s.to_stored().unwrap(), T0).unwrap();
        let tokens = back.tokens.as_deref().unwrap();
        assert_eq!(tokens.refresh.as_ref().map(Secret::expose), Some("rt"));
        assert_eq!(tokens.refresh_due_ms, T0 + 300_000);
        assert!(!back.refresh_due(T0 + 299_999) && back.refresh_due(T0 + 300_000));

        let old = postcard::to_stdvec(&StoredSessionWithoutTokens {
            identity: std::borrow::Cow::Borrowed(&s.identity),
            logout: std::borrow::Cow::Borrowed(&s.logout),
            app: "app".into(),
            host: "app.example".into(),
            family: s.family,
            created_ms: T0,
            idle_ms: 60_000,
            absolute_ms: 600_000,
        })
        .unwrap();
        let read = Session::from_stored(&old, T0 + 5).unwrap();
        assert!(read.tokens.is_none() && !read.refresh_due(u64::MAX));
        assert_eq!(
            (&*read.app, read.created_ms, read.last_seen_ms()),
            ("app", T0, T0 + 5)
        );
    }

    #[test]
    fn ids_round_trip_and_are_unique() {
        let a = SessionId::random().unwrap();
        let b = SessionId::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(SessionId::decode(&a.encode()), Some(a));
        assert_eq!(SessionId::decode("short"), None);
        assert!(!format!("{a:?}").contains(&a.encode()));
    }

    #[test]
    fn touch_enforces_the_stricter_of_session_and_app_limits() {
        let s = session(60_000, 120_000);
        let (minute, two) = (Duration::from_secs(60), Duration::from_secs(120));
        assert_eq!(s.touch(T0 + 1_000, minute, two), Ok(()));
        // Past only the app's limit: not valid there, but not ended.
        assert_eq!(
            s.touch(T0 + 1_000, Duration::ZERO, two),
            Err(NotValid::TooOldHere(Expired::Idle))
        );
        assert_eq!(
            s.touch(T0 + 1_000, minute, Duration::ZERO),
            Err(NotValid::TooOldHere(Expired::Absolute))
        );
        // Used every 50 s, the session lives to its absolute end and not a moment longer.
        for step in 1..=2 {
            assert_eq!(s.touch(T0 + 1_000 + step * 50_000, minute, two), Ok(()));
        }
        assert_eq!(
            s.touch(T0 + 120_000, minute, two),
            Err(NotValid::Ended(Expired::Absolute))
        );
        // Unused for its idle time: ended, for every app.
        let idle = session(60_000, 600_000);
        assert_eq!(
            idle.touch(T0 + 60_000, minute, Duration::from_secs(600)),
            Err(NotValid::Ended(Expired::Idle))
        );
        // A clock that steps back never moves the last use back.
        let back = session(60_000, 600_000);
        assert_eq!(back.touch(T0 - 5_000, minute, two), Ok(()));
        assert_eq!(back.last_seen_ms(), T0);
    }

    #[test]
    fn sessions_are_scoped_to_their_host_and_idp() {
        let mut s = session(60_000, 60_000);
        s.identity.idp = "corp".into();
        let here = Scope {
            host: "app.example",
            idp: "corp",
        };
        assert!(s.is_scoped_to(here));
        assert!(!s.is_scoped_to(Scope {
            host: "other.example",
            ..here
        }));
        assert!(!s.is_scoped_to(Scope {
            idp: "partner",
            ..here
        }));
    }

    #[test]
    fn one_sign_in_is_one_family_and_other_sign_ins_are_not() {
        let who = |sub: &str| Identity {
            subject: sub.into(),
            idp: "corp".into(),
            ..Identity::default()
        };
        let of = |sub: &str, sid: Option<&str>, at: Option<u64>| {
            SignInFamily::of(&who(sub), sid, at).unwrap()
        };
        let a = of("alice", None, Some(1_000));
        assert_eq!(a, of("alice", None, Some(1_000)));
        assert_ne!(a, of("alice", None, Some(1_001)));
        assert_ne!(a, of("bob", None, Some(1_000)));
        // The IdP's session id wins over the time, whatever the time says.
        let s1 = of("alice", Some("sid-1"), Some(1_000));
        assert_eq!(s1, of("alice", Some("sid-1"), Some(9_000)));
        assert_ne!(s1, of("alice", Some("sid-2"), Some(1_000)));
        // Nothing to go by: every sign-in is its own family.
        assert_ne!(of("alice", None, None), of("alice", None, None));
    }
}
