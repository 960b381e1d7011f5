//! Writing the gateway's own responses to the client.

use crate::pages::Page;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

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
    let body = Bytes::from(page.render(request_id));
    let mut resp = ResponseHeader::build(page.status(), Some(8 + extra.len()))?;
    resp.insert_header("Content-Type", "text/html; charset=utf-8")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("X-Content-Type-Options", "nosniff")?;
    resp.insert_header(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'",
    )?;
    resp.insert_header("X-Request-Id", request_id)?;
    for (name, value) in extra {
        resp.append_header(*name, value.as_str())?;
    }
    if !keepalive {
        session.set_keepalive(None);
        session.write_error_response(resp, body).await
    } else {
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(resp), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
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

/// Sends a JSON document that must not be cached or sniffed.
pub async fn json(
    session: &mut Session,
    status: u16,
    body: String,
    request_id: &str,
    cookies: &[String],
) -> Result<()> {
    let body = Bytes::from(body);
    let mut resp = ResponseHeader::build(status, Some(5 + cookies.len()))?;
    resp.insert_header("Content-Type", "application/json")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("X-Content-Type-Options", "nosniff")?;
    resp.insert_header("X-Request-Id", request_id)?;
    for cookie in cookies {
        resp.append_header("Set-Cookie", cookie.as_str())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
