//! The audit trail: who signed in, failed to, or signed out, for which app, from where, and
//! every access decision.
//!
//! Records are tracing events with target `audit`: they appear in the log, and with `[audit]
//! file` also in a hash-chained file ([`chain`], written by [`sink`]) that `portcullis audit
//! verify` checks. They never hold codes, tokens, cookies or secrets.

pub mod chain;
pub mod ocsf;
pub mod recent;
pub mod sink;
pub mod syslog;

/// The version of the record schema (`deploy/audit-schema.json`), in every record's `schema`
/// field: it changes when a field changes meaning or goes away, not when one is added.
pub const SCHEMA_VERSION: &str = "portcullis.audit/1";

use crate::idp::{loggable, Identity};
use crate::policy::{Outcome, ShadowHit};
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
    /// The app the request was for, when known.
    pub app: Option<&'a str>,
}

/// How an absent value is written in a record.
const NONE: &str = "-";

fn client(ctx: &AuditContext<'_>) -> String {
    ctx.client_ip
        .map_or_else(|| NONE.to_string(), |ip| ip.to_string())
}

fn app<'a>(ctx: &AuditContext<'a>) -> &'a str {
    ctx.app.unwrap_or(NONE)
}

/// What the rules decided for one request to an app.
pub struct AccessRecord<'a> {
    /// The decision's kind.
    pub decision: Outcome,
    /// The deciding rule's id (none for default deny and "sign in first").
    pub rule: Option<&'a str>,
    /// Why, in words (which rule or which missing condition).
    pub reason: &'a str,
    /// Shadow rules that would have decided otherwise.
    pub shadow: &'a [ShadowHit<'a>],
    /// The signed-in user, if any.
    pub user: Option<&'a Identity>,
    /// How the user was recognised: `session` (browser cookie), `bearer` (an access token),
    /// or `-` (anonymous).
    pub via: &'a str,
    /// The client an access token was issued to, when it says.
    pub client_id: Option<&'a str>,
    /// Request method.
    pub method: &'a str,
    /// Normalised path (never the query).
    pub path: &'a str,
    /// SHA-256 of the policy file that decided.
    pub policy_sha256: &'a str,
}

/// One access decision (every request that reached an app's rules).
pub fn access_decision(ctx: &AuditContext<'_>, record: &AccessRecord<'_>) {
    tracing::info!(
        target: "audit",
        event = "access",
        decision = record.decision.as_str(),
        rule = record.rule.unwrap_or(NONE),
        reason = %loggable(record.reason),
        shadow = %record
            .shadow
            .iter()
            .map(|h| format!("{}:{}", h.would, h.rule))
            .collect::<Vec<_>>()
            .join(","),
        user = %record.user.map_or(std::borrow::Cow::Borrowed(NONE), Identity::display),
        idp = record.user.map_or(NONE, |u| &*u.idp),
        via = record.via,
        token_client = %loggable(record.client_id.unwrap_or(NONE)),
        app = app(ctx),
        client = %client(ctx),
        method = record.method,
        path = %loggable(record.path),
        policy_sha256 = record.policy_sha256,
        request_id = ctx.request_id,
        "access decision"
    );
    recent::remember(recent::RecentDecision {
        at_unix: crate::clock::unix_now(),
        app: app(ctx).to_string(),
        decision: record.decision.as_str(),
        rule: record.rule.unwrap_or(NONE).to_string(),
        user: record
            .user
            .map_or(std::borrow::Cow::Borrowed(NONE), Identity::display)
            .into_owned(),
        method: record.method.to_string(),
        path: loggable(record.path).into_owned(),
        client: client(ctx),
        request_id: ctx.request_id.to_string(),
    });
}

/// A login finished and a session began.
pub fn login_succeeded(ctx: &AuditContext<'_>, user: &Identity) {
    tracing::info!(
        target: "audit",
        event = "login_success",
        user = %user.display(),
        subject = %loggable(&user.subject),
        groups = %loggable(&user.groups.join(",")),
        acr = %loggable(user.acr.as_deref().unwrap_or(NONE)),
        idp = %user.idp,
        app = app(ctx),
        client = %client(ctx),
        request_id = ctx.request_id,
        "login succeeded"
    );
}

/// A signed-in user authenticated again, more strongly, for a require rule (step-up).
pub fn stepped_up(ctx: &AuditContext<'_>, user: &Identity, rule: &str) {
    tracing::info!(
        target: "audit",
        event = "step_up",
        user = %user.display(),
        subject = %loggable(&user.subject),
        rule,
        acr = %loggable(user.acr.as_deref().unwrap_or(NONE)),
        amr = %loggable(&user.amr.join(",")),
        idp = %user.idp,
        app = app(ctx),
        client = %client(ctx),
        request_id = ctx.request_id,
        "step-up sign-in succeeded"
    );
}

/// A login did not finish.
pub fn login_failed(ctx: &AuditContext<'_>, idp: Option<&str>, reason: &dyn Display) {
    tracing::warn!(
        target: "audit",
        event = "login_failure",
        reason = %reason,
        idp = idp.unwrap_or(NONE),
        app = app(ctx),
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
        user = %user.map_or(std::borrow::Cow::Borrowed(NONE), Identity::display),
        subject = %user.map_or(std::borrow::Cow::Borrowed(NONE), |u| loggable(&u.subject)),
        idp = user.map_or(NONE, |u| &*u.idp),
        app = app(ctx),
        client = %client(ctx),
        request_id = ctx.request_id,
        "logout"
    );
}

/// Why a session ended with its sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInEnded {
    /// The user logged out at another app host of the same sign-in.
    LogoutElsewhere,
    /// The IdP ended the sign-in (single logout).
    IdpLogout,
    /// The IdP ended it by OpenID Connect back-channel logout.
    BackchannelLogout,
    /// An administrator revoked it.
    Revoked,
    /// The IdP refused to refresh its tokens (grant revoked, user deactivated).
    RefreshRefused,
    /// A security event from the IdP (Universal Logout, Shared Signals) ended it.
    SecurityEvent,
}

impl SignInEnded {
    /// Name in records.
    pub fn as_str(self) -> &'static str {
        match self {
            SignInEnded::LogoutElsewhere => "logout_elsewhere",
            SignInEnded::IdpLogout => "idp_logout",
            SignInEnded::BackchannelLogout => "backchannel_logout",
            SignInEnded::Revoked => "revoked",
            SignInEnded::RefreshRefused => "refresh_refused",
            SignInEnded::SecurityEvent => "security_event",
        }
    }
}

/// A session ended because another one of its sign-in did.
pub fn session_ended(ctx: &AuditContext<'_>, session: &Session, reason: SignInEnded) {
    let user = &session.identity;
    tracing::info!(
        target: "audit",
        event = "session_end",
        reason = reason.as_str(),
        user = %user.display(),
        subject = %loggable(&user.subject),
        idp = %user.idp,
        app = %session.app,
        host = %session.host,
        client = %client(ctx),
        request_id = ctx.request_id,
        "session ended with its sign-in"
    );
}

/// A message from an IdP or transmitter that would end or change sessions was refused.
pub fn signal_refused(ctx: &AuditContext<'_>, kind: &str, reason: &dyn Display) {
    tracing::warn!(
        target: "audit",
        event = "signal_refused",
        kind,
        reason = %reason,
        client = %client(ctx),
        request_id = ctx.request_id,
        "session signal refused"
    );
}

/// An API caller's bearer token was refused (invalid, expired, another API's, unverifiable).
pub fn bearer_refused(ctx: &AuditContext<'_>, reason: &dyn Display) {
    tracing::warn!(
        target: "audit",
        event = "bearer_refused",
        reason = %reason,
        app = app(ctx),
        client = %client(ctx),
        request_id = ctx.request_id,
        "bearer token refused"
    );
}

/// Sign-in requests were refused by a login rate limit (`refused` since the last record).
pub fn login_throttled(ctx: &AuditContext<'_>, limit: &str, refused: u64) {
    tracing::warn!(
        target: "audit",
        event = "login_throttled",
        limit,
        refused,
        app = app(ctx),
        client = %client(ctx),
        request_id = ctx.request_id,
        "sign-in requests refused by a rate limit"
    );
}

/// An administrator revoked sessions.
pub fn sessions_revoked(ctx: &AuditContext<'_>, operator: &str, which: &dyn Display, count: usize) {
    tracing::info!(
        target: "audit",
        event = "revocation",
        operator = %loggable(operator),
        selector = %which,
        sessions = count,
        client = %client(ctx),
        request_id = ctx.request_id,
        "sessions revoked by an administrator"
    );
}

/// The local session ended, but the IdP did not confirm its side of the logout.
pub fn logout_unconfirmed(ctx: &AuditContext<'_>, idp: &str, reason: &dyn Display) {
    tracing::warn!(
        target: "audit",
        event = "logout_failure",
        reason = %reason,
        idp,
        app = app(ctx),
        client = %client(ctx),
        request_id = ctx.request_id,
        "identity provider did not confirm the logout"
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
        app = app(ctx),
        session_app = %session.app,
        client = %client(ctx),
        request_id = ctx.request_id,
        "session expired"
    );
}
