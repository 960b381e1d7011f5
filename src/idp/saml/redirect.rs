//! The HTTP-Redirect binding: messages deflated, base64'd and carried in a query string,
//! signed over the exact query octets (SAML bindings §3.4.4.1).
//!
//! Verification is written here over the raw query rather than with samael's `UrlVerifier`,
//! which panics when `SigAlg` or `Signature` is missing or `SigAlg` is rsa-sha1, and
//! re-encodes the values before checking (the spec signs the octets as sent).

use crate::config::idp::SignatureHash;
use base64::Engine;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::sign::{Signer, Verifier};
use openssl::x509::X509;
use samael::crypto::CertificateDer;
use std::io::{Read, Write};
use thiserror::Error;

/// Largest inflated message accepted (a compression bomb stops here).
const MAX_INFLATED: u64 = 256 * 1024;
/// Largest query accepted.
const MAX_QUERY: usize = 64 * 1024;

/// The key and hash this SP signs a message with.
#[derive(Clone, Copy)]
pub struct MessageSigner<'k> {
    /// The SP's private key (RSA or EC).
    pub key: &'k PKey<Private>,
    /// The configured hash (`signature_hash`).
    pub hash: SignatureHash,
}

impl MessageSigner<'_> {
    /// The XML-DSig URI of the signature algorithm (also the redirect binding's `SigAlg`).
    pub fn algorithm_uri(&self) -> &'static str {
        let ec = self.key.id() == Id::EC;
        match (ec, self.hash) {
            (false, SignatureHash::Sha256) => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            (false, SignatureHash::Sha384) => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
            (false, SignatureHash::Sha512) => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
            (true, SignatureHash::Sha256) => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
            (true, SignatureHash::Sha384) => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
            (true, SignatureHash::Sha512) => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
        }
    }

    /// The XML-DSig URI of the reference digest in an XML signature.
    pub fn digest_uri(&self) -> &'static str {
        match self.hash {
            SignatureHash::Sha256 => "http://www.w3.org/2001/04/xmlenc#sha256",
            SignatureHash::Sha384 => "http://www.w3.org/2001/04/xmldsig-more#sha384",
            SignatureHash::Sha512 => "http://www.w3.org/2001/04/xmlenc#sha512",
        }
    }

    fn digest(&self) -> MessageDigest {
        match self.hash {
            SignatureHash::Sha256 => MessageDigest::sha256(),
            SignatureHash::Sha384 => MessageDigest::sha384(),
            SignatureHash::Sha512 => MessageDigest::sha512(),
        }
    }
}

/// Why a redirect-binding message was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RedirectError {
    /// The query is too long.
    #[error("query too long")]
    TooLong,
    /// A parameter is missing.
    #[error("`{0}` is missing")]
    Missing(&'static str),
    /// A parameter appears twice.
    #[error("`{0}` appears more than once")]
    Duplicate(String),
    /// `SigAlg` is not an allowed algorithm.
    #[error("SigAlg `{0}` is not allowed (SHA-256 or stronger required)")]
    SigAlg(String),
    /// The signature is not valid base64.
    #[error("Signature is not base64")]
    SignatureEncoding,
    /// No IdP signing key verifies the signature.
    #[error("signature does not verify with the IdP's signing keys")]
    BadSignature,
    /// The message is not deflated base64 XML.
    #[error("message is not valid deflated base64: {0}")]
    Encoding(&'static str),
    /// Signing failed (our key).
    #[error("cannot sign the request: {0}")]
    Sign(String),
}

/// `base_url` with a deflated, base64'd `param=xml` (and `RelayState`), signed with `key`
/// when given.
pub fn encode(
    base_url: &str,
    param: &str,
    xml: &str,
    relay_state: Option<&str>,
    signer: Option<MessageSigner<'_>>,
) -> Result<String, RedirectError> {
    let mut deflater = DeflateEncoder::new(Vec::new(), Compression::default());
    deflater
        .write_all(xml.as_bytes())
        .map_err(|e| RedirectError::Sign(e.to_string()))?;
    let deflated = deflater
        .finish()
        .map_err(|e| RedirectError::Sign(e.to_string()))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(deflated);
    let mut query = format!("{param}={}", escape(&encoded));
    if let Some(relay) = relay_state {
        query.push_str(&format!("&RelayState={}", escape(relay)));
    }
    if let Some(with) = signer {
        query.push_str(&format!("&SigAlg={}", escape(with.algorithm_uri())));
        let mut signer =
            Signer::new(with.digest(), with.key).map_err(|e| RedirectError::Sign(e.to_string()))?;
        signer
            .update(query.as_bytes())
            .map_err(|e| RedirectError::Sign(e.to_string()))?;
        let signature = signer
            .sign_to_vec()
            .map_err(|e| RedirectError::Sign(e.to_string()))?;
        let signature = base64::engine::general_purpose::STANDARD.encode(signature);
        query.push_str(&format!("&Signature={}", escape(&signature)));
    }
    let separator = if base_url.contains('?') { '&' } else { '?' };
    Ok(format!("{base_url}{separator}{query}"))
}

/// A verified redirect-binding message.
#[derive(Debug)]
pub struct Received {
    /// The inflated XML.
    pub xml: String,
    /// `RelayState`, if sent.
    pub relay_state: Option<String>,
}

/// Checks the signature over the raw query (`param` is `SAMLRequest` or `SAMLResponse`),
/// then inflates the message. Every check comes before any decoding that could fail loudly.
pub fn verify(
    raw_query: &str,
    param: &'static str,
    certs: &[CertificateDer],
) -> Result<Received, RedirectError> {
    if raw_query.len() > MAX_QUERY {
        return Err(RedirectError::TooLong);
    }
    let mut message = None;
    let mut relay = None;
    let mut sig_alg = None;
    let mut signature = None;
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            n if n == param => &mut message,
            "RelayState" => &mut relay,
            "SigAlg" => &mut sig_alg,
            "Signature" => &mut signature,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(RedirectError::Duplicate(name.to_string()));
        }
    }
    let message = message.ok_or(RedirectError::Missing(param))?;
    let sig_alg_raw = sig_alg.ok_or(RedirectError::Missing("SigAlg"))?;
    let signature_raw = signature.ok_or(RedirectError::Missing("Signature"))?;
    let sig_alg = unescape(sig_alg_raw);
    let digest = match sig_alg.as_str() {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
        | "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256" => MessageDigest::sha256(),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
        | "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384" => MessageDigest::sha384(),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
        | "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512" => MessageDigest::sha512(),
        _ => return Err(RedirectError::SigAlg(sig_alg)),
    };
    let wants_ec = sig_alg.contains("ecdsa");
    let signature =
        decode_base64(&unescape(signature_raw)).map_err(|_| RedirectError::SignatureEncoding)?;
    let mut signed = format!("{param}={message}");
    if let Some(r) = relay {
        signed.push_str(&format!("&RelayState={r}"));
    }
    signed.push_str(&format!("&SigAlg={sig_alg_raw}"));
    let verified = certs.iter().any(|cert| {
        let Ok(key) = X509::from_der(cert.der_data()).and_then(|c| c.public_key()) else {
            return false;
        };
        if (key.id() == Id::EC) != wants_ec {
            return false;
        }
        Verifier::new(digest, &key)
            .and_then(|mut v| {
                v.update(signed.as_bytes())?;
                v.verify(&signature)
            })
            .unwrap_or(false)
    });
    if !verified {
        return Err(RedirectError::BadSignature);
    }
    let deflated =
        decode_base64(&unescape(message)).map_err(|_| RedirectError::Encoding("base64"))?;
    Ok(Received {
        xml: inflate(&deflated)?,
        relay_state: relay.map(unescape),
    })
}

/// Inflates a redirect-binding message (raw DEFLATE) into UTF-8 XML, reading at most
/// `MAX_INFLATED` bytes: a small message that inflates to gigabytes stops there.
pub fn inflate(deflated: &[u8]) -> Result<String, RedirectError> {
    let mut xml = String::new();
    DeflateDecoder::new(deflated)
        .take(MAX_INFLATED + 1)
        .read_to_string(&mut xml)
        .map_err(|_| RedirectError::Encoding("deflate"))?;
    if xml.len() as u64 > MAX_INFLATED {
        return Err(RedirectError::Encoding("message too large"));
    }
    Ok(xml)
}

/// Base64 with the line breaks and spaces some IdPs add stripped first.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let folding = |b: &u8| matches!(b, b'\r' | b'\n' | b' ' | b'\t');
    if !text.as_bytes().iter().any(folding) {
        return base64::engine::general_purpose::STANDARD.decode(text);
    }
    let compact: Vec<u8> = text.bytes().filter(|b| !folding(b)).collect();
    base64::engine::general_purpose::STANDARD.decode(compact)
}

fn escape(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Percent-decoding of a query value (`+` as space, as form encoding says).
fn unescape(raw: &str) -> String {
    url::form_urlencoded::parse(format!("v={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::idp::saml::testing::self_signed;

    fn signed_query(key: &PKey<Private>) -> String {
        signed_with(key, SignatureHash::Sha256)
    }

    fn signed_with(key: &PKey<Private>, hash: SignatureHash) -> String {
        let url = encode(
            "https://idp/slo",
            "SAMLRequest",
            "<x/>",
            Some("r s"),
            Some(MessageSigner { key, hash }),
        )
        .unwrap();
        url.split_once('?').unwrap().1.to_string()
    }

    #[test]
    fn every_signature_hash_is_named_in_sig_alg_and_verifies() {
        let (key, cert) = self_signed(2048);
        let der = [CertificateDer::from(cert.to_der().unwrap())];
        for (hash, name) in [
            (SignatureHash::Sha256, "rsa-sha256"),
            (SignatureHash::Sha384, "rsa-sha384"),
            (SignatureHash::Sha512, "rsa-sha512"),
        ] {
            let q = signed_with(&key, hash);
            assert!(
                q.contains(&format!(
                    "SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23{name}&"
                )),
                "{q}"
            );
            assert_eq!(verify(&q, "SAMLRequest", &der).unwrap().xml, "<x/>");
            // The algorithm is part of what is signed: naming a weaker one breaks it.
            let other = q.replace(name, "rsa-sha256").replace("rsa-sha256-", "x");
            if name != "rsa-sha256" {
                assert_eq!(
                    verify(&other, "SAMLRequest", &der).unwrap_err(),
                    RedirectError::BadSignature
                );
            }
        }
    }

    #[test]
    fn folded_base64_decodes_like_unfolded_and_other_bytes_are_refused() {
        let plain = base64::engine::general_purpose::STANDARD.encode(b"<samlp:Response/>");
        let folded = format!("{}\r\n {}\t{}\n", &plain[..4], &plain[4..9], &plain[9..]);
        assert_eq!(decode_base64(&plain).unwrap(), b"<samlp:Response/>");
        assert_eq!(decode_base64(&folded).unwrap(), b"<samlp:Response/>");
        assert!(decode_base64(&format!("{plain}\u{0}")).is_err());
        assert!(decode_base64(&format!("{plain}\u{a0}")).is_err());
    }

    #[test]
    fn round_trip_verifies_and_inflates() {
        let (key, cert) = self_signed(2048);
        let der = CertificateDer::from(cert.to_der().unwrap());
        let got = verify(&signed_query(&key), "SAMLRequest", &[der]).unwrap();
        assert_eq!(got.xml, "<x/>");
        assert_eq!(got.relay_state.as_deref(), Some("r s"));
    }

    #[test]
    fn missing_weak_or_wrong_signatures_are_refused_without_panicking() {
        let (key, cert) = self_signed(2048);
        let der = CertificateDer::from(cert.to_der().unwrap());
        let q = signed_query(&key);
        let without = |name: &str| {
            q.split('&')
                .filter(|p| !p.starts_with(&format!("{name}=")))
                .collect::<Vec<_>>()
                .join("&")
        };
        let certs = [der];
        assert_eq!(
            verify(&without("SigAlg"), "SAMLRequest", &certs).unwrap_err(),
            RedirectError::Missing("SigAlg")
        );
        assert_eq!(
            verify(&without("Signature"), "SAMLRequest", &certs).unwrap_err(),
            RedirectError::Missing("Signature")
        );
        let sha1 = q.replace("xmldsig-more%23rsa-sha256", "xmldsig%23rsa-sha1");
        assert!(matches!(
            verify(&sha1, "SAMLRequest", &certs),
            Err(RedirectError::SigAlg(_))
        ));
        let tampered = q.replace("RelayState=r+s", "RelayState=r+t");
        assert_eq!(
            verify(&tampered, "SAMLRequest", &certs).unwrap_err(),
            RedirectError::BadSignature
        );
        let (_, other) = self_signed(2048);
        let other = [CertificateDer::from(other.to_der().unwrap())];
        assert_eq!(
            verify(&q, "SAMLRequest", &other).unwrap_err(),
            RedirectError::BadSignature
        );
        assert!(verify(&format!("{q}&SigAlg=x"), "SAMLRequest", &certs).is_err());
        assert!(verify("", "SAMLRequest", &certs).is_err());
    }
}
