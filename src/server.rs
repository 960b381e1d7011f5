//! Assembling and running the Pingora server from loaded configuration.

use crate::admin::AdminApp;
use crate::config::{GatewayConfig, PolicySet};
use crate::gateway::{Gateway, Lasting};
use crate::lifecycle::{Lifecycle, TermWithGrace};
use crate::proxy::head_deadline::HeadDeadline;
use crate::proxy::Proxy;
use crate::reload::{Reloader, SharedGateway};
use crate::session::store::memory::SnapshotKeeper;
use arc_swap::ArcSwap;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A listener address is taken or not ours to bind.
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The configured address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        reason: String,
    },
    /// Sign-in state could not be prepared.
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
    /// The HTTPS certificate or key could not be loaded.
    #[error("cannot load TLS certificate/key ({cert}, {key}): {reason}")]
    Tls {
        /// Certificate file.
        cert: String,
        /// Key file.
        key: String,
        /// What the TLS library said.
        reason: String,
    },
}

/// Tries each listener address once, so a taken port is a clear start-up error instead of a
/// panic inside Pingora's listener task (which would leave a process that serves nothing).
fn check_bindable(config: &GatewayConfig) -> Result<(), StartError> {
    let listeners = [
        ("http", config.http),
        ("https", config.https.as_ref().map(|h| h.addr)),
        ("admin", config.admin),
    ];
    for (what, addr) in listeners {
        if let Some(addr) = addr {
            std::net::TcpListener::bind(addr).map_err(|e| StartError::Bind {
                what,
                addr,
                reason: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// A server ready to run, and the gateway state it serves.
pub struct Assembled {
    /// The Pingora server with every service added.
    pub server: Server,
    /// The live gateway state (the session-scale benchmark loads sessions into it).
    pub gateway: SharedGateway,
    /// Draining state, shared with the proxy and the admin listener.
    pub lifecycle: Arc<Lifecycle>,
    /// How long SIGTERM keeps the gateway serving before the listeners close.
    pub grace_period: std::time::Duration,
    /// The embedded store's snapshot, when `[sessions] snapshot_file` is set.
    pub snapshot: Option<Arc<SnapshotKeeper>>,
}

/// How the process comes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Binds its own listeners.
    #[default]
    Fresh,
    /// Takes the listening sockets over from the running process (zero-downtime upgrade:
    /// start this, then send the old process SIGQUIT).
    Upgrade,
}

/// Builds the server and runs it until SIGTERM (graceful) or SIGINT (fast).
pub fn run(
    config_path: &Path,
    config: GatewayConfig,
    policies: PolicySet,
    start: Start,
) -> Result<(), StartError> {
    let assembled = assemble(config_path, config, policies, start)?;
    serve(assembled);
    Ok(())
}

/// Runs an assembled server until SIGTERM (drain for the grace period, then close the listeners
/// and finish requests in flight), SIGQUIT (hand the listeners to a new process) or SIGINT (at
/// once); the embedded store's snapshot is written on the way out.
pub fn serve(assembled: Assembled) {
    let signals = TermWithGrace::new(
        assembled.lifecycle,
        assembled.grace_period,
        assembled.snapshot.clone(),
    );
    assembled.server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    if let Some(snapshot) = &assembled.snapshot {
        on_own_runtime(snapshot.write_once());
    }
    tracing::info!("portcullis stopped");
}

/// Runs a future outside Pingora's runtimes (before they start or after they stopped).
fn on_own_runtime(work: impl std::future::Future<Output = ()>) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(work),
        Err(e) => tracing::error!(error = %e, "no runtime for the session snapshot"),
    }
}

/// Builds the server and its services without starting them.
pub fn assemble(
    config_path: &Path,
    config: GatewayConfig,
    policies: PolicySet,
    start: Start,
) -> Result<Assembled, StartError> {
    // An upgrade takes over sockets the old process holds: they cannot be bound again.
    if start == Start::Fresh {
        check_bindable(&config)?;
    }
    // Pingora closes the listeners first and then waits its "grace period" before stopping the
    // runtimes, so that wait is our drain of requests in flight (`shutdown_timeout`); our own
    // grace period — serving on, /readyz at 503 — runs before it (see `lifecycle`).
    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(config.shutdown_timeout.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.upgrade_sock.display().to_string(),
        pid_file: String::new(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: start == Start::Upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    // With `Start::Upgrade` this waits for the old process's sockets (it writes its
    // snapshot first, so what is loaded below is what it held).
    server.bootstrap();
    // Written once the sockets are ours: from here on, this process is the one to signal.
    if let Some(pid_file) = &config.pid_file {
        if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            tracing::error!(file = %pid_file.display(), error = %e, "cannot write the pid file");
        }
    }

    let lasting = Lasting::new(&config, crate::clock::system())?;
    let auth = lasting.auth.clone();
    let snapshot = match (&auth.stores.memory, &config.sessions.snapshot_file) {
        (Some(store), Some(path)) => auth
            .store_keys()
            .map(|keys| Arc::new(SnapshotKeeper::new(store.clone(), keys, path.clone()))),
        _ => None,
    };
    if let Some(snapshot) = &snapshot {
        on_own_runtime(snapshot.load());
    }
    if let Some(redis) = &auth.stores.redis {
        server.add_service(pingora::services::background::background_service(
            "session store invalidations",
            crate::session::store::redis::Invalidations(redis.clone()),
        ));
    }
    let gateway: SharedGateway = Arc::new(ArcSwap::from_pointee(Gateway::new(
        config, policies, lasting,
    )));
    let started = gateway.load_full();
    let cfg = &started.config;
    let lifecycle = Lifecycle::new();
    let mut app = pingora::proxy::http_proxy(
        &server.configuration,
        Proxy::new(gateway.clone(), lifecycle.clone()),
    );
    if cfg.h2c {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
    }
    let mut proxy = Service::new(
        "portcullis".to_string(),
        HeadDeadline::new(app, cfg.request_head_timeout, lifecycle.clone()),
    );
    if let Some(addr) = cfg.http {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(https) = &cfg.https {
        let cert = https.cert.display().to_string();
        let key = https.key.display().to_string();
        let mut tls = TlsSettings::intermediate(&cert, &key).map_err(|e| StartError::Tls {
            cert: cert.clone(),
            key: key.clone(),
            reason: e.to_string(),
        })?;
        tls.enable_h2();
        proxy.add_tls_with_settings(&https.addr.to_string(), None, tls);
    }
    server.add_service(proxy);

    if let Some(admin_addr) = cfg.admin {
        let mut admin = Service::new(
            "portcullis admin".to_string(),
            AdminApp::new(gateway.clone(), lifecycle.clone()),
        );
        admin.add_tcp(&admin_addr.to_string());
        server.add_service(admin);
    }
    if auth.providers().next().is_some() {
        server.add_service(pingora::services::background::background_service(
            "idp discovery",
            crate::discovery::Discovery::new(auth),
        ));
    }
    server.add_service(pingora::services::background::background_service(
        "upstream health checks",
        crate::health_checks::ActiveHealthChecks::new(gateway.clone()),
    ));
    server.add_service(pingora::services::background::background_service(
        "readiness notification",
        crate::notify::Readiness::new(gateway.clone()),
    ));
    let reloader = Reloader::new(config_path.to_path_buf(), gateway.clone());
    server.add_service(pingora::services::background::background_service(
        "reload", reloader,
    ));
    tracing::info!(
        apps = started.apps().len(),
        unavailable = started.broken().len(),
        "portcullis starting"
    );
    let grace_period = cfg.grace_period;
    Ok(Assembled {
        server,
        gateway,
        lifecycle,
        grace_period,
        snapshot,
    })
}
