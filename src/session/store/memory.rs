//! The embedded store: everything in this process's memory (moka), the default. With
//! `[sessions] snapshot_file` set, a stop writes it to a sealed file and the next start reads
//! it back, so one node restarts (or upgrades) without signing anyone out.

use super::{
    Lock, Locks, OneTimeStore, ReplayCache, Selector, SessionStore, StoreError, StoreStatus,
};
use crate::clock::{millis, SharedClock};
use crate::session::seal::StoreKeys;
use crate::session::{Session, SessionId, SignInFamily};
use async_trait::async_trait;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::Expiry;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Per-entry expiry: a read counts as a use (idle timer restarts), never past the absolute end.
/// Reckoned on the gateway's clock; moka's own `Instant`s only schedule the eviction.
struct SessionExpiry {
    clock: SharedClock,
}

impl Expiry<SessionId, Arc<Session>> for SessionExpiry {
    fn expire_after_create(
        &self,
        _key: &SessionId,
        value: &Arc<Session>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.remaining_after_use(self.clock.now_ms()))
    }

    fn expire_after_read(
        &self,
        _key: &SessionId,
        value: &Arc<Session>,
        _read_at: Instant,
        _current: Option<Duration>,
        _last_modified_at: Instant,
    ) -> Option<Duration> {
        Some(value.remaining_after_use(self.clock.now_ms()))
    }

    fn expire_after_update(
        &self,
        _key: &SessionId,
        value: &Arc<Session>,
        _updated_at: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.remaining_after_use(self.clock.now_ms()))
    }
}

/// A one-time or replay entry: when it lapses (Unix ms of the clock) and what it holds.
#[derive(Clone)]
struct Timed {
    expires_ms: u64,
    value: Arc<Vec<u8>>,
}

/// moka evicts a timed entry when its own time is up.
struct TimedExpiry {
    clock: SharedClock,
}

impl Expiry<String, Timed> for TimedExpiry {
    fn expire_after_create(&self, _: &String, value: &Timed, _: Instant) -> Option<Duration> {
        Some(Duration::from_millis(
            value.expires_ms.saturating_sub(self.clock.now_ms()),
        ))
    }
}

/// Everything held in this process.
pub struct MemoryStore {
    sessions: Cache<SessionId, Arc<Session>>,
    one_time: Cache<String, Timed>,
    replay: Cache<String, Timed>,
    locks: Mutex<HashMap<String, ([u8; 16], u64)>>,
    clock: SharedClock,
}

impl MemoryStore {
    /// A store holding at most `max_sessions` sessions (least recently used evicted first) and
    /// `max_one_time` one-time records, keeping time by `clock`.
    pub fn new(max_sessions: u64, max_one_time: u64, clock: SharedClock) -> Self {
        let sessions = Cache::builder()
            .max_capacity(max_sessions)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(SessionExpiry {
                clock: clock.clone(),
            })
            .eviction_listener(|_id, session: Arc<Session>, cause| {
                let reason = match cause {
                    RemovalCause::Expired => "expired",
                    RemovalCause::Size => "evicted_capacity",
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                audit_session_end(&session, reason);
            })
            .build();
        let timed = |max: u64| {
            Cache::builder()
                .max_capacity(max)
                .expire_after(TimedExpiry {
                    clock: clock.clone(),
                })
                .build()
        };
        Self {
            sessions,
            one_time: timed(max_one_time),
            replay: timed(REPLAY_ENTRIES),
            locks: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// One-time records held now (sign-ins in progress, SAML logouts awaiting an answer).
    pub fn one_time_held(&self) -> u64 {
        self.one_time.entry_count()
    }

    fn expires(&self, ttl: Duration) -> u64 {
        self.clock.now_ms().saturating_add(millis(ttl))
    }
}

/// Most replay-cache entries held (assertion ids live minutes; beyond this the oldest go — see
/// the README).
const REPLAY_ENTRIES: u64 = 1_000_000;

/// The audit record of a session the store let go of by itself.
pub(crate) fn audit_session_end(session: &Session, reason: &str) {
    let user = &session.identity;
    tracing::info!(
        target: "audit",
        event = "session_end",
        reason,
        user = %user.display(),
        subject = %crate::idp::loggable(&user.subject),
        app = %session.app,
        idp = %user.idp,
        "session ended"
    );
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, id: SessionId, session: Arc<Session>) -> Result<(), StoreError> {
        self.sessions.insert(id, session).await;
        Ok(())
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError> {
        Ok(self.sessions.get(id).await)
    }

    fn records_uses(&self) -> bool {
        false
    }

    async fn record_use(
        &self,
        _id: &SessionId,
        _session: &Session,
        _seen_before_ms: u64,
        _now_ms: u64,
    ) -> Result<(), StoreError> {
        // The read already restarted the entry's idle timer (see `SessionExpiry`).
        Ok(())
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<Arc<Session>>, StoreError> {
        Ok(self.sessions.remove(id).await)
    }

    async fn remove_families(
        &self,
        families: &[SignInFamily],
    ) -> Result<Vec<Arc<Session>>, StoreError> {
        if families.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.remove_matching(|s| families.contains(&s.family)).await)
    }

    async fn remove_saml_subject(
        &self,
        idp: &str,
        name_id: &str,
        session_indexes: &[String],
    ) -> Result<Vec<Arc<Session>>, StoreError> {
        Ok(self
            .remove_matching(|s| s.matches_saml_logout(idp, name_id, session_indexes))
            .await)
    }

    async fn select(&self, which: &Selector) -> Result<Vec<Arc<Session>>, StoreError> {
        Ok(self
            .sessions
            .iter()
            .filter(|(_, s)| which.matches(s))
            .map(|(_, s)| s)
            .collect())
    }

    async fn remove_selected(&self, which: &Selector) -> Result<Vec<Arc<Session>>, StoreError> {
        Ok(self.remove_matching(|s| which.matches(s)).await)
    }

    async fn replace(&self, id: &SessionId, session: Arc<Session>) -> Result<bool, StoreError> {
        // Only over a live entry: a session logged out meanwhile stays out.
        let entry = self
            .sessions
            .entry(*id)
            .and_compute_with(|held| async move {
                match held {
                    Some(_) => moka::ops::compute::Op::Put(session),
                    None => moka::ops::compute::Op::Nop,
                }
            })
            .await;
        Ok(matches!(
            entry,
            moka::ops::compute::CompResult::ReplacedWith(_)
        ))
    }

    fn held(&self) -> u64 {
        self.sessions.entry_count()
    }

    async fn run_maintenance(&self) {
        self.sessions.run_pending_tasks().await;
        self.one_time.run_pending_tasks().await;
    }

    fn describe(&self) -> StoreStatus {
        StoreStatus {
            kind: "memory",
            reachable: true,
            detail: format!("{} sessions held", self.sessions.entry_count()),
        }
    }
}

impl MemoryStore {
    /// Removes every session `matches` selects. Walks the whole store: logouts are rare, and
    /// no second index has to stay in step.
    async fn remove_matching(&self, matches: impl Fn(&Session) -> bool) -> Vec<Arc<Session>> {
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches(s))
            .map(|(id, _)| *id)
            .collect();
        let mut removed = Vec::new();
        for id in ids {
            if let Some(s) = self.sessions.remove(&id).await {
                removed.push(s);
            }
        }
        removed
    }
}

#[async_trait]
impl OneTimeStore for MemoryStore {
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        let entry = Timed {
            expires_ms: self.expires(ttl),
            value: Arc::new(value),
        };
        self.one_time.insert(key.to_string(), entry).await;
        Ok(())
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        // `remove` may hand back an entry that lapsed but was not evicted yet.
        let now = self.clock.now_ms();
        Ok(self
            .one_time
            .remove(key)
            .await
            .filter(|e| e.expires_ms > now)
            .map(|e| Arc::unwrap_or_clone(e.value)))
    }
}

#[async_trait]
impl ReplayCache for MemoryStore {
    async fn first_use(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let fresh = Timed {
            expires_ms: self.expires(ttl),
            value: Arc::default(),
        };
        let entry = self
            .replay
            .entry(key.to_string())
            .or_insert(fresh.clone())
            .await;
        if entry.is_fresh() {
            return Ok(true);
        }
        if entry.value().expires_ms <= now {
            // Seen, but long enough ago to have lapsed (on the gateway's clock).
            self.replay.insert(key.to_string(), fresh).await;
            return Ok(true);
        }
        Ok(false)
    }
}

#[async_trait]
impl Locks for MemoryStore {
    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>, StoreError> {
        let now = self.clock.now_ms();
        let Ok(mut held) = self.locks.lock() else {
            return Err(StoreError::Unavailable("lock table poisoned".into()));
        };
        held.retain(|_, (_, until)| *until > now);
        if held.contains_key(key) {
            return Ok(None);
        }
        let Some(lock) = Lock::new(key) else {
            return Err(StoreError::Unavailable("no random bytes".into()));
        };
        held.insert(key.to_string(), (lock.token, self.expires(ttl)));
        Ok(Some(lock))
    }

    async fn release(&self, lock: Lock) -> Result<(), StoreError> {
        let Ok(mut held) = self.locks.lock() else {
            return Err(StoreError::Unavailable("lock table poisoned".into()));
        };
        if held.get(&lock.key).is_some_and(|(t, _)| *t == lock.token) {
            held.remove(&lock.key);
        }
        Ok(())
    }
}

// ---- snapshot ---------------------------------------------------------------------------------

/// The first bytes of a snapshot file.
const SNAPSHOT_MAGIC: &[u8] = b"portcullis-snapshot-1\n";
/// What the snapshot's seal is bound to.
const SNAPSHOT_CONTEXT: &[u8] = b"portcullis snapshot v1";

/// Why a snapshot was not written or not loaded.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The file could not be read or written.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Sealed under another cookie key, tampered with or truncated: nothing of it is used.
    #[error("snapshot file {0} refused: written under another cookie key, tampered with or truncated; nothing loaded (users sign in again)")]
    Refused(String),
    /// It could not be encoded (should not happen).
    #[error("snapshot could not be encoded")]
    Encode,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    written_ms: u64,
    sessions: Vec<SnapshotSession>,
    one_time: Vec<SnapshotTimed>,
    replay: Vec<SnapshotTimed>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotSession {
    id: String,
    last_seen_ms: u64,
    session: String,
}

#[derive(Serialize, Deserialize)]
struct SnapshotTimed {
    key: String,
    expires_ms: u64,
    value: String,
}

/// What a snapshot held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotCounts {
    /// Sessions.
    pub sessions: usize,
    /// Logins in progress and other one-time records.
    pub one_time: usize,
}

impl MemoryStore {
    /// Writes every live session, one-time record and replay entry to `path`, sealed under
    /// `keys`: written beside it and renamed, so a crash mid-write leaves no half file, and
    /// readable by its owner only.
    pub async fn write_snapshot(
        &self,
        path: &Path,
        keys: &StoreKeys,
    ) -> Result<SnapshotCounts, SnapshotError> {
        use base64::engine::general_purpose::STANDARD as B64;
        use base64::Engine;
        self.run_maintenance().await;
        let now = self.clock.now_ms();
        let sessions: Vec<SnapshotSession> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| {
                Some(SnapshotSession {
                    id: id.encode(),
                    last_seen_ms: s.last_seen_ms(),
                    session: B64.encode(s.to_stored()?),
                })
            })
            .collect();
        let timed = |cache: &Cache<String, Timed>| -> Vec<SnapshotTimed> {
            cache
                .iter()
                .filter(|(_, e)| e.expires_ms > now)
                .map(|(k, e)| SnapshotTimed {
                    key: k.to_string(),
                    expires_ms: e.expires_ms,
                    value: B64.encode(&*e.value),
                })
                .collect()
        };
        let file = SnapshotFile {
            written_ms: now,
            one_time: timed(&self.one_time),
            replay: timed(&self.replay),
            sessions,
        };
        let counts = SnapshotCounts {
            sessions: file.sessions.len(),
            one_time: file.one_time.len(),
        };
        let plain = serde_json::to_vec(&file).map_err(|_| SnapshotError::Encode)?;
        let sealed = keys
            .seal(SNAPSHOT_CONTEXT, &plain)
            .ok_or(SnapshotError::Encode)?;
        let io = |source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        };
        let partial = path.with_extension("partial");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)
                .map_err(io)?;
            out.write_all(SNAPSHOT_MAGIC).map_err(io)?;
            out.write_all(&sealed).map_err(io)?;
            out.sync_all().map_err(io)?;
        }
        std::fs::rename(&partial, path).map_err(io)?;
        Ok(counts)
    }

    /// Loads a snapshot written by [`MemoryStore::write_snapshot`] under the same key, then
    /// removes the file (it is used once: a later crash must not bring back sessions that
    /// ended since). A missing file loads nothing; a refused one loads nothing at all.
    pub async fn load_snapshot(
        &self,
        path: &Path,
        keys: &StoreKeys,
    ) -> Result<SnapshotCounts, SnapshotError> {
        use base64::engine::general_purpose::STANDARD as B64;
        use base64::Engine;
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SnapshotCounts::default())
            }
            Err(source) => {
                return Err(SnapshotError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let _ = std::fs::remove_file(path);
        let refused = || SnapshotError::Refused(path.display().to_string());
        let sealed = bytes.strip_prefix(SNAPSHOT_MAGIC).ok_or_else(refused)?;
        let plain = keys.open(SNAPSHOT_CONTEXT, sealed).ok_or_else(refused)?;
        let file: SnapshotFile = serde_json::from_slice(&plain).map_err(|_| refused())?;
        // Decode everything before storing anything: never half-loaded.
        let mut sessions = Vec::with_capacity(file.sessions.len());
        for s in &file.sessions {
            let id = SessionId::decode(&s.id).ok_or_else(refused)?;
            let data = B64.decode(&s.session).map_err(|_| refused())?;
            let session = Session::from_stored(&data, s.last_seen_ms).ok_or_else(refused)?;
            sessions.push((id, session));
        }
        let decode_timed = |list: &[SnapshotTimed]| -> Result<Vec<(String, Timed)>, SnapshotError> {
            list.iter()
                .map(|t| {
                    let value = B64.decode(&t.value).map_err(|_| refused())?;
                    Ok((
                        t.key.clone(),
                        Timed {
                            expires_ms: t.expires_ms,
                            value: Arc::new(value),
                        },
                    ))
                })
                .collect()
        };
        let one_time = decode_timed(&file.one_time)?;
        let replay = decode_timed(&file.replay)?;
        let now = self.clock.now_ms();
        let mut counts = SnapshotCounts::default();
        for (id, session) in sessions {
            // Ended while the gateway was down: not brought back.
            if !session.has_ended(now) {
                self.sessions.insert(id, Arc::new(session)).await;
                counts.sessions += 1;
            }
        }
        for (key, entry) in one_time.into_iter().filter(|(_, e)| e.expires_ms > now) {
            self.one_time.insert(key, entry).await;
            counts.one_time += 1;
        }
        for (key, entry) in replay.into_iter().filter(|(_, e)| e.expires_ms > now) {
            self.replay.insert(key, entry).await;
        }
        Ok(counts)
    }
}

/// The embedded store's snapshot file over one run of the process: read at start, written
/// once on the way out (before the listening sockets are handed to a new process, or at
/// exit).
pub struct SnapshotKeeper {
    store: Arc<MemoryStore>,
    keys: StoreKeys,
    path: std::path::PathBuf,
    written: std::sync::atomic::AtomicBool,
}

impl SnapshotKeeper {
    /// Keeps `store`'s snapshot at `path`, sealed under `keys`.
    pub fn new(store: Arc<MemoryStore>, keys: StoreKeys, path: std::path::PathBuf) -> Self {
        Self {
            store,
            keys,
            path,
            written: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Loads the snapshot a previous run left, logging what happened.
    pub async fn load(&self) {
        match self.store.load_snapshot(&self.path, &self.keys).await {
            Ok(c) if c == SnapshotCounts::default() => {
                tracing::info!(file = %self.path.display(), "no session snapshot to load");
            }
            Ok(c) => tracing::info!(
                file = %self.path.display(),
                sessions = c.sessions,
                logins_in_progress = c.one_time,
                "sessions loaded from the snapshot"
            ),
            Err(e) => tracing::error!(error = %e, "session snapshot not loaded"),
        }
    }

    /// Writes the snapshot, the first time only (a process hands over or exits once).
    pub async fn write_once(&self) {
        if self.written.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        match self.store.write_snapshot(&self.path, &self.keys).await {
            Ok(c) => tracing::info!(
                file = %self.path.display(),
                sessions = c.sessions,
                logins_in_progress = c.one_time,
                "session snapshot written"
            ),
            Err(e) => {
                tracing::error!(error = %e, "session snapshot not written: users sign in again after the restart")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::secret::SecretBytes;
    use crate::session::cookies::CookieCodec;
    use crate::session::{test_session, Expired, NotValid};

    const T0: u64 = 1_800_000_000_000;

    fn keys(byte: u8) -> StoreKeys {
        StoreKeys::from_codec(&CookieCodec::new(Some(&SecretBytes::new(vec![byte; 64])))).unwrap()
    }

    #[tokio::test]
    async fn store_expires_idle_sessions_by_its_clock_and_caps_the_count() {
        let clock = ManualClock::new(T0);
        let store = MemoryStore::new(1000, 100, clock.clone());
        let id = SessionId::random().unwrap();
        store
            .insert(id, Arc::new(test_session(T0, 50_000, 600_000)))
            .await
            .unwrap();
        let limits = (Duration::from_secs(60), Duration::from_secs(600));
        let found = store.get(&id).await.unwrap().unwrap();
        assert_eq!(found.touch(clock.now_ms(), limits.0, limits.1), Ok(()));
        clock.advance(Duration::from_secs(51));
        // Still held (the grace lets the next use tell why it ended), no longer valid.
        let found = store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            found.touch(clock.now_ms(), limits.0, limits.1),
            Err(NotValid::Ended(Expired::Idle)),
            "idle session must expire"
        );

        let store = MemoryStore::new(10, 10, crate::clock::system());
        let now = crate::clock::system().now_ms();
        for _ in 0..50 {
            let id = SessionId::random().unwrap();
            store
                .insert(id, Arc::new(test_session(now, 60_000, 60_000)))
                .await
                .unwrap();
        }
        store.run_maintenance().await;
        assert!(store.held() <= 10, "held {}", store.held());
    }

    #[tokio::test]
    async fn one_time_records_are_taken_once_and_lapse_by_the_clock() {
        let clock = ManualClock::new(T0);
        let store = MemoryStore::new(10, 10, clock.clone());
        let ttl = Duration::from_secs(300);
        store.put("a", b"1".to_vec(), ttl).await.unwrap();
        store.put("b", b"2".to_vec(), ttl).await.unwrap();
        assert_eq!(store.take("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(store.take("a").await.unwrap(), None, "taken twice");
        clock.advance(ttl);
        assert_eq!(store.take("b").await.unwrap(), None, "lapsed");
    }

    #[tokio::test]
    async fn replay_cache_counts_only_the_first_use_and_locks_exclude() {
        let clock = ManualClock::new(T0);
        let store = MemoryStore::new(10, 10, clock.clone());
        let ttl = Duration::from_secs(60);
        assert!(store.first_use("id-1", ttl).await.unwrap());
        assert!(!store.first_use("id-1", ttl).await.unwrap(), "replayed");
        assert!(store.first_use("id-2", ttl).await.unwrap());

        let lock = store.try_lock("refresh", ttl).await.unwrap().unwrap();
        assert!(store.try_lock("refresh", ttl).await.unwrap().is_none());
        store.release(lock).await.unwrap();
        let again = store.try_lock("refresh", ttl).await.unwrap();
        assert!(again.is_some(), "released lock is free");
        clock.advance(ttl);
        assert!(
            store.try_lock("refresh", ttl).await.unwrap().is_some(),
            "a lapsed lock is free"
        );
    }

    async fn filled(clock: &crate::clock::SharedClock) -> (MemoryStore, SessionId) {
        let store = MemoryStore::new(100, 100, clock.clone());
        let id = SessionId::random().unwrap();
        let mut session = test_session(clock.now_ms(), 3_600_000, 7_200_000);
        session.identity.email = Some("alice@corp.example".into());
        store.insert(id, Arc::new(session)).await.unwrap();
        store
            .put(
                "pending\0state-1",
                b"login".to_vec(),
                Duration::from_secs(600),
            )
            .await
            .unwrap();
        assert!(store
            .first_use("assertion-1", Duration::from_secs(600))
            .await
            .unwrap());
        (store, id)
    }

    #[tokio::test]
    async fn a_snapshot_brings_sessions_logins_and_replays_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.snapshot");
        let clock: crate::clock::SharedClock = ManualClock::new(T0);
        let (store, id) = filled(&clock).await;
        let written = store.write_snapshot(&path, &keys(1)).await.unwrap();
        assert_eq!(
            written,
            SnapshotCounts {
                sessions: 1,
                one_time: 1
            }
        );
        let raw = std::fs::read(&path).unwrap();
        assert!(
            !raw.windows(5).any(|w| w == b"alice"),
            "the snapshot shows no identity"
        );

        let next = MemoryStore::new(100, 100, clock.clone());
        let loaded = next.load_snapshot(&path, &keys(1)).await.unwrap();
        assert_eq!(loaded, written);
        let back = next.get(&id).await.unwrap().unwrap();
        assert_eq!(back.identity.email.as_deref(), Some("alice@corp.example"));
        assert_eq!(back.created_ms, T0);
        assert!(next.take("pending\0state-1").await.unwrap().is_some());
        assert!(
            !next
                .first_use("assertion-1", Duration::from_secs(600))
                .await
                .unwrap(),
            "a used assertion stays used across the restart"
        );
        assert!(!path.exists(), "a snapshot is used once");
    }

    #[tokio::test]
    async fn a_snapshot_under_another_key_tampered_or_cut_short_loads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.snapshot");
        let clock: crate::clock::SharedClock = ManualClock::new(T0);
        let (store, _) = filled(&clock).await;
        store.write_snapshot(&path, &keys(1)).await.unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut tampered = good.clone();
        let mid = tampered.len() / 2;
        tampered[mid] ^= 0x40;
        let cases: [(&str, Vec<u8>, StoreKeys); 3] = [
            ("other key", good.clone(), keys(2)),
            ("tampered", tampered, keys(1)),
            ("truncated", good[..good.len() - 10].to_vec(), keys(1)),
        ];
        for (what, bytes, key) in cases {
            std::fs::write(&path, bytes).unwrap();
            let next = MemoryStore::new(100, 100, clock.clone());
            let err = next.load_snapshot(&path, &key).await.unwrap_err();
            assert!(matches!(err, SnapshotError::Refused(_)), "{what}: {err}");
            next.run_maintenance().await;
            assert_eq!(next.held(), 0, "{what}: nothing half-loaded");
            assert!(
                next.take("pending\0state-1").await.unwrap().is_none(),
                "{what}"
            );
        }
    }

    #[tokio::test]
    async fn sessions_that_ended_while_stopped_are_not_brought_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.snapshot");
        let clock = ManualClock::new(T0);
        let shared: crate::clock::SharedClock = clock.clone();
        let (store, id) = filled(&shared).await;
        store.write_snapshot(&path, &keys(1)).await.unwrap();
        clock.advance(Duration::from_secs(3 * 3600));
        let next = MemoryStore::new(100, 100, shared);
        let loaded = next.load_snapshot(&path, &keys(1)).await.unwrap();
        assert_eq!(loaded.sessions, 0);
        assert!(next.get(&id).await.unwrap().is_none());
    }
}
