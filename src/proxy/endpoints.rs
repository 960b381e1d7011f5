//! The gateway's own endpoints under `/.portcullis/` and the login redirect: wiring between
//! the request and `auth`, plus the audit records of each outcome.

use super::{Action, RequestCtx, RequestError};
use crate::audit;
use crate::auth::{
    safe_return_to, CallbackError, Origin, CALLBACK_PATH, LOGGED_OUT_PATH, LOGIN_PATH, LOGOUT_PATH,
    USERINFO_PATH,
};
use crate::gateway::{AppRuntime, Gateway, Route};
use crate::idp::oidc::LoginError;
use crate::idp::saml;
use crate::pages::Page;
use crate::routing::normalise_host;
use crate::session::cookies::request_cookies;
use crate::session::pending::StepUp;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::sync::Arc;
use tracing::info;

/// Answers a `/.portcullis/*` request.
pub async fn serve(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Result<Action, RequestError> {
    let method = session.req_header().method.clone();
    if ctx.path == saml::ACS_PATH {
        if method != http::Method::POST {
            return Err(RequestError::MethodNotAllowed);
        }
        return super::saml::acs(session, ctx, gateway, origin).await;
    }
    if ctx.path == saml::SLO_PATH && method == http::Method::POST {
        return super::saml::slo(session, ctx, gateway, origin).await;
    }
    if ctx.path.starts_with(crate::vault::ENROLL_PREFIX)
        && matches!(method, http::Method::GET | http::Method::POST)
    {
        return super::credentials::serve(session, ctx, gateway, origin).await;
    }
    if method != http::Method::GET && method != http::Method::HEAD {
        return Err(RequestError::MethodNotAllowed);
    }
    match ctx.path.as_str() {
        CALLBACK_PATH => callback(session, ctx, gateway, origin).await,
        saml::METADATA_PATH => super::saml::metadata(ctx, gateway, origin),
        crate::assertion::JWKS_PATH => match &gateway.assertions {
            Some(signer) => Ok(Action::Json {
                status: 200,
                body: signer.jwks(),
            }),
            None => Err(RequestError::UnknownEndpoint),
        },
        saml::SLO_PATH => super::saml::slo(session, ctx, gateway, origin).await,
        LOGIN_PATH => {
            let query = query_pairs(session.req_header());
            let wanted = query
                .iter()
                .find(|(k, _)| k == "return_to")
                .map_or("/", |(_, v)| v.as_str());
            let return_to = safe_return_to(wanted);
            let path = return_to.split(['?', '#']).next().unwrap_or("/");
            let host = normalise_host(&origin.authority).ok_or(RequestError::BadHost)?;
            let app = match gateway.route(&host, path) {
                Some(Route::App(app)) if app.config.idp.is_some() => app.clone(),
                _ => return Err(RequestError::NoRoute),
            };
            ctx.app = Some(app.clone());
            start_login(ctx, gateway, &app, origin, &return_to, None).await
        }
        LOGOUT_PATH => Ok(logout(session, ctx, gateway, origin).await),
        USERINFO_PATH => userinfo(session, ctx, gateway, origin).await,
        LOGGED_OUT_PATH => Ok(Action::Page {
            page: Page::SignedOut,
            cookies: Vec::new(),
        }),
        _ => Err(RequestError::UnknownEndpoint),
    }
}

/// Is this a top-level page load, which may be redirected to the IdP? API calls and XHR get
/// 401 instead, so single-page apps don't pile up pending logins.
pub fn is_navigation(req: &RequestHeader) -> bool {
    let header = |name: &str| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    let method_ok = req.method == http::Method::GET || req.method == http::Method::HEAD;
    let accept_ok = header("accept").is_none_or(|a| a.contains("text/html"));
    let mode_ok = header("sec-fetch-mode").is_none_or(|m| m == "navigate");
    let not_xhr = req.headers.get("x-requested-with").is_none();
    method_ok && accept_ok && mode_ok && not_xhr
}

/// Starts a login for `app` (a step-up when `step_up` says what it needs), returning to
/// `return_to` afterwards.
pub async fn start_login(
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    app: &AppRuntime,
    origin: &Origin,
    return_to: &str,
    step_up: Option<StepUp>,
) -> Result<Action, RequestError> {
    let idp = app.config.idp.as_deref().unwrap_or("-");
    let provider = gateway
        .auth
        .provider(idp)
        .filter(|p| p.is_available())
        .ok_or_else(|| RequestError::SignInUnavailable(idp.to_string()))?;
    let redirect = gateway
        .auth
        .start_login(
            provider,
            &app.config.id,
            origin,
            &safe_return_to(return_to),
            step_up.clone(),
        )
        .await
        .map_err(|e| RequestError::SignInFailed(e.to_string()))?;
    match &step_up {
        Some(s) => ctx
            .span
            .in_scope(|| info!(idp, rule = %s.rule, "step-up sign-in started")),
        None => ctx.span.in_scope(|| info!(idp, "login started")),
    }
    Ok(Action::Redirect {
        location: redirect.location,
        cookies: vec![redirect.cookie],
    })
}

async fn callback(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Result<Action, RequestError> {
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
            let app = pending.as_ref().map_or("-", |p| p.app.as_str());
            let idp = pending.as_ref().map_or("-", |p| p.idp.as_str());
            audit::login_failed(&ctx.audit(app), idp, &error);
            if let CallbackError::Login(LoginError::Unreachable(_) | LoginError::NotReady) = error {
                return Err(RequestError::IdpUnreachable(error.to_string()));
            }
            Err(RequestError::SignInFailed(error.to_string()))
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
        Some(Route::App(app)) if app.config.idp.is_some() => app.clone(),
        _ => return Err(RequestError::NoRoute),
    };
    super::Proxy::attach_session(session, ctx, gateway, &app.config, origin).await;
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
        "signed_in_at": user.created_unix,
    });
    Ok(Action::Json {
        status: 200,
        body: body.to_string(),
    })
}

/// Ends the session here and sends the browser to the IdP's logout.
pub async fn logout(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Arc<Gateway>,
    origin: &Origin,
) -> Action {
    let cookies = request_cookies(session.req_header().headers.get_all("cookie").iter());
    let out = gateway.auth.logout(&cookies, origin).await;
    let app = out
        .session
        .as_ref()
        .map(|s| s.app.to_string())
        .or_else(|| ctx.app.as_ref().map(|a| a.config.id.clone()))
        .unwrap_or_else(|| "-".to_string());
    audit::logged_out(&ctx.audit(&app), out.session.as_ref().map(|s| &s.identity));
    for other in &out.family {
        audit::session_ended(&ctx.audit(&app), other, "logout_elsewhere");
    }
    Action::Redirect {
        location: out.location,
        cookies: out.cookies,
    }
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
