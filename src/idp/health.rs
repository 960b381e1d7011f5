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
use tokio::time::Instant;

/// Longest wait between checks of an unreachable IdP.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Shortest gap between checks that waiting users ask for (see [`Reachability::wanted`]).
const WANTED_CHECK_GAP: Duration = Duration::from_secs(1);

/// What the gateway last learned about reaching one IdP.
#[derive(Debug)]
pub struct Reachability {
    loaded_once: AtomicBool,
    reachable: AtomicBool,
    last_error: Mutex<Option<String>>,
    check_now: Notify,
    last_wanted: Mutex<Option<Instant>>,
}

impl Default for Reachability {
    fn default() -> Self {
        Self {
            loaded_once: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
            last_error: Mutex::new(None),
            check_now: Notify::new(),
            last_wanted: Mutex::new(None),
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

    /// A user wants to sign in while the IdP is marked unreachable: check again soon rather
    /// than at the end of the backoff, so sign-in comes back when the IdP does (at most one
    /// such check a second, however many users are waiting).
    pub fn wanted(&self) {
        if self.is_reachable() {
            return;
        }
        let Ok(mut last) = self.last_wanted.lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WANTED_CHECK_GAP) {
            return;
        }
        *last = Some(now);
        self.check_now.notify_one();
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

    #[tokio::test]
    async fn a_user_waiting_to_sign_in_wakes_the_watcher_once_a_second_at_most() {
        let r = std::sync::Arc::new(Reachability::default());
        r.reachable(false, None);
        // The failure's own wake-up is consumed by the check that confirms it.
        r.until_next_check(Duration::from_secs(3600), 1).await;
        let wait = |r: std::sync::Arc<Reachability>| {
            tokio::spawn(async move { r.until_next_check(Duration::from_secs(3600), 6).await })
        };
        let first = wait(r.clone());
        r.wanted();
        tokio::time::timeout(Duration::from_secs(2), first)
            .await
            .expect("a waiting user did not wake the watcher")
            .unwrap();
        let second = wait(r.clone());
        r.wanted();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), second)
                .await
                .is_err(),
            "a second wake-up within the second"
        );
        // While the IdP is reachable, nobody is waiting for it.
        r.reachable(true, None);
        let third = wait(r.clone());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        r.wanted();
        assert!(tokio::time::timeout(Duration::from_millis(300), third)
            .await
            .is_err());
    }
}
