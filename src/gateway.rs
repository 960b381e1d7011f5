//! The gateway's shared, immutable state: configuration, compiled routes and upstream peers.
//!
//! Built once at start from compiled configuration; shared by every request as `Arc<Gateway>`.
//! It holds no per-request state.

use crate::auth::{Auth, AuthError};
use crate::clock::SharedClock;
use crate::config::gateway::{DEFAULT_STRIPPED_HEADERS, DEFAULT_STRIPPED_PREFIXES};
use crate::config::{AppConfig, BrokenApp, GatewayConfig, PolicySet};
use crate::delivery::jars::BackendJars;
use crate::hygiene::HeaderHygiene;
use crate::routing::RouteTable;
use crate::upstream::{ProbeVerdict, Standing, UpstreamSet};
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::Duration;

/// Where a host + path leads.
#[derive(Debug, Clone)]
pub enum Route {
    /// A working app.
    App(Arc<AppRuntime>),
    /// An app whose policy failed to load: answered with 503, never proxied.
    Unavailable(Arc<BrokenApp>),
}

/// An app ready to serve: its policy plus prepared upstream peers.
#[derive(Debug)]
pub struct AppRuntime {
    /// The compiled policy.
    pub config: AppConfig,
    peers: Vec<HttpPeer>,
    upstreams: UpstreamSet,
}

impl AppRuntime {
    fn new(config: AppConfig) -> Self {
        let peers = config
            .upstreams()
            .iter()
            .map(|u| peer_for(&config, u))
            .collect();
        let weights: Vec<u32> = config.upstreams().iter().map(|u| u.weight).collect();
        Self {
            upstreams: UpstreamSet::new(&weights, config.passive_health()),
            peers,
            config,
        }
    }

    /// Next upstream by weighted round-robin among the healthy ones this request has not
    /// tried yet: its index and a peer to connect to.
    pub fn next_peer(&self, tried: &[usize]) -> Option<(usize, HttpPeer)> {
        let i = self.upstreams.pick(tried)?;
        self.peers.get(i).map(|p| (i, p.clone()))
    }

    /// Upstream `i` refused a connection (passive health).
    pub fn connect_failed(&self, i: usize) -> Standing {
        self.upstreams.connect_failed(i)
    }

    /// Upstream `i` accepted a connection.
    pub fn connected(&self, i: usize) {
        self.upstreams.connected(i);
    }

    /// Each upstream's URL and whether it is in the rotation now (metrics, `/readyz`).
    pub fn upstream_health(&self) -> Vec<(&str, bool)> {
        self.config
            .upstreams()
            .iter()
            .map(|u| u.url.as_str())
            .zip(self.upstreams.in_rotation())
            .collect()
    }

    /// Claims upstream `i`'s active probe if one is due now (see `health_checks`).
    pub fn claim_probe(&self, i: usize) -> bool {
        self.config
            .active_health()
            .is_some_and(|check| self.upstreams.claim_probe(i, check.interval))
    }

    /// Records the result of upstream `i`'s probe.
    pub fn probed(&self, i: usize, healthy: bool) -> ProbeVerdict {
        match self.config.active_health() {
            Some(check) => self.upstreams.probed(i, healthy, check),
            None => ProbeVerdict::Unchanged,
        }
    }

    /// The peer for upstream `i` (probes connect exactly as requests do).
    pub fn peer(&self, i: usize) -> Option<&HttpPeer> {
        self.peers.get(i)
    }

    /// The `Host` a probe of upstream `i` sends: what a proxied request would carry (the
    /// app's first named host when it preserves the client's).
    pub fn probe_host(&self, i: usize) -> Option<String> {
        let target = self.config.upstreams().get(i)?;
        if self.config.preserve_host() {
            let named = self.config.hosts().iter().find_map(|h| match h {
                crate::config::HostPattern::Exact(name) => Some(name.clone()),
                crate::config::HostPattern::Wildcard(_) => None,
            });
            if named.is_some() {
                return named;
            }
        }
        Some(target.host_header.clone())
    }

    /// Number of upstreams (bounds connection retries).
    pub fn upstream_count(&self) -> usize {
        self.peers.len()
    }
}

/// Prepares the connection settings for one upstream.
fn peer_for(app: &AppConfig, target: &crate::upstream::UpstreamTarget) -> HttpPeer {
    let mut peer = HttpPeer::new(target.addr, target.tls, target.sni.clone());
    let opts = &mut peer.options;
    opts.connection_timeout = Some(app.timeouts().connect);
    opts.total_connection_timeout = Some(app.timeouts().connect);
    opts.read_timeout = Some(app.timeouts().read);
    opts.write_timeout = Some(app.timeouts().write);
    opts.verify_cert = app.upstream_tls().verify;
    opts.verify_hostname = app.upstream_tls().verify;
    if let Some(ca) = &app.upstream_tls().ca {
        opts.ca = Some(Arc::new(ca.clone().into_boxed_slice()));
    }
    peer.client_cert_key.clone_from(&app.upstream_tls().client);
    peer
}

/// What a reload keeps: sign-in state, this node's backend jars, and the clock.
#[derive(Clone)]
pub struct Lasting {
    /// Sessions, logins in progress and identity providers.
    pub auth: Arc<Auth>,
    /// Backend jars (form-fill cookies, replayed Basic credentials) of this node's sessions.
    pub jars: Arc<BackendJars>,
    /// The clock everything stored is reckoned by.
    pub clock: SharedClock,
}

impl Lasting {
    /// Sign-in state and empty jars for `config`, on `clock`.
    pub fn new(config: &GatewayConfig, clock: SharedClock) -> Result<Self, AuthError> {
        let auth = Arc::new(Auth::new(config, clock.clone())?);
        // A jar lives as long as the longest a session may stay unused; an app with a longer
        // limit than the gateway's only makes its backend log in again.
        let jars = Arc::new(BackendJars::new(
            config.sessions.max_sessions,
            config.sessions.idle,
        ));
        Ok(Self { auth, jars, clock })
    }
}

/// Shared state of a running gateway.
pub struct Gateway {
    /// Gateway settings.
    pub config: GatewayConfig,
    /// Header hygiene rules.
    pub hygiene: HeaderHygiene,
    /// Sessions, logins in progress and identity providers (kept across reloads).
    pub auth: Arc<Auth>,
    /// Backend jars of this node's sessions (kept across reloads).
    pub jars: Arc<BackendJars>,
    /// The clock (kept across reloads).
    pub clock: SharedClock,
    /// Signs identity assertions (`[jwt]`), when configured.
    pub assertions: Option<Arc<crate::delivery::assertion::AssertionSigner>>,
    /// The credential vault (`[vault]`), when configured.
    pub vault: Option<Arc<crate::delivery::vault::Vault>>,
    /// The Kerberos client (constrained delegation), when `[kerberos]` is configured.
    pub kerberos: Option<Arc<crate::kerberos::KerberosClient>>,
    /// Sign-in rate limits (per node; they start over on reload).
    pub login_limits: crate::login_limits::LoginLimits,
    routes: RouteTable<Route>,
    apps: Vec<Arc<AppRuntime>>,
    broken: Vec<Arc<BrokenApp>>,
    /// What loading the policies found (errors and warnings), for the admin console.
    policy_problems: Vec<crate::config::Problem>,
    /// When this state was loaded (the start or the last reload), Unix seconds.
    loaded_unix: u64,
}

impl Gateway {
    /// Compiles routes and peers from loaded configuration.
    pub fn new(config: GatewayConfig, policies: PolicySet, lasting: Lasting) -> Self {
        let Lasting { auth, jars, clock } = lasting;
        // Every identity header any app injects is stripped from every client request, on
        // every host: a name one app trusts must not be spoofable through another.
        let identity_names: Vec<String> = policies
            .apps
            .iter()
            .flat_map(|a| a.delivery().header_names().map(str::to_string))
            .collect();
        let hygiene = HeaderHygiene::new(
            DEFAULT_STRIPPED_HEADERS
                .iter()
                .copied()
                .chain(config.extra_stripped_headers.iter().map(String::as_str))
                .chain(identity_names.iter().map(String::as_str)),
            DEFAULT_STRIPPED_PREFIXES
                .iter()
                .copied()
                .chain(config.extra_stripped_prefixes.iter().map(String::as_str)),
            config.trusted_proxies.clone(),
        );
        let mut routes = RouteTable::default();
        // Broken files first, so a working app keeps its host even if a broken file claims it
        // too: a bad policy file must not take down a good one.
        let policy_problems = policies.problems;
        let broken: Vec<Arc<BrokenApp>> = policies.broken.into_iter().map(Arc::new).collect();
        for b in &broken {
            for host in &b.hosts {
                routes.insert(host, &b.path_prefix, false, Route::Unavailable(b.clone()));
            }
        }
        let apps: Vec<Arc<AppRuntime>> = policies
            .apps
            .into_iter()
            .map(|a| Arc::new(AppRuntime::new(a)))
            .collect();
        for app in &apps {
            for host in app.config.hosts() {
                routes.insert(
                    host,
                    app.config.path_prefix(),
                    app.config.case_insensitive_paths(),
                    Route::App(app.clone()),
                );
            }
        }
        let assertions = config.jwt.as_ref().and_then(|j| {
            let pems: Vec<Vec<u8>> = j.keys.iter().map(|k| k.expose().to_vec()).collect();
            match crate::delivery::assertion::AssertionSigner::new(&pems, &j.issuer, j.ttl) {
                Ok(signer) => Some(Arc::new(signer)),
                Err(e) => {
                    tracing::error!(error = %e, "[jwt] keys unusable: identity assertions off");
                    None
                }
            }
        });
        let vault = config.vault.as_ref().and_then(|v| {
            match crate::delivery::vault::Vault::new(&v.file, v.keys.clone()) {
                Ok(vault) => Some(Arc::new(vault)),
                Err(e) => {
                    tracing::error!(error = %e, "[vault] unusable: credential replay off");
                    None
                }
            }
        });
        let kerberos = config
            .kerberos
            .clone()
            .map(|k| Arc::new(crate::kerberos::KerberosClient::new(k)));
        let loaded_unix = clock.now_unix();
        Self {
            login_limits: crate::login_limits::LoginLimits::new(config.login_limits),
            config,
            hygiene,
            auth,
            jars,
            clock,
            assertions,
            vault,
            kerberos,
            routes,
            apps,
            broken,
            policy_problems,
            loaded_unix,
        }
    }

    /// Carries each upstream's standing over from the state this one replaces (same app,
    /// same upstream URL), so a reload does not put a backend the checks took out back into
    /// the rotation.
    pub fn inherit_upstream_health(&self, previous: &Gateway) {
        for app in &self.apps {
            let Some(old) = previous
                .apps
                .iter()
                .find(|o| o.config.id() == app.config.id())
            else {
                continue;
            };
            for (i, target) in app.config.upstreams().iter().enumerate() {
                let was = old
                    .config
                    .upstreams()
                    .iter()
                    .position(|u| u.url == target.url);
                if let Some(j) = was {
                    app.upstreams.inherit(i, &old.upstreams, j);
                }
            }
        }
    }

    /// The problems loading found in one policy file.
    pub fn problems_in(&self, file: &std::path::Path) -> Vec<&crate::config::Problem> {
        self.policy_problems
            .iter()
            .filter(|p| p.file == file)
            .collect()
    }

    /// When this configuration was loaded (start or last reload), Unix seconds.
    pub fn loaded_unix(&self) -> u64 {
        self.loaded_unix
    }

    /// Does any app (working or not) serve this normalised host?
    pub fn serves_host(&self, host: &str) -> bool {
        self.routes.has_host(host)
    }

    /// The route for a normalised host and path.
    pub fn route(&self, host: &str, path: &str) -> Option<&Route> {
        self.routes.lookup(host, path)
    }

    /// An app's session (idle, absolute) timeouts; the gateway's for an app no longer loaded.
    pub fn session_limits(&self, app_id: &str) -> (Duration, Duration) {
        self.apps.iter().find(|a| a.config.id() == app_id).map_or(
            (self.config.sessions.idle, self.config.sessions.absolute),
            |a| (a.config.session_idle(), a.config.session_absolute()),
        )
    }

    /// What a reload carries over to the next state.
    pub fn lasting(&self) -> Lasting {
        Lasting {
            auth: self.auth.clone(),
            jars: self.jars.clone(),
            clock: self.clock.clone(),
        }
    }

    /// The parts identity delivery uses.
    pub fn delivery_services(&self) -> crate::delivery::Services<'_> {
        crate::delivery::Services {
            vault: self.vault.as_deref(),
            assertions: self.assertions.as_deref(),
            jars: &self.jars,
            now_unix: self.clock.now_unix(),
            kerberos: self.kerberos.as_ref(),
        }
    }

    /// Apps serving traffic.
    pub fn apps(&self) -> &[Arc<AppRuntime>] {
        &self.apps
    }

    /// Apps switched off because their policy failed to load.
    pub fn broken(&self) -> &[Arc<BrokenApp>] {
        &self.broken
    }
}
