//! Active health checks: every app with `[health] path` has each upstream probed on its own
//! schedule, so a dead backend leaves the rotation before a user's request finds it, and
//! comes back on its own.
//!
//! A probe connects exactly as a proxied request does (the app's peer: TLS, CA, client
//! certificate, SNI) and sends `GET <path>` with the `Host` the app would see. Results feed
//! `upstream::UpstreamSet` next to the passive ejection; the standing shows on `/readyz` and in
//! the `portcullis_upstream_up` metric.

use crate::reload::SharedGateway;
use crate::upstream::ProbeVerdict;
use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// How often the scheduler looks for due probes (each app's interval is its own).
const TICK: Duration = Duration::from_millis(100);

/// Why a probe failed.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting or speaking HTTP failed.
    #[error("{0}")]
    Http(String),
    /// An answer, but not one that means healthy.
    #[error("answered {0}")]
    Status(u16),
}

/// The background service running every app's probes.
pub struct ActiveHealthChecks {
    gateway: SharedGateway,
    connector: Arc<Connector>,
}

impl ActiveHealthChecks {
    /// Probes for the apps of `gateway` (whatever a reload makes it).
    pub fn new(gateway: SharedGateway) -> Self {
        Self {
            gateway,
            connector: Arc::new(Connector::new(None)),
        }
    }
}

#[async_trait]
impl BackgroundService for ActiveHealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let gateway = self.gateway.load_full();
            for app in gateway.apps() {
                let Some(check) = app.config.active_health() else {
                    continue;
                };
                for i in 0..app.upstream_count() {
                    if !app.claim_probe(i) {
                        continue;
                    }
                    let (Some(peer), Some(host)) = (app.peer(i), app.probe_host(i)) else {
                        continue;
                    };
                    let app = app.clone();
                    let peer = peer.clone();
                    let connector = self.connector.clone();
                    let check = check.clone();
                    tokio::spawn(async move {
                        let result = probe(&connector, peer, &check.path, &host, check.timeout)
                            .await
                            .and_then(|status| {
                                if check.expect_status.contains(&status) {
                                    Ok(())
                                } else {
                                    Err(ProbeError::Status(status))
                                }
                            });
                        let url = app
                            .config
                            .upstreams()
                            .get(i)
                            .map_or("?", |u| u.url.as_str());
                        match (app.probed(i, result.is_ok()), &result) {
                            (ProbeVerdict::WentDown, Err(e)) => tracing::warn!(
                                app = app.config.id(),
                                upstream = url,
                                error = %e,
                                "upstream out of the rotation: its health checks fail"
                            ),
                            (ProbeVerdict::CameBack, _) => tracing::info!(
                                app = app.config.id(),
                                upstream = url,
                                "upstream back in the rotation: its health checks pass"
                            ),
                            (_, Err(e)) => tracing::debug!(
                                app = app.config.id(),
                                upstream = url,
                                error = %e,
                                "health check failed"
                            ),
                            _ => {}
                        }
                    });
                }
            }
        }
    }
}

/// One probe: `GET path` on a fresh connection to `peer`; the status it answered.
async fn probe(
    connector: &Connector,
    mut peer: HttpPeer,
    path: &str,
    host: &str,
    timeout: Duration,
) -> Result<u16, ProbeError> {
    peer.options.connection_timeout = Some(timeout);
    peer.options.total_connection_timeout = Some(timeout);
    peer.options.read_timeout = Some(timeout);
    peer.options.write_timeout = Some(timeout);
    let http = |e: Box<pingora::Error>| ProbeError::Http(e.to_string());
    let exchange = async {
        let (mut session, _reused) = connector.get_http_session(&peer).await.map_err(http)?;
        let mut request = RequestHeader::build("GET", path.as_bytes(), None).map_err(http)?;
        request.insert_header("Host", host).map_err(http)?;
        request
            .insert_header("User-Agent", "portcullis-health-check")
            .map_err(http)?;
        session
            .write_request_header(Box::new(request))
            .await
            .map_err(http)?;
        session.finish_request_body().await.map_err(http)?;
        session.read_response_header().await.map_err(http)?;
        let status = session.response_header().map_or(0, |r| r.status.as_u16());
        // The body is not read: the connection is dropped, never pooled half-read.
        session.shutdown().await;
        Ok(status)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(ProbeError::Timeout(timeout)))
}
