//! Identity delivery: what an app's backend learns about the signed-in user, exactly as its
//! policy's `[identity]` and `[form_fill]` say.
//!
//! Each app compiles its delivery into an ordered list of [`Step`]s (headers, cookies, the
//! signed assertion, form-fill, Basic replay). A request runs them phase by phase, the way
//! Pingora calls the proxy:
//!
//! - [`Delivery::prepare`] (request phase, once the rules allowed the request): computes what
//!   the backend gets, and may answer instead (the enrollment form, the app's start page);
//! - [`Delivery::upstream_request`]: everything stripped from and set on the upstream request,
//!   in one place;
//! - [`Delivery::upstream_response`] and [`Delivery::response_body`]: what the backend's answer
//!   means for the gateway's jar (form-fill cookies, a refused Basic password).
//!
//! Nothing here knows Pingora: the phases take `http` types and return edits for the proxy to
//! apply. The per-request state is one [`Outgoing`] value.

pub mod assertion;
pub mod basic;
pub mod form_fill;
pub mod identity;
pub mod jars;
pub mod vault;

use crate::idp::Identity;
use crate::session::SessionId;
use crate::upstream::{UpstreamTarget, UpstreamTimeouts, UpstreamTls};
use assertion::AssertionSigner;
use basic::BasicReplay;
use form_fill::{FormFill, FormFillError};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use identity::{IdentityCookies, IdentityHeaders, InjectError};
use jars::{BackendJars, SharedJar};
use thiserror::Error;
use tracing::warn;
use vault::{enrollment_path, user_key, Credential, Vault, VaultError};

/// One way of telling a backend who the user is.
#[derive(Debug, Clone)]
pub enum Step {
    /// `[identity.headers]`.
    Headers(IdentityHeaders),
    /// `[identity.cookies]`.
    Cookies(IdentityCookies),
    /// `jwt_header`: a signed assertion of the identity, in this header.
    Assertion(HeaderName),
    /// `[form_fill]`: the gateway logs in to the backend's own form.
    FormFill(FormFill),
    /// `[identity.basic]`: HTTP Basic credentials replayed.
    Basic(BasicReplay),
}

impl Step {
    /// Identity steps run on adaptive public paths too; credential steps (which log in or
    /// ask for a password) only where the rules allowed a signed-in user.
    fn carries_credentials(&self) -> bool {
        matches!(self, Step::FormFill(_) | Step::Basic(_))
    }
}

/// How one app receives identity: its steps, in the order they run.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    steps: Vec<Step>,
    /// Client cookies never passed on: the names of the identity cookies the gateway sets.
    identity_cookie_keys: Vec<String>,
    /// Client `Authorization` is never passed on: the gateway replays its own.
    replaces_authorization: bool,
}

/// How much of an app's delivery a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Headers, cookies and the assertion (a public path that adapts to a signed-in user).
    IdentityOnly,
    /// Every step (an allowed, signed-in request).
    Full,
}

/// The parts of the gateway delivery uses, which outlive a request.
pub struct Services<'a> {
    /// The credential vault, when configured.
    pub vault: Option<&'a Vault>,
    /// The assertion signer, when `[jwt]` is configured.
    pub assertions: Option<&'a AssertionSigner>,
    /// This node's backend jars.
    pub jars: &'a BackendJars,
    /// Now, in Unix seconds (assertion times).
    pub now_unix: u64,
}

/// The app's backend, as the proxy reaches it.
pub struct Backend<'a> {
    /// The app id.
    pub app: &'a str,
    /// The upstream a form-fill login goes to.
    pub target: Option<&'a UpstreamTarget>,
    /// The app's upstream TLS settings (the same the proxy uses).
    pub tls: &'a UpstreamTls,
    /// The app's upstream timeouts.
    pub timeouts: &'a UpstreamTimeouts,
    /// The app compares paths case-insensitively.
    pub fold_case: bool,
}

impl Backend<'_> {
    /// Do two paths name the same page of this app?
    fn same_path(&self, a: &str, b: &str) -> bool {
        if self.fold_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }
}

/// The signed-in request being delivered.
pub struct Recipient<'a> {
    /// Who signed in.
    pub identity: &'a Identity,
    /// Their session (jars and form tokens are bound to it).
    pub session: SessionId,
    /// The normalised path.
    pub path: &'a str,
    /// Path and query, to come back to after an enrollment or a backend logout.
    pub here: &'a str,
    /// A page the user opened (only those are sent to a form).
    pub navigation: bool,
    /// For audit records.
    pub request_id: &'a str,
}

/// What preparing decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Send the request to the backend.
    Send,
    /// Send the browser here instead (the enrollment form, the app's start page).
    Redirect(String),
}

/// Why identity could not be delivered.
#[derive(Debug, Error)]
pub enum DeliveryError {
    /// An identity value cannot be sent safely.
    #[error(transparent)]
    Identity(#[from] InjectError),
    /// Credentials are replayed, but there is neither a vault nor a service account.
    #[error("no credential store: no [vault] and no service account")]
    NoCredentialStore,
    /// The vault could not be read.
    #[error("vault read failed")]
    VaultRead(#[source] VaultError),
    /// The stored credential cannot be put in a header.
    #[error("the stored credential cannot be sent in a header")]
    UnsendableCredential,
    /// The app's password must be stored first, but the request is not a page navigation (a
    /// favicon, an XHR): it gets no enrollment redirect.
    #[error("the app's password is not stored yet (not a page navigation, so no redirect)")]
    CredentialRequired,
    /// The backend refused the app's service account.
    #[error("the backend refused the service account")]
    ServiceAccountRefused,
    /// The gateway could not log in to the backend's form.
    #[error("backend login")]
    BackendLogin(#[source] FormFillError),
    /// The app has no upstream to log in to.
    #[error("no upstream to log in to")]
    NoUpstream,
}

/// This request's delivery: what goes upstream, and what the response phases need.
#[derive(Debug, Default)]
pub struct Outgoing {
    headers: Vec<(HeaderName, HeaderValue)>,
    cookies: Vec<(String, String)>,
    /// Client cookies never passed on (the backend cookies the gateway holds).
    strip_cookie_keys: Vec<String>,
    /// The backend jar this request uses (form-fill cookies, cached Basic credentials).
    jar: Option<SharedJar>,
    /// Where the browser goes back to after a backend logout.
    retry_target: String,
    /// The request is a page the user opened.
    navigation: bool,
    /// A user is signed in.
    signed_in: bool,
    /// The last bytes of the response body seen (marker search across chunks).
    body_tail: Vec<u8>,
}

impl Outgoing {
    /// State for a request of a signed-in user (`navigation`: a page they opened).
    pub fn signed_in(navigation: bool) -> Self {
        Self {
            navigation,
            signed_in: true,
            ..Self::default()
        }
    }
}

/// What the proxy changes on the upstream request.
#[derive(Debug, Default, PartialEq)]
pub struct RequestEdits {
    /// `Cookie`: `None` leaves it as sent; `Some(None)` removes it; `Some(Some(v))` replaces it.
    pub cookie: Option<Option<String>>,
    /// Remove the client's `Authorization`.
    pub drop_authorization: bool,
    /// Headers set last (hygiene already removed every client-sent copy of these names).
    pub set: Vec<(HeaderName, HeaderValue)>,
}

/// What the proxy changes on the backend's response.
#[derive(Debug, Default, PartialEq)]
pub struct ResponseEdits {
    /// Remove every `Set-Cookie` (the gateway keeps them).
    pub drop_set_cookie: bool,
    /// Remove `WWW-Authenticate`.
    pub drop_www_authenticate: bool,
    /// New status.
    pub status: Option<u16>,
    /// New `Location`.
    pub location: Option<String>,
}

impl Delivery {
    /// A delivery of these steps, run in the order given.
    pub fn new(steps: Vec<Step>) -> Self {
        let identity_cookie_keys = steps
            .iter()
            .filter_map(|s| match s {
                Step::Cookies(c) => Some(c.strip_keys().to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        let replaces_authorization = steps.iter().any(|s| matches!(s, Step::Basic(_)));
        Self {
            steps,
            identity_cookie_keys,
            replaces_authorization,
        }
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Every header name this app's backend trusts for identity (stripped from every client
    /// request, on every host).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.steps
            .iter()
            .flat_map(|s| -> Box<dyn Iterator<Item = &str>> {
                match s {
                    Step::Headers(h) => Box::new(h.names()),
                    Step::Assertion(name) => Box::new(std::iter::once(name.as_str())),
                    _ => Box::new(std::iter::empty()),
                }
            })
    }

    /// The form-fill step, if any.
    pub fn form_fill(&self) -> Option<&FormFill> {
        self.steps.iter().find_map(|s| match s {
            Step::FormFill(f) => Some(f),
            _ => None,
        })
    }

    /// The Basic replay step, if any.
    pub fn basic(&self) -> Option<&BasicReplay> {
        self.steps.iter().find_map(|s| match s {
            Step::Basic(b) => Some(b),
            _ => None,
        })
    }

    /// Does the gateway replay a per-user password (so the user may store one)?
    pub fn replays_credentials(&self) -> bool {
        self.steps.iter().any(Step::carries_credentials)
    }

    /// Does the user type the account name too (it is not taken from the session)?
    pub fn asks_username(&self) -> bool {
        self.basic().is_some_and(|b| b.username.is_none())
            || self.form_fill().is_some_and(|f| f.username.is_none())
    }

    /// Request phase: runs the steps `reach` allows for `who`, filling `out`; a step may
    /// answer the browser instead (the remaining steps then do not run).
    pub async fn prepare(
        &self,
        reach: Reach,
        backend: &Backend<'_>,
        who: &Recipient<'_>,
        services: &Services<'_>,
        out: &mut Outgoing,
    ) -> Result<Prepared, DeliveryError> {
        for step in &self.steps {
            if reach == Reach::IdentityOnly && step.carries_credentials() {
                continue;
            }
            let prepared = match step {
                Step::Headers(h) => {
                    out.headers.extend(h.values(who.identity)?);
                    Prepared::Send
                }
                Step::Cookies(c) => {
                    out.cookies.extend(c.values(who.identity)?);
                    Prepared::Send
                }
                Step::Assertion(header) => {
                    if let Some(value) = signed_assertion(services, backend.app, who.identity) {
                        out.headers.push((header.clone(), value));
                    }
                    Prepared::Send
                }
                Step::FormFill(form) => {
                    form_fill::prepare(form, backend, who, services, out).await?
                }
                Step::Basic(b) => basic::prepare(b, backend.app, who, services, out).await?,
            };
            if prepared != Prepared::Send {
                return Ok(prepared);
            }
        }
        Ok(Prepared::Send)
    }

    /// Upstream request phase: strip, then set. The gateway's own cookies, the identity
    /// cookies it sets and the backend cookies it holds are never taken from the client; an
    /// app that gets replayed credentials never sees the client's `Authorization`.
    /// `client_cookies` are the request's `Cookie` headers.
    pub fn upstream_request(&self, out: &mut Outgoing, headers: &HeaderMap) -> RequestEdits {
        let mut strip = self.identity_cookie_keys.clone();
        strip.append(&mut out.strip_cookie_keys);
        let sent = headers.get_all(http::header::COOKIE);
        let rewrite = !strip.is_empty()
            || !out.cookies.is_empty()
            || sent
                .iter()
                .any(|v| crate::session::cookies::mentions_gateway_cookie(v.as_bytes()));
        let cookie = rewrite.then(|| {
            let add = std::mem::take(&mut out.cookies);
            crate::session::cookies::upstream_cookies(sent.iter(), &strip, &add)
        });
        RequestEdits {
            cookie,
            drop_authorization: self.replaces_authorization,
            set: std::mem::take(&mut out.headers),
        }
    }

    /// Upstream response phase: what the backend's answer means for the jar.
    pub async fn upstream_response(
        &self,
        app: &str,
        out: &Outgoing,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> ResponseEdits {
        let mut edits = ResponseEdits::default();
        for step in &self.steps {
            match step {
                Step::FormFill(form) => {
                    form_fill::upstream_response(form, out, status, headers, &mut edits).await;
                }
                Step::Basic(b) => basic::upstream_response(b, app, out, status, &mut edits).await,
                Step::Headers(_) | Step::Cookies(_) | Step::Assertion(_) => {}
            }
        }
        edits
    }

    /// Response body phase: one chunk of the backend's body.
    pub fn response_body(&self, out: &mut Outgoing, chunk: &[u8]) {
        if let Some(form) = self.form_fill() {
            form_fill::response_body(form, out, chunk);
        }
    }
}

/// The identity assertion's header value, or `None` (logged) when it cannot be made.
fn signed_assertion(services: &Services<'_>, app: &str, who: &Identity) -> Option<HeaderValue> {
    let signer = services.assertions?;
    match signer
        .sign(who, app, services.now_unix)
        .map(HeaderValue::try_from)
    {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            warn!(error = %e, "identity assertion is not a header value");
            None
        }
        Err(e) => {
            warn!(error = %e, "identity assertion not signed");
            None
        }
    }
}

/// The credential replayed for `who` at `app`: the service account, else the vault's entry
/// (`None`: the user has not stored one yet).
fn stored_credential(
    service: Option<&Credential>,
    app: &str,
    who: &Recipient<'_>,
    services: &Services<'_>,
) -> Result<Option<Credential>, DeliveryError> {
    match (service, services.vault) {
        (Some(service), _) => Ok(Some(service.clone())),
        (None, Some(vault)) => vault
            .get(app, &user_key(who.identity))
            .map_err(DeliveryError::VaultRead),
        (None, None) => Err(DeliveryError::NoCredentialStore),
    }
}

/// Sends a page load to the enrollment form (coming back here afterwards). Only a page the
/// user opened goes there: a browser's own requests (favicon, prefetch, XHR) are refused
/// instead, or they would race the visible form.
fn enroll(app: &str, who: &Recipient<'_>, failed: bool) -> Result<Prepared, DeliveryError> {
    if !who.navigation {
        return Err(DeliveryError::CredentialRequired);
    }
    Ok(Prepared::Redirect(format!(
        "{}?{}return_to={}",
        enrollment_path(app),
        if failed { "failed=1&" } else { "" },
        url::form_urlencoded::byte_serialize(who.here.as_bytes()).collect::<String>()
    )))
}
