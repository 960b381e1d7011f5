//! Background discovery of every identity provider, so a gateway whose IdP is down still
//! starts, serves public rules, and begins signing users in as soon as the IdP answers.

use crate::auth::Auth;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;

/// Runs discovery (with backoff) for each provider until it succeeds.
pub struct Discovery {
    auth: Arc<Auth>,
}

impl Discovery {
    /// Discovery for these providers.
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

#[async_trait]
impl BackgroundService for Discovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = tokio::task::JoinSet::new();
        for provider in self.auth.providers() {
            let provider = provider.clone();
            tasks.spawn(async move { provider.load_until_ready().await });
        }
        tokio::select! {
            _ = async { while tasks.join_next().await.is_some() {} } => {}
            _ = shutdown.changed() => tasks.abort_all(),
        }
    }
}
