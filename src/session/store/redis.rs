//! The shared store: Redis (one server, Sentinel or Cluster), so every node serves every
//! session and a login may finish on another node than it started on.
//!
//! What Redis holds is sealed (see `session::seal`): values are AES-256-GCM under a key derived
//! from the cookie key, keys are a keyed hash of the session id, so reading Redis gives neither
//! an identity nor a working cookie. Each session is one hash (`v` the sealed session, `t` its
//! last use) whose TTL is the time it has left: the absolute limit always, the idle limit as
//! the last-use touches — written at most every `touch_interval` per session — push it on.
//! One-time records are taken with `GETDEL`, replay entries set with `SET NX PX`.
//!
//! Each node keeps recently read sessions in a short-lived L1 (moka). Every removal is
//! published on a channel every node subscribes to, and each node drops its copy on hearing
//! it; the L1 is used only while that subscription is known to be alive (pinged twice a
//! second), so a logout anywhere takes effect everywhere within about a second.

use super::{
    within, Lock, Locks, OneTimeStore, ReplayCache, Selector, SessionStore, StoreError, StoreStatus,
};
use crate::clock::{millis, SharedClock};
use crate::config::session_store::{RedisSettings, RedisTopology};
use crate::session::seal::{StoreKeys, INDEX_LEN};
use crate::session::{Session, SessionId, SignInFamily, EXPIRY_GRACE};
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a failed connection attempt keeps later calls from trying again (they fail at
/// once meanwhile: a dead Redis must give fast 503s, not a queue of waiting requests).
const RECONNECT_PAUSE_MS: u64 = 250;
/// How often the invalidation subscription is pinged; twice missed, it counts as lost.
const SUBSCRIPTION_PING: Duration = Duration::from_millis(400);

/// Touches a session's last use, never moving it back, and sets how long it may stay.
const TOUCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[1], 't') or '0')
if tonumber(ARGV[1]) > seen then redis.call('HSET', KEYS[1], 't', ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Adds a member to an index set, keeping the set at least as long as the member's session.
const INDEX_ADD: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
";

/// Replaces a live session's sealed value, keeping its last use and lifetime.
const REPLACE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1])
return 1
";

/// Deletes a lock only if this holder still holds it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// How the node reaches Redis.
#[allow(clippy::large_enum_variant)] // one per process
enum Resolver {
    /// One server (a URL).
    Single(redis::Client),
    /// The master Sentinel names now (asked again after every failure).
    Sentinel(Box<tokio::sync::Mutex<redis::sentinel::SentinelClient>>),
    /// A cluster (the client follows slots and redirects itself).
    Cluster(redis::cluster::ClusterClient, redis::Client),
}

/// A live connection of either kind; both are cheap clones of one multiplexed link.
#[derive(Clone)]
enum Conn {
    Plain(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Plain(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection to Redis: made on first use, dropped on any error and made again (through
/// Sentinel, to whichever server is master now), never waited on longer than the timeout.
struct Link {
    resolver: Resolver,
    current: ArcSwapOption<Conn>,
    connecting: tokio::sync::Mutex<()>,
    retry_after_ms: AtomicU64,
    timeout: Duration,
    clock: SharedClock,
    reachable: AtomicBool,
    last_error: Mutex<Option<String>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Link {
    fn config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let config = self.config();
        match &self.resolver {
            Resolver::Single(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Conn::Plain)
                .map_err(unavailable),
            Resolver::Sentinel(sentinel) => sentinel
                .lock()
                .await
                .get_async_connection_with_config(&config)
                .await
                .map(Conn::Plain)
                .map_err(unavailable),
            Resolver::Cluster(cluster, _) => cluster
                .get_async_connection()
                .await
                .map(Conn::Cluster)
                .map_err(unavailable),
        }
    }

    /// A client for the invalidation subscription (the master, or any cluster node: a
    /// cluster's PUBLISH reaches every node).
    async fn subscription_client(&self) -> Result<redis::Client, StoreError> {
        match &self.resolver {
            Resolver::Single(client) => Ok(client.clone()),
            Resolver::Sentinel(sentinel) => sentinel
                .lock()
                .await
                .async_get_client()
                .await
                .map_err(unavailable),
            Resolver::Cluster(_, first) => Ok(first.clone()),
        }
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(c) = self.current.load_full() {
            return Ok((*c).clone());
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.current.load_full() {
            return Ok((*c).clone());
        }
        if self.clock.now_ms() < self.retry_after_ms.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable(
                self.last_error()
                    .unwrap_or_else(|| "not connected".to_string()),
            ));
        }
        match within(self.timeout, self.connect()).await {
            Ok(c) => {
                self.current.store(Some(Arc::new(c.clone())));
                Ok(c)
            }
            Err(e) => {
                self.retry_after_ms
                    .store(self.clock.now_ms() + RECONNECT_PAUSE_MS, Ordering::Relaxed);
                self.failed(&e);
                Err(e)
            }
        }
    }

    fn failed(&self, e: &StoreError) {
        if self.reachable.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e, "session store unreachable: sign-in answers 503 until it is back");
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|l| l.clone())
    }

    /// Runs one command (or pipeline, or script) with a deadline; any failure drops the
    /// connection so the next call makes a new one.
    async fn run<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = std::time::Instant::now();
        let conn = match self.conn().await {
            Ok(conn) => conn,
            Err(e) => {
                crate::metrics::store_call("redis", started.elapsed(), false);
                return Err(e);
            }
        };
        let answer = within(self.timeout, async {
            call(conn).await.map_err(unavailable)
        })
        .await;
        crate::metrics::store_call("redis", started.elapsed(), answer.is_ok());
        match answer {
            Ok(v) => {
                if !self.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!("session store reachable again");
                }
                Ok(v)
            }
            Err(e) => {
                self.current.store(None);
                self.failed(&e);
                Err(e)
            }
        }
    }
}

/// A session held in a node's L1, with when this node last wrote its use to Redis.
struct Cached {
    session: Arc<Session>,
    pushed_ms: AtomicU64,
}

/// Sessions and one-time records in Redis.
pub struct RedisStore {
    link: Link,
    keys: StoreKeys,
    prefix: String,
    channel: String,
    l1: Option<moka::sync::Cache<[u8; INDEX_LEN], Arc<Cached>>>,
    /// The invalidation subscription is up (the L1 may be used).
    l1_live: AtomicBool,
    /// Bumped on every invalidation heard: a read that raced one is not cached.
    generation: AtomicU64,
    touch_interval_ms: u64,
    clock: SharedClock,
    kind: &'static str,
    scripts: Scripts,
}

struct Scripts {
    touch: redis::Script,
    index_add: redis::Script,
    replace: redis::Script,
    unlock: redis::Script,
}

impl RedisStore {
    /// A store for `settings`, sealing under `keys`. Connects on first use: a Redis that is
    /// down at start is not a start-up failure (sign-in answers 503 until it is back).
    pub fn new(
        settings: &RedisSettings,
        keys: StoreKeys,
        max_sessions: u64,
        clock: SharedClock,
    ) -> Result<Self, StoreError> {
        let info = |url: &str| -> Result<redis::ConnectionInfo, StoreError> {
            let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(unavailable)?;
            let mut redis_settings = info.redis_settings().clone();
            if let Some(user) = &settings.username {
                redis_settings = redis_settings.set_username(user);
            }
            if let Some(password) = &settings.password {
                redis_settings = redis_settings.set_password(password.expose());
            }
            Ok(info.set_redis_settings(redis_settings))
        };
        let client = |url: &str| -> Result<redis::Client, StoreError> {
            let info = info(url)?;
            match &settings.ca_pem {
                Some(ca) => redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca.clone()),
                    },
                ),
                None => redis::Client::open(info),
            }
            .map_err(unavailable)
        };
        let (resolver, kind) = match &settings.topology {
            RedisTopology::Single(url) => (Resolver::Single(client(url)?), "redis"),
            RedisTopology::Sentinel { sentinels, master } => {
                let mut node = redis::sentinel::SentinelNodeConnectionInfo::default();
                let first = info(sentinels.first().map_or("", String::as_str))?;
                let mut redis_settings = redis::RedisConnectionInfo::default();
                if let Some(user) = &settings.username {
                    redis_settings = redis_settings.set_username(user);
                }
                if let Some(password) = &settings.password {
                    redis_settings = redis_settings.set_password(password.expose());
                }
                redis_settings = redis_settings.set_db(first.redis_settings().db());
                node = node.set_redis_connection_info(redis_settings);
                if settings.tls {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                let sentinels: Vec<redis::ConnectionInfo> = sentinels
                    .iter()
                    .map(|s| redis::IntoConnectionInfo::into_connection_info(s.as_str()))
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?;
                let client = redis::sentinel::SentinelClient::build(
                    sentinels,
                    master.clone(),
                    Some(node),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(unavailable)?;
                (
                    Resolver::Sentinel(Box::new(tokio::sync::Mutex::new(client))),
                    "redis sentinel",
                )
            }
            RedisTopology::Cluster(nodes) => {
                let builder = redis::cluster::ClusterClient::builder(
                    nodes
                        .iter()
                        .map(|n| info(n))
                        .collect::<Result<Vec<_>, _>>()?,
                )
                .connection_timeout(settings.timeout)
                .response_timeout(settings.timeout)
                .retries(1);
                let cluster = builder.build().map_err(unavailable)?;
                let first = client(nodes.first().map_or("", String::as_str))?;
                (Resolver::Cluster(cluster, first), "redis cluster")
            }
        };
        let l1 = (!settings.l1_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_sessions)
                .time_to_live(settings.l1_ttl)
                .build()
        });
        Ok(Self {
            link: Link {
                resolver,
                current: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
                retry_after_ms: AtomicU64::new(0),
                timeout: settings.timeout,
                clock: clock.clone(),
                reachable: AtomicBool::new(false),
                last_error: Mutex::new(Some("not connected yet".into())),
            },
            keys,
            channel: format!("{}:evict", settings.key_prefix),
            prefix: settings.key_prefix.clone(),
            l1,
            l1_live: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            touch_interval_ms: millis(settings.touch_interval),
            clock,
            kind,
            scripts: Scripts {
                touch: redis::Script::new(TOUCH),
                index_add: redis::Script::new(INDEX_ADD),
                replace: redis::Script::new(REPLACE),
                unlock: redis::Script::new(UNLOCK),
            },
        })
    }

    /// The session's hash key and the raw digest it is made from (the L1's key, and what an
    /// invalidation names).
    fn session_key(&self, id: &SessionId) -> ([u8; INDEX_LEN], String) {
        let raw = self.keys.index_bytes("session", id.as_bytes());
        (raw, self.session_key_of(&raw))
    }

    fn session_key_of(&self, raw: &[u8; INDEX_LEN]) -> String {
        use base64::Engine;
        format!(
            "{}:s:{}",
            self.prefix,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
    }

    fn family_key(&self, family: &SignInFamily) -> String {
        format!(
            "{}:f:{}",
            self.prefix,
            self.keys.index("family", family.as_bytes())
        )
    }

    fn subject_key(&self, idp: &str, subject: &str) -> String {
        let who = format!("{idp}\0{subject}");
        format!(
            "{}:u:{}",
            self.prefix,
            self.keys.index("subject", who.as_bytes())
        )
    }

    fn email_key(&self, email: &str) -> String {
        let email = email.to_ascii_lowercase();
        format!(
            "{}:e:{}",
            self.prefix,
            self.keys.index("email", email.as_bytes())
        )
    }

    fn app_key(&self, app: &str) -> String {
        format!(
            "{}:a:{}",
            self.prefix,
            self.keys.index("app", app.as_bytes())
        )
    }

    /// The set of app names sessions were made for (what `Selector::All` walks).
    fn apps_key(&self) -> String {
        format!("{}:apps", self.prefix)
    }

    /// The index sets a session is in: its sign-in's (logout), its user's at its IdP (IdP and
    /// admin logouts), its email's and its app's (revocation). Each is a key in Redis.
    fn indexes_of(&self, session: &Session) -> Vec<String> {
        let mut sets = vec![
            self.family_key(&session.family),
            self.subject_key(&session.identity.idp, session.logout_subject()),
            self.app_key(&session.app),
        ];
        if let Some(email) = &session.identity.email {
            sets.push(self.email_key(email));
        }
        sets
    }

    /// The index sets a selector reads.
    async fn indexes_for(&self, which: &Selector) -> Result<Vec<String>, StoreError> {
        Ok(match which {
            Selector::Subject { idp, subject } => vec![self.subject_key(idp, subject)],
            Selector::Email(email) | Selector::EmailAt { email, .. } => vec![self.email_key(email)],
            Selector::App(app) => vec![self.app_key(app)],
            Selector::All => {
                let key = self.apps_key();
                let key = key.as_str();
                let apps: Vec<String> = self
                    .link
                    .run(|mut c| async move {
                        redis::cmd("SMEMBERS").arg(key).query_async(&mut c).await
                    })
                    .await?;
                apps.iter().map(|a| self.app_key(a)).collect()
            }
        })
    }

    fn record_key(&self, kind: &str, key: &str) -> String {
        format!(
            "{}:{kind}:{}",
            self.prefix,
            self.keys.index(kind, key.as_bytes())
        )
    }

    /// The L1, when it may be used: configured, and the invalidation subscription alive.
    fn live_l1(&self) -> Option<&moka::sync::Cache<[u8; INDEX_LEN], Arc<Cached>>> {
        self.l1
            .as_ref()
            .filter(|_| self.l1_live.load(Ordering::Acquire))
    }

    /// Reads a session by its hash key.
    async fn fetch(&self, key: &str) -> Result<Option<(Session, u64)>, StoreError> {
        let (sealed, seen): (Option<Vec<u8>>, Option<u64>) = self
            .link
            .run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("v")
                    .arg("t")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let seen = seen.unwrap_or(0);
        let session = self
            .keys
            .open(key.as_bytes(), &sealed)
            .and_then(|plain| Session::from_stored(&plain, seen));
        if session.is_none() {
            // Written under another cookie key, or not by us: no session.
            tracing::warn!("session store record does not open under this cookie key; ignored");
        }
        Ok(session.map(|s| (s, seen)))
    }

    /// The session digests an index set names.
    async fn members(&self, index: &str) -> Result<Vec<[u8; INDEX_LEN]>, StoreError> {
        use base64::Engine;
        let members: Vec<String> = self
            .link
            .run(|mut c| async move { redis::cmd("SMEMBERS").arg(index).query_async(&mut c).await })
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(m)
                    .ok()
                    .and_then(|b| <[u8; INDEX_LEN]>::try_from(b).ok())
            })
            .collect())
    }

    /// Adds the session under `raw` to its index sets, each kept as long as the session may
    /// live, and its app to the set of apps.
    async fn index(
        &self,
        raw: &[u8; INDEX_LEN],
        session: &Session,
        now: u64,
    ) -> Result<(), StoreError> {
        use base64::Engine;
        let age = now.saturating_sub(session.created_ms);
        let lifetime = millis(session.absolute_left(age)) + millis(EXPIRY_GRACE);
        let member = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        for index in self.indexes_of(session) {
            let (index, member) = (index.as_str(), member.as_str());
            let script = &self.scripts.index_add;
            let _: i64 = self
                .link
                .run(|mut c| async move {
                    script
                        .key(index)
                        .arg(member)
                        .arg(lifetime)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
        }
        let (apps, app) = (self.apps_key(), &*session.app);
        let apps = apps.as_str();
        let _: i64 = self
            .link
            .run(|mut c| async move {
                redis::cmd("SADD")
                    .arg(apps)
                    .arg(app)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// A session as Redis keeps it under `key`: encoded, then sealed bound to its key.
    fn sealed(&self, key: &str, session: &Session) -> Result<Vec<u8>, StoreError> {
        let plain = session
            .to_stored()
            .ok_or_else(|| StoreError::Unavailable("cannot encode a session".into()))?;
        self.keys
            .seal(key.as_bytes(), &plain)
            .ok_or_else(|| StoreError::Unavailable("cannot seal a session".into()))
    }

    /// Tells every node (this one included) to drop its L1 copy of the session under `raw`.
    async fn publish_invalidation(&self, raw: &[u8; INDEX_LEN]) -> Result<(), StoreError> {
        use base64::Engine;
        if let Some(l1) = &self.l1 {
            l1.invalidate(raw);
        }
        let member = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let (channel, member) = (self.channel.as_str(), member.as_str());
        let _: i64 = self
            .link
            .run(|mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(member)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Removes the session under `raw` (its hash digest), its index entries, and every node's
    /// L1 copy.
    async fn remove_raw(&self, raw: &[u8; INDEX_LEN]) -> Result<Option<Arc<Session>>, StoreError> {
        use base64::Engine;
        let key = self.session_key_of(raw);
        let member = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let found = self.fetch(&key).await?;
        let key_ref = key.as_str();
        let () = self
            .link
            .run(|mut c| async move { redis::cmd("DEL").arg(key_ref).query_async(&mut c).await })
            .await?;
        self.publish_invalidation(raw).await?;
        let member_ref = member.as_str();
        let Some((session, _)) = found else {
            return Ok(None);
        };
        for index in self.indexes_of(&session) {
            let index = index.as_str();
            let _: i64 = self
                .link
                .run(|mut c| async move {
                    redis::cmd("SREM")
                        .arg(index)
                        .arg(member_ref)
                        .query_async(&mut c)
                        .await
                })
                .await?;
        }
        Ok(Some(Arc::new(session)))
    }

    /// Removes the sessions an index set names that `matches` selects.
    async fn remove_indexed(
        &self,
        index: &str,
        matches: impl Fn(&Session) -> bool,
    ) -> Result<Vec<Arc<Session>>, StoreError> {
        let mut removed = Vec::new();
        for raw in self.members(index).await? {
            let key = self.session_key_of(&raw);
            let Some((session, _)) = self.fetch(&key).await? else {
                continue;
            };
            if matches(&session) {
                if let Some(s) = self.remove_raw(&raw).await? {
                    removed.push(s);
                }
            }
        }
        Ok(removed)
    }

    /// Keeps every node's L1 honest: subscribes to the invalidation channel and drops the
    /// copies it names; while the subscription is down (or stops answering pings) the L1 is
    /// not used at all. Runs until the process ends.
    pub async fn watch_invalidations(self: Arc<Self>) {
        if self.l1.is_none() {
            return;
        }
        loop {
            match self.subscribe_once().await {
                Ok(()) => tracing::warn!(
                    "session store invalidation subscription lost: L1 off until it is back"
                ),
                Err(e) => {
                    tracing::debug!(error = %e, "session store invalidation subscription failed")
                }
            }
            self.l1_off();
            tokio::time::sleep(Duration::from_millis(RECONNECT_PAUSE_MS)).await;
        }
    }

    fn l1_off(&self) {
        self.l1_live.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(l1) = &self.l1 {
            l1.invalidate_all();
        }
    }

    async fn subscribe_once(&self) -> Result<(), StoreError> {
        use base64::Engine;
        let timeout = self.link.timeout;
        let client = within(timeout, self.link.subscription_client()).await?;
        let pubsub = within(timeout, async {
            client.get_async_pubsub().await.map_err(unavailable)
        })
        .await?;
        let (mut sink, mut stream) = pubsub.split();
        within(timeout, async {
            sink.subscribe(&self.channel).await.map_err(unavailable)
        })
        .await?;
        // Anything cached before now may have missed an invalidation.
        self.l1_off();
        self.l1_live.store(true, Ordering::Release);
        tracing::info!("session store invalidation subscription up: L1 on");
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + SUBSCRIPTION_PING,
            SUBSCRIPTION_PING,
        );
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { return Ok(()) };
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(message.get_payload_bytes())
                        .ok()
                        .and_then(|b| <[u8; INDEX_LEN]>::try_from(b).ok());
                    if let (Some(raw), Some(l1)) = (raw, &self.l1) {
                        l1.invalidate(&raw);
                    }
                }
                _ = ping.tick() => {
                    // Subscribed, PING answers `["pong", ""]`: any answer will do.
                    let answered: Result<redis::Value, StoreError> =
                        within(SUBSCRIPTION_PING * 2, async { sink.ping().await.map_err(unavailable) }).await;
                    if answered.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The invalidation watch as a background service of the server.
pub struct Invalidations(pub Arc<RedisStore>);

#[async_trait]
impl pingora::services::background::BackgroundService for Invalidations {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        tokio::select! {
            () = self.0.clone().watch_invalidations() => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn insert(&self, id: SessionId, session: Arc<Session>) -> Result<(), StoreError> {
        let (raw, key) = self.session_key(&id);
        let sealed = self.sealed(&key, &session)?;
        let now = self.clock.now_ms();
        let ttl = millis(session.remaining_after_use(now)).max(1);
        let key_ref = key.as_str();
        let seen = session.created_ms.max(session.last_seen_ms());
        let () = self
            .link
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("HSET")
                    .arg(key_ref)
                    .arg("v")
                    .arg(sealed)
                    .arg("t")
                    .arg(seen)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(key_ref)
                    .arg(ttl)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        self.index(&raw, &session, now).await?;
        if let Some(l1) = self.live_l1() {
            l1.insert(
                raw,
                Arc::new(Cached {
                    session,
                    pushed_ms: AtomicU64::new(now),
                }),
            );
        }
        Ok(())
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError> {
        let (raw, key) = self.session_key(id);
        if let Some(hit) = self.live_l1().and_then(|l1| l1.get(&raw)) {
            crate::metrics::store_l1(true);
            return Ok(Some(hit.session.clone()));
        }
        crate::metrics::store_l1(false);
        let generation = self.generation.load(Ordering::Acquire);
        let Some((session, seen)) = self.fetch(&key).await? else {
            return Ok(None);
        };
        let session = Arc::new(session);
        if let Some(l1) = self.live_l1() {
            // Not cached if an invalidation arrived while reading: it may have been this one.
            if self.generation.load(Ordering::Acquire) == generation {
                l1.insert(
                    raw,
                    Arc::new(Cached {
                        session: session.clone(),
                        pushed_ms: AtomicU64::new(seen),
                    }),
                );
            }
        }
        Ok(Some(session))
    }

    async fn record_use(
        &self,
        id: &SessionId,
        session: &Session,
        seen_before_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let (raw, key) = self.session_key(id);
        let cached = self.l1.as_ref().and_then(|l1| l1.get(&raw));
        let pushed = cached
            .as_ref()
            .map_or(seen_before_ms, |c| c.pushed_ms.load(Ordering::Relaxed));
        if now_ms.saturating_sub(pushed) < self.touch_interval_ms {
            return Ok(());
        }
        if let Some(c) = &cached {
            c.pushed_ms.store(now_ms, Ordering::Relaxed);
        }
        let ttl = millis(session.remaining_after_use(now_ms)).max(1);
        let key = key.as_str();
        let script = &self.scripts.touch;
        let _: i64 = self
            .link
            .run(|mut c| async move {
                script
                    .key(key)
                    .arg(now_ms)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError> {
        let (raw, _) = self.session_key(id);
        self.remove_raw(&raw).await
    }

    async fn remove_families(
        &self,
        families: &[SignInFamily],
    ) -> Result<Vec<Arc<Session>>, StoreError> {
        let mut removed = Vec::new();
        for family in families {
            let index = self.family_key(family);
            removed.extend(self.remove_indexed(&index, |s| s.family == *family).await?);
        }
        Ok(removed)
    }

    async fn remove_saml_subject(
        &self,
        idp: &str,
        name_id: &str,
        session_indexes: &[String],
    ) -> Result<Vec<Arc<Session>>, StoreError> {
        let index = self.subject_key(idp, name_id);
        self.remove_indexed(&index, |s| {
            s.matches_saml_logout(idp, name_id, session_indexes)
        })
        .await
    }

    async fn select(&self, which: &Selector) -> Result<Vec<Arc<Session>>, StoreError> {
        let mut found = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for index in self.indexes_for(which).await? {
            for raw in self.members(&index).await? {
                if !seen.insert(raw) {
                    continue;
                }
                if let Some((session, _)) = self.fetch(&self.session_key_of(&raw)).await? {
                    if which.matches(&session) {
                        found.push(Arc::new(session));
                    }
                }
            }
        }
        Ok(found)
    }

    async fn remove_selected(&self, which: &Selector) -> Result<Vec<Arc<Session>>, StoreError> {
        let mut removed = Vec::new();
        for index in self.indexes_for(which).await? {
            removed.extend(self.remove_indexed(&index, |s| which.matches(s)).await?);
        }
        Ok(removed)
    }

    async fn replace(&self, id: &SessionId, session: Arc<Session>) -> Result<bool, StoreError> {
        let (raw, key) = self.session_key(id);
        let sealed = self.sealed(&key, &session)?;
        let (key_ref, script) = (key.as_str(), &self.scripts.replace);
        let replaced: i64 = self
            .link
            .run(|mut c| async move { script.key(key_ref).arg(sealed).invoke_async(&mut c).await })
            .await?;
        if replaced == 0 {
            return Ok(false);
        }
        self.index(&raw, &session, self.clock.now_ms()).await?;
        self.publish_invalidation(&raw).await?;
        Ok(true)
    }

    async fn get_fresh(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError> {
        let (_, key) = self.session_key(id);
        Ok(self.fetch(&key).await?.map(|(s, _)| Arc::new(s)))
    }

    fn held(&self) -> u64 {
        self.l1.as_ref().map_or(0, moka::sync::Cache::entry_count)
    }

    async fn run_maintenance(&self) {
        if let Some(l1) = &self.l1 {
            l1.run_pending_tasks();
        }
    }

    async fn probe(&self) -> Result<(), StoreError> {
        let _: String = self
            .link
            .run(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await?;
        Ok(())
    }

    fn describe(&self) -> StoreStatus {
        let reachable = self.link.reachable.load(Ordering::Relaxed);
        if let Some(l1) = &self.l1 {
            // moka counts lazily; `/readyz` should say what is really held.
            l1.run_pending_tasks();
        }
        let l1 = match (&self.l1, self.l1_live.load(Ordering::Acquire)) {
            (None, _) => "L1 off (configured)".to_string(),
            (Some(l1), true) => format!("L1 on, {} sessions cached", l1.entry_count()),
            (Some(_), false) => "L1 paused (invalidation subscription down)".to_string(),
        };
        let detail = match (reachable, self.link.last_error()) {
            (false, Some(e)) => format!("{l1}; last error: {e}"),
            _ => l1,
        };
        StoreStatus {
            kind: self.kind,
            reachable,
            detail,
        }
    }
}

#[async_trait]
impl OneTimeStore for RedisStore {
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        let key = self.record_key("o", key);
        let sealed = self
            .keys
            .seal(key.as_bytes(), &value)
            .ok_or_else(|| StoreError::Unavailable("cannot seal a record".into()))?;
        let key_ref = key.as_str();
        let ttl = millis(ttl).max(1);
        self.link
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key_ref)
                    .arg(sealed)
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await
            })
            .await
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.record_key("o", key);
        let key_ref = key.as_str();
        let sealed: Option<Vec<u8>> = self
            .link
            .run(|mut c| async move { redis::cmd("GETDEL").arg(key_ref).query_async(&mut c).await })
            .await?;
        Ok(sealed.and_then(|s| self.keys.open(key.as_bytes(), &s)))
    }
}

#[async_trait]
impl ReplayCache for RedisStore {
    async fn first_use(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.record_key("r", key);
        let key_ref = key.as_str();
        let ttl = millis(ttl).max(1);
        let set: Option<String> = self
            .link
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key_ref)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }
}

#[async_trait]
impl Locks for RedisStore {
    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>, StoreError> {
        let lock =
            Lock::new(key).ok_or_else(|| StoreError::Unavailable("no random bytes".into()))?;
        let redis_key = self.record_key("l", key);
        let key_ref = redis_key.as_str();
        let token = lock.token.to_vec();
        let ttl = millis(ttl).max(1);
        let set: Option<String> = self
            .link
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key_ref)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.map(|_| lock))
    }

    async fn release(&self, lock: Lock) -> Result<(), StoreError> {
        let redis_key = self.record_key("l", &lock.key);
        let key_ref = redis_key.as_str();
        let token = lock.token.to_vec();
        let script = &self.scripts.unlock;
        let _: i64 = self
            .link
            .run(|mut c| async move { script.key(key_ref).arg(token).invoke_async(&mut c).await })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Against a real `redis-server` on a free loopback port (installed by `tests/run.sh`).
    use super::*;
    use crate::secret::SecretBytes;
    use crate::session::cookies::CookieCodec;
    use crate::session::{test_session, LogoutHint};

    struct Server(std::process::Child, u16);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A `redis-server` on a free port, without persistence: `conf` (a file) first if given,
    /// then `extra` arguments; returns once it listens.
    fn spawn_redis(conf: Option<&std::path::Path>, extra: &[&std::ffi::OsStr]) -> Server {
        let port = free_port();
        let mut command = std::process::Command::new("redis-server");
        if let Some(conf) = conf {
            command.arg(conf);
        }
        let child = command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server is needed (tests/run.sh installs it): {e}"));
        let server = Server(child, port);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not listen on {port}");
    }

    fn start_redis() -> Server {
        spawn_redis(None, &[])
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    /// Three masters in cluster mode, their slots assigned by `redis-cli --cluster create`.
    fn start_cluster() -> (Vec<Server>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut servers = Vec::new();
        for i in 0..3 {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir(&node_dir).unwrap();
            let cluster: [&std::ffi::OsStr; 4] = [
                "--cluster-enabled".as_ref(),
                "yes".as_ref(),
                "--dir".as_ref(),
                node_dir.as_os_str(),
            ];
            servers.push(spawn_redis(None, &cluster));
        }
        let nodes: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.1))
            .collect();
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("redis-cli is needed: {e}"));
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        // The cluster is usable once every node says so.
        for s in &servers {
            for _ in 0..300 {
                let info = std::process::Command::new("redis-cli")
                    .args(["-p", &s.1.to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        (servers, dir)
    }

    fn settings(topology: RedisTopology) -> RedisSettings {
        RedisSettings {
            topology,
            username: None,
            password: None,
            ca_pem: None,
            tls: false,
            timeout: Duration::from_millis(500),
            l1_ttl: Duration::ZERO,
            touch_interval: Duration::from_secs(5),
            key_prefix: "test".into(),
        }
    }

    fn store(port: u16, clock: SharedClock) -> RedisStore {
        let topology = RedisTopology::Single(format!("redis://127.0.0.1:{port}/0"));
        let codec = CookieCodec::new(Some(&SecretBytes::new(vec![9; 64])));
        RedisStore::new(
            &settings(topology),
            StoreKeys::from_codec(&codec).unwrap(),
            100,
            clock,
        )
        .unwrap()
    }

    async fn raw(port: u16, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c).await.unwrap()
    }

    #[tokio::test]
    async fn sessions_records_replays_and_locks_work_against_a_real_redis() {
        let server = start_redis();
        let clock = crate::clock::system();
        let store = store(server.1, clock.clone());
        let now = clock.now_ms();

        // A session goes in sealed, under a key that is not its id, and comes back whole.
        let id = SessionId::random().unwrap();
        let mut session = test_session(now, 3_600_000, 7_200_000);
        session.identity.email = Some("alice@corp.example".into());
        session.logout = LogoutHint::Saml(Box::new(crate::idp::saml::assertion::SamlSubject {
            name_id: "alice-nameid".into(),
            session_index: Some("idx-1".into()),
            ..Default::default()
        }));
        store.insert(id, Arc::new(session)).await.unwrap();
        let keys = format!("{:?}", raw(server.1, &["KEYS", "*"]).await);
        assert!(!keys.contains(&id.encode()), "no key names the session id");
        let (_, key) = store.session_key(&id);
        let value = format!("{:?}", raw(server.1, &["HGET", &key, "v"]).await);
        assert!(!value.contains("alice"), "the value is sealed: {value}");
        let back = store.get(&id).await.unwrap().unwrap();
        assert_eq!(back.identity.email.as_deref(), Some("alice@corp.example"));
        let ttl = format!("{:?}", raw(server.1, &["PTTL", &key]).await);
        assert!(
            !ttl.contains("-1"),
            "Redis enforces the session's time: {ttl}"
        );

        // A SAML logout for another session index ends nothing; the right one ends it.
        let none = store
            .remove_saml_subject("corp", "alice-nameid", &["idx-2".into()])
            .await
            .unwrap();
        assert!(none.is_empty());
        let ended = store
            .remove_saml_subject("corp", "alice-nameid", &["idx-1".into()])
            .await
            .unwrap();
        assert_eq!(ended.len(), 1);
        assert!(store.get(&id).await.unwrap().is_none());

        // One sign-in's sessions end together.
        let family = SignInFamily::random().unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let id = SessionId::random().unwrap();
            let mut s = test_session(now, 3_600_000, 7_200_000);
            s.family = family;
            store.insert(id, Arc::new(s)).await.unwrap();
            ids.push(id);
        }
        assert_eq!(store.remove_families(&[family]).await.unwrap().len(), 3);
        for id in &ids {
            assert!(store.get(id).await.unwrap().is_none());
        }

        // One-time records are taken once, by whoever asks first.
        store
            .put("login\0s1", b"pending".to_vec(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            store.take("login\0s1").await.unwrap().as_deref(),
            Some(&b"pending"[..])
        );
        assert_eq!(store.take("login\0s1").await.unwrap(), None);

        // Replay cache and locks, across two stores (two nodes) on one Redis.
        let other = self::store(server.1, clock.clone());
        assert!(store
            .first_use("assertion-1", Duration::from_secs(60))
            .await
            .unwrap());
        assert!(!other
            .first_use("assertion-1", Duration::from_secs(60))
            .await
            .unwrap());
        let lock = store
            .try_lock("refresh", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert!(other
            .try_lock("refresh", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
        let stale = Lock {
            key: "refresh".into(),
            token: [0; 16],
        };
        other.release(stale).await.unwrap();
        assert!(
            other
                .try_lock("refresh", Duration::from_secs(5))
                .await
                .unwrap()
                .is_none(),
            "only the holder releases a lock"
        );
        store.release(lock).await.unwrap();
        assert!(other
            .try_lock("refresh", Duration::from_secs(5))
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn a_redis_cluster_holds_sessions_records_and_locks() {
        let (servers, _dir) = start_cluster();
        let nodes = servers
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.1))
            .collect();
        let codec = CookieCodec::new(Some(&SecretBytes::new(vec![9; 64])));
        let clock = crate::clock::system();
        let store = RedisStore::new(
            &settings(RedisTopology::Cluster(nodes)),
            StoreKeys::from_codec(&codec).unwrap(),
            100,
            clock.clone(),
        )
        .unwrap();
        let family = SignInFamily::random().unwrap();
        let mut ids = Vec::new();
        // Enough sessions that their keys land on every node's slots.
        for _ in 0..12 {
            let id = SessionId::random().unwrap();
            let mut s = test_session(clock.now_ms(), 3_600_000, 7_200_000);
            s.family = family;
            store.insert(id, Arc::new(s)).await.unwrap();
            ids.push(id);
        }
        for id in &ids {
            assert!(store.get(id).await.unwrap().is_some());
        }
        assert_eq!(store.remove_families(&[family]).await.unwrap().len(), 12);
        assert!(store.get(&ids[0]).await.unwrap().is_none());
        store
            .put("login\0c", b"p".to_vec(), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(store.take("login\0c").await.unwrap().is_some());
        assert!(store.take("login\0c").await.unwrap().is_none());
        assert!(store.first_use("r", Duration::from_secs(60)).await.unwrap());
        assert!(!store.first_use("r", Duration::from_secs(60)).await.unwrap());
        let lock = store
            .try_lock("l", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert!(store
            .try_lock("l", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
        store.release(lock).await.unwrap();
        assert!(store.probe().await.is_ok());
        assert_eq!(store.describe().kind, "redis cluster");
    }

    #[tokio::test]
    async fn an_acl_user_and_password_are_used_and_a_wrong_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("redis.conf");
        std::fs::write(
            &conf,
            "user default off\nuser portcullis on >s3cret-TEST-ONLY ~portcullis:* &portcullis:* +@all\n",
        )
        .unwrap();
        let server = spawn_redis(Some(&conf), &[]);
        let port = server.1;
        let codec = CookieCodec::new(Some(&SecretBytes::new(vec![9; 64])));
        let with = |password: Option<&str>| {
            let mut s = settings(RedisTopology::Single(format!("redis://127.0.0.1:{port}/0")));
            s.username = Some("portcullis".into());
            s.password = password.map(crate::secret::Secret::new);
            s.key_prefix = "portcullis".into();
            RedisStore::new(
                &s,
                StoreKeys::from_codec(&codec).unwrap(),
                10,
                crate::clock::system(),
            )
            .unwrap()
        };
        let good = with(Some("s3cret-TEST-ONLY"));
        assert!(good.first_use("acl", Duration::from_secs(5)).await.unwrap());
        let bad = with(Some("wrong"));
        assert!(matches!(
            bad.first_use("acl-2", Duration::from_secs(5)).await,
            Err(StoreError::Unavailable(_))
        ));
        let described = bad.describe();
        assert!(
            !described.detail.contains("wrong"),
            "no password in what is shown"
        );
    }

    #[tokio::test]
    async fn a_redis_that_is_down_fails_fast_and_clearly() {
        let server = start_redis();
        let port = server.1;
        drop(server);
        let store = store(port, crate::clock::system());
        let started = std::time::Instant::now();
        let id = SessionId::random().unwrap();
        assert!(matches!(
            store.get(&id).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.take("x").await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.first_use("x", Duration::from_secs(1)).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded, never a hang"
        );
        assert!(!store.describe().reachable);
    }
}
