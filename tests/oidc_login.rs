//! OpenID Connect login end to end: the real gateway, a real OpenID Provider (oidc-provider on
//! Node), real echo backends, and a headless browser that follows every redirect.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;
use support::browser::{query_param, with_query_param, Browser};
use support::form_app::FormApp;
use support::idp::{IdpClient, TestIdp};
use support::{
    echo_backend, free_addr, header_values, raw_exchange, raw_status, Backend, GatewaySpec,
    RunningGateway,
};

const WIKI: &str = "wiki.localhost";
const TIMESHEET: &str = "timesheet.localhost";

struct Fixture {
    idp: TestIdp,
    gw: RunningGateway,
    wiki: Backend,
    timesheet: Backend,
    client: IdpClient,
}

impl Fixture {
    fn url(&self, host: &str, path: &str) -> String {
        self.gw.app_url(host, path)
    }
    fn browser(&self) -> Browser {
        Browser::new(self.gw.http, &[WIKI, TIMESHEET])
    }
    /// A new browser in which `user` (password `<user>-pw`) has signed in to `host`.
    async fn signed_in(&self, host: &str, user: &str) -> Browser {
        let browser = self.browser();
        let trip = browser
            .login(&self.url(host, "/"), user, &format!("{user}-pw"))
            .await;
        assert_eq!(trip.status, 200, "{user} could not sign in: {trip:?}");
        browser
    }
}

/// The shared secret the backends check (written to a file the policies point at).
const SHARED_SECRET: &str = "backend-shared-secret-TEST-ONLY-4f9a";

fn shared_secret_file() -> std::path::PathBuf {
    // Tests run in parallel: write a private copy, then rename it into place atomically.
    let path = std::env::temp_dir().join("portcullis-test-shared-secret");
    let mut tmp = tempfile::NamedTempFile::new_in(std::env::temp_dir()).unwrap();
    std::io::Write::write_all(&mut tmp, format!("{SHARED_SECRET}\n").as_bytes()).unwrap();
    tmp.persist(&path).unwrap();
    path
}

fn app_policy(app: &str, host: &str, upstream: &str, extra: &str) -> String {
    let secret = shared_secret_file();
    let head = support::policy_head(app, host, upstream, Some("corp"));
    format!(
        r#"{head}logout_path = "/logout"
{extra}
[identity.headers]
"X-Remote-User" = "email"
"X-Groups" = {{ claim = "groups", join = "," }}
"X-Gateway" = {{ value = "portcullis" }}
"X-Gateway-Key" = {{ secret_file = "{secret}" }}
"X-Department" = "department"

[[allow]]
id = "staff"
why = "Staff use it daily"
groups = ["staff"]

[[allow]]
id = "assets"
why = "Logos carry no data"
public = true
paths = ["/static/**"]

[[deny]]
id = "no-contractors"
why = "Contractors never see it"
email_domain = ["contractors.corp.example"]
"#,
        secret = secret.display()
    )
}

/// Gateway with `wiki` and `timesheet` behind the IdP `corp`; `wiki_extra` goes into the wiki
/// policy (e.g. a `[session]` table).
async fn fixture(wiki_extra: &str) -> Fixture {
    fixture_with(wiki_extra, "").await
}

/// [`fixture`] with extra gateway settings (whole tables).
async fn fixture_with(wiki_extra: &str, gateway_extra: &str) -> Fixture {
    let http = free_addr();
    // Both schemes on the plain port: behind a TLS-terminating proxy the browser says https.
    let origins: Vec<String> = [WIKI, TIMESHEET]
        .iter()
        .flat_map(|h| ["http", "https"].map(|scheme| format!("{scheme}://{h}:{}", http.port())))
        .collect();
    let client = IdpClient::gateway("portcullis", &origins);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let wiki = echo_backend("wiki").await;
    let timesheet = echo_backend("timesheet").await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp", &client, "claims = [\"department\"]\n"))
        .gateway_toml(gateway_extra)
        .policy(
            "wiki.toml",
            app_policy("wiki", WIKI, &wiki.url(), wiki_extra),
        )
        .policy(
            "timesheet.toml",
            app_policy("timesheet", TIMESHEET, &timesheet.url(), ""),
        )
        .start()
        .await;
    Fixture {
        idp,
        gw,
        wiki,
        timesheet,
        client,
    }
}

#[tokio::test]
async fn full_login_returns_to_the_deep_link_with_identity_headers() {
    let f = fixture("").await;
    let browser = f.browser();
    let deep = f.url(WIKI, "/docs/page?section=2&x=%C3%A9");
    let trip = browser.login(&deep, "alice", "alice-pw").await;

    assert_eq!(trip.status, 200, "{trip:?}");
    assert_eq!(trip.final_url(), deep, "back at the deep link");
    assert!(trip.visited(&f.idp.issuer), "went through the IdP");
    assert!(trip.visited("/.portcullis/oidc/callback"));
    let echo = trip.json();
    assert_eq!(echo["uri"], "/docs/page?section=2&x=%C3%A9");
    assert_eq!(
        header_values(&echo, "x-remote-user"),
        ["alice@corp.example"]
    );
    assert_eq!(header_values(&echo, "x-groups"), ["staff,finance"]);
    assert_eq!(header_values(&echo, "x-gateway"), ["portcullis"]);
    assert_eq!(header_values(&echo, "x-gateway-key"), [SHARED_SECRET]);
    // The gateway's own cookies never reach the backend.
    let cookies = header_values(&echo, "cookie").join(";");
    assert!(!cookies.contains("portcullis_"), "{cookies}");
    assert_eq!(f.wiki.hits(), 1);

    // The authorization request used PKCE S256, a state and a nonce.
    let authorize = trip
        .hops
        .iter()
        .find(|h| h.contains("code_challenge="))
        .unwrap_or_else(|| panic!("{:?}", trip.hops));
    assert_eq!(
        query_param(authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(authorize, "state").is_some_and(|s| s.len() >= 22));
    assert!(query_param(authorize, "nonce").is_some_and(|s| s.len() >= 22));
    assert!(query_param(authorize, "scope").unwrap().contains("groups"));

    // Single-page apps can ask who is signed in; never a token or session id in the answer.
    let who = browser
        .get_with(&f.url(WIKI, "/.portcullis/userinfo"), &[])
        .await;
    assert_eq!(who.status(), 200);
    assert_eq!(who.headers()["cache-control"], "no-store");
    let who: serde_json::Value = who.json().await.unwrap();
    assert_eq!(who["email"], "alice@corp.example");
    assert_eq!(who["groups"], serde_json::json!(["staff", "finance"]));
    assert_eq!(who["app"], "wiki");
    assert!(!who.to_string().contains("eyJ"));
    let anonymous = f.browser();
    let nobody = anonymous
        .get_with(&f.url(WIKI, "/.portcullis/userinfo"), &[])
        .await;
    assert_eq!(nobody.status(), 401);
    assert_eq!(
        f.wiki.hits(),
        1,
        "gateway endpoints never reach the backend"
    );

    // Signed in: the next request goes straight through.
    let again = browser.get(&f.url(WIKI, "/other")).await;
    assert_eq!(again.status(), 200);

    f.gw.wait_for_log("login_success").await;
    let logs = f.gw.settled_logs().await;
    assert!(logs.contains("alice@corp.example"), "{logs}");
    // Codes, states, tokens and the client secret never reach the logs.
    let callback = callback_hop(&trip);
    for secret in [
        query_param(&callback, "code").unwrap(),
        query_param(&callback, "state").unwrap(),
        f.client.secret.clone(),
        SHARED_SECRET.to_string(),
    ] {
        assert!(!logs.contains(&secret), "log leaks a secret");
    }
    assert!(!logs.contains("eyJ"), "log holds a JWT");
}

#[tokio::test]
async fn session_cookie_is_hardened() {
    let f = fixture("").await;
    let browser = f.browser();
    let form = browser.follow(&f.url(WIKI, "/")).await;
    let action = support::browser::form_action(&form.body);
    let url = url::Url::parse(form.final_url())
        .unwrap()
        .join(&action)
        .unwrap();
    let trip = browser
        .submit(
            url.as_str(),
            &[("login", "alice"), ("password", "alice-pw")],
        )
        .await;
    assert_eq!(trip.status, 200);
    let session_cookie = browser.cookies_for(&f.url(WIKI, "/"));
    assert!(
        session_cookie.contains("portcullis_session="),
        "{session_cookie}"
    );
    // Its value is sealed: no readable id, and long enough for a 256-bit id plus AEAD tag.
    let value = session_cookie
        .split("; ")
        .find_map(|c| c.strip_prefix("portcullis_session="))
        .unwrap();
    assert!(value.len() >= 60, "{value}");
    // Start another login to read the flags on a fresh Set-Cookie (login binding cookie).
    let other = Browser::new(f.gw.http, &[WIKI]);
    let response = other.get(&f.url(WIKI, "/x")).await;
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(set_cookie.contains("Max-Age=600"), "{set_cookie}");
}

#[tokio::test]
async fn callback_state_must_be_present_bound_and_unused() {
    let f = fixture("").await;
    let browser = f.browser();
    let trip = browser.login(&f.url(WIKI, "/"), "alice", "alice-pw").await;
    assert_eq!(trip.status, 200);
    let callback = callback_hop(&trip);

    // Reused: the same callback again (same browser; its login cookie was cleared).
    let replay = browser.get(&callback).await;
    assert_eq!(replay.status(), 400, "reused state");

    // Missing state.
    let code = query_param(&callback, "code").unwrap();
    let missing = browser
        .get(&f.url(WIKI, &format!("/.portcullis/oidc/callback?code={code}")))
        .await;
    assert_eq!(missing.status(), 400, "missing state");

    // Altered state: a fresh login, with the state changed on the way back.
    let fresh = Browser::new(f.gw.http, &[WIKI]);
    let form = fresh.follow(&f.url(WIKI, "/")).await;
    let back = fresh.sign_in_stop_at_callback(&form).await;
    let state = query_param(&back, "state").unwrap();
    let altered = with_query_param(&back, "state", &format!("{state}x"));
    assert_eq!(fresh.get(&altered).await.status(), 400, "altered state");
    let flipped = with_query_param(&back, "state", &state.chars().rev().collect::<String>());
    assert_eq!(fresh.get(&flipped).await.status(), 400, "altered state");

    // Right state, wrong browser: the callback is not bound to this one (login CSRF).
    let attacker_victim = Browser::new(f.gw.http, &[WIKI]);
    assert_eq!(
        attacker_victim.get(&back).await.status(),
        400,
        "unbound state"
    );
    // The rightful browser can still finish: refusals above did not consume its login.
    let binding = fresh.cookies_for(&back);
    let ok = fresh.get(&back).await;
    assert_eq!(ok.status(), 302, "rightful callback");
    // Replayed with a copy of the binding cookie: the state is spent.
    let replayer = Browser::new(f.gw.http, &[WIKI]);
    let replay = replayer
        .get_with(
            &back,
            &[("accept", "text/html"), ("cookie", binding.as_str())],
        )
        .await;
    assert_eq!(replay.status(), 400, "reused state with its cookie");

    let logs = f.gw.wait_for_log("not bound").await;
    for reason in [
        "unknown, reused or expired state",
        "callback without `state`",
        "not bound to this browser",
    ] {
        assert!(
            logs.contains(reason),
            "audit reason {reason:?} missing:\n{logs}"
        );
    }
    assert!(
        f.wiki.hits() == 1,
        "no refused callback reached the backend"
    );
}

#[tokio::test]
async fn tampered_nonce_is_refused() {
    let f = fixture("").await;
    let browser = f.browser();
    let first = browser.get(&f.url(WIKI, "/")).await;
    let authorize = first
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    // The browser swaps the nonce; the IdP faithfully signs the swapped one into the token.
    let tampered = with_query_param(&authorize, "nonce", "attacker-chosen-nonce-0123456789");
    let form = browser.follow(&tampered).await;
    let trip = browser.sign_in(&form, "alice", "alice-pw").await;
    assert_eq!(trip.status, 400, "{trip:?}");
    assert!(trip.body.contains("Sign-in failed"));
    let logs = f.gw.wait_for_log("login_failure").await;
    assert!(logs.contains("nonce"), "{logs}");
    assert_eq!(f.wiki.hits(), 0);
}

#[tokio::test]
async fn replayed_code_is_refused() {
    let f = fixture("").await;
    let browser = f.browser();
    let trip = browser.login(&f.url(WIKI, "/"), "alice", "alice-pw").await;
    assert_eq!(trip.status, 200);
    let used = callback_hop(&trip);
    let code = query_param(&used, "code").unwrap();

    // A new login in another browser gets a fresh state; the old code is smuggled in.
    let other = Browser::new(f.gw.http, &[WIKI]);
    let form = other.follow(&f.url(WIKI, "/")).await;
    let back = other.sign_in_stop_at_callback(&form).await;
    let smuggled = with_query_param(&back, "code", &code);
    let response = other.get(&smuggled).await;
    assert_eq!(response.status(), 400);
    // Refused before it reaches the IdP: a code counts once, on every node.
    let logs = f.gw.wait_for_log("authorization code already used").await;
    assert!(!logs.contains("code exchange failed"), "{logs}");
    // Its state is spent too: the genuine code cannot be used afterwards.
    assert_eq!(other.get(&back).await.status(), 400);
}

#[tokio::test]
async fn idle_and_absolute_timeouts_end_sessions() {
    let f = fixture("[session]\nidle = \"2s\"\nabsolute = \"1h\"\n").await;
    let browser = f.signed_in(WIKI, "alice").await;
    assert_eq!(browser.get(&f.url(WIKI, "/a")).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let after_idle = browser.get(&f.url(WIKI, "/a")).await;
    assert_eq!(after_idle.status(), 302, "idle session must be over");
    let logs = f.gw.wait_for_log("session_end").await;
    let record = logs
        .lines()
        .find(|l| l.contains("session_end"))
        .unwrap_or_else(|| panic!("no session_end audit record:\n{logs}"));
    for field in [
        "reason=\"idle\"",
        "alice@corp.example",
        "request_id=",
        "client=127.0.0.1",
    ] {
        assert!(record.contains(field), "{field} missing: {record}");
    }
    drop(f);

    let f = fixture("[session]\nidle = \"3s\"\nabsolute = \"3s\"\n").await;
    let browser = f.signed_in(WIKI, "alice").await;
    // Used every second, so idle never fires; the absolute limit still does.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(browser.get(&f.url(WIKI, "/a")).await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        browser.get(&f.url(WIKI, "/a")).await.status(),
        302,
        "absolute limit"
    );
}

#[tokio::test]
async fn tampered_session_cookie_counts_as_no_session() {
    let f = fixture("").await;
    let browser = f.signed_in(WIKI, "alice").await;
    let cookie = browser.cookies_for(&f.url(WIKI, "/"));
    let value = cookie
        .split("; ")
        .find_map(|c| c.strip_prefix("portcullis_session="))
        .unwrap()
        .to_string();
    let mut bytes = value.into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let forged = format!("portcullis_session={}", String::from_utf8(bytes).unwrap());
    let stranger = Browser::new(f.gw.http, &[WIKI]);
    let response = stranger
        .get_with(
            &f.url(WIKI, "/"),
            &[("accept", "text/html"), ("cookie", forged.as_str())],
        )
        .await;
    assert_eq!(
        response.status(),
        302,
        "forged cookie is no session: login again"
    );
    let set_cookies: Vec<&str> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        set_cookies
            .iter()
            .any(|c| c.starts_with("portcullis_session=;") && c.contains("Max-Age=0")),
        "the useless cookie is deleted: {set_cookies:?}"
    );
    assert!(response.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&f.idp.issuer));
    let logs = f.gw.wait_for_log("session cookie ignored").await;
    assert!(logs.contains("failed authentication"), "{logs}");
    // On a public path the request is served, and the cookie deleted all the same.
    let asset = stranger
        .get_with(
            &f.url(WIKI, "/static/a.css"),
            &[("cookie", forged.as_str())],
        )
        .await;
    assert_eq!(asset.status(), 200);
    let clear = asset.headers()["set-cookie"].to_str().unwrap();
    assert!(clear.starts_with("portcullis_session=;"), "{clear}");
    // The real cookie still works.
    assert_eq!(browser.get(&f.url(WIKI, "/")).await.status(), 200);
}

#[tokio::test]
async fn return_to_never_leaves_the_host() {
    let f = fixture("").await;
    for evil in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "http:evil.example",
    ] {
        let browser = f.browser();
        let start = f.url(
            WIKI,
            &format!("/.portcullis/login?return_to={}", urlencode(evil)),
        );
        let trip = browser.login(&start, "alice", "alice-pw").await;
        assert_eq!(trip.status, 200, "{evil}");
        assert_eq!(trip.final_url(), f.url(WIKI, "/"), "{evil}");
        let hosts: Vec<String> = trip
            .hops
            .iter()
            .map(|h| {
                url::Url::parse(h)
                    .unwrap()
                    .host_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert!(
            !hosts.iter().any(|h| h.contains("evil")),
            "{evil}: {hosts:?}"
        );
    }
    // A same-host path is honoured.
    let browser = f.browser();
    let trip = browser
        .login(
            &f.url(WIKI, "/.portcullis/login?return_to=%2Freports%3Fy%3D1"),
            "bob",
            "bob-pw",
        )
        .await;
    assert_eq!(trip.final_url(), f.url(WIKI, "/reports?y=1"));
}

#[tokio::test]
async fn spoofed_identity_headers_are_replaced_by_the_session() {
    let f = fixture("").await;
    let browser = f.signed_in(WIKI, "bob").await;
    let response = browser
        .get_with(
            &f.url(WIKI, "/me"),
            &[
                ("accept", "text/html"),
                ("X-Remote-User", "alice@corp.example"),
                ("x_remote_user", "alice@corp.example"),
                ("X-REMOTE-USER", "admin"),
                ("X-Groups", "admins"),
                ("x-groups", "finance"),
                ("X-Gateway", "forged"),
                ("X-Gateway-Key", "forged-secret"),
                ("x_groups", "admins"),
                // Bob has no department: nothing may fill the gap.
                ("X-Department", "Executive"),
                ("x_department", "Executive"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(header_values(&echo, "x-remote-user"), ["bob@corp.example"]);
    assert_eq!(header_values(&echo, "x-groups"), ["staff"]);
    assert_eq!(header_values(&echo, "x-gateway"), ["portcullis"]);
    assert_eq!(header_values(&echo, "x-gateway-key"), [SHARED_SECRET]);
    assert!(header_values(&echo, "x_remote_user").is_empty());
    assert!(header_values(&echo, "x_groups").is_empty());
    assert!(header_values(&echo, "x-department").is_empty());
    assert!(header_values(&echo, "x_department").is_empty());

    // Anonymous, on a public path: no identity, and none smuggled in.
    let anonymous = f.browser();
    let response = anonymous
        .get_with(
            &f.url(WIKI, "/static/a.css"),
            &[
                ("X-Groups", "admins"),
                ("X-Remote-User", "alice@corp.example"),
                ("x-department", "x"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    for name in ["x-groups", "x-remote-user", "x-department", "x-gateway-key"] {
        assert!(
            header_values(&echo, name).is_empty(),
            "{name} reached the backend"
        );
    }
}

#[tokio::test]
async fn rules_use_groups_and_email_domain() {
    let f = fixture("").await;
    // carol is signed in, but a contractor: the deny rule wins.
    let carol = f.browser();
    let trip = carol.login(&f.url(WIKI, "/"), "carol", "carol-pw").await;
    assert_eq!(trip.status, 403, "{trip:?}");
    // The deny page says who is signed in and offers to switch.
    assert!(
        trip.body
            .contains("Signed in as <b>carol@contractors.corp.example</b>"),
        "{}",
        trip.body
    );
    assert!(
        trip.body.contains("href=\"/.portcullis/logout\""),
        "{}",
        trip.body
    );
    // Public assets need no login at all.
    let anonymous = f.browser();
    let asset = anonymous.get(&f.url(WIKI, "/static/logo.png")).await;
    assert_eq!(asset.status(), 200);
    assert_eq!(f.wiki.hits(), 1);
    let logs = f.gw.wait_for_log("no-contractors").await;
    assert!(logs.contains("no-contractors"), "{logs}");
}

#[tokio::test]
async fn api_calls_get_401_instead_of_a_redirect() {
    let f = fixture("").await;
    let browser = f.browser();
    for headers in [
        &[("accept", "application/json")][..],
        &[
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest"),
        ][..],
        &[("accept", "*/*"), ("sec-fetch-mode", "cors")][..],
    ] {
        let response = browser.get_with(&f.url(WIKI, "/api/data"), headers).await;
        assert_eq!(response.status(), 401, "{headers:?}");
        let hint = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(hint.contains("/.portcullis/login"), "{hint}");
        assert!(
            response.headers().get("set-cookie").is_none(),
            "no pending login made"
        );
        // A client that asked for JSON gets JSON, not a page.
        if headers[0].1 == "application/json" {
            assert_eq!(response.headers()["content-type"], "application/json");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "login_required", "{body}");
            assert_eq!(body["status"], 401);
        }
    }
    // POST without a session is not a navigation either.
    let post = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(WIKI, f.gw.http)
        .build()
        .unwrap()
        .post(f.url(WIKI, "/form"))
        .header("accept", "text/html")
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401);
    assert_eq!(f.wiki.hits(), 0);
}

#[tokio::test]
async fn many_tabs_log_in_at_once() {
    let f = fixture("").await;
    let browser = f.browser();
    // Five tabs hit protected pages before any login finished.
    let mut authorize = Vec::new();
    for tab in 0..5 {
        let r = browser.get(&f.url(WIKI, &format!("/tab/{tab}"))).await;
        assert_eq!(r.status(), 302);
        authorize.push(r.headers()["location"].to_str().unwrap().to_string());
    }
    // The first tab signs in; the others ride the IdP session. Each lands where it started.
    for (tab, url) in authorize.iter().enumerate() {
        let trip = browser.follow(url).await;
        let trip = if trip.is_login_form() {
            browser.sign_in(&trip, "alice", "alice-pw").await
        } else {
            trip
        };
        assert_eq!(trip.status, 200, "tab {tab}: {trip:?}");
        assert_eq!(trip.final_url(), f.url(WIKI, &format!("/tab/{tab}")));
    }
}

#[tokio::test]
async fn second_app_signs_in_silently_through_the_idp_session() {
    let f = fixture("").await;
    let browser = f.signed_in(WIKI, "alice").await;
    let trip = browser.follow(&f.url(TIMESHEET, "/week")).await;
    assert_eq!(trip.status, 200, "{trip:?}");
    assert!(trip.visited(&f.idp.issuer), "went to the IdP");
    assert!(
        !trip.hops.iter().any(|h| h.contains("/interaction/")),
        "no password asked: {:?}",
        trip.hops
    );
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["alice@corp.example"]
    );
    assert_eq!(f.timesheet.hits(), 1);
}

#[tokio::test]
async fn logout_ends_the_session_here_and_at_the_idp() {
    let f = fixture("").await;
    let browser = f.signed_in(WIKI, "alice").await;
    // The browser keeps the ID token for logout, sent only to the gateway's own endpoints.
    assert!(browser
        .cookies_for(&f.url(WIKI, "/.portcullis/logout"))
        .contains("portcullis_idt="));
    assert!(!browser
        .cookies_for(&f.url(WIKI, "/reports"))
        .contains("portcullis_idt"));
    let trip = browser.follow(&f.url(WIKI, "/.portcullis/logout")).await;
    assert!(!browser
        .cookies_for(&f.url(WIKI, "/.portcullis/logout"))
        .contains("portcullis_idt"));
    let end_session = idp_logout_with_hint(&trip);
    assert_eq!(
        query_param(end_session, "post_logout_redirect_uri").as_deref(),
        Some(f.url(WIKI, "/.portcullis/logged-out").as_str())
    );
    let done = browser.confirm_logout(&trip).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.final_url(), f.url(WIKI, "/.portcullis/logged-out"));
    assert!(done.body.contains("Signed out"));
    assert!(!browser
        .cookies_for(&f.url(WIKI, "/"))
        .contains("portcullis_session"));

    // Next visit: back to the IdP, which asks for the password again.
    let next = browser.follow(&f.url(WIKI, "/")).await;
    assert!(next.is_login_form(), "{next:?}");
    let logs = f.gw.wait_for_log("event=\"logout\"").await;
    assert!(
        logs.contains("logout") && logs.contains("alice@corp.example"),
        "{logs}"
    );
}

/// The hop to the IdP's end-session endpoint, which must carry the ID token as a hint.
fn idp_logout_with_hint(trip: &support::browser::Trip) -> &str {
    let end_session = trip
        .hops
        .iter()
        .find(|h| h.contains("/session/end"))
        .unwrap();
    assert!(
        query_param(end_session, "id_token_hint").is_some(),
        "{end_session}"
    );
    end_session
}

/// `name=value` of the cookie `browser` would send to `url`.
fn cookie_pair(browser: &Browser, url: &str, name: &str) -> String {
    browser
        .cookies_for(url)
        .split("; ")
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn id_token_cookie_of_another_session_is_not_used_at_logout() {
    let f = fixture("").await;
    let alice = f.signed_in(WIKI, "alice").await;
    let bob = f.signed_in(WIKI, "bob").await;
    let logout = f.url(WIKI, "/.portcullis/logout");
    let bobs_token = cookie_pair(&bob, &logout, "portcullis_idt");
    let alices_session = cookie_pair(&alice, &logout, "portcullis_session");
    // Alice's session with Bob's (genuine, sealed) ID-token cookie: the token is not Alice's
    // session's, so the IdP is not told whose session to end on its strength.
    let stranger = Browser::new(f.gw.http, &[WIKI]);
    let response = stranger
        .get_with(
            &logout,
            &[("Cookie", &format!("{alices_session}; {bobs_token}"))],
        )
        .await;
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("/session/end"), "{location}");
    assert!(
        query_param(&location, "id_token_hint").is_none(),
        "{location}"
    );
    // A forged one is ignored too.
    let bob_again = f.signed_in(WIKI, "bob").await;
    let session = cookie_pair(&bob_again, &logout, "portcullis_session");
    let response = stranger
        .get_with(
            &logout,
            &[("Cookie", &format!("{session}; portcullis_idt=forged"))],
        )
        .await;
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(
        query_param(&location, "id_token_hint").is_none(),
        "{location}"
    );
}

#[tokio::test]
async fn app_logout_path_is_intercepted() {
    let f = fixture("").await;
    let browser = f.signed_in(TIMESHEET, "bob").await;
    let hits = f.timesheet.hits();
    let response = browser.get(&f.url(TIMESHEET, "/logout")).await;
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/.portcullis/logout");
    let trip = browser.follow(&f.url(TIMESHEET, "/logout")).await;
    idp_logout_with_hint(&trip);
    assert_eq!(
        f.timesheet.hits(),
        hits,
        "the backend's /logout is never reached"
    );
    // The gateway session is gone even before the IdP confirms.
    assert_eq!(browser.get(&f.url(TIMESHEET, "/")).await.status(), 302);
}

#[tokio::test]
async fn unreachable_idp_serves_public_paths_and_says_sign_in_is_unavailable() {
    let http = free_addr();
    let idp_addr = free_addr();
    let origins = [format!("http://{WIKI}:{}", http.port())];
    let client = IdpClient::gateway("portcullis", &origins);
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), &client.secret).unwrap();
    let wiki = echo_backend("wiki").await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&format!(
            "[idp.corp]\nkind = \"oidc\"\nissuer = \"http://127.0.0.1:{}\"\nallow_insecure_issuer = true\nclient_id = \"portcullis\"\nclient_secret_file = \"{}\"\nclaims = [\"department\"]\n",
            idp_addr.port(),
            secret.path().display()
        ))
        .policy("wiki.toml", app_policy("wiki", WIKI, &wiki.url(), ""))
        .idps_may_be_down()
        .start()
        .await;
    let browser = Browser::new(gw.http, &[WIKI]);
    let url = |p: &str| format!("http://{WIKI}:{}{p}", http.port());
    assert_eq!(browser.get(&url("/static/a.css")).await.status(), 200);
    let protected = browser.get(&url("/")).await;
    assert_eq!(protected.status(), 503);
    assert!(protected
        .text()
        .await
        .unwrap()
        .contains("Sign-in temporarily unavailable"));
    let logs = gw.wait_for_log("discovery failed").await;
    assert!(logs.contains("discovery failed"), "{logs}");
    let readyz = reqwest::get(format!("http://{}/readyz", gw.admin))
        .await
        .unwrap();
    assert_eq!(
        readyz.status(),
        503,
        "a gateway that cannot sign anyone in yet is not ready for new traffic"
    );
    let body = readyz.text().await.unwrap();
    assert!(
        body.contains("idp corp (oidc): discovery pending"),
        "{body}"
    );

    // The IdP comes up: discovery retries and sign-in starts working.
    let _idp = TestIdp::start_on(idp_addr, &[client]).await;
    for _ in 0..300 {
        if browser.get(&url("/")).await.status() == 302 {
            let body = reqwest::get(format!("http://{}/readyz", gw.admin))
                .await
                .unwrap();
            assert_eq!(body.status(), 200);
            assert!(body
                .text()
                .await
                .unwrap()
                .contains("idp corp (oidc): discovered, reachable"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "sign-in did not recover after the IdP came up:\n{}",
        gw.logs()
    );
}

/// An IdP that goes away after start: protected pages say sign-in is unavailable (503) instead
/// of sending browsers into a dead address, a callback that cannot reach the token endpoint
/// says the IdP was unreachable, and all is well again once it is back.
#[tokio::test]
async fn an_idp_that_goes_down_later_makes_sign_in_unavailable_until_it_is_back() {
    let http = free_addr();
    let origins = [format!("http://{WIKI}:{}", http.port())];
    let client = IdpClient::gateway("portcullis", &origins);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let idp_addr = idp.addr;
    let wiki = echo_backend("wiki").await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml(
            "corp",
            &client,
            "claims = [\"department\"]\nhealth_check_interval = \"1s\"\n",
        ))
        .policy("wiki.toml", app_policy("wiki", WIKI, &wiki.url(), ""))
        .start()
        .await;
    let url = |p: &str| format!("http://{WIKI}:{}{p}", http.port());
    let signed_in = Browser::new(gw.http, &[WIKI]);
    assert_eq!(
        signed_in.login(&url("/"), "alice", "alice-pw").await.status,
        200
    );
    // A login under way when the IdP dies: the browser is at the IdP's password form.
    let pending = Browser::new(gw.http, &[WIKI]);
    let form = pending.follow(&url("/pending")).await;
    assert!(form.is_login_form(), "{form:?}");
    let callback = pending.sign_in_stop_at_callback(&form).await;
    drop(idp);
    // The callback cannot exchange its code: the page says the IdP could not be reached.
    let r = pending.get(&callback).await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("could not be reached"), "{body}");
    assert!(!body.contains("opened twice"), "{body}");
    // New logins get the 503 page, not a redirect into the dead IdP.
    let anonymous = Browser::new(gw.http, &[WIKI]);
    let mut unavailable = false;
    for _ in 0..100 {
        let r = anonymous.get(&url("/")).await;
        if r.status() == 503 {
            assert!(r
                .text()
                .await
                .unwrap()
                .contains("Sign-in temporarily unavailable"));
            unavailable = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        unavailable,
        "logins still sent into a dead IdP:\n{}",
        gw.logs()
    );
    // Signed-in users keep working.
    assert_eq!(signed_in.get(&url("/docs")).await.status(), 200);
    let readyz = reqwest::get(format!("http://{}/readyz", gw.admin))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200, "signed-in users are still served");
    assert!(readyz
        .text()
        .await
        .unwrap()
        .contains("unreachable (sign-in unavailable)"));
    // The IdP returns (same address): sign-in works again by itself.
    // Users waiting at the sign-in page make the gateway look again (at most once a second),
    // so this comes back well before the watcher's backoff (up to 30 s) would have.
    let _back = TestIdp::start_on(idp_addr, &[client]).await;
    for _ in 0..200 {
        if anonymous.get(&url("/")).await.status() == 302 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sign-in did not come back:\n{}", gw.logs());
}

#[tokio::test]
async fn over_https_the_session_cookie_is_host_prefixed_and_secure() {
    let http = free_addr();
    let https = free_addr();
    let origin = format!("https://{WIKI}:{}", https.port());
    let mut client = IdpClient::gateway("portcullis", std::slice::from_ref(&origin));
    // The other token endpoint authentication, and the optional userinfo call.
    client.auth_method = "client_secret_post";
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let wiki = echo_backend("wiki").await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .https_addr(https)
        .gateway_toml(&idp.gateway_toml(
            "corp",
            &client,
            "token_auth = \"client_secret_post\"\nuserinfo = true\nclaims = [\"department\"]\n",
        ))
        .policy("wiki.toml", app_policy("wiki", WIKI, &wiki.url(), ""))
        .start()
        .await;
    let browser = Browser::new(https, &[WIKI]);
    let start = format!("{origin}/secure/page");
    let mut first = None;
    for _ in 0..200 {
        let r = browser.get(&start).await;
        if r.status() == 302 {
            first = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = first.expect("sign-in never became available");
    let binding = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(binding.starts_with("__Host-portcullis_login_"), "{binding}");
    assert!(
        binding.contains("; Secure") && binding.contains("HttpOnly") && binding.contains("Path=/"),
        "{binding}"
    );
    let authorize = first.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        query_param(&authorize, "redirect_uri").as_deref(),
        Some(format!("{origin}/.portcullis/oidc/callback").as_str())
    );
    let form = browser.follow(&authorize).await;
    let callback = browser.sign_in_stop_at_callback(&form).await;
    let response = browser.get(&callback).await;
    assert_eq!(response.status(), 302, "{}", gw.logs());
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-portcullis_session="))
        .unwrap_or_else(|| panic!("{cookies:?}"));
    for flag in ["; Path=/", "; HttpOnly", "; SameSite=Lax", "; Secure"] {
        assert!(session.contains(flag), "{flag} missing in {session}");
    }
    assert!(!session.contains("Domain="), "host-only: {session}");
    let page = browser.follow(&start).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        header_values(&page.json(), "x-remote-user"),
        ["alice@corp.example"]
    );
    // The HTTPS session is not valid on the plain listener (different cookie, never sent).
    let plain = Browser::new(http, &[WIKI]);
    let over_http = plain
        .get_with(
            &format!("http://{WIKI}:{}/secure/page", http.port()),
            &[
                ("accept", "text/html"),
                ("cookie", &browser.cookies_for(&start)),
            ],
        )
        .await;
    assert_eq!(over_http.status(), 302);
}

#[tokio::test]
async fn sessions_survive_a_configuration_reload() {
    let f = fixture("").await;
    let browser = f.signed_in(WIKI, "alice").await;
    // Tighten the wiki policy: finance only. Sessions stay; the new rule applies at once.
    let policy = app_policy("wiki", WIKI, &f.wiki.url(), "")
        .replace("groups = [\"staff\"]", "groups = [\"finance\"]");
    std::fs::write(f.gw.dir.path().join("policies/wiki.toml"), policy).unwrap();
    f.gw.signal("HUP");
    f.gw.wait_for_log("configuration reloaded").await;
    let again = browser.get(&f.url(WIKI, "/after-reload")).await;
    assert_eq!(again.status(), 200, "alice (finance) is still signed in");
    let bob = f.browser();
    let trip = bob.login(&f.url(WIKI, "/"), "bob", "bob-pw").await;
    assert_eq!(
        trip.status, 403,
        "bob is staff, not finance, under the reloaded policy"
    );
}

#[tokio::test]
async fn a_login_in_flight_finishes_across_a_configuration_reload() {
    let f = fixture("").await;
    let browser = f.browser();
    let form = browser.follow(&f.url(WIKI, "/in-flight")).await;
    assert!(form.is_login_form(), "{form:?}");
    // The gateway reloads while the user types their password.
    f.gw.signal("HUP");
    f.gw.wait_for_log("configuration reloaded").await;
    let trip = browser.sign_in(&form, "alice", "alice-pw").await;
    assert_eq!(trip.status, 200, "{trip:?}");
    assert_eq!(trip.final_url(), f.url(WIKI, "/in-flight"));
}

#[tokio::test]
async fn only_a_trusted_proxy_can_say_the_browser_used_https() {
    let forwarded_https = [("accept", "text/html"), ("x-forwarded-proto", "https")];
    // From an untrusted peer the header is ignored: plain http, plain cookie.
    let f = fixture("").await;
    let r = f
        .browser()
        .get_with(&f.url(WIKI, "/x"), &forwarded_https)
        .await;
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        query_param(&location, "redirect_uri").as_deref(),
        Some(f.url(WIKI, "/.portcullis/oidc/callback").as_str())
    );
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("portcullis_login_"));
    drop(f);

    // Behind a trusted TLS-terminating proxy: https redirect URI, __Host- Secure cookies.
    let f = fixture_with("", "[headers]\ntrusted_proxies = [\"127.0.0.1/32\"]\n").await;
    let browser = f.browser();
    let r = browser.get_with(&f.url(WIKI, "/x"), &forwarded_https).await;
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let https_origin = format!("https://{WIKI}:{}", f.gw.http.port());
    assert_eq!(
        query_param(&location, "redirect_uri"),
        Some(format!("{https_origin}/.portcullis/oidc/callback"))
    );
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("__Host-portcullis_login_") && cookie.contains("; Secure"),
        "{cookie}"
    );
}

#[tokio::test]
async fn malformed_sign_in_requests_are_refused_cleanly() {
    let f = fixture("").await;
    let host = format!("{WIKI}:{}", f.gw.http.port());
    let long_state = "A".repeat(6000);
    let cases: Vec<(String, &[u8])> = vec![
        ("GET /.portcullis/oidc/callback?state= HTTP/1.1".into(), b""),
        (
            "GET /.portcullis/oidc/callback?state=%FF%FE&code=%00 HTTP/1.1".into(),
            b"",
        ),
        (
            format!("GET /.portcullis/oidc/callback?state={long_state}&code=x HTTP/1.1"),
            b"",
        ),
        (
            "GET /.portcullis/oidc/callback?state=a&state=b&code=x&code=y HTTP/1.1".into(),
            b"",
        ),
        (
            "GET /.portcullis/oidc/callback?error=%0d%0aSet-Cookie:%20x=y&state=s HTTP/1.1".into(),
            b"",
        ),
        (
            "GET /.portcullis/oidc/callback?state=AAAAAAAAAAAAAAAAAAAA&code=x HTTP/1.1".into(),
            b"Cookie: portcullis_login_AAAAAAAAAAAAAAAA=%%%%; portcullis_session=\xff\xfe\r\n",
        ),
        (
            "GET /.portcullis/login?return_to=%00 HTTP/1.1".into(),
            b"Accept: text/html\r\n",
        ),
        (
            "POST /.portcullis/oidc/callback?state=a&code=b HTTP/1.1".into(),
            b"Content-Length: 0\r\n",
        ),
        (
            "GET /.portcullis/logout HTTP/1.1".into(),
            b"Cookie: portcullis_session=garbage\r\n",
        ),
        (
            "GET /.portcullis/userinfo HTTP/1.1".into(),
            b"Cookie: portcullis_session=;;==;\r\n",
        ),
        (
            "GET / HTTP/1.1".into(),
            b"Accept: text/html\r\nCookie: portcullis_session=\x01\x02\r\n",
        ),
    ];
    for (line, extra) in &cases {
        let mut request = format!("{line}\r\nHost: {host}\r\nConnection: close\r\n").into_bytes();
        request.extend_from_slice(extra);
        request.extend_from_slice(b"\r\n");
        let answer = raw_exchange(f.gw.http, &request).await;
        let status = raw_status(&answer);
        assert!((300..500).contains(&status), "{line}: {status}\n{answer}");
        assert!(
            !answer.contains("\r\nx=y") && !answer.contains("Set-Cookie: x=y"),
            "{line}"
        );
    }
    // Still serving, and no refused request reached the backend.
    assert_eq!(
        f.browser()
            .get(&f.url(WIKI, "/static/ok.css"))
            .await
            .status(),
        200
    );
    assert_eq!(f.wiki.hits(), 1);
}

#[tokio::test]
async fn https_idp_with_an_internal_ca_is_trusted_only_when_configured() {
    let http = free_addr();
    let origins = [format!("http://{WIKI}:{}", http.port())];
    let client = IdpClient::gateway("portcullis", &origins);
    let idp = TestIdp::start_tls(std::slice::from_ref(&client)).await;
    assert!(idp.issuer.starts_with("https://localhost:"));
    let wiki = echo_backend("wiki").await;
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp", &client, "claims = [\"department\"]\n"))
        .policy("wiki.toml", app_policy("wiki", WIKI, &wiki.url(), ""))
        .start()
        .await;
    let browser = Browser::new(http, &[WIKI]);
    let trip = browser
        .login(&format!("http://{WIKI}:{}/", http.port()), "bob", "bob-pw")
        .await;
    assert_eq!(trip.status, 200, "{trip:?}");
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["bob@corp.example"]
    );
    drop(gw);

    // Without the CA, the IdP's certificate is not trusted: no discovery, no sign-in.
    let untrusting = idp
        .gateway_toml("corp", &client, "claims = [\"department\"]\n")
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .collect::<Vec<_>>()
        .join("\n");
    let gw = GatewaySpec::new()
        .gateway_toml(&untrusting)
        .policy("wiki.toml", app_policy("wiki", WIKI, &wiki.url(), ""))
        .idps_may_be_down()
        .start()
        .await;
    let logs = gw.wait_for_log("discovery failed").await;
    assert!(logs.contains("certificate"), "{logs}");
    let browser = Browser::new(gw.http, &[WIKI]);
    let page = browser
        .get(&format!("http://{WIKI}:{}/", gw.http.port()))
        .await;
    assert_eq!(page.status(), 503);
}

/// The gateway callback URL a trip passed through.
fn callback_hop(trip: &support::browser::Trip) -> String {
    trip.hops
        .iter()
        .find(|h| h.contains("/.portcullis/oidc/callback?"))
        .unwrap_or_else(|| panic!("no callback in {:?}", trip.hops))
        .clone()
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

const MFA_RULE: &str = "[[require]]\nid = \"mfa-for-payroll\"\nwhy = \"Payroll needs a second factor\"\npaths = [\"/payroll/**\"]\nacr = [\"mfa\"]\n";

/// Submits the IdP's one-time-code form reached by `trip`.
async fn enter_code(
    browser: &Browser,
    trip: &support::browser::Trip,
    code: &str,
) -> support::browser::Trip {
    assert!(
        trip.body.contains("name=\"otp\""),
        "expected the IdP's code form: {trip:?}"
    );
    let action = support::browser::form_action(&trip.body);
    let url = url::Url::parse(trip.final_url())
        .unwrap()
        .join(&action)
        .unwrap();
    browser.submit(url.as_str(), &[("otp", code)]).await
}

#[tokio::test]
async fn a_path_requiring_mfa_sends_a_password_session_back_for_a_second_factor() {
    let f = fixture(MFA_RULE).await;
    let browser = f.signed_in(WIKI, "alice").await;
    // The password session serves the rest of the wiki…
    assert_eq!(browser.follow(&f.url(WIKI, "/pages")).await.status, 200);
    // …but not payroll: API calls are told why, page loads go to the IdP for a step-up.
    let api = browser
        .get_with(
            &f.url(WIKI, "/payroll/slip"),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(api.status(), 401);
    assert!(api.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_user_authentication"));
    let weak_cookie = browser.cookies_for(&f.url(WIKI, "/"));
    let first = browser.get(&f.url(WIKI, "/payroll/slip?month=11")).await;
    assert_eq!(first.status(), 302);
    let to_idp = first.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(query_param(&to_idp, "acr_values").as_deref(), Some("mfa"));
    assert_eq!(query_param(&to_idp, "prompt").as_deref(), Some("login"));
    assert_eq!(
        f.wiki.hits(),
        2,
        "payroll reached the backend before the step-up"
    );

    // The IdP asks for the password again, then for the code; a wrong code gets nowhere.
    let form = browser.follow(&to_idp).await;
    let code_form = browser.sign_in(&form, "alice", "alice-pw").await;
    let wrong = enter_code(&browser, &code_form, "000000").await;
    assert!(wrong.body.contains("Wrong code"), "{wrong:?}");
    let trip = enter_code(&browser, &wrong, "246810").await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert_eq!(trip.final_url(), f.url(WIKI, "/payroll/slip?month=11"));
    assert_eq!(
        header_values(&trip.json(), "x-remote-user"),
        ["alice@corp.example"]
    );
    let logs = f.gw.logs();
    let step = logs
        .lines()
        .find(|l| l.contains("step-up sign-in succeeded"))
        .unwrap_or_else(|| panic!("no step-up audit record:\n{logs}"));
    assert!(
        step.contains("rule=\"mfa-for-payroll\"") && step.contains("acr=mfa"),
        "{step}"
    );
    assert!(step.contains("amr=pwd,otp"), "{step}");
    // The upgraded session keeps serving payroll without another prompt.
    assert_eq!(
        browser.follow(&f.url(WIKI, "/payroll/other")).await.status,
        200
    );
    // The password-only session it replaced is gone: its cookie no longer signs anyone in.
    let replay =
        f.gw.client(&[WIKI])
            .get(f.url(WIKI, "/pages"))
            .header("cookie", weak_cookie)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
    assert_eq!(replay.status(), 302, "the replaced session still works");
    let strong_cookie = browser.cookies_for(&f.url(WIKI, "/"));
    let control =
        f.gw.client(&[WIKI])
            .get(f.url(WIKI, "/pages"))
            .header("cookie", strong_cookie)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
    assert_eq!(
        control.status(),
        200,
        "the same request with the new cookie must work"
    );
}

#[tokio::test]
async fn a_step_up_by_another_user_is_refused() {
    let f = fixture(MFA_RULE).await;
    let alice = f.signed_in(WIKI, "alice").await;
    // Alice's gateway session, in a browser with no IdP session (so the IdP simply asks).
    let browser = f.browser();
    let gateway_url = url::Url::parse(&f.url(WIKI, "/")).unwrap();
    for cookie in alice.cookies_for(gateway_url.as_str()).split("; ") {
        reqwest::cookie::CookieStore::set_cookies(
            browser.jar.as_ref(),
            &mut [reqwest::header::HeaderValue::from_str(cookie).unwrap()].iter(),
            &gateway_url,
        );
    }
    let first = browser.get(&f.url(WIKI, "/payroll/slip")).await;
    assert_eq!(first.status(), 302);
    let to_idp = first.headers()["location"].to_str().unwrap().to_string();
    let form = browser.follow(&to_idp).await;
    // Bob completes the password and second factor in the step-up alice's session started.
    let code_form = browser.sign_in(&form, "bob", "bob-pw").await;
    let trip = enter_code(&browser, &code_form, "246810").await;
    assert_eq!(trip.status, 400, "{trip:?}");
    let logs = f.gw.logs();
    assert!(logs.contains("a different user signed in"), "{logs}");
    assert!(!trip.body.contains("payroll"), "{}", trip.body);
}

#[tokio::test]
async fn identity_cookies_reach_the_backend_and_client_copies_never_do() {
    let f = fixture("[identity.cookies]\nREMOTE_USER = \"email\"\nDEPT-GROUPS = { claim = \"groups\", join = \"|\" }\n").await;
    let browser = f.signed_in(WIKI, "alice").await;
    // The browser tries to smuggle its own copies, in other spellings too (next to its real
    // session cookie, which a hand-written Cookie header must carry itself).
    let smuggling = format!(
        "{}; REMOTE_USER=admin@corp.example; remote-user=x; Dept_Groups=admins; theme=dark",
        browser.cookies_for(&f.url(WIKI, "/"))
    );
    let r = browser
        .get_with(
            &f.url(WIKI, "/pages"),
            &[("accept", "text/html"), ("cookie", smuggling.as_str())],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap().contains("REMOTE_USER")));
    let echo: serde_json::Value = r.json().await.unwrap();
    let cookie = header_values(&echo, "cookie").join("; ");
    assert!(
        cookie.contains("REMOTE_USER=alice@corp.example"),
        "{cookie}"
    );
    assert!(cookie.contains("DEPT-GROUPS=staff|finance"), "{cookie}");
    assert!(cookie.contains("theme=dark"), "{cookie}");
    for smuggled in [
        "admin@corp.example",
        "remote-user=x",
        "Dept_Groups=admins",
        "portcullis",
    ] {
        assert!(
            !cookie.contains(smuggled),
            "{smuggled} reached the backend: {cookie}"
        );
    }
    // Anonymous, on a public path: no identity cookie, and the client's copy is still removed.
    let anon = f
        .browser()
        .get_with(
            &f.url(WIKI, "/static/logo.png"),
            &[("cookie", "REMOTE_USER=admin@corp.example")],
        )
        .await;
    assert_eq!(anon.status(), 200);
    let echo: serde_json::Value = anon.json().await.unwrap();
    assert!(header_values(&echo, "cookie").is_empty(), "{echo}");
}

/// The signed identity assertion: verified with the key published at /.portcullis/jwks.json,
/// naming the user and the app, short-lived, unique, and impossible for a client to supply.
#[tokio::test]
async fn a_signed_identity_assertion_reaches_the_backend_and_verifies() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{decode, decode_header, jwk::JwkSet, Algorithm, DecodingKey, Validation};
    let key = support::dev_cert("jwt-signing.key");
    let f = fixture_with(
        "[identity]\njwt_header = \"X-Portcullis-Jwt-Assertion\"\n",
        &format!(
            "[jwt]\nkey_files = [\"{}\"]\nissuer = \"portcullis-test\"\nttl = \"2m\"\n",
            key.display()
        ),
    )
    .await;
    let browser = f.signed_in(WIKI, "alice").await;
    let fetch = |path: &'static str| {
        let browser = &browser;
        let url = f.url(WIKI, path);
        async move {
            let r = browser
                .get_with(
                    &url,
                    &[
                        ("accept", "text/html"),
                        ("x-portcullis-jwt-assertion", "forged.by.client"),
                    ],
                )
                .await;
            let echo: serde_json::Value = r.json().await.unwrap();
            header_values(&echo, "x-portcullis-jwt-assertion")
        }
    };
    let first = fetch("/pages").await;
    let second = fetch("/pages").await;
    assert_eq!(
        first.len(),
        1,
        "exactly one assertion, the client's copy stripped: {first:?}"
    );
    let token = first[0].clone();
    assert_ne!(token, "forged.by.client");
    let parts: Vec<&str> = token.split('.').collect();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "portcullis-test");
    assert_eq!(claims["aud"], "wiki");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@corp.example");
    assert_eq!(claims["groups"], serde_json::json!(["staff", "finance"]));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        120
    );
    let second_claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(second[0].split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_ne!(claims["jti"], second_claims["jti"], "jti must be unique");

    // Verify with the published key, as a backend would: signature, issuer, audience, expiry.
    let jwks: JwkSet = f
        .browser()
        .get_with(&f.url(WIKI, "/.portcullis/jwks.json"), &[])
        .await
        .json()
        .await
        .unwrap();
    let header = decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.unwrap();
    let jwk = jwks
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} not published"));
    let public = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&["portcullis-test"]);
    validation.set_audience(&["wiki"]);
    let verified = decode::<serde_json::Value>(&token, &public, &validation)
        .unwrap_or_else(|e| panic!("assertion does not verify: {e}"));
    assert_eq!(verified.claims["sub"], "alice");
    // Addressed to the wiki only: another app refuses it.
    validation.set_audience(&["timesheet"]);
    assert!(decode::<serde_json::Value>(&token, &public, &validation).is_err());
    // Anonymous public requests carry no assertion.
    let anon = f.browser().get(&f.url(WIKI, "/static/logo.png")).await;
    let echo: serde_json::Value = anon.json().await.unwrap();
    assert!(header_values(&echo, "x-portcullis-jwt-assertion").is_empty());
}

/// HTTP Basic replay from the vault: enrollment once, then the backend's Basic prompt never
/// reaches the browser; a changed password sends the user back to update it; the vault file
/// holds no plaintext.
#[tokio::test]
async fn basic_replay_from_the_vault_with_enrollment_and_recovery() {
    let legacy = support::basic_backend("legacy-basic", "asmith", "Winter2026!").await;
    let dir = tempfile::tempdir().unwrap();
    let (vault_toml, vault_file) = vault_in(dir.path(), 7);
    let f = fixture_with("", &vault_toml).await;
    // A third app on the timesheet host would need its own fixture; the wiki stays as is and
    // the timesheet policy is swapped for one that replays Basic credentials.
    let policy = format!(
        "schema = 1\napp = \"timesheet\"\nowner = \"o@corp.example\"\nsummary = \"Legacy app behind HTTP Basic\"\nhosts = [\"{TIMESHEET}\"]\nupstreams = [{{ url = \"{}\" }}]\nidp = \"corp\"\n\n[identity.basic]\nusername = \"vault\"\n\n[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\n",
        legacy.backend.url()
    );
    replace_timesheet_policy(&f, &policy).await;

    let browser = f.signed_in(TIMESHEET, "alice").await;
    // No stored credential yet: the enrollment page, not the backend's Basic prompt.
    let trip = browser.follow(&f.url(TIMESHEET, "/reports?week=47")).await;
    assert!(
        trip.final_url()
            .contains("/.portcullis/credentials/timesheet"),
        "{trip:?}"
    );
    assert!(
        trip.body.contains("name=\"password\"") && trip.body.contains("name=\"username\""),
        "{}",
        trip.body
    );
    let before = legacy.backend.hits();
    // A cross-site post (the victim's browser, the attacker's form: no matching token) is
    // refused and stores nothing.
    let forged = browser
        .submit(
            &f.url(TIMESHEET, "/.portcullis/credentials/timesheet"),
            &[
                ("username", "asmith"),
                ("password", "evil"),
                ("csrf", "guess"),
            ],
        )
        .await;
    assert_eq!(forged.status, 400, "{forged:?}");
    assert!(!vault_file.exists(), "a forged form stored a credential");
    let csrf = support::browser::hidden_input(&trip.body, "csrf");
    let return_to = support::browser::hidden_input(&trip.body, "return_to");
    let back = browser
        .submit(
            &f.url(TIMESHEET, "/.portcullis/credentials/timesheet"),
            &[
                ("username", "asmith"),
                ("password", "Winter2026!"),
                ("csrf", &csrf),
                ("return_to", &return_to),
            ],
        )
        .await;
    assert_eq!(back.status, 200, "{back:?}\n{}", f.gw.logs());
    assert_eq!(back.final_url(), f.url(TIMESHEET, "/reports?week=47"));
    let echo = back.json();
    assert_eq!(echo["backend"], "legacy-basic");
    assert!(legacy.backend.hits() > before);
    // The browser's own Authorization header never reaches the backend.
    let r = browser
        .get_with(
            &f.url(TIMESHEET, "/x"),
            &[
                ("accept", "text/html"),
                ("authorization", "Basic ZXZlOmV2ZQ=="),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    // The vault holds no plaintext, and nothing of it is logged.
    let stored = std::fs::read_to_string(&vault_file).unwrap();
    assert!(
        !stored.contains("Winter2026") && !stored.contains("asmith"),
        "{stored}"
    );
    assert!(!f.gw.settled_logs().await.contains("Winter2026"));

    // The password changes at the app: the next page asks the user for the new one.
    legacy.set_password("Spring2027!");
    let trip = browser.follow(&f.url(TIMESHEET, "/reports")).await;
    assert!(
        trip.final_url()
            .contains("/.portcullis/credentials/timesheet?failed=1"),
        "{trip:?}"
    );
    assert!(
        trip.body.contains("refused the stored password"),
        "{}",
        trip.body
    );
    let again = store_password(&f, &browser, &trip, "asmith", "Spring2027!", "/reports").await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json()["backend"], "legacy-basic");
    assert!(!f.gw.settled_logs().await.contains("Spring2027"));
}

/// A `[vault]` table over a fresh store in `dir` with a test key of `byte`s; returns it and
/// the store's path.
fn vault_in(dir: &std::path::Path, byte: u8) -> (String, std::path::PathBuf) {
    let key = dir.join("vault.key");
    std::fs::write(&key, [byte; 32]).unwrap();
    let file = dir.join("vault.json");
    let toml = format!(
        "[vault]\nfile = \"{}\"\nkeys = [{{ id = \"k1\", file = \"{}\" }}]\n",
        file.display(),
        key.display()
    );
    (toml, file)
}

/// Swaps the timesheet's policy for `policy` and waits for the reload.
async fn replace_timesheet_policy(f: &Fixture, policy: &str) {
    std::fs::write(f.gw.dir.path().join("policies/timesheet.toml"), policy).unwrap();
    f.gw.signal("HUP");
    f.gw.wait_for_log("configuration reloaded").await;
}

/// Fills the enrollment page reached by `page` (its CSRF token included) and follows back.
async fn store_password(
    f: &Fixture,
    browser: &Browser,
    page: &support::browser::Trip,
    username: &str,
    password: &str,
    return_to: &str,
) -> support::browser::Trip {
    let csrf = support::browser::hidden_input(&page.body, "csrf");
    browser
        .submit(
            &f.url(TIMESHEET, "/.portcullis/credentials/timesheet"),
            &[
                ("username", username),
                ("password", password),
                ("csrf", &csrf),
                ("return_to", return_to),
            ],
        )
        .await
}

#[tokio::test]
async fn form_fill_logs_in_server_side_and_the_browser_never_sees_the_form() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::write(&users, r#"{"asmith": "Winter2026!"}"#).unwrap();
    let port = support::free_addr().port();
    let mut app = FormApp::start(port, &users).await;
    let (vault_toml, vault_file) = vault_in(dir.path(), 9);
    let f = fixture_with("", &vault_toml).await;
    let policy = format!(
        "schema = 1\napp = \"timesheet\"\nowner = \"o@corp.example\"\nsummary = \"Legacy app with its own login form\"\nhosts = [\"{TIMESHEET}\"]\nupstreams = [{{ url = \"http://127.0.0.1:{port}\" }}]\nidp = \"corp\"\n\n[form_fill]\nlogin_url = \"/login\"\nusername_field = \"user\"\npassword_field = \"pass\"\ncsrf_field = \"csrf_token\"\n\n[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\n"
    );
    replace_timesheet_policy(&f, &policy).await;

    let browser = f.signed_in(TIMESHEET, "alice").await;
    let json = [("accept", "application/json, text/html")];
    // First visit: the user stores the app password once.
    let trip = browser.follow(&f.url(TIMESHEET, "/dashboard")).await;
    assert!(
        trip.final_url()
            .contains("/.portcullis/credentials/timesheet"),
        "{trip:?}"
    );
    let back = store_password(&f, &browser, &trip, "asmith", "Winter2026!", "/dashboard").await;
    assert_eq!(back.status, 200, "{back:?}\n{}", f.gw.logs());
    assert!(
        back.body.contains("Welcome back, <b>asmith</b>"),
        "{}",
        back.body
    );
    assert_eq!(app.stats().await["logins"], 1);
    // Nothing of the backend's session or the password ever reaches the browser.
    let check = |r: &reqwest::Response, what: &str| {
        for c in r.headers().get_all("set-cookie") {
            assert!(
                !c.to_str().unwrap().contains("APPSESSION"),
                "{what}: backend cookie leaked"
            );
        }
    };
    for path in ["/dashboard", "/reports/1", "/login"] {
        let r = browser.get_with(&f.url(TIMESHEET, path), &json).await;
        check(&r, path);
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("Winter2026") && !body.contains("name=pass"),
            "{path}: {body}"
        );
        if path == "/login" {
            // Asking for the backend's own login page leads to the start page instead.
            assert_eq!(status, 302, "{path}");
        } else {
            assert_eq!(status, 200, "{path}: {body}");
        }
    }
    assert!(!browser
        .cookies_for(&f.url(TIMESHEET, "/"))
        .contains("APPSESSION"));
    assert_eq!(
        app.stats().await["logins"],
        1,
        "one login serves the whole session"
    );

    // The backend restarts and forgets its sessions: the next request logs in again, unseen.
    app.restart().await;
    let trip = browser.follow(&f.url(TIMESHEET, "/reports/2")).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert!(trip.body.contains("asmith"), "{}", trip.body);
    assert_eq!(
        app.stats().await["logins"],
        1,
        "exactly one re-login after the restart"
    );

    // Twenty concurrent first requests in a new session: exactly one backend login.
    app.restart().await;
    let fresh = f.signed_in(TIMESHEET, "alice").await;
    let requests = (0..20).map(|i| {
        let url = f.url(TIMESHEET, &format!("/page/{i}"));
        let fresh = &fresh;
        async move { fresh.follow(&url).await.status }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        app.stats().await["logins"],
        1,
        "concurrent first requests logged in more than once"
    );

    // The password changes at the app: the user is asked for the new one, then all is well.
    std::fs::write(&users, r#"{"asmith": "Spring2027!"}"#).unwrap();
    app.restart().await;
    let trip = browser.follow(&f.url(TIMESHEET, "/dashboard")).await;
    assert!(trip.final_url().contains("failed=1"), "{trip:?}");
    assert!(
        trip.body.contains("refused the stored password"),
        "{}",
        trip.body
    );
    let back = store_password(&f, &browser, &trip, "asmith", "Spring2027!", "/dashboard").await;
    assert_eq!(back.status, 200, "{back:?}");
    assert!(back.body.contains("asmith"));
    // The vault file holds no plaintext; the logs never held the passwords.
    let stored = std::fs::read_to_string(&vault_file).unwrap();
    assert!(
        !stored.contains("Winter2026")
            && !stored.contains("Spring2027")
            && !stored.contains("asmith")
    );
    let logs = f.gw.settled_logs().await;
    assert!(
        !logs.contains("Winter2026") && !logs.contains("Spring2027"),
        "password in logs"
    );
}

/// A form-login app behind a private CA: the gateway's own login to the form must trust exactly
/// what the proxy trusts (`[upstream_tls] ca_file`), or the app cannot be signed in to at all.
#[tokio::test]
async fn form_fill_reaches_an_https_backend_through_the_apps_upstream_tls_settings() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::write(&users, r#"{"svc": "Shared-2026"}"#).unwrap();
    let secret = dir.path().join("svc.secret");
    std::fs::write(&secret, "Shared-2026\n").unwrap();
    let port = support::free_addr().port();
    let _app = FormApp::start_tls(port, &users).await;
    let f = fixture("").await;
    let policy = |tls: &str| {
        format!(
            "schema = 1\napp = \"timesheet\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"{TIMESHEET}\"]\nupstreams = [{{ url = \"https://localhost:{port}\" }}]\nidp = \"corp\"\n{tls}\n\n[form_fill]\nlogin_url = \"/login\"\nusername_field = \"user\"\npassword_field = \"pass\"\ncsrf_field = \"csrf_token\"\nservice_username = \"svc\"\nservice_password_file = \"{}\"\n\n[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\n",
            secret.display()
        )
    };
    let with_ca = format!(
        "[upstream_tls]\nca_file = \"{}\"",
        support::dev_cert("ca.crt").display()
    );
    replace_timesheet_policy(&f, &policy(&with_ca)).await;
    let browser = f.signed_in(TIMESHEET, "bob").await;
    let trip = browser.follow(&f.url(TIMESHEET, "/week")).await;
    assert_eq!(trip.status, 200, "{trip:?}\n{}", f.gw.logs());
    assert!(
        trip.body.contains("Welcome back, <b>svc</b>"),
        "{}",
        trip.body
    );
    // Without the CA, neither the proxy nor the form login may trust the backend.
    replace_timesheet_policy(&f, &policy("")).await;
    let fresh = f.browser();
    let trip = fresh
        .login(&f.url(TIMESHEET, "/week"), "alice", "alice-pw")
        .await;
    assert_eq!(trip.status, 502, "{trip:?}");
    assert!(f.gw.logs().contains("backend login"), "{}", f.gw.logs());
}

/// Apps with a single shared account: the service credential is replayed for every user, no
/// vault and no enrollment; the client's own Authorization never passes.
#[tokio::test]
async fn a_service_account_is_replayed_for_every_user() {
    let legacy = support::basic_backend("shared-basic", "svc-portal", "S3rvice!").await;
    let f = fixture("").await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("svc.secret");
    std::fs::write(&secret, "S3rvice!\n").unwrap();
    let policy = format!(
        "schema = 1\napp = \"timesheet\"\nowner = \"o@corp.example\"\nsummary = \"one shared account\"\nhosts = [\"{TIMESHEET}\"]\nupstreams = [{{ url = \"{}\" }}]\nidp = \"corp\"\n\n[identity.basic]\nservice_username = \"svc-portal\"\nservice_password_file = \"{}\"\n\n[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\n",
        legacy.backend.url(),
        secret.display()
    );
    replace_timesheet_policy(&f, &policy).await;
    for user in ["alice", "bob"] {
        let browser = f.signed_in(TIMESHEET, user).await;
        let trip = browser.follow(&f.url(TIMESHEET, "/x")).await;
        assert_eq!(trip.status, 200, "{user}: {trip:?}");
        assert_eq!(trip.json()["backend"], "shared-basic");
    }
    assert!(!f.gw.settled_logs().await.contains("S3rvice"));
}

/// A backend that says "session expired" in a 200 page instead of redirecting: the configured
/// marker makes the gateway log in again on the next request.
#[tokio::test]
async fn form_fill_logs_in_again_after_a_logged_out_marker() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::write(&users, r#"{"svc": "Shared-2026"}"#).unwrap();
    let secret = dir.path().join("svc.secret");
    std::fs::write(&secret, "Shared-2026\n").unwrap();
    let port = support::free_addr().port();
    let mut app = FormApp::start(port, &users).await;
    let f = fixture("").await;
    let policy = format!(
        "schema = 1\napp = \"timesheet\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"{TIMESHEET}\"]\nupstreams = [{{ url = \"http://127.0.0.1:{port}\" }}]\nidp = \"corp\"\n\n[form_fill]\nlogin_url = \"/login\"\nusername_field = \"user\"\npassword_field = \"pass\"\ncsrf_field = \"csrf_token\"\nlogged_out_marker = \"Your session has expired\"\nservice_username = \"svc\"\nservice_password_file = \"{}\"\n\n[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\n",
        secret.display()
    );
    replace_timesheet_policy(&f, &policy).await;
    let browser = f.signed_in(TIMESHEET, "bob").await;
    assert!(browser
        .follow(&f.url(TIMESHEET, "/soft/a"))
        .await
        .body
        .contains("Welcome back, <b>svc</b>"));
    assert_eq!(app.stats().await["logins"], 1);
    app.restart().await;
    let notice = browser.follow(&f.url(TIMESHEET, "/soft/b")).await;
    assert!(notice.body.contains("session has expired"), "{notice:?}");
    let again = browser.follow(&f.url(TIMESHEET, "/soft/c")).await;
    assert!(
        again.body.contains("Welcome back, <b>svc</b>"),
        "{again:?}\n{}",
        f.gw.logs()
    );
    assert_eq!(app.stats().await["logins"], 1, "one login after the marker");
}

/// What a real browser does around the enrollment form: it asks for `/favicon.ico` (and other
/// sub-resources) on its own. Those never get the enrollment redirect, and nothing but a new
/// session changes the form's token; a token from another session is "expired".
#[tokio::test]
async fn enrollment_survives_the_browsers_own_requests_and_refuses_other_sessions_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::write(&users, r#"{"asmith": "Winter2026!"}"#).unwrap();
    let port = support::free_addr().port();
    let _app = FormApp::start(port, &users).await;
    let (vault_toml, _) = vault_in(dir.path(), 5);
    let f = fixture_with("", &vault_toml).await;
    let policy = format!(
        "schema = 1\napp = \"timesheet\"\nowner = \"o@corp.example\"\nsummary = \"Legacy app with its own login form\"\nhosts = [\"{TIMESHEET}\"]\nupstreams = [{{ url = \"http://127.0.0.1:{port}\" }}]\nidp = \"corp\"\n\n[form_fill]\nlogin_url = \"/login\"\nusername_field = \"user\"\npassword_field = \"pass\"\ncsrf_field = \"csrf_token\"\n\n[[allow]]\nid = \"staff\"\nwhy = \"s\"\ngroups = [\"staff\"]\n"
    );
    replace_timesheet_policy(&f, &policy).await;
    let alice = f.signed_in(TIMESHEET, "alice").await;
    let page = alice.follow(&f.url(TIMESHEET, "/dashboard")).await;
    assert!(
        page.final_url()
            .contains("/.portcullis/credentials/timesheet"),
        "{page:?}"
    );
    assert!(
        page.body.contains("PORTCULLIS"),
        "the enrollment page is unstyled"
    );
    let token = support::browser::hidden_input(&page.body, "csrf");
    // The browser's own favicon request while the form is shown: no redirect to the form.
    let favicon = alice
        .get_with(
            &f.url(TIMESHEET, "/favicon.ico"),
            &[
                ("accept", "image/avif,image/webp,*/*"),
                ("sec-fetch-mode", "no-cors"),
            ],
        )
        .await;
    assert_eq!(favicon.status(), 401, "{:?}", favicon.headers());
    assert!(favicon.headers().get("location").is_none());
    assert!(favicon.headers().get("set-cookie").is_none());
    // The form shown again (another tab): the same token.
    let again = alice.follow(&f.url(TIMESHEET, "/dashboard")).await;
    assert_eq!(support::browser::hidden_input(&again.body, "csrf"), token);
    // bob's token in alice's post: refused as an expired form, nothing stored.
    let bob = f.signed_in(TIMESHEET, "bob").await;
    let bobs_page = bob.follow(&f.url(TIMESHEET, "/dashboard")).await;
    let bobs_token = support::browser::hidden_input(&bobs_page.body, "csrf");
    assert_ne!(bobs_token, token);
    let forged = alice
        .submit(
            &f.url(TIMESHEET, "/.portcullis/credentials/timesheet"),
            &[
                ("username", "asmith"),
                ("password", "Winter2026!"),
                ("csrf", &bobs_token),
                ("return_to", "/dashboard"),
            ],
        )
        .await;
    assert_eq!(forged.status, 400, "{forged:?}");
    assert!(forged.body.contains("This form expired"), "{}", forged.body);
    // With her own token (taken before the favicon request), alice's post works.
    let back = store_password(&f, &alice, &page, "asmith", "Winter2026!", "/dashboard").await;
    assert_eq!(back.status, 200, "{back:?}\n{}", f.gw.logs());
    assert!(
        back.body.contains("Welcome back, <b>asmith</b>"),
        "{}",
        back.body
    );
}
