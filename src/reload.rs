//! Reloading configuration on SIGHUP, without dropping a connection.
//!
//! Owns re-reading `portcullis.toml` and the policies directory and swapping the gateway's
//! shared state atomically. Requests already running finish with the state they started with.
//! Listener, thread and log settings need a restart: they are kept, with a warning.

use crate::config::{self, GatewayConfig, Problem};
use crate::gateway::Gateway;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{error, info, warn};

/// The gateway state every request reads, swappable as a whole.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

/// Reloads configuration when asked (SIGHUP).
pub struct Reloader {
    config_path: PathBuf,
    current: SharedGateway,
}

/// What a reload changed.
#[derive(Debug)]
pub struct ReloadOutcome {
    /// Apps now serving.
    pub apps: usize,
    /// Apps disabled by policy errors.
    pub unavailable: usize,
    /// Apps whose file has errors now, serving their last good version.
    pub kept_last_good: usize,
    /// Every problem found (policy errors disable only their app).
    pub problems: Vec<Problem>,
}

impl Reloader {
    /// A reloader for the gateway started from `config_path`.
    pub fn new(config_path: PathBuf, current: SharedGateway) -> Self {
        Self {
            config_path,
            current,
        }
    }

    /// Reads configuration again and swaps it in. A gateway config with errors changes
    /// nothing (the running state is kept); policy errors disable only their own app.
    pub fn reload(&self) -> Result<ReloadOutcome, Vec<Problem>> {
        let (fresh, mut problems) = config::load_gateway(&self.config_path)?;
        let running = self.current.load();
        let fresh = keep_restart_only_settings(fresh, &running.config);
        let mut policies = config::load_policies(&fresh);
        problems.extend(policies.problems.iter().cloned());
        // A policy file that no longer compiles keeps serving its last good version; only an
        // app that never loaded is switched off.
        let mut kept = Vec::new();
        policies.broken.retain(|broken| {
            match running.apps().iter().find(|a| a.config.file() == broken.file) {
                Some(last_good) => {
                    warn!(file = %broken.file.display(), app = %last_good.config.id(), "policy file has errors: keeping the last good version of the app");
                    kept.push(last_good.config.clone());
                    false
                }
                None => true,
            }
        });
        let kept_count = kept.len();
        policies.apps.extend(kept);
        let next = Gateway::new(fresh, policies, running.lasting());
        // What the health checks learnt survives the reload: a dead backend stays out.
        next.inherit_upstream_health(&running);
        let outcome = ReloadOutcome {
            apps: next.apps().len(),
            unavailable: next.broken().len(),
            kept_last_good: kept_count,
            problems,
        };
        self.current.store(Arc::new(next));
        Ok(outcome)
    }

    fn reload_and_log(&self) {
        let result = self.reload();
        crate::metrics::reload(result.is_ok());
        match result {
            Ok(outcome) => {
                for p in &outcome.problems {
                    if p.is_error() {
                        error!(problem = %p, "policy error");
                    } else {
                        warn!(problem = %p, "configuration warning");
                    }
                }
                info!(
                    apps = outcome.apps,
                    unavailable = outcome.unavailable,
                    kept_last_good = outcome.kept_last_good,
                    "configuration reloaded"
                );
            }
            Err(problems) => {
                for p in &problems {
                    error!(problem = %p, "gateway configuration error");
                }
                error!("reload refused: gateway configuration has errors; still serving the previous configuration");
            }
        }
    }
}

/// Listeners, threads, shutdown timing and logging are fixed at start: keep the running values
/// and say so when the file asks for others.
fn keep_restart_only_settings(mut fresh: GatewayConfig, running: &GatewayConfig) -> GatewayConfig {
    let changed = fresh.http != running.http
        || fresh.https.as_ref().map(|h| (h.addr, &h.cert, &h.key))
            != running.https.as_ref().map(|h| (h.addr, &h.cert, &h.key))
        || fresh.h2c != running.h2c
        || fresh.admin != running.admin
        || fresh.threads != running.threads
        || fresh.grace_period != running.grace_period
        || fresh.shutdown_timeout != running.shutdown_timeout
        || fresh.request_head_timeout != running.request_head_timeout
        || fresh.log_format != running.log_format
        || fresh.log_level != running.log_level;
    if changed {
        warn!("listener, server or log settings changed: they take effect at the next restart");
    }
    // Sessions live in memory with the identity providers they came from: replacing either
    // would sign everyone out, so both wait for a restart.
    if fresh.sessions != running.sessions || fresh.idps != running.idps {
        warn!("[sessions] or [idp.*] settings changed: they take effect at the next restart");
    }
    fresh.sessions = running.sessions.clone();
    fresh.idps = running.idps.clone();
    fresh.http = running.http;
    fresh.https = running.https.clone();
    fresh.h2c = running.h2c;
    fresh.admin = running.admin;
    fresh.threads = running.threads;
    fresh.grace_period = running.grace_period;
    fresh.shutdown_timeout = running.shutdown_timeout;
    fresh.request_head_timeout = running.request_head_timeout;
    fresh.upgrade_sock = running.upgrade_sock.clone();
    fresh.pid_file = running.pid_file.clone();
    fresh.log_format = running.log_format;
    fresh.log_level = running.log_level.clone();
    fresh
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot listen for SIGHUP: configuration reload disabled");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    info!("SIGHUP received: reloading configuration");
                    crate::notify::reloading();
                    self.reload_and_log();
                    crate::notify::ready();
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}
