//! The path normaliser: never panics, and what it returns is already normal (absolute, no
//! `.`/`..` segments, no empty segments, unchanged by a second pass) — so the rules and the
//! backend see one path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::policy::path::{normalise, normalise_keeping_encoded_slash};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for normaliser in [normalise, normalise_keeping_encoded_slash] {
        if let Ok(path) = normaliser(raw) {
            assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
            assert!(!path.contains("//"), "{raw:?} -> {path:?}");
            assert!(
                !path.split('/').any(|s| s == "." || s == ".."),
                "{raw:?} -> {path:?}"
            );
            assert_eq!(normaliser(&path).as_deref(), Ok(path.as_str()), "{raw:?}");
        }
    }
});
