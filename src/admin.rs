//! The admin listener: `/healthz` (the process answers) and `/readyz` (configuration loaded and
//! every traffic listener accepting connections). Kept off the traffic listeners on purpose.

use crate::gateway::Gateway;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How long `/readyz` waits for a listener to accept a probe connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The admin HTTP app.
pub struct AdminApp {
    gateway: Arc<Gateway>,
}

impl AdminApp {
    /// Admin endpoints over shared gateway state.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }

    /// Traffic listeners, as addresses a local probe can connect to.
    fn listener_probes(&self) -> Vec<SocketAddr> {
        let cfg = &self.gateway.config;
        cfg.http
            .iter()
            .chain(cfg.https.as_ref().map(|h| &h.addr))
            .map(|a| probe_addr(*a))
            .collect()
    }

    async fn readiness(&self) -> (u16, String) {
        let mut lines = Vec::new();
        let mut ready = true;
        for addr in self.listener_probes() {
            let up = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            );
            ready &= up;
            lines.push(format!(
                "listener {addr}: {}",
                if up { "up" } else { "down" }
            ));
        }
        lines.push(format!("apps serving: {}", self.gateway.apps().len()));
        lines.push(format!(
            "apps unavailable (policy errors): {}",
            self.gateway.broken().len()
        ));
        let head = if ready { "ready" } else { "not ready" };
        (
            if ready { 200 } else { 503 },
            format!("{head}\n{}\n", lines.join("\n")),
        )
    }
}

/// A wildcard bind address is probed on loopback.
fn probe_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, body) = match session.req_header().uri.path() {
            "/healthz" => (200, "ok\n".to_string()),
            "/readyz" => self.readiness().await,
            _ => (404, "not found\n".to_string()),
        };
        let response = Response::builder()
            .status(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Cache-Control", "no-store")
            .header("Content-Length", body.len().to_string())
            .body(body.clone().into_bytes());
        // The builder only fails on invalid parts, and these are constants.
        response.unwrap_or_else(|_| Response::new(body.into_bytes()))
    }
}
