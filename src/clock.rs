//! Wall-clock time, read in one place.
//!
//! Token checks (`exp`, `iat`, `auth_time`) and audit records need calendar time; expiry of
//! sessions and pending logins uses monotonic `Instant`s inside the caches. Keeping the only
//! `SystemTime::now` here makes every other module's notion of "now" explicit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the system clock is before 1970).
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Current time as chrono's UTC type, for the OpenID Connect token verifier, shifted by
/// `offset_secs` (negative = earlier) to grant clock skew.
pub fn utc_now_shifted(offset_secs: i64) -> chrono::DateTime<chrono::Utc> {
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(now.saturating_add(offset_secs), 0).unwrap_or_default()
}
