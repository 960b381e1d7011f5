//! Legacy apps as they are: one that knows only its internal name (redirects, cookies and
//! links to `http://intranet-host:8080`), backends that die and come back (active health
//! checks), a backend that demands a client certificate or speaks only old TLS, an app down
//! for maintenance, and identity lists delivered the way an old app reads them. Every backend
//! is the sample app `deploy/sample-apps/internal_name_app.py`, a real process; sign-in goes
//! through the real OpenID Provider.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::io::Read;
use std::time::{Duration, Instant};
use support::browser::Browser;
use support::idp::{IdpClient, TestIdp};
use support::internal_app::{InternalApp, INTERNAL_ORIGIN};
use support::{dev_cert, free_addr, open_policy, GatewaySpec, RunningGateway};

const INTRANET: &str = "intranet.portcullis.localhost";
const HEADERS_ONLY: &str = "plain.portcullis.localhost";
const PREFIXED: &str = "paths.portcullis.localhost";

fn port() -> u16 {
    free_addr().port()
}

async fn body(
    gw: &RunningGateway,
    host: &str,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let r = gw.get(host, path).await;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

#[tokio::test]
async fn an_app_that_knows_only_its_internal_name_is_served_under_its_public_one() {
    let app = InternalApp::start(port()).await;
    let rewrite = format!(
        "[rewrite]\ninternal_origins = [\"{INTERNAL_ORIGIN}\"]\nbody = [\"text/html\", \"text/css\", \"application/javascript\"]\n"
    );
    let headers_only = format!("[rewrite]\ninternal_origins = [\"{INTERNAL_ORIGIN}\"]\n");
    let gw = GatewaySpec::new()
        .policy(
            "intranet.toml",
            open_policy("intranet", &[INTRANET], &[(&app.url(), 1)], &rewrite),
        )
        .policy(
            "plain.toml",
            open_policy("plain", &[HEADERS_ONLY], &[(&app.url(), 1)], &headers_only),
        )
        .policy(
            "paths.toml",
            open_policy(
                "paths",
                &[PREFIXED],
                &[(&app.url(), 1)],
                &format!("path_prefix = \"/hr\"\n{headers_only}"),
            ),
        )
        .start()
        .await;
    let public = format!("http://{INTRANET}:{}", gw.http.port());

    // Redirects and Refresh move to the public origin; the path and query stay.
    let (status, headers, _) = body(&gw, INTRANET, "/go").await;
    assert_eq!(status, 302);
    assert_eq!(headers["location"], format!("{public}/landing?from=go"));
    let (_, headers, _) = body(&gw, INTRANET, "/refresh").await;
    assert_eq!(headers["refresh"], format!("0; url={public}/landing"));

    // A cookie for the internal domain becomes the public host's own; others are untouched.
    let (_, headers, _) = body(&gw, INTRANET, "/login").await;
    let cookies: Vec<&str> = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    let session = cookies
        .iter()
        .find(|c| c.starts_with("APPSESSION="))
        .unwrap();
    assert!(
        !session.to_ascii_lowercase().contains("domain"),
        "{session}"
    );
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(cookies.contains(&"THEME=dark; Path=/"), "{cookies:?}");

    // Pages, style sheets and scripts: every internal URL is public, nothing else changes.
    let (status, headers, page) = body(&gw, INTRANET, "/").await;
    assert_eq!(status, 200);
    assert!(!page.contains("intranet-host"), "{page}");
    assert!(
        page.contains(&format!("href=\"{public}/reports/q3?x=1\"")),
        "{page}"
    );
    assert!(page.contains("href=\"https://www.example.org/\""), "{page}");
    assert!(
        headers.get("content-length").is_none(),
        "streamed, so no stale length"
    );
    let (_, _, css) = body(&gw, INTRANET, "/style.css").await;
    assert_eq!(
        css,
        format!("body {{ background: url({public}/bg.png) }}\n")
    );
    let (_, _, js) = body(&gw, INTRANET, "/app.js").await;
    assert!(js.contains(&format!("var API = \"{public}/api\"")), "{js}");
    assert!(
        js.contains(&public.replace('/', "\\/")),
        "JSON-escaped URL: {js}"
    );
    assert!(!js.contains("intranet-host"), "{js}");

    // A backend that compresses anyway: decoded, rewritten, sent plain.
    let (status, headers, page) = body(&gw, INTRANET, "/gz").await;
    assert_eq!(status, 200);
    assert!(headers.get("content-encoding").is_none(), "{headers:?}");
    assert!(page.contains(&format!("{public}/reports/q3")) && !page.contains("intranet-host"));

    // A long page in small chunks: every link rewritten, wherever the chunks split it.
    let (_, _, big) = body(&gw, INTRANET, "/big").await;
    assert_eq!(big.lines().count(), 2000);
    assert_eq!(big.matches(&format!("{public}/x")).count(), 2000);
    assert!(!big.contains("intranet-host"));

    // Without `body`, pages are the app's own bytes, but its redirects still move.
    let plain_public = format!("http://{HEADERS_ONLY}:{}", gw.http.port());
    let (_, _, page) = body(&gw, HEADERS_ONLY, "/").await;
    assert!(
        page.contains(&format!("{INTERNAL_ORIGIN}/reports/q3")),
        "{page}"
    );
    let (_, headers, _) = body(&gw, HEADERS_ONLY, "/go").await;
    assert_eq!(
        headers["location"],
        format!("{plain_public}/landing?from=go")
    );

    // Under a path prefix, the app's cookies stay inside it (not sent to its neighbours).
    let r = gw.get(PREFIXED, "/hr/login").await;
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies.iter().all(|c| c.contains("Path=/hr")),
        "{cookies:?}"
    );
}

/// `/readyz` line for one upstream.
async fn standing(gw: &RunningGateway, upstream: &str) -> String {
    let text = gw.readyz().await;
    text.lines()
        .find(|l| l.starts_with("upstream ") && l.contains(upstream))
        .unwrap_or_else(|| panic!("no line for {upstream}:\n{text}"))
        .to_string()
}

async fn wait_standing(gw: &RunningGateway, upstream: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = standing(gw, upstream).await;
        if line.ends_with(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{line}, want {want}; log:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn answered_by(gw: &RunningGateway) -> u16 {
    let r = gw.get(INTRANET, "/whoami").await;
    assert_eq!(r.status(), 200, "a user request failed");
    let v: serde_json::Value = r.json().await.unwrap();
    u16::try_from(v["port"].as_u64().unwrap()).unwrap()
}

#[tokio::test]
async fn active_health_checks_take_a_dead_upstream_out_and_bring_it_back() {
    let steady = InternalApp::start(port()).await;
    let mut flaky = InternalApp::start(port()).await;
    let health = "[health]\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nunhealthy_after = 2\nhealthy_after = 2\n";
    let gw = GatewaySpec::new()
        .policy(
            "intranet.toml",
            open_policy(
                "intranet",
                &[INTRANET],
                &[(&steady.url(), 1), (&flaky.url(), 1)],
                health,
            ),
        )
        .start()
        .await;
    wait_standing(&gw, &flaky.url(), "in the rotation").await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(answered_by(&gw).await);
    }
    assert_eq!(seen.len(), 2, "both upstreams serve while healthy");

    flaky.stop();
    wait_standing(&gw, &flaky.url(), "out of the rotation").await;
    assert!(gw
        .logs()
        .contains("upstream out of the rotation: its health checks fail"));
    let tried_before = gw.logs().matches("upstream connect failed").count();
    for _ in 0..20 {
        assert_eq!(answered_by(&gw).await, steady.port);
    }
    assert_eq!(
        gw.logs().matches("upstream connect failed").count(),
        tried_before,
        "a user request was sent to the upstream the checks took out"
    );
    // A reload (SIGHUP) keeps what the checks learnt: the dead upstream stays out at once.
    gw.signal("HUP");
    gw.wait_for_log("configuration reloaded").await;
    assert!(
        standing(&gw, &flaky.url())
            .await
            .ends_with("out of the rotation"),
        "the reload put the dead upstream back"
    );
    for _ in 0..10 {
        assert_eq!(answered_by(&gw).await, steady.port);
    }
    assert_eq!(
        gw.logs().matches("upstream connect failed").count(),
        tried_before,
        "after the reload, a user request was sent to the dead upstream"
    );

    flaky.restart().await;
    wait_standing(&gw, &flaky.url(), "in the rotation").await;
    assert!(gw.logs().contains("upstream back in the rotation"));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(answered_by(&gw).await);
    }
    assert!(seen.contains(&flaky.port), "it came back on its own");
    let metrics = support::http_client()
        .get(format!("http://{}/metrics", gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("portcullis_upstream_up{app=\"intranet\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn backends_that_demand_a_client_certificate_or_speak_old_tls() {
    let mtls = InternalApp::start_tls(port(), true, false).await;
    let old = InternalApp::start_tls(port(), false, true).await;
    let ca = dev_cert("ca.crt").display().to_string();
    let cert = dev_cert("upstream-client.crt").display().to_string();
    let key = dev_cert("upstream-client.key").display().to_string();
    let with_cert = format!(
        "preserve_host = false\n[upstream_tls]\nca_file = \"{ca}\"\nclient_cert_file = \"{cert}\"\nclient_key_file = \"{key}\"\n"
    );
    let gw = GatewaySpec::new()
        .policy(
            "mtls.toml",
            open_policy(
                "mtls",
                &["mtls.portcullis.localhost"],
                &[(&mtls.url(), 1)],
                &with_cert,
            ),
        )
        .policy(
            "nocert.toml",
            open_policy(
                "nocert",
                &["nocert.portcullis.localhost"],
                &[(&mtls.url(), 1)],
                &format!("[upstream_tls]\nca_file = \"{ca}\"\n"),
            ),
        )
        .policy(
            "old.toml",
            open_policy(
                "old",
                &["old.portcullis.localhost"],
                &[(&old.url(), 1)],
                &format!("[upstream_tls]\nca_file = \"{ca}\"\nmin_version = \"1.3\"\n"),
            ),
        )
        .policy(
            "old12.toml",
            open_policy(
                "old12",
                &["old12.portcullis.localhost"],
                &[(&old.url(), 1)],
                &format!("[upstream_tls]\nca_file = \"{ca}\"\nmin_version = \"1.2\"\n"),
            ),
        )
        .start()
        .await;

    // The backend sees the gateway's certificate, and its own name as Host.
    let r = gw.get("mtls.portcullis.localhost", "/whoami").await;
    assert_eq!(r.status(), 200);
    let who: serde_json::Value = r.json().await.unwrap();
    assert!(
        who["client_certificate"]
            .as_str()
            .unwrap()
            .contains("commonName=portcullis-gateway"),
        "{who}"
    );
    assert_eq!(who["host"], format!("localhost:{}", mtls.port));
    // Without a certificate the backend refuses the handshake: a 502 page, never its content.
    let r = gw.get("nocert.portcullis.localhost", "/whoami").await;
    assert_eq!(r.status(), 502);
    assert!(!r.text().await.unwrap().contains("client_certificate"));

    // A backend stuck at TLS 1.2 is refused where the app insists on 1.3, served where 1.2 is
    // enough.
    let r = gw.get("old.portcullis.localhost", "/whoami").await;
    assert_eq!(r.status(), 502);
    assert!(gw
        .wait_for_log("upstream TLS version below the app's minimum")
        .await
        .contains("TLSv1.2"));
    let r = gw.get("old12.portcullis.localhost", "/whoami").await;
    assert_eq!(r.status(), 200);
    let who: serde_json::Value = r.json().await.unwrap();
    assert_eq!(who["tls_version"], "TLSv1.2");
}

fn signed_in_policy(app: &str, host: &str, upstream: &str, extra: &str) -> String {
    format!(
        "{}{extra}\n[identity.headers]\n\"X-Remote-User\" = \"email\"\n\
         \"X-Groups\" = {{ claim = \"groups\", join = \";\" }}\n\
         \"X-Primary-Group\" = {{ claim = \"groups\", nth = 0 }}\n\
         \"X-Group-Count\" = {{ claim = \"groups\", count = true }}\n\n\
         [[allow]]\nid = \"staff\"\nwhy = \"staff\"\ngroups = [\"staff\"]\n",
        support::policy_head(app, host, upstream, Some("corp"))
    )
}

struct SignedInFixture {
    idp: TestIdp,
    gw: RunningGateway,
    _app: InternalApp,
}

const MAINTAINED: &str = "payroll.localhost";
const DELIVERED: &str = "wiki.localhost";

async fn signed_in_fixture() -> SignedInFixture {
    let http = free_addr();
    let origins: Vec<String> = [MAINTAINED, DELIVERED]
        .iter()
        .map(|h| format!("http://{h}:{}", http.port()))
        .collect();
    let client = IdpClient::gateway("portcullis", &origins);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let app = InternalApp::start(port()).await;
    let maintenance = "[maintenance]\nenabled = true\nmessage = \"Payroll moves to the new server; back at 14:00.\"\nadmin_groups = [\"it-admins\"]\nretry_after = \"30m\"\n";
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp", &client, ""))
        .policy(
            "payroll.toml",
            signed_in_policy("payroll", MAINTAINED, &app.url(), maintenance),
        )
        .policy(
            "wiki.toml",
            signed_in_policy("wiki", DELIVERED, &app.url(), ""),
        )
        .start()
        .await;
    SignedInFixture { idp, gw, _app: app }
}

#[tokio::test]
async fn maintenance_mode_serves_its_page_and_lets_administrators_through() {
    let fx = signed_in_fixture().await;
    let url = |path: &str| fx.gw.app_url(MAINTAINED, path);
    // Anonymous: the page, with its message, a Retry-After and the administrators' way in.
    let anonymous = Browser::new(fx.gw.http, &[MAINTAINED]);
    let r = anonymous.get(&url("/reports")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1800");
    let page = r.text().await.unwrap();
    assert!(page.contains("Down for maintenance"), "{page}");
    assert!(page.contains("back at 14:00"), "{page}");
    assert!(
        page.contains("/.portcullis/login?return_to=%2Freports"),
        "{page}"
    );
    assert!(
        !page.contains("Intranet app"),
        "the app's own content leaked: {page}"
    );

    // Staff who are not administrators sign in and still get the page.
    let bob = Browser::new(fx.gw.http, &[MAINTAINED]);
    let trip = bob
        .login(
            &url("/.portcullis/login?return_to=/whoami"),
            "bob",
            "bob-pw",
        )
        .await;
    assert_eq!(trip.status, 503, "{trip:?}");
    assert!(trip.body.contains("Down for maintenance"));
    assert!(
        !trip.body.contains("sign in to work on it"),
        "already signed in"
    );

    // An administrator gets through to the app.
    let dave = Browser::new(fx.gw.http, &[MAINTAINED]);
    let trip = dave
        .login(
            &url("/.portcullis/login?return_to=/whoami"),
            "dave",
            "dave-pw",
        )
        .await;
    assert_eq!(trip.status, 200, "{trip:?}");
    assert!(trip.body.contains("dave@corp.example"), "{}", trip.body);

    // Maintenance over: the policy says so, a reload applies it, bob is back in.
    let policy = fx.gw.dir.path().join("policies/payroll.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, text.replace("enabled = true", "enabled = false")).unwrap();
    fx.gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = bob.get(&url("/whoami")).await;
        if r.status() == 200 {
            assert!(r.text().await.unwrap().contains("bob@corp.example"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still in maintenance after the reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn group_lists_are_delivered_joined_picked_or_counted_and_oversize_is_refused() {
    let fx = signed_in_fixture().await;
    let url = fx.gw.app_url(DELIVERED, "/whoami");
    let alice = Browser::new(fx.gw.http, &[DELIVERED]);
    let trip = alice.login(&url, "alice", "alice-pw").await;
    assert_eq!(trip.status, 200, "{trip:?}");
    let who: serde_json::Value = serde_json::from_str(&trip.body).unwrap();
    assert_eq!(who["groups"], "staff;finance");
    assert_eq!(who["primary_group"], "staff");
    assert_eq!(who["group_count"], "2");

    // Someone in 400 groups: the joined list would not fit a header. A clear page, a log
    // line naming the header, and nothing sent to the app.
    let many: Vec<String> = std::iter::once("staff".to_string())
        .chain((0..400).map(|i| format!("project-team-{i:03}")))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    fx.idp.set_groups("bob", &many).await;
    let bob = Browser::new(fx.gw.http, &[DELIVERED]);
    let trip = bob.login(&url, "bob", "bob-pw").await;
    assert_eq!(trip.status, 500, "{trip:?}");
    assert!(
        trip.body.contains("cannot be passed to this application"),
        "{}",
        trip.body
    );
    let logs = fx.gw.wait_for_log("over the 4096 byte limit").await;
    assert!(logs.contains("x-groups"), "{logs}");
}

#[test]
fn the_sample_app_is_in_the_demo() {
    let mut demo = String::new();
    std::fs::File::open(support::repo_root().join("deploy/demo.sh"))
        .unwrap()
        .read_to_string(&mut demo)
        .unwrap();
    assert!(
        demo.contains("internal_name_app.py"),
        "the demo does not start it"
    );
    let policy = support::read_repo_file("policies/erp.toml");
    assert!(policy.contains("[rewrite]"), "{policy}");
}
