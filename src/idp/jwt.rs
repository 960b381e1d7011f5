//! Signed JWTs from an IdP other than ID tokens: logout tokens, security event tokens, access
//! tokens. One strict way to read them (jsonwebtoken): the signature by a key of the issuer's
//! JWKS, only in that key's algorithm family (never `none`, never HMAC under a public key),
//! then the claims, each by the gateway's clock.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use thiserror::Error;

/// Claims of a verified token.
pub type Claims = Map<String, Value>;

/// Why a token was refused. Never carries the token.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts with a JSON header naming a known algorithm (`alg: none` and
    /// unsigned tokens end here).
    #[error("not a signed JWT: {0}")]
    Malformed(String),
    /// No key of the issuer's JWKS has the token's key id.
    #[error("signed by a key the issuer does not publish")]
    UnknownKey,
    /// The header's algorithm is not one the key is for.
    #[error("algorithm {0} is not the signing key's")]
    Algorithm(String),
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `iss` is not the expected issuer.
    #[error("issuer is not `{0}`")]
    Issuer(String),
    /// `aud` does not name this gateway.
    #[error("audience does not include `{0}`")]
    Audience(String),
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `nbf` lies ahead.
    #[error("not valid yet")]
    NotYetValid,
    /// `iat` lies ahead.
    #[error("issued in the future")]
    IssuedInFuture,
    /// `iat` is older than this kind of token may be.
    #[error("issued too long ago")]
    TooOld,
    /// A claim this kind of token must have is missing or of the wrong type.
    #[error("missing or malformed `{0}` claim")]
    Claim(&'static str),
    /// The header's `typ` is not this kind of token's.
    #[error("token type is not `{0}`")]
    Type(&'static str),
}

/// The keys of one issuer's JWKS that can verify signatures.
#[derive(Debug, Clone, Default)]
pub struct JwtKeys {
    keys: Vec<Jwk>,
}

impl JwtKeys {
    /// The usable keys of a JWKS document (`{"keys": [...]}`); keys of kinds jsonwebtoken
    /// cannot use, or marked for encryption, are skipped.
    pub fn from_jwks(document: &Value) -> Self {
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter(|k| k.get("use").and_then(Value::as_str) != Some("enc"))
                    .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        Self { keys }
    }

    /// How many keys are usable.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No usable key?
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `raw`'s signature and returns its header's `typ` and its claims (not yet
    /// checked: see [`Expect::check`]).
    pub fn verify(&self, raw: &str) -> Result<(Option<String>, Claims), JwtError> {
        let header =
            jsonwebtoken::decode_header(raw).map_err(|e| JwtError::Malformed(e.to_string()))?;
        let jwk = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.common.key_id.as_deref() == Some(kid.as_str())),
            // No key id: only unambiguous with a single key.
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or(JwtError::UnknownKey)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| JwtError::UnknownKey)?;
        let mut validation = Validation::new_for_family(key.family());
        if let Some(declared) = jwk.common.key_algorithm {
            validation
                .algorithms
                .retain(|a| format!("{a:?}") == format!("{declared:?}"));
        }
        if !validation.algorithms.contains(&header.alg) {
            return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
        }
        // Claims are checked below by the gateway's clock, with this kind of token's rules.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data =
            jsonwebtoken::decode::<Claims>(raw, &key, &validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtError::Signature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    JwtError::Algorithm(format!("{:?}", header.alg))
                }
                _ => JwtError::Malformed(e.to_string()),
            })?;
        Ok((header.typ, data.claims))
    }
}

/// What a kind of token must say about itself.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// The issuer, exactly.
    pub issuer: &'a str,
    /// Audiences any one of which the token's `aud` must name (empty: `aud` not checked).
    pub audiences: &'a [String],
    /// Now, in Unix seconds of the gateway clock.
    pub now: u64,
    /// Tolerated clock difference, seconds.
    pub skew: u64,
    /// `exp` must be present.
    pub require_exp: bool,
    /// `iat` must be present and no older than this (seconds).
    pub max_age: Option<u64>,
}

impl Expect<'_> {
    /// Checks `iss`, `aud`, `exp`, `nbf` and `iat`.
    pub fn check(&self, claims: &Claims) -> Result<(), JwtError> {
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer) {
            return Err(JwtError::Issuer(self.issuer.to_string()));
        }
        if !self.audiences.is_empty() {
            let named = |aud: &str| self.audiences.iter().any(|a| a == aud);
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => named(aud),
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(named),
                _ => false,
            };
            if !ok {
                return Err(JwtError::Audience(
                    self.audiences.first().cloned().unwrap_or_default(),
                ));
            }
        }
        let number = |name: &'static str| -> Result<Option<u64>, JwtError> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    .map(Some)
                    .ok_or(JwtError::Claim(name)),
            }
        };
        match number("exp")? {
            Some(exp) if self.now >= exp.saturating_add(self.skew) => {
                return Err(JwtError::Expired)
            }
            None if self.require_exp => return Err(JwtError::Claim("exp")),
            _ => {}
        }
        if number("nbf")?.is_some_and(|nbf| nbf > self.now.saturating_add(self.skew)) {
            return Err(JwtError::NotYetValid);
        }
        match (number("iat")?, self.max_age) {
            (Some(iat), _) if iat > self.now.saturating_add(self.skew) => {
                Err(JwtError::IssuedInFuture)
            }
            (Some(iat), Some(age))
                if iat.saturating_add(age).saturating_add(self.skew) < self.now =>
            {
                Err(JwtError::TooOld)
            }
            (None, Some(_)) => Err(JwtError::Claim("iat")),
            _ => Ok(()),
        }
    }
}

/// A JWT's payload, read without checking anything: for a token whose signature the caller
/// has verified, or to pick whose keys will verify it.
pub fn payload_of(raw: &str) -> Option<Claims> {
    use base64::Engine;
    let payload = raw.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A claim as text, if it is a non-empty string of sane length.
pub fn text_claim<'c>(claims: &'c Claims, name: &str) -> Option<&'c str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const KID: &str = "test-key";

    fn rsa() -> (EncodingKey, Value, Vec<u8>) {
        let key = openssl::rsa::Rsa::generate(2048).unwrap();
        let private = key.private_key_to_pem().unwrap();
        let public = key.public_key_to_pem().unwrap();
        let b64 = |b: Vec<u8>| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
        };
        let jwk = json!({"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
            "n": b64(key.n().to_vec()), "e": b64(key.e().to_vec())});
        (
            EncodingKey::from_rsa_pem(&private).unwrap(),
            json!({ "keys": [jwk] }),
            public,
        )
    }

    fn sign(key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(KID.into());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn part(v: &Value) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn a_token_signed_by_a_published_key_verifies_and_its_claims_are_checked() {
        let (key, jwks, _) = rsa();
        let keys = JwtKeys::from_jwks(&jwks);
        let raw = sign(
            &key,
            &json!({"iss": "https://idp", "aud": ["gw", "x"], "iat": 1000, "exp": 1100}),
        );
        let (_, claims) = keys.verify(&raw).unwrap();
        let audiences = ["gw".to_string()];
        let expect = Expect {
            issuer: "https://idp",
            audiences: &audiences,
            now: 1050,
            skew: 0,
            require_exp: true,
            max_age: Some(300),
        };
        assert_eq!(expect.check(&claims), Ok(()));
        assert_eq!(
            Expect {
                now: 1100,
                ..expect.clone()
            }
            .check(&claims),
            Err(JwtError::Expired)
        );
        assert_eq!(
            Expect {
                now: 999,
                ..expect.clone()
            }
            .check(&claims),
            Err(JwtError::IssuedInFuture)
        );
        assert_eq!(
            Expect {
                issuer: "https://other",
                ..expect.clone()
            }
            .check(&claims),
            Err(JwtError::Issuer("https://other".into()))
        );
        let other = ["someone-else".to_string()];
        assert!(matches!(
            Expect {
                audiences: &other,
                ..expect.clone()
            }
            .check(&claims),
            Err(JwtError::Audience(_))
        ));
        let old = sign(
            &key,
            &json!({"iss": "https://idp", "aud": "gw", "iat": 100, "exp": 2000}),
        );
        let (_, claims) = keys.verify(&old).unwrap();
        assert_eq!(expect.check(&claims), Err(JwtError::TooOld));
    }

    #[test]
    fn unsigned_hmac_under_the_public_key_unknown_keys_and_tampering_are_refused() {
        let (key, jwks, public_pem) = rsa();
        let keys = JwtKeys::from_jwks(&jwks);
        let claims = json!({"iss": "https://idp", "sub": "alice"});
        // alg: none
        let none = format!(
            "{}.{}.",
            part(&json!({"alg": "none", "kid": KID})),
            part(&claims)
        );
        assert!(matches!(keys.verify(&none), Err(JwtError::Malformed(_))));
        // HS256 with the RSA public key as the secret (the classic confusion attack).
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(KID.into());
        let confused =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&public_pem)).unwrap();
        assert!(matches!(
            keys.verify(&confused),
            Err(JwtError::Algorithm(_))
        ));
        // A key the issuer does not publish.
        let (stranger, _, _) = rsa();
        let forged = sign(&stranger, &claims);
        assert_eq!(keys.verify(&forged).unwrap_err(), JwtError::Signature);
        let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("nobody".into());
        let unknown = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_eq!(keys.verify(&unknown).unwrap_err(), JwtError::UnknownKey);
        // A payload swapped under a good signature.
        let good = sign(&key, &claims);
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = part(&json!({"iss": "https://idp", "sub": "admin"}));
        parts[1] = &evil;
        assert_eq!(
            keys.verify(&parts.join(".")).unwrap_err(),
            JwtError::Signature
        );
        assert!(matches!(
            keys.verify("not-a-jwt"),
            Err(JwtError::Malformed(_))
        ));
    }
}
