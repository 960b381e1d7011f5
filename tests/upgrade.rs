//! One node keeps its users across a restart and an upgrade: the embedded store's sealed
//! snapshot (`[sessions] snapshot_file`), and Pingora's graceful upgrade (`run --upgrade`, then
//! SIGQUIT to the old process) under load with no failed request. A snapshot under another
//! key or tampered with is refused, and users sign in again. Real IdP, real backend, the real
//! binary.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::browser::Browser;
use support::idp::{IdpClient, TestIdp};
use support::{
    dev_cert, echo_backend, free_addr, header_values, Backend, GatewaySpec, RunningGateway,
};

const WIKI: &str = "wiki.localhost";

struct Fixture {
    _idp: TestIdp,
    _backend: Backend,
    gw: RunningGateway,
}

async fn fixture() -> Fixture {
    let http = free_addr();
    let client = IdpClient::gateway("portcullis", &[format!("http://{WIKI}:{}", http.port())]);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let backend = echo_backend("wiki").await;
    let head = support::policy_head("wiki", WIKI, &backend.url(), Some("corp"));
    let policy = format!(
        "{head}\n[identity.headers]\n\"X-Remote-User\" = \"email\"\n\n\
         [[allow]]\nid = \"staff\"\nwhy = \"staff\"\ngroups = [\"staff\"]\n"
    );
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp", &client, ""))
        .gateway_toml(&format!(
            "[sessions]\ncookie_key_file = \"{}\"\nsnapshot_file = \"sessions.snapshot\"\n",
            dev_cert("cookie.key").display()
        ))
        .server_setting("upgrade_sock = \"upgrade.sock\"")
        .server_setting("pid_file = \"portcullis.pid\"")
        .policy("wiki.toml", policy)
        .start()
        .await;
    Fixture {
        _idp: idp,
        _backend: backend,
        gw,
    }
}

/// The status of one API request (no page navigation: anonymous gets 401) with `cookie`, and
/// the user the backend saw.
async fn fetch(client: &reqwest::Client, url: &str, cookie: &str) -> Option<(u16, String)> {
    let response = match client.get(url).header("cookie", cookie).send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("request failed: {e:?}");
            return None;
        }
    };
    let status = response.status().as_u16();
    if status != 200 {
        return Some((status, String::new()));
    }
    let json: serde_json::Value = response.json().await.ok()?;
    let user = header_values(&json, "x-remote-user").into_iter().next();
    Some((status, user.unwrap_or_default()))
}

#[tokio::test]
async fn a_restart_keeps_sessions_and_a_bad_snapshot_is_refused() {
    let mut f = fixture().await;
    let url = f.gw.app_url(WIKI, "/");
    let browser = Browser::new(f.gw.http, &[WIKI]);
    assert_eq!(browser.login(&url, "alice", "alice-pw").await.status, 200);
    let cookie = browser.cookies_for(&url);
    let client = f.gw.client(&[WIKI]);

    f.gw.restart().await;
    assert!(
        f.gw.logs().contains("sessions loaded from the snapshot"),
        "{}",
        f.gw.logs()
    );
    assert_eq!(
        fetch(&client, &url, &cookie).await,
        Some((200, "alice@corp.example".into())),
        "signed in across the restart"
    );

    // A snapshot tampered with while the gateway was down loads nothing.
    f.gw.signal("TERM");
    assert!(f.gw.wait_exit(Duration::from_secs(15)).is_some());
    let snapshot = f.gw.dir.path().join("sessions.snapshot");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&snapshot, bytes).unwrap();
    f.gw.restart_stopped().await;
    f.gw.wait_for_log("session snapshot not loaded").await;
    assert!(f.gw.logs().contains("tampered with or truncated"));
    assert_eq!(
        fetch(&client, &url, &cookie).await.map(|r| r.0),
        Some(401),
        "nobody is signed in from a refused snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_fails_no_request_and_keeps_sessions() {
    let mut f = fixture().await;
    let url = f.gw.app_url(WIKI, "/");
    let browser = Browser::new(f.gw.http, &[WIKI]);
    assert_eq!(browser.login(&url, "alice", "alice-pw").await.status, 200);
    let cookie = Arc::new(browser.cookies_for(&url));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, cookie, url) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            cookie.clone(),
            url.clone(),
        );
        // A fresh connection per request: an idle kept-alive connection the old process closes
        // is retried by browsers, not counted here.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .resolve(WIKI, f.gw.http)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match fetch(&client, &url, &cookie).await {
                    Some((200, user)) if user == "alice@corp.example" => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    other => {
                        eprintln!("failed during the upgrade: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut old = f.gw.begin_upgrade();
    // The new process waits on the upgrade socket; the old one hands its listeners over.
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("QUIT");

    let exited = old.exited(Duration::from_secs(20)).await;
    assert!(
        exited.is_some(),
        "the old process never exited:\n{}",
        old.logs()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("upgrade under load: {ok} ok, {failed} failed");
    assert_eq!(
        failed,
        0,
        "no failed request during the upgrade; old process:\n{}\nnew process:\n{}",
        old.logs(),
        f.gw.logs()
    );
    assert!(ok > 20, "requests were served throughout: {ok}");
    let logs = f.gw.logs();
    assert!(logs.contains("sessions loaded from the snapshot"), "{logs}");
    let pid = std::fs::read_to_string(f.gw.dir.path().join("portcullis.pid")).unwrap();
    assert_eq!(
        pid.trim(),
        f.gw.pid().to_string(),
        "the pid file names the new process"
    );
    assert_eq!(
        fetch(&f.gw.client(&[WIKI]), &url, &cookie).await,
        Some((200, "alice@corp.example".into())),
        "the new process serves the session"
    );
}
