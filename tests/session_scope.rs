//! Where a session counts: only on the host its cookie was issued for and only at apps that
//! sign in with the IdP that proved it; apps sharing a host and an IdP share it, each with its
//! own limits and rules; and one logout ends every session of that sign-in. Two real
//! OpenID Providers (a corporate one and a partner's, which can assert any email it likes),
//! real echo backends and cookies carried by hand where a browser would never carry them.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;
use support::browser::Browser;
use support::idp::{IdpClient, TestIdp};
use support::{echo_backend, free_addr, header_values, Backend, GatewaySpec, RunningGateway};

const WIKI: &str = "wiki.localhost";
const TIMESHEET: &str = "timesheet.localhost";
const PARTNER: &str = "partner.localhost";
const INTRANET: &str = "intranet.localhost";
const HOSTS: &[&str] = &[WIKI, TIMESHEET, PARTNER, INTRANET];

struct Fixture {
    _corp: TestIdp,
    _partner: TestIdp,
    gw: RunningGateway,
    wiki: Backend,
    timesheet: Backend,
    _partner_app: Backend,
    shared: Backend,
}

fn policy(app: &str, host: &str, prefix: &str, idp: &str, upstream: &str, extra: &str) -> String {
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("path_prefix = \"{prefix}\"\n")
    };
    let head = support::policy_head(app, host, upstream, Some(idp));
    format!(
        "{head}{prefix}{extra}\n\
         [identity.headers]\n\"X-Remote-User\" = \"email\"\n\"X-Remote-Idp\" = \"idp\"\n\n\
         [[allow]]\nid = \"staff\"\nwhy = \"staff\"\ngroups = [\"staff\"]\n"
    )
}

async fn fixture() -> Fixture {
    let http = free_addr();
    let origins: Vec<String> = HOSTS
        .iter()
        .map(|h| format!("http://{h}:{}", http.port()))
        .collect();
    let client = IdpClient::gateway("portcullis", &origins);
    let corp = TestIdp::start(std::slice::from_ref(&client)).await;
    // The partner's IdP knows the same people: nothing stops it asserting a corporate email.
    let partner = TestIdp::start(std::slice::from_ref(&client)).await;
    let wiki = echo_backend("wiki").await;
    let timesheet = echo_backend("timesheet").await;
    let partner_app = echo_backend("partner-app").await;
    let shared = echo_backend("intranet").await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&corp.gateway_toml("corp", &client, ""))
        .gateway_toml(&partner.gateway_toml("partner", &client, ""))
        .policy("wiki.toml", policy("wiki", WIKI, "", "corp", &wiki.url(), ""))
        .policy(
            "timesheet.toml",
            policy("timesheet", TIMESHEET, "", "corp", &timesheet.url(), ""),
        )
        .policy(
            "partner.toml",
            policy("partner", PARTNER, "", "partner", &partner_app.url(), ""),
        )
        .policy(
            "a.toml",
            policy("intranet-a", INTRANET, "/a", "corp", &shared.url(), ""),
        )
        .policy(
            "b.toml",
            policy("intranet-b", INTRANET, "/b", "partner", &shared.url(), ""),
        )
        .policy(
            "c.toml",
            policy(
                "intranet-c",
                INTRANET,
                "/c",
                "corp",
                &shared.url(),
                "[session]\nidle = \"1s\"\nabsolute = \"8h\"\n\n[[require]]\nid = \"finance-only\"\nwhy = \"pay data\"\ngroups = [\"finance\"]\n",
            ),
        )
        .start()
        .await;
    Fixture {
        _corp: corp,
        _partner: partner,
        gw,
        wiki,
        timesheet,
        _partner_app: partner_app,
        shared,
    }
}

impl Fixture {
    fn url(&self, host: &str, path: &str) -> String {
        self.gw.app_url(host, path)
    }
    fn browser(&self) -> Browser {
        Browser::new(self.gw.http, HOSTS)
    }
    async fn signed_in(&self, host: &str, path: &str, user: &str) -> Browser {
        let browser = self.browser();
        let trip = browser
            .login(&self.url(host, path), user, &format!("{user}-pw"))
            .await;
        assert_eq!(trip.status, 200, "{user} could not sign in: {trip:?}");
        browser
    }
    /// The `name=value` of the session cookie `browser` holds for `host`.
    fn session_cookie(&self, browser: &Browser, host: &str) -> String {
        browser
            .cookies_for(&self.url(host, "/"))
            .split("; ")
            .find(|c| c.starts_with("portcullis_session="))
            .unwrap_or_else(|| panic!("no session cookie for {host}"))
            .to_string()
    }
    /// A page navigation to `host` carrying exactly `cookie` (as an attacker would send it).
    async fn get_with_cookie(&self, host: &str, path: &str, cookie: &str) -> reqwest::Response {
        self.gw
            .client(HOSTS)
            .get(self.url(host, path))
            .header("accept", "text/html")
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_session_from_another_idp_opens_no_app_of_this_one() {
    let f = fixture().await;
    // alice signs in through the partner's IdP, which vouches for alice@corp.example.
    let browser = f.signed_in(PARTNER, "/", "alice").await;
    let partner_cookie = f.session_cookie(&browser, PARTNER);
    // Carried by hand to the corporate wiki (another host) and to the shared host's corporate
    // app: neither lets her in; both send her to the corporate IdP.
    for (host, path) in [(WIKI, "/"), (INTRANET, "/a/")] {
        let r = f.get_with_cookie(host, path, &partner_cookie).await;
        assert_eq!(r.status(), 302, "{host}{path}");
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with(&f._corp.issuer),
            "{host}{path} must ask the corporate IdP"
        );
    }
    assert_eq!(
        f.wiki.hits() + f.shared.hits(),
        0,
        "a partner session reached a corporate app"
    );
    let logs = f.gw.logs();
    assert!(logs.contains("session not valid for this app"), "{logs}");
}

#[tokio::test]
async fn a_session_is_valid_only_on_the_host_it_was_issued_for() {
    let f = fixture().await;
    let browser = f.signed_in(WIKI, "/", "alice").await;
    let wiki_cookie = f.session_cookie(&browser, WIKI);
    // Same IdP, other host: the cookie was never meant for it.
    let r = f.get_with_cookie(TIMESHEET, "/", &wiki_cookie).await;
    assert_eq!(r.status(), 302);
    assert_eq!(f.timesheet.hits(), 0);
    // The cookie still works where it belongs (it was not ended by the misuse).
    let r = f.get_with_cookie(WIKI, "/again", &wiki_cookie).await;
    assert_eq!(r.status(), 200);
    assert_eq!(f.wiki.hits(), 2);
}

#[tokio::test]
async fn apps_sharing_a_host_and_idp_share_the_session_each_with_its_own_limits_and_rules() {
    let f = fixture().await;
    let alice = f.signed_in(INTRANET, "/a/", "alice").await;
    // The other corporate app on the host: no new sign-in, its own require rule met.
    let r = alice.get(&f.url(INTRANET, "/c/pay")).await;
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        header_values(&echo, "x-remote-user"),
        ["alice@corp.example"]
    );
    // The partner app on the same host does not take a corporate session.
    let r = alice.get(&f.url(INTRANET, "/b/")).await;
    assert_eq!(r.status(), 302);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&f._partner.issuer));
    // bob is staff but not finance: /a serves him, /c's require rule refuses him.
    let bob = f.signed_in(INTRANET, "/a/", "bob").await;
    assert_eq!(bob.get(&f.url(INTRANET, "/c/pay")).await.status(), 403);
    // /c allows one idle second; /a the gateway's hour. After 1.5 s /c wants a new sign-in,
    // while /a still serves the same session.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = alice.get(&f.url(INTRANET, "/c/pay")).await;
    assert_eq!(r.status(), 302, "past /c's idle limit");
    let r = alice.get(&f.url(INTRANET, "/a/home")).await;
    assert_eq!(
        r.status(),
        200,
        "/c's stricter limit ended the session for /a too"
    );
}

#[tokio::test]
async fn one_logout_ends_every_session_of_that_sign_in_and_no_other() {
    let f = fixture().await;
    let alice = f.signed_in(WIKI, "/", "alice").await;
    // Single sign-on: the timesheet signs her in without a password, a session of its own.
    let trip = alice.follow(&f.url(TIMESHEET, "/week")).await;
    assert_eq!(trip.status, 200, "{trip:?}");
    assert!(!trip.visited("/interaction/"), "SSO asked for a password");
    // The same user signed in on another device, at another moment (IdPs state the time of
    // authentication to the second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let laptop = f.signed_in(TIMESHEET, "/", "alice").await;

    let out = alice.get(&f.url(WIKI, "/.portcullis/logout")).await;
    assert_eq!(out.status(), 302);
    // Both of this sign-in's sessions are gone: the timesheet sends her back to the IdP.
    let r = alice.get(&f.url(TIMESHEET, "/week")).await;
    assert_eq!(r.status(), 302, "the timesheet session outlived the logout");
    assert_eq!(alice.get(&f.url(WIKI, "/")).await.status(), 302);
    // The other device's sign-in is untouched.
    assert_eq!(laptop.get(&f.url(TIMESHEET, "/week")).await.status(), 200);
    let logs = f.gw.wait_for_log("logout_elsewhere").await;
    let ended = logs
        .lines()
        .find(|l| {
            l.contains("reason=\"logout_elsewhere\"") || l.contains("reason=logout_elsewhere")
        })
        .unwrap_or_else(|| panic!("no audit record for the timesheet session:\n{logs}"));
    assert!(ended.contains("timesheet"), "{ended}");
}
