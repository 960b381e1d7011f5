//! Attributes and groups from LDAP / Active Directory: a real OpenLDAP server (Debian's
//! `slapd`, seeded with users and nested groups by `support::ldap`), the real OpenID
//! Provider for sign-in, echo backends. What the directory says reaches the app as headers
//! and decides rules; when the directory is down, slow or cannot tell who the user is, apps
//! that need it refuse with a clear page (and a metric) and apps that do not serve on.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};
use support::browser::{Browser, Trip};
use support::idp::{IdpClient, TestIdp};
use support::ldap::TestLdap;
use support::{echo_backend, free_addr, header_values, Backend, GatewaySpec, RunningGateway};

const PAYROLL: &str = "payroll.localhost";
const WIKI: &str = "wiki.localhost";

fn payroll_policy(upstream: &str) -> String {
    format!(
        "{}\n[identity.headers]\n\"X-Remote-User\" = \"email\"\n\
         \"X-Employee-Number\" = {{ directory = \"corp\", attribute = \"employeeNumber\" }}\n\
         \"X-Directory-Groups\" = {{ directory = \"corp\", attribute = \"groups\", join = \";\" }}\n\
         \"X-Group-Count\" = {{ directory = \"corp\", attribute = \"groups\", count = true }}\n\n\
         [[allow]]\nid = \"staff\"\nwhy = \"staff\"\ngroups = [\"staff\"]\n\n\
         [[require]]\nid = \"approvers\"\nwhy = \"only payroll approvers approve\"\npaths = [\"/approve/**\"]\n\
         claims = {{ \"corp:groups\" = [\"payroll-approvers\"] }}\n",
        support::policy_head("payroll", PAYROLL, upstream, Some("corp"))
    )
}

fn wiki_policy(upstream: &str) -> String {
    format!(
        "{}\n[directory]\non_failure = \"continue\"\n\n[identity.headers]\n\"X-Remote-User\" = \"email\"\n\
         \"X-Employee-Number\" = {{ directory = \"corp\", attribute = \"employeeNumber\" }}\n\n\
         [[allow]]\nid = \"everyone\"\nwhy = \"everyone signed in\"\nemail_domain = [\"corp.example\", \"contractors.corp.example\"]\n",
        support::policy_head("wiki", WIKI, upstream, Some("corp"))
    )
}

struct Fixture {
    _idp: TestIdp,
    gw: RunningGateway,
    _payroll: Backend,
    _wiki: Backend,
}

async fn fixture(directory_url: Option<&str>, ldap: &TestLdap, extra: &str) -> Fixture {
    let http = free_addr();
    let origins: Vec<String> = [PAYROLL, WIKI]
        .iter()
        .map(|h| format!("http://{h}:{}", http.port()))
        .collect();
    let client = IdpClient::gateway("portcullis", &origins);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let payroll = echo_backend("payroll").await;
    let wiki = echo_backend("wiki").await;
    let mut directory = ldap.gateway_toml("corp", &["corp"], extra);
    if let Some(url) = directory_url {
        directory = directory.replace(&ldap.url(), url);
    }
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp", &client, ""))
        .gateway_toml(&directory)
        .policy("payroll.toml", payroll_policy(&payroll.url()))
        .policy("wiki.toml", wiki_policy(&wiki.url()))
        .start()
        .await;
    Fixture {
        _idp: idp,
        gw,
        _payroll: payroll,
        _wiki: wiki,
    }
}

impl Fixture {
    async fn sign_in(&self, host: &str, path: &str, user: &str) -> (Browser, Trip) {
        let browser = Browser::new(self.gw.http, &[PAYROLL, WIKI]);
        let trip = browser
            .login(&self.gw.app_url(host, path), user, &format!("{user}-pw"))
            .await;
        (browser, trip)
    }
}

fn echoed(trip: &Trip) -> serde_json::Value {
    serde_json::from_str(&trip.body).unwrap_or_else(|e| panic!("not the echo ({e}): {trip:?}"))
}

#[tokio::test]
async fn attributes_and_nested_groups_from_openldap_reach_the_app_and_decide_its_rules() {
    let ldap = TestLdap::start().await;
    let fx = fixture(None, &ldap, "").await;

    let (alice, trip) = fx.sign_in(PAYROLL, "/approve/run-12", "alice").await;
    assert_eq!(trip.status, 200, "{trip:?}");
    let echo = echoed(&trip);
    assert_eq!(header_values(&echo, "x-employee-number"), ["1001"]);
    // Directly in finance; payroll-approvers holds finance; all-staff holds payroll-approvers.
    assert_eq!(
        header_values(&echo, "x-directory-groups"),
        ["finance;payroll-approvers;all-staff"]
    );
    assert_eq!(header_values(&echo, "x-group-count"), ["3"]);
    // The same session serves on: the lookup happened once, at sign-in.
    let again = alice.get(&fx.gw.app_url(PAYROLL, "/approve/run-13")).await;
    assert_eq!(again.status(), 200);

    // bob is staff but no approver (helpdesk, all-staff): the directory rule refuses him.
    let (bob, trip) = fx.sign_in(PAYROLL, "/", "bob").await;
    assert_eq!(trip.status, 200, "{trip:?}");
    let echo = echoed(&trip);
    assert_eq!(header_values(&echo, "x-employee-number"), ["1002"]);
    assert_eq!(
        header_values(&echo, "x-directory-groups"),
        ["helpdesk;all-staff"]
    );
    let refused = bob.get(&fx.gw.app_url(PAYROLL, "/approve/run-12")).await;
    assert_eq!(refused.status(), 403);

    // A client cannot send the directory's headers itself.
    let spoofed = bob
        .get_with(
            &fx.gw.app_url(PAYROLL, "/"),
            &[
                ("X-Employee-Number", "1001"),
                ("X-Directory-Groups", "payroll-approvers"),
            ],
        )
        .await;
    let echo: serde_json::Value = spoofed.json().await.unwrap();
    assert_eq!(header_values(&echo, "x-employee-number"), ["1002"]);
    assert_eq!(
        header_values(&echo, "x-directory-groups"),
        ["helpdesk;all-staff"]
    );

    let metrics = support::prometheus::scrape(fx.gw.admin).await;
    assert!(
        support::prometheus::sample(
            &metrics,
            "portcullis_directory_lookup_duration_seconds_count{directory=\"corp\",outcome=\"ok\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_directory_that_is_down_or_cannot_tell_who_the_user_is_never_gives_a_wrong_identity() {
    let ldap = TestLdap::start().await;
    let fx = fixture(None, &ldap, "timeout = \"2s\"\n").await;

    // carol has two entries: which one is her cannot be told, so neither is used.
    let (_, trip) = fx.sign_in(PAYROLL, "/", "carol").await;
    assert_eq!(trip.status, 503, "{trip:?}");
    assert!(
        trip.body
            .contains("could not be read from the company directory"),
        "{}",
        trip.body
    );
    assert!(fx
        .gw
        .wait_for_log("directory lookup failed")
        .await
        .contains("2 directory entries match this user"));

    // The directory goes down. Where the app needs it: a clear page, not a pass. Where it does
    // not (`on_failure = "continue"`): served, without the attributes.
    ldap.stop();
    let started = Instant::now();
    let (_, trip) = fx.sign_in(PAYROLL, "/", "alice").await;
    assert_eq!(trip.status, 503, "{trip:?}");
    assert!(
        trip.body.contains("Your directory details are missing"),
        "{}",
        trip.body
    );
    assert!(
        trip.body.contains("alice@corp.example"),
        "names who is signed in: {}",
        trip.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "sign-in hung on the directory"
    );
    // Sessions are per host: signing in at the wiki looks her up again, and fails again.
    let (_, trip) = fx.sign_in(WIKI, "/", "alice").await;
    assert_eq!(trip.status, 200, "{trip:?}");
    let echo = echoed(&trip);
    assert_eq!(
        header_values(&echo, "x-remote-user"),
        ["alice@corp.example"]
    );
    assert!(
        header_values(&echo, "x-employee-number").is_empty(),
        "{echo}"
    );
    let metrics = support::prometheus::scrape(fx.gw.admin).await;
    assert!(
        support::prometheus::sample(
            &metrics,
            "portcullis_directory_lookup_duration_seconds_count{directory=\"corp\",outcome=\"unavailable\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );

    // Back up: the next sign-in reads it again.
    ldap.restart().await;
    let (_, trip) = fx.sign_in(PAYROLL, "/", "alice").await;
    assert_eq!(trip.status, 200, "{trip:?}");
    assert_eq!(header_values(&echoed(&trip), "x-employee-number"), ["1001"]);
}

#[tokio::test]
async fn a_directory_that_accepts_but_never_answers_costs_one_timeout_not_a_hang() {
    let ldap = TestLdap::start().await;
    let hole = support::blackhole().await;
    let url = format!("ldap://{}", hole.addr);
    let fx = fixture(Some(&url), &ldap, "timeout = \"1s\"\n").await;
    let started = Instant::now();
    let (_, trip) = fx.sign_in(PAYROLL, "/", "alice").await;
    assert_eq!(trip.status, 503, "{trip:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let logs = fx.gw.wait_for_log("directory lookup failed").await;
    // One message whichever timer fires first (ldap3's per-operation one or the lookup's).
    assert!(logs.contains("error=no answer within 1s"), "{logs}");
}

/// `portcullis check -c config`: whether it passed, and everything it printed.
fn check(config: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(support::gateway_binary())
        .args(["check", "-c"])
        .arg(config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn portcullis_check_names_directory_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("secret"), "s\n").unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        "[listen]\nhttp = \"127.0.0.1:1\"\n\
         [idp.corp]\nkind = \"oidc\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\nclient_secret_file = \"secret\"\n\
         [directory.corp]\nurl = \"http://ldap.example\"\nidps = [\"okta\"]\nbase_dn = \"dc=x\"\nuser_filter = \"mail=x\"\n",
    )
    .unwrap();
    let (passed, text) = check(&config);
    assert!(!passed, "{text}");
    for needle in [
        "must be ldap://host[:port] or ldaps://host[:port]",
        "corp.url",
        "`okta` is not an [idp.*] of this gateway",
        "user_filter must be an LDAP filter in parentheses",
        "portcullis.toml:",
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }

    // A policy that reads an attribute the directory does not fetch is named with its line,
    // and only that app is off.
    std::fs::write(
        &config,
        "[listen]\nhttp = \"127.0.0.1:1\"\n\
         [idp.corp]\nkind = \"oidc\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\nclient_secret_file = \"secret\"\n\
         [directory.corp]\nurl = \"ldap://ldap.example\"\nidps = [\"corp\"]\nbase_dn = \"dc=x\"\nuser_filter = \"(mail={email})\"\nattributes = [\"employeeNumber\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policies/payroll.toml"),
        format!(
            "{}[identity.headers]\n\"X-Salary\" = {{ directory = \"corp\", attribute = \"salary\" }}\n\
             \"X-Groups\" = {{ directory = \"other\", attribute = \"employeeNumber\" }}\n\
             [[allow]]\nid = \"s\"\nwhy = \"w\"\nclaims = {{ \"corp:groups\" = [\"x\"] }}\n",
            support::policy_head("payroll", PAYROLL, "http://127.0.0.1:9", Some("corp"))
        ),
    )
    .unwrap();
    let (passed, text) = check(&config);
    assert!(!passed, "{text}");
    for needle in [
        "payroll.toml:",
        "`salary` is not read from directory `corp`",
        "directory `other` is not where this app's IdP looks users up",
        "claim `corp:groups` is not kept in the session",
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }
}
