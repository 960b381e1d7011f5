//! The systemd unit (`deploy/systemd/portcullis.service`): `systemd-analyze verify` accepts
//! it, `systemd-analyze security` rates its hardening, and the gateway speaks `Type=notify`
//! to a real notification socket: READY=1 once its listeners accept, RELOADING=1 and READY=1
//! around a SIGHUP, STOPPING=1 at a SIGTERM.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{echo_backend, GatewaySpec};

/// The shipped unit with its paths pointed at this build and a scratch configuration.
fn unit_here(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("portcullis.toml");
    std::fs::write(&config, "[listen]\nhttp = \"127.0.0.1:18080\"\n").unwrap();
    let unit = support::read_repo_file("deploy/systemd/portcullis.service")
        .replace("/usr/bin/portcullis", env!("CARGO_BIN_EXE_portcullis"))
        .replace("/etc/portcullis/portcullis.toml", config.to_str().unwrap());
    let path = dir.join("portcullis.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn the_unit_verifies_and_its_exposure_stays_low() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_here(dir.path());
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success(), "{said}");
    assert!(
        !said.contains("portcullis.service:"),
        "systemd-analyze verify complains about the unit:\n{said}"
    );

    // The check can fail: a unit with a mistake in it is reported.
    let broken_dir = tempfile::tempdir().unwrap();
    let broken = unit_here(broken_dir.path());
    let text = std::fs::read_to_string(&broken)
        .unwrap()
        .replace("Type=notify", "Type=notfiy");
    std::fs::write(&broken, text).unwrap();
    let complaint = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&complaint.stderr).contains("portcullis.service:"),
        "a misspelt Type= went unnoticed"
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for portcullis.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level:\n{report}{}",
                String::from_utf8_lossy(&security.stderr)
            )
        });
    println!("systemd-analyze security: exposure {exposure}");
    // The README states this score; a change that weakens the sandbox fails here.
    assert!(exposure <= 2.5, "exposure {exposure}:\n{report}");
    let readme = support::read_repo_file("README.md");
    assert!(
        readme.contains(&format!("exposure level {exposure:.1}")),
        "README should report the exposure level {exposure:.1}"
    );
}

/// The next notification within `limit`, if any.
fn next(socket: &UnixDatagram, limit: Duration) -> Option<String> {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Waits for a notification containing `wanted`; returns everything received up to it.
fn wait_for(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(message) = next(socket, Duration::from_millis(200)) {
            let done = message.contains(wanted);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
    panic!("no {wanted} notification; got {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let backend = echo_backend("wiki").await;
    let mut gw = GatewaySpec::new()
        .policy(
            "wiki.toml",
            support::open_policy("wiki", &["wiki.localhost"], &[(&backend.url(), 1)], ""),
        )
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .start()
        .await;
    let seen = wait_for(&socket, "READY=1");
    let ready = seen.last().unwrap();
    assert!(ready.contains(&format!("MAINPID={}", gw.pid())), "{ready}");
    // Ready means serving.
    assert_eq!(gw.get("wiki.localhost", "/").await.status(), 200);

    gw.signal("HUP");
    let seen = wait_for(&socket, "RELOADING=1");
    assert!(!seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    wait_for(&socket, "READY=1");
    gw.wait_for_log("configuration reloaded").await;

    gw.signal("TERM");
    wait_for(&socket, "STOPPING=1");
    assert!(
        gw.wait_exit(Duration::from_secs(20)).is_some(),
        "the gateway stopped"
    );
}
