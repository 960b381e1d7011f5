//! Request framing and protocol switches, byte by byte: what a backend that records the raw
//! bytes it receives actually got, and how the gateway treats clients that send too slowly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = APP_HOST;

/// The `content-length` header lines in raw HTTP/1 bytes (any letter case).
fn length_lines(raw: &str) -> Vec<String> {
    raw.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
        .map(|l| l.trim().to_string())
        .collect()
}

#[tokio::test]
async fn repeated_identical_content_lengths_reach_the_backend_as_one() {
    let backend = recording_backend().await;
    let gw = app_gateway(&[(&backend.backend.url(), 1)], "").await;
    for (i, lines) in [
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5,5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
    ]
    .iter()
    .enumerate()
    {
        let before = backend.received().len();
        let raw = raw_exchange(
            gw.http,
            format!(
                "POST /form{i} HTTP/1.1\r\nHost: {HOST}\r\n{lines}Connection: close\r\n\r\nhello"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(raw_status(&raw), 200, "{lines:?}: {raw}");
        let seen = backend.received()[before..].to_string();
        assert!(seen.contains(&format!("/form{i}")), "{seen}");
        let framing = length_lines(&seen);
        assert_eq!(
            framing.len(),
            1,
            "{lines:?} reached the backend as {framing:?}"
        );
        assert!(
            framing[0].eq_ignore_ascii_case("content-length: 5"),
            "{framing:?}"
        );
        assert!(seen.ends_with("hello"), "{seen:?}");
    }
}

#[tokio::test]
async fn differing_content_lengths_are_refused_before_any_backend() {
    let backend = recording_backend().await;
    let gw = app_gateway(&[(&backend.backend.url(), 1)], "").await;
    for lines in [
        "Content-Length: 5, 6\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5, x\r\n",
    ] {
        let raw = raw_exchange(
            gw.http,
            format!("POST / HTTP/1.1\r\nHost: {HOST}\r\n{lines}Connection: close\r\n\r\nhello!")
                .as_bytes(),
        )
        .await;
        assert_eq!(raw_status(&raw), 400, "{lines:?}: {raw}");
    }
    assert_eq!(
        backend.received(),
        "",
        "an ambiguous request reached the backend"
    );
}

const HANDSHAKE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// A backend that answers anything with a bare `101` (no `Sec-WebSocket-Accept`) and then
/// takes whatever comes through the "tunnel": the gateway must not open one.
#[tokio::test]
async fn a_fake_switching_protocols_answer_opens_no_tunnel() {
    let fake = answering_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        true,
    )
    .await;
    let gw = app_gateway(&[(&fake.backend.url(), 1)], "").await;
    let smuggled = format!(
        "GET /admin/delete-everything HTTP/1.1\r\nHost: {HOST}\r\nX-Remote-User: admin\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    stream
        .write_all(format!("GET /chat HTTP/1.1\r\nHost: {HOST}\r\n{HANDSHAKE}\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    // Whatever the client does next must not reach the backend as a request.
    let _ = stream.write_all(smuggled.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(raw_status(&answer), 502, "{answer}");
    let seen = fake.received();
    assert!(seen.contains("GET /chat"), "{seen}");
    assert!(!seen.contains("/admin/delete-everything"), "{seen}");
    assert!(
        gw.logs().contains("protocol switch refused"),
        "{}",
        gw.logs()
    );
}

#[tokio::test]
async fn only_websocket_upgrades_are_offered_to_the_backend() {
    let (_app, gw) = echo_app(GatewaySpec::new()).await;
    for (what, headers) in [
        ("h2c", "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n".to_string()),
        ("made up", "Upgrade: tunnel/1.0\r\nConnection: Upgrade\r\n".to_string()),
        ("websocket without a key", HANDSHAKE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")),
        ("websocket over POST", HANDSHAKE.to_string()),
    ] {
        let method = if what.contains("POST") { "POST" } else { "GET" };
        let raw = raw_exchange(
            gw.http,
            format!("{method} /x HTTP/1.1\r\nHost: {HOST}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(raw_status(&raw), 200, "{what}: {raw}");
        let echo = raw_json(&raw);
        assert!(header_values(&echo, "upgrade").is_empty(), "{what}: {echo}");
        assert!(
            header_values(&echo, "connection")
                .iter()
                .all(|c| !c.to_ascii_lowercase().contains("upgrade")),
            "{what}: {echo}"
        );
    }
}

/// Slowloris: one byte at a time keeps every per-read timeout happy, but the head as a whole
/// must arrive within `request_head_timeout`.
#[tokio::test]
async fn a_request_head_trickled_byte_by_byte_is_cut_off_at_the_deadline() {
    let (app, gw) =
        echo_app(GatewaySpec::new().server_setting("request_head_timeout = \"2s\"")).await;
    let mut stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let head = format!(
        "GET /slow HTTP/1.1\r\nHost: {HOST}\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(64)
    );
    let started = Instant::now();
    let mut closed_after = None;
    for byte in head.as_bytes() {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // Closed by the server? A read then returns 0 at once.
        let mut probe = [0u8; 64];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(250), stream.read(&mut probe)).await
        {
            closed_after = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let took = closed_after.expect("the connection stayed open past the head deadline");
    assert!(took < Duration::from_secs(5), "closed only after {took:?}");
    assert_eq!(app.hits(), 0, "a trickled request reached the backend");
    // A prompt client on the same gateway is served as usual.
    let raw = raw_exchange(
        gw.http,
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&raw), 200);
}
