//! Login rate limits: token buckets (governor's GCRA) for sign-in starts, OIDC callbacks and
//! SAML ACS posts, one per client address (as the trusted-proxy rules establish it) and one per
//! app host. The defaults are far above what a person does — a sign-in is two or three
//! counted requests — so only a flood meets them, and a flood from one address leaves every
//! other address's bucket untouched.
//!
//! Buckets are per node (a client spread over N nodes gets N times the rate) and start empty
//! again on reload; what they stop is one source hammering sign-in, which a node-local bucket
//! does.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sign-in requests one client address may make per minute by default (the burst too).
pub const DEFAULT_PER_ADDRESS: u32 = 120;
/// Sign-in requests one app host may take per minute by default, from everyone together.
pub const DEFAULT_PER_HOST: u32 = 12_000;
/// Keys kept before idle buckets are dropped (an address flood must not grow memory forever).
const MAX_KEYS: usize = 100_000;

/// The configured limits (`[login_limits]`), per minute; `None` is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimitSettings {
    /// Per client address.
    pub per_address: Option<NonZeroU32>,
    /// Per app host.
    pub per_host: Option<NonZeroU32>,
}

impl Default for LoginLimitSettings {
    fn default() -> Self {
        Self {
            per_address: NonZeroU32::new(DEFAULT_PER_ADDRESS),
            per_host: NonZeroU32::new(DEFAULT_PER_HOST),
        }
    }
}

/// Which bucket ran dry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The client address's.
    Address,
    /// The app host's.
    Host,
}

impl Exceeded {
    /// Name in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Exceeded::Address => "address",
            Exceeded::Host => "app host",
        }
    }
}

/// A refused sign-in request: which limit, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// The limit met.
    pub limit: Exceeded,
    /// Seconds until the bucket has a token again (at least 1).
    pub retry_after_secs: u64,
    /// Whether this refusal should be audited (at most one record a second per limit, with
    /// how many were refused since the last one).
    pub audit: Option<u64>,
}

/// The buckets of one gateway.
pub struct LoginLimits {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_host: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    audited: [AuditPace; 2],
}

/// At most one audit record per second for a limit; the others are counted.
#[derive(Default)]
struct AuditPace {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl AuditPace {
    fn note(&self, now_second: u64) -> Option<u64> {
        let suppressed = self.suppressed.fetch_add(1, Ordering::Relaxed);
        let last = self.last_second.load(Ordering::Relaxed);
        if now_second > last
            && self
                .last_second
                .compare_exchange(last, now_second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.suppressed.store(0, Ordering::Relaxed);
            Some(suppressed + 1)
        } else {
            None
        }
    }
}

fn quota(per_minute: NonZeroU32) -> Quota {
    Quota::per_minute(per_minute).allow_burst(per_minute)
}

impl LoginLimits {
    /// Buckets for `settings`.
    pub fn new(settings: LoginLimitSettings) -> Self {
        Self {
            per_address: settings.per_address.map(|n| RateLimiter::keyed(quota(n))),
            per_host: settings.per_host.map(|n| RateLimiter::keyed(quota(n))),
            audited: Default::default(),
        }
    }

    /// Counts one sign-in request from `client` to `host` at Unix second `now_second`; `Err`
    /// when a bucket is empty. A request without a known address counts for its host only.
    pub fn check(
        &self,
        client: Option<IpAddr>,
        host: &str,
        now_second: u64,
    ) -> Result<(), Throttled> {
        if let (Some(limiter), Some(ip)) = (&self.per_address, client) {
            if limiter.len() > MAX_KEYS {
                limiter.retain_recent();
            }
            if let Err(not_until) = limiter.check_key(&ip) {
                return Err(self.throttled(Exceeded::Address, &not_until, now_second));
            }
        }
        if let Some(limiter) = &self.per_host {
            if limiter.len() > MAX_KEYS {
                limiter.retain_recent();
            }
            let key: Arc<str> = Arc::from(host);
            if let Err(not_until) = limiter.check_key(&key) {
                return Err(self.throttled(Exceeded::Host, &not_until, now_second));
            }
        }
        Ok(())
    }

    fn throttled(
        &self,
        limit: Exceeded,
        not_until: &governor::NotUntil<governor::clock::QuantaInstant>,
        now_second: u64,
    ) -> Throttled {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let pace = match limit {
            Exceeded::Address => &self.audited[0],
            Exceeded::Host => &self.audited[1],
        };
        Throttled {
            limit,
            retry_after_secs: wait.max(Duration::from_secs(1)).as_secs_f64().ceil() as u64,
            audit: pace.note(now_second),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: u32, per_host: u32) -> LoginLimits {
        LoginLimits::new(LoginLimitSettings {
            per_address: NonZeroU32::new(per_address),
            per_host: NonZeroU32::new(per_host),
        })
    }

    #[test]
    fn one_address_runs_dry_without_touching_another() {
        let l = limits(3, 1000);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(l.check(Some(a), "wiki", 1), Ok(()));
        }
        let refused = l.check(Some(a), "wiki", 1).unwrap_err();
        assert_eq!(refused.limit, Exceeded::Address);
        assert!(refused.retry_after_secs >= 1 && refused.retry_after_secs <= 20);
        assert_eq!(refused.audit, Some(1), "the first refusal is audited");
        assert_eq!(
            l.check(Some(a), "wiki", 1).unwrap_err().audit,
            None,
            "then paced"
        );
        assert_eq!(
            l.check(Some(b), "wiki", 1),
            Ok(()),
            "another address is unaffected"
        );
        assert_eq!(
            l.check(Some(a), "wiki", 2).unwrap_err().audit,
            Some(2),
            "next second: one record counting both"
        );
    }

    #[test]
    fn a_host_limit_counts_every_address_and_off_means_off() {
        let l = limits(0, 2);
        for i in 0..2u8 {
            assert_eq!(
                l.check(Some(IpAddr::from([10, 0, 0, i])), "wiki", 1),
                Ok(())
            );
        }
        let refused = l
            .check(Some(IpAddr::from([10, 0, 0, 9])), "wiki", 1)
            .unwrap_err();
        assert_eq!(refused.limit, Exceeded::Host);
        assert_eq!(
            l.check(None, "other", 1),
            Ok(()),
            "hosts have their own buckets"
        );
        let off = limits(0, 0);
        for _ in 0..1000 {
            assert_eq!(off.check(None, "wiki", 1), Ok(()));
        }
    }
}
