//! Header hygiene: what a client sent that must never reach a backend or a decision.
//!
//! Runs once per request, before anything reads the headers: removes every client copy of a
//! header the gateway may inject (any case, `-` or `_` spelling, all duplicates), hop-by-hop
//! headers and headers named in `Connection`, and replaces `X-Forwarded-*` and `X-Request-Id`
//! with values taken from the real connection. Client forwarding headers are believed only from
//! configured trusted proxies. It works on the request header value type, not on sockets.

use ipnet::IpNet;
use pingora::http::RequestHeader;
use std::collections::HashSet;
use std::net::IpAddr;

/// Hop-by-hop headers (RFC 9110 §7.6.1) dropped here; framing (`Transfer-Encoding`) and
/// `Upgrade` are left to the proxy, which must still read the body and may relay WebSockets.
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
];

/// `Connection` tokens that are options, not header names.
const CONNECTION_OPTIONS: &[&str] = &["close", "keep-alive", "upgrade"];

/// Headers a `Connection` nomination may never remove (the request would become unroutable or
/// its body unreadable).
const PROTECTED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// Forwarding headers taken from clients only when the peer is a trusted proxy.
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-request-id",
];

/// URL-override headers some servers (IIS, Symfony, Zend) obey: never forwarded from anyone.
const URL_OVERRIDES: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-original-uri",
];

/// Longest `X-Request-Id` accepted from a trusted proxy.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The configured hygiene rules, compiled for fast matching.
#[derive(Debug, Clone)]
pub struct HeaderHygiene {
    identity_exact: HashSet<String>,
    identity_prefixes: Vec<String>,
    trusted_proxies: Vec<IpNet>,
}

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFacts {
    /// The socket peer (never a header).
    pub peer: Option<IpAddr>,
    /// The request arrived over TLS.
    pub tls: bool,
}

/// The scheme the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// As written in URLs and `X-Forwarded-Proto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What the gateway believes about the request's origin, after hygiene.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// The client's address: the socket peer, or, behind trusted proxies, the nearest
    /// untrusted address in `X-Forwarded-For`.
    pub client_ip: Option<IpAddr>,
    /// The scheme as seen by the client: the connection's, or a trusted proxy's
    /// `X-Forwarded-Proto`.
    pub proto: Scheme,
    /// Request id for logs and the backend.
    pub request_id: String,
    /// Some `Connection` header (not necessarily the first) asked to close the connection.
    pub close_requested: bool,
}

/// Canonical spelling for comparing header names: lower-case letters and digits only. Backends
/// read names loosely — letter case and `-`/`_` always, and CGI-style environments map every
/// other character to `_` too — so `X.Remote.User`, `x_remote-user` and `X-Remote-User` are
/// one name to them, and must be one name here.
fn canonical(name: &str) -> String {
    name.bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect()
}

impl HeaderHygiene {
    /// Builds hygiene rules: `identity_headers` and `identity_prefixes` are matched ignoring
    /// letter case and every character that is not a letter or digit.
    pub fn new<'a>(
        identity_headers: impl IntoIterator<Item = &'a str>,
        identity_prefixes: impl IntoIterator<Item = &'a str>,
        trusted_proxies: Vec<IpNet>,
    ) -> Self {
        Self {
            identity_exact: identity_headers.into_iter().map(canonical).collect(),
            identity_prefixes: identity_prefixes.into_iter().map(canonical).collect(),
            trusted_proxies,
        }
    }

    /// Is this (client-sent) header one the gateway may inject, in any spelling?
    pub fn is_identity_header(&self, name: &str) -> bool {
        // Runs for every header of every request: canonicalise into a stack buffer, allocating
        // only for an unusually long name.
        let mut buf = [0u8; 64];
        let mut len = 0usize;
        for b in name.bytes().filter(u8::is_ascii_alphanumeric) {
            match buf.get_mut(len) {
                Some(slot) => *slot = b.to_ascii_lowercase(),
                None => return self.is_identity_canonical(&canonical(name)),
            }
            len += 1;
        }
        let key = buf
            .get(..len)
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or_default();
        self.is_identity_canonical(key)
    }

    fn is_identity_canonical(&self, name: &str) -> bool {
        self.identity_exact.contains(name)
            || self
                .identity_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
    }

    /// Is this peer a configured trusted proxy?
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Cleans the request in place and sets the forwarding headers from the connection.
    pub fn apply(&self, req: &mut RequestHeader, conn: ConnectionFacts) -> Forwarding {
        let close_requested = self.strip_connection_nominated(req);
        // One pass over the headers the client actually sent (a handful), rather than a
        // lookup per name on our lists (dozens): this runs for every request.
        let mut forwarding_present = false;
        let doomed: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|name| {
                let n = name.as_str();
                forwarding_present |= FORWARDING.contains(&n);
                HOP_BY_HOP.contains(&n) || URL_OVERRIDES.contains(&n) || self.is_identity_header(n)
            })
            .cloned()
            .collect();
        for name in &doomed {
            req.remove_header(name);
        }

        let trusted_peer = conn.peer.is_some_and(|ip| self.is_trusted(ip));
        let mut forwarding = self.forwarding(req, conn, trusted_peer);
        forwarding.close_requested = close_requested;
        let chain = if trusted_peer {
            joined(req, "x-forwarded-for")
        } else {
            None
        };
        let client_proto = if trusted_peer {
            joined(req, "x-forwarded-proto")
        } else {
            None
        };
        let client_host = if trusted_peer {
            joined(req, "x-forwarded-host")
        } else {
            None
        };

        if forwarding_present {
            for name in FORWARDING {
                req.remove_header(*name);
            }
        }
        let peer = conn.peer.map(|ip| ip.to_string());
        let xff = match (chain, peer) {
            (Some(chain), Some(peer)) => Some(format!("{chain}, {peer}")),
            (None, Some(peer)) => Some(peer),
            (chain, None) => chain,
        };
        // Values here come from socket addresses, validated headers or our own generator, so
        // insertion cannot fail; ignore the impossible error rather than panic.
        if let Some(xff) = xff {
            let _ = req.insert_header("X-Forwarded-For", xff);
        }
        // Behind a trusted TLS-terminating proxy the client's scheme is the proxy's word (its
        // first, client-facing entry); it decides redirect URIs and Secure cookies.
        match client_proto
            .as_deref()
            .and_then(|p| p.split(',').next())
            .map(str::trim)
        {
            Some("https") => forwarding.proto = Scheme::Https,
            Some("http") => forwarding.proto = Scheme::Http,
            _ => {}
        }
        let _ = req.insert_header("X-Forwarded-Proto", forwarding.proto.as_str());
        let host = client_host
            .filter(|h| crate::routing::normalise_host(h).is_some())
            .or_else(|| request_authority(req));
        if let Some(host) = host {
            let _ = req.insert_header("X-Forwarded-Host", host);
        }
        let _ = req.insert_header("X-Request-Id", forwarding.request_id.as_str());
        forwarding
    }

    /// Removes every header the client named in `Connection` (RFC 9110 §7.6.1), and keeps only
    /// the connection options themselves. Returns whether `close` was among them.
    fn strip_connection_nominated(&self, req: &mut RequestHeader) -> bool {
        let Some(tokens) = joined(req, "connection") else {
            return false;
        };
        let tokens: Vec<String> = tokens
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        let mut options = Vec::new();
        for token in &tokens {
            if CONNECTION_OPTIONS.contains(&token.as_str()) {
                options.push(token.as_str());
            } else if !PROTECTED.contains(&token.as_str()) {
                req.remove_header(token.as_str());
                // A `_` spelling of the same name reaches CGI-style backends identically.
                req.remove_header(token.replace('-', "_").as_str());
                req.remove_header(token.replace('_', "-").as_str());
            }
        }
        req.remove_header("connection");
        let close = options.contains(&"close");
        if !options.is_empty() {
            let _ = req.insert_header("Connection", options.join(", "));
        }
        close
    }

    fn forwarding(
        &self,
        req: &RequestHeader,
        conn: ConnectionFacts,
        trusted_peer: bool,
    ) -> Forwarding {
        let client_ip = if trusted_peer {
            self.client_behind_proxies(req, conn.peer)
        } else {
            conn.peer
        };
        let request_id = trusted_peer
            .then(|| joined(req, "x-request-id"))
            .flatten()
            .filter(|id| is_well_formed_request_id(id))
            .unwrap_or_else(new_request_id);
        Forwarding {
            client_ip,
            proto: if conn.tls {
                Scheme::Https
            } else {
                Scheme::Http
            },
            request_id,
            close_requested: false,
        }
    }

    /// Walks `X-Forwarded-For` from the right, skipping trusted proxies: the first untrusted
    /// address is the client. Anything unparsable ends the walk (it is not believable).
    fn client_behind_proxies(&self, req: &RequestHeader, peer: Option<IpAddr>) -> Option<IpAddr> {
        let mut client = peer;
        let Some(chain) = joined(req, "x-forwarded-for") else {
            return client;
        };
        for hop in chain.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = Some(ip);
                    if !self.is_trusted(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

/// All values of a header joined with `, ` (as RFC 9110 §5.3 allows), if any are text.
fn joined(req: &RequestHeader, name: &str) -> Option<String> {
    let values: Vec<&str> = req
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The request's authority: URI authority (HTTP/2, absolute-form) or the Host header.
pub fn request_authority(req: &RequestHeader) -> Option<String> {
    req.uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

fn is_well_formed_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A 128-bit id, unique across processes and requests, as 32 hex digits: 64 random bits drawn
/// once per process, then a counter passed through a keyed bijection (so ids stay unique but do
/// not tell clients how many requests the gateway has served). Request ids are for
/// correlation, not secrets, and this runs for every request (a CSPRNG call and per-byte
/// formatting cost more than the rest of header hygiene together).
pub fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PROCESS.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if openssl::rand::rand_bytes(&mut bytes).is_err() {
            // Unique per process even without randomness: the pid and the start time.
            let now = crate::clock::unix_now();
            bytes = ((u64::from(std::process::id()) << 32) ^ now).to_be_bytes();
        }
        u64::from_be_bytes(bytes)
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}{:016x}", scramble(count.wrapping_add(prefix)))
}

/// The splitmix64 finaliser: a bijection on 64-bit values that scatters consecutive inputs.
fn scramble(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hygiene(trusted: &[&str]) -> HeaderHygiene {
        HeaderHygiene::new(
            ["X-Remote-User", "Remote-User"],
            ["X-Portcullis-"],
            trusted.iter().map(|t| t.parse().unwrap()).collect(),
        )
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    fn conn(peer: &str) -> ConnectionFacts {
        ConnectionFacts {
            peer: Some(peer.parse().unwrap()),
            tls: false,
        }
    }

    #[test]
    fn strips_identity_headers_in_every_spelling_and_duplicate() {
        let h = hygiene(&[]);
        let mut req = request(&[
            ("X-Remote-User", "admin"),
            ("x_remote_user", "admin"),
            ("X-REMOTE-USER", "admin2"),
            ("x-remote_user", "admin3"),
            ("REMOTE_USER", "root"),
            ("x-portcullis-anything", "1"),
            ("X_Portcullis_Jwt_Assertion", "forged"),
            ("X.Remote.User", "cgi-style"),
            ("x~remote+user", "cgi-style"),
            ("X!Remote!User", "cgi-style"),
            ("X.Portcullis.Anything", "cgi-style"),
            ("X-Other", "kept"),
        ]);
        h.apply(&mut req, conn("192.0.2.7"));
        let names: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert!(
            !names
                .iter()
                .any(|n| n.contains("remote") || n.contains("portcullis")),
            "{names:?}"
        );
        assert_eq!(req.headers.get("x-other").unwrap(), "kept");
    }

    #[test]
    fn connection_nominated_headers_are_removed_but_options_kept() {
        let h = hygiene(&[]);
        let mut req = request(&[
            ("Connection", "close, X-Secret-Hint, Host"),
            ("X-Secret-Hint", "1"),
            ("Host", "a.example"),
        ]);
        h.apply(&mut req, conn("192.0.2.7"));
        assert!(req.headers.get("x-secret-hint").is_none());
        assert_eq!(req.headers.get("connection").unwrap(), "close");
        assert_eq!(req.headers.get("host").unwrap(), "a.example");
    }

    #[test]
    fn untrusted_client_forwarding_headers_are_replaced() {
        let h = hygiene(&["10.0.0.0/8"]);
        let mut req = request(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Real-IP", "1.2.3.4"),
            ("X-Original-URL", "/admin"),
            ("X-Request-Id", "client-chosen"),
            ("Host", "app.example"),
        ]);
        let fwd = h.apply(&mut req, conn("192.0.2.7"));
        assert_eq!(fwd.client_ip, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(req.headers.get("x-forwarded-for").unwrap(), "192.0.2.7");
        assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(req.headers.get("x-forwarded-host").unwrap(), "app.example");
        assert!(req.headers.get("x-real-ip").is_none());
        assert!(req.headers.get("x-original-url").is_none());
        assert_ne!(req.headers.get("x-request-id").unwrap(), "client-chosen");
        assert_eq!(fwd.request_id.len(), 32);
    }

    #[test]
    fn trusted_proxy_chain_is_extended_and_client_found() {
        let h = hygiene(&["10.0.0.0/8"]);
        let mut req = request(&[
            ("X-Forwarded-For", "6.6.6.6, 198.51.100.9, 10.1.1.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Request-Id", "lb-1234"),
        ]);
        let fwd = h.apply(&mut req, conn("10.0.0.2"));
        // 6.6.6.6 may be forged by the client; the nearest untrusted hop is the real client.
        assert_eq!(fwd.client_ip, Some("198.51.100.9".parse().unwrap()));
        assert_eq!(
            req.headers.get("x-forwarded-for").unwrap(),
            "6.6.6.6, 198.51.100.9, 10.1.1.1, 10.0.0.2"
        );
        assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(fwd.request_id, "lb-1234");
    }

    #[test]
    fn malformed_request_id_from_trusted_proxy_is_replaced() {
        let h = hygiene(&["10.0.0.0/8"]);
        let mut req = request(&[("X-Request-Id", "bad id\twith spaces")]);
        let fwd = h.apply(&mut req, conn("10.0.0.2"));
        assert_ne!(fwd.request_id, "bad id\twith spaces");
    }

    #[test]
    fn request_ids_are_distinct_and_hex() {
        let ids: HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        // Consecutive ids do not count upwards in the open.
        let (a, b) = (new_request_id(), new_request_id());
        let tail = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap();
        assert!(tail(&b).abs_diff(tail(&a)) > 1_000_000, "{a} {b}");
    }
}
