//! Header hygiene on arbitrary client headers: never a panic, and afterwards no header an app
//! could read as an identity header (in any spelling) and no client-sent forwarding header is
//! left; the forwarding headers are the gateway's own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pingora::http::RequestHeader;
use portcullis::hygiene::{ConnectionFacts, HeaderHygiene};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

fn hygiene() -> &'static HeaderHygiene {
    static HYGIENE: OnceLock<HeaderHygiene> = OnceLock::new();
    HYGIENE.get_or_init(|| {
        HeaderHygiene::new(
            ["X-Remote-User", "X-Groups", "Authorization"],
            ["X-Portcullis-"],
            vec!["10.0.0.0/8".parse().expect("a CIDR")],
        )
    })
}

fn canonical(name: &str) -> String {
    name.bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let (peer_byte, rest) = data.split_first().unwrap_or((&0, data));
    let Ok(mut req) = RequestHeader::build("GET", b"/", None) else {
        return;
    };
    // One header per line, `name: value`.
    for line in rest.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default();
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        let _ = req.append_header(name, value);
    }
    // Half the inputs come from a trusted proxy.
    let peer = if peer_byte % 2 == 0 {
        IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))
    } else {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))
    };
    let forwarding = hygiene().apply(
        &mut req,
        ConnectionFacts {
            peer: Some(peer),
            tls: peer_byte & 2 == 0,
        },
    );
    for name in req.headers.keys() {
        let canon = canonical(name.as_str());
        assert!(
            !["xremoteuser", "xgroups", "authorization"].contains(&canon.as_str())
                && !canon.starts_with("xportcullis"),
            "identity header {name} survived hygiene"
        );
    }
    assert_eq!(req.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(req.headers.get_all("x-forwarded-proto").iter().count(), 1);
    assert_eq!(req.headers.get_all("x-request-id").iter().count(), 1);
    assert!(req.headers.get("forwarded").is_none());
    assert!(!forwarding.request_id.is_empty());
});
