//! The process's life after start: the draining period a SIGTERM begins, and the signals that
//! end it.
//!
//! Pingora stops accepting connections the moment it hears SIGTERM and only then sleeps its
//! grace period, so a load balancer still sending traffic sees refused connections. Here
//! SIGTERM first turns the gateway to *draining* — it keeps accepting and serving, `/readyz`
//! answers 503 and responses ask clients to close their connections — for `grace_period`;
//! only then is Pingora told to close the listeners and let requests in flight finish
//! (`shutdown_timeout`). SIGINT (or a second SIGTERM) stops at once.

use crate::session::store::memory::SnapshotKeeper;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Whether the gateway is on its way out, shared by the proxy and the admin listener.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    closing: AtomicBool,
}

impl Lifecycle {
    /// A gateway that is serving normally.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// SIGTERM arrived: keep serving, but tell load balancers and clients to go elsewhere.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Is the gateway draining (answering, but not ready for new traffic)?
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The listeners have closed (a stop, or the sockets handed to a new process): every
    /// connection still here closes after its response.
    pub fn start_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Should responses close their connections (draining, or the listeners closed)?
    pub fn closes_connections(&self) -> bool {
        self.is_draining() || self.closing.load(Ordering::Acquire)
    }
}

/// The shutdown signals, with a real grace period before Pingora hears of a SIGTERM.
pub struct TermWithGrace {
    lifecycle: Arc<Lifecycle>,
    grace: Duration,
    snapshot: Option<Arc<SnapshotKeeper>>,
}

impl TermWithGrace {
    /// Drains for `grace` after SIGTERM before the listeners close; before a graceful
    /// upgrade (SIGQUIT) hands the listeners over, writes the embedded store's `snapshot`
    /// for the new process to load.
    pub fn new(
        lifecycle: Arc<Lifecycle>,
        grace: Duration,
        snapshot: Option<Arc<SnapshotKeeper>>,
    ) -> Self {
        Self {
            lifecycle,
            grace,
            snapshot,
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for TermWithGrace {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot listen for shutdown signals: stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = quit.recv() => {
                tracing::info!("SIGQUIT received: handing the listening sockets to the new process");
                if let Some(snapshot) = &self.snapshot {
                    snapshot.write_once().await;
                }
                return ShutdownSignal::GracefulUpgrade;
            }
            _ = term.recv() => {}
        }
        self.lifecycle.start_draining();
        crate::notify::stopping();
        tracing::info!(
            grace_period_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
            "SIGTERM received: draining (still serving; /readyz answers 503) before the listeners close"
        );
        tokio::select! {
            _ = tokio::time::sleep(self.grace) => {
                tracing::info!("grace period over: closing the listeners, finishing requests in flight");
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = term.recv() => {
                tracing::info!("second SIGTERM: closing the listeners now");
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}
