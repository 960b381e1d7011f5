//! WebSockets through the gateway, end to end: a real WebSocket backend (Debian's
//! python3-websockets), a real OpenID Provider, and a WebSocket client. The handshake is an
//! ordinary request — decided by the rules, cleaned by header hygiene, given identity — and
//! only a genuine handshake answered by a genuine server becomes a tunnel.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use futures_util::{SinkExt, StreamExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::browser::Browser;
use support::idp::{IdpClient, TestIdp};
use support::{free_addr, repo_root, GatewaySpec};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const CHAT: &str = "chat.localhost";

/// The Python WebSocket server, killed when dropped.
struct WsBackend {
    port: u16,
    child: Child,
}

impl WsBackend {
    fn start() -> Self {
        let port = free_addr().port();
        let log = tempfile::NamedTempFile::new().unwrap();
        // Debian's interpreter: python3-websockets is installed for it by tests/run.sh.
        let child = Command::new("/usr/bin/python3")
            .arg(repo_root().join("tests/backends/ws_echo.py"))
            .arg(port.to_string())
            .stdout(log.reopen().unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("/usr/bin/python3 with python3-websockets (tests/run.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(log.path())
            .unwrap_or_default()
            .contains("READY")
        {
            assert!(Instant::now() < deadline, "WebSocket backend did not start");
            std::thread::sleep(Duration::from_millis(25));
        }
        Self { port, child }
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn websockets_carry_identity_on_the_handshake_and_need_a_session() {
    let backend = WsBackend::start();
    let http = free_addr();
    let client = IdpClient::gateway("portcullis", &[format!("http://{CHAT}:{}", http.port())]);
    let idp = TestIdp::start(std::slice::from_ref(&client)).await;
    let policy = format!(
        "schema = 1\napp = \"chat\"\nowner = \"o@corp.example\"\nsummary = \"live chat\"\nhosts = [\"{CHAT}\"]\n\
         upstreams = [{{ url = \"http://127.0.0.1:{}\" }}]\nidp = \"corp\"\n\n\
         [identity.headers]\n\"X-Remote-User\" = \"email\"\n\n\
         [[allow]]\nid = \"staff\"\nwhy = \"staff chat\"\ngroups = [\"staff\"]\n",
        backend.port
    );
    let gw = GatewaySpec::new()
        .http_addr(http)
        .gateway_toml(&idp.gateway_toml("corp", &client, ""))
        .policy("chat.toml", policy)
        .start()
        .await;
    let browser = Browser::new(http, &[CHAT]);
    let page = format!("http://{CHAT}:{}/", http.port());
    // The backend speaks only WebSocket: a signed-in page load reaches it and gets its 426.
    let trip = browser.login(&page, "alice", "alice-pw").await;
    assert!(trip.visited("/.portcullis/oidc/callback"), "{trip:?}");
    assert_eq!(trip.status, 426, "{trip:?}");
    let cookie = browser.cookies_for(&page);

    let handshake = |cookie: Option<&str>| {
        let mut request = format!("ws://{CHAT}:{}/socket?room=1", http.port())
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("x-remote-user", "admin@corp.example".parse().unwrap());
        if let Some(c) = cookie {
            headers.insert("cookie", c.parse().unwrap());
        }
        request
    };

    // Signed in: the backend's handshake carries the gateway's identity, never the client's.
    let stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(handshake(Some(&cookie)), stream)
        .await
        .unwrap_or_else(|e| panic!("handshake refused: {e}\n{}", gw.logs()));
    assert_eq!(response.status(), 101);
    let Some(Ok(Message::Text(first))) = ws.next().await else {
        panic!("no handshake report from the backend");
    };
    let seen: serde_json::Value = serde_json::from_str(first.as_str()).unwrap();
    let users: Vec<&str> = seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "x-remote-user")
        .map(|h| h[1].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice@corp.example"], "{seen}");
    assert!(
        !first.as_str().contains("portcullis_session"),
        "the gateway's cookie reached the backend: {seen}"
    );
    ws.send(Message::Text("hello".into())).await.unwrap();
    let Some(Ok(Message::Text(echo))) = ws.next().await else {
        panic!("no echo");
    };
    assert_eq!(echo.as_str(), "echo:hello");
    ws.close(None).await.unwrap();

    // Not signed in: the handshake is refused before any backend sees it.
    let stream = tokio::net::TcpStream::connect(http).await.unwrap();
    match tokio_tungstenite::client_async(handshake(None), stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert!(
                response.status() == 401 || response.status() == 302,
                "{:?}",
                response.status()
            );
        }
        other => panic!("an anonymous upgrade was not refused: {other:?}"),
    }
}
