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

/// What a framing case must end as at the backend.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// Never reaches the backend (the client gets a 400 or a closed connection).
    Refused,
    /// Refused, or reaches the backend as one plain request.
    OneOrRefused,
    /// Reaches the backend as one plain request (the controls).
    Served,
}

/// No header line of `seen` is a client-sent `X-Remote-User` (the policy injects none).
fn assert_no_identity_line(case: &str, seen: &str) {
    assert!(
        !seen.split(['\r', '\n']).any(|l| l
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("x-remote-user")),
        "{case}: an identity header line reached the backend: {seen:?}"
    );
}

/// Checks that `seen` (the bytes one case delivered to the backend) is exactly one request
/// with a single, plain framing: CRLF lines, an origin-form target, one Host naming the app,
/// at most one of Content-Length or `Transfer-Encoding: chunked`, and a body that ends where
/// its framing says, with nothing after it.
fn assert_one_plain_request(case: &str, seen: &str) {
    let (head, body) = seen
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{case}: no complete head in {seen:?}"));
    let bytes = head.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'\n' => assert!(
                i > 0 && bytes[i - 1] == b'\r',
                "{case}: bare LF in {head:?}"
            ),
            b'\r' => assert!(
                bytes.get(i + 1) == Some(&b'\n'),
                "{case}: bare CR in {head:?}"
            ),
            0 => panic!("{case}: NUL in {head:?}"),
            _ => {}
        }
    }
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap();
    let parts: Vec<&str> = request_line.split(' ').collect();
    assert!(
        parts.len() == 3 && parts[1].starts_with('/') && parts[2] == "HTTP/1.1",
        "{case}: request line {request_line:?}"
    );
    let mut hosts = Vec::new();
    let mut lengths = Vec::new();
    let mut codings = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{case}: header line without a colon: {line:?}"));
        assert!(
            !name.is_empty() && !name.contains([' ', '\t']),
            "{case}: header name {name:?} (obs-fold or whitespace before the colon)"
        );
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "host" => hosts.push(value.to_string()),
            "content-length" => lengths.push(value.to_string()),
            "transfer-encoding" => codings.push(value.to_string()),
            _ => {}
        }
    }
    assert_eq!(hosts, [HOST], "{case}: Host headers in {head:?}");
    assert!(
        lengths.is_empty() || codings.is_empty(),
        "{case}: both Content-Length and Transfer-Encoding in {head:?}"
    );
    if !codings.is_empty() {
        assert_eq!(codings, ["chunked"], "{case}: {head:?}");
        // Chunks up to the last one; nothing may follow it.
        let mut rest = body;
        loop {
            let (size, after) = rest
                .split_once("\r\n")
                .unwrap_or_else(|| panic!("{case}: unterminated chunk in {body:?}"));
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("{case}: chunk size {size:?} in {body:?}"));
            if size == 0 {
                assert_eq!(
                    after, "\r\n",
                    "{case}: bytes after the last chunk: {body:?}"
                );
                break;
            }
            assert_eq!(&after[size..size + 2], "\r\n", "{case}: chunk in {body:?}");
            rest = &after[size + 2..];
        }
    } else {
        let length: usize = lengths.first().map_or(0, |l| l.parse().unwrap());
        assert_eq!(lengths.len().min(1), lengths.len(), "{case}: {head:?}");
        assert_eq!(body.len(), length, "{case}: body {body:?} after {head:?}");
    }
}

/// A byte-level differential: request framings that parsers have disagreed on (request
/// smuggling, header injection), each sent on its own connection. What reaches the backend is
/// one unambiguous request, or nothing.
#[tokio::test]
async fn every_odd_request_framing_reaches_the_backend_as_one_plain_request_or_not_at_all() {
    use Outcome::*;
    // Keeps reading after its answer, so a body (or anything smuggled after it) is recorded.
    let backend = answering_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        true,
    )
    .await;
    let gw = app_gateway(&[(&backend.backend.url(), 1)], "").await;
    let h = format!("Host: {HOST}\r\n");
    // What a Content-Length parser would read as a second request, inside a chunk.
    let inner = format!("GPOST /smuggled HTTP/1.1\r\n{h}Content-Length: 15\r\n\r\nx=1");
    let cases: Vec<(&str, String, Outcome)> = vec![
        ("plain chunked", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), Served),
        ("plain length", format!("POST /a HTTP/1.1\r\n{h}Content-Length: 5\r\n\r\nhello"), Served),
        ("CL and TE (CL.TE smuggling)", format!("POST /a HTTP/1.1\r\n{h}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n{h}\r\n"), OneOrRefused),
        ("TE and CL (TE.CL smuggling)", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len()), OneOrRefused),
        ("TE with a space before the colon", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello"), Refused),
        ("Host with a space before the colon", format!("GET /a HTTP/1.1\r\nHost : {HOST}\r\n\r\n"), Refused),
        ("TE xchunked", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\nhello"), Refused),
        ("TE chunked then identity", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), Refused),
        ("TE in two headers", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), Refused),
        ("TE with a tab", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), OneOrRefused),
        ("TE in capitals", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), OneOrRefused),
        ("TE by obs-fold", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\nhello"), Refused),
        ("obs-fold in a header", format!("GET /a HTTP/1.1\r\n{h}X-Note: one\r\n two\r\n\r\n"), OneOrRefused),
        ("obs-fold hiding an identity header", format!("GET /a HTTP/1.1\r\n{h}X-Note: one\r\n X-Remote-User: admin\r\n\r\n"), OneOrRefused),
        ("bare LF line ends", format!("GET /a HTTP/1.1\n{h}X-Note: lf\n\n").replace("\r\n", "\n"), OneOrRefused),
        ("bare CR inside a value", format!("GET /a HTTP/1.1\r\n{h}X-Note: a\rX-Remote-User: admin\r\n\r\n"), OneOrRefused),
        ("NUL inside a value", format!("GET /a HTTP/1.1\r\n{h}X-Note: a\0b\r\n\r\n"), Refused),
        ("two Host headers", format!("GET /a HTTP/1.1\r\n{h}Host: other.localhost\r\n\r\n"), Refused),
        ("no Host", "GET /a HTTP/1.1\r\n\r\n".to_string(), Refused),
        ("absolute-form naming another host", format!("GET http://other.localhost/a HTTP/1.1\r\n{h}\r\n"), OneOrRefused),
        ("absolute-form naming the app, Host another", format!("GET http://{HOST}/a HTTP/1.1\r\nHost: other.localhost\r\n\r\n"), OneOrRefused),
        ("two spaces in the request line", format!("GET  /a HTTP/1.1\r\n{h}\r\n"), OneOrRefused),
        ("a fourth word in the request line", format!("GET /a HTTP/1.1 extra\r\n{h}\r\n"), Refused),
        ("a tab in the request line", format!("GET\t/a HTTP/1.1\r\n{h}\r\n"), OneOrRefused),
        ("lower-case method", format!("delete /a HTTP/1.1\r\n{h}\r\n"), Refused),
        ("HTTP/1.0 with a body by length", format!("POST /a HTTP/1.0\r\n{h}Content-Length: 5\r\n\r\nhello"), OneOrRefused),
        ("HTTP/0.9 style", "GET /a\r\n\r\n".to_string(), Refused),
        ("unknown version", format!("GET /a HTTP/1.2\r\n{h}\r\n"), OneOrRefused),
        ("Content-Length with a plus", format!("POST /a HTTP/1.1\r\n{h}Content-Length: +5\r\n\r\nhello"), Refused),
        ("negative Content-Length", format!("POST /a HTTP/1.1\r\n{h}Content-Length: -5\r\n\r\nhello"), Refused),
        ("Content-Length in hex", format!("POST /a HTTP/1.1\r\n{h}Content-Length: 0x5\r\n\r\nhello"), Refused),
        ("Content-Length overflowing 64 bits", format!("POST /a HTTP/1.1\r\n{h}Content-Length: 18446744073709551621\r\n\r\nhello"), Refused),
        ("chunk size overflowing 64 bits", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"), OneOrRefused),
        ("chunk extension", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n"), OneOrRefused),
        ("chunk with a bare LF", format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"), OneOrRefused),
        ("a request inside a GET's body", format!("GET /a HTTP/1.1\r\n{h}Content-Length: {}\r\n\r\n{inner}", inner.len()), OneOrRefused),
    ];
    for (case, raw, outcome) in cases {
        let before = backend.received().len();
        // `Connection: close` as the first header (in the case's own line ending), so the
        // answer ends with the connection; the client never half-closes, which would abort
        // the request before its body is forwarded.
        let first_end = raw.find('\n').unwrap();
        let eol = if raw[..first_end].ends_with('\r') {
            "\r\n"
        } else {
            "\n"
        };
        let raw = format!(
            "{}Connection: close{eol}{}",
            &raw[..=first_end],
            &raw[first_end + 1..]
        );
        let mut stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let _ = stream.write_all(raw.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        // Let the backend's recorder finish with what it was sent.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let seen = backend.received()[before..].to_string();
        let status = raw_status(&answer);
        assert!(
            outcome != Served || !seen.is_empty(),
            "{case}: not served: {answer:?}"
        );
        if seen.is_empty() {
            assert!(
                status == 0 || (400..500).contains(&status),
                "{case}: refused, but answered {answer:?}"
            );
        } else if status == 400 && seen.ends_with("\r\n\r\n") && !seen.contains("Content-Length") {
            // The head went on before the body was read (requests stream); the body's framing
            // was then refused, so the backend holds a request that never completes.
            assert_eq!(
                outcome, OneOrRefused,
                "{case} reached the backend as {seen:?}"
            );
            assert_no_identity_line(case, &seen);
        } else {
            assert_ne!(outcome, Refused, "{case} reached the backend as {seen:?}");
            // One request, framed exactly: a "request" inside its body is data to the backend.
            assert_one_plain_request(case, &seen);
            assert_no_identity_line(case, &seen);
        }
    }
    // Still serving afterwards.
    let raw = raw_exchange(
        gw.http,
        format!("GET / HTTP/1.1\r\n{h}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
}

/// What the server said about stream 1, from the frames read so far: `HEADERS` (an answer),
/// `RST_STREAM` or `GOAWAY`.
fn h2_verdict(mut bytes: &[u8]) -> Option<&'static str> {
    while bytes.len() >= 9 {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        let kind = bytes[3];
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        match (kind, stream) {
            (0x1, 1) => return Some("headers"),
            (0x3, 1) => return Some("reset"),
            (0x7, _) => return Some("goaway"),
            _ => {}
        }
        bytes = bytes.get(9 + len..)?;
    }
    None
}

/// Is stream 1's response a 400? (`:status 400` is HPACK static-table entry 12, which a
/// server sends as the one byte 0x8c.)
fn h2_status_is_400(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 9 {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        if bytes[3] == 0x1 && stream == 1 {
            return bytes.get(9) == Some(&0x8c);
        }
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    false
}

/// One HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK "literal header field without indexing, new name", no Huffman coding: the bytes
/// go on the wire exactly as given, CR, LF and NUL included (no client library sends these).
fn hpack_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    assert!(name.len() < 127 && value.len() < 127);
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
    out
}

/// HTTP/2 requests (h2c, prior knowledge) carrying what HTTP/1 cannot: CR/LF/NUL inside
/// values, upper-case names, connection-specific headers, and an `:authority` that disagrees
/// with `host`. The gateway downgrades to HTTP/1.1 for the backend; what arrives there is one
/// plain request naming the app, or nothing.
#[tokio::test]
async fn http2_requests_downgrade_to_one_plain_request_or_none() {
    use Outcome::*;
    let backend = recording_backend().await;
    let gw = GatewaySpec::new()
        .h2c()
        .policy(
            "app.toml",
            open_policy("app", &[HOST], &[(&backend.backend.url(), 1)], ""),
        )
        .start()
        .await;
    // A request's header block: the pseudo-headers (`:authority` when given), then `extra`.
    let request = |path: &[u8], authority: Option<&str>, extra: &[(&[u8], &[u8])]| {
        let mut block = Vec::new();
        block.extend(hpack_literal(b":method", b"GET"));
        block.extend(hpack_literal(b":scheme", b"http"));
        block.extend(hpack_literal(b":path", path));
        if let Some(a) = authority {
            block.extend(hpack_literal(b":authority", a.as_bytes()));
        }
        for (name, value) in extra {
            block.extend(hpack_literal(name, value));
        }
        block
    };
    let with =
        |authority: Option<&str>, extra: &[(&[u8], &[u8])]| request(b"/h2", authority, extra);
    let app = Some(HOST);
    let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
        ("plain", with(app, &[(b"x-note", b"fine")]), Served),
        (
            "host instead of :authority",
            with(None, &[(b"host", HOST.as_bytes())]),
            OneOrRefused,
        ),
        (
            "CRLF in a value",
            with(app, &[(b"x-note", b"a\r\nx-remote-user: admin")]),
            Refused,
        ),
        (
            "LF in a value",
            with(app, &[(b"x-note", b"a\nx-remote-user: admin")]),
            Refused,
        ),
        (
            "CR in a value",
            with(app, &[(b"x-note", b"a\rx-remote-user: admin")]),
            Refused,
        ),
        (
            "NUL in a value",
            with(app, &[(b"x-note", b"a\0b")]),
            Refused,
        ),
        (
            "CRLF in :path",
            request(b"/h2 HTTP/1.1\r\nx-remote-user: admin\r\nx: y", app, &[]),
            Refused,
        ),
        ("space in :path", request(b"/h2 x", app, &[]), OneOrRefused),
        (
            "upper-case name",
            with(app, &[(b"X-Remote-User", b"admin")]),
            Refused,
        ),
        (
            "colon in a name",
            with(app, &[(b"x-remote-user:", b"admin")]),
            Refused,
        ),
        (
            "space in a name",
            with(app, &[(b"x-remote-user x", b"admin")]),
            Refused,
        ),
        (
            "transfer-encoding",
            with(app, &[(b"transfer-encoding", b"chunked")]),
            OneOrRefused,
        ),
        (
            "connection",
            with(app, &[(b"connection", b"keep-alive")]),
            OneOrRefused,
        ),
        (
            ":authority the app, host another",
            with(app, &[(b"host", b"other.localhost")]),
            Refused,
        ),
        (
            ":authority another, host the app",
            with(Some("other.localhost"), &[(b"host", HOST.as_bytes())]),
            Refused,
        ),
        (
            ":authority and host the same",
            with(app, &[(b"host", HOST.as_bytes())]),
            Served,
        ),
        (
            "two hosts",
            with(
                None,
                &[(b"host", HOST.as_bytes()), (b"host", b"other.localhost")],
            ),
            Refused,
        ),
        (
            "authority with userinfo",
            with(Some(&format!("admin@{HOST}")), &[]),
            OneOrRefused,
        ),
        (
            "pseudo-header after a regular one",
            {
                let mut b = with(None, &[(b"x-note", b"a")]);
                b.extend(hpack_literal(b":authority", HOST.as_bytes()));
                b
            },
            Refused,
        ),
        (
            "content-length with no body",
            with(app, &[(b"content-length", b"5")]),
            Refused,
        ),
    ];
    for (case, block, outcome) in cases {
        let before = backend.received().len();
        let mut stream = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(h2_frame(0x4, 0, 0, &[]));
        // HEADERS, END_STREAM | END_HEADERS, stream 1.
        out.extend(h2_frame(0x1, 0x5, 1, &block));
        stream.write_all(&out).await.unwrap();
        // Read until the server has had its say on stream 1: response headers, a reset, or
        // going away.
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut verdict = None;
        while verdict.is_none() && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            verdict = h2_verdict(&answer);
        }
        let verdict = verdict.unwrap_or_else(|| panic!("{case}: no answer on stream 1"));
        assert!(
            outcome != Refused || verdict != "headers" || h2_status_is_400(&answer),
            "{case}: {verdict}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        let seen = backend.received()[before..].to_string();
        assert!(outcome != Served || !seen.is_empty(), "{case}: not served");
        if !seen.is_empty() {
            assert_ne!(outcome, Refused, "{case} reached the backend as {seen:?}");
            assert_one_plain_request(case, &seen);
            assert_no_identity_line(case, &seen);
        }
    }
}
