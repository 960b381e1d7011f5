//! Cookie headers and sealed cookie values from the client: parsing never panics, nothing the
//! fuzzer makes opens under the gateway's key, and whatever the gateway seals opens again
//! unchanged, under its own name only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::secret::SecretBytes;
use portcullis::session::cookies::{
    find_cookie, is_gateway_cookie, request_cookies, without_gateway_cookies, CookieCodec,
};
use portcullis::session::SessionId;
use std::sync::OnceLock;

fn codec() -> &'static CookieCodec {
    static CODEC: OnceLock<CookieCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let key = SecretBytes::new(
            b"fuzz-only cookie key, not a secret, 64 bytes long.............".to_vec(),
        );
        CookieCodec::new(Some(&key))
    })
}

fuzz_target!(|data: &[u8]| {
    let codec = codec();
    if let Ok(header) = http::HeaderValue::from_bytes(data) {
        let headers = [header];
        let cookies = request_cookies(headers.iter());
        for (name, value) in &cookies {
            let _ = is_gateway_cookie(name);
            // Forged: the fuzzer does not hold the key.
            assert!(codec.open(name, value).is_none(), "{name}={value}");
        }
        let _ = find_cookie(headers.iter(), "portcullis_session");
        let _ = without_gateway_cookies(headers.iter());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SessionId::decode(text);
        assert!(codec.open("portcullis_session", text).is_none());
        let sealed = codec
            .seal("portcullis_session", text)
            .expect("sealing works");
        assert_eq!(
            codec.open("portcullis_session", &sealed).as_deref(),
            Some(text)
        );
        assert!(codec.open("portcullis_login", &sealed).is_none());
    }
});
