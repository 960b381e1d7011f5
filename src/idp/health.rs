//! Whether an identity provider can be reached right now.
//!
//! A login sent to an IdP that is down ends in the browser's own connection error, with no
//! page to explain it. So each provider is watched cheaply in the background (one GET of its
//! discovery document or metadata every `health_check_interval`, backing off from one second
//! while it fails), and a failed back-channel call marks it at once; while it is unreachable,
//! protected pages answer "sign-in temporarily unavailable" instead of redirecting into it.
//! Signed-in users keep working: their sessions do not need the IdP.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Longest wait between checks of an unreachable IdP.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the gateway last learned about reaching one IdP.
#[derive(Debug)]
pub struct Reachability {
    loaded_once: AtomicBool,
    reachable: AtomicBool,
    last_error: Mutex<Option<String>>,
    check_now: Notify,
}

impl Default for Reachability {
    fn default() -> Self {
        Self {
            loaded_once: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
            last_error: Mutex::new(None),
            check_now: Notify::new(),
        }
    }
}

impl Reachability {
    /// Discovery (or metadata) succeeded: the IdP answers.
    pub fn loaded(&self) {
        self.loaded_once.store(true, Ordering::Release);
        self.reachable(true, None);
    }

    /// Has discovery (or metadata loading) ever succeeded?
    pub fn was_loaded(&self) -> bool {
        self.loaded_once.load(Ordering::Acquire)
    }

    /// Can logins be sent there now (as far as the last check or call knows)?
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    /// Why the last check failed, while it is failing.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Records a check's (or a call's) outcome; logs changes.
    pub fn reachable(&self, up: bool, error: Option<String>) {
        let was = self.reachable.swap(up, Ordering::AcqRel);
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
        if was && !up {
            // Ask the watcher to confirm soon and keep checking at the fast pace.
            self.check_now.notify_one();
        }
    }

    /// Waits for the next check: `interval` while the IdP answers; while it does not, a
    /// backoff from one second (doubling, at most 30 s); sooner when a call has just failed.
    pub async fn until_next_check(&self, interval: Duration, failures: u32) {
        let wait = if failures == 0 {
            interval
        } else {
            Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(MAX_BACKOFF)
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.check_now.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_reachable_but_not_loaded_and_follows_checks() {
        let r = Reachability::default();
        assert!(!r.was_loaded() && r.is_reachable());
        r.loaded();
        assert!(r.was_loaded() && r.is_reachable());
        r.reachable(false, Some("connection refused".into()));
        assert!(!r.is_reachable());
        assert_eq!(r.last_error().as_deref(), Some("connection refused"));
        r.reachable(true, None);
        assert!(r.is_reachable() && r.last_error().is_none() && r.was_loaded());
    }

    #[tokio::test]
    async fn a_failure_wakes_the_watcher_early() {
        let r = std::sync::Arc::new(Reachability::default());
        let waiting = {
            let r = r.clone();
            tokio::spawn(async move { r.until_next_check(Duration::from_secs(3600), 0).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.reachable(false, None);
        tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("watcher not woken")
            .unwrap();
    }
}
