//! How a request is framed and whether its connection may change protocol: the parts of HTTP
//! where a proxy and a backend that read the same bytes differently let requests through
//! unseen.
//!
//! Owns three rules. **One request line**: the bytes sent on as the target are the path the
//! rules judged (origin-form, visible ASCII), so no lenient parse upstream can make a
//! different path of them, and the method is in capitals (methods are case-sensitive; a rule
//! for `DELETE` must not miss a `delete` that a backend reads as one). **One Content-Length** (RFC 9112 §6.3): repeated identical values are sent
//! on as one value (Pingora already refuses differing ones), so no backend can pick another
//! copy. **Genuine WebSockets only**: a client's `Upgrade` is kept only for a well-formed
//! WebSocket handshake (RFC 6455 §4.1), and the backend's `101` must prove it read that
//! handshake (`Sec-WebSocket-Accept`, §4.2.2) before the connection becomes a tunnel; anything
//! else stays plain HTTP or is refused, so no request can ride inside a fake upgrade past the
//! rules and header hygiene. Works on header values only; the proxy applies the results.

use base64::Engine;
use pingora::http::{RequestHeader, ResponseHeader};
use thiserror::Error;

/// The GUID every WebSocket server hashes with the client's key (RFC 6455 §1.3).
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a request's framing was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// `Content-Length` values that disagree or are not numbers.
    #[error("ambiguous Content-Length")]
    AmbiguousLength,
    /// A request target that is not plain origin-form (`/path?query` in visible ASCII), or
    /// that reads as another path than the one the rules see.
    #[error("request target is not a plain path")]
    RequestTarget,
    /// A method with lower-case letters.
    #[error("method is not in capitals")]
    Method,
}

/// Refuses a request whose target, as it would be sent on, differs from the path and query
/// the gateway routes and judges by (e.g. `GET  /a` read leniently as `/a` but forwarded as
/// `%20/a`), or is not origin-form in visible ASCII (RFC 9112 §3.2), or whose method has
/// lower-case letters.
pub fn plain_request_line(req: &RequestHeader) -> Result<(), FramingError> {
    if req.method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(FramingError::Method);
    }
    let raw = req.raw_path();
    let visible = raw.iter().all(|b| (0x21..=0x7e).contains(b));
    let judged = req.uri.path_and_query().map(|p| p.as_str().as_bytes());
    if raw.first() == Some(&b'/') && visible && judged == Some(raw) {
        Ok(())
    } else {
        Err(FramingError::RequestTarget)
    }
}

/// Why a backend's protocol switch was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SwitchError {
    /// A `101` for a request that asked for no (genuine) upgrade.
    #[error("the backend switched protocols without a WebSocket handshake to answer")]
    Unrequested,
    /// The `101` does not upgrade to WebSocket.
    #[error("the backend's 101 does not upgrade to websocket")]
    NotWebSocket,
    /// `Sec-WebSocket-Accept` missing or not derived from this handshake's key.
    #[error("the backend's Sec-WebSocket-Accept does not answer this handshake")]
    WrongAccept,
}

/// What a request asks for by way of a protocol switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// Nothing: a plain request.
    None,
    /// A well-formed WebSocket handshake; the `101` must carry the accept value derived from
    /// this key.
    WebSocket {
        /// The `Sec-WebSocket-Accept` a genuine server answers with.
        expected_accept: String,
    },
}

/// Sends repeated identical `Content-Length` values on as a single one. Differing or
/// malformed values are an error (the caller answers 400).
pub fn single_content_length(req: &mut RequestHeader) -> Result<(), FramingError> {
    let values = req.headers.get_all(http::header::CONTENT_LENGTH);
    let mut count = 0usize;
    let mut length: Option<u64> = None;
    for value in values.iter() {
        let text = value.to_str().map_err(|_| FramingError::AmbiguousLength)?;
        for part in text.split(',') {
            count += 1;
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FramingError::AmbiguousLength);
            }
            let n: u64 = part.parse().map_err(|_| FramingError::AmbiguousLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(FramingError::AmbiguousLength);
            }
            length = Some(n);
        }
    }
    if let (true, Some(n)) = (count > 1, length) {
        req.remove_header(&http::header::CONTENT_LENGTH);
        // A decimal number is always a valid header value.
        let _ = req.insert_header(http::header::CONTENT_LENGTH, n.to_string());
    }
    Ok(())
}

/// Decides what the request's `Upgrade` may do, and removes it (and the `upgrade` connection
/// option) unless the request is a well-formed WebSocket handshake: other upgrades (`h2c`,
/// `TLS/1.0`, made-up ones) are simply not offered to the backend.
pub fn screen_upgrade(req: &mut RequestHeader) -> Upgrade {
    if req.headers.get(http::header::UPGRADE).is_none() {
        return Upgrade::None;
    }
    match websocket_key(req) {
        Some(key) => Upgrade::WebSocket {
            expected_accept: accept_for(&key),
        },
        None => {
            req.remove_header(&http::header::UPGRADE);
            let options: Vec<String> = req
                .headers
                .get_all(http::header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("upgrade"))
                .map(str::to_string)
                .collect();
            req.remove_header(&http::header::CONNECTION);
            if !options.is_empty() {
                let _ = req.insert_header(http::header::CONNECTION, options.join(", "));
            }
            Upgrade::None
        }
    }
}

/// The key of a well-formed WebSocket opening handshake (RFC 6455 §4.1): `GET` over HTTP/1.1,
/// one `Upgrade: websocket`, `Connection` naming `upgrade`, version 13 and a key of 16 bytes.
fn websocket_key(req: &RequestHeader) -> Option<String> {
    let one = |name: http::header::HeaderName| -> Option<&str> {
        let mut values = req.headers.get_all(name).iter();
        let first = values.next()?.to_str().ok()?;
        values.next().is_none().then_some(first.trim())
    };
    let is_token_list_with = |name: http::header::HeaderName, token: &str| {
        req.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let shaped = req.method == http::Method::GET
        && req.version == http::Version::HTTP_11
        && one(http::header::UPGRADE).is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        && is_token_list_with(http::header::CONNECTION, "upgrade")
        && one(http::header::SEC_WEBSOCKET_VERSION) == Some("13");
    if !shaped {
        return None;
    }
    let key = one(http::header::SEC_WEBSOCKET_KEY)?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    (decoded.len() == 16).then(|| key.to_string())
}

/// The `Sec-WebSocket-Accept` value for a client key (RFC 6455 §4.2.2).
pub fn accept_for(key: &str) -> String {
    let digest = openssl::sha::sha1(format!("{key}{WEBSOCKET_GUID}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Checks a backend's `101 Switching Protocols` against what the request asked for. Only a
/// switch that answers this request's own WebSocket handshake may become a tunnel.
pub fn check_switch(resp: &ResponseHeader, asked: &Upgrade) -> Result<(), SwitchError> {
    let Upgrade::WebSocket { expected_accept } = asked else {
        return Err(SwitchError::Unrequested);
    };
    let upgrade = resp
        .headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(SwitchError::NotWebSocket);
    }
    let accept = resp
        .headers
        .get(http::header::SEC_WEBSOCKET_ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if accept != Some(expected_accept.as_str()) {
        return Err(SwitchError::WrongAccept);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/socket", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn handshake() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", KEY),
        ]
    }

    #[test]
    fn only_plain_origin_form_targets_and_capital_methods_pass() {
        for good in [&b"/a/b?x=1&y=%20"[..], b"/"] {
            let req = RequestHeader::build("GET", good, None).unwrap();
            assert_eq!(plain_request_line(&req), Ok(()), "{good:?}");
        }
        let lower = RequestHeader::build("delete", b"/a", None).unwrap();
        assert_eq!(plain_request_line(&lower), Err(FramingError::Method));
        for bad in [&b"http://other.example/a"[..], b"*", b"/caf\xc3\xa9"] {
            let Ok(req) = RequestHeader::build("GET", bad, None) else {
                continue;
            };
            assert_eq!(
                plain_request_line(&req),
                Err(FramingError::RequestTarget),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_rfc_example_accept_value_is_derived() {
        // RFC 6455 §1.3.
        assert_eq!(accept_for(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_genuine_handshake_keeps_its_upgrade_and_needs_the_matching_accept() {
        let mut req = request("GET", &handshake());
        let asked = screen_upgrade(&mut req);
        assert_eq!(
            asked,
            Upgrade::WebSocket {
                expected_accept: accept_for(KEY)
            }
        );
        assert!(req.headers.get("upgrade").is_some());
        let mut ok = ResponseHeader::build(101, None).unwrap();
        ok.insert_header("Upgrade", "websocket").unwrap();
        ok.insert_header("Sec-WebSocket-Accept", accept_for(KEY))
            .unwrap();
        assert_eq!(check_switch(&ok, &asked), Ok(()));
        let mut fake = ResponseHeader::build(101, None).unwrap();
        fake.insert_header("Upgrade", "websocket").unwrap();
        assert_eq!(check_switch(&fake, &asked), Err(SwitchError::WrongAccept));
        fake.insert_header("Sec-WebSocket-Accept", "AAAA").unwrap();
        assert_eq!(check_switch(&fake, &asked), Err(SwitchError::WrongAccept));
        let mut other = ResponseHeader::build(101, None).unwrap();
        other.insert_header("Upgrade", "h2c").unwrap();
        assert_eq!(check_switch(&other, &asked), Err(SwitchError::NotWebSocket));
    }

    #[test]
    fn other_upgrades_are_removed_and_a_switch_then_refused() {
        let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
            (
                "GET",
                vec![
                    ("Upgrade", "h2c"),
                    ("Connection", "Upgrade, HTTP2-Settings"),
                ],
            ),
            ("POST", handshake()),
            (
                "GET",
                handshake()
                    .into_iter()
                    .filter(|(k, _)| *k != "Sec-WebSocket-Key")
                    .collect(),
            ),
            (
                "GET",
                handshake()
                    .into_iter()
                    .map(|(k, v)| {
                        if k == "Sec-WebSocket-Key" {
                            (k, "c2hvcnQ=")
                        } else {
                            (k, v)
                        }
                    })
                    .collect(),
            ),
            (
                "GET",
                handshake()
                    .into_iter()
                    .map(|(k, v)| {
                        if k == "Sec-WebSocket-Version" {
                            (k, "8")
                        } else {
                            (k, v)
                        }
                    })
                    .collect(),
            ),
            (
                "GET",
                handshake()
                    .into_iter()
                    .filter(|(k, _)| *k != "Connection")
                    .collect(),
            ),
        ];
        for (method, headers) in cases {
            let mut req = request(method, &headers);
            assert_eq!(
                screen_upgrade(&mut req),
                Upgrade::None,
                "{method} {headers:?}"
            );
            assert!(req.headers.get("upgrade").is_none(), "{headers:?}");
            let connection: Vec<_> = req.headers.get_all("connection").iter().collect();
            assert!(
                connection.iter().all(|v| !v
                    .to_str()
                    .unwrap()
                    .to_ascii_lowercase()
                    .contains("upgrade")),
                "{connection:?}"
            );
            let mut switch = ResponseHeader::build(101, None).unwrap();
            switch.insert_header("Upgrade", "websocket").unwrap();
            assert_eq!(
                check_switch(&switch, &Upgrade::None),
                Err(SwitchError::Unrequested)
            );
        }
    }

    #[test]
    fn repeated_identical_content_lengths_become_one_and_differing_ones_are_refused() {
        for value in [
            &["80, 80"][..],
            &["80,80"],
            &["80", "80"],
            &["80", "80, 80"],
        ] {
            let mut req = request("POST", &[]);
            for v in value {
                req.append_header("Content-Length", *v).unwrap();
            }
            single_content_length(&mut req).unwrap();
            let all: Vec<_> = req.headers.get_all("content-length").iter().collect();
            assert_eq!(all, ["80"], "{value:?}");
        }
        for value in [
            &["80, 81"][..],
            &["80", "81"],
            &["80, "],
            &["+80"],
            &["0x50"],
        ] {
            let mut req = request("POST", &[]);
            for v in value {
                req.append_header("Content-Length", *v).unwrap();
            }
            assert_eq!(
                single_content_length(&mut req),
                Err(FramingError::AmbiguousLength),
                "{value:?}"
            );
        }
        let mut single = request("POST", &[("Content-Length", "12")]);
        single_content_length(&mut single).unwrap();
        assert_eq!(single.headers.get("content-length").unwrap(), "12");
    }
}
