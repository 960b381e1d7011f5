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
async fn sighup_adds_changes_and_disables_apps_without_a_restart() {
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

    // A broken edit disables only that app.
    std::fs::write(
        policies.join("a.toml"),
        "schema = 1\napp = \"a\"\nhosts = [\"a.portcullis.localhost\"]\nbogus = true\n",
    )
    .unwrap();
    hup_until(&gw, "a.portcullis.localhost", 503).await;
    assert_eq!(status_of(&gw, "b.portcullis.localhost").await, 200);
    assert!(gw.logs().contains("unknown field `bogus`"), "{}", gw.logs());

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
