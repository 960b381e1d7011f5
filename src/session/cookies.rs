//! The gateway's own cookies: the session cookie and one short-lived cookie per login in
//! progress, all encrypted and authenticated (the `cookie` crate's private jar, AES-256-GCM,
//! with the cookie name bound in) so a client can neither read nor forge them.
//!
//! Also owns keeping these cookies away from backends: a backend never sees the gateway's
//! session cookie, so a backend log or XSS there cannot steal a gateway session.

use crate::secret::SecretBytes;
use cookie::{Cookie, CookieJar, Key};
use std::time::Duration;

/// Every gateway cookie name starts with this (after any `__Host-` prefix).
pub const COOKIE_PREFIX: &str = "portcullis_";
const SESSION_COOKIE: &str = "portcullis_session";
const LOGIN_COOKIE: &str = "portcullis_login_";
const ID_TOKEN_COOKIE: &str = "portcullis_idt";
/// Where the ID-token cookie is sent: the gateway's own endpoints (logout among them), never
/// the app's pages, so ordinary requests do not carry it.
pub const ID_TOKEN_COOKIE_PATH: &str = "/.portcullis/";
/// Largest sealed ID-token cookie value set; browsers keep at most 4096 bytes per cookie with
/// its name and attributes. A larger token stays in the session instead.
const MAX_ID_TOKEN_COOKIE: usize = 3800;
/// Characters of the state used to name its login cookie.
const LOGIN_TAG_LEN: usize = 16;

/// Seals and opens gateway cookies with one key.
pub struct CookieCodec {
    key: Key,
}

impl CookieCodec {
    /// Uses the configured key (at least 32 bytes; HKDF-stretched when shorter than 64), or a
    /// fresh random key when none is configured.
    pub fn new(key: Option<&SecretBytes>) -> Self {
        let key = match key.map(SecretBytes::expose) {
            Some(bytes) if bytes.len() >= 64 => {
                Key::try_from(bytes.get(..64).unwrap_or(bytes)).unwrap_or_else(|_| Key::generate())
            }
            Some(bytes) if bytes.len() >= 32 => Key::derive_from(bytes),
            _ => Key::generate(),
        };
        Self { key }
    }

    /// Encrypts `value` for a cookie called `name`.
    pub fn seal(&self, name: &str, value: &str) -> Option<String> {
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key)
            .add(Cookie::new(name.to_string(), value.to_string()));
        jar.get(name).map(|c| c.value().to_string())
    }

    /// An HMAC-SHA256 under this key's signing half of the `parts` (each length-prefixed, so
    /// no two lists give the same input), URL-safe base64: a value only this gateway can make.
    pub fn keyed_token(&self, parts: &[&[u8]]) -> Option<String> {
        use base64::Engine;
        let key = openssl::pkey::PKey::hmac(self.key.signing()).ok()?;
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).ok()?;
        for part in parts {
            let len = u32::try_from(part.len()).ok()?.to_be_bytes();
            signer.update(&len).ok()?;
            signer.update(part).ok()?;
        }
        let mac = signer.sign_to_vec().ok()?;
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac))
    }

    /// A 32-byte key for `purpose`, derived from this key's signing half (the session store's
    /// sealing and key-hashing keys): one configured secret, independent keys per use.
    pub fn derived_key(&self, purpose: &str) -> Option<[u8; 32]> {
        let key = openssl::pkey::PKey::hmac(self.key.signing()).ok()?;
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).ok()?;
        signer.update(b"portcullis derived key\0").ok()?;
        signer.update(purpose.as_bytes()).ok()?;
        signer.sign_to_vec().ok()?.try_into().ok()
    }

    /// Decrypts a cookie value; `None` when tampered, forged or sealed under another name.
    pub fn open(&self, name: &str, sealed: &str) -> Option<String> {
        let jar = CookieJar::new();
        jar.private(&self.key)
            .decrypt(Cookie::new(name.to_string(), sealed.to_string()))
            .map(|c| c.value().to_string())
    }
}

/// The session cookie's name: `__Host-` prefixed on HTTPS (host-only, path `/`, Secure —
/// a sibling subdomain cannot plant it).
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-portcullis_session"
    } else {
        SESSION_COOKIE
    }
}

/// The login cookie's name for a given `state` (one per login, so many tabs can log in at
/// once without overwriting each other's binding).
pub fn login_cookie_name(state: &str, secure: bool) -> String {
    let tag: String = state
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(LOGIN_TAG_LEN)
        .collect();
    prefixed(&format!("{LOGIN_COOKIE}{tag}"), secure)
}

/// The ID-token cookie's name: `__Secure-` prefixed on HTTPS (`__Host-` needs `Path=/`).
pub fn id_token_cookie_name(secure: bool) -> String {
    if secure {
        format!("__Secure-{ID_TOKEN_COOKIE}")
    } else {
        ID_TOKEN_COOKIE.to_string()
    }
}

/// Would an ID token of `token_len` bytes fit in the ID-token cookie? It holds the session id
/// (43 characters), a dot and the token, sealed: AES-GCM adds a 12-byte nonce and a 16-byte
/// tag, and the cookie carries it all base64-encoded.
pub fn id_token_cookie_fits(token_len: usize) -> bool {
    let plaintext = 43 + 1 + token_len;
    (plaintext + 28).div_ceil(3) * 4 <= MAX_ID_TOKEN_COOKIE
}

/// A `Set-Cookie` value for the ID-token cookie (path-scoped, HttpOnly, `SameSite=Lax`).
pub fn set_id_token_cookie(value: &str, secure: bool) -> String {
    let name = id_token_cookie_name(secure);
    let mut text = format!("{name}={value}; Path={ID_TOKEN_COOKIE_PATH}; HttpOnly; SameSite=Lax");
    if secure {
        text.push_str("; Secure");
    }
    text
}

/// A `Set-Cookie` value that deletes the ID-token cookie (the path must match to delete it).
pub fn clear_id_token_cookie(secure: bool) -> String {
    let name = id_token_cookie_name(secure);
    let mut text =
        format!("{name}=; Path={ID_TOKEN_COOKIE_PATH}; HttpOnly; SameSite=Lax; Max-Age=0");
    if secure {
        text.push_str("; Secure");
    }
    text
}

fn prefixed(name: &str, secure: bool) -> String {
    if secure {
        format!("__Host-{name}")
    } else {
        name.to_string()
    }
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (sent on the IdP's top-level redirect back),
/// Path=/, Secure on HTTPS; `max_age` None = until the browser closes.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<Duration>) -> String {
    let mut text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure {
        text.push_str("; Secure");
    }
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    text
}

/// A login-binding cookie that must come back on the IdP's cross-site POST (SAML ACS):
/// `SameSite=None; Secure` on HTTPS. On plain HTTP browsers refuse `SameSite=None`, so the
/// attribute is left out (Chrome then still sends it on a top-level POST within two minutes).
pub fn set_cross_site_cookie(name: &str, value: &str, secure: bool, max_age: Duration) -> String {
    let mut text = format!("{name}={value}; Path=/; HttpOnly");
    if secure {
        text.push_str("; SameSite=None; Secure");
    }
    text.push_str(&format!("; Max-Age={}", max_age.as_secs()));
    text
}

/// A `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(name: &str, secure: bool) -> String {
    let mut text = format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    if secure {
        text.push_str("; Secure");
    }
    text
}

/// A `Set-Cookie` value that deletes the session cookie of this listener kind.
pub fn clear_session_cookie(secure: bool) -> String {
    clear_cookie(session_cookie_name(secure), secure)
}

/// Cookies sent by the client, in order, from every `Cookie` header.
pub fn request_cookies<'a>(
    headers: impl Iterator<Item = &'a http::HeaderValue>,
) -> Vec<(String, String)> {
    headers
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

/// Is this one of the gateway's cookies (any prefix variant, any case of the prefix)?
pub fn is_gateway_cookie(name: &str) -> bool {
    // Runs for every cookie of every request: compares in place, no lower-cased copy.
    let starts = |text: &str, prefix: &str| {
        text.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    let bare = ["__host-", "__secure-"]
        .iter()
        .find(|p| starts(name, p))
        .map_or(name, |p| name.get(p.len()..).unwrap_or_default());
    starts(bare, COOKIE_PREFIX)
}

/// The value of the first cookie called exactly `name` in the `Cookie` headers, borrowed.
pub fn find_cookie<'a>(
    headers: impl Iterator<Item = &'a http::HeaderValue>,
    name: &str,
) -> Option<&'a str> {
    headers
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, value) = pair.trim().split_once('=')?;
            (n.trim() == name).then(|| value.trim())
        })
}

/// Might this `Cookie` header value hold a gateway cookie? (Cheap pre-check, any letter case.)
pub fn mentions_gateway_cookie(value: &[u8]) -> bool {
    value
        .windows(COOKIE_PREFIX.len())
        .any(|w| w.eq_ignore_ascii_case(COOKIE_PREFIX.as_bytes()))
}

/// The `Cookie` header to send upstream: the client's cookies minus the gateway's own, or
/// `None` when nothing is left.
pub fn without_gateway_cookies<'a>(
    headers: impl Iterator<Item = &'a http::HeaderValue>,
) -> Option<String> {
    upstream_cookies(headers, &[], &[])
}

/// A cookie name as lenient backends read it: letter case ignored, and `-`, `.` and space
/// the same as `_` (PHP rewrites `.` and space to `_`). Identity cookies are stripped by it.
pub fn cookie_name_key(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            '-' | '.' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The `Cookie` header to send upstream: the client's cookies minus the gateway's own and
/// minus every spelling of the identity cookies in `identity` (keys from
/// [`cookie_name_key`]), then the gateway's identity cookies `add`; `None` when empty.
pub fn upstream_cookies<'a>(
    headers: impl Iterator<Item = &'a http::HeaderValue>,
    identity: &[String],
    add: &[(String, String)],
) -> Option<String> {
    let mut kept: Vec<String> = headers
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n).trim();
            !is_gateway_cookie(name)
                && (identity.is_empty() || !identity.contains(&cookie_name_key(name)))
        })
        .map(str::to_string)
        .collect();
    kept.extend(add.iter().map(|(n, v)| format!("{n}={v}")));
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_token_cookie_size_is_predicted_exactly() {
        let codec = CookieCodec::new(None);
        for token_len in [0, 1, 2, 3, 1000, 2770, 2780, 2790, 4000] {
            let plaintext = format!("{}.{}", "s".repeat(43), "t".repeat(token_len));
            let sealed = codec.seal(ID_TOKEN_COOKIE, &plaintext).unwrap();
            assert_eq!(
                id_token_cookie_fits(token_len),
                sealed.len() <= MAX_ID_TOKEN_COOKIE,
                "token of {token_len} bytes sealed to {}",
                sealed.len()
            );
        }
        assert!(id_token_cookie_fits(1000));
        assert!(!id_token_cookie_fits(4000));
    }

    #[test]
    fn sealed_values_open_only_unchanged_and_under_their_own_name() {
        let codec = CookieCodec::new(Some(&SecretBytes::new(vec![7u8; 32])));
        let sealed = codec.seal("portcullis_session", "id-123").unwrap();
        assert!(!sealed.contains("id-123"));
        assert_eq!(
            codec.open("portcullis_session", &sealed).as_deref(),
            Some("id-123")
        );
        assert_eq!(
            codec.open("portcullis_other", &sealed),
            None,
            "name is bound in"
        );
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            codec.open("portcullis_session", &String::from_utf8(flipped).unwrap()),
            None
        );
        let other = CookieCodec::new(Some(&SecretBytes::new(vec![8u8; 32])));
        assert_eq!(other.open("portcullis_session", &sealed), None, "other key");
    }

    #[test]
    fn gateway_cookies_never_reach_the_backend() {
        let headers = [
            http::HeaderValue::from_static(
                "a=1; portcullis_session=x; __Host-portcullis_login_ab=y",
            ),
            http::HeaderValue::from_static(
                "__HOST-PORTCULLIS_session=z; b=2; __secure-portcullis_idt=w; portc=3; __Host-=4",
            ),
        ];
        assert_eq!(
            without_gateway_cookies(headers.iter()).as_deref(),
            Some("a=1; b=2; portc=3; __Host-=4")
        );
        assert_eq!(find_cookie(headers.iter(), "portcullis_session"), Some("x"));
        assert_eq!(find_cookie(headers.iter(), "b"), Some("2"));
        assert_eq!(find_cookie(headers.iter(), "portcullis"), None);
        let only_ours = [http::HeaderValue::from_static("portcullis_session=x")];
        assert_eq!(without_gateway_cookies(only_ours.iter()), None);
    }

    #[test]
    fn names_follow_the_listener() {
        assert_eq!(session_cookie_name(true), "__Host-portcullis_session");
        assert_eq!(session_cookie_name(false), "portcullis_session");
        assert_eq!(
            login_cookie_name("abc;=def", false),
            "portcullis_login_abcdef"
        );
        let c = set_cookie("n", "v", true, Some(Duration::from_secs(600)));
        assert_eq!(
            c,
            "n=v; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=600"
        );
    }
}
