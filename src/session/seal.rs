//! Sealing what the session store holds outside this process (Redis values, the snapshot file):
//! AES-256-GCM under a key derived from the cookie key, and keys that are a keyed hash of what
//! they name, so a Redis dump, `MONITOR` or a copied snapshot shows no identity, token or
//! password, and nobody who can read the store can turn a key back into a working cookie.

use crate::session::cookies::CookieCodec;
use hmac::{Hmac, Mac};
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use sha2::Sha256;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// First byte of every sealed value: the format, so a later one can be told apart.
const VERSION: u8 = 1;

/// Bytes of a store key's keyed hash: 128 bits cannot be guessed or forged, and keep the
/// keys short (a million sessions name a few million of them).
pub const INDEX_LEN: usize = 16;

/// The two keys of the store, both derived from the cookie key.
pub struct StoreKeys {
    seal: [u8; 32],
    /// HMAC-SHA256 keyed with the index key, ready to be cloned for each key it makes.
    index: Hmac<Sha256>,
}

impl std::fmt::Debug for StoreKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKeys([redacted])")
    }
}

impl StoreKeys {
    /// The store's keys under this cookie key (`None` only when OpenSSL fails).
    pub fn from_codec(codec: &CookieCodec) -> Option<Self> {
        let index = Hmac::<Sha256>::new_from_slice(&codec.derived_key("store index v1")?).ok()?;
        Some(Self {
            seal: codec.derived_key("store seal v1")?,
            index,
        })
    }

    /// Encrypts `plain`, bound to `context` (the record's key), so a value copied under another
    /// key does not open there.
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        openssl::rand::rand_bytes(&mut nonce).ok()?;
        let mut tag = [0u8; TAG_LEN];
        let body = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.seal,
            Some(&nonce),
            context,
            plain,
            &mut tag,
        )
        .ok()?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        Some(out)
    }

    /// Decrypts what [`StoreKeys::seal`] made under the same `context`; `None` when it was
    /// sealed under another key or context, tampered with or cut short.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (&version, rest) = sealed.split_first()?;
        if version != VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.seal,
            Some(nonce),
            context,
            body,
            tag,
        )
        .ok()
    }

    /// The store key for `what` of kind `kind`: its keyed hash, URL-safe base64 (22
    /// characters).
    pub fn index(&self, kind: &str, what: &[u8]) -> String {
        use base64::Engine;
        let digest = self.index_bytes(kind, what);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    }

    /// The raw keyed hash behind [`StoreKeys::index`]: HMAC-SHA256 under the index key,
    /// truncated to [`INDEX_LEN`] bytes. Runs on every request with the shared store, so the
    /// keyed state is made once and cloned.
    pub fn index_bytes(&self, kind: &str, what: &[u8]) -> [u8; INDEX_LEN] {
        let mut mac = self.index.clone();
        mac.update(kind.as_bytes());
        mac.update(b"\0");
        mac.update(what);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; INDEX_LEN];
        out.copy_from_slice(full.get(..INDEX_LEN).unwrap_or(&[0; INDEX_LEN]));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;

    fn keys(byte: u8) -> StoreKeys {
        let codec = CookieCodec::new(Some(&SecretBytes::new(vec![byte; 64])));
        StoreKeys::from_codec(&codec).unwrap()
    }

    #[test]
    fn sealed_values_open_only_under_their_key_and_context() {
        let k = keys(7);
        let sealed = k.seal(b"key-1", b"alice@corp.example").unwrap();
        assert!(
            !sealed.windows(5).any(|w| w == b"alice"),
            "plaintext must not show"
        );
        assert_eq!(k.open(b"key-1", &sealed).unwrap(), b"alice@corp.example");
        assert!(k.open(b"key-2", &sealed).is_none(), "moved to another key");
        assert!(
            keys(8).open(b"key-1", &sealed).is_none(),
            "another cookie key"
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(k.open(b"key-1", &tampered).is_none(), "tampered");
        assert!(
            k.open(b"key-1", &sealed[..sealed.len() - 1]).is_none(),
            "cut short"
        );
        assert!(k.open(b"key-1", &[]).is_none());
    }

    #[test]
    fn index_keys_are_keyed_and_separated_by_kind() {
        let (a, b) = (keys(1), keys(2));
        assert_eq!(a.index("s", b"id"), a.index("s", b"id"));
        assert_ne!(a.index("s", b"id"), b.index("s", b"id"));
        assert_ne!(a.index("s", b"id"), a.index("p", b"id"));
        assert_eq!(a.index("s", b"id").len(), 22);
    }
}
