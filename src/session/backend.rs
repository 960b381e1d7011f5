//! What the gateway holds for a backend that has its own login, per user session and app: the
//! cookies a form-fill backend set, or the Basic credentials replayed to it. They go to the backend on every request and never
//! to the browser. One lock per (session, app), so concurrent first requests log in once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// The jars of one user session, by app id.
/// One app's jar, locked across a login round trip.
pub type SharedJar = Arc<tokio::sync::Mutex<BackendJar>>;

#[derive(Debug, Default)]
pub struct BackendJars {
    // Made on first use: most sessions never meet a form-fill or Basic-replay app, and an
    // empty map and its lock would cost every one of them 56 bytes.
    jars: std::sync::OnceLock<Box<Mutex<HashMap<String, SharedJar>>>>,
}

impl BackendJars {
    /// The jar for `app`, created empty on first use.
    pub fn for_app(&self, app: &str) -> SharedJar {
        let mut jars = self
            .jars
            .get_or_init(Box::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        jars.entry(app.to_string()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
