//! Prometheus metrics, served at `/metrics` on the admin listener.
//!
//! One process-wide registry (the `prometheus` crate). Callers report what happened through
//! the functions here, never through metric handles: this module alone owns the names and
//! label sets, and every label value comes from configuration (app, rule, IdP, upstream ids)
//! or from a fixed list (outcomes, reasons, call kinds) — never a user, path or request id.
//! State that already lives elsewhere (sessions held, upstream health, policy hashes) is read
//! when the endpoint is scraped (the admin listener hands it over as a [`Snapshot`]) rather
//! than mirrored on every change.
//!
//! The exposition is the Prometheus text format 0.0.4, which every Prometheus server and
//! `promtool check metrics` read.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

/// Latency buckets for calls that should take milliseconds (store, IdP back channel).
const FAST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
];
/// Buckets for a person signing in at the IdP (seconds to minutes).
const LOGIN_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];
/// Buckets for requests and upstream answers.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Written where a label has no value (a request no app claimed, a login with no IdP known).
const NONE: &str = "-";

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    decisions: IntCounterVec,
    logins: IntCounterVec,
    login_seconds: HistogramVec,
    idp_call_seconds: HistogramVec,
    idp_call_errors: IntCounterVec,
    upstream_seconds: HistogramVec,
    upstream_errors: IntCounterVec,
    upstream_up: IntGaugeVec,
    sessions_held: IntGauge,
    pending_logins: IntGauge,
    store_seconds: HistogramVec,
    store_errors: IntCounterVec,
    store_cache: IntCounterVec,
    reloads: IntCounterVec,
    audit_queue: IntGaugeVec,
    audit_dropped: IntCounterVec,
    bearer: IntCounterVec,
    signals: IntCounterVec,
    refreshes: IntCounterVec,
    throttled: IntCounterVec,
    directory_lookups: HistogramVec,
    kerberos_tickets: HistogramVec,
    build_info: IntGaugeVec,
    policy_info: IntGaugeVec,
    apps: IntGaugeVec,
    idp_up: IntGaugeVec,
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    let metric = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let single = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let metric = IntGauge::new(name, help)?;
            r.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let metrics = Self {
            requests: counter(&r, "portcullis_requests_total", "Requests answered, by app and status class (aborted: no status was sent).", &["app", "class"])?,
            request_seconds: histogram(&r, "portcullis_request_duration_seconds", "Time from a request's head to the end of its answer, by app.", &["app"], REQUEST_BUCKETS)?,
            decisions: counter(&r, "portcullis_decisions_total", "Access decisions by app, deciding rule and outcome; shadow rules that would have decided otherwise count as shadow_allow / shadow_deny / shadow_require.", &["app", "rule", "outcome"])?,
            logins: counter(&r, "portcullis_logins_total", "Finished sign-ins by IdP, protocol, outcome (success, step_up, failure) and refusal reason.", &["idp", "protocol", "outcome", "reason"])?,
            login_seconds: histogram(&r, "portcullis_login_duration_seconds", "Time from the redirect to the IdP until its answer came back, by IdP and protocol.", &["idp", "protocol"], LOGIN_BUCKETS)?,
            idp_call_seconds: histogram(&r, "portcullis_idp_request_duration_seconds", "Back-channel calls to an IdP (discovery, jwks, token, userinfo, introspection, metadata), by IdP and call.", &["idp", "call"], FAST_BUCKETS)?,
            idp_call_errors: counter(&r, "portcullis_idp_request_errors_total", "Back-channel calls to an IdP that failed to get an answer, by IdP and call.", &["idp", "call"])?,
            upstream_seconds: histogram(&r, "portcullis_upstream_response_duration_seconds", "Time from choosing an upstream to its response head, by app and upstream.", &["app", "upstream"], REQUEST_BUCKETS)?,
            upstream_errors: counter(&r, "portcullis_upstream_errors_total", "Failed upstream attempts by app, upstream and kind (connect, timeout, other).", &["app", "upstream", "kind"])?,
            upstream_up: gauge(&r, "portcullis_upstream_up", "1 while an upstream is in the rotation, 0 while passive or active health checks keep it out.", &["app", "upstream"])?,
            sessions_held: single("portcullis_sessions_held", "Sessions held by this node (all of them with the embedded store; the L1 copies with Redis).")?,
            pending_logins: single("portcullis_pending_logins", "Sign-ins in progress and SAML logouts awaiting their answer (embedded store; absent with Redis).")?,
            store_seconds: histogram(&r, "portcullis_session_store_duration_seconds", "Calls to a shared session store, by store.", &["store"], FAST_BUCKETS)?,
            store_errors: counter(&r, "portcullis_session_store_errors_total", "Calls to a shared session store that failed or timed out, by store.", &["store"])?,
            store_cache: counter(&r, "portcullis_session_store_l1_total", "Session reads by whether this node's L1 held the session (hit) or the store was asked (miss).", &["result"])?,
            reloads: counter(&r, "portcullis_reloads_total", "Configuration reloads by outcome (ok, failed).", &["outcome"])?,
            audit_queue: gauge(&r, "portcullis_audit_queue_depth", "Audit records queued for a sink and not yet written.", &["sink"])?,
            audit_dropped: counter(&r, "portcullis_audit_dropped_total", "Audit records a sink could not take (its queue was full or it had stopped).", &["sink"])?,
            bearer: counter(&r, "portcullis_bearer_tokens_total", "API requests with a bearer token, by app and outcome (accepted or the RFC 6750 error).", &["app", "outcome"])?,
            signals: counter(&r, "portcullis_session_signals_total", "Messages that end sessions (back-channel logout, Universal Logout, Shared Signals), by kind and outcome.", &["kind", "outcome"])?,
            refreshes: counter(&r, "portcullis_refreshes_total", "Token refreshes by IdP and outcome (ok, refused, failed).", &["idp", "outcome"])?,
            throttled: counter(&r, "portcullis_logins_throttled_total", "Sign-in requests refused by a login rate limit, by limit.", &["limit"])?,
            directory_lookups: histogram(&r, "portcullis_directory_lookup_duration_seconds", "Lookups of a signing-in user in an LDAP / Active Directory server, by directory and outcome (ok, not_found, unavailable).", &["directory", "outcome"], FAST_BUCKETS)?,
            kerberos_tickets: histogram(&r, "portcullis_kerberos_ticket_duration_seconds", "Kerberos tickets obtained for signed-in users by constrained delegation, by app and outcome (ok, no_principal, unknown_user, delegation_refused, kdc_unavailable, ...).", &["app", "outcome"], FAST_BUCKETS)?,
            build_info: gauge(&r, "portcullis_build_info", "Always 1; the running version.", &["version"])?,
            policy_info: gauge(&r, "portcullis_policy_info", "Always 1 per serving app; the SHA-256 of the policy file it runs.", &["app", "sha256"])?,
            apps: gauge(&r, "portcullis_apps", "Apps by state: serving, or unavailable (policy errors).", &["state"])?,
            idp_up: gauge(&r, "portcullis_idp_up", "1 while an IdP is loaded and reachable (sign-in works), else 0.", &["idp", "protocol"])?,
            registry: r,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(metrics)
    }
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| match Metrics::new() {
    Ok(m) => Some(m),
    Err(e) => {
        // Not through tracing: the audit layer reports here, and may be what got us here.
        eprintln!("portcullis: metrics could not be set up ({e}); /metrics stays empty");
        None
    }
});

fn with(report: impl FnOnce(&Metrics)) {
    if let Some(m) = METRICS.as_ref() {
        report(m);
    }
}

/// A request was answered with `status` (0: the client went away first).
pub fn request_finished(app: Option<&str>, status: u16, elapsed: Duration) {
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "aborted",
    };
    let app = app.unwrap_or(NONE);
    with(|m| {
        m.requests.with_label_values(&[app, class]).inc();
        m.request_seconds
            .with_label_values(&[app])
            .observe(elapsed.as_secs_f64());
    });
}

/// The rules decided (`outcome` is the audit record's decision name).
pub fn decision(app: &str, rule: Option<&str>, outcome: &str) {
    with(|m| {
        m.decisions
            .with_label_values(&[app, rule.unwrap_or(NONE), outcome])
            .inc();
    });
}

/// A shadow rule would have decided `would` (allow, deny or require).
pub fn shadow(app: &str, rule: &str, would: &str) {
    let outcome = match would {
        "allow" => "shadow_allow",
        "deny" => "shadow_deny",
        _ => "shadow_require",
    };
    with(|m| m.decisions.with_label_values(&[app, rule, outcome]).inc());
}

/// How a sign-in ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// A session began.
    Success,
    /// A signed-in user authenticated more strongly.
    StepUp,
    /// Refused, for the reason given.
    Failure,
}

/// A sign-in finished (`reason` is a fixed code, `-` on success).
pub fn login(idp: Option<&str>, protocol: &str, outcome: LoginOutcome, reason: &str) {
    let outcome = match outcome {
        LoginOutcome::Success => "success",
        LoginOutcome::StepUp => "step_up",
        LoginOutcome::Failure => "failure",
    };
    with(|m| {
        m.logins
            .with_label_values(&[idp.unwrap_or(NONE), protocol, outcome, reason])
            .inc();
    });
}

/// The IdP's answer to a sign-in came back `elapsed` after the redirect.
pub fn login_round_trip(idp: &str, protocol: &str, elapsed: Duration) {
    with(|m| {
        m.login_seconds
            .with_label_values(&[idp, protocol])
            .observe(elapsed.as_secs_f64());
    });
}

/// One directory lookup at sign-in and how it ended (`ok`, `not_found`, `unavailable`).
pub fn directory_lookup(directory: &str, outcome: &str, elapsed: Duration) {
    with(|m| {
        m.directory_lookups
            .with_label_values(&[directory, outcome])
            .observe(elapsed.as_secs_f64());
    });
}

/// One Kerberos ticket asked for on a user's behalf.
pub fn kerberos_ticket(app: &str, outcome: &str, elapsed: Duration) {
    with(|m| {
        m.kerberos_tickets
            .with_label_values(&[app, outcome])
            .observe(elapsed.as_secs_f64());
    });
}

/// One back-channel call to an IdP; `answered` is false when no HTTP answer came.
pub fn idp_call(idp: &str, call: &str, elapsed: Duration, answered: bool) {
    with(|m| {
        m.idp_call_seconds
            .with_label_values(&[idp, call])
            .observe(elapsed.as_secs_f64());
        if !answered {
            m.idp_call_errors.with_label_values(&[idp, call]).inc();
        }
    });
}

/// An upstream's response head arrived.
pub fn upstream_answered(app: &str, upstream: &str, elapsed: Duration) {
    with(|m| {
        m.upstream_seconds
            .with_label_values(&[app, upstream])
            .observe(elapsed.as_secs_f64());
    });
}

/// An attempt at an upstream failed (`kind`: connect, timeout or other).
pub fn upstream_failed(app: &str, upstream: &str, kind: &str) {
    with(|m| {
        m.upstream_errors
            .with_label_values(&[app, upstream, kind])
            .inc();
    });
}

/// One call to a shared session store.
pub fn store_call(store: &str, elapsed: Duration, ok: bool) {
    with(|m| {
        m.store_seconds
            .with_label_values(&[store])
            .observe(elapsed.as_secs_f64());
        if !ok {
            m.store_errors.with_label_values(&[store]).inc();
        }
    });
}

/// A session read was answered by this node's L1 (`hit`) or went to the store.
pub fn store_l1(hit: bool) {
    with(|m| {
        m.store_cache
            .with_label_values(&[if hit { "hit" } else { "miss" }])
            .inc();
    });
}

/// A configuration reload finished.
pub fn reload(ok: bool) {
    with(|m| {
        m.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    });
}

/// Audit records queued for a sink (positive) or written by it (negative).
pub fn audit_queue(sink: &str, change: i64) {
    with(|m| m.audit_queue.with_label_values(&[sink]).add(change));
}

/// A sink dropped `count` audit records.
pub fn audit_dropped(sink: &str, count: u64) {
    with(|m| m.audit_dropped.with_label_values(&[sink]).inc_by(count));
}

/// An API request's bearer token was accepted (`accepted`) or refused (its RFC 6750 code).
pub fn bearer(app: &str, outcome: &str) {
    with(|m| m.bearer.with_label_values(&[app, outcome]).inc());
}

/// A session-ending message (`kind`: backchannel_logout, universal_logout, shared_signals)
/// was accepted or refused.
pub fn signal(kind: &str, accepted: bool) {
    let outcome = if accepted { "accepted" } else { "refused" };
    with(|m| m.signals.with_label_values(&[kind, outcome]).inc());
}

/// A token refresh finished (`outcome`: ok, refused, failed).
pub fn refresh(idp: &str, outcome: &str) {
    with(|m| m.refreshes.with_label_values(&[idp, outcome]).inc());
}

/// Sign-in requests were refused by a login rate limit.
pub fn throttled(limit: &str, count: u64) {
    with(|m| m.throttled.with_label_values(&[limit]).inc_by(count));
}

/// State that lives elsewhere, read when `/metrics` is scraped (see `admin`).
#[derive(Debug, Default)]
pub struct Snapshot<'a> {
    /// Serving apps.
    pub apps: Vec<AppState<'a>>,
    /// Apps disabled by policy errors.
    pub unavailable_apps: usize,
    /// Each IdP: name, protocol, and whether sign-in works now.
    pub idps: Vec<(&'a str, &'a str, bool)>,
    /// Sessions this node holds.
    pub sessions_held: u64,
    /// One-time records held (embedded store only).
    pub pending_logins: Option<u64>,
}

/// One serving app in a [`Snapshot`].
#[derive(Debug)]
pub struct AppState<'a> {
    /// Its id.
    pub id: &'a str,
    /// SHA-256 of its policy file.
    pub policy_sha256: &'a str,
    /// Each upstream's URL and whether it is in the rotation.
    pub upstreams: Vec<(&'a str, bool)>,
}

fn observe(m: &Metrics, now: &Snapshot<'_>) {
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    m.policy_info.reset();
    m.upstream_up.reset();
    for app in &now.apps {
        m.policy_info
            .with_label_values(&[app.id, app.policy_sha256])
            .set(1);
        for (upstream, up) in &app.upstreams {
            m.upstream_up
                .with_label_values(&[app.id, upstream])
                .set(i64::from(*up));
        }
    }
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    m.apps
        .with_label_values(&["serving"])
        .set(count(now.apps.len()));
    m.apps
        .with_label_values(&["unavailable"])
        .set(count(now.unavailable_apps));
    m.idp_up.reset();
    for (name, protocol, up) in &now.idps {
        m.idp_up
            .with_label_values(&[name, protocol])
            .set(i64::from(*up));
    }
    m.sessions_held.set(gauge(now.sessions_held));
    if let Some(pending) = now.pending_logins {
        m.pending_logins.set(gauge(pending));
    }
}

/// The exposition for a scrape: every metric, with `now`'s state.
pub fn render(now: &Snapshot<'_>) -> String {
    let Some(m) = METRICS.as_ref() else {
        return String::new();
    };
    observe(m, now);
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        tracing::warn!(error = %e, "metrics could not be encoded");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Totals since this process started, for the admin console's summary.
#[derive(Debug, Default)]
pub struct Summary {
    /// Requests by status class.
    pub requests: BTreeMap<String, u64>,
    /// Access decisions by outcome.
    pub decisions: BTreeMap<String, u64>,
    /// Finished sign-ins by outcome.
    pub logins: BTreeMap<String, u64>,
    /// Failed upstream attempts.
    pub upstream_errors: u64,
    /// Failed back-channel calls to IdPs.
    pub idp_errors: u64,
    /// Failed session store calls.
    pub store_errors: u64,
    /// Audit records a sink could not take.
    pub audit_dropped: u64,
}

/// The counters summed over their other labels.
pub fn summary() -> Summary {
    let mut out = Summary::default();
    let Some(m) = METRICS.as_ref() else {
        return out;
    };
    for family in m.registry.gather() {
        for metric in family.get_metric() {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            // Counters hold whole numbers; the cast only drops a fraction that is never there.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let value = metric.get_counter().get_value() as u64;
            let add = |map: &mut BTreeMap<String, u64>, key: String| {
                *map.entry(key).or_default() += value;
            };
            match family.name() {
                "portcullis_requests_total" => add(&mut out.requests, label("class")),
                "portcullis_decisions_total" => add(&mut out.decisions, label("outcome")),
                "portcullis_logins_total" => add(&mut out.logins, label("outcome")),
                "portcullis_upstream_errors_total" => out.upstream_errors += value,
                "portcullis_idp_request_errors_total" => out.idp_errors += value,
                "portcullis_session_store_errors_total" => out.store_errors += value,
                "portcullis_audit_dropped_total" => out.audit_dropped += value,
                _ => {}
            }
        }
    }
    out
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_labels_stay_bounded() {
        let m = Metrics::new().expect("metric names are valid and unique");
        m.requests.with_label_values(&["app", "2xx"]).inc();
        let families = m.registry.gather();
        let names: Vec<_> = families.iter().map(|f| f.name().to_string()).collect();
        assert!(names.contains(&"portcullis_requests_total".to_string()));
        assert!(names.contains(&"portcullis_build_info".to_string()));
        for family in &families {
            for metric in family.get_metric() {
                for label in metric.get_label() {
                    assert!(
                        !["user", "path", "request_id", "email", "subject"].contains(&label.name()),
                        "{} has an unbounded label {}",
                        family.name(),
                        label.name()
                    );
                }
            }
        }
    }
}
