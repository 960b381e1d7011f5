//! Prometheus metrics on the admin listener: what a sign-in, a refused callback, a decision and
//! a dead upstream do to them; the exposition passes Debian's `promtool check metrics`; a real
//! Prometheus server scrapes the gateway and sees a counter move when a request is made.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use support::browser::Browser;
use support::idp::{IdpClient, TestIdp};
use support::prometheus::{promtool_check, sample, Prometheus};
use support::{echo_backend, free_addr, GatewaySpec, RunningGateway};

const WIKI: &str = "wiki.localhost";
const LEGACY: &str = "legacy.localhost";

fn wiki_policy(upstream: &str) -> String {
    let head = support::policy_head("wiki", WIKI, upstream, Some("corp"));
    format!(
        r#"{head}
[[deny]]
id = "no-admin-yet"
why = "Being rolled out: report who would be refused"
mode = "shadow"
paths = ["/admin/**"]

[[allow]]
id = "staff"
why = "Staff use it daily"
groups = ["staff"]
"#
    )
}

/// The exposition, checked to be the Prometheus text format.
async fn scrape(gw: &RunningGateway) -> String {
    let response = support::http_client()
        .get(format!("http://{}/metrics", gw.admin))
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let http = free_addr();
    let origins = vec![format!("http://{WIKI}:{}", http.port())];
    let client = IdpClient::gateway("portcullis", &origins);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let wiki = echo_backend("wiki").await;
    // Nothing listens here: every attempt is a connect failure.
    let dead = format!("http://{}", free_addr());
    let audit = tempfile::tempdir().unwrap();
    let audit_file = audit.path().join("audit.jsonl");
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp", &client, ""))
        .gateway_toml(&format!("[audit]\nfile = \"{}\"\n", audit_file.display()))
        .policy("wiki.toml", wiki_policy(&wiki.url()))
        .policy(
            "legacy.toml",
            support::open_policy("legacy", &[LEGACY], &[(&dead, 1)], ""),
        )
        .start()
        .await;

    let before = scrape(&gw).await;
    assert!(
        before.contains("portcullis_build_info{version=\""),
        "{before}"
    );

    // alice signs in and uses the wiki, once on a path a shadow rule watches.
    let browser = Browser::new(gw.http, &[WIKI]);
    let trip = browser
        .login(&gw.app_url(WIKI, "/"), "alice", "alice-pw")
        .await;
    assert_eq!(trip.status, 200, "{trip:?}");
    assert_eq!(
        browser
            .get(&gw.app_url(WIKI, "/admin/users"))
            .await
            .status(),
        200
    );
    // A forged callback: refused, and counted as a failed sign-in with its reason.
    let forged = gw
        .get(WIKI, "/.portcullis/oidc/callback?state=forged&code=x")
        .await;
    assert_eq!(forged.status(), 400);
    // Three connect failures in a row eject the dead upstream.
    for _ in 0..3 {
        assert_eq!(gw.get(LEGACY, "/").await.status(), 502);
    }

    let after = scrape(&gw).await;
    let count = |series: &str| sample(&after, series).unwrap_or(0.0);
    assert_eq!(
        count(
            r#"portcullis_logins_total{idp="corp",outcome="success",protocol="oidc",reason="-"}"#
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        count(
            r#"portcullis_logins_total{idp="-",outcome="failure",protocol="oidc",reason="not_bound_to_browser"}"#
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        count(r#"portcullis_decisions_total{app="wiki",outcome="allow",rule="staff"}"#),
        2.0,
        "{after}"
    );
    assert_eq!(
        count(
            r#"portcullis_decisions_total{app="wiki",outcome="shadow_deny",rule="no-admin-yet"}"#
        ),
        1.0,
        "{after}"
    );
    assert!(
        count(r#"portcullis_decisions_total{app="wiki",outcome="login",rule="-"}"#) >= 1.0,
        "the first request had to sign in: {after}"
    );
    assert!(count(r#"portcullis_requests_total{app="wiki",class="2xx"}"#) >= 2.0);
    assert_eq!(
        count(r#"portcullis_requests_total{app="legacy",class="5xx"}"#),
        3.0,
        "{after}"
    );
    assert_eq!(
        count(&format!(
            r#"portcullis_upstream_errors_total{{app="legacy",kind="connect",upstream="{dead}"}}"#
        )),
        3.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            &format!(r#"portcullis_upstream_up{{app="legacy",upstream="{dead}"}}"#)
        ),
        Some(0.0),
        "ejected after three failures: {after}"
    );
    assert_eq!(
        sample(
            &after,
            &format!(
                r#"portcullis_upstream_up{{app="wiki",upstream="{}"}}"#,
                wiki.url()
            )
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        count(&format!(
            r#"portcullis_upstream_response_duration_seconds_count{{app="wiki",upstream="{}"}}"#,
            wiki.url()
        )) >= 2.0,
        "{after}"
    );
    for call in ["discovery", "jwks", "token"] {
        assert!(
            count(&format!(
                r#"portcullis_idp_request_duration_seconds_count{{call="{call}",idp="corp"}}"#
            )) >= 1.0,
            "IdP call {call}: {after}"
        );
    }
    assert_eq!(
        count(r#"portcullis_login_duration_seconds_count{idp="corp",protocol="oidc"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "portcullis_sessions_held"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, r#"portcullis_idp_up{idp="corp",protocol="oidc"}"#),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, r#"portcullis_apps{state="serving"}"#),
        Some(2.0)
    );
    assert!(
        after.contains("portcullis_policy_info{app=\"wiki\",sha256=\""),
        "{after}"
    );
    assert!(after.contains("process_resident_memory_bytes"), "{after}");
    // Bounded labels: no user, no path, no request id ever becomes a series.
    for leak in ["alice", "/admin", "forged", "request_id"] {
        assert!(
            !after.contains(leak),
            "{leak} leaked into metrics:\n{after}"
        );
    }

    let (ok, verdict) = promtool_check(&after);
    assert!(ok && verdict.trim().is_empty(), "promtool: {verdict}");
    // promtool can fail: a counter without its help text is refused.
    let (bad, _) = promtool_check("# TYPE broken counter\nbroken 1\n");
    assert!(!bad, "promtool accepted a malformed exposition");

    // The same events in the audit file follow the published schema.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&audit_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for event in ["login_success", "login_failure", "access"] {
        assert!(
            records.iter().any(|r| r["event"] == event),
            "{event}: {records:?}"
        );
    }
    let found = support::audit_schema::problems(&records);
    assert!(found.is_empty(), "{found:#?}");

    // A real Prometheus server scrapes the admin listener and sees the counter move.
    let prometheus = Prometheus::scraping(gw.admin).await;
    let series = r#"portcullis_requests_total{app="wiki",class="2xx"}"#;
    let seen = prometheus.wait_for(series, |v| v >= 2.0).await;
    for _ in 0..3 {
        assert_eq!(browser.get(&gw.app_url(WIKI, "/")).await.status(), 200);
    }
    let moved = prometheus.wait_for(series, |v| v >= seen + 3.0).await;
    assert!(moved >= seen + 3.0);
    let up = prometheus
        .wait_for(r#"up{job="portcullis"}"#, |v| v == 1.0)
        .await;
    assert_eq!(up, 1.0);
}

#[test]
fn the_readme_alert_rules_pass_promtool_and_name_only_real_metrics() {
    let readme = support::read_repo_file("README.md");
    let rules = readme
        .split("Example alert rules")
        .nth(1)
        .and_then(|rest| rest.split("```yaml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README has the example alert rules");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let source = support::read_repo_file("src/metrics.rs");
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("portcullis_") {
            assert!(
                source.contains(&format!("\"{word}\"")),
                "the README's rules name {word}, which src/metrics.rs does not define"
            );
        }
    }
}
