//! SIGHUP reloads policies (and non-listener settings) without a restart; a broken file never
//! takes down what was serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};
use support::*;

async fn status_of(gw: &RunningGateway, host: &str) -> u16 {
    let raw = raw_exchange(
        gw.http,
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    raw_status(&raw)
}

/// Sends SIGHUP and waits until `host` answers `want` (reload is asynchronous).
async fn hup_until(gw: &RunningGateway, host: &str, want: u16) {
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = status_of(gw, host).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} still answers {got}, want {want}; log:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_adds_apps_keeps_last_good_versions_and_disables_new_broken_ones() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let mut gw = GatewaySpec::new()
        .policy(
            "a.toml",
            open_policy("a", &["a.portcullis.localhost"], &[(&a.url(), 1)], ""),
        )
        .start()
        .await;
    let pid = gw.pid();
    assert_eq!(status_of(&gw, "b.portcullis.localhost").await, 404);

    // A new app appears.
    let policies = gw.dir.path().join("policies");
    std::fs::write(
        policies.join("b.toml"),
        open_policy("b", &["b.portcullis.localhost"], &[(&b.url(), 1)], ""),
    )
    .unwrap();
    hup_until(&gw, "b.portcullis.localhost", 200).await;
    assert_eq!(status_of(&gw, "a.portcullis.localhost").await, 200);

    // A broken edit keeps serving the app's last good version, and says why.
    std::fs::write(
        policies.join("a.toml"),
        "schema = 1\napp = \"a\"\nhosts = [\"a.portcullis.localhost\"]\nbogus = true\n",
    )
    .unwrap();
    gw.signal("HUP");
    gw.wait_for_log("keeping the last good version").await;
    // The reason is its own log record, which may land a moment after the first.
    gw.wait_for_log("unknown field `bogus`").await;
    assert_eq!(status_of(&gw, "a.portcullis.localhost").await, 200);
    assert_eq!(status_of(&gw, "b.portcullis.localhost").await, 200);

    // A new app whose first version is broken has no good version: it is switched off alone.
    std::fs::write(
        policies.join("c.toml"),
        "schema = 1\napp = \"c\"\nhosts = [\"c.portcullis.localhost\"]\nbogus = true\n",
    )
    .unwrap();
    hup_until(&gw, "c.portcullis.localhost", 503).await;
    assert_eq!(status_of(&gw, "a.portcullis.localhost").await, 200);
    assert_eq!(status_of(&gw, "b.portcullis.localhost").await, 200);

    // Same process throughout.
    assert_eq!(gw.pid(), pid);
    assert!(
        gw.wait_exit(Duration::from_millis(100)).is_none(),
        "gateway exited"
    );
}

#[tokio::test]
async fn broken_gateway_config_on_reload_keeps_the_running_configuration() {
    let a = echo_backend("a").await;
    let gw = GatewaySpec::new()
        .policy(
            "a.toml",
            open_policy("a", &["a.portcullis.localhost"], &[(&a.url(), 1)], ""),
        )
        .start()
        .await;
    let config = gw.dir.path().join("portcullis.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{original}\nnot toml at all [[[\n")).unwrap();
    // Also remove the app: if the broken reload were applied, the host would 404.
    std::fs::remove_file(gw.dir.path().join("policies/a.toml")).unwrap();
    gw.signal("HUP");
    let logs = gw.wait_for_log("reload refused").await;
    assert!(logs.contains("reload refused"), "{logs}");
    assert_eq!(status_of(&gw, "a.portcullis.localhost").await, 200);
}

/// Requests keep flowing, every one answered by the old or the new configuration, while the
/// gateway reloads 20 times under load (a policy flips between two versions).
#[tokio::test]
async fn twenty_reloads_under_load_fail_no_request() {
    let a = echo_backend("a").await;
    let policy =
        |extra: &str| open_policy("a", &["a.portcullis.localhost"], &[(&a.url(), 1)], extra);
    let gw = GatewaySpec::new()
        .policy("a.toml", policy(""))
        .start()
        .await;
    let file = gw.dir.path().join("policies/a.toml");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        let client = gw.client(&["a.portcullis.localhost"]);
        let url = format!("http://a.portcullis.localhost:{}/x", gw.http.port());
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    for i in 0..20 {
        // Alternate between two valid versions (the summary changes), then reload.
        let text = policy("").replace(
            "summary = \"test app\"",
            &format!("summary = \"test app v{i}\""),
        );
        std::fs::write(&file, text).unwrap();
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reloads = gw.logs().matches("configuration reloaded").count();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(
            failed.is_empty(),
            "requests failed during reloads: {failed:?}"
        );
        total += ok;
    }
    assert!(
        total > 100,
        "too little load to mean anything: {total} requests"
    );
    assert!(
        reloads >= 15,
        "only {reloads} reloads happened:\n{}",
        gw.logs()
    );
}
