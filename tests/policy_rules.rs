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

#[tokio::test]
async fn body_of_a_denied_request_is_drained_not_parsed_as_a_next_request() {
    let (app, gw) = wiki().await;
    // The denied POST's body looks like a second request; on a kept-alive connection it must
    // be consumed as body, and only the real second request is answered.
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let request = format!(
        "POST /admin/users HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n{smuggled}\
         GET /after HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n",
        smuggled.len()
    );
    let raw = raw_exchange(gw.http, request.as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    assert!(!raw.contains("/smuggled"), "{raw}");
    // Either the connection was closed after the refusal, or the next request was served.
    let served: Vec<&str> = raw.matches("\"uri\":").collect();
    assert!(served.len() <= 1, "{raw}");
    if served.len() == 1 {
        assert!(raw.contains("\"uri\":\"/after\""), "{raw}");
    }
    assert!(app.hits() <= 1);
}

#[tokio::test]
async fn many_concurrent_requests_are_each_decided_and_served() {
    let (app, gw) = wiki().await;
    let client = gw.client(&[HOST]);
    let base = format!("http://{HOST}:{}", gw.http.port());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            let url = if i % 4 == 0 {
                format!("{base}/admin/{i}")
            } else {
                format!("{base}/page/{i}")
            };
            tokio::spawn(
                async move { (i, client.get(url).send().await.map(|r| r.status().as_u16())) },
            )
        })
        .collect();
    for task in tasks {
        let (i, status) = task.await.unwrap();
        let want = if i % 4 == 0 { 403 } else { 200 };
        assert_eq!(status.unwrap(), want, "request {i}");
    }
    assert_eq!(app.hits(), 150);
}

/// A policy with network, glob, regex and shadow rules, behind a gateway that may trust a
/// load balancer on 127.0.0.2 (and only that one) for `X-Forwarded-For`.
async fn office(trusted: &str) -> (Backend, RunningGateway) {
    let app = echo_backend("office").await;
    let policy = format!(
        "schema = 1\napp = \"office\"\nowner = \"o@corp.example\"\nsummary = \"office\"\nhosts = [\"{HOST}\"]\n\
         upstreams = [{{ url = \"{}\" }}]\n\n\
         [[allow]]\nid = \"office-lan\"\nwhy = \"only from the office network\"\npublic = true\nnetworks = [\"10.20.0.0/16\"]\n\n\
         [[allow]]\nid = \"reports\"\nwhy = \"published PDFs\"\npublic = true\npaths = [\"/reports/*.pdf\"]\n\n\
         [[allow]]\nid = \"api-versions\"\nwhy = \"versioned API\"\npublic = true\npaths = [\"~^/api/v[0-9]+/status$\"]\n\n\
         [[deny]]\nid = \"future-lockdown\"\nwhy = \"trying before enforcing\"\nmode = \"shadow\"\npaths = [\"/reports/**\"]\n",
        app.url()
    );
    let gw = GatewaySpec::new()
        .gateway_toml(&format!("[headers]\ntrusted_proxies = [{trusted}]\n"))
        .policy("office.toml", policy)
        .start()
        .await;
    (app, gw)
}

async fn from(gw: &RunningGateway, target: &str, xff: Option<&str>) -> u16 {
    let xff = xff.map_or(String::new(), |v| format!("X-Forwarded-For: {v}\r\n"));
    raw_status(
        &raw_exchange(
            gw.http,
            format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n{xff}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await,
    )
}

#[tokio::test]
async fn network_rules_use_the_socket_address_unless_a_trusted_proxy_speaks() {
    // Nobody trusted: a client claiming an office address is still judged by its socket.
    let (app, gw) = office("").await;
    assert_eq!(from(&gw, "/wiki", None).await, 403);
    assert_eq!(
        from(&gw, "/wiki", Some("10.20.1.5")).await,
        403,
        "spoofed X-Forwarded-For was believed"
    );
    assert_eq!(app.hits(), 0);
    drop(gw);
    // The loopback peer is a trusted load balancer: its X-Forwarded-For decides.
    let (app, gw) = office("\"127.0.0.1/32\"").await;
    assert_eq!(from(&gw, "/wiki", Some("10.20.1.5")).await, 200);
    assert_eq!(from(&gw, "/wiki", Some("192.0.2.9")).await, 403);
    assert_eq!(app.hits(), 1);
}

#[tokio::test]
async fn glob_regex_and_shadow_rules_end_to_end() {
    let (app, gw) = office("").await;
    for (target, want) in [
        ("/reports/q1.pdf", 200),
        ("/reports/q1.pdf.exe", 403),
        ("/reports/2026/q1.pdf", 403),
        ("/reports/Q1.PDF", 403),
        ("/api/v2/status", 200),
        ("/api/v2/status/x", 403),
        ("/api/vx/status", 403),
        ("/x/api/v2/status", 403),
        ("/api/v2/status?x=/reports/a.pdf", 200),
        ("/secret?x=/reports/a.pdf", 403),
    ] {
        assert_eq!(from(&gw, target, None).await, want, "{target}");
    }
    assert_eq!(app.hits(), 3);
    // The shadow deny rule never refused, but says what it would have done.
    let logs = gw.wait_for_log("shadow rule would deny this request").await;
    assert!(logs.contains("rule=\"future-lockdown\""), "{logs}");
}

#[tokio::test]
async fn encoded_slashes_reach_only_an_app_that_opted_in() {
    let files = echo_backend("files").await;
    let strict = echo_backend("strict").await;
    let gw = GatewaySpec::new()
        .policy(
            "files.toml",
            open_policy(
                "files",
                &["files.portcullis.localhost"],
                &[(&files.url(), 1)],
                "allow_encoded_slash = true",
            ),
        )
        .policy(
            "strict.toml",
            open_policy(
                "strict",
                &["strict.portcullis.localhost"],
                &[(&strict.url(), 1)],
                "",
            ),
        )
        .start()
        .await;
    let get = |host: &'static str, target: &'static str| {
        let addr = gw.http;
        async move {
            raw_exchange(
                addr,
                format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
        }
    };
    // The opted-in app gets the path with the slash still encoded (a package name, say).
    let raw = get("files.portcullis.localhost", "/pkg/%40scope%2fname/./x").await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    assert_eq!(raw_json(&raw)["uri"], "/pkg/%40scope%2Fname/x");
    // Everything else about the path stays strict there, and the other app refuses it.
    assert_eq!(
        raw_status(&get("files.portcullis.localhost", "/pkg/a%5Cb").await),
        400
    );
    assert_eq!(
        raw_status(&get("files.portcullis.localhost", "/pkg/..;/x%2fy").await),
        400
    );
    assert_eq!(
        raw_status(&get("strict.portcullis.localhost", "/pkg/a%2Fb").await),
        400
    );
    assert_eq!(strict.hits(), 0);
    assert_eq!(files.hits(), 1);
}

/// IIS and most Windows backends serve `/ADMIN/x` as `/admin/x`: an app that says so
/// (`case_insensitive_paths = true`) has its routing and rules compare paths in any letter case.
#[tokio::test]
async fn case_insensitive_apps_deny_every_letter_case_of_a_denied_path() {
    let iis = echo_backend("iis").await;
    let portal = echo_backend("portal").await;
    let rules = "[[deny]]\nid = \"no-admin\"\nwhy = \"admin closed\"\npaths = [\"/Legacy/admin/**\", \"~^/Legacy/api/V[0-9]+/secret$\"]\n\n\
                 [[allow]]\nid = \"read\"\nwhy = \"public\"\npublic = true\npaths = [\"/Legacy/**\"]\n";
    let iis_policy = format!(
        "schema = 1\napp = \"iis\"\nowner = \"o@corp.example\"\nsummary = \"IIS app\"\nhosts = [\"{HOST}\"]\n\
         path_prefix = \"/Legacy\"\ncase_insensitive_paths = true\nupstreams = [{{ url = \"{}\" }}]\n\n{rules}",
        iis.url()
    );
    let gw = GatewaySpec::new()
        .policy("iis.toml", iis_policy)
        .policy(
            "portal.toml",
            open_policy("portal", &[HOST], &[(&portal.url(), 1)], ""),
        )
        .start()
        .await;
    for target in [
        "/Legacy/admin/x",
        "/LEGACY/ADMIN/x",
        "/legacy/Admin",
        "/Legacy/%41dmin/x",
        "/legacy/API/v2/SECRET",
    ] {
        let (code, raw) = status(&gw, "GET", target).await;
        assert_eq!(code, 403, "{target}: {raw}");
    }
    assert_eq!(
        iis.hits() + portal.hits(),
        0,
        "a denied spelling reached a backend"
    );
    // Every spelling routes to the IIS app (not the portal at the host root), with the path
    // as the client wrote it.
    let raw = raw_exchange(
        gw.http,
        format!("GET /LEGACY/Reports HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    assert_eq!(raw_json(&raw)["backend"], "iis");
    assert_eq!(raw_json(&raw)["uri"], "/LEGACY/Reports");
    // Apps that do not say so keep comparing exactly (the portal's paths are its own).
    assert_eq!(status(&gw, "GET", "/legacyx").await.0, 200);
    assert_eq!(portal.hits(), 1);
}
