//! The Pingora `ProxyHttp` implementation: wiring only.
//!
//! A request's journey, top to bottom: [`admit`] (hygiene, limits, host, path, app), then a
//! gateway endpoint ([`endpoints`]) or the app's [`decide`] (session, rules, delivery); the
//! answer is proxied or written by [`respond`]. Later phases hand the upstream request and
//! response to the app's identity delivery (`crate::delivery`). Nothing here decides policy
//! or parses configuration.

mod admit;
mod credentials;
pub mod ctx;
mod decide;
mod endpoints;
pub mod head_deadline;
mod login;
mod respond;
mod saml;

pub use admit::RESERVED_PREFIX;
pub use ctx::{Action, Outcome, RequestCtx, RequestError};

use crate::framing;
use crate::gateway::{AppRuntime, Gateway};
use crate::lifecycle::Lifecycle;
use crate::pages::Page;
use crate::reload::SharedGateway;
use admit::Admitted;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use std::sync::Arc;
use tracing::{info, warn, Instrument};

/// Moves the app's internal origin out of the response header (and plans the body's
/// rewriting), through Pingora's header API.
fn rewrite_response(
    session: &Session,
    response: &mut ResponseHeader,
    ctx: &mut RequestCtx,
    app: &AppRuntime,
) -> Result<()> {
    let status = response.status;
    let bodyless = session.req_header().method == http::Method::HEAD
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    let public = crate::rewrite::PublicOrigin {
        secure: ctx.secure,
        authority: &ctx.authority,
    };
    let edits = app
        .config
        .rewrite()
        .response(&public, &response.headers, bodyless);
    for name in edits.remove {
        response.remove_header(&name);
    }
    for (name, value) in edits.set {
        response.insert_header(name, value)?;
    }
    if let Some(cookies) = edits.set_cookies {
        response.remove_header("set-cookie");
        for cookie in cookies {
            response.append_header("Set-Cookie", cookie)?;
        }
    }
    if let crate::rewrite::BodyPlan::Rewrite(rewriter) = edits.body {
        ctx.body_rewrite = Some(rewriter);
    }
    Ok(())
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
        match admit::admit(session, ctx, gateway, &self.lifecycle)? {
            Admitted::Endpoint(origin) => endpoints::serve(session, ctx, gateway, &origin).await,
            Admitted::App(app, origin) => decide::decide(session, ctx, gateway, app, origin).await,
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new()
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
            Ok(action) => respond::action(session, ctx, action).await.map(|()| true),
            Err(refused) => respond::refusal(session, ctx, &refused)
                .await
                .map(|()| true),
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
        ctx.upstream_chosen = Some(std::time::Instant::now());
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(app), Some(i)) = (&ctx.app, ctx.upstream) {
            // Pingora's connector is shared by every app: an app's minimum TLS version is
            // held to here, before a byte of the request is sent.
            if let Some(min) = app.config.upstream_tls().min_version {
                let tls = app.config.upstreams().get(i).is_some_and(|u| u.tls);
                let version = digest
                    .and_then(|d| d.ssl_digest.as_ref())
                    .map(|d| d.version.to_string());
                if tls && !version.as_deref().is_some_and(|v| min.admits(v)) {
                    let upstream = ctx.upstream_url().unwrap_or_default().to_string();
                    ctx.span.in_scope(|| warn!(%upstream, negotiated = version.as_deref().unwrap_or("-"), minimum = ?min, "upstream TLS version below the app's minimum"));
                    return Err(Error::explain(
                        ErrorType::TLSHandshakeFailure,
                        "upstream TLS version below the app's minimum",
                    )
                    .into_up());
                }
            }
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
        let upstream = ctx.upstream_url().unwrap_or_default().to_string();
        ctx.span
            .in_scope(|| warn!(%upstream, peer = %peer, error = %e, "upstream connect failed"));
        if let Some(app) = &ctx.app {
            crate::metrics::upstream_failed(app.config.id(), &upstream, "connect");
        }
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
            let target = login::here(session.req_header(), &ctx.path);
            let uri = target.parse::<http::Uri>().or_err(
                ErrorType::InternalError,
                "normalised path is not a valid URI",
            )?;
            upstream.set_uri(uri);
        }
        let Some(app) = ctx.app.clone() else {
            return Ok(());
        };
        if !app.config.preserve_host() {
            if let Some(target) = ctx.upstream.and_then(|i| app.config.upstreams().get(i)) {
                upstream.insert_header("Host", target.host_header.as_str())?;
            }
        }
        let edits = app
            .config
            .delivery()
            .upstream_request(&mut ctx.delivery, &upstream.headers);
        if let Some(cookie) = edits.cookie {
            upstream.remove_header("cookie");
            if let Some(kept) = cookie {
                upstream.insert_header("Cookie", kept)?;
            }
        }
        if edits.drop_authorization {
            upstream.remove_header("authorization");
        }
        for (name, value) in edits.set {
            upstream.insert_header(name, value)?;
        }
        // Bodies rewritten here are sent on uncompressed anyway: ask for them that way.
        if app.config.rewrite().rewrites_bodies() {
            upstream.insert_header("Accept-Encoding", "identity")?;
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
        if let (Some(app), Some(chosen)) = (&ctx.app, ctx.upstream_chosen.take()) {
            crate::metrics::upstream_answered(
                app.config.id(),
                ctx.upstream_url().unwrap_or_default(),
                chosen.elapsed(),
            );
        }
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
        // Only a request that holds backend state (form-fill cookies, a replayed password)
        // has anything to learn from the answer.
        if let Some(app) = ctx
            .app
            .clone()
            .filter(|_| ctx.delivery.holds_backend_state())
        {
            let edits = app
                .config
                .delivery()
                .upstream_response(
                    app.config.id(),
                    &ctx.delivery,
                    response.status,
                    &response.headers,
                )
                .instrument(ctx.span.clone())
                .await;
            if edits.drop_set_cookie {
                response.remove_header("set-cookie");
            }
            if edits.drop_www_authenticate {
                response.remove_header("www-authenticate");
            }
            if let Some(status) = edits.status {
                response.set_status(status)?;
            }
            if let Some(location) = edits.location {
                response.insert_header("Location", location)?;
            }
        }
        if let Some(app) = ctx.app.clone() {
            rewrite_response(session, response, ctx, &app)?;
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
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(rewriter) = ctx.body_rewrite.as_mut() {
            let chunk = body.as_deref().unwrap_or_default();
            match rewriter.feed(chunk, end_of_stream) {
                Ok(rewritten) => *body = Some(rewritten),
                Err(e) => {
                    ctx.span
                        .in_scope(|| warn!(error = %e, "response body could not be rewritten"));
                    // Cut short rather than sent half-rewritten as if whole.
                    return Error::e_explain(ErrorType::InternalError, e.to_string());
                }
            }
        }
        if !ctx.delivery.holds_backend_state() {
            return Ok(None);
        }
        if let (Some(app), Some(chunk)) = (&ctx.app, body.as_ref()) {
            let _in_request = ctx.span.enter();
            app.config
                .delivery()
                .response_body(&mut ctx.delivery, chunk);
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
        let upstream = ctx.upstream_url().unwrap_or_default();
        ctx.span.in_scope(|| warn!(%upstream, error = %e, status = page.map_or(0, Page::status), "request failed"));
        if let (ErrorSource::Upstream, Some(app)) = (e.esource(), &ctx.app) {
            let kind = match e.etype() {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
                ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectError => "connect",
                _ => "other",
            };
            // Connect failures were counted per attempt in fail_to_connect.
            if kind != "connect" {
                crate::metrics::upstream_failed(app.config.id(), upstream, kind);
            }
        }
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
        let app = ctx.app.as_ref().map_or("-", |a| a.config.id());
        let upstream = ctx.upstream_url().unwrap_or("-");
        let path = ctx.logged_path(req.uri.path());
        crate::metrics::request_finished(
            ctx.app.as_ref().map(|a| a.config.id()),
            status,
            ctx.started.elapsed(),
        );
        info!(
            target: "portcullis::access",
            request_id = %ctx.request_id,
            client = %ctx.client_ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            app,
            method = %req.method,
            path,
            status,
            decision = ctx.outcome.map_or("-", Outcome::as_str),
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
        let path = ctx.logged_path(req.uri.path());
        format!("{} {} request_id={}", req.method, path, ctx.request_id)
    }
}
