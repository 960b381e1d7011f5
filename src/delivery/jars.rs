//! What the gateway holds for a backend that has its own login, per user session and app: the
//! cookies a form-fill backend set, or the Basic credentials replayed to it. They go to the
//! backend on every request and never to the browser. One lock per (session, app), so
//! concurrent first requests log in once.

use crate::session::SessionId;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One backend's session state for one user.
#[derive(Debug, Default)]
pub struct BackendJar {
    /// Cookies the backend set (name, value), in the order first set.
    pub cookies: Vec<(String, String)>,
    /// A login succeeded and the backend has not logged the user out since.
    pub logged_in: bool,
    /// When the gateway last logged in (guards against a backend that never accepts it).
    pub last_login: Option<Instant>,
    /// HTTP Basic replay: the `Authorization` value built from the vault, so the vault is
    /// read once per session rather than per request (cleared when the backend refuses it).
    pub authorization: Option<http::HeaderValue>,
}

impl BackendJar {
    /// Applies one `Set-Cookie` from the backend (a deletion removes the cookie).
    pub fn apply_set_cookie(&mut self, header: &str) {
        let mut parts = header.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim().to_string(), value.trim().to_string());
        let deleted = value.is_empty()
            || parts.any(|attr| {
                let attr = attr.trim().to_ascii_lowercase();
                attr == "max-age=0" || attr.starts_with("max-age=-")
            });
        self.cookies.retain(|(n, _)| *n != name);
        if !deleted {
            self.cookies.push((name, value));
        }
    }

    /// The backend logged the user out (or forgot them): start over.
    pub fn reset(&mut self) {
        self.cookies.clear();
        self.logged_in = false;
    }
}

/// One app's jar, locked across a login round trip.
pub type SharedJar = Arc<tokio::sync::Mutex<BackendJar>>;

/// Every backend jar of this node, by session and app. Node-local by design: a jar holds the
/// backend's own session cookies, which another node can rebuild by logging in once more. It
/// lives beside the session store, not inside sessions, so a session stays plain data. A
/// session's jars unused for `idle` are forgotten (the session has ended or gone idle; one
/// still alive just logs in to the backend again).
#[derive(Clone)]
pub struct BackendJars {
    // Per session, a short list by app id: a session meets one or two credential apps, so a
    // scan beats a map, and no lock is shared between sessions.
    sessions: moka::sync::Cache<SessionId, Arc<Mutex<SessionJars>>>,
}

/// One session's jars, by app id.
type SessionJars = Vec<(String, SharedJar)>;

impl BackendJars {
    /// Jars for at most `max` sessions, each session's forgotten after `idle` unused.
    pub fn new(max: u64, idle: Duration) -> Self {
        Self {
            sessions: moka::sync::Cache::builder()
                .max_capacity(max)
                .time_to_idle(idle)
                .build(),
        }
    }

    /// The jar of `session` at `app`, created empty on first use.
    pub fn for_session(&self, session: &SessionId, app: &str) -> SharedJar {
        let jars = self.sessions.get_with(*session, Arc::default);
        let mut jars = jars.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, jar)) = jars.iter().find(|(id, _)| id == app) {
            return jar.clone();
        }
        let jar = SharedJar::default();
        jars.push((app.to_string(), jar.clone()));
        jar
    }

    /// The jar of `session` at `app`, if it has one.
    pub fn existing(&self, session: &SessionId, app: &str) -> Option<SharedJar> {
        let jars = self.sessions.get(session)?;
        let jars = jars.lock().unwrap_or_else(PoisonError::into_inner);
        jars.iter()
            .find(|(id, _)| id == app)
            .map(|(_, jar)| jar.clone())
    }
}

impl std::fmt::Debug for BackendJars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackendJars({} sessions)", self.sessions.entry_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_session_and_app_has_its_own_jar() {
        let jars = BackendJars::new(100, Duration::from_secs(60));
        let (a, b) = (SessionId::random().unwrap(), SessionId::random().unwrap());
        assert!(jars.existing(&a, "forms").is_none());
        let first = jars.for_session(&a, "forms");
        assert!(Arc::ptr_eq(&first, &jars.for_session(&a, "forms")));
        assert!(!Arc::ptr_eq(&first, &jars.for_session(&b, "forms")));
        assert!(!Arc::ptr_eq(&first, &jars.for_session(&a, "hr")));
        assert!(jars.existing(&a, "forms").is_some());
    }

    #[test]
    fn set_cookie_headers_update_and_delete() {
        let mut jar = BackendJar::default();
        jar.apply_set_cookie("APPSESSION=abc; Path=/; HttpOnly");
        jar.apply_set_cookie("theme=dark");
        jar.apply_set_cookie("APPSESSION=def; Path=/");
        assert_eq!(
            jar.cookies,
            [
                ("theme".into(), "dark".into()),
                ("APPSESSION".into(), "def".into())
            ]
        );
        jar.apply_set_cookie("APPSESSION=; Max-Age=0; Path=/");
        assert_eq!(jar.cookies, [("theme".to_string(), "dark".to_string())]);
    }
}
