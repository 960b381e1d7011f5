//! One request's context, what the gateway does with it, and why it refused.

use crate::audit::AuditContext;
use crate::auth::CallbackError;
use crate::delivery::vault::VaultError;
use crate::delivery::{DeliveryError, Outgoing};
use crate::framing::{FramingError, Upgrade};
use crate::gateway::AppRuntime;
use crate::idp::saml::SamlError;
use crate::pages::Page;
use crate::policy::path::PathError;
pub use crate::policy::Outcome;
use crate::session::{Session as UserSession, SessionId};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;
use tracing::Span;

/// Per-request state: only what this request computed.
pub struct RequestCtx {
    pub(crate) started: Instant,
    pub(crate) span: Span,
    pub(crate) request_id: String,
    pub(crate) client_ip: Option<IpAddr>,
    /// The normalised path.
    pub(crate) path: String,
    /// The normalised host (no port).
    pub(crate) host: String,
    /// `host[:port]` as the browser sent it (validated): the public origin's authority.
    pub(crate) authority: String,
    pub(crate) app: Option<Arc<AppRuntime>>,
    /// What the rules decided, and by which rule.
    pub(crate) outcome: Option<Outcome>,
    pub(crate) rule: Option<String>,
    pub(crate) upstream: Option<usize>,
    /// When `upstream` was chosen (its response time, in metrics).
    pub(crate) upstream_chosen: Option<Instant>,
    /// Upstreams this request could not connect to (a retry goes elsewhere).
    pub(crate) tried: Vec<usize>,
    pub(crate) gateway_status: Option<u16>,
    pub(crate) secure: bool,
    pub(crate) user: Option<Arc<UserSession>>,
    /// The id of `user`'s session (for values bound to it, like form tokens and jars).
    pub(crate) session_id: Option<SessionId>,
    /// The API caller's access token, when `user` came from one rather than a session.
    pub(crate) bearer: Option<crate::bearer::BearerCaller>,
    /// What the backend is told about the user, and what its answer means (`delivery`).
    pub(crate) delivery: Outgoing,
    /// `Set-Cookie` that deletes a session cookie naming no usable session, so the browser
    /// stops sending it.
    pub(crate) clear_stale: Option<String>,
    /// The protocol switch the request genuinely asked for (a WebSocket handshake), which a
    /// backend's `101` must answer.
    pub(crate) upgrade: Upgrade,
    /// The body rewriter of an app that writes its internal name into pages (`rewrite`).
    pub(crate) body_rewrite: Option<Box<crate::rewrite::BodyRewriter>>,
}

impl RequestCtx {
    /// A context for a request that has just arrived.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            span: Span::none(),
            request_id: String::new(),
            client_ip: None,
            path: String::new(),
            host: String::new(),
            authority: String::new(),
            app: None,
            outcome: None,
            rule: None,
            upstream: None,
            upstream_chosen: None,
            tried: Vec::new(),
            gateway_status: None,
            secure: false,
            user: None,
            session_id: None,
            bearer: None,
            delivery: Outgoing::default(),
            clear_stale: None,
            upgrade: Upgrade::None,
            body_rewrite: None,
        }
    }

    /// This request's context for an audit record about `app`.
    pub(crate) fn audit<'a>(&'a self, app: &'a str) -> AuditContext<'a> {
        self.audit_maybe(Some(app))
    }

    /// This request's context for an audit record about `app`, when one is known.
    pub(crate) fn audit_maybe<'a>(&'a self, app: Option<&'a str>) -> AuditContext<'a> {
        AuditContext {
            request_id: &self.request_id,
            client_ip: self.client_ip,
            app,
        }
    }

    /// The URL of the upstream this request went to, if it got that far.
    pub(crate) fn upstream_url(&self) -> Option<&str> {
        let app = self.app.as_ref()?;
        app.config
            .upstreams()
            .get(self.upstream?)
            .map(|u| u.url.as_str())
    }

    /// The path for logs: the normalised one once known (never the query, which may carry
    /// codes or tokens).
    pub(crate) fn logged_path<'a>(&'a self, raw: &'a str) -> &'a str {
        if self.path.is_empty() {
            raw
        } else {
            &self.path
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// What the gateway does with a request it has admitted.
pub enum Action {
    /// Send it to the app's backend.
    Proxy,
    /// Redirect the browser (login, callback, logout), setting cookies.
    Redirect {
        /// `Location`.
        location: String,
        /// `Set-Cookie` values.
        cookies: Vec<String>,
    },
    /// Send the browser to the IdP with an auto-submitted form (SAML HTTP-POST binding),
    /// setting cookies.
    PostToIdp {
        /// The IdP endpoint.
        action: String,
        /// The form's fields.
        fields: Vec<(&'static str, String)>,
        /// `Set-Cookie` values.
        cookies: Vec<String>,
    },
    /// Answer with a small JSON document (no cookies).
    Json {
        /// HTTP status.
        status: u16,
        /// The document.
        body: String,
    },
    /// Answer with a status and no body (`204 No Content`, `202 Accepted`).
    Empty {
        /// HTTP status.
        status: u16,
    },
    /// Answer with an XML document (SAML metadata).
    Xml {
        /// The document.
        body: String,
    },
    /// Answer with a gateway HTML form (credential enrollment), setting cookies.
    Html {
        /// The page.
        body: String,
        /// `Set-Cookie` values.
        cookies: Vec<String>,
    },
    /// The app's "down for maintenance" page (503).
    Maintenance {
        /// The page.
        body: String,
        /// `Retry-After`, seconds.
        retry_after: Option<u64>,
    },
    /// Answer with a gateway page (e.g. signed out), setting cookies.
    Page {
        /// The page.
        page: Page,
        /// `Set-Cookie` values.
        cookies: Vec<String>,
    },
}

impl Action {
    /// A redirect that sets no cookie.
    pub fn redirect(location: impl Into<String>) -> Self {
        Action::Redirect {
            location: location.into(),
            cookies: Vec::new(),
        }
    }
}

/// Why the gateway answered a request itself instead of proxying it.
#[derive(Debug, Error)]
pub enum RequestError {
    /// No usable Host header or authority.
    #[error("missing or invalid host")]
    BadHost,
    /// Several Host headers, or an HTTP/2 `:authority` and `host` that disagree: different
    /// servers would pick different ones.
    #[error("several Host headers, or a host that disagrees with :authority")]
    DuplicateHost,
    /// Headers larger than the limit.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The path is ambiguous or malformed.
    #[error("refused path: {0}")]
    BadPath(#[from] PathError),
    /// The request's framing could be read two ways (RFC 9112 §6.3).
    #[error("refused framing: {0}")]
    BadFraming(#[from] FramingError),
    /// A `/.portcullis/` path with no endpoint behind it (yet).
    #[error("unknown gateway endpoint")]
    UnknownEndpoint,
    /// A gateway endpoint called with a method it does not take.
    #[error("method not allowed on this gateway endpoint")]
    MethodNotAllowed,
    /// A request body above the endpoint's limit.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The request body could not be read.
    #[error("cannot read request body: {0}")]
    BodyUnreadable(String),
    /// A gateway form came back without a field it needs.
    #[error("form incomplete: {0}")]
    FormIncomplete(&'static str),
    /// No app serves this host.
    #[error("no app for this host")]
    NoRoute,
    /// The host has apps, but none at this path.
    #[error("no app at this path on this host")]
    NoAppAtPath,
    /// The app's policy failed to load.
    #[error("app unavailable: policy failed to load")]
    AppUnavailable,
    /// A rule refused the request (a deny rule, an unmet require rule, a step-up that cannot
    /// be asked for).
    #[error("{} by rule {rule}", match outcome { Outcome::Unmet => "requirement unmet", Outcome::StepUpRefused => "stronger sign-in impossible", _ => "denied" })]
    Denied {
        /// Which kind of refusal.
        outcome: Outcome,
        /// The rule.
        rule: String,
    },
    /// No allow rule matched (default deny).
    #[error("no allow rule matched")]
    NoAllowRule,
    /// Sign-in needed, but the request is not a page navigation.
    #[error("sign-in required (not a page navigation, so no redirect)")]
    LoginRequired,
    /// An API caller's bearer token was refused (RFC 6750 answer).
    #[error(transparent)]
    Bearer(#[from] crate::bearer::BearerError),
    /// A gateway form came back with a token that does not belong to this session.
    #[error("form token does not match this session (expired form or forged post)")]
    FormExpired,
    /// A stronger sign-in is needed, but the request is not a page navigation.
    #[error("stronger sign-in required (not a page navigation, so no redirect)")]
    StepUpRequired,
    /// The app's IdP is not discovered yet.
    #[error("identity provider `{0}` not reachable yet")]
    SignInUnavailable(String),
    /// Too many sign-in requests from this address or to this host (retry after seconds).
    #[error("sign-in rate limit reached (retry after {0} s)")]
    TooManySignIns(u64),
    /// A login could not start.
    #[error("sign-in could not start")]
    LoginNotStarted(#[source] CallbackError),
    /// A login could not finish.
    #[error("sign-in failed")]
    LoginFailed(#[source] CallbackError),
    /// The SAML service provider could not answer (its metadata).
    #[error("SAML")]
    Saml(#[source] SamlError),
    /// An IdP-initiated logout was refused.
    #[error("IdP-initiated logout refused")]
    LogoutRefused(#[source] SamlError),
    /// A login could not finish because the IdP could not be reached.
    #[error("sign-in failed, identity provider unreachable")]
    IdpUnreachable(#[source] CallbackError),
    /// The user's identity cannot be delivered to the backend.
    #[error("identity delivery")]
    Delivery(#[from] DeliveryError),
    /// A credential could not be written to the vault.
    #[error("credential not stored")]
    CredentialNotStored(#[source] VaultError),
    /// The session store does not answer: nobody's session can be checked or kept.
    #[error("session store unavailable")]
    StoreUnavailable(#[source] crate::session::StoreError),
    /// The directory could not be read when this session signed in, and the app needs it.
    #[error("the session has no directory attributes (the lookup failed at sign-in) and this app refuses it without them")]
    DirectoryUnavailable,
    /// Something the gateway needs itself failed (no random bytes, say).
    #[error("internal: {0}")]
    Internal(&'static str),
}

impl RequestError {
    /// The page shown for this refusal.
    pub fn page(&self) -> Page {
        match self {
            RequestError::BadHost
            | RequestError::DuplicateHost
            | RequestError::BadPath(_)
            | RequestError::BadFraming(_)
            | RequestError::BodyUnreadable(_)
            | RequestError::FormIncomplete(_) => Page::BadRequest,
            RequestError::HeadersTooLarge => Page::HeadersTooLarge,
            RequestError::UnknownEndpoint | RequestError::NoRoute => Page::NotFound,
            RequestError::NoAppAtPath => Page::NoSuchPage,
            RequestError::MethodNotAllowed => Page::MethodNotAllowed,
            RequestError::BodyTooLarge(_) => Page::PayloadTooLarge,
            RequestError::AppUnavailable => Page::Unavailable,
            RequestError::Denied { .. } | RequestError::NoAllowRule => Page::Forbidden,
            RequestError::LoginRequired | RequestError::StepUpRequired => Page::LoginRequired,
            RequestError::FormExpired => Page::FormExpired,
            RequestError::IdpUnreachable(_) => Page::IdpUnreachable,
            RequestError::StoreUnavailable(_) => Page::StoreUnavailable,
            RequestError::DirectoryUnavailable => Page::DirectoryUnavailable,
            RequestError::SignInUnavailable(_) => Page::SignInUnavailable,
            RequestError::TooManySignIns(_) => Page::TooManySignIns,
            RequestError::Bearer(e) => match e.status() {
                400 => Page::BadRequest,
                401 => Page::LoginRequired,
                403 => Page::Forbidden,
                _ => Page::SignInUnavailable,
            },
            RequestError::LoginNotStarted(_)
            | RequestError::LoginFailed(_)
            | RequestError::Saml(_)
            | RequestError::LogoutRefused(_) => Page::SignInFailed,
            RequestError::Delivery(e) => match e {
                DeliveryError::CredentialRequired => Page::CredentialRequired,
                DeliveryError::ServiceAccountRefused
                | DeliveryError::BackendLogin(_)
                | DeliveryError::NoUpstream => Page::BadGateway,
                DeliveryError::Identity(_) => Page::IdentityUndeliverable,
                DeliveryError::Kerberos(k) if k.is_the_users() => Page::KerberosNoAccount,
                DeliveryError::Kerberos(_) | DeliveryError::NoKerberos => Page::KerberosUnavailable,
                DeliveryError::NoCredentialStore
                | DeliveryError::VaultRead(_)
                | DeliveryError::UnsendableCredential => Page::Internal,
            },
            RequestError::CredentialNotStored(_) | RequestError::Internal(_) => Page::Internal,
        }
    }
}
