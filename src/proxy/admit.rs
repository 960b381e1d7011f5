//! Steps 1–4 of a request's journey: header hygiene, limits, host, path, the reserved prefix,
//! and the app the request is for.

use super::ctx::{RequestCtx, RequestError};
use crate::auth::Origin;
use crate::framing;
use crate::gateway::{AppRuntime, Gateway, Route};
use crate::hygiene::{request_authority, ConnectionFacts, Scheme};
use crate::lifecycle::Lifecycle;
use crate::policy::path::{normalise, normalise_keeping_encoded_slash, PathError};
use crate::routing::{normalise_host, under_prefix};
use pingora::proxy::Session;
use std::sync::Arc;
use tracing::info_span;

/// The path prefix the gateway answers itself on every host; never proxied.
pub const RESERVED_PREFIX: &str = "/.portcullis";

/// Largest total of request header names and values accepted, like common servers (nginx
/// allows 4 × 8 KiB); legacy backends often fail in odd ways on larger headers.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Where an admitted request goes next.
pub enum Admitted {
    /// A `/.portcullis/` endpoint on this host.
    Endpoint(Origin),
    /// An app.
    App(Arc<AppRuntime>, Origin),
}

/// Cleans the request's headers, checks its limits, host and path, and finds what serves it.
pub fn admit(
    session: &mut Session,
    ctx: &mut RequestCtx,
    gateway: &Gateway,
    lifecycle: &Lifecycle,
) -> Result<Admitted, RequestError> {
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let req = session.req_header_mut();
    let forwarding = gateway.hygiene.apply(req, ConnectionFacts { peer, tls });
    // Pingora reads only the first `Connection` header when deciding keep-alive; a draining
    // gateway asks every client to reconnect (to another node).
    if forwarding.close_requested || lifecycle.closes_connections() {
        session.set_keepalive(None);
    }
    let req = session.req_header_mut();
    framing::plain_request_line(req)?;
    framing::single_content_length(req)?;
    ctx.upgrade = framing::screen_upgrade(req);
    ctx.request_id = forwarding.request_id;
    ctx.secure = forwarding.proto == Scheme::Https;
    ctx.client_ip = forwarding.client_ip;
    ctx.span = info_span!("request", request_id = %ctx.request_id, app = tracing::field::Empty, rule = tracing::field::Empty);

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
    // HTTP/2's `:authority` and a `host` header that name different hosts (RFC 9113 §8.3.1):
    // the app is chosen by one, and a backend may read the other.
    if let (Some(authority), Some(host)) = (req.uri.authority(), req.headers.get("host")) {
        if !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
        {
            return Err(RequestError::DuplicateHost);
        }
    }
    let authority = request_authority(req).ok_or(RequestError::BadHost)?;
    ctx.host = normalise_host(&authority).ok_or(RequestError::BadHost)?;
    let origin = Origin {
        secure: ctx.secure,
        authority: authority.to_ascii_lowercase(),
    };
    ctx.authority.clone_from(&origin.authority);
    ctx.path = match normalise(req.uri.path()) {
        Ok(p) => p,
        // An encoded slash reaches only an app whose policy opted in to it.
        Err(PathError::EncodedSeparator) => {
            let lenient = normalise_keeping_encoded_slash(req.uri.path())?;
            match gateway.route(&ctx.host, &lenient) {
                Some(Route::App(app)) if app.config.allow_encoded_slash() => lenient,
                _ => return Err(PathError::EncodedSeparator.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };

    if under_prefix(&ctx.path, RESERVED_PREFIX) {
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
    ctx.span.record("app", app.config.id());
    ctx.app = Some(app.clone());
    Ok(Admitted::App(app, origin))
}
