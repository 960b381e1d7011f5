//! Background discovery of every identity provider, so a gateway whose IdP is down still
//! starts, serves public rules, and begins signing users in as soon as the IdP answers; then a
//! watch on each IdP's reachability (see `idp::health`), so logins are not sent into an IdP
//! that has gone away.

use crate::auth::{Auth, Provider};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;

/// Runs discovery (with backoff) for each provider until it succeeds, and watches it after.
pub struct Discovery {
    auth: Arc<Auth>,
}

impl Discovery {
    /// Discovery for these providers.
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

/// Checks the provider's reachability for ever, once it has been loaded.
async fn watch(provider: Provider, interval: std::time::Duration) {
    let health = provider.health();
    while !health.was_loaded() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut failures: u32 = 0;
    loop {
        health.until_next_check(interval, failures).await;
        match provider.probe().await {
            Ok(()) => {
                if failures > 0 || !health.is_reachable() {
                    tracing::info!(
                        idp = provider.name(),
                        "identity provider reachable again: sign-in available"
                    );
                }
                failures = 0;
                health.reachable(true, None);
            }
            Err(why) => {
                if health.is_reachable() || failures == 0 {
                    tracing::warn!(idp = provider.name(), error = %why, "identity provider unreachable: protected pages answer 'sign-in temporarily unavailable'");
                }
                failures = failures.saturating_add(1);
                health.reachable(false, Some(why));
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Discovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = tokio::task::JoinSet::new();
        for provider in self.auth.providers() {
            let loader = provider.clone();
            tasks.spawn(async move { loader.load_until_ready().await });
            let watched = provider.clone();
            let interval = self.auth.health_check_interval(provider.name());
            tasks.spawn(async move { watch(watched, interval).await });
        }
        tokio::select! {
            _ = async { while tasks.join_next().await.is_some() {} } => {}
            _ = shutdown.changed() => tasks.abort_all(),
        }
    }
}
