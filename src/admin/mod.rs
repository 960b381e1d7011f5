//! The admin listener: `/healthz` (the process answers), `/readyz` (configuration loaded and
//! every traffic listener accepting connections), `/metrics` (Prometheus, [`crate::metrics`])
//! and, for callers with the admin token, the session API ([`sessions`]); the admin console
//! ([`console`]) under `/console/`. Kept off the traffic listeners on purpose.

pub mod console;
pub mod sessions;

use crate::lifecycle::Lifecycle;
use crate::listeners::{listener_probes, probe};
use crate::reload::SharedGateway;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;
use std::time::Duration;

/// How long `/readyz` waits for a listener to accept a probe connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The admin HTTP app.
pub struct AdminApp {
    gateway: SharedGateway,
    lifecycle: Arc<Lifecycle>,
}

impl AdminApp {
    /// Admin endpoints over shared gateway state.
    pub fn new(gateway: SharedGateway, lifecycle: Arc<Lifecycle>) -> Self {
        Self { gateway, lifecycle }
    }

    async fn readiness(&self) -> (u16, String) {
        let mut lines = Vec::new();
        let mut ready = true;
        if self.lifecycle.is_draining() {
            // Still serving, but a load balancer should send new traffic elsewhere.
            ready = false;
            lines.push("draining: shutting down after the grace period".to_string());
        }
        for (addr, tls) in listener_probes(&self.gateway.load()) {
            let up = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, probe(addr, tls)).await,
                Ok(true)
            );
            ready &= up;
            lines.push(format!(
                "listener {addr}: {}",
                if up { "up" } else { "down" }
            ));
        }
        let gateway = self.gateway.load();
        lines.push(format!("apps serving: {}", gateway.apps().len()));
        lines.push(format!(
            "apps unavailable (policy errors): {}",
            gateway.broken().len()
        ));
        // Not ready until every IdP has answered once: a node that cannot sign anyone in
        // should not take new traffic. Losing an IdP later does not make it unready (signed-in
        // users keep working); the line says so, and sign-in answers 503 meanwhile.
        let mut idps: Vec<_> = gateway.auth.providers().collect();
        idps.sort_by(|a, b| a.name().cmp(b.name()));
        for idp in idps {
            let health = idp.health();
            let loaded = match idp.kind() {
                "saml" => "metadata loaded",
                _ => "discovered",
            };
            let state = if !health.was_loaded() {
                ready = false;
                match idp.kind() {
                    "saml" => "metadata pending (sign-in unavailable)".to_string(),
                    _ => "discovery pending (sign-in unavailable)".to_string(),
                }
            } else if health.is_reachable() {
                format!("{loaded}, reachable")
            } else {
                format!(
                    "{loaded}, unreachable (sign-in unavailable): {}",
                    health.last_error().unwrap_or_default()
                )
            };
            lines.push(format!("idp {} ({}): {state}", idp.name(), idp.kind()));
            if let Some(saml) = gateway.auth.saml_provider(idp.name()) {
                for cert in saml.expiring_certificates() {
                    lines.push(format!(
                        "idp {} signing certificate {}: expires {} ({} days left)",
                        idp.name(),
                        cert.subject,
                        cert.not_after,
                        cert.days_left.unwrap_or_default()
                    ));
                }
            }
        }
        // Like an IdP, a store that stops answering does not make the node unready: every
        // node shares it, and public routes keep serving; sign-in answers 503 meanwhile.
        let probed = gateway.auth.sessions.probe().await;
        let store = gateway.auth.sessions.describe();
        let reachable = probed.is_ok();
        lines.push(format!(
            "session store ({}): {}; {}",
            store.kind,
            if reachable {
                "reachable"
            } else {
                "unreachable (sign-in unavailable)"
            },
            store.detail
        ));
        lines.push(format!(
            "sessions held here: {}",
            gateway.auth.sessions.held()
        ));
        // A dead backend is the app's trouble, not the node's: it does not make it unready.
        for app in gateway.apps() {
            for (url, in_rotation) in app.upstream_health() {
                lines.push(format!(
                    "upstream {} {url}: {}",
                    app.config.id(),
                    if in_rotation {
                        "in the rotation"
                    } else {
                        "out of the rotation"
                    }
                ));
            }
        }
        let head = if ready { "ready" } else { "not ready" };
        (
            if ready { 200 } else { 503 },
            format!("{head}\n{}\n", lines.join("\n")),
        )
    }
}

impl AdminApp {
    /// `/metrics`: the counters, with the gateway's current state.
    async fn metrics(&self) -> String {
        let gateway = self.gateway.load_full();
        // The caches count lazily: settle them first, or a new session would not show yet.
        gateway.auth.sessions.run_maintenance().await;
        let snapshot = crate::metrics::Snapshot {
            apps: gateway
                .apps()
                .iter()
                .map(|app| crate::metrics::AppState {
                    id: app.config.id(),
                    policy_sha256: app.config.policy_sha256(),
                    upstreams: app.upstream_health(),
                })
                .collect(),
            unavailable_apps: gateway.broken().len(),
            idps: gateway
                .auth
                .providers()
                .map(|idp| {
                    let health = idp.health();
                    (
                        idp.name(),
                        idp.kind(),
                        health.was_loaded() && health.is_reachable(),
                    )
                })
                .collect(),
            sessions_held: gateway.auth.sessions.held(),
            pending_logins: gateway
                .auth
                .stores
                .memory
                .as_ref()
                .map(|m| m.one_time_held()),
        };
        crate::metrics::render(&snapshot)
    }

    /// The session API: authorised, then list or revoke.
    async fn session_api(&self, session: &ServerSession) -> sessions::Answer {
        let gateway = self.gateway.load_full();
        let req = session.req_header();
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        if let Err(refused) = sessions::authorise(&gateway, header("authorization")) {
            return refused;
        }
        let query: Vec<(String, String)> = req
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let which = match sessions::selector(&query) {
            Ok(w) => w,
            Err(refused) => return refused,
        };
        match (req.method.as_str(), req.uri.path()) {
            ("GET", "/sessions") => sessions::list(&gateway, &which).await,
            ("POST", "/sessions/revoke") => {
                let operator: String = header(sessions::OPERATOR_HEADER)
                    .unwrap_or("unnamed")
                    .chars()
                    .filter(|c| c.is_ascii_graphic() || *c == ' ')
                    .take(64)
                    .collect();
                let client_ip = session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip());
                let request_id = crate::hygiene::new_request_id();
                sessions::revoke(&gateway, &which, &operator, client_ip, &request_id).await
            }
            _ => (
                405,
                r#"{"error":"GET /sessions or POST /sessions/revoke"}"#.to_string(),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        if console::owns(&path) {
            let gateway = self.gateway.load_full();
            let answer = console::answer(&gateway, session).await;
            return console_response(answer);
        }
        let (status, body, content_type) = match path.as_str() {
            "/healthz" => (200, "ok\n".to_string(), "text/plain; charset=utf-8"),
            "/readyz" => {
                let (status, body) = self.readiness().await;
                (status, body, "text/plain; charset=utf-8")
            }
            "/metrics" => (200, self.metrics().await, crate::metrics::CONTENT_TYPE),
            "/sessions" | "/sessions/revoke" => {
                let (status, body) = self.session_api(session).await;
                (status, body, "application/json")
            }
            _ => (404, "not found\n".to_string(), "text/plain; charset=utf-8"),
        };
        let response = Response::builder()
            .status(status)
            .header("Content-Type", content_type)
            .header("Cache-Control", "no-store")
            .header("Content-Length", body.len().to_string())
            .body(body.clone().into_bytes());
        // The builder only fails on invalid parts, and these are constants.
        response.unwrap_or_else(|_| Response::new(body.into_bytes()))
    }
}

/// Headers every console answer carries: no script, no framing, nothing from elsewhere, no
/// caching, no referrer beyond the console (`same-origin`: with `no-referrer` browsers send
/// `Origin: null`, and the forms' origin check needs the real one).
const CONSOLE_HEADERS: [(&str, &str); 6] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
];

fn console_response(answer: console::Answer) -> Response<Vec<u8>> {
    let mut builder = Response::builder()
        .status(answer.status)
        .header("Content-Type", answer.content_type)
        .header("Content-Length", answer.body.len().to_string());
    for (name, value) in CONSOLE_HEADERS {
        builder = builder.header(name, value);
    }
    for (name, value) in &answer.headers {
        builder = builder.header(*name, value.as_str());
    }
    let body = answer.body;
    // Header values are the console's own (locations and cookies it made); a bad one would be
    // a bug, answered as a plain 500 rather than a panic.
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(b"console error\n".to_vec());
        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}
