//! The Pingora `ProxyHttp` implementation: wiring only.
//!
//! Each phase calls plain modules in the order of a request's journey — hygiene, route,
//! normalise, reserved paths, decide, act — and turns their typed answers into responses.
//! Nothing here decides policy or parses configuration.

mod respond;

use crate::gateway::{AppRuntime, Route};
use crate::hygiene::{request_authority, ConnectionFacts};
use crate::pages::Page;
use crate::policy::path::{normalise, PathError};
use crate::policy::{Decision, RequestFacts};
use crate::reload::SharedGateway;
use crate::routing::normalise_host;
use async_trait::async_trait;
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
    /// A `/.portcullis/` path with no endpoint behind it (yet).
    #[error("unknown gateway endpoint")]
    UnknownEndpoint,
    /// No app serves this host and path.
    #[error("no app for this host and path")]
    NoRoute,
    /// The app's policy failed to load.
    #[error("app unavailable: policy failed to load")]
    AppUnavailable,
    /// A deny rule matched.
    #[error("denied by rule {0}")]
    Denied(String),
    /// No allow rule matched (default deny).
    #[error("no allow rule matched")]
    NoAllowRule,
}

impl RequestError {
    /// The page shown for this refusal.
    pub fn page(&self) -> Page {
        match self {
            RequestError::BadHost | RequestError::DuplicateHost | RequestError::BadPath(_) => {
                Page::BadRequest
            }
            RequestError::HeadersTooLarge => Page::HeadersTooLarge,
            RequestError::UnknownEndpoint | RequestError::NoRoute => Page::NotFound,
            RequestError::AppUnavailable => Page::Unavailable,
            RequestError::Denied(_) | RequestError::NoAllowRule => Page::Forbidden,
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
    app: Option<Arc<AppRuntime>>,
    rule: Option<String>,
    upstream: Option<usize>,
    connect_failures: usize,
    gateway_status: Option<u16>,
}

/// The proxy service.
pub struct Proxy {
    gateway: SharedGateway,
}

impl Proxy {
    /// A proxy over shared gateway state (swapped as a whole on reload).
    pub fn new(gateway: SharedGateway) -> Self {
        Self { gateway }
    }

    /// Steps 1-6 of the journey; `Ok(())` means "proxy it".
    fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), RequestError> {
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // One consistent snapshot for the whole decision, even if a reload lands meanwhile.
        let gateway = self.gateway.load();
        let req = session.req_header_mut();
        let forwarding = gateway.hygiene.apply(req, ConnectionFacts { peer, tls });
        if forwarding.close_requested {
            // Pingora reads only the first `Connection` header when deciding keep-alive.
            session.set_keepalive(None);
        }
        let req = session.req_header_mut();
        ctx.request_id = forwarding.request_id;
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
        let host = request_authority(req)
            .and_then(|a| normalise_host(&a))
            .ok_or(RequestError::BadHost)?;
        let path = normalise(req.uri.path())?;
        ctx.path = path;

        if crate::routing::under_prefix(&ctx.path, RESERVED_PREFIX) {
            return Err(RequestError::UnknownEndpoint);
        }
        let app = match gateway.route(&host, &ctx.path) {
            None => return Err(RequestError::NoRoute),
            Some(Route::Unavailable(broken)) => {
                ctx.span.record("app", broken.id.as_deref().unwrap_or("?"));
                return Err(RequestError::AppUnavailable);
            }
            Some(Route::App(app)) => app.clone(),
        };
        ctx.span.record("app", app.config.id.as_str());
        let decision = app.config.rules.decide(&RequestFacts {
            method: &req.method,
            path: &ctx.path,
        });
        let (rule, outcome) = match decision {
            Decision::Public { rule } => (Some(rule), Ok(())),
            Decision::Deny { rule } => (Some(rule), Err(RequestError::Denied(rule.to_string()))),
            Decision::NoAllowMatched => (None, Err(RequestError::NoAllowRule)),
        };
        if let Some(rule) = rule {
            ctx.span.record("rule", rule);
            ctx.rule = Some(rule.to_string());
        }
        ctx.app = Some(app);
        outcome
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
            app: None,
            rule: None,
            upstream: None,
            connect_failures: 0,
            gateway_status: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        match self.admit(session, ctx) {
            Ok(()) => Ok(false),
            Err(refusal) => {
                let page = refusal.page();
                ctx.span
                    .in_scope(|| info!(reason = %refusal, status = page.status(), "refused"));
                ctx.gateway_status = Some(page.status());
                respond::page(session, page, &ctx.request_id, true).await?;
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
        let Some((index, peer)) = app.next_peer() else {
            return Error::e_explain(ErrorType::InternalError, "app has no upstreams");
        };
        ctx.upstream = Some(index);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_failures += 1;
        let upstream = upstream_url(ctx).unwrap_or_default();
        ctx.span
            .in_scope(|| warn!(%upstream, peer = %peer, error = %e, "upstream connect failed"));
        // Try the next upstream (round-robin moves on) until each has been tried once.
        let upstreams = ctx.app.as_ref().map_or(0, |a| a.upstream_count());
        if ctx.connect_failures < upstreams {
            e.set_retry(true);
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
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        response.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        Ok(())
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
