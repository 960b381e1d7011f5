//! The Pingora `ProxyHttp` implementation: wiring only.
//!
//! Each phase calls plain modules in the order of a request's journey — hygiene, route,
//! normalise, reserved paths, decide, act — and turns their typed answers into responses.
//! Nothing here decides policy or parses configuration.

mod credentials;
mod endpoints;
pub mod head_deadline;
mod respond;
mod saml;

use crate::audit::{self, AuditContext};
use crate::auth::{Origin, SessionLookup};
use crate::config::AppConfig;
use crate::framing::{self, FramingError, Upgrade};
use crate::gateway::{AppRuntime, Gateway, Route};
use crate::hygiene::{request_authority, ConnectionFacts};
use crate::inject::InjectError;
use crate::lifecycle::Lifecycle;
use crate::pages::Page;
use crate::policy::path::{normalise, normalise_keeping_encoded_slash, PathError};
use crate::policy::{Decision, RequestFacts};
use crate::reload::SharedGateway;
use crate::routing::normalise_host;
use crate::session::cookies::{clear_session_cookie, mentions_gateway_cookie, upstream_cookies};
use crate::session::pending::StepUp;
use crate::session::{Scope, Session as UserSession, SessionId};
use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;
use tracing::{info, info_span, warn, Span};

/// The path prefix the gateway answers itself on every host; never proxied.
pub const RESERVED_PREFIX: &str = "/.portcullis";

/// Largest total of request header names and values accepted, like common servers (nginx
/// allows 4 × 8 KiB); legacy backends often fail in odd ways on larger headers.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why the gateway answered a request itself instead of proxying it.
#[derive(Debug, Error)]
pub enum RequestError {
    /// No usable Host header or authority.
    #[error("missing or invalid host")]
    BadHost,
    /// Several Host headers: different servers would pick different ones.
    #[error("several Host headers")]
    DuplicateHost,
    /// Headers larger than [`MAX_HEADER_BYTES`].
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
    /// No app serves this host.
    #[error("no app for this host")]
    NoRoute,
    /// The host has apps, but none at this path.
    #[error("no app at this path on this host")]
    NoAppAtPath,
    /// The app's policy failed to load.
    #[error("app unavailable: policy failed to load")]
    AppUnavailable,
    /// A deny rule matched.
    #[error("denied by rule {0}")]
    Denied(String),
    /// No allow rule matched (default deny).
    #[error("no allow rule matched")]
    NoAllowRule,
    /// Sign-in needed, but the request is not a page navigation.
    #[error("sign-in required (not a page navigation, so no redirect)")]
    LoginRequired,
    /// The app's password must be stored first, but the request is not a page navigation
    /// (a favicon, an XHR): it gets no enrollment redirect.
    #[error("the app's password is not stored yet (not a page navigation, so no redirect)")]
    CredentialRequired,
    /// A gateway form came back with a token that does not belong to this session.
    #[error("form token does not match this session (expired form or forged post)")]
    FormExpired,
    /// A stronger sign-in is needed, but the request is not a page navigation.
    #[error("stronger sign-in required (not a page navigation, so no redirect)")]
    StepUpRequired,
    /// The app's IdP is not discovered yet.
    #[error("identity provider `{0}` not reachable yet")]
    SignInUnavailable(String),
    /// A login could not start or finish.
    #[error("sign-in failed: {0}")]
    SignInFailed(String),
    /// A login could not finish because the IdP could not be reached.
    #[error("sign-in failed, identity provider unreachable: {0}")]
    IdpUnreachable(String),
    /// The user's identity cannot be sent safely.
    #[error(transparent)]
    Identity(#[from] InjectError),
    /// The gateway could not log in to the backend's own form.
    #[error("backend login: {0}")]
    BackendLogin(String),
}

impl RequestError {
    /// The page shown for this refusal.
    pub fn page(&self) -> Page {
        match self {
            RequestError::BadHost
            | RequestError::DuplicateHost
            | RequestError::BadPath(_)
            | RequestError::BadFraming(_) => Page::BadRequest,
            RequestError::HeadersTooLarge => Page::HeadersTooLarge,
            RequestError::UnknownEndpoint | RequestError::NoRoute => Page::NotFound,
            RequestError::NoAppAtPath => Page::NoSuchPage,
            RequestError::MethodNotAllowed => Page::MethodNotAllowed,
            RequestError::BodyTooLarge(_) => Page::PayloadTooLarge,
            RequestError::BodyUnreadable(_) => Page::BadRequest,
            RequestError::AppUnavailable => Page::Unavailable,
            RequestError::Denied(_) | RequestError::NoAllowRule => Page::Forbidden,
            RequestError::LoginRequired | RequestError::StepUpRequired => Page::LoginRequired,
            RequestError::CredentialRequired => Page::CredentialRequired,
            RequestError::FormExpired => Page::FormExpired,
            RequestError::IdpUnreachable(_) => Page::IdpUnreachable,
            RequestError::SignInUnavailable(_) => Page::SignInUnavailable,
            RequestError::SignInFailed(_) => Page::SignInFailed,
            RequestError::Identity(_) => Page::Internal,
            RequestError::BackendLogin(_) => Page::BadGateway,
        }
    }
}

/// Per-request state: only what this request computed.
pub struct RequestCtx {
    started: Instant,
    span: Span,
    request_id: String,
    client_ip: Option<IpAddr>,
    path: String,
    /// The normalised host (no port).
    host: String,
    app: Option<Arc<AppRuntime>>,
    rule: Option<String>,
    upstream: Option<usize>,
    /// Upstreams this request could not connect to (a retry goes elsewhere).
    tried: Vec<usize>,
    gateway_status: Option<u16>,
    secure: bool,
    user: Option<Arc<UserSession>>,
    /// The id of `user`'s session (for values bound to it, like form tokens).
    session_id: Option<SessionId>,
    inject: Vec<(HeaderName, HeaderValue)>,
    inject_cookies: Vec<(String, String)>,
    /// Client cookies never passed on (names of the backend cookies the gateway holds).
    strip_cookie_keys: Vec<String>,
    /// The backend jar this request uses (form-fill cookies, cached Basic credentials).
    backend_jar: Option<Arc<tokio::sync::Mutex<crate::session::backend::BackendJar>>>,
    /// The request target as the browser sent it (to retry after a backend logout).
    original_target: String,
    /// The last bytes of the response body seen (marker search across chunks).
    body_tail: Vec<u8>,
    /// `Set-Cookie` that deletes a session cookie naming no usable session, so the browser
    /// stops sending it.
    clear_stale: Option<String>,
    /// The protocol switch the request genuinely asked for (a WebSocket handshake), which a
    /// backend's `101` must answer.
    upgrade: Upgrade,
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
    /// Answer with a small JSON document (no cookies).
    Json {
        /// HTTP status.
        status: u16,
        /// The document.
        body: String,
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
    /// Answer with a gateway page (e.g. signed out), setting cookies.
    Page {
        /// The page.
        page: Page,
        /// `Set-Cookie` values.
        cookies: Vec<String>,
    },
}

/// Where an admitted request goes next.
enum Admitted {
    /// A `/.portcullis/` endpoint on this host.
    Endpoint(Origin),
    /// An app.
    App(Arc<AppRuntime>, Origin),
}

/// The proxy service.
pub struct Proxy {
    gateway: SharedGateway,
    lifecycle: Arc<Lifecycle>,
}

impl Proxy {
    /// A proxy over shared gateway state (swapped as a whole on reload).
    pub fn new(gateway: SharedGateway, lifecycle: Arc<Lifecycle>) -> Self {
        Self { gateway, lifecycle }
    }

    /// The journey for one request: admit, then the endpoint or the app's decision.
    async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        gateway: &Arc<Gateway>,
    ) -> Result<Action, RequestError> {
        match self.admit(session, ctx, gateway)? {
            Admitted::Endpoint(origin) => endpoints::serve(session, ctx, gateway, &origin).await,
            Admitted::App(app, origin) => self.decide(session, ctx, gateway, app, origin).await,
        }
    }

    /// Steps 1-4 and routing: hygiene, limits, host, path, reserved prefix, app.
    fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        gateway: &Gateway,
    ) -> Result<Admitted, RequestError> {
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header_mut();
        let forwarding = gateway.hygiene.apply(req, ConnectionFacts { peer, tls });
        // Pingora reads only the first `Connection` header when deciding keep-alive; a
        // draining gateway asks every client to reconnect (to another node).
        if forwarding.close_requested || self.lifecycle.is_draining() {
            session.set_keepalive(None);
        }
        let req = session.req_header_mut();
        framing::single_content_length(req)?;
        ctx.upgrade = framing::screen_upgrade(req);
        ctx.request_id = forwarding.request_id;
        ctx.secure = forwarding.proto == "https";
        ctx.client_ip = forwarding.client_ip;
        let span = info_span!("request", request_id = %ctx.request_id, app = tracing::field::Empty, rule = tracing::field::Empty);
        ctx.span = span;

        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        if header_bytes > MAX_HEADER_BYTES {
            return Err(RequestError::HeadersTooLarge);
        }
        if req.headers.get_all("host").iter().count() > 1 {
            return Err(RequestError::DuplicateHost);
        }
        let authority = request_authority(req).ok_or(RequestError::BadHost)?;
        let host = normalise_host(&authority).ok_or(RequestError::BadHost)?;
        ctx.host = host;
        let origin = Origin {
            secure: ctx.secure,
            authority: authority.to_ascii_lowercase(),
        };
        let path = match normalise(req.uri.path()) {
            Ok(p) => p,
            // An encoded slash reaches only an app whose policy opted in to it.
            Err(PathError::EncodedSeparator) => {
                let lenient = normalise_keeping_encoded_slash(req.uri.path())?;
                match gateway.route(&ctx.host, &lenient) {
                    Some(Route::App(app)) if app.config.allow_encoded_slash => lenient,
                    _ => return Err(PathError::EncodedSeparator.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        ctx.path = path;

        if crate::routing::under_prefix(&ctx.path, RESERVED_PREFIX) {
            return Ok(Admitted::Endpoint(origin));
        }
        let app = match gateway.route(&ctx.host, &ctx.path) {
            None if gateway.serves_host(&ctx.host) => return Err(RequestError::NoAppAtPath),
            None => return Err(RequestError::NoRoute),
            Some(Route::Unavailable(broken)) => {
                ctx.span.record("app", broken.id.as_deref().unwrap_or("?"));
                return Err(RequestError::AppUnavailable);
            }
            Some(Route::App(app)) => app.clone(),
        };
        ctx.span.record("app", app.config.id.as_str());
        ctx.app = Some(app.clone());
        Ok(Admitted::App(app, origin))
    }

    /// Steps 5-7: session, decision, action.
    async fn decide(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        gateway: &Arc<Gateway>,
        app: Arc<AppRuntime>,
        origin: Origin,
    ) -> Result<Action, RequestError> {
        let config = &app.config;
        let rule_path = config.rules.rule_path(&ctx.path);
        if config
            .logout_path
            .as_deref()
            .is_some_and(|p| config.rules.rule_path(p) == rule_path)
        {
            // The gateway's logout endpoint does it: the browser sends the ID-token cookie
            // only there.
            return Ok(Action::Redirect {
                location: crate::auth::LOGOUT_PATH.to_string(),
                cookies: Vec::new(),
            });
        }
        if config.idp.is_some() {
            Self::attach_session(session, ctx, gateway, config, &origin).await;
        }
        let req = session.req_header();
        let facts = RequestFacts {
            method: &req.method,
            path: &ctx.path,
            client_ip: ctx.client_ip,
            now: crate::clock::unix_now(),
        };
        let user_facts = ctx.user.as_ref().map(|u| u.identity.facts());
        let verdict = config.rules.evaluate(&facts, user_facts.as_ref());
        let decision = verdict.decision;
        if let Some(rule) = decision.rule() {
            ctx.span.record("rule", rule);
            ctx.rule = Some(rule.to_string());
        }
        for hit in &verdict.shadow {
            ctx.span.in_scope(|| {
                info!(
                    rule = hit.rule,
                    would = hit.would,
                    decided = decision.name(),
                    "shadow rule would {} this request",
                    hit.would
                )
            });
        }
        // The record (and the reason it spells out) is only built when someone listens: the
        // log at info, or the audit file.
        if tracing::enabled!(target: "audit", tracing::Level::INFO) {
            let reason = config.rules.reason(&decision, &facts, user_facts.as_ref());
            let shadow: Vec<String> = verdict
                .shadow
                .iter()
                .map(|h| format!("{}:{}", h.would, h.rule))
                .collect();
            audit::access_decision(
                &ctx.audit(&config.id),
                &audit::AccessRecord {
                    decision: decision.name(),
                    rule: decision.rule().unwrap_or("-"),
                    reason: &reason,
                    shadow: &shadow.join(","),
                    user: ctx.user.as_ref().map(|u| &u.identity),
                    method: req.method.as_str(),
                    path: &ctx.path,
                    policy_sha256: &config.policy_sha256,
                },
            );
        }
        match decision {
            Decision::Public { adaptive, .. } => {
                if let (true, Some(user)) = (adaptive, ctx.user.clone()) {
                    ctx.inject = config.identity.values(&user.identity)?;
                    ctx.inject_cookies = config.identity_cookies.values(&user.identity)?;
                    Self::add_assertion(ctx, gateway, config, &user.identity);
                }
                Ok(Action::Proxy)
            }
            Decision::Allow { .. } => {
                if let Some(user) = ctx.user.clone() {
                    ctx.inject = config.identity.values(&user.identity)?;
                    ctx.inject_cookies = config.identity_cookies.values(&user.identity)?;
                    Self::add_assertion(ctx, gateway, config, &user.identity);
                    let here = match req.uri.query() {
                        Some(q) => format!("{}?{q}", ctx.path),
                        None => ctx.path.clone(),
                    };
                    if let Some(action) = Self::prepare_form_fill(
                        endpoints::is_navigation(req),
                        ctx,
                        gateway,
                        config,
                        &user,
                        &here,
                    )
                    .await?
                    {
                        return Ok(action);
                    }
                    if let Some(enroll) =
                        Self::add_basic(ctx, gateway, config, &user, &here).await?
                    {
                        if !endpoints::is_navigation(req) {
                            return Err(RequestError::CredentialRequired);
                        }
                        return Ok(Action::Redirect {
                            location: enroll,
                            cookies: Vec::new(),
                        });
                    }
                }
                Ok(Action::Proxy)
            }
            Decision::Deny { rule } | Decision::Unmet { rule } => {
                Err(RequestError::Denied(rule.to_string()))
            }
            Decision::StepUp { rule } => {
                let (Some(user), Some(required)) = (&ctx.user, config.rules.rule(rule)) else {
                    return Err(RequestError::Denied(rule.to_string()));
                };
                if !endpoints::is_navigation(req) {
                    return Err(RequestError::StepUpRequired);
                }
                let strength = required.strength();
                let step_up = StepUp {
                    rule: rule.to_string(),
                    subject: user.identity.subject.clone(),
                    acr: strength.acr.clone(),
                    amr: strength.amr.clone(),
                    max_age: strength.max_age,
                    started_unix: crate::clock::unix_now(),
                };
                let return_to = match req.uri.query() {
                    Some(q) => format!("{}?{q}", ctx.path),
                    None => ctx.path.clone(),
                };
                endpoints::start_login(ctx, gateway, &app, &origin, &return_to, Some(step_up)).await
            }
            Decision::NoAllowMatched => Err(RequestError::NoAllowRule),
            Decision::LoginNeeded => {
                if !endpoints::is_navigation(req) {
                    return Err(RequestError::LoginRequired);
                }
                let return_to = match req.uri.query() {
                    Some(q) => format!("{}?{q}", ctx.path),
                    None => ctx.path.clone(),
                };
                endpoints::start_login(ctx, gateway, &app, &origin, &return_to, None).await
            }
        }
    }

    /// Form-fill: makes sure the gateway is logged in to the backend for this user (once, even
    /// for concurrent first requests), and sends the backend's cookies. Returns where to send
    /// the browser instead (the enrollment page, or the start page for the backend's own
    /// login page).
    async fn prepare_form_fill(
        navigation: bool,
        ctx: &mut RequestCtx,
        gateway: &Gateway,
        config: &AppConfig,
        user: &Arc<UserSession>,
        here: &str,
    ) -> Result<Option<Action>, RequestError> {
        let Some(form) = &config.form_fill else {
            return Ok(None);
        };
        // Only a page the user opened is sent to the enrollment form: a browser's own requests
        // (favicon, prefetch, XHR) are refused instead, or they would race the visible form.
        let enroll = |failed: bool| {
            if !navigation {
                return Err(RequestError::CredentialRequired);
            }
            Ok(Some(Action::Redirect {
                location: format!(
                    "{}?{}return_to={}",
                    crate::vault::enrollment_path(&config.id),
                    if failed { "failed=1&" } else { "" },
                    url::form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>()
                ),
                cookies: Vec::new(),
            }))
        };
        let start_page = || {
            Some(Action::Redirect {
                location: "/".to_string(),
                cookies: Vec::new(),
            })
        };
        let jar = user.backends.for_app(&config.id);
        let mut held = jar.lock().await;
        if !held.logged_in {
            let stored = match (&form.service, &gateway.vault) {
                (Some(service), _) => Ok(Some(service.clone())),
                (None, Some(vault)) => {
                    vault.get(&config.id, &crate::vault::user_key(&user.identity))
                }
                (None, None) => return Err(RequestError::Identity(InjectError::NoCredential)),
            };
            let stored = stored.map_err(|e| {
                ctx.span.in_scope(|| warn!(error = %e, "vault read failed"));
                RequestError::Identity(InjectError::NoCredential)
            })?;
            let Some(credential) = stored else {
                return enroll(false);
            };
            let username = match &form.username {
                None => credential.username.clone(),
                Some(source) => crate::inject::value_of(source, &user.identity).unwrap_or_default(),
            };
            let target = config
                .upstreams
                .first()
                .ok_or_else(|| RequestError::BackendLogin("no upstream".into()))?;
            match crate::formfill::login(target, &config.upstream_tls, &config.timeouts, form, &username, &credential.password, &mut held).await {
                Ok(()) => ctx.span.in_scope(|| {
                    info!(target: "audit", event = "backend_login", app = %config.id, user = %user.identity.display(), request_id = %ctx.request_id, "form-fill login to the backend")
                }),
                Err(crate::formfill::FormFillError::Refused) if form.service.is_some() => {
                    return Err(RequestError::BackendLogin(
                        "the backend refused the service account".into(),
                    ));
                }
                Err(crate::formfill::FormFillError::Refused) => {
                    ctx.span.in_scope(|| info!(app = %config.id, "backend refused the stored credentials"));
                    return enroll(true);
                }
                Err(e) => return Err(RequestError::BackendLogin(e.to_string())),
            }
        }
        // The browser never needs the backend's own login page once the gateway is logged in.
        if config.rules.rule_path(&ctx.path) == config.rules.rule_path(&form.login_url) {
            return Ok(start_page());
        }
        ctx.strip_cookie_keys.extend(
            held.cookies
                .iter()
                .map(|(n, _)| crate::session::cookies::cookie_name_key(n)),
        );
        ctx.inject_cookies.extend(held.cookies.iter().cloned());
        drop(held);
        ctx.backend_jar = Some(jar);
        ctx.original_target = here.to_string();
        Ok(None)
    }

    /// HTTP Basic replay: adds `Authorization` from the vault. Returns the enrollment page to
    /// send the user to when no credential is stored yet.
    async fn add_basic(
        ctx: &mut RequestCtx,
        gateway: &Gateway,
        config: &AppConfig,
        user: &Arc<UserSession>,
        here: &str,
    ) -> Result<Option<String>, RequestError> {
        let Some(basic) = &config.basic else {
            return Ok(None);
        };
        let jar = user.backends.for_app(&config.id);
        let mut held = jar.lock().await;
        if let Some(value) = held.authorization.clone() {
            drop(held);
            ctx.inject.push((http::header::AUTHORIZATION, value));
            ctx.backend_jar = Some(jar);
            return Ok(None);
        }
        let stored = match (&basic.service, &gateway.vault) {
            (Some(service), _) => Ok(Some(service.clone())),
            (None, Some(vault)) => vault.get(&config.id, &crate::vault::user_key(&user.identity)),
            (None, None) => return Err(RequestError::Identity(InjectError::NoCredential)),
        };
        let stored = stored.map_err(|e| {
            ctx.span.in_scope(|| warn!(error = %e, "vault read failed"));
            RequestError::Identity(InjectError::NoCredential)
        })?;
        let Some(credential) = stored else {
            return Ok(Some(format!(
                "{}?return_to={}",
                crate::vault::enrollment_path(&config.id),
                url::form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>()
            )));
        };
        let username = match &basic.username {
            None => credential.username.clone(),
            Some(source) => crate::inject::value_of(source, &user.identity).unwrap_or_default(),
        };
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{username}:{}", credential.password.expose()));
        let mut value = HeaderValue::try_from(format!("Basic {token}"))
            .map_err(|_| RequestError::Identity(InjectError::NoCredential))?;
        value.set_sensitive(true);
        held.authorization = Some(value.clone());
        drop(held);
        ctx.inject.push((http::header::AUTHORIZATION, value));
        ctx.backend_jar = Some(jar);
        Ok(None)
    }

    /// Adds the signed identity assertion header, when the app asks for one.
    fn add_assertion(
        ctx: &mut RequestCtx,
        gateway: &Gateway,
        config: &AppConfig,
        user: &crate::idp::Identity,
    ) {
        let (Some(header), Some(signer)) = (&config.jwt_header, &gateway.assertions) else {
            return;
        };
        match signer
            .sign(user, &config.id, crate::clock::unix_now())
            .map(HeaderValue::try_from)
        {
            Ok(Ok(value)) => ctx.inject.push((header.clone(), value)),
            Ok(Err(e)) => ctx
                .span
                .in_scope(|| warn!(error = %e, "identity assertion is not a header value")),
            Err(e) => ctx
                .span
                .in_scope(|| warn!(error = %e, "identity assertion not signed")),
        }
    }

    /// Step 5: the browser's session for this app, if any. A cookie that names no usable
    /// session counts as none (logged, and deleted in the response); expiry is audited.
    pub(crate) async fn attach_session(
        session: &Session,
        ctx: &mut RequestCtx,
        gateway: &Gateway,
        config: &AppConfig,
        origin: &Origin,
    ) {
        let Some(idp) = config.idp.as_deref() else {
            return;
        };
        let scope = Scope {
            host: &ctx.host,
            idp,
        };
        let lookup = gateway
            .auth
            .lookup(
                session.req_header().headers.get_all("cookie").iter(),
                origin.secure,
                scope,
                config.session_idle,
                config.session_absolute,
            )
            .await;
        match lookup {
            SessionLookup::Found { id, session } => {
                ctx.user = Some(session);
                ctx.session_id = Some(id);
            }
            SessionLookup::None => {}
            // Valid elsewhere, not here: the request is anonymous for this app, and the
            // cookie stays (the app's own login replaces it).
            SessionLookup::NotHere(reason) => {
                ctx.span
                    .in_scope(|| info!(reason, "session not valid for this app"));
            }
            SessionLookup::Rejected(reason) => {
                ctx.span
                    .in_scope(|| info!(reason, "session cookie ignored"));
                ctx.clear_stale = Some(clear_session_cookie(origin.secure));
            }
            SessionLookup::Expired(ended, why) => {
                ctx.clear_stale = Some(clear_session_cookie(origin.secure));
                audit::session_expired(&ctx.audit(&config.id), &ended, why);
            }
        }
    }
}

impl RequestCtx {
    /// This request's context for an audit record about `app`.
    fn audit<'a>(&'a self, app: &'a str) -> AuditContext<'a> {
        AuditContext {
            request_id: &self.request_id,
            client_ip: self.client_ip,
            app,
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            span: Span::none(),
            request_id: String::new(),
            client_ip: None,
            path: String::new(),
            host: String::new(),
            app: None,
            rule: None,
            upstream: None,
            tried: Vec::new(),
            gateway_status: None,
            secure: false,
            user: None,
            session_id: None,
            inject: Vec::new(),
            inject_cookies: Vec::new(),
            strip_cookie_keys: Vec::new(),
            backend_jar: None,
            original_target: String::new(),
            body_tail: Vec::new(),
            clear_stale: None,
            upgrade: Upgrade::None,
        }
    }

    async fn early_request_filter(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        head_deadline::mark_head_arrived();
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // One consistent snapshot for the whole request, even if a reload lands meanwhile.
        let gateway = self.gateway.load_full();
        match self.handle(session, ctx, &gateway).await {
            Ok(Action::Proxy) => Ok(false),
            Ok(Action::Redirect {
                location,
                mut cookies,
            }) => {
                cookies.extend(ctx.clear_stale.take());
                ctx.gateway_status = Some(302);
                respond::redirect(session, &location, &cookies, &ctx.request_id).await?;
                Ok(true)
            }
            Ok(Action::Json { status, body }) => {
                ctx.gateway_status = Some(status);
                let cookies: Vec<String> = ctx.clear_stale.take().into_iter().collect();
                respond::document(
                    session,
                    status,
                    "application/json",
                    body,
                    &ctx.request_id,
                    &cookies,
                )
                .await?;
                Ok(true)
            }
            Ok(Action::Html { body, cookies }) => {
                ctx.gateway_status = Some(200);
                respond::document(
                    session,
                    200,
                    "text/html; charset=utf-8",
                    body,
                    &ctx.request_id,
                    &cookies,
                )
                .await?;
                Ok(true)
            }
            Ok(Action::Xml { body }) => {
                ctx.gateway_status = Some(200);
                respond::document(
                    session,
                    200,
                    "application/samlmetadata+xml",
                    body,
                    &ctx.request_id,
                    &[],
                )
                .await?;
                Ok(true)
            }
            Ok(Action::Page { page, cookies }) => {
                ctx.gateway_status = Some(page.status());
                let extra: Vec<(&'static str, String)> = cookies
                    .into_iter()
                    .chain(ctx.clear_stale.take())
                    .map(|c| ("Set-Cookie", c))
                    .collect();
                respond::page_with(session, page, &ctx.request_id, true, &extra).await?;
                Ok(true)
            }
            Err(refusal) => {
                let page = refusal.page();
                ctx.span
                    .in_scope(|| info!(reason = %refusal, status = page.status(), "refused"));
                ctx.gateway_status = Some(page.status());
                let mut extra: Vec<(&'static str, String)> = Vec::new();
                extra.extend(ctx.clear_stale.take().map(|c| ("Set-Cookie", c)));
                if let RequestError::StepUpRequired = refusal {
                    extra.push((
                        "WWW-Authenticate",
                        format!(
                            "Portcullis error=\"insufficient_user_authentication\", login_url=\"{}\"",
                            crate::auth::LOGIN_PATH
                        ),
                    ));
                }
                if let RequestError::LoginRequired = refusal {
                    let realm = ctx
                        .app
                        .as_ref()
                        .map_or("portcullis", |a| a.config.id.as_str());
                    extra.push((
                        "WWW-Authenticate",
                        format!(
                            "Portcullis realm=\"{realm}\", login_url=\"{}\"",
                            crate::auth::LOGIN_PATH
                        ),
                    ));
                }
                // Refusals tell a signed-in user who they are signed in as, so they can see a
                // wrong account and switch.
                let who = matches!(page, Page::Forbidden)
                    .then(|| ctx.user.as_ref().map(|u| u.identity.display().into_owned()))
                    .flatten();
                respond::page_for(session, page, &ctx.request_id, who.as_deref(), true, &extra)
                    .await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some(app) = &ctx.app else {
            return Error::e_explain(
                ErrorType::InternalError,
                "no app chosen before upstream_peer",
            );
        };
        let Some((index, peer)) = app.next_peer(&ctx.tried) else {
            return Err(
                Error::explain(ErrorType::ConnectError, "no upstream left to try").into_up(),
            );
        };
        ctx.upstream = Some(index);
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(app), Some(i)) = (&ctx.app, ctx.upstream) {
            app.connected(i);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let upstream = upstream_url(ctx).unwrap_or_default().to_string();
        ctx.span
            .in_scope(|| warn!(%upstream, peer = %peer, error = %e, "upstream connect failed"));
        if let (Some(app), Some(i)) = (ctx.app.clone(), ctx.upstream) {
            ctx.tried.push(i);
            if let crate::upstream::Standing::Ejected(cooldown) = app.connect_failed(i) {
                ctx.span.in_scope(|| {
                    warn!(%upstream, cooldown_ms = u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX), "upstream ejected after consecutive connect failures")
                });
            }
            // Try another upstream (never one this request already tried) until each has had
            // its chance.
            if ctx.tried.len() < app.upstream_count() {
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The upstream gets exactly the path the policy judged.
        if upstream.uri.path() != ctx.path {
            let target = match session.req_header().uri.query() {
                Some(q) => format!("{}?{q}", ctx.path),
                None => ctx.path.clone(),
            };
            let uri = target.parse::<http::Uri>().or_err(
                ErrorType::InternalError,
                "normalised path is not a valid URI",
            )?;
            upstream.set_uri(uri);
        }
        if let (Some(app), Some(i)) = (&ctx.app, ctx.upstream) {
            if !app.config.preserve_host {
                if let Some(target) = app.config.upstreams.get(i) {
                    upstream.insert_header("Host", target.host_header.as_str())?;
                }
            }
        }
        // The gateway's own cookies (session, login binding) are never the backend's business;
        // an app's identity cookies come only from the gateway.
        let mut strip: Vec<String> = ctx.app.as_ref().map_or(Vec::new(), |a| {
            a.config.identity_cookies.strip_keys().to_vec()
        });
        strip.extend(std::mem::take(&mut ctx.strip_cookie_keys));
        let cookies = upstream.headers.get_all("cookie");
        let rewrite = !strip.is_empty()
            || !ctx.inject_cookies.is_empty()
            || cookies
                .iter()
                .any(|v| mentions_gateway_cookie(v.as_bytes()));
        if rewrite {
            let add = std::mem::take(&mut ctx.inject_cookies);
            let kept = upstream_cookies(cookies.iter(), &strip, &add);
            upstream.remove_header("cookie");
            if let Some(kept) = kept {
                upstream.insert_header("Cookie", kept)?;
            }
        }
        // An app that gets replayed credentials never sees the client's own Authorization.
        if ctx.app.as_ref().is_some_and(|a| a.config.basic.is_some()) {
            upstream.remove_header("authorization");
        }
        // Identity last: hygiene already removed every client-sent copy of these names.
        for (name, value) in std::mem::take(&mut ctx.inject) {
            upstream.insert_header(name, value)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        response.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        // A 101 turns the connection into a tunnel the rules never see again: only a genuine
        // answer to this request's own WebSocket handshake may do that.
        if response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            if let Err(refused) = framing::check_switch(response, &ctx.upgrade) {
                ctx.span
                    .in_scope(|| warn!(reason = %refused, "protocol switch refused"));
                return Err(
                    Error::explain(ErrorType::InvalidHTTPHeader, refused.to_string()).into_up(),
                );
            }
        }
        // Form-fill: the backend's cookies stay in the gateway's jar, never reach the browser; a
        // redirect to its login page means it logged the user out: retry, and log in again.
        if let (Some(jar), Some(app)) = (ctx.backend_jar.clone(), ctx.app.clone()) {
            if let Some(form) = &app.config.form_fill {
                let mut held = jar.lock().await;
                for value in response.headers.get_all("set-cookie") {
                    if let Ok(text) = value.to_str() {
                        held.apply_set_cookie(text);
                    }
                }
                response.remove_header("set-cookie");
                let to_login = response.status.is_redirection()
                    && response
                        .headers
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .is_some_and(|l| crate::formfill::points_at_login(l, &form.login_url));
                let just_logged_in = held
                    .last_login
                    .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(5));
                if to_login {
                    held.reset();
                    if !just_logged_in {
                        response.insert_header("Location", ctx.original_target.as_str())?;
                        ctx.span.in_scope(|| info!(app = %app.config.id, "backend session ended: logging in again on the next request"));
                    }
                }
            }
        }
        // The backend refused the replayed password: send the user to update it.
        if let Some(app) = ctx
            .app
            .as_ref()
            .filter(|a| a.config.basic.as_ref().is_some_and(|b| b.service.is_none()))
        {
            if response.status == http::StatusCode::UNAUTHORIZED && ctx.user.is_some() {
                if let Some(jar) = &ctx.backend_jar {
                    jar.lock().await.authorization = None;
                }
                // A browser's own sub-requests keep the 401 (without the backend's Basic
                // challenge); only pages go to the form.
                if !endpoints::is_navigation(session.req_header()) {
                    response.remove_header("www-authenticate");
                } else {
                    let location =
                        format!("{}?failed=1", crate::vault::enrollment_path(&app.config.id));
                    response.set_status(302)?;
                    response.insert_header("Location", location)?;
                    response.remove_header("www-authenticate");
                    ctx.span.in_scope(|| info!(app = %app.config.id, "backend refused the replayed password: asking the user to update it"));
                }
            }
        }
        if let Some(clear) = ctx.clear_stale.take() {
            response.append_header("Set-Cookie", clear)?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        // Form-fill: a page saying "you are logged out" means the backend session is gone; the
        // next request logs in again. (The marker may straddle two chunks: keep a short tail.)
        let marker = ctx
            .app
            .as_ref()
            .and_then(|a| a.config.form_fill.as_ref())
            .and_then(|f| f.logged_out_marker.clone());
        if let (Some(marker), Some(chunk), Some(jar)) = (marker, body.as_ref(), &ctx.backend_jar) {
            let mut window = std::mem::take(&mut ctx.body_tail);
            window.extend_from_slice(chunk);
            if window.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                if let Ok(mut held) = jar.try_lock() {
                    held.reset();
                }
                ctx.span.in_scope(|| info!("backend page says the user is logged out: logging in again on the next request"));
            }
            let keep = marker.len().saturating_sub(1).min(window.len());
            ctx.body_tail = window.split_off(window.len() - keep);
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let page = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(400)) => Some(Page::BadRequest),
            (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
                Some(Page::GatewayTimeout)
            }
            (ErrorSource::Upstream, _) => Some(Page::BadGateway),
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => None,
            (ErrorSource::Downstream, _) => Some(Page::BadRequest),
            (ErrorSource::Internal | ErrorSource::Unset, _) => Some(Page::Internal),
        };
        let upstream = upstream_url(ctx).unwrap_or_default();
        ctx.span.in_scope(|| warn!(%upstream, error = %e, status = page.map_or(0, Page::status), "request failed"));
        let code = match page {
            Some(page) => {
                if let Err(write_err) = respond::page(session, page, &ctx.request_id, false).await {
                    ctx.span
                        .in_scope(|| warn!(error = %write_err, "could not send error page"));
                }
                page.status()
            }
            None => 0,
        };
        ctx.gateway_status = Some(code);
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session
            .response_written()
            .map_or(ctx.gateway_status.unwrap_or(0), |r| r.status.as_u16());
        let req = session.req_header();
        let app = ctx.app.as_ref().map_or("-", |a| a.config.id.as_str());
        let upstream = upstream_url(ctx).unwrap_or("-");
        let path = if ctx.path.is_empty() {
            req.uri.path()
        } else {
            ctx.path.as_str()
        };
        info!(
            target: "portcullis::access",
            request_id = %ctx.request_id,
            client = %ctx.client_ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            app,
            method = %req.method,
            path,
            status,
            rule = ctx.rule.as_deref().unwrap_or("-"),
            user = %ctx.user.as_ref().map_or(std::borrow::Cow::Borrowed("-"), |u| u.identity.display()),
            upstream = %upstream,
            duration_ms = u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "access"
        );
    }

    fn request_summary(&self, session: &Session, ctx: &Self::CTX) -> String {
        // Pingora's default includes the query string, which may carry codes or tokens.
        let req = session.req_header();
        let path = if ctx.path.is_empty() {
            req.uri.path()
        } else {
            ctx.path.as_str()
        };
        format!("{} {} request_id={}", req.method, path, ctx.request_id)
    }
}

fn upstream_url(ctx: &RequestCtx) -> Option<&str> {
    let app = ctx.app.as_ref()?;
    app.config
        .upstreams
        .get(ctx.upstream?)
        .map(|u| u.url.as_str())
}
