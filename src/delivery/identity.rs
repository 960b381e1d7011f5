//! Identity delivery to the backend: the headers an app's `[identity.headers]` asks for, and
//! the cookies its `[identity.cookies]` asks for.
//!
//! Owns turning a signed-in [`Identity`] into header values, and refusing values that could
//! split or smuggle a header (control characters) or bloat it (length cap). Header lines are
//! never built by hand: values become `http::HeaderValue`s and Pingora writes them.

use crate::idp::Identity;
use crate::secret::Secret;
use http::{HeaderName, HeaderValue};
use thiserror::Error;

/// Longest identity value sent (a user in hundreds of groups must not break the backend).
pub const MAX_IDENTITY_VALUE: usize = 4096;

/// Where one identity header's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum IdentitySource {
    /// The IdP's stable subject id (`sub`).
    Subject,
    /// Verified email.
    Email,
    /// Display name.
    Name,
    /// Group names.
    Groups {
        /// How the list becomes one value.
        pick: Multi,
    },
    /// Name of the IdP the user signed in with.
    Idp,
    /// Authentication context class (`acr`).
    Acr,
    /// Authentication methods (`amr`).
    Amr {
        /// How the list becomes one value.
        pick: Multi,
    },
    /// Another ID token claim kept in the session (listed in the IdP's `claims`).
    Claim {
        /// Claim name.
        name: String,
        /// How a list-valued claim becomes one value.
        pick: Multi,
    },
    /// A fixed value.
    Static(String),
    /// A shared secret the backend checks to know the request came through the gateway.
    Secret(Secret),
    /// The user's current access token from their IdP (kept fresh by refresh), for
    /// backends that call other APIs on the user's behalf.
    AccessToken,
}

/// How a list (groups, `amr`, a multi-valued claim) becomes one header or cookie value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Multi {
    /// Every value, in order, joined with this separator (`join = ","`, the default).
    Join(String),
    /// Only the value at this position, counting from 0 (`nth = 0`); nothing is sent when
    /// the list is shorter.
    Nth(usize),
    /// How many values there are (`count = true`).
    Count,
}

impl Default for Multi {
    fn default() -> Self {
        Self::Join(",".to_string())
    }
}

impl Multi {
    /// The one value for `values` (`None`: send nothing).
    pub fn apply<S: AsRef<str>>(&self, values: &[S]) -> Option<String> {
        match self {
            Multi::Join(separator) => Some(
                values
                    .iter()
                    .map(AsRef::as_ref)
                    .collect::<Vec<&str>>()
                    .join(separator),
            ),
            Multi::Nth(n) => values.get(*n).map(|v| v.as_ref().to_string()),
            Multi::Count => Some(values.len().to_string()),
        }
    }
}

/// Why a request could not be given its identity headers or cookies.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InjectError {
    /// A cookie value with a character a `Cookie` header cannot carry unambiguously.
    #[error("identity cookie {cookie}: value contains `;`, a quote, a backslash, a space or a control character")]
    UnsafeCookieValue {
        /// Cookie name.
        cookie: String,
    },
    /// The value holds CR, LF, NUL, TAB or another control character.
    #[error("identity header {header}: value contains a control character")]
    ControlCharacter {
        /// Header name.
        header: String,
    },
    /// The value is longer than [`MAX_IDENTITY_VALUE`].
    #[error(
        "identity header {header}: value is {len} bytes, over the {MAX_IDENTITY_VALUE} byte limit"
    )]
    TooLong {
        /// Header name.
        header: String,
        /// Its length.
        len: usize,
    },
}

/// An app's identity cookies (`[identity.cookies]`): sent to the backend in its `Cookie`
/// header, never to the browser; every client copy of these names is removed first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityCookies {
    cookies: Vec<(String, IdentitySource)>,
    /// Lenient spellings of the names, to strip client copies (see `cookie_name_key`).
    keys: Vec<String>,
}

impl IdentityCookies {
    /// The cookie names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.cookies.iter().map(|(n, _)| n.as_str())
    }

    /// Builds from validated names and sources.
    pub fn new(cookies: Vec<(String, IdentitySource)>) -> Self {
        let keys = cookies
            .iter()
            .map(|(n, _)| crate::session::cookies::cookie_name_key(n))
            .collect();
        Self { cookies, keys }
    }

    /// No cookies configured.
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    /// Name keys whose client copies must never reach the backend.
    pub fn strip_keys(&self) -> &[String] {
        &self.keys
    }

    /// Values for this user (a cookie whose source is absent is left out). Values that a
    /// cookie cannot carry unambiguously (`;`, `"`, `\`, spaces, controls) are refused.
    pub fn values(
        &self,
        user: &Identity,
        access_token: Option<&str>,
    ) -> Result<Vec<(String, String)>, InjectError> {
        let mut out = Vec::with_capacity(self.cookies.len());
        for (name, source) in &self.cookies {
            let Some(text) = value_of(source, user, access_token) else {
                continue;
            };
            if text.len() > MAX_IDENTITY_VALUE {
                return Err(InjectError::TooLong {
                    header: format!("cookie {name}"),
                    len: text.len(),
                });
            }
            if text
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || matches!(c, ';' | '"' | '\\'))
            {
                return Err(InjectError::UnsafeCookieValue {
                    cookie: name.clone(),
                });
            }
            out.push((name.clone(), text));
        }
        Ok(out)
    }
}

/// An app's identity headers, in the order the policy lists them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityHeaders {
    headers: Vec<(HeaderName, IdentitySource)>,
}

impl IdentityHeaders {
    /// Builds from validated pieces (`config::app` checks names and static values).
    pub fn new(headers: Vec<(HeaderName, IdentitySource)>) -> Self {
        Self { headers }
    }

    /// No headers configured.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The configured header names (to strip from every client request).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|(n, _)| n.as_str())
    }

    /// Values for this user. A header whose source is absent (no email, say) is left out:
    /// the client's copy has already been stripped, so the backend sees none.
    pub fn values(
        &self,
        user: &Identity,
        access_token: Option<&str>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, InjectError> {
        let mut out = Vec::with_capacity(self.headers.len());
        for (name, source) in &self.headers {
            let Some(text) = value_of(source, user, access_token) else {
                continue;
            };
            out.push((name.clone(), checked_value(name, &text)?));
        }
        Ok(out)
    }
}

/// The text a source gives for `user` (with their session's access token, if kept), if it
/// has one.
pub fn value_of(
    source: &IdentitySource,
    user: &Identity,
    access_token: Option<&str>,
) -> Option<String> {
    match source {
        IdentitySource::Subject => Some(user.subject.clone()),
        IdentitySource::Email => user.email.clone(),
        IdentitySource::Name => user.name.clone(),
        IdentitySource::Groups { pick } => pick.apply(&user.groups),
        IdentitySource::Idp => Some(user.idp.to_string()),
        IdentitySource::Acr => user.acr.as_deref().map(str::to_string),
        IdentitySource::Amr { pick } => {
            (!user.amr.is_empty() || *pick == Multi::Count).then(|| pick.apply(&user.amr))?
        }
        IdentitySource::Claim { name, pick } => user
            .claims
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, values)| pick.apply(values)),
        IdentitySource::Static(v) => Some(v.clone()),
        IdentitySource::Secret(s) => Some(s.expose().to_string()),
        IdentitySource::AccessToken => access_token.map(str::to_string),
    }
}

/// Refuses control characters (header splitting) and oversize values; UTF-8 passes as bytes.
pub fn checked_value(name: &HeaderName, text: &str) -> Result<HeaderValue, InjectError> {
    if text.len() > MAX_IDENTITY_VALUE {
        return Err(InjectError::TooLong {
            header: name.to_string(),
            len: text.len(),
        });
    }
    if text.chars().any(char::is_control) {
        return Err(InjectError::ControlCharacter {
            header: name.to_string(),
        });
    }
    HeaderValue::from_bytes(text.as_bytes()).map_err(|_| InjectError::ControlCharacter {
        header: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_becomes_one_value_joined_picked_or_counted() {
        let groups = ["staff", "hr", "it-admins"];
        assert_eq!(
            Multi::Join(";".into()).apply(&groups).as_deref(),
            Some("staff;hr;it-admins")
        );
        assert_eq!(Multi::Nth(1).apply(&groups).as_deref(), Some("hr"));
        assert_eq!(
            Multi::Nth(3).apply(&groups),
            None,
            "past the end: nothing sent"
        );
        assert_eq!(Multi::Count.apply(&groups).as_deref(), Some("3"));
        assert_eq!(Multi::Count.apply::<&str>(&[]).as_deref(), Some("0"));
    }

    fn alice() -> Identity {
        Identity {
            subject: "alice".into(),
            email: Some("alice@corp.example".into()),
            name: Some("Alice Ø".into()),
            groups: vec!["staff".into(), "finance".into()],
            idp: "okta".into(),
            ..Identity::default()
        }
    }

    fn headers(list: &[(&str, IdentitySource)]) -> IdentityHeaders {
        IdentityHeaders::new(
            list.iter()
                .map(|(n, s)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), s.clone()))
                .collect(),
        )
    }

    #[test]
    fn values_come_from_the_session_and_absent_ones_are_left_out() {
        let h = headers(&[
            ("X-Remote-User", IdentitySource::Email),
            (
                "X-Groups",
                IdentitySource::Groups {
                    pick: Multi::default(),
                },
            ),
            ("X-Name", IdentitySource::Name),
            ("X-Acr", IdentitySource::Acr),
        ]);
        let v = h.values(&alice(), None).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].1, "alice@corp.example");
        assert_eq!(v[1].1, "staff,finance");
        assert_eq!(v[2].1.as_bytes(), "Alice Ø".as_bytes());
    }

    #[test]
    fn control_characters_and_huge_values_are_refused() {
        let h = headers(&[("X-Name", IdentitySource::Name)]);
        for evil in ["a\r\nX-Admin: 1", "a\nb", "a\0b", "a\tb", "a\u{7f}"] {
            let mut user = alice();
            user.name = Some(evil.into());
            assert!(
                matches!(
                    h.values(&user, None),
                    Err(InjectError::ControlCharacter { .. })
                ),
                "{evil:?}"
            );
        }
        let mut user = alice();
        user.name = Some("x".repeat(MAX_IDENTITY_VALUE + 1));
        assert!(matches!(
            h.values(&user, None),
            Err(InjectError::TooLong { .. })
        ));
    }
}
