//! A total deadline for receiving a request's line and headers.
//!
//! Pingora times out each read of a request head, not the head as a whole, so a client that
//! sends one byte every few seconds keeps a connection (and its memory) for ever — the
//! slowloris attack. This wrapper around the proxy app gives every request head one deadline,
//! counted from when the connection starts waiting for it (on a kept-alive connection that
//! includes the idle wait, which also bounds how long an idle connection stays open). The
//! proxy marks the head as arrived in its first phase; a head still incomplete at the deadline
//! closes the connection.

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
}

impl<A> HeadDeadline<A> {
    /// Wraps `app`.
    pub fn new(app: A, limit: Duration) -> Self {
        Self {
            app: Arc::new(app),
            limit,
        }
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
        let work = HEAD_ARRIVED.scope(
            arrived.clone(),
            self.app.process_new_http(session, shutdown),
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
        self.app.http_cleanup().await;
    }
}
