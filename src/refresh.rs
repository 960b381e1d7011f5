//! Refreshing a session's claims from its IdP (OpenID Connect refresh tokens), once per
//! session across every node.
//!
//! A session whose claims are due is refreshed by whichever request first takes the
//! session's lock in the shared store; it re-reads the session past any node-local cache (a
//! refresh elsewhere may have just landed), uses the refresh token once, and replaces the
//! session everywhere. Requests that find the lock taken go on with the claims they have, if
//! these are not overdue by more than one interval, else wait briefly for the new ones — so
//! two nodes never spend one rotating refresh token twice. A refused refresh ends the
//! session; an unreachable IdP leaves it as it is until the claims are too old to trust.

use crate::auth::{Auth, Provider};
use crate::idp::oidc::RefreshError;
use crate::session::{Session, SessionId, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// How long one refresh may hold the session's lock (the IdP call's own timeout is 15 s); a
/// refresh that failed for want of the IdP keeps it this long, which spaces out retries.
const LOCK_TTL: Duration = Duration::from_secs(20);
/// How long a request with overdue claims waits for another node's refresh.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(100);

/// What a request goes on with.
pub enum Refresh {
    /// This session: refreshed, or with claims still recent enough.
    Use(Arc<Session>),
    /// The IdP refused the refresh (grant revoked, user deactivated): the session has ended.
    Ended(Arc<Session>, String),
    /// The claims are too old to use and cannot be refreshed now (IdP or store down).
    Unverifiable(String),
}

/// Refreshes `session` if its claims are due (see the module docs).
pub async fn if_due(auth: &Auth, id: &SessionId, session: Arc<Session>) -> Refresh {
    let now = auth.clock().now_ms();
    if !session.refresh_due(now) {
        return Refresh::Use(session);
    }
    let Some(Provider::Oidc(provider)) = auth.provider(&session.identity.idp) else {
        return Refresh::Use(session);
    };
    let Some(interval) = provider.refresh_interval() else {
        return Refresh::Use(session);
    };
    let overdue_ms = session
        .tokens
        .as_ref()
        .map_or(0, |t| now.saturating_sub(t.refresh_due_ms));
    let still_usable = overdue_ms < crate::clock::millis(interval);
    let key = lock_key(id);
    let lock = match auth.stores.locks.try_lock(&key, LOCK_TTL).await {
        Ok(lock) => lock,
        Err(e) => return fallback(session, still_usable, &e.to_string()),
    };
    let Some(lock) = lock else {
        // Another request (here or on another node) is refreshing this session.
        if still_usable {
            return Refresh::Use(session);
        }
        return wait_for_others(auth, id, session).await;
    };
    // Past any L1: another node may have refreshed since this copy was read.
    let current = match auth.sessions.get_fresh(id).await {
        Ok(Some(current)) => current,
        Ok(None) => {
            release(auth, lock).await;
            return Refresh::Ended(session, "the session ended meanwhile".into());
        }
        Err(e) => {
            release(auth, lock).await;
            return fallback(session, still_usable, &e.to_string());
        }
    };
    if !current.refresh_due(now) {
        release(auth, lock).await;
        return Refresh::Use(current);
    }
    let Some(tokens) = current.tokens.as_deref() else {
        release(auth, lock).await;
        return Refresh::Use(current);
    };
    let answer = provider.refresh(tokens, &current.identity.subject).await;
    let outcome = match &answer {
        Ok(_) => "ok",
        Err(RefreshError::Refused(_)) => "refused",
        Err(RefreshError::Unavailable(_)) => "failed",
    };
    crate::metrics::refresh(provider.name(), outcome);
    match answer {
        Ok(refreshed) => {
            // New claims from the IdP mean a fresh look in the directory too.
            let identity = match (refreshed.identity, auth.directory(provider.name())) {
                (Some(identity), Some(directory)) => Some(directory.enrich(identity).await),
                (identity, _) => identity,
            };
            let next = Arc::new(current.refreshed(identity, refreshed.tokens));
            let replaced = auth.sessions.replace(id, next.clone()).await;
            release(auth, lock).await;
            match replaced {
                Ok(true) => {
                    tracing::info!(idp = %provider.name(), user = %next.identity.display(), "session claims refreshed");
                    Refresh::Use(next)
                }
                Ok(false) => Refresh::Ended(current, "the session ended meanwhile".into()),
                // The IdP has rotated the refresh token and the store could not keep the new
                // one: the session cannot be refreshed again, so it goes.
                Err(e) => {
                    let _ = auth.sessions.remove(id).await;
                    Refresh::Ended(current, format!("refreshed tokens not stored: {e}"))
                }
            }
        }
        Err(RefreshError::Refused(why)) => {
            let ended = auth.sessions.remove(id).await;
            release(auth, lock).await;
            match ended {
                Ok(_) => Refresh::Ended(current, why),
                Err(e) => Refresh::Unverifiable(e.to_string()),
            }
        }
        // The lock stays until it lapses: the next attempt waits that long.
        Err(RefreshError::Unavailable(why)) => {
            tracing::warn!(idp = %provider.name(), error = %why, "session refresh failed; trying again later");
            fallback(current, still_usable, &why)
        }
    }
}

/// The session's lock key: a hash of its id, never the id.
fn lock_key(id: &SessionId) -> String {
    let digest = openssl::sha::sha256(id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("refresh\0{hex}")
}

async fn release(auth: &Auth, lock: crate::session::store::Lock) {
    if let Err(e) = auth.stores.locks.release(lock).await {
        tracing::debug!(error = %e, "refresh lock not released (it lapses by itself)");
    }
}

fn fallback(session: Arc<Session>, still_usable: bool, why: &str) -> Refresh {
    if still_usable {
        Refresh::Use(session)
    } else {
        Refresh::Unverifiable(why.to_string())
    }
}

/// Waits a little for the refresh another request is doing.
async fn wait_for_others(auth: &Auth, id: &SessionId, session: Arc<Session>) -> Refresh {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHERS;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        match auth.sessions.get_fresh(id).await {
            Ok(Some(s)) if !s.refresh_due(auth.clock().now_ms()) => return Refresh::Use(s),
            Ok(Some(_)) => {}
            Ok(None) => return Refresh::Ended(session, "the session ended meanwhile".into()),
            Err(StoreError::Unavailable(e)) => return Refresh::Unverifiable(e),
        }
    }
    Refresh::Unverifiable("claims overdue and another refresh is still running".into())
}
