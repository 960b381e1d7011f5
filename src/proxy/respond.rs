//! Writing the gateway's own responses to the client: actions, refusals and error pages.

use super::ctx::{Action, RequestCtx, RequestError};
use crate::pages::Page;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Answers with `action` (anything but [`Action::Proxy`], which sends nothing).
pub async fn action(session: &mut Session, ctx: &mut RequestCtx, action: Action) -> Result<()> {
    let stale: Vec<String> = ctx.clear_stale.take().into_iter().collect();
    match action {
        Action::Proxy => Ok(()),
        Action::Redirect {
            location,
            mut cookies,
        } => {
            cookies.extend(stale);
            ctx.gateway_status = Some(302);
            redirect(session, &location, &cookies, &ctx.request_id).await
        }
        Action::Json { status, body } => {
            ctx.gateway_status = Some(status);
            let doc = (status, "application/json", body);
            document(session, doc, &ctx.request_id, &stale).await
        }
        Action::Empty { status } => {
            ctx.gateway_status = Some(status);
            let mut resp = ResponseHeader::build(status, Some(4))?;
            // RFC 9110 §8.6: no Content-Length on a 204.
            if status != 204 {
                resp.insert_header("Content-Length", "0")?;
            }
            resp.insert_header("Cache-Control", "no-store")?;
            resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
            session.write_response_header(Box::new(resp), true).await
        }
        Action::Html { body, cookies } => {
            ctx.gateway_status = Some(200);
            let doc = (200, "text/html; charset=utf-8", body);
            document(session, doc, &ctx.request_id, &cookies).await
        }
        Action::Maintenance { body, retry_after } => {
            ctx.gateway_status = Some(503);
            let body = Bytes::from(body);
            let mut resp = own_response(503, "text/html; charset=utf-8", &body, &ctx.request_id)?;
            if let Some(seconds) = retry_after {
                resp.insert_header("Retry-After", seconds.to_string())?;
            }
            for cookie in &stale {
                resp.append_header("Set-Cookie", cookie.as_str())?;
            }
            send(session, resp, body).await
        }
        Action::PostToIdp {
            action,
            fields,
            cookies,
        } => {
            ctx.gateway_status = Some(200);
            let page = crate::pages::PostToIdp {
                action: &action,
                fields: &fields,
            };
            let body = Bytes::from(page.render(&ctx.request_id));
            let mut resp = own_response(200, "text/html; charset=utf-8", &body, &ctx.request_id)?;
            resp.insert_header("Content-Security-Policy", page.content_security_policy())?;
            for cookie in &cookies {
                resp.append_header("Set-Cookie", cookie.as_str())?;
            }
            send(session, resp, body).await
        }
        Action::Xml { body } => {
            ctx.gateway_status = Some(200);
            let doc = (200, "application/samlmetadata+xml", body);
            document(session, doc, &ctx.request_id, &[]).await
        }
        Action::Page { page, cookies } => {
            ctx.gateway_status = Some(page.status());
            let extra: Vec<(&'static str, String)> = cookies
                .into_iter()
                .chain(stale)
                .map(|c| ("Set-Cookie", c))
                .collect();
            page_with(session, page, &ctx.request_id, true, &extra).await
        }
    }
}

/// Answers a refused request with its page (JSON to API clients), logged with its reason.
pub async fn refusal(
    session: &mut Session,
    ctx: &mut RequestCtx,
    refusal: &RequestError,
) -> Result<()> {
    if let RequestError::Bearer(e) = refusal {
        return bearer_refusal(session, ctx, e).await;
    }
    let page = refusal.page();
    let reason = crate::idp::error_chain(refusal);
    ctx.span
        .in_scope(|| tracing::info!(%reason, status = page.status(), "refused"));
    ctx.gateway_status = Some(page.status());
    let mut extra: Vec<(&'static str, String)> = Vec::new();
    extra.extend(ctx.clear_stale.take().map(|c| ("Set-Cookie", c)));
    let login_url = crate::auth::LOGIN_PATH;
    match refusal {
        RequestError::StepUpRequired => extra.push((
            "WWW-Authenticate",
            format!(
                "Portcullis error=\"insufficient_user_authentication\", login_url=\"{login_url}\""
            ),
        )),
        RequestError::TooManySignIns(seconds) => extra.push(("Retry-After", seconds.to_string())),
        RequestError::LoginRequired => {
            let realm = ctx.app.as_ref().map_or("portcullis", |a| a.config.id());
            extra.push((
                "WWW-Authenticate",
                format!("Portcullis realm=\"{realm}\", login_url=\"{login_url}\""),
            ));
            // An API that takes access tokens says so (RFC 6750 §3: no error code when the
            // request carried none).
            if ctx
                .app
                .as_ref()
                .is_some_and(|a| a.config.bearer().is_some())
            {
                extra.push(("WWW-Authenticate", format!("Bearer realm=\"{realm}\"")));
            }
        }
        _ => {}
    }
    // Refusals tell a signed-in user who they are signed in as, so they can see a wrong
    // account and switch.
    let who = matches!(page, Page::Forbidden | Page::DirectoryUnavailable)
        .then(|| ctx.user.as_ref().map(|u| u.identity.display().into_owned()))
        .flatten();
    page_for(session, page, &ctx.request_id, who.as_deref(), true, &extra).await
}

/// Answers an API caller whose token was refused as RFC 6750 says: the status, a
/// `WWW-Authenticate: Bearer` challenge with the error code, and a JSON body.
async fn bearer_refusal(
    session: &mut Session,
    ctx: &mut RequestCtx,
    refusal: &crate::bearer::BearerError,
) -> Result<()> {
    let status = refusal.status();
    ctx.span
        .in_scope(|| tracing::info!(reason = %crate::idp::error_chain(refusal), status, "refused"));
    ctx.gateway_status = Some(status);
    let body = Bytes::from(refusal.body(&ctx.request_id));
    let mut resp = own_response(status, "application/json", &body, &ctx.request_id)?;
    let realm = ctx.app.as_ref().map_or("portcullis", |a| a.config.id());
    if let Some(challenge) = refusal.challenge(realm) {
        resp.insert_header("WWW-Authenticate", challenge)?;
    }
    if status == 503 {
        resp.insert_header("Retry-After", "5")?;
    }
    send(session, resp, body).await
}

/// Sends a branded page. `keepalive` is false after proxy errors, where the connection state
/// is uncertain.
pub async fn page(
    session: &mut Session,
    page: Page,
    request_id: &str,
    keepalive: bool,
) -> Result<()> {
    page_with(session, page, request_id, keepalive, &[]).await
}

/// Sends a branded page with extra headers (`Set-Cookie`, `WWW-Authenticate`).
pub async fn page_with(
    session: &mut Session,
    page: Page,
    request_id: &str,
    keepalive: bool,
    extra: &[(&'static str, String)],
) -> Result<()> {
    page_for(session, page, request_id, None, keepalive, extra).await
}

/// Does the client want JSON rather than a page (an API call: `Accept` names JSON, not HTML)?
pub fn prefers_json(session: &Session) -> bool {
    let accept = session
        .req_header()
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    accept.contains("application/json") && !accept.contains("text/html")
}

/// Sends a branded page — or, to a client that asked for JSON, the same answer as JSON —
/// naming who is signed in when `signed_in_as` is given (refusals: "signed in as …, sign out
/// or switch user").
pub async fn page_for(
    session: &mut Session,
    page: Page,
    request_id: &str,
    signed_in_as: Option<&str>,
    keepalive: bool,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let json = prefers_json(session);
    let (body, content_type) = if json {
        (
            Bytes::from(page.render_json(request_id)),
            "application/json",
        )
    } else {
        (
            Bytes::from(page.render_for(request_id, signed_in_as)),
            "text/html; charset=utf-8",
        )
    };
    let mut resp = own_response(page.status(), content_type, &body, request_id)?;
    if !json {
        resp.insert_header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'",
        )?;
    }
    for (name, value) in extra {
        resp.append_header(*name, value.as_str())?;
    }
    if keepalive {
        send(session, resp, body).await
    } else {
        session.set_keepalive(None);
        session.write_error_response(resp, body).await
    }
}

/// Sends a `302 Found` to `location`, setting `cookies`.
pub async fn redirect(
    session: &mut Session,
    location: &str,
    cookies: &[String],
    request_id: &str,
) -> Result<()> {
    let mut resp = ResponseHeader::build(302, Some(5 + cookies.len()))?;
    resp.insert_header("Location", location)?;
    resp.insert_header("Content-Length", "0")?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("X-Request-Id", request_id)?;
    for cookie in cookies {
        resp.append_header("Set-Cookie", cookie.as_str())?;
    }
    session.write_response_header(Box::new(resp), true).await
}

/// Sends a document (status, content type, body: JSON, XML, a form) that must not be cached
/// or sniffed.
pub async fn document(
    session: &mut Session,
    (status, content_type, body): (u16, &str, String),
    request_id: &str,
    cookies: &[String],
) -> Result<()> {
    let body = Bytes::from(body);
    let mut resp = own_response(status, content_type, &body, request_id)?;
    for cookie in cookies {
        resp.append_header("Set-Cookie", cookie.as_str())?;
    }
    send(session, resp, body).await
}

/// Headers every response of the gateway's own carries: never cached, never sniffed, traced.
fn own_response(
    status: u16,
    content_type: &str,
    body: &Bytes,
    request_id: &str,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(8))?;
    resp.insert_header("Content-Type", content_type)?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("X-Content-Type-Options", "nosniff")?;
    resp.insert_header("X-Request-Id", request_id)?;
    Ok(resp)
}

/// Writes header and body on a connection that stays open (no body for HEAD).
async fn send(session: &mut Session, resp: ResponseHeader, body: Bytes) -> Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
