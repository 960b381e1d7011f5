//! Time, read in one place and injectable.
//!
//! Anything stored (session start and last use, pending logins, token checks, audit) uses
//! wall-clock Unix milliseconds from a [`Clock`]: an `Instant` means nothing on another node
//! or after a restart. Monotonic `Instant`s remain only for local timing (request duration,
//! upstream ejection), where a wall-clock jump must not matter. Tests hand the gateway a
//! [`ManualClock`] and move it, instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> u64 {
        self.now_ms() / 1000
    }
}

/// The clock every part of one gateway shares.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to (tests, benchmarks).
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock standing at `start_ms` (Unix milliseconds).
    pub fn new(start_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            ms: AtomicU64::new(start_ms),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ms.fetch_add(by, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::Relaxed)
    }
}

/// Seconds since the Unix epoch on the system clock, for code that runs outside a gateway
/// (the policy tools).
pub fn unix_now() -> u64 {
    SystemClock.now_unix()
}

/// Current time as chrono's UTC type, for the OpenID Connect token verifier, shifted by
/// `offset_secs` (negative = earlier) to grant clock skew.
pub fn utc_now_shifted(clock: &dyn Clock, offset_secs: i64) -> chrono::DateTime<chrono::Utc> {
    let now = utc_now(clock);
    now.checked_add_signed(chrono::TimeDelta::seconds(offset_secs))
        .unwrap_or(now)
}

/// Now on `clock` as chrono's UTC type, to the millisecond (SAML message times).
pub fn utc_now(clock: &dyn Clock) -> chrono::DateTime<chrono::Utc> {
    let ms = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Milliseconds in `d`, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(2_500));
        assert_eq!(clock.now_ms(), 3_500);
        assert_eq!(clock.now_unix(), 3);
        assert!(SystemClock.now_ms() > 1_700_000_000_000);
    }
}
