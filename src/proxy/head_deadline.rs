//! A total deadline for receiving a request's line and headers.
//!
//! Pingora times out each read of a request head, not the head as a whole, so a client that
//! sends one byte every few seconds keeps a connection (and its memory) for ever — the
//! slowloris attack. This wrapper around the proxy app gives every request head one deadline,
//! counted from when the connection starts waiting for it (on a kept-alive connection that
//! includes the idle wait, which also bounds how long an idle connection stays open). The
//! proxy marks the head as arrived in its first phase; a head still incomplete at the deadline
//! closes the connection.

use crate::lifecycle::Lifecycle;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

tokio::task_local! {
    /// Set for the request being read on this task: flipped once its head has arrived.
    static HEAD_ARRIVED: Arc<AtomicBool>;
}

/// Called by the proxy's first phase: this request's head arrived in time.
pub fn mark_head_arrived() {
    let _ = HEAD_ARRIVED.try_with(|arrived| arrived.store(true, Ordering::Release));
}

/// An HTTP app whose request heads must arrive within `limit`.
pub struct HeadDeadline<A> {
    app: Arc<A>,
    limit: Duration,
    lifecycle: Arc<Lifecycle>,
    late_shutdown: std::sync::OnceLock<ShutdownWatch>,
}

/// How long after the listeners close the connections still here hear of it. Pingora drops a
/// connection whose request it has not read when it hears of the shutdown; one accepted an
/// instant before the listeners closed (its request still on the wire — in an upgrade, while
/// both processes accept on the shared socket) would fail. Idle kept-alive connections go
/// this much later instead, well inside the shutdown timeout.
const SHUTDOWN_NOTICE_DELAY: Duration = Duration::from_millis(500);

impl<A> HeadDeadline<A> {
    /// Wraps `app`; `lifecycle` learns when the listeners have closed.
    pub fn new(app: A, limit: Duration, lifecycle: Arc<Lifecycle>) -> Self {
        Self {
            app: Arc::new(app),
            limit,
            lifecycle,
            late_shutdown: std::sync::OnceLock::new(),
        }
    }

    /// The shutdown watch the proxy is given: true [`SHUTDOWN_NOTICE_DELAY`] after Pingora's,
    /// which at once makes every response close its connection.
    fn late(&self, real: &ShutdownWatch) -> ShutdownWatch {
        self.late_shutdown
            .get_or_init(|| {
                let (tx, rx) = tokio::sync::watch::channel(*real.borrow());
                let mut real = real.clone();
                let lifecycle = self.lifecycle.clone();
                tokio::spawn(async move {
                    while !*real.borrow() {
                        if real.changed().await.is_err() {
                            break;
                        }
                    }
                    lifecycle.start_closing();
                    tokio::time::sleep(SHUTDOWN_NOTICE_DELAY).await;
                    let _ = tx.send(true);
                    // Kept alive so the receivers never see the channel closed early.
                    std::future::pending::<()>().await;
                });
                rx
            })
            .clone()
    }
}

#[async_trait]
impl<A> HttpServerApp for HeadDeadline<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let arrived = Arc::new(AtomicBool::new(false));
        let shutdown = self.late(shutdown);
        let work = HEAD_ARRIVED.scope(
            arrived.clone(),
            self.app.process_new_http(session, &shutdown),
        );
        tokio::pin!(work);
        tokio::select! {
            biased;
            done = &mut work => done,
            () = tokio::time::sleep(self.limit) => {
                if arrived.load(Ordering::Acquire) {
                    // The head came in time; the rest of the request has its own timeouts.
                    work.await
                } else {
                    tracing::info!(
                        limit_ms = u64::try_from(self.limit.as_millis()).unwrap_or(u64::MAX),
                        "request head not received within the deadline: connection closed"
                    );
                    None
                }
            }
        }
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.app.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.app.server_options()
    }

    async fn http_cleanup(&self) {
        // Pingora calls this as the listeners close, and the proxy then drops every connection
        // whose request it has not read yet: give those accepted last their moment first.
        self.lifecycle.start_closing();
        tokio::time::sleep(SHUTDOWN_NOTICE_DELAY).await;
        self.app.http_cleanup().await;
    }
}
