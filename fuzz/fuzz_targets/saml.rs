//! What an IdP (or anyone) posts to the ACS and the logout endpoints: the redirect binding's
//! inflater, base64, and the strict SAML guard that runs before any signature check. Never a
//! panic; bounded output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::idp::saml::guard::{check_message, check_message_allowing_sha1, Root};
use portcullis::idp::saml::redirect::{decode_base64, inflate};

fuzz_target!(|data: &[u8]| {
    // Raw DEFLATE as the redirect binding carries it (after base64).
    if let Ok(xml) = inflate(data) {
        let _ = check_message(&xml, Root::LogoutRequest);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = decode_base64(text);
    for root in [Root::Response, Root::LogoutRequest, Root::LogoutResponse] {
        let strict = check_message(text, root);
        let sha1 = check_message_allowing_sha1(text, root);
        // Allowing SHA-1 only ever admits more.
        if strict.is_ok() {
            assert!(
                sha1.is_ok(),
                "SHA-1 opt-in refused what the strict guard passed"
            );
        }
    }
});
