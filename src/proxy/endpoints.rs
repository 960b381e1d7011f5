//! The gateway's own endpoints under `/.portcullis/`: one table of (path, methods, handler),
//! then the handlers — wiring between the request and `auth`, plus the audit records of each
//! outcome. A new endpoint (a POST from an IdP, say) is one row.

use super::ctx::{Action, RequestCtx, RequestError};
use super::login::start_login;
use crate::audit;
use crate::auth::{
    safe_return_to, CallbackError, Origin, CALLBACK_PATH, LOGGED_OUT_PATH, LOGIN_PATH, LOGOUT_PATH,
    USERINFO_PATH,
};
use crate::delivery::assertion::JWKS_PATH;
use crate::delivery::vault::ENROLL_PREFIX;
use crate::gateway::{Gateway, Route};
use crate::idp::oidc::LoginError;
use crate::idp::saml::{ACS_PATH, METADATA_PATH, SLO_PATH};
use crate::metrics::LoginOutcome;
use crate::pages::Page;
use crate::routing::normalise_host;
use crate::session::cookies::request_cookies;
use http::Method;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Where an IdP posts OpenID Connect back-channel logout tokens.
pub const BACKCHANNEL_LOGOUT_PATH: &str = "/.portcullis/oidc/backchannel-logout";
/// Largest back-channel logout form accepted (a logout token is a few KB).
const MAX_LOGOUT_TOKEN_BODY: usize = 16 * 1024;
/// Where Okta Universal Logout sends Global Token Revocation requests.
pub const GLOBAL_TOKEN_REVOCATION_PATH: &str = "/.portcullis/global-token-revocation";
/// Where a Shared Signals transmitter pushes security event tokens (RFC 8935).
pub const SECURITY_EVENTS_PATH: &str = "/.portcullis/ssf/events";
/// Largest signal body accepted (a subject identifier or one SET).
const MAX_SIGNAL_BODY: usize = 32 * 1024;

/// What a handler returns: its answer, later.
type Reply<'a> = Pin<Box<dyn Future<Output = Result<Action, RequestError>> + Send + 'a>>;

/// One endpoint's handler.
type Handler =
    for<'a> fn(&'a mut Session, &'a mut RequestCtx, &'a Arc<Gateway>, &'a Origin) -> Reply<'a>;

/// Which paths an endpoint answers.
enum Paths {
    /// Exactly this path.
    Exact(&'static str),
    /// This prefix and anything below it.
    Under(&'static str),
}

/// One row of the table.
struct Endpoint {
    paths: Paths,
    methods: &'static [Method],
    handler: Handler,
}

const READ: &[Method] = &[Method::GET, Method::HEAD];
const READ_OR_POST: &[Method] = &[Method::GET, Method::HEAD, Method::POST];
const POST: &[Method] = &[Method::POST];

/// Turns an `async fn(session, ctx, gateway, origin)` into a table [`Handler`].
macro_rules! handler {
    ($f:path) => {{
        fn boxed<'a>(
            session: &'a mut Session,
            ctx: &'a mut RequestCtx,
            gateway: &'a Arc<Gateway>,
            origin: &'a Origin,
        ) -> Reply<'a> {
            Box::pin($f(session, ctx, gateway, origin))
        }
        boxed as Handler
    }};
}

/// Every endpoint of the gateway, on every app host.
const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        paths: Paths::Exact(CALLBACK_PATH),
        methods: READ,
        handler: handler!(callback),
    },
    Endpoint {
        paths: Paths::Exact(LOGIN_PATH),
        methods: READ,
        handler: handler!(login),
    },
    Endpoint {
        paths: Paths::Exact(LOGOUT_PATH),
        methods: READ,
        handler: handler!(logout),
    },
    Endpoint {
        paths: Paths::Exact(LOGGED_OUT_PATH),
        methods: READ,
        handler: handler!(signed_out),
    },
    Endpoint {
        paths: Paths::Exact(USERINFO_PATH),
        methods: READ,
        handler: handler!(userinfo),
    },
    Endpoint {
        paths: Paths::Exact(JWKS_PATH),
        methods: READ,
        handler: handler!(jwks),
    },
    Endpoint {
        paths: Paths::Exact(METADATA_PATH),
        methods: READ,
        handler: handler!(super::saml::metadata),
    },
    Endpoint {
        paths: Paths::Exact(ACS_PATH),
        methods: POST,
        handler: handler!(super::saml::acs),
    },
    Endpoint {
        paths: Paths::Exact(SLO_PATH),
        methods: READ_OR_POST,
        handler: handler!(super::saml::slo),
    },
    Endpoint {
        paths: Paths::Exact(BACKCHANNEL_LOGOUT_PATH),
        methods: POST,
        handler: handler!(backchannel_logout),
    },
    Endpoint {
        paths: Paths::Exact(GLOBAL_TOKEN_REVOCATION_PATH),
        methods: POST,
        handler: handler!(global_token_revocation),
    },
    Endpoint {
        paths: Paths::Exact(SECURITY_EVENTS_PATH),
        methods: POST,
        handler: handler!(security_events),
    },
    Endpoint {
        paths: Paths::Under(ENROLL_PREFIX),
        methods: READ_OR_POST,
        handler: handler!(super::credentials::serve),
    },
];

/// Answers a `/.portcullis/*` request from the table: an unknown path is 404, a known one
/// with a method it does not take 405.
pub async fn serve(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Result<Action, RequestError> {
    let endpoint = ENDPOINTS
        .iter()
        .find(|e| match e.paths {
            Paths::Exact(path) => ctx.path == path,
            Paths::Under(prefix) => ctx.path.starts_with(prefix),
        })
        .ok_or(RequestError::UnknownEndpoint)?;
    if !endpoint.methods.contains(&session.req_header().method) {
        return Err(RequestError::MethodNotAllowed);
    }
    (endpoint.handler)(session, ctx, gateway, origin).await
}

/// `/.portcullis/login?return_to=…`: starts a login for the app at `return_to` on this host.
async fn login(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Result<Action, RequestError> {
    let query = query_pairs(session.req_header());
    let wanted = query
        .iter()
        .find(|(k, _)| k == "return_to")
        .map_or("/", |(_, v)| v.as_str());
    let return_to = safe_return_to(wanted);
    let path = return_to.split(['?', '#']).next().unwrap_or("/");
    let host = normalise_host(&origin.authority).ok_or(RequestError::BadHost)?;
    let app = match gateway.route(&host, path) {
        Some(Route::App(app)) if app.config.idp().is_some() => app.clone(),
        _ => return Err(RequestError::NoRoute),
    };
    ctx.app = Some(app.clone());
    start_login(ctx, gateway, &app, origin, &return_to, None).await
}

/// The signed-out page.
async fn signed_out(
    _session: &mut Session,
    _ctx: &mut RequestCtx,
    _gateway: &Arc<Gateway>,
    _origin: &Origin,
) -> Result<Action, RequestError> {
    Ok(Action::Page {
        page: Page::SignedOut,
        cookies: Vec::new(),
    })
}

/// The public keys identity assertions are signed with (only when `[jwt]` is configured).
async fn jwks(
    _session: &mut Session,
    _ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    _origin: &Origin,
) -> Result<Action, RequestError> {
    let signer = gateway
        .assertions
        .as_ref()
        .ok_or(RequestError::UnknownEndpoint)?;
    Ok(Action::Json {
        status: 200,
        body: signer.jwks(),
    })
}

async fn callback(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Result<Action, RequestError> {
    super::login::within_login_limits(ctx, gateway)?;
    let req = session.req_header();
    let query = query_pairs(req);
    let cookies = request_cookies(req.headers.get_all("cookie").iter());
    let limits = |app_id: &str| gateway.session_limits(app_id);
    match gateway
        .auth
        .finish_login(&query, &cookies, origin, limits)
        .await
    {
        Ok(signed_in) => {
            let app = signed_in.session.app.clone();
            ctx.span.record("app", &*app);
            audit::login_succeeded(&ctx.audit(&app), &signed_in.session.identity);
            super::login::login_counted(&signed_in, "oidc");
            if let Some(rule) = &signed_in.stepped_up_for {
                audit::stepped_up(&ctx.audit(&app), &signed_in.session.identity, rule);
            }
            ctx.user = Some(signed_in.session);
            Ok(Action::Redirect {
                location: signed_in.return_to,
                cookies: signed_in.cookies,
            })
        }
        Err((error, pending)) => {
            let app = pending.as_ref().map(|p| p.app.as_str());
            let idp = pending.as_ref().map(|p| p.idp.as_str());
            audit::login_failed(&ctx.audit_maybe(app), idp, &error);
            crate::metrics::login(idp, "oidc", LoginOutcome::Failure, error.code());
            if let CallbackError::Login(LoginError::Unreachable(_) | LoginError::NotReady) = error {
                return Err(RequestError::IdpUnreachable(error));
            }
            if let CallbackError::Store(e) = error {
                return Err(RequestError::StoreUnavailable(e));
            }
            Err(RequestError::LoginFailed(error))
        }
    }
}

/// The signed-in user of this host's app as JSON, or 401. Never tokens or session ids.
async fn userinfo(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Result<Action, RequestError> {
    let host = normalise_host(&origin.authority).ok_or(RequestError::BadHost)?;
    let app = match gateway.route(&host, "/") {
        Some(Route::App(app)) if app.config.idp().is_some() => app.clone(),
        _ => return Err(RequestError::NoRoute),
    };
    super::decide::attach_session(session, ctx, gateway, &app.config, origin).await;
    ctx.app = Some(app);
    let Some(user) = &ctx.user else {
        return Ok(Action::Json {
            status: 401,
            body: serde_json::json!({ "error": "not signed in", "login_url": LOGIN_PATH })
                .to_string(),
        });
    };
    let who = &user.identity;
    let body = serde_json::json!({
        "subject": who.subject,
        "email": who.email,
        "name": who.name,
        "groups": who.groups,
        "idp": who.idp,
        "acr": who.acr,
        "amr": who.amr,
        "auth_time": who.auth_time,
        "app": &*user.app,
        "signed_in_at": user.created_unix(),
    });
    Ok(Action::Json {
        status: 200,
        body: body.to_string(),
    })
}

/// Ends the session here and sends the browser to the IdP's logout.
async fn logout(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Result<Action, RequestError> {
    let cookies = request_cookies(session.req_header().headers.get_all("cookie").iter());
    let out = gateway.auth.logout(&cookies, origin).await;
    let app = out
        .session
        .as_ref()
        .map(|s| s.app.to_string())
        .or_else(|| ctx.app.as_ref().map(|a| a.config.id().to_string()));
    let record = ctx.audit_maybe(app.as_deref());
    audit::logged_out(&record, out.session.as_ref().map(|s| &s.identity));
    for other in &out.family {
        audit::session_ended(&record, other, audit::SignInEnded::LogoutElsewhere);
    }
    if let Some(e) = &out.incomplete {
        ctx.span.in_scope(
            || tracing::warn!(error = %e, "logout: the session store could not end the session"),
        );
        return Ok(Action::Page {
            page: crate::pages::Page::SignOutIncomplete,
            cookies: out.cookies,
        });
    }
    Ok(Action::Redirect {
        location: out.location,
        cookies: out.cookies,
    })
}

/// `POST /.portcullis/oidc/backchannel-logout` (OpenID Connect Back-Channel Logout 1.0): an
/// IdP, not a browser, on any host. 200 when the sessions ended, 400 with a JSON error when
/// the token is refused or the store could not end them (§2.8).
async fn backchannel_logout(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    _origin: &Origin,
) -> Result<Action, RequestError> {
    let form = super::saml::read_form(session, MAX_LOGOUT_TOKEN_BODY).await?;
    let token = form
        .iter()
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.as_str());
    let result = match token {
        Some(token) => crate::signals::backchannel_logout(&gateway.auth, token).await,
        None => Err(crate::signals::BackchannelError::Missing),
    };
    match result {
        Ok((idp, ended)) => {
            crate::metrics::signal("backchannel_logout", true);
            let record = ctx.audit_maybe(None);
            for s in &ended {
                audit::session_ended(&record, s, audit::SignInEnded::BackchannelLogout);
            }
            ctx.span
                .in_scope(|| tracing::info!(%idp, sessions = ended.len(), "back-channel logout"));
            Ok(Action::Json {
                status: 200,
                body: String::new(),
            })
        }
        Err(e) => {
            crate::metrics::signal("backchannel_logout", false);
            audit::signal_refused(&ctx.audit_maybe(None), "backchannel_logout", &e);
            let body = serde_json::json!({ "error": e.code(), "error_description": e.to_string() });
            Ok(Action::Json {
                status: 400,
                body: body.to_string(),
            })
        }
    }
}

/// `POST /.portcullis/global-token-revocation` (Okta Universal Logout): the IdP, on any
/// host. 204 when the user's sessions ended (also when there were none), 400 for a body or
/// subject it cannot act on, 401 for a JWT it refuses, 503 when the store cannot end them.
async fn global_token_revocation(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    _origin: &Origin,
) -> Result<Action, RequestError> {
    let authorization = session
        .req_header()
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let result =
        match super::saml::read_body(session, MAX_SIGNAL_BODY, "application/json", "a JSON body")
            .await
        {
            Ok(body) => {
                crate::signals::events::universal_logout(
                    &gateway.auth,
                    authorization.as_deref(),
                    &body,
                )
                .await
            }
            Err(e) => Err(crate::signals::events::SignalError::Malformed(
                e.to_string(),
            )),
        };
    match result {
        Ok(effect) => {
            crate::metrics::signal("universal_logout", true);
            signal_effect(ctx, &effect);
            Ok(Action::Empty { status: 204 })
        }
        Err(e) => {
            crate::metrics::signal("universal_logout", false);
            audit::signal_refused(&ctx.audit_maybe(None), "universal_logout", &e);
            let status = e.revocation_status();
            let body = serde_json::json!({
                "error": if status == 401 { "invalid_token" } else { "invalid_request" },
                "error_description": e.to_string(),
            });
            Ok(Action::Json {
                status,
                body: body.to_string(),
            })
        }
    }
}

/// `POST /.portcullis/ssf/events` (RFC 8935 push delivery of a Security Event Token): a
/// transmitter, on any host. 202 when accepted, 400 with `{"err", "description"}` when not
/// (503 when the store cannot act: the transmitter retries).
async fn security_events(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    _origin: &Origin,
) -> Result<Action, RequestError> {
    let result = match super::saml::read_body(
        session,
        MAX_SIGNAL_BODY,
        "application/secevent+jwt",
        "a security event token",
    )
    .await
    {
        Ok(body) => crate::signals::events::security_event(&gateway.auth, &body).await,
        Err(e) => Err(crate::signals::events::SignalError::Malformed(
            e.to_string(),
        )),
    };
    match result {
        Ok(effects) => {
            crate::metrics::signal("shared_signals", true);
            for effect in &effects {
                signal_effect(ctx, effect);
            }
            Ok(Action::Empty { status: 202 })
        }
        Err(e) => {
            crate::metrics::signal("shared_signals", false);
            audit::signal_refused(&ctx.audit_maybe(None), "security_event", &e);
            let status = if matches!(e, crate::signals::events::SignalError::Store(_)) {
                503
            } else {
                400
            };
            let body = serde_json::json!({ "err": e.push_code(), "description": e.to_string() });
            Ok(Action::Json {
                status,
                body: body.to_string(),
            })
        }
    }
}

/// Logs and audits the sessions a signal ended.
fn signal_effect(ctx: &RequestCtx, effect: &crate::signals::events::Effect) {
    let record = ctx.audit_maybe(None);
    for s in &effect.ended {
        audit::session_ended(&record, s, audit::SignInEnded::SecurityEvent);
    }
    ctx.span.in_scope(|| {
        tracing::info!(
            idp = %effect.idp,
            event = %effect.event,
            subject = %effect.subject,
            sessions = effect.ended.len(),
            "session signal"
        )
    });
}

fn query_pairs(req: &RequestHeader) -> Vec<(String, String)> {
    req.uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}
