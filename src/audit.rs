//! The audit trail: who signed in, failed to, or signed out, for which app, from where.
//!
//! Records are tracing events with target `audit`, so operators route them to their own sink
//! (`RUST_LOG=audit=info`, JSON logs). They never hold codes, tokens, cookies or secrets.

use crate::idp::{loggable, Identity};
use crate::session::{Expired, Session};
use std::fmt::Display;
use std::net::IpAddr;

/// The request an audit record belongs to.
#[derive(Debug, Clone, Copy)]
pub struct AuditContext<'a> {
    /// The request id (also in the access log and on error pages).
    pub request_id: &'a str,
    /// The client, as the gateway saw it.
    pub client_ip: Option<IpAddr>,
    /// The app the request was for (`-` when none).
    pub app: &'a str,
}

fn client(ctx: &AuditContext<'_>) -> String {
    ctx.client_ip
        .map_or_else(|| "-".to_string(), |ip| ip.to_string())
}

/// A login finished and a session began.
pub fn login_succeeded(ctx: &AuditContext<'_>, user: &Identity) {
    tracing::info!(
        target: "audit",
        event = "login_success",
        user = %user.display(),
        subject = %loggable(&user.subject),
        groups = %loggable(&user.groups.join(",")),
        acr = %loggable(user.acr.as_deref().unwrap_or("-")),
        idp = %user.idp,
        app = ctx.app,
        client = %client(ctx),
        request_id = ctx.request_id,
        "login succeeded"
    );
}

/// A login did not finish.
pub fn login_failed(ctx: &AuditContext<'_>, idp: &str, reason: &dyn Display) {
    tracing::warn!(
        target: "audit",
        event = "login_failure",
        reason = %reason,
        idp,
        app = ctx.app,
        client = %client(ctx),
        request_id = ctx.request_id,
        "login failed"
    );
}

/// A user signed out (or a logout was asked for without a session).
pub fn logged_out(ctx: &AuditContext<'_>, user: Option<&Identity>) {
    tracing::info!(
        target: "audit",
        event = "logout",
        user = %user.map_or(std::borrow::Cow::Borrowed("-"), Identity::display),
        subject = %user.map_or(std::borrow::Cow::Borrowed("-"), |u| loggable(&u.subject)),
        idp = user.map_or("-", |u| u.idp.as_str()),
        app = ctx.app,
        client = %client(ctx),
        request_id = ctx.request_id,
        "logout"
    );
}

/// A session was found past its idle or absolute limit on use, and ended.
pub fn session_expired(ctx: &AuditContext<'_>, session: &Session, why: Expired) {
    let user = &session.identity;
    tracing::info!(
        target: "audit",
        event = "session_end",
        reason = why.as_str(),
        user = %user.display(),
        subject = %loggable(&user.subject),
        idp = %user.idp,
        app = ctx.app,
        session_app = %session.app,
        client = %client(ctx),
        request_id = ctx.request_id,
        "session expired"
    );
}
