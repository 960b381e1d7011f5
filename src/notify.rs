//! Telling the service manager (systemd, `Type=notify`) where the process is: `READY=1`
//! once every traffic listener accepts connections, `RELOADING=1` … `READY=1` around a SIGHUP
//! reload, `STOPPING=1` when a SIGTERM starts the drain. Without `NOTIFY_SOCKET` (not under
//! systemd) each call does nothing.

use crate::gateway::Gateway;
use crate::listeners::{listener_probes, probe};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;

fn send(states: &[NotifyState<'_>]) {
    // Not under a service manager: nothing to tell.
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// Serving: this process (an upgrade's new one, too) is the service's main process.
pub fn ready() {
    send(&[
        NotifyState::MainPid(std::process::id()),
        NotifyState::Ready,
        NotifyState::Status("serving"),
    ]);
}

/// A reload has begun (systemd waits for [`ready`] again).
pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

/// The drain has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Waits until every traffic listener accepts, then says [`ready`].
pub struct Readiness {
    gateway: Arc<ArcSwap<Gateway>>,
}

impl Readiness {
    /// Readiness of the listeners `gateway` configures.
    pub fn new(gateway: Arc<ArcSwap<Gateway>>) -> Self {
        Self { gateway }
    }
}

#[async_trait]
impl BackgroundService for Readiness {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let probes = listener_probes(&self.gateway.load());
            let mut all = true;
            for (addr, tls) in probes {
                all &= matches!(
                    tokio::time::timeout(Duration::from_millis(500), probe(addr, tls)).await,
                    Ok(true)
                );
            }
            if all {
                tracing::info!("listeners accepting: ready");
                ready();
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
