//! Signed JWTs from an IdP (logout tokens, security events, access tokens): the JWKS reader
//! and the verifier on arbitrary input. Nothing the fuzzer makes verifies under the fixed key
//! set, and the claim checks never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::idp::jwt::{payload_of, Expect, JwtKeys};
use std::sync::OnceLock;

/// A real RSA public key (the test-only IdP key's modulus shape), and an EC one.
const JWKS: &str = r#"{"keys":[
 {"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","e":"AQAB",
  "n":"u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw"},
 {"kty":"EC","kid":"e1","use":"sig","crv":"P-256",
  "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
]}"#;

fn keys() -> &'static JwtKeys {
    static KEYS: OnceLock<JwtKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        JwtKeys::from_jwks(&serde_json::from_str(JWKS).expect("the fixed JWKS is JSON"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert!(
        keys().verify(text).is_err(),
        "a fuzzed token verified: {text:?}"
    );
    if let Some(claims) = payload_of(text) {
        let _ = Expect {
            issuer: "https://idp.example",
            audiences: &["portcullis".to_string()],
            now: 1_800_000_000,
            skew: 60,
            require_exp: true,
            max_age: Some(120),
        }
        .check(&claims);
    }
    // The input as a JWKS document: odd keys are skipped, never fatal.
    if let Ok(document) = serde_json::from_str(text) {
        let fuzzed = JwtKeys::from_jwks(&document);
        let _ = fuzzed.verify("eyJhbGciOiJSUzI1NiJ9.e30.c2ln");
    }
});
