//! Choosing a backend: smooth weighted round-robin over an app's upstreams, skipping the ones
//! a request already tried and the ones passive health checks have ejected.
//!
//! The schedule is computed once when the policy loads; each pick is one atomic increment,
//! so choosing a backend never takes a lock on the request path. Passive health: an upstream
//! that refuses `eject_after` connections in a row is left out for `eject_for`, then tried
//! again (one more failure ejects it again at once; one success restores it). Active health
//! (the `health_checks` service probes on a schedule): `unhealthy_after` failed probes in a row
//! take an upstream out until `healthy_after` good ones in a row bring it back.

use openssl::x509::X509;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// One backend server of an app.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// The URL as written, for logs.
    pub url: String,
    /// Resolved when the policy is loaded (no DNS on the request path).
    pub addr: SocketAddr,
    /// Speak TLS to it.
    pub tls: bool,
    /// Server name for SNI and certificate checks.
    pub sni: String,
    /// `Host` sent upstream when the app does not preserve the client's (host and any
    /// non-default port from the URL).
    pub host_header: String,
    /// Share of requests relative to the app's other upstreams.
    pub weight: u32,
}

/// TLS settings towards an app's upstreams.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Verify the upstream certificate and host name (default true).
    pub verify: bool,
    /// Trust these CAs instead of the system store.
    pub ca: Option<Vec<X509>>,
    /// The gateway's client certificate and key, for backends that demand mutual TLS.
    pub client: Option<std::sync::Arc<pingora::utils::tls::CertKey>>,
    /// The same as PEM (certificate chain, PKCS#8 key), for form-fill's own HTTP client.
    pub client_pem: Option<(Vec<u8>, crate::secret::SecretBytes)>,
    /// The oldest TLS version accepted from the backend (the handshake's result is checked
    /// before a request is sent).
    pub min_version: Option<TlsVersion>,
}

/// A TLS protocol version an app may insist on towards its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl TlsVersion {
    /// `"1.2"` or `"1.3"`, as policy files write it.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "1.2" => Some(Self::V1_2),
            "1.3" => Some(Self::V1_3),
            _ => None,
        }
    }

    /// The version OpenSSL reports for a handshake (`"TLSv1.2"`), if it is one of these;
    /// anything older is `None`.
    pub fn negotiated(openssl_name: &str) -> Option<Self> {
        match openssl_name {
            "TLSv1.2" => Some(Self::V1_2),
            "TLSv1.3" => Some(Self::V1_3),
            _ => None,
        }
    }

    /// Whether a handshake that reported `openssl_name` meets this minimum.
    pub fn admits(self, openssl_name: &str) -> bool {
        Self::negotiated(openssl_name).is_some_and(|v| v >= self)
    }
}

/// Timeouts towards upstreams; each app may override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// Wait for each read from the upstream, including the response header.
    pub read: Duration,
    /// Wait for each write to the upstream.
    pub write: Duration,
}

/// Passive health settings of one app (`[health]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Consecutive connect failures that eject an upstream.
    pub eject_after: u32,
    /// How long an ejected upstream is left out.
    pub eject_for: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            eject_after: 3,
            eject_for: Duration::from_secs(10),
        }
    }
}

/// Active health checks of one app (`[health] path = …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveHealth {
    /// Path probed with `GET`.
    pub path: String,
    /// Statuses that mean healthy.
    pub expect_status: Vec<u16>,
    /// Time between probes of one upstream.
    pub interval: Duration,
    /// A probe that takes longer failed.
    pub timeout: Duration,
    /// Failed probes in a row that take an upstream out.
    pub unhealthy_after: u32,
    /// Good probes in a row that bring it back.
    pub healthy_after: u32,
}

/// What a probe did to an upstream's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeVerdict {
    /// No change.
    Unchanged,
    /// Just taken out of the rotation.
    WentDown,
    /// Just brought back.
    CameBack,
}

/// Monotonic milliseconds since the process's first use of this module.
fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One upstream's recent connect record.
#[derive(Debug, Default)]
struct Health {
    failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    /// Out of the rotation by active checks.
    probed_down: std::sync::atomic::AtomicBool,
    /// Probes in a row with the same result as the last (failures when up, successes when
    /// down).
    probe_streak: AtomicU32,
    /// When the next probe is due (monotonic ms).
    next_probe_ms: AtomicU64,
}

/// The upstreams of one app: who is next, and who is left out for now.
#[derive(Debug)]
pub struct UpstreamSet {
    balancer: WeightedRoundRobin,
    health: Vec<Health>,
    settings: PassiveHealth,
}

/// What a connect failure did to an upstream's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Still in the rotation.
    InRotation,
    /// Just ejected, for this long.
    Ejected(Duration),
}

impl UpstreamSet {
    /// Upstreams with these weights, all healthy.
    pub fn new(weights: &[u32], settings: PassiveHealth) -> Self {
        Self {
            balancer: WeightedRoundRobin::new(weights),
            health: weights.iter().map(|_| Health::default()).collect(),
            settings,
        }
    }

    fn is_ejected(&self, i: usize, now: u64) -> bool {
        self.health.get(i).is_some_and(|h| {
            h.ejected_until_ms.load(Ordering::Relaxed) > now
                || h.probed_down.load(Ordering::Relaxed)
        })
    }

    /// Claims upstream `i`'s probe if it is due, scheduling the next one `interval` later
    /// (so one probe runs at a time per upstream, whoever asks).
    pub fn claim_probe(&self, i: usize, interval: Duration) -> bool {
        let Some(h) = self.health.get(i) else {
            return false;
        };
        let now = now_ms();
        let due = h.next_probe_ms.load(Ordering::Relaxed);
        if due > now {
            return false;
        }
        let next = now.saturating_add(u64::try_from(interval.as_millis()).unwrap_or(u64::MAX));
        h.next_probe_ms
            .compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Upstream `i` takes the standing of upstream `j` of `previous` (a reload).
    pub fn inherit(&self, i: usize, previous: &UpstreamSet, j: usize) {
        let (Some(h), Some(old)) = (self.health.get(i), previous.health.get(j)) else {
            return;
        };
        for (to, from) in [
            (&h.failures, &old.failures),
            (&h.probe_streak, &old.probe_streak),
        ] {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        h.ejected_until_ms.store(
            old.ejected_until_ms.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        h.probed_down
            .store(old.probed_down.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Records a probe of upstream `i`.
    pub fn probed(&self, i: usize, healthy: bool, check: &ActiveHealth) -> ProbeVerdict {
        let Some(h) = self.health.get(i) else {
            return ProbeVerdict::Unchanged;
        };
        let down = h.probed_down.load(Ordering::Relaxed);
        // A result that agrees with the standing resets the streak against it.
        if healthy != down {
            h.probe_streak.store(0, Ordering::Relaxed);
            return ProbeVerdict::Unchanged;
        }
        let streak = h
            .probe_streak
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let needed = if down {
            check.healthy_after
        } else {
            check.unhealthy_after
        };
        if streak < needed {
            return ProbeVerdict::Unchanged;
        }
        h.probe_streak.store(0, Ordering::Relaxed);
        h.probed_down.store(!down, Ordering::Relaxed);
        if down {
            // Back by probes: the passive record starts clean too.
            h.failures.store(0, Ordering::Relaxed);
            h.ejected_until_ms.store(0, Ordering::Relaxed);
            ProbeVerdict::CameBack
        } else {
            ProbeVerdict::WentDown
        }
    }

    /// The next upstream for a request that already tried `tried`: by weight among those in
    /// the rotation; when every untried one is ejected, the untried one whose ejection ends
    /// first (a request is never refused while some upstream might answer); `None` when all
    /// were tried.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let now = now_ms();
        let count = self.health.len();
        for _ in 0..self.balancer.len().max(1) {
            let i = self.balancer.pick();
            if i < count && !tried.contains(&i) && !self.is_ejected(i, now) {
                return Some(i);
            }
        }
        (0..count).filter(|i| !tried.contains(i)).min_by_key(|i| {
            self.health
                .get(*i)
                .map_or(0, |h| h.ejected_until_ms.load(Ordering::Relaxed))
        })
    }

    /// A connection to upstream `i` failed.
    pub fn connect_failed(&self, i: usize) -> Standing {
        let Some(h) = self.health.get(i) else {
            return Standing::InRotation;
        };
        let failures = h.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if failures >= self.settings.eject_after {
            let until = now_ms().saturating_add(
                u64::try_from(self.settings.eject_for.as_millis()).unwrap_or(u64::MAX),
            );
            h.ejected_until_ms.store(until, Ordering::Relaxed);
            return Standing::Ejected(self.settings.eject_for);
        }
        Standing::InRotation
    }

    /// Whether each upstream is in the rotation now (not ejected), in order.
    pub fn in_rotation(&self) -> Vec<bool> {
        let now = now_ms();
        (0..self.health.len())
            .map(|i| !self.is_ejected(i, now))
            .collect()
    }

    /// A connection to upstream `i` succeeded: it is healthy again.
    pub fn connected(&self, i: usize) {
        if let Some(h) = self.health.get(i) {
            // Most requests land here: write only when there is something to reset. (A
            // connection alone does not undo an active check's verdict: probes do.)
            if h.failures.load(Ordering::Relaxed) != 0 {
                h.failures.store(0, Ordering::Relaxed);
                h.ejected_until_ms.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// A precomputed, interleaved order of upstream indices honouring their weights.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl WeightedRoundRobin {
    /// Builds the schedule with nginx's smooth weighted round-robin, so weights 3:1 give
    /// `A A B A` rather than `A A A B`. Weights of 0 are treated as 1.
    pub fn new(weights: &[u32]) -> Self {
        let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w.max(1))).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut schedule = Vec::new();
        for _ in 0..total {
            let mut best = 0;
            let mut best_value = i64::MIN;
            for (i, (cur, w)) in current.iter_mut().zip(&weights).enumerate() {
                *cur += w;
                if *cur > best_value {
                    best = i;
                    best_value = *cur;
                }
            }
            if let Some(chosen) = current.get_mut(best) {
                *chosen -= total;
            }
            schedule.push(best);
        }
        Self {
            schedule,
            next: AtomicUsize::new(0),
        }
    }

    /// Length of one full round of the schedule (the sum of the weights).
    pub fn len(&self) -> usize {
        self.schedule.len()
    }

    /// An empty schedule (no upstreams).
    pub fn is_empty(&self) -> bool {
        self.schedule.is_empty()
    }

    /// The next upstream index (0 when there are none, which config validation prevents).
    pub fn pick(&self) -> usize {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match self.schedule.len() {
            0 => 0,
            len => self.schedule.get(n % len).copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_weights_and_interleaves() {
        let rr = WeightedRoundRobin::new(&[3, 1]);
        let picks: Vec<usize> = (0..8).map(|_| rr.pick()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn a_retry_never_returns_to_an_upstream_it_tried() {
        let set = UpstreamSet::new(&[3, 1], PassiveHealth::default());
        for _ in 0..20 {
            let first = set.pick(&[]).unwrap();
            let second = set.pick(&[first]).unwrap();
            assert_ne!(first, second);
            assert_eq!(set.pick(&[first, second]), None);
        }
    }

    #[test]
    fn consecutive_failures_eject_until_the_cooldown_and_a_success_restores() {
        let set = UpstreamSet::new(
            &[1, 1],
            PassiveHealth {
                eject_after: 2,
                eject_for: Duration::from_millis(80),
            },
        );
        assert_eq!(set.connect_failed(0), Standing::InRotation);
        assert!(matches!(set.connect_failed(0), Standing::Ejected(_)));
        assert!(
            (0..10).all(|_| set.pick(&[]) == Some(1)),
            "ejected upstream picked"
        );
        // Only the ejected one left untried: it is still tried rather than refusing.
        assert_eq!(set.pick(&[1]), Some(0));
        std::thread::sleep(Duration::from_millis(120));
        assert!((0..4).any(|_| set.pick(&[]) == Some(0)), "never came back");
        // Back on probation: one more failure ejects it again; a success clears the record.
        assert!(matches!(set.connect_failed(0), Standing::Ejected(_)));
        set.connected(0);
        assert!((0..4).any(|_| set.pick(&[]) == Some(0)));
    }

    #[test]
    fn probes_take_an_upstream_out_and_bring_it_back_after_their_streaks() {
        let set = UpstreamSet::new(&[1, 1], PassiveHealth::default());
        let check = ActiveHealth {
            path: "/health".into(),
            expect_status: vec![200],
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            unhealthy_after: 2,
            healthy_after: 3,
        };
        assert_eq!(set.probed(0, false, &check), ProbeVerdict::Unchanged);
        // A good probe in between starts the count again.
        assert_eq!(set.probed(0, true, &check), ProbeVerdict::Unchanged);
        assert_eq!(set.probed(0, false, &check), ProbeVerdict::Unchanged);
        assert_eq!(set.probed(0, false, &check), ProbeVerdict::WentDown);
        assert_eq!(set.in_rotation(), vec![false, true]);
        assert!((0..10).all(|_| set.pick(&[]) == Some(1)));
        // A connection that happens to succeed does not overrule the probes.
        set.connected(0);
        assert_eq!(set.in_rotation(), vec![false, true]);
        assert_eq!(set.probed(0, true, &check), ProbeVerdict::Unchanged);
        assert_eq!(set.probed(0, true, &check), ProbeVerdict::Unchanged);
        assert_eq!(set.probed(0, true, &check), ProbeVerdict::CameBack);
        assert_eq!(set.in_rotation(), vec![true, true]);
    }

    #[test]
    fn a_reload_keeps_what_the_checks_learnt() {
        let check = ActiveHealth {
            path: "/health".into(),
            expect_status: vec![200],
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            unhealthy_after: 1,
            healthy_after: 1,
        };
        let old = UpstreamSet::new(&[1, 1], PassiveHealth::default());
        assert_eq!(old.probed(1, false, &check), ProbeVerdict::WentDown);
        // The new set lists the dead upstream first now.
        let new = UpstreamSet::new(&[1, 1], PassiveHealth::default());
        new.inherit(0, &old, 1);
        new.inherit(1, &old, 0);
        assert_eq!(new.in_rotation(), vec![false, true]);
    }

    #[test]
    fn a_probe_is_claimed_once_per_interval() {
        let set = UpstreamSet::new(&[1], PassiveHealth::default());
        assert!(set.claim_probe(0, Duration::from_secs(60)));
        assert!(!set.claim_probe(0, Duration::from_secs(60)));
        assert!(!set.claim_probe(7, Duration::from_secs(60)));
    }

    #[test]
    fn equal_weights_alternate() {
        let rr = WeightedRoundRobin::new(&[1, 1, 1]);
        let picks: Vec<usize> = (0..6).map(|_| rr.pick()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }
}
