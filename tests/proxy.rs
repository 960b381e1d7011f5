//! Proxying through the real gateway binary: routing, weights, the gateway's own pages, dead
//! and hung backends, large bodies, malformed requests, logs and shutdown.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;

#[tokio::test]
async fn routes_by_host_case_insensitively_ignoring_port() {
    let wiki = echo_backend("wiki").await;
    let hr = echo_backend("hr").await;
    let gw = GatewaySpec::new()
        .policy(
            "wiki.toml",
            open_policy(
                "wiki",
                &["wiki.portcullis.localhost"],
                &[(&wiki.url(), 1)],
                "",
            ),
        )
        .policy(
            "hr.toml",
            open_policy("hr", &["hr.portcullis.localhost"], &[(&hr.url(), 1)], ""),
        )
        .start()
        .await;
    let raw = raw_exchange(
        gw.http,
        b"GET /page HTTP/1.1\r\nHost: WIKI.Portcullis.LOCALHOST:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    assert_eq!(raw_json(&raw)["backend"], "wiki");
    let raw = raw_exchange(
        gw.http,
        b"GET /page HTTP/1.1\r\nHost: hr.portcullis.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_json(&raw)["backend"], "hr");
    assert_eq!(wiki.hits(), 1);
    assert_eq!(hr.hits(), 1);
}

#[tokio::test]
async fn longest_path_prefix_wins_on_segment_boundaries() {
    let portal = echo_backend("portal").await;
    let wiki = echo_backend("wiki").await;
    let gw = GatewaySpec::new()
        .policy(
            "portal.toml",
            open_policy(
                "portal",
                &["intranet.portcullis.localhost"],
                &[(&portal.url(), 1)],
                "",
            ),
        )
        .policy(
            "wiki.toml",
            open_policy(
                "wiki",
                &["intranet.portcullis.localhost"],
                &[(&wiki.url(), 1)],
                "path_prefix = \"/wiki\"",
            ),
        )
        .start()
        .await;
    let client = gw.client(&["intranet.portcullis.localhost"]);
    let base = format!("http://intranet.portcullis.localhost:{}", gw.http.port());
    for (path, want) in [
        ("/wiki", "wiki"),
        ("/wiki/Page", "wiki"),
        ("/wikis", "portal"),
        ("/", "portal"),
    ] {
        let body: Value = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["backend"], want, "{path}");
    }
}

#[tokio::test]
async fn unknown_host_and_unrouted_path_get_branded_404_and_no_backend() {
    let wiki = echo_backend("wiki").await;
    let gw = GatewaySpec::new()
        .policy(
            "wiki.toml",
            open_policy(
                "wiki",
                &["wiki.portcullis.localhost"],
                &[(&wiki.url(), 1)],
                "path_prefix = \"/wiki\"",
            ),
        )
        .start()
        .await;
    for host in ["unknown.portcullis.localhost", "wiki.portcullis.localhost"] {
        let path = if host.starts_with("wiki") {
            "/other"
        } else {
            "/wiki"
        };
        let raw = raw_exchange(
            gw.http,
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(raw_status(&raw), 404, "{raw}");
        assert!(
            raw.contains("PORTCULLIS") && raw.contains("Not found"),
            "{raw}"
        );
        assert!(raw.to_ascii_lowercase().contains("x-request-id:"), "{raw}");
        // On a host the gateway serves, "no application here" would be wrong.
        if host.starts_with("wiki") {
            assert!(raw.contains("no page at this address"), "{raw}");
            assert!(!raw.contains("There is no application"), "{raw}");
        } else {
            assert!(
                raw.contains("There is no application at this address"),
                "{raw}"
            );
        }
    }
    assert_eq!(wiki.hits(), 0);
}

#[tokio::test]
async fn weighted_round_robin_follows_weights() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let gw = app_gateway(&[(&a.url(), 3), (&b.url(), 1)], "").await;
    for _ in 0..40 {
        let r = gw.get(APP_HOST, "/").await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (30, 10));
}

#[tokio::test]
async fn dead_upstream_gives_502_page_quickly_and_a_log_line() {
    let dead = free_addr();
    let gw = app_gateway(
        &[(&format!("http://{dead}"), 1)],
        "[timeouts]\nconnect = \"1s\"",
    )
    .await;
    let started = Instant::now();
    let raw = raw_exchange(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: app.portcullis.localhost\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 502, "{raw}");
    assert!(raw.contains("Application unreachable"), "{raw}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let logs = gw.wait_for_log("upstream connect failed").await;
    assert!(
        logs.contains("upstream connect failed") && logs.contains(&dead.to_string()),
        "{logs}"
    );
}

#[tokio::test]
async fn unreachable_upstream_gives_502_after_the_connect_timeout_not_a_hang() {
    let hole = blackhole().await;
    let url = format!("http://{}", hole.addr);
    let gw = app_gateway(&[(&url, 1)], "[timeouts]\nconnect = \"1s\"").await;
    let started = Instant::now();
    let raw = raw_exchange(
        gw.http,
        format!("GET / HTTP/1.1\r\nHost: {APP_HOST}\r\n\r\n").as_bytes(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(raw_status(&raw), 502, "{raw}");
    assert!(
        took >= Duration::from_millis(900),
        "answered before the connect timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let logs = gw.wait_for_log("upstream connect failed").await;
    assert!(logs.contains("ConnectTimedout"), "{logs}");
}

#[tokio::test]
async fn connect_failure_fails_over_to_the_next_upstream() {
    let live = echo_backend("live").await;
    let dead = free_addr();
    let gw = app_gateway(&[(&format!("http://{dead}"), 1), (&live.url(), 1)], "").await;
    for _ in 0..6 {
        let r = gw.get(APP_HOST, "/").await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(live.hits(), 6);
}

/// Weighted upstreams with the heavier one down: a retry must go to another upstream (not the
/// same dead one the schedule offers again), and after `eject_after` refusals in a row the
/// dead one is left out, so later requests do not even try it.
#[tokio::test]
async fn a_dead_weighted_upstream_is_skipped_on_retry_and_ejected() {
    let live = echo_backend("live").await;
    let dead = free_addr();
    let gw = app_gateway(
        &[(&format!("http://{dead}"), 3), (&live.url(), 1)],
        "[health]\neject_after = 2\neject_for = \"60s\"",
    )
    .await;
    let client = gw.client(&[APP_HOST]);
    let requests = (0..24).map(|_| {
        let client = &client;
        let url = format!("http://{APP_HOST}:{}/", gw.http.port());
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    });
    // Concurrent requests move the shared schedule under each other's retries.
    let statuses = futures_util::future::join_all(requests).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}",
        gw.logs()
    );
    let logs = gw.wait_for_log("upstream ejected").await;
    assert!(logs.contains("upstream ejected"), "{logs}");
    let failures_before = logs.matches("upstream connect failed").count();
    for _ in 0..10 {
        assert_eq!(gw.get(APP_HOST, "/").await.status(), 200);
    }
    let failures_after = gw.logs().matches("upstream connect failed").count();
    assert_eq!(
        failures_before, failures_after,
        "the ejected upstream was tried again during its cool-down"
    );
    assert_eq!(live.hits(), 34);
}

#[tokio::test]
async fn hung_upstream_gives_504_after_the_read_timeout() {
    let hung = stalling_backend().await;
    let gw = app_gateway(&[(&hung.url(), 1)], "[timeouts]\nread = \"1s\"").await;
    let started = Instant::now();
    let raw = raw_exchange(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: app.portcullis.localhost\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 504, "{raw}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn upstream_hanging_up_gives_502() {
    let closing = closing_backend().await;
    let gw = app_gateway(&[(&closing.url(), 1)], "").await;
    let raw = raw_exchange(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: app.portcullis.localhost\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 502, "{raw}");
}

#[tokio::test]
async fn broken_policy_disables_only_its_own_app() {
    let good = echo_backend("good").await;
    let broken_backend = echo_backend("broken").await;
    let broken = open_policy(
        "broken",
        &["broken.portcullis.localhost"],
        &[(&broken_backend.url(), 1)],
        "colour = \"blue\"",
    );
    let gw = GatewaySpec::new()
        .policy(
            "good.toml",
            open_policy(
                "good",
                &["good.portcullis.localhost"],
                &[(&good.url(), 1)],
                "",
            ),
        )
        .policy("broken.toml", broken)
        .start()
        .await;
    let raw = raw_exchange(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: broken.portcullis.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 503, "{raw}");
    assert!(raw.contains("temporarily unavailable"), "{raw}");
    assert!(
        !raw.contains(&broken_backend.addr.to_string()),
        "page must not name the backend"
    );
    let raw = raw_exchange(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: good.portcullis.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    assert_eq!(broken_backend.hits(), 0);
    let logs = gw.logs();
    assert!(
        logs.contains("broken.toml") && logs.contains("unknown field `colour`"),
        "{logs}"
    );
}

#[tokio::test]
async fn reserved_gateway_path_is_never_proxied() {
    let (app, gw) = echo_app(GatewaySpec::new()).await;
    for path in [
        "/.portcullis/",
        "/.portcullis/oidc/callback?code=x",
        "//.portcullis/x",
        "/%2Eportcullis/x",
        "/a/../.portcullis/x",
        "/.portcullis",
    ] {
        let raw = raw_exchange(gw.http, format!("GET {path} HTTP/1.1\r\nHost: app.portcullis.localhost\r\nConnection: close\r\n\r\n").as_bytes()).await;
        // 404 for unknown endpoints; the callback refuses a request with no state (400).
        let want = if path.contains("callback") { 400 } else { 404 };
        assert_eq!(raw_status(&raw), want, "{path}: {raw}");
        assert!(raw.contains("PORTCULLIS"), "{path}");
    }
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let (_app, gw) = echo_app(GatewaySpec::new()).await;
    let client = gw.client(&["app.portcullis.localhost"]);
    let base = format!("http://app.portcullis.localhost:{}", gw.http.port());
    let size = 24 * 1024 * 1024 + 7;
    let data = pattern(size);
    let want_hash = format!("{:016x}", fnv1a(FNV_START, &data));

    let upload: Value = client
        .post(format!("{base}/upload"))
        .body(data.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(upload["body_len"], size);
    assert_eq!(upload["body_hash"], want_hash);

    // Chunked upload of unknown length, too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let stream_body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let upload: Value = client
        .put(format!("{base}/upload"))
        .body(stream_body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(upload["body_len"], size);
    assert_eq!(upload["body_hash"], want_hash);

    let mut download = client
        .get(format!("{base}/download/{size}"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let (mut len, mut hash) = (0usize, FNV_START);
    while let Some(chunk) = download.chunk().await.unwrap() {
        len += chunk.len();
        hash = fnv1a(hash, &chunk);
    }
    assert_eq!(len, size);
    assert_eq!(format!("{hash:016x}"), want_hash);
}

#[tokio::test]
async fn malformed_requests_get_400_and_never_take_the_gateway_down() {
    let (app, gw) = echo_app(GatewaySpec::new()).await;
    let host = "Host: app.portcullis.localhost\r\n";
    let cases: Vec<(String, bool)> = vec![
        ("GARBAGE\r\n\r\n".into(), false),
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n".into(), true),
        ("GET / HTTP/1.1\r\nHost: a.portcullis.localhost\r\nHost: app.portcullis.localhost\r\nConnection: close\r\n\r\n".into(), true),
        (format!("GET /a%2Fb HTTP/1.1\r\n{host}Connection: close\r\n\r\n"), true),
        (format!("GET /a\\b HTTP/1.1\r\n{host}Connection: close\r\n\r\n"), true),
        (format!("GET /admin/..;/x HTTP/1.1\r\n{host}Connection: close\r\n\r\n"), true),
        (format!("GET /%C0%AF HTTP/1.1\r\n{host}Connection: close\r\n\r\n"), true),
        (format!("GET /%zz HTTP/1.1\r\n{host}Connection: close\r\n\r\n"), true),
        (format!("GET /x HTTP/1.1\r\n{host}Bad Header: x\r\nConnection: close\r\n\r\n"), false),
        (format!("GET /x HTTP/1.1\r\n{host}X-Long: {}\r\nConnection: close\r\n\r\n", "a".repeat(200_000)), false),
        (format!("GET /x HTTP/1.1\r\n{host}{}Connection: close\r\n\r\n", "X-Many: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(1500)), false),
        ("GET / HTTP/1.1\r\nHost: evil.example/x\r\nConnection: close\r\n\r\n".into(), true),
        ("\u{0}\u{1}\u{2}\r\n\r\n".into(), false),
    ];
    for (request, must_be_400) in &cases {
        let raw = raw_exchange(gw.http, request.as_bytes()).await;
        let status = raw_status(&raw);
        let shown: String = request.chars().take(120).collect();
        let answer: String = raw.chars().take(200).collect();
        if *must_be_400 {
            assert_eq!(status, 400, "{shown:?} -> {answer}");
        } else {
            assert!(
                status == 0 || (400..500).contains(&status),
                "{shown:?} -> {answer}"
            );
        }
    }
    assert_eq!(app.hits(), 0, "no malformed request may reach the backend");
    // Still serving, and no panic in the log.
    let raw = raw_exchange(
        gw.http,
        format!("GET / HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&raw), 200);
    assert!(!gw.logs().contains("panicked"), "{}", gw.logs());
}

#[tokio::test]
async fn smuggling_shape_reaches_the_backend_with_one_framing_only() {
    let (app, gw) = echo_app(GatewaySpec::new()).await;
    // Content-Length and Transfer-Encoding together: RFC 9112 §6.3 says chunked wins and the
    // connection must not be reused; the smuggled second request must never be seen.
    let raw = raw_exchange(
        gw.http,
        b"POST /x HTTP/1.1\r\nHost: app.portcullis.localhost\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.portcullis.localhost\r\n\r\n",
    )
    .await;
    let status = raw_status(&raw);
    assert!(status == 200 || status == 400, "{raw}");
    if status == 200 {
        let echo = raw_json(&raw);
        assert!(
            header_values(&echo, "content-length")
                .iter()
                .all(|v| v == "0"),
            "{echo}"
        );
        assert_eq!(echo["body_len"], 0);
    }
    assert!(!raw.contains("/smuggled"), "{raw}");
    assert!(app.hits() <= 1);
}

#[tokio::test]
async fn upstream_receives_the_normalised_path_and_original_query() {
    let (_app, gw) = echo_app(GatewaySpec::new()).await;
    let raw = raw_exchange(gw.http, b"GET //docs/./a/../%62ook?x=/../y HTTP/1.1\r\nHost: app.portcullis.localhost\r\nConnection: close\r\n\r\n").await;
    assert_eq!(raw_json(&raw)["uri"], "/docs/book?x=/../y", "{raw}");
}

#[tokio::test]
async fn access_line_names_request_app_status_and_upstream_but_not_the_query() {
    let (app, gw) = echo_app(GatewaySpec::new()).await;
    let raw = raw_exchange(gw.http, b"GET /report?code=SECRET123 HTTP/1.1\r\nHost: app.portcullis.localhost\r\nConnection: close\r\n\r\n").await;
    let request_id = raw_json(&raw)["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "x-request-id")
        .map(|p| p[1].as_str().unwrap().to_string())
        .unwrap();
    let logs = gw.wait_for_log(&request_id).await;
    let line = logs
        .lines()
        .find(|l| l.contains("portcullis::access") && l.contains(&request_id))
        .unwrap_or_else(|| panic!("{logs}"));
    for part in [
        "app=\"app\"",
        "method=GET",
        "path=\"/report\"",
        "status=200",
        "rule=\"everyone\"",
        &app.addr.to_string(),
        "duration_ms=",
    ] {
        assert!(line.contains(part), "missing {part} in {line}");
    }
    assert!(
        !logs.contains("SECRET123"),
        "query strings must not be logged"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_within_the_grace_period() {
    let (_app, mut gw) = echo_app(GatewaySpec::new()).await;
    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("gateway still running 10 s after SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// A systemd-style restart: SIGTERM while traffic flows. During the grace period every request
/// is still served (new connections too) while `/readyz` says 503 so load balancers move
/// away; then the listeners close and the process exits.
#[tokio::test]
async fn sigterm_keeps_serving_through_the_grace_period_while_readyz_says_draining() {
    let (app, mut gw) = echo_app(
        GatewaySpec::new()
            .server_setting("grace_period = \"2s\"")
            .server_setting("shutdown_timeout = \"1s\""),
    )
    .await;
    let http = gw.http;
    let request =
        format!("GET /during-drain HTTP/1.1\r\nHost: {APP_HOST}\r\nConnection: close\r\n\r\n");
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    let readyz = format!("http://{}/readyz", gw.admin);
    assert_eq!(admin.get(&readyz).send().await.unwrap().status(), 200);
    gw.signal("TERM");
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let raw = raw_exchange(http, request.as_bytes()).await;
        assert_eq!(
            raw_status(&raw),
            200,
            "request {served} refused {:?} after SIGTERM: {raw}\n{}",
            started.elapsed(),
            gw.logs()
        );
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served > 20, "only {served} requests in the grace period");
    let ready = admin.get(&readyz).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("draining"));
    assert!(app.hits() >= served);
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("gateway still running 10 s after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "exited before the grace period ended"
    );
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "still accepting after exit"
    );
}

#[tokio::test]
async fn admin_listener_reports_health_and_readiness() {
    let gw = GatewaySpec::new().start().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let health = client
        .get(format!("http://{}/healthz", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("http://{}/readyz", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let text = ready.text().await.unwrap();
    assert!(
        text.contains(&format!("listener {}: up", gw.http)),
        "{text}"
    );
    // The admin endpoints are not served on the traffic listener.
    let raw = raw_exchange(
        gw.http,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 404);
}

#[tokio::test]
async fn sigint_stops_at_once() {
    let (_app, mut gw) = echo_app(GatewaySpec::new()).await;
    gw.signal("INT");
    assert!(
        gw.wait_exit(Duration::from_secs(5)).is_some(),
        "gateway still running 5 s after SIGINT"
    );
}

#[tokio::test]
async fn json_access_log_lines_are_json_objects() {
    let (_app, gw) = echo_app(GatewaySpec::new().json_logs()).await;
    let raw = raw_exchange(
        gw.http,
        format!("GET /j HTTP/1.1\r\nHost: {APP_HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&raw), 200);
    let logs = gw.wait_for_log("\"path\":\"/j\"").await;
    let access: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["target"] == "portcullis::access")
        .unwrap_or_else(|| panic!("no JSON access line in:\n{logs}"));
    assert_eq!(access["app"], "app");
    assert_eq!(access["status"], 200);
    assert_eq!(access["method"], "GET");
    // Pingora's own `log` records arrive through the same subscriber, as JSON too.
    let bridged = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|v| {
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("pingora"))
        });
    assert!(bridged, "no Pingora record in the JSON log:\n{logs}");
}

#[test]
fn taken_listener_port_is_a_clear_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(&config, format!("[listen]\nhttp = \"{addr}\"\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (http)")),
        "{stderr}"
    );
}

#[tokio::test]
async fn host_header_is_the_clients_unless_the_app_asks_for_the_upstreams() {
    let kept = echo_backend("kept").await;
    let rewritten = echo_backend("rewritten").await;
    let gw = GatewaySpec::new()
        .policy(
            "kept.toml",
            open_policy(
                "kept",
                &["kept.portcullis.localhost"],
                &[(&kept.url(), 1)],
                "",
            ),
        )
        .policy(
            "rewritten.toml",
            open_policy(
                "rewritten",
                &["rewritten.portcullis.localhost"],
                &[(&rewritten.url(), 1)],
                "preserve_host = false",
            ),
        )
        .start()
        .await;
    let raw = raw_exchange(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: kept.portcullis.localhost:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        header_values(&raw_json(&raw), "host"),
        vec!["kept.portcullis.localhost:8080"]
    );
    let raw = raw_exchange(
        gw.http,
        b"GET / HTTP/1.1\r\nHost: rewritten.portcullis.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let echo = raw_json(&raw);
    assert_eq!(
        header_values(&echo, "host"),
        vec![rewritten.addr.to_string()]
    );
    // The client's host is still available to the backend as X-Forwarded-Host.
    assert_eq!(
        header_values(&echo, "x-forwarded-host"),
        vec!["rewritten.portcullis.localhost"]
    );
}
