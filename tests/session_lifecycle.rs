//! Session lifecycle end to end, on one node with the embedded store: OpenID Connect
//! back-channel logout from the real oidc-provider (and hostile logout tokens signed with its
//! own key), refresh tokens (rotation, a deactivated user, a group removal), an administrator's
//! revocation. The multi-node cases are in `tests/ha.rs`.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use serde_json::json;
use support::browser::Browser;
use support::idp::{IdpClient, IdpOptions, TestIdp};
use support::{echo_backend, free_addr, Backend, GatewaySpec, RunningGateway};

const WIKI: &str = "wiki.localhost";
const TIMESHEET: &str = "timesheet.localhost";
const BACKCHANNEL: &str = "/.portcullis/oidc/backchannel-logout";

struct Fixture {
    idp: TestIdp,
    gw: RunningGateway,
    client: IdpClient,
    _backends: Vec<Backend>,
}

impl Fixture {
    fn url(&self, host: &str, path: &str) -> String {
        self.gw.app_url(host, path)
    }

    fn browser(&self) -> Browser {
        Browser::new(self.gw.http, &[WIKI, TIMESHEET])
    }

    async fn signed_in(&self, host: &str, user: &str) -> Browser {
        let browser = self.browser();
        let trip = browser
            .login(&self.url(host, "/"), user, &format!("{user}-pw"))
            .await;
        assert_eq!(trip.status, 200, "{user} could not sign in: {trip:?}");
        browser
    }

    /// The status `browser` gets for `path` at `host` without following redirects (200: the
    /// session is honoured; 302: sent to sign in).
    async fn status(&self, browser: &Browser, host: &str, path: &str) -> u16 {
        browser.get(&self.url(host, path)).await.status().as_u16()
    }

    /// Posts a logout token to the gateway as an IdP would.
    async fn post_logout_token(&self, token: &str) -> (u16, String) {
        let response = support::http_client()
            .post(format!("http://{}{BACKCHANNEL}", self.gw.http))
            .form(&[("logout_token", token)])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// A logout token for `sub`, as oidc-provider makes them, with `change` applied.
    async fn logout_token(&self, sub: &str, change: impl FnOnce(&mut serde_json::Value)) -> String {
        let now = support::unix_now();
        let mut claims = json!({
            "iss": self.idp.issuer, "aud": self.client.id, "iat": now, "exp": now + 120,
            "jti": format!("jti-{}", rand_suffix()), "sub": sub,
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        });
        change(&mut claims);
        self.idp.sign(json!({ "typ": "logout+jwt" }), claims).await
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(7);
    h.finish()
}

fn policy(app: &str, host: &str, upstream: &str, extra: &str) -> String {
    let head = support::policy_head(app, host, upstream, Some("corp"));
    format!(
        r#"{head}
[identity.headers]
"X-Remote-User" = "email"
"X-Groups" = {{ claim = "groups", join = "," }}
{extra}
[[allow]]
id = "staff"
why = "Staff use it daily"
groups = ["staff"]
"#
    )
}

/// How a test's gateway and IdP are set up.
struct Setup {
    /// The gateway's client at the IdP (refresh, back-channel logout).
    client: fn(IdpClient, std::net::SocketAddr) -> IdpClient,
    options: IdpOptions,
    /// Lines in `[idp.corp]`.
    idp_extra: &'static str,
    /// Lines in the wiki policy.
    wiki_extra: &'static str,
    /// Anything else about the gateway.
    spec: fn(GatewaySpec) -> GatewaySpec,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            client: |c, _| c,
            options: IdpOptions::default(),
            idp_extra: "",
            wiki_extra: "",
            spec: |s| s,
        }
    }
}

/// A gateway with `wiki` and `timesheet` behind the IdP `corp`, set up by `setup`.
async fn fixture(setup: Setup) -> Fixture {
    let http = free_addr();
    let origins: Vec<String> = [WIKI, TIMESHEET]
        .iter()
        .map(|h| format!("http://{h}:{}", http.port()))
        .collect();
    let client = (setup.client)(IdpClient::gateway("portcullis", &origins), http);
    let idp = TestIdp::start_with(std::slice::from_ref(&client), setup.options).await;
    let wiki = echo_backend("wiki").await;
    let timesheet = echo_backend("timesheet").await;
    let spec = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp", &client, setup.idp_extra))
        .policy(
            "wiki.toml",
            policy("wiki", WIKI, &wiki.url(), setup.wiki_extra),
        )
        .policy(
            "timesheet.toml",
            policy("timesheet", TIMESHEET, &timesheet.url(), ""),
        );
    let gw = (setup.spec)(spec).start().await;
    Fixture {
        idp,
        gw,
        client,
        _backends: vec![wiki, timesheet],
    }
}

fn with_backchannel(client: IdpClient, gw: std::net::SocketAddr) -> IdpClient {
    client.with_backchannel_logout(&format!("http://{gw}{BACKCHANNEL}"), true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_at_the_idp_ends_every_session_of_that_sign_in_by_back_channel() {
    let f = fixture(Setup {
        client: with_backchannel,
        ..Setup::default()
    })
    .await;
    let browser = f.signed_in(WIKI, "alice").await;
    // Single sign-on to a second app host: a second session of the same IdP sign-in.
    let trip = browser.follow(&f.url(TIMESHEET, "/")).await;
    assert_eq!(trip.status, 200, "{trip:?}");
    let other = f.signed_in(WIKI, "bob").await;

    // Alice signs out at the IdP itself (not through the gateway).
    let form = browser
        .follow(&format!("{}/session/end", f.idp.issuer))
        .await;
    let done = browser.confirm_logout(&form).await;
    assert!(done.body.contains("signed out"), "{done:?}");
    let logs = f.gw.wait_for_log("back-channel logout").await;
    assert!(logs.contains("sessions=2"), "{logs}");
    assert_eq!(
        f.status(&browser, WIKI, "/").await,
        302,
        "wiki session ended"
    );
    assert_eq!(
        f.status(&browser, TIMESHEET, "/").await,
        302,
        "timesheet session ended"
    );
    assert_eq!(f.status(&other, WIKI, "/").await, 200, "bob is untouched");
    let audit = f.gw.wait_for_log("reason=\"backchannel_logout\"").await;
    assert!(audit.contains("alice@corp.example"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_logout_tokens_are_refused_and_a_valid_one_counts_once() {
    let f = fixture(Setup {
        client: with_backchannel,
        ..Setup::default()
    })
    .await;
    let alice = f.signed_in(WIKI, "alice").await;
    let now = support::unix_now();

    let refused: Vec<(&str, String)> = vec![
        (
            "nonce present",
            f.logout_token("alice", |c| c["nonce"] = json!("n-123")).await,
        ),
        (
            "wrong aud",
            f.logout_token("alice", |c| c["aud"] = json!("some-other-client"))
                .await,
        ),
        (
            "expired",
            f.logout_token("alice", |c| {
                c["iat"] = json!(now - 900);
                c["exp"] = json!(now - 780);
            })
            .await,
        ),
        (
            "no back-channel logout event",
            f.logout_token("alice", |c| c["events"] = json!({})).await,
        ),
        (
            "neither sub nor sid",
            f.logout_token("alice", |c| {
                c.as_object_mut().unwrap().remove("sub");
            })
            .await,
        ),
        (
            "an ID token's typ",
            f.idp
                .sign(
                    json!({ "typ": "at+jwt" }),
                    json!({ "iss": f.idp.issuer, "aud": f.client.id, "iat": now, "exp": now + 60,
                            "jti": "x", "sub": "alice",
                            "events": { "http://schemas.openid.net/event/backchannel-logout": {} } }),
                )
                .await,
        ),
    ];
    // Unsigned: the valid token's claims under `alg: none`.
    let valid = f.logout_token("alice", |_| {}).await;
    let payload = valid.split('.').nth(1).unwrap();
    let none_header = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#)
    };
    let unsigned = format!("{none_header}.{payload}.");
    // The valid token's claims signed with HMAC, keyed with something public.
    let hmac = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::from_slice::<serde_json::Value>(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap(),
        &jsonwebtoken::EncodingKey::from_secret(f.client.id.as_bytes()),
    )
    .unwrap();
    let mut all = refused;
    all.push(("unsigned (alg none)", unsigned));
    all.push(("HMAC-signed", hmac));
    for (what, token) in &all {
        let (status, body) = f.post_logout_token(token).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body.contains("\"error\""), "{what}: {body}");
        assert_eq!(
            f.status(&alice, WIKI, "/").await,
            200,
            "alice still signed in after: {what}"
        );
    }
    let (status, body) = f.post_logout_token("").await;
    assert_eq!(status, 400, "empty token: {body}");

    // The genuine token ends alice's session; the same token again is a replay.
    let (status, body) = f.post_logout_token(&valid).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(f.status(&alice, WIKI, "/").await, 302, "alice signed out");
    let (status, body) = f.post_logout_token(&valid).await;
    assert_eq!(status, 400, "replayed: {body}");
    assert!(body.contains("replayed"), "{body}");
    f.gw.wait_for_log("event=\"signal_refused\"").await;
}

const ADMIN_TOKEN: &str = "admin-token-TEST-ONLY-0123456789abcdef0123456789";

/// Runs `portcullis sessions <args>` against the fixture's gateway.
async fn sessions_cli(f: &Fixture, args: &[&str]) -> (bool, String) {
    support::sessions_cli(&f.gw.config_path(), args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_and_revokes_sessions_by_user_app_and_all_and_is_audited() {
    let f = fixture(Setup {
        spec: |s| s.admin_token(ADMIN_TOKEN),
        ..Setup::default()
    })
    .await;
    let alice = f.signed_in(WIKI, "alice").await;
    assert_eq!(alice.follow(&f.url(TIMESHEET, "/")).await.status, 200);
    let bob = f.signed_in(WIKI, "bob").await;

    // The admin API answers only the admin token.
    let api = |path: &str| format!("http://{}{path}", f.gw.admin);
    let http = support::http_client();
    let anonymous = http
        .post(api("/sessions/revoke?user=alice@corp.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = http
        .post(api("/sessions/revoke?all=yes"))
        .bearer_auth("admin-token-TEST-ONLY-0123456789abcdef0123456788")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let listing = http
        .get(api("/sessions?user=alice@corp.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 401, "no listing without the token either");
    let ambiguous = http
        .post(api("/sessions/revoke?user=alice@corp.example&all=yes"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ambiguous.status(), 400, "one selector at a time");
    assert_eq!(
        f.status(&alice, WIKI, "/").await,
        200,
        "nothing revoked yet"
    );
    assert_eq!(f.status(&bob, WIKI, "/").await, 200);

    let (ok, out) = sessions_cli(&f, &["list", "--user", "ALICE@corp.example"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("2 session(s)"), "{out}");
    assert!(
        out.contains("app=wiki") && out.contains("app=timesheet"),
        "{out}"
    );
    assert!(!out.contains("bob@"), "{out}");

    let (ok, out) = sessions_cli(&f, &["revoke", "--app", "timesheet"]).await;
    assert!(ok && out.contains("revoked 1 session(s)"), "{out}");
    assert_eq!(f.status(&alice, TIMESHEET, "/").await, 302);
    assert_eq!(
        f.status(&alice, WIKI, "/").await,
        200,
        "only that app's session"
    );

    let (ok, out) = sessions_cli(&f, &["revoke", "--user", "alice@corp.example"]).await;
    assert!(ok && out.contains("revoked 1 session(s)"), "{out}");
    assert_eq!(f.status(&alice, WIKI, "/").await, 302);
    assert_eq!(f.status(&bob, WIKI, "/").await, 200, "bob untouched");

    let (ok, out) = sessions_cli(&f, &["revoke", "--all"]).await;
    assert!(ok && out.contains("revoked 1 session(s)"), "{out}");
    assert_eq!(f.status(&bob, WIKI, "/").await, 302);

    let logs =
        f.gw.wait_for_log("selector=user alice@corp.example sessions=1")
            .await;
    assert!(
        logs.contains("event=\"revocation\" operator=it-admin"),
        "{logs}"
    );
    assert!(logs.contains("reason=\"revoked\""), "{logs}");
    let (ok, out) = sessions_cli(&f, &["revoke"]).await;
    assert!(!ok, "a revocation names what it revokes: {out}");
}

fn with_refresh(client: IdpClient, _: std::net::SocketAddr) -> IdpClient {
    client.with_refresh()
}

/// Claims re-read every second (the shortest interval), so tests wait seconds, not minutes.
const REFRESH_EVERY_SECOND: &str = "refresh = true\nrefresh_interval = \"1s\"\n";

/// Waits past one refresh interval.
async fn past_refresh_interval() {
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
}

impl Fixture {
    /// The groups the wiki backend was told (`X-Groups`), or the status when not served.
    async fn wiki_groups(&self, browser: &Browser) -> Result<String, u16> {
        let response = browser.get(&self.url(WIKI, "/")).await;
        match response.status().as_u16() {
            200 => {
                let echo: serde_json::Value = response.json().await.unwrap();
                Ok(support::header_values(&echo, "x-groups").join(";"))
            }
            status => Err(status),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshed_claims_change_decisions_and_rotated_refresh_tokens_keep_working() {
    let f = fixture(Setup {
        client: with_refresh,
        idp_extra: REFRESH_EVERY_SECOND,
        ..Setup::default()
    })
    .await;
    let alice = f.signed_in(WIKI, "alice").await;
    assert_eq!(f.wiki_groups(&alice).await, Ok("staff,finance".to_string()));

    // Removed from `staff` at the IdP: denied at the first request after the next refresh.
    f.idp.set_groups("alice", &["finance"]).await;
    past_refresh_interval().await;
    assert_eq!(f.wiki_groups(&alice).await, Err(403), "staff removed");
    assert_eq!(f.idp.refresh_counts().await, (1, 0));

    // Back in `staff`: allowed again, through the rotated refresh token (reusing the first
    // one would make the IdP revoke the whole grant and the session would end).
    f.idp.set_groups("alice", &["staff"]).await;
    past_refresh_interval().await;
    assert_eq!(f.wiki_groups(&alice).await, Ok("staff".to_string()));
    assert_eq!(f.idp.refresh_counts().await, (2, 0));
    let logs = f.gw.wait_for_log("session claims refreshed").await;
    assert!(!logs.contains("refresh_token"), "no token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_or_a_deactivated_user_ends_the_session_at_the_next_refresh() {
    let f = fixture(Setup {
        client: with_refresh,
        idp_extra: REFRESH_EVERY_SECOND,
        ..Setup::default()
    })
    .await;
    let alice = f.signed_in(WIKI, "alice").await;
    let bob = f.signed_in(WIKI, "bob").await;
    assert_eq!(f.status(&alice, WIKI, "/").await, 200);

    f.idp.revoke_grants("alice").await;
    f.idp.set_active("bob", false).await;
    past_refresh_interval().await;
    assert_eq!(
        f.status(&alice, WIKI, "/").await,
        302,
        "grant revoked: sign in again"
    );
    assert_eq!(
        f.status(&bob, WIKI, "/").await,
        302,
        "deactivated: sign in again"
    );
    assert_eq!(f.idp.refresh_counts().await, (0, 2));
    let logs = f.gw.wait_for_log("reason=\"refresh_refused\"").await;
    assert!(
        logs.contains("alice@corp.example") && logs.contains("bob@corp.example"),
        "{logs}"
    );
    // Deactivated at the IdP, bob cannot sign in again either; alice can.
    let again = alice.login(&f.url(WIKI, "/"), "alice", "alice-pw").await;
    assert_eq!(again.status, 200, "{again:?}");
}

impl Fixture {
    /// The access token the wiki backend was given (`X-Access-Token`), sending `forged` as
    /// the client's own copy.
    async fn wiki_access_token(&self, browser: &Browser, forged: &str) -> Vec<String> {
        let response = browser
            .get_with(
                &self.url(WIKI, "/"),
                &[("Sec-Fetch-Mode", "navigate"), ("X-Access-Token", forged)],
            )
            .await;
        assert_eq!(response.status(), 200);
        let echo: serde_json::Value = response.json().await.unwrap();
        support::header_values(&echo, "x-access-token")
    }

    /// Whom the IdP's userinfo endpoint says `token` belongs to.
    async fn userinfo_sub(&self, token: &str) -> Option<String> {
        let response = support::http_client()
            .get(format!("{}/me", self.idp.issuer))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let info: serde_json::Value = response.json().await.ok()?;
        info["sub"].as_str().map(str::to_string)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_gets_the_users_current_access_token_and_never_a_forged_one() {
    let f = fixture(Setup {
        client: with_refresh,
        idp_extra: REFRESH_EVERY_SECOND,
        wiki_extra: "\"X-Access-Token\" = \"access_token\"\n",
        ..Setup::default()
    })
    .await;
    let alice = f.signed_in(WIKI, "alice").await;
    let first = f.wiki_access_token(&alice, "forged-token").await;
    assert_eq!(
        first.len(),
        1,
        "exactly one, the client's copy stripped: {first:?}"
    );
    assert_ne!(first[0], "forged-token");
    assert_eq!(f.userinfo_sub(&first[0]).await.as_deref(), Some("alice"));

    past_refresh_interval().await;
    let second = f.wiki_access_token(&alice, "forged-token").await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first, "a fresh token after the refresh");
    assert_eq!(f.userinfo_sub(&second[0]).await.as_deref(), Some("alice"));
    assert_eq!(f.idp.refresh_counts().await, (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_flood_from_one_address_is_refused_while_another_address_signs_in() {
    let f = fixture(Setup {
        spec: |s| s.gateway_toml("[login_limits]\nper_address = 20\n"),
        ..Setup::default()
    })
    .await;
    // One address starts sign-in after sign-in.
    let flood = Browser::from_address(f.gw.http, &[WIKI], Some([127, 0, 0, 1].into()));
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..40 {
        let response = flood.get(&f.url(WIKI, "/")).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 && refused.is_none() {
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            refused = Some((retry, response.text().await.unwrap()));
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 302).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        20,
        "{statuses:?}"
    );
    let (retry, page) = refused.unwrap();
    assert!(
        retry.is_some_and(|r| (1..=60).contains(&r)),
        "Retry-After: {retry:?}"
    );
    assert!(page.contains("Too many sign-in attempts"), "{page}");

    // Meanwhile another address signs in as usual, all the way.
    let other = Browser::from_address(f.gw.http, &[WIKI], Some([127, 0, 0, 7].into()));
    let trip = other.login(&f.url(WIKI, "/"), "alice", "alice-pw").await;
    assert_eq!(trip.status, 200, "{trip:?}");
    // And the flooding address's callbacks are refused too, not only its starts.
    let callback = flood
        .get(&f.url(WIKI, "/.portcullis/oidc/callback?state=x&code=y"))
        .await;
    assert_eq!(callback.status(), 429);
    let logs = f.gw.wait_for_log("event=\"login_throttled\"").await;
    assert!(
        logs.contains("limit=\"address\"") || logs.contains("limit=address"),
        "{logs}"
    );
}
