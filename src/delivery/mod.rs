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
pub mod kerberos;
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
use kerberos::KerberosDelivery;
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
    /// `[identity.kerberos]`: a Kerberos ticket for the user (constrained delegation).
    Kerberos(KerberosDelivery),
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
    /// The gateway's Kerberos client, when `[kerberos]` is configured.
    pub kerberos: Option<&'a std::sync::Arc<crate::kerberos::KerberosClient>>,
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
    /// Their current access token, when their IdP's tokens are kept (refresh).
    pub access_token: Option<&'a str>,
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
    /// An app delivers Kerberos tickets, but the gateway has no `[kerberos]`.
    #[error("no [kerberos] service principal configured")]
    NoKerberos,
    /// No ticket for this user at the app's SPN.
    #[error(transparent)]
    Kerberos(crate::kerberos::KerberosError),
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
    /// The last bytes of the response body seen (marker search across chunks).
    body_tail: Vec<u8>,
}

impl Outgoing {
    /// State for a signed-in user's request (`navigation`: a page they opened).
    pub fn for_request(navigation: bool) -> Self {
        Self {
            navigation,
            ..Self::default()
        }
    }

    /// Does the backend's answer concern the gateway (a backend session or a replayed
    /// password is held for this request)? Only then do the response phases run.
    pub fn holds_backend_state(&self) -> bool {
        self.jar.is_some()
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
        let replaces_authorization = steps
            .iter()
            .any(|s| matches!(s, Step::Basic(_) | Step::Kerberos(_)));
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

    /// What the backend is given, in words (the auditor's report).
    pub fn describe(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Headers(h) => {
                    let names: Vec<&str> = h.names().collect();
                    format!("headers {}", names.join(", "))
                }
                Step::Cookies(c) => {
                    let names: Vec<&str> = c.names().collect();
                    format!("cookies {}", names.join(", "))
                }
                Step::Assertion(name) => format!("a signed JWT assertion in {name}"),
                Step::FormFill(f) => format!(
                    "form-fill: the gateway signs in at {} with the user's stored password",
                    f.login_url
                ),
                Step::Basic(b) if b.service.is_some() => {
                    "HTTP Basic with one service account".to_string()
                }
                Step::Basic(_) => "HTTP Basic with the user's stored password".to_string(),
                Step::Kerberos(k) => format!(
                    "Kerberos (Negotiate) tickets for {} by constrained delegation, as the user's principal from {}",
                    k.spn, k.principal_from
                ),
            })
            .collect()
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
            if reach == Reach::IdentityOnly
                && (step.carries_credentials() || matches!(step, Step::Kerberos(_)))
            {
                continue;
            }
            let prepared = match step {
                Step::Headers(h) => {
                    out.headers
                        .extend(h.values(who.identity, who.access_token)?);
                    Prepared::Send
                }
                Step::Cookies(c) => {
                    out.cookies
                        .extend(c.values(who.identity, who.access_token)?);
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
                Step::Kerberos(k) => kerberos::prepare(k, backend.app, who, services, out).await?,
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
        // Copied only for a request that also holds backend cookies.
        let strip: std::borrow::Cow<'_, [String]> = if out.strip_cookie_keys.is_empty() {
            std::borrow::Cow::Borrowed(&self.identity_cookie_keys)
        } else {
            let mut both = self.identity_cookie_keys.clone();
            both.append(&mut out.strip_cookie_keys);
            std::borrow::Cow::Owned(both)
        };
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
        if !out.holds_backend_state() {
            return edits;
        }
        for step in &self.steps {
            match step {
                Step::FormFill(form) => {
                    form_fill::upstream_response(form, out, status, headers, &mut edits).await;
                }
                Step::Basic(b) => basic::upstream_response(b, app, out, status, &mut edits).await,
                Step::Headers(_) | Step::Cookies(_) | Step::Assertion(_) | Step::Kerberos(_) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::identity::IdentitySource;
    use crate::secret::Secret;
    use std::time::Duration;

    fn user() -> Identity {
        Identity {
            subject: "00u1".into(),
            email: Some("ana@corp.example".into()),
            idp: "corp".into(),
            ..Identity::default()
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn service_basic() -> Step {
        Step::Basic(BasicReplay {
            username: None,
            service: Some(Credential {
                username: "svc".into(),
                password: Secret::new("S3rvice"),
            }),
        })
    }

    struct Setup {
        jars: BackendJars,
        tls: UpstreamTls,
        timeouts: UpstreamTimeouts,
        session: SessionId,
    }

    impl Setup {
        fn new() -> Self {
            Self {
                jars: BackendJars::new(100, Duration::from_secs(60)),
                tls: UpstreamTls {
                    verify: true,
                    ca: None,
                    client: None,
                    client_pem: None,
                    min_version: None,
                },
                timeouts: UpstreamTimeouts {
                    connect: Duration::from_secs(1),
                    read: Duration::from_secs(1),
                    write: Duration::from_secs(1),
                },
                session: SessionId::random().unwrap(),
            }
        }

        async fn prepare(
            &self,
            delivery: &Delivery,
            reach: Reach,
            navigation: bool,
            who: &Identity,
        ) -> (Result<Prepared, DeliveryError>, Outgoing) {
            self.prepare_with(delivery, reach, navigation, who, None)
                .await
        }

        async fn prepare_with(
            &self,
            delivery: &Delivery,
            reach: Reach,
            navigation: bool,
            who: &Identity,
            vault: Option<&Vault>,
        ) -> (Result<Prepared, DeliveryError>, Outgoing) {
            let backend = Backend {
                app: "app",
                target: None,
                tls: &self.tls,
                timeouts: &self.timeouts,
                fold_case: false,
            };
            let recipient = Recipient {
                identity: who,
                access_token: None,
                session: self.session,
                path: "/x",
                here: "/x?y=1",
                navigation,
                request_id: "r1",
            };
            let services = Services {
                vault,
                assertions: None,
                jars: &self.jars,
                now_unix: 1_800_000_000,
                kerberos: None,
            };
            let mut out = Outgoing::for_request(navigation);
            let prepared = delivery
                .prepare(reach, &backend, &recipient, &services, &mut out)
                .await;
            (prepared, out)
        }
    }

    #[tokio::test]
    async fn the_upstream_request_gets_identity_and_never_the_clients_copies() {
        let delivery = Delivery::new(vec![
            Step::Headers(IdentityHeaders::new(vec![(
                HeaderName::from_static("x-remote-user"),
                IdentitySource::Email,
            )])),
            Step::Cookies(IdentityCookies::new(vec![(
                "who".into(),
                IdentitySource::Subject,
            )])),
        ]);
        let setup = Setup::new();
        let (prepared, mut out) = setup.prepare(&delivery, Reach::Full, true, &user()).await;
        assert_eq!(prepared.unwrap(), Prepared::Send);
        let sent = headers(&[(
            "cookie",
            "theme=dark; who=admin; portcullis_session=sealed; WHO=admin",
        )]);
        let edits = delivery.upstream_request(&mut out, &sent);
        assert_eq!(edits.cookie, Some(Some("theme=dark; who=00u1".into())));
        assert!(
            !edits.drop_authorization,
            "no Basic step, the client's own stays"
        );
        assert_eq!(edits.set.len(), 1);
        assert_eq!(edits.set[0].0, "x-remote-user");
        assert_eq!(edits.set[0].1, "ana@corp.example");
        // A second phase call sends nothing twice.
        assert!(delivery.upstream_request(&mut out, &sent).set.is_empty());
    }

    #[tokio::test]
    async fn requests_without_delivery_still_lose_the_gateways_cookies() {
        let delivery = Delivery::default();
        let mut out = Outgoing::default();
        let plain = headers(&[("cookie", "a=1")]);
        assert_eq!(delivery.upstream_request(&mut out, &plain).cookie, None);
        let ours = headers(&[("cookie", "portcullis_session=x")]);
        assert_eq!(
            delivery.upstream_request(&mut out, &ours).cookie,
            Some(None),
            "the Cookie header goes when only the gateway's cookies were in it"
        );
    }

    #[tokio::test]
    async fn basic_replay_replaces_authorization_and_caches_it_per_session() {
        let delivery = Delivery::new(vec![service_basic()]);
        let setup = Setup::new();
        let (prepared, mut out) = setup.prepare(&delivery, Reach::Full, true, &user()).await;
        assert_eq!(prepared.unwrap(), Prepared::Send);
        let edits =
            delivery.upstream_request(&mut out, &headers(&[("authorization", "Basic Zm9yZ2Vk")]));
        assert!(edits.drop_authorization);
        let (name, value) = &edits.set[0];
        assert_eq!(name, http::header::AUTHORIZATION);
        assert_eq!(value, "Basic c3ZjOlMzcnZpY2U=");
        assert!(value.is_sensitive(), "never logged by http");
        let cached = setup.jars.existing(&setup.session, "app").unwrap();
        assert!(cached.lock().await.authorization.is_some());
        // Public adaptive paths get identity only: no credentials replayed there.
        let (_, mut public) = setup
            .prepare(&delivery, Reach::IdentityOnly, true, &user())
            .await;
        assert!(delivery
            .upstream_request(&mut public, &HeaderMap::new())
            .set
            .is_empty());
    }

    #[tokio::test]
    async fn a_user_without_a_stored_password_is_sent_to_enroll_only_from_a_page() {
        let delivery = Delivery::new(vec![Step::Basic(BasicReplay {
            username: None,
            service: None,
        })]);
        let setup = Setup::new();
        // No vault configured at all: an error, never an anonymous pass.
        let (prepared, _) = setup.prepare(&delivery, Reach::Full, true, &user()).await;
        assert!(matches!(prepared, Err(DeliveryError::NoCredentialStore)));
        // A vault without this user's password: a page goes to the form, anything else is
        // refused (a favicon must not race the visible form).
        let dir = tempfile::tempdir().unwrap();
        let key = crate::secret::SecretBytes::new(vec![7; 32]);
        let vault = Vault::new(&dir.path().join("vault.json"), vec![("k".into(), key)]).unwrap();
        let (page, _) = setup
            .prepare_with(&delivery, Reach::Full, true, &user(), Some(&vault))
            .await;
        assert_eq!(
            page.unwrap(),
            Prepared::Redirect("/.portcullis/credentials/app?return_to=%2Fx%3Fy%3D1".into())
        );
        let (favicon, _) = setup
            .prepare_with(&delivery, Reach::Full, false, &user(), Some(&vault))
            .await;
        assert!(matches!(favicon, Err(DeliveryError::CredentialRequired)));
    }

    #[tokio::test]
    async fn a_refused_basic_password_is_forgotten_and_pages_go_to_the_form() {
        let delivery = Delivery::new(vec![Step::Basic(BasicReplay {
            username: None,
            service: None,
        })]);
        let setup = Setup::new();
        let jar = setup.jars.for_session(&setup.session, "app");
        jar.lock().await.authorization = Some(HeaderValue::from_static("Basic eDp5"));
        for navigation in [true, false] {
            let (prepared, out) = setup
                .prepare(&delivery, Reach::Full, navigation, &user())
                .await;
            assert_eq!(
                prepared.unwrap(),
                Prepared::Send,
                "the cached value is used"
            );
            let edits = delivery
                .upstream_response("app", &out, StatusCode::UNAUTHORIZED, &HeaderMap::new())
                .await;
            assert!(edits.drop_www_authenticate, "no browser Basic prompt");
            assert!(jar.lock().await.authorization.is_none(), "forgotten");
            if navigation {
                assert_eq!(edits.status, Some(302));
                assert_eq!(
                    edits.location.as_deref(),
                    Some("/.portcullis/credentials/app?failed=1")
                );
            } else {
                assert_eq!(edits.status, None, "sub-requests keep the 401");
            }
            jar.lock().await.authorization = Some(HeaderValue::from_static("Basic eDp5"));
        }
        // A 401 to a request that replayed no password (a public path) is the backend's own.
        let untouched = delivery
            .upstream_response(
                "app",
                &Outgoing::for_request(true),
                StatusCode::UNAUTHORIZED,
                &HeaderMap::new(),
            )
            .await;
        assert_eq!(untouched, ResponseEdits::default());
        // Any other status means nothing.
        let (_, out) = setup.prepare(&delivery, Reach::Full, true, &user()).await;
        let ok = delivery
            .upstream_response("app", &out, StatusCode::OK, &HeaderMap::new())
            .await;
        assert_eq!(ok, ResponseEdits::default());
    }

    #[tokio::test]
    async fn a_form_fill_backends_cookies_stay_in_the_jar_and_its_logout_is_noticed() {
        let form = FormFill {
            login_url: "/login".into(),
            username_field: "u".into(),
            password_field: "p".into(),
            csrf_field: None,
            extra_fields: vec![],
            success_cookie: None,
            success_status: None,
            logged_out_marker: Some("Please sign in".into()),
            username: None,
            service: None,
        };
        let delivery = Delivery::new(vec![Step::FormFill(form)]);
        let setup = Setup::new();
        let jar = setup.jars.for_session(&setup.session, "app");
        {
            let mut held = jar.lock().await;
            held.logged_in = true;
            held.apply_set_cookie("APPSESSION=abc");
        }
        let (prepared, mut out) = setup.prepare(&delivery, Reach::Full, true, &user()).await;
        assert_eq!(prepared.unwrap(), Prepared::Send);
        // The jar's cookie replaces any the client sent under that name.
        let edits = delivery.upstream_request(
            &mut out,
            &headers(&[("cookie", "APPSESSION=stolen; theme=dark")]),
        );
        assert_eq!(
            edits.cookie,
            Some(Some("theme=dark; APPSESSION=abc".into()))
        );
        // The backend's new cookie goes to the jar, not the browser.
        let set = headers(&[("set-cookie", "APPSESSION=def; Path=/")]);
        let edits = delivery
            .upstream_response("app", &out, StatusCode::OK, &set)
            .await;
        assert!(edits.drop_set_cookie);
        assert_eq!(
            jar.lock().await.cookies,
            [("APPSESSION".into(), "def".into())]
        );
        // A redirect to its login page: logged out; the browser retries where it was.
        let to_login = headers(&[("location", "http://legacy.internal/login?next=/x")]);
        let edits = delivery
            .upstream_response("app", &out, StatusCode::FOUND, &to_login)
            .await;
        assert_eq!(edits.location.as_deref(), Some("/x?y=1"));
        assert!(!jar.lock().await.logged_in);
        // A page saying so, split across chunks, is noticed too.
        jar.lock().await.logged_in = true;
        delivery.response_body(&mut out, b"<p>Please si");
        assert!(jar.lock().await.logged_in);
        delivery.response_body(&mut out, b"gn in</p>");
        assert!(!jar.lock().await.logged_in);
    }
}
