//! The signed identity assertion: a short-lived ES256 JWT saying who the user is, for backends
//! that can verify a signature rather than trust the network (`[identity] jwt_header`).
//!
//! Keys come from PEM files (`[jwt] key_files`): the first signs, every one is published at
//! `/.portcullis/jwks.json`, so a new key can be added first and an old one kept for overlap.
//! Tokens are made by `jsonwebtoken`; openssl reads the key files and the public coordinates.

use crate::idp::Identity;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::EcKey;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use serde::Serialize;
use serde_json::json;
use std::time::Duration;
use thiserror::Error;

/// Where the public keys are published, on every host.
pub const JWKS_PATH: &str = "/.portcullis/jwks.json";

/// Why a signing key cannot be used or a token made.
#[derive(Debug, Error)]
pub enum AssertionError {
    /// Not a PEM private key.
    #[error("not a PEM private key")]
    NotAKey,
    /// Not an EC P-256 key (ES256 needs one).
    #[error("not an EC P-256 key (ES256 needs one; make one with `openssl ecparam -name prime256v1 -genkey -noout`)")]
    NotP256,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// One key: its id, the key (for its public half) and the same key for `jsonwebtoken`.
struct SigningKey {
    kid: String,
    key: EcKey<Private>,
    encoding: EncodingKey,
}

/// The claims of an identity assertion.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    email: Option<&'a str>,
    name: Option<&'a str>,
    groups: &'a [std::sync::Arc<str>],
    idp: &'a str,
    acr: Option<&'a str>,
    amr: &'a [std::sync::Arc<str>],
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
}

/// Signs assertions and publishes the public keys.
pub struct AssertionSigner {
    keys: Vec<SigningKey>,
    issuer: String,
    ttl: Duration,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("AssertionSigner")
            .field("kids", &kids)
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// Checks one PEM key and returns its key id (from the public key's SHA-256).
pub fn key_id(pem: &[u8]) -> Result<String, AssertionError> {
    let key = p256(pem)?;
    kid_of(&key)
}

fn p256(pem: &[u8]) -> Result<EcKey<Private>, AssertionError> {
    let pkey = PKey::private_key_from_pem(pem).map_err(|_| AssertionError::NotAKey)?;
    let ec = pkey.ec_key().map_err(|_| AssertionError::NotP256)?;
    if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
        return Err(AssertionError::NotP256);
    }
    Ok(ec)
}

fn kid_of(key: &EcKey<Private>) -> Result<String, AssertionError> {
    let der = key
        .public_key_to_der()
        .map_err(|e| AssertionError::Sign(e.to_string()))?;
    let digest = openssl::sha::sha256(&der);
    Ok(URL_SAFE_NO_PAD.encode(digest.get(..12).unwrap_or(&digest)))
}

impl AssertionSigner {
    /// A signer from PEM keys (the first signs), issuer name and token lifetime.
    pub fn new(pems: &[Vec<u8>], issuer: &str, ttl: Duration) -> Result<Self, AssertionError> {
        let mut keys = Vec::new();
        for pem in pems {
            let key = p256(pem)?;
            let pkcs8 = PKey::from_ec_key(key.clone())
                .and_then(|k| k.private_key_to_pkcs8())
                .map_err(|e| AssertionError::Sign(e.to_string()))?;
            keys.push(SigningKey {
                kid: kid_of(&key)?,
                key,
                encoding: EncodingKey::from_ec_der(&pkcs8),
            });
        }
        if keys.is_empty() {
            return Err(AssertionError::NotAKey);
        }
        Ok(Self {
            keys,
            issuer: issuer.to_string(),
            ttl,
        })
    }

    /// A token for `user` addressed to `audience` (the app id), valid from `now` for the TTL.
    pub fn sign(
        &self,
        user: &Identity,
        audience: &str,
        now: u64,
    ) -> Result<String, AssertionError> {
        let signing = self.keys.first().ok_or(AssertionError::NotAKey)?;
        let mut jti = [0u8; 16];
        openssl::rand::rand_bytes(&mut jti).map_err(|e| AssertionError::Sign(e.to_string()))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(signing.kid.clone());
        let claims = Claims {
            iss: &self.issuer,
            aud: audience,
            sub: &user.subject,
            email: user.email.as_deref(),
            name: user.name.as_deref(),
            groups: &user.groups,
            idp: &user.idp,
            acr: user.acr.as_deref(),
            amr: &user.amr,
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
            jti: URL_SAFE_NO_PAD.encode(jti),
        };
        jsonwebtoken::encode(&header, &claims, &signing.encoding)
            .map_err(|e| AssertionError::Sign(e.to_string()))
    }

    /// The public keys as a JWK set.
    pub fn jwks(&self) -> String {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .filter_map(|k| {
                let mut ctx = BigNumContext::new().ok()?;
                let (mut x, mut y) = (BigNum::new().ok()?, BigNum::new().ok()?);
                k.key
                    .public_key()
                    .affine_coordinates(k.key.group(), &mut x, &mut y, &mut ctx)
                    .ok()?;
                Some(json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "use": "sig",
                    "alg": "ES256",
                    "kid": k.kid,
                    "x": URL_SAFE_NO_PAD.encode(x.to_vec_padded(32).ok()?),
                    "y": URL_SAFE_NO_PAD.encode(y.to_vec_padded(32).ok()?),
                }))
            })
            .collect();
        json!({ "keys": keys }).to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
    use openssl::ec::EcGroup;

    fn pem() -> Vec<u8> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        EcKey::generate(&group)
            .unwrap()
            .private_key_to_pem()
            .unwrap()
    }

    fn validation(audience: &str) -> Validation {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[audience]);
        v.set_issuer(&["portcullis"]);
        v
    }

    #[test]
    fn tokens_verify_with_the_published_key_and_say_who() {
        let (new, old) = (pem(), pem());
        let signer =
            AssertionSigner::new(&[new, old], "portcullis", Duration::from_secs(60)).unwrap();
        let user = Identity {
            subject: "00u1".into(),
            email: Some("ana@corp.example".into()),
            groups: vec!["staff".into()],
            idp: "okta".into(),
            ..Identity::default()
        };
        let now = crate::clock::unix_now();
        let token = signer.sign(&user, "wiki", now).unwrap();
        let jwks: JwkSet = serde_json::from_str(&signer.jwks()).unwrap();
        assert_eq!(jwks.keys.len(), 2, "both keys published");
        let kid = decode_header(&token).unwrap().kid.unwrap();
        let jwk = jwks.find(&kid).unwrap();
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let claims = decode::<serde_json::Value>(&token, &key, &validation("wiki"))
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], "00u1");
        assert_eq!(claims["email"], "ana@corp.example");
        assert_eq!(claims["groups"], json!(["staff"]));
        assert_eq!(claims["exp"], now + 60);
        // Addressed to one app only.
        assert!(decode::<serde_json::Value>(&token, &key, &validation("hr")).is_err());
        // The other published key did not sign it.
        let other = jwks
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() != Some(&kid));
        let other = DecodingKey::from_jwk(other.unwrap()).unwrap();
        assert!(decode::<serde_json::Value>(&token, &other, &validation("wiki")).is_err());
        // Another user's claims under the same signature do not verify.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD
                .encode(r#"{"sub":"admin","aud":"wiki","iss":"portcullis","exp":9999999999}"#),
            parts[2]
        );
        assert!(decode::<serde_json::Value>(&forged, &key, &validation("wiki")).is_err());
    }

    #[test]
    fn only_p256_keys_sign() {
        let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        assert!(matches!(
            AssertionSigner::new(
                &[rsa.private_key_to_pem_pkcs8().unwrap()],
                "p",
                Duration::from_secs(60)
            ),
            Err(AssertionError::NotP256)
        ));
    }
}
