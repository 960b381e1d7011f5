//! The admin API for sessions: list a user's sessions, revoke by user, app or all. Every call
//! presents the admin token (`[admin] token_file`) as `Authorization: Bearer`; with no token
//! configured the API answers nobody. Revocations are audited with the operator the caller
//! names (`X-Portcullis-Operator`) and the address it called from.

use crate::audit::{self, AuditContext};
use crate::gateway::Gateway;
use crate::session::store::Selector;
use crate::session::Session;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;

/// Header in which the CLI names the person revoking (audit only; the token authorises).
pub const OPERATOR_HEADER: &str = "x-portcullis-operator";

/// An admin API answer: status and JSON body.
pub type Answer = (u16, String);

/// One session as the admin API shows it (no ids, no tokens).
#[derive(Debug, Serialize)]
struct Listed<'a> {
    user: std::borrow::Cow<'a, str>,
    subject: std::borrow::Cow<'a, str>,
    idp: &'a str,
    app: &'a str,
    host: &'a str,
    groups: Vec<&'a str>,
    created_unix: u64,
    last_seen_unix: u64,
}

fn listed(session: &Session) -> Listed<'_> {
    Listed {
        user: session.identity.display(),
        subject: crate::idp::loggable(&session.identity.subject),
        idp: &session.identity.idp,
        app: &session.app,
        host: &session.host,
        groups: session.identity.groups.iter().map(|g| &**g).collect(),
        created_unix: session.created_unix(),
        last_seen_unix: session.last_seen_ms() / 1000,
    }
}

fn error(status: u16, text: &str) -> Answer {
    (status, serde_json::json!({ "error": text }).to_string())
}

/// Is `presented` (an `Authorization` header) the configured admin token? `Err` is the answer
/// to give instead.
pub fn authorise(gateway: &Gateway, presented: Option<&str>) -> Result<(), Answer> {
    let Some(expected) = &gateway.config.admin_token else {
        return Err(error(
            403,
            "admin API disabled: set [admin] token_file in portcullis.toml",
        ));
    };
    let token = presented
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if token_matches(expected, token) {
        Ok(())
    } else {
        Err(error(401, "admin token missing or wrong"))
    }
}

/// Is `presented` the admin token? Compared in constant time.
pub fn token_matches(expected: &crate::secret::Secret, presented: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.expose().as_bytes());
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

/// The selector a query names: `user=EMAIL`, `app=APP`, `idp=IDP&subject=SUB` or `all=yes`
/// (exactly one).
pub fn selector(query: &[(String, String)]) -> Result<Selector, Answer> {
    let get = |k: &str| {
        query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let named: Vec<Selector> = [
        get("user").map(Selector::Email),
        get("app").map(Selector::App),
        get("subject")
            .zip(get("idp"))
            .map(|(subject, idp)| Selector::Subject { idp, subject }),
        get("all").filter(|v| v == "yes").map(|_| Selector::All),
    ]
    .into_iter()
    .flatten()
    .collect();
    match named.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(error(
            400,
            "name exactly one of: user=EMAIL, app=APP, idp=IDP&subject=SUB, all=yes",
        )),
    }
}

/// `GET /sessions?...`: the sessions the selector names.
pub async fn list(gateway: &Gateway, which: &Selector) -> Answer {
    match gateway.auth.sessions.select(which).await {
        Ok(found) => {
            let list: Vec<Listed<'_>> = found.iter().map(|s| listed(s)).collect();
            (
                200,
                serde_json::json!({ "sessions": list, "count": list.len() }).to_string(),
            )
        }
        Err(e) => error(503, &e.to_string()),
    }
}

/// `POST /sessions/revoke?...`: ends the sessions the selector names, on every node.
pub async fn revoke(
    gateway: &Arc<Gateway>,
    which: &Selector,
    operator: &str,
    client_ip: Option<IpAddr>,
    request_id: &str,
) -> Answer {
    match revoke_selected(gateway, which, operator, client_ip, request_id).await {
        Ok(ended) => (200, serde_json::json!({ "revoked": ended }).to_string()),
        Err(e) => error(503, &e.to_string()),
    }
}

/// Ends the sessions `which` names on every node, audited as `operator`'s revocation; how many
/// ended.
pub async fn revoke_selected(
    gateway: &Gateway,
    which: &Selector,
    operator: &str,
    client_ip: Option<IpAddr>,
    request_id: &str,
) -> Result<usize, crate::session::store::StoreError> {
    let record = AuditContext {
        request_id,
        client_ip,
        app: None,
    };
    let ended = gateway.auth.sessions.remove_selected(which).await?;
    audit::sessions_revoked(&record, operator, which, ended.len());
    for s in &ended {
        audit::session_ended(&record, s, audit::SignInEnded::Revoked);
    }
    Ok(ended.len())
}
