//! Identity providers: who the user is, as proven by an IdP.
//!
//! Owns the protocol flows behind one small interface — start a login (a redirect to the
//! IdP), finish it (a verified [`Identity`]), and end it (the IdP's logout URL). The proxy
//! never sees tokens or protocol details; sessions store the [`Identity`] this returns.

pub mod health;
pub mod http;
pub mod inspect;
pub mod jwt;
pub mod oidc;
pub mod saml;

use crate::policy::UserFacts;
use std::borrow::Cow;
use std::sync::Arc;

/// How the browser is sent to the IdP to sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToIdp {
    /// A redirect to this URL (OIDC, SAML HTTP-Redirect).
    Redirect(String),
    /// A form posted to `action` (SAML HTTP-POST, for IdPs that require it).
    Post {
        /// The IdP's endpoint.
        action: String,
        /// The form's fields.
        fields: Vec<(&'static str, String)>,
    },
}

/// `text` safe to put in a log line: control characters (a signed SAML NameID may hold a
/// newline) are shown escaped, so no value can forge a log record.
pub fn loggable(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// An error and its causes on one line (openidconnect nests the useful part).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A signed-in user, as the IdP vouched for them at login.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The IdP's stable subject identifier (`sub`).
    pub subject: String,
    /// Email, only when the IdP did not say it is unverified.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Group names from the `groups` claim (shared copies: see [`crate::intern`]).
    pub groups: Vec<Arc<str>>,
    /// Extra claims the IdP's config asked to keep, as lists of strings.
    pub claims: Vec<(String, Vec<String>)>,
    /// Authentication context class reference (`acr`).
    pub acr: Option<Arc<str>>,
    /// Authentication methods (`amr`).
    pub amr: Vec<Arc<str>>,
    /// When the user last authenticated at the IdP (Unix seconds).
    pub auth_time: Option<u64>,
    /// Name of the IdP (as configured).
    pub idp: Arc<str>,
}

impl Identity {
    /// What the access rules look at.
    pub fn facts(&self) -> UserFacts<'_> {
        UserFacts {
            subject: &self.subject,
            email: self.email.as_deref(),
            name: self.name.as_deref(),
            groups: &self.groups,
            idp: &self.idp,
            acr: self.acr.as_deref(),
            amr: &self.amr,
            claims: &self.claims,
            auth_time: self.auth_time,
            scopes: &[],
        }
    }

    /// Who, for logs and audit: email when known, else the subject (control characters
    /// escaped).
    pub fn display(&self) -> Cow<'_, str> {
        loggable(self.email.as_deref().unwrap_or(&self.subject))
    }
}
