//! Where sign-in state is kept: the storage seam and its two implementations.
//!
//! Four kinds of record, each behind its own trait so a store can be swapped without the
//! callers knowing: sessions; one-time records (logins in progress, SAML logouts sent), taken
//! exactly once; replay caches (SAML assertion ids, OIDC codes), where only the first use
//! counts; and short locks for single-flight work. [`memory`] keeps them in this process
//! (moka; the default, nothing to install; optionally snapshotted across restarts) and
//! [`redis`] shares them between nodes, sealed, with a short-lived L1 in front.
//!
//! Every call can fail with [`StoreError`]: a store that cannot answer makes the caller refuse
//! (a clear 503 page), never let a request through.

pub mod memory;
pub mod redis;

use super::{Session, SessionId, SignInFamily};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// The store could not answer. Never carries a key or value.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    /// Not reachable, or it did not answer within the timeout.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// Signed-in sessions.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session under `id`.
    async fn insert(&self, id: SessionId, session: Arc<Session>) -> Result<(), StoreError>;

    /// The session with this id, if the store holds one.
    async fn get(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError>;

    /// The session was used at `now_ms` (its limits held); `seen_before_ms` is when it was
    /// last used before that. A shared store writes this down only every few seconds.
    async fn record_use(
        &self,
        id: &SessionId,
        session: &Session,
        seen_before_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// Does [`SessionStore::record_use`] do anything? (The embedded store's reads already
    /// count as uses: the per-request call is skipped.)
    fn records_uses(&self) -> bool {
        true
    }

    /// Ends a session; returns it if it was held.
    async fn remove(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError>;

    /// Ends every session of these sign-in families; returns them.
    async fn remove_families(
        &self,
        families: &[SignInFamily],
    ) -> Result<Vec<Arc<Session>>, StoreError>;

    /// Ends the sessions a SAML IdP's logout names: its sessions for `name_id`, only those
    /// with one of `session_indexes` when any are given; returns them.
    async fn remove_saml_subject(
        &self,
        idp: &str,
        name_id: &str,
        session_indexes: &[String],
    ) -> Result<Vec<Arc<Session>>, StoreError>;

    /// The sessions `which` names (admin listings).
    async fn select(&self, which: &Selector) -> Result<Vec<Arc<Session>>, StoreError>;

    /// Ends the sessions `which` names (back-channel logout, revocation); returns them.
    async fn remove_selected(&self, which: &Selector) -> Result<Vec<Arc<Session>>, StoreError>;

    /// Replaces the session under `id` with a newer copy (refreshed claims and tokens); every
    /// node's cached copy goes. A session that ended meanwhile is not brought back.
    async fn replace(&self, id: &SessionId, session: Arc<Session>) -> Result<bool, StoreError>;

    /// The session under `id` as the store holds it now, past any node-local cache (the
    /// refresh that holds the session's lock must see another node's refresh).
    async fn get_fresh(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError> {
        self.get(id).await
    }

    /// Sessions held by this node (all of them in memory; the L1 copies with Redis).
    fn held(&self) -> u64;

    /// Runs pending evictions now (tests, metrics).
    async fn run_maintenance(&self);

    /// A line for `/readyz`.
    fn describe(&self) -> StoreStatus;

    /// Asks the store whether it answers now (`/readyz`).
    async fn probe(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Which sessions a revocation or a listing names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One user at one IdP: the OIDC `sub`, or the SAML NameID.
    Subject {
        /// The IdP's configured name.
        idp: String,
        /// Its identifier for the user.
        subject: String,
    },
    /// The user with this email, at any IdP (compared without case).
    Email(String),
    /// The user with this email at one IdP (a signal from that IdP says nothing about the
    /// same address at another).
    EmailAt {
        /// The IdP's configured name.
        idp: String,
        /// The address (compared without case).
        email: String,
    },
    /// Every session made for this app.
    App(String),
    /// Every session.
    All,
}

impl Selector {
    /// Does this selector name `session`?
    pub fn matches(&self, session: &Session) -> bool {
        match self {
            Selector::Subject { idp, subject } => {
                *session.identity.idp == **idp && session.logout_subject() == subject
            }
            Selector::Email(email) => session
                .identity
                .email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email)),
            Selector::EmailAt { idp, email } => {
                *session.identity.idp == **idp
                    && session
                        .identity
                        .email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(email))
            }
            Selector::App(app) => *session.app == **app,
            Selector::All => true,
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Subject { idp, subject } => {
                write!(f, "subject {} at {idp}", crate::idp::loggable(subject))
            }
            Selector::Email(email) => write!(f, "user {}", crate::idp::loggable(email)),
            Selector::EmailAt { idp, email } => {
                write!(f, "user {} at {idp}", crate::idp::loggable(email))
            }
            Selector::App(app) => write!(f, "app {app}"),
            Selector::All => f.write_str("every session"),
        }
    }
}

/// Records used once: the second `take` of a key finds nothing.
#[async_trait]
pub trait OneTimeStore: Send + Sync {
    /// Keeps `value` under `key` for `ttl`.
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError>;

    /// Takes the value under `key`, atomically: only one caller, on any node, gets it.
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Values that may be used once only, remembered for as long as they could be presented.
#[async_trait]
pub trait ReplayCache: Send + Sync {
    /// `true` the first time `key` is seen (within `ttl`), `false` on every later call.
    async fn first_use(&self, key: &str, ttl: Duration) -> Result<bool, StoreError>;
}

/// A held lock; give it back with [`Locks::release`] (it lapses after its ttl anyway).
#[derive(Debug)]
pub struct Lock {
    key: String,
    token: [u8; 16],
}

/// Short locks for work that must run once at a time across every node.
#[async_trait]
pub trait Locks: Send + Sync {
    /// Takes the lock `key` for at most `ttl`, or `None` when someone holds it.
    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>, StoreError>;

    /// Gives a lock back (only the holder's own: a lapsed lock someone else took stays theirs).
    async fn release(&self, lock: Lock) -> Result<(), StoreError>;
}

impl Lock {
    fn new(key: &str) -> Option<Self> {
        let mut token = [0u8; 16];
        openssl::rand::rand_bytes(&mut token).ok()?;
        Some(Self {
            key: key.to_string(),
            token,
        })
    }
}

/// How a store is doing, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    /// `memory`, `redis`, `redis sentinel`, `redis cluster`.
    pub kind: &'static str,
    /// Answering now.
    pub reachable: bool,
    /// What else to say (the last error, the L1 state).
    pub detail: String,
}

/// The four stores a gateway uses, one implementation behind all of them.
#[derive(Clone)]
pub struct Stores {
    /// Signed-in sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Logins in progress and other one-time records.
    pub one_time: Arc<dyn OneTimeStore>,
    /// Replay caches.
    pub replay: Arc<dyn ReplayCache>,
    /// Single-flight locks.
    pub locks: Arc<dyn Locks>,
    /// The embedded store behind them, if that is what they are (its snapshot).
    pub memory: Option<Arc<memory::MemoryStore>>,
    /// The Redis store behind them, if that is what they are (its invalidation watch).
    pub redis: Option<Arc<redis::RedisStore>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stores({})", self.sessions.describe().kind)
    }
}

/// Bounds a store call: a store that does not answer in `limit` counts as unavailable.
pub(crate) async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer within {} ms",
            limit.as_millis()
        ))),
    }
}

impl Stores {
    /// Every store in this process's memory.
    pub fn memory(store: Arc<memory::MemoryStore>) -> Self {
        Self {
            sessions: store.clone(),
            one_time: store.clone(),
            replay: store.clone(),
            locks: store.clone(),
            memory: Some(store),
            redis: None,
        }
    }

    /// Every store in Redis.
    pub fn redis(store: Arc<redis::RedisStore>) -> Self {
        Self {
            sessions: store.clone(),
            one_time: store.clone(),
            replay: store.clone(),
            locks: store.clone(),
            memory: None,
            redis: Some(store),
        }
    }

    /// The stores `settings` ask for, sealing with keys derived from `codec`'s.
    pub fn for_settings(
        settings: &crate::config::SessionSettings,
        codec: &crate::session::cookies::CookieCodec,
        clock: crate::clock::SharedClock,
    ) -> Result<Self, StoreError> {
        match &settings.redis {
            Some(redis) => {
                let keys = crate::session::seal::StoreKeys::from_codec(codec)
                    .ok_or_else(|| StoreError::Unavailable("cannot derive store keys".into()))?;
                let store = redis::RedisStore::new(redis, keys, settings.max_sessions, clock)?;
                Ok(Self::redis(Arc::new(store)))
            }
            None => Ok(Self::memory(Arc::new(memory::MemoryStore::new(
                settings.max_sessions,
                settings.max_pending_logins,
                clock,
            )))),
        }
    }
}
