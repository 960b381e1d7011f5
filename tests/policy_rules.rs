//! Access rules end to end: default deny, deny beats allow, methods and paths, and attempts to
//! slip past a path rule with alternative spellings of the same path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::*;

const HOST: &str = "wiki.portcullis.localhost";

async fn wiki() -> (Backend, RunningGateway) {
    let app = echo_backend("wiki").await;
    let policy = format!(
        "schema = 1\napp = \"wiki\"\nowner = \"o@corp.example\"\nsummary = \"wiki\"\nhosts = [\"{HOST}\"]\n\
         upstreams = [{{ url = \"{}\" }}]\n\n\
         [[deny]]\nid = \"no-admin\"\nwhy = \"admin closed\"\npaths = [\"/admin/**\"]\n\n\
         [[allow]]\nid = \"read\"\nwhy = \"reading is public\"\npublic = true\nmethods = [\"GET\", \"HEAD\"]\n\n\
         [[allow]]\nid = \"comments\"\nwhy = \"anyone may comment\"\npublic = true\npaths = [\"/comments\"]\nmethods = [\"POST\"]\n",
        app.url()
    );
    let gw = GatewaySpec::new().policy("wiki.toml", policy).start().await;
    (app, gw)
}

async fn status(gw: &RunningGateway, method: &str, target: &str) -> (u16, String) {
    let raw = raw_exchange(gw.http, format!("{method} {target} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes()).await;
    (raw_status(&raw), raw)
}

#[tokio::test]
async fn allowed_requests_pass_and_others_are_denied_by_default() {
    let (app, gw) = wiki().await;
    assert_eq!(status(&gw, "GET", "/page").await.0, 200);
    assert_eq!(status(&gw, "HEAD", "/page").await.0, 200);
    assert_eq!(status(&gw, "POST", "/comments").await.0, 200);
    let before = app.hits();
    for (method, target) in [
        ("POST", "/page"),
        ("DELETE", "/page"),
        ("PUT", "/comments"),
        ("POST", "/comments/x"),
    ] {
        let (code, raw) = status(&gw, method, target).await;
        assert_eq!(code, 403, "{method} {target}");
        assert!(raw.contains("Access denied"), "{raw}");
    }
    assert_eq!(
        app.hits(),
        before,
        "denied requests must not reach the backend"
    );
    let logs = gw.wait_for_log("reason=no allow rule matched").await;
    assert!(logs.contains("reason=no allow rule matched"), "{logs}");
}

#[tokio::test]
async fn deny_rule_beats_allow_rule_and_logs_its_id() {
    let (app, gw) = wiki().await;
    for target in ["/admin", "/admin/", "/admin/users"] {
        assert_eq!(status(&gw, "GET", target).await.0, 403, "{target}");
    }
    assert_eq!(app.hits(), 0);
    let logs = gw.wait_for_log("denied by rule no-admin").await;
    assert!(logs.contains("denied by rule no-admin"), "{logs}");
    // A sibling that merely starts with the same letters is not covered.
    assert_eq!(status(&gw, "GET", "/administrators-guide").await.0, 200);
}

#[tokio::test]
async fn alternative_spellings_of_a_denied_path_are_refused() {
    let (app, gw) = wiki().await;
    for target in [
        "//admin/users",
        "/%61dmin/users",
        "/%2561dmin",
        "/x/../admin/users",
        "/./admin",
        "/admin/..;/admin",
        "/admin%2Fusers",
        "/admin\\users",
        "/public/%2e%2e/admin",
        "/admin?x=/public",
        "/..%2fadmin",
    ] {
        let (code, raw) = status(&gw, "GET", target).await;
        assert!(code == 403 || code == 400, "{target} -> {code}: {raw}");
    }
    assert_eq!(app.hits(), 0, "backend saw {} requests", app.hits());
}
