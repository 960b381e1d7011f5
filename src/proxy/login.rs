//! Sending a browser to sign in: whether a request may be redirected at all, and starting the
//! login at the app's IdP.

use super::ctx::{Action, RequestCtx, RequestError};
use crate::auth::{safe_return_to, CallbackError, Origin};
use crate::gateway::{AppRuntime, Gateway};
use crate::idp::ToIdp;
use crate::session::pending::StepUp;
use pingora::http::RequestHeader;
use std::sync::Arc;
use tracing::info;

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

/// Path and query of the request, to come back to after a login or a form.
pub fn here(req: &RequestHeader, path: &str) -> String {
    match req.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

/// Counts a sign-in request (a login start, a callback, an ACS post) against the login rate
/// limits of its client address and host; refused with 429 when a bucket is empty.
pub fn within_login_limits(ctx: &RequestCtx, gateway: &Gateway) -> Result<(), RequestError> {
    let now = gateway.clock.now_unix();
    gateway
        .login_limits
        .check(ctx.client_ip, &ctx.host, now)
        .map_err(|throttled| {
            crate::metrics::throttled(throttled.limit.as_str(), 1);
            if let Some(refused) = throttled.audit {
                let app = ctx.app.as_ref().map(|a| a.config.id());
                crate::audit::login_throttled(
                    &ctx.audit_maybe(app),
                    throttled.limit.as_str(),
                    refused,
                );
            }
            RequestError::TooManySignIns(throttled.retry_after_secs)
        })
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
    within_login_limits(ctx, gateway)?;
    let idp = app.config.idp().unwrap_or("-");
    let provider = gateway
        .auth
        .provider(idp)
        .filter(|p| {
            let available = p.is_available();
            if !available {
                p.health().wanted();
            }
            available
        })
        .ok_or_else(|| RequestError::SignInUnavailable(idp.to_string()))?;
    let redirect = gateway
        .auth
        .start_login(
            provider,
            app.config.id(),
            origin,
            &safe_return_to(return_to),
            step_up.clone(),
        )
        .await
        .map_err(|e| match e {
            CallbackError::Store(e) => RequestError::StoreUnavailable(e),
            e => RequestError::LoginNotStarted(e),
        })?;
    match &step_up {
        Some(s) => ctx
            .span
            .in_scope(|| info!(idp, rule = %s.rule, "step-up sign-in started")),
        None => ctx.span.in_scope(|| info!(idp, "login started")),
    }
    let cookies = vec![redirect.cookie];
    Ok(match redirect.to_idp {
        ToIdp::Redirect(location) => Action::Redirect { location, cookies },
        ToIdp::Post { action, fields } => Action::PostToIdp {
            action,
            fields,
            cookies,
        },
    })
}

/// Counts a finished sign-in (a step-up counts as one, not as a new session).
pub(super) fn login_counted(signed_in: &crate::auth::SignedIn, protocol: &str) {
    let outcome = if signed_in.stepped_up_for.is_some() {
        crate::metrics::LoginOutcome::StepUp
    } else {
        crate::metrics::LoginOutcome::Success
    };
    crate::metrics::login(
        Some(&signed_in.session.identity.idp),
        protocol,
        outcome,
        "-",
    );
}
