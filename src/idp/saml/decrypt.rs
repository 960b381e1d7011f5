//! Encrypted assertions: the one `EncryptedAssertion` of a response (whose shape the guard
//! has checked) opened with the SP's private keys, and the plaintext assertion put back in its
//! place, so the result is a plain response that goes through every check a plain one does.
//!
//! Written on openssl rather than samael's decryption (0.0.22), which runs only after a
//! signature over the *encrypted* response has verified (so the usual Okta and ADFS set-up,
//! an assertion signed and then encrypted in an unsigned response, cannot pass), never checks
//! the decrypted assertion's own signature, knows neither AES-256 nor XML Encryption 1.1's
//! RSA-OAEP, and panics on short or markup-less plaintext (which anyone holding the SP's
//! public certificate can send).
//!
//! Algorithms: key transport RSA-OAEP (`rsa-oaep-mgf1p`, and 1.1's `rsa-oaep` with its digest
//! and MGF) and RSA PKCS#1 v1.5 (answered like a wrong key when its padding fails, so the ACS is
//! no padding oracle); content AES-128/192/256 in CBC or GCM. Triple-DES is refused. Every way
//! decryption can fail reads the same to the browser (one "sign-in failed" page); the log says
//! which.

use openssl::md::{Md, MdRef};
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::symm::{decrypt_aead, Cipher, Crypter, Mode};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use thiserror::Error;

const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
const DSIG_NS: &[u8] = b"http://www.w3.org/2000/09/xmldsig#";
const XENC_NS: &[u8] = b"http://www.w3.org/2001/04/xmlenc#";
const XENC11_NS: &[u8] = b"http://www.w3.org/2009/xmlenc11#";

/// Key transport algorithms an IdP may use.
const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
const RSA_OAEP: &str = "http://www.w3.org/2009/xmlenc11#rsa-oaep";
const RSA_1_5: &str = "http://www.w3.org/2001/04/xmlenc#rsa-1_5";

/// The content and key transport algorithms this SP decrypts, strongest first, as published
/// in its metadata (`EncryptionMethod` under the encryption `KeyDescriptor`).
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "http://www.w3.org/2009/xmlenc11#aes256-gcm",
    "http://www.w3.org/2009/xmlenc11#aes128-gcm",
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
    RSA_OAEP,
    RSA_OAEP_MGF1P,
];

/// Most `EncryptedKey`s one assertion may carry (one per recipient key; an IdP mid-rollover
/// sends two). Each costs an RSA private-key operation per SP key, so a response padded
/// with thousands would be a cheap way to burn the verification pool.
const MAX_ENCRYPTED_KEYS: usize = 4;

/// Why an encrypted assertion could not be opened. Safe to log: no key or plaintext.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecryptError {
    /// The pieces decryption needs are missing or repeated.
    #[error("EncryptedAssertion is incomplete: {0}")]
    Shape(&'static str),
    /// The SP has no private key to decrypt with.
    #[error("the response carries an encrypted assertion, but this IdP entry has no sp_key_file to decrypt it")]
    NoKey,
    /// A key transport algorithm this SP does not use.
    #[error("key transport `{0}` is not accepted (RSA-OAEP or RSA 1.5)")]
    KeyAlgorithm(String),
    /// A content algorithm this SP does not use.
    #[error("content encryption `{0}` is not accepted (AES-128/192/256, CBC or GCM)")]
    ContentAlgorithm(String),
    /// No key of this SP opens it: encrypted for someone else, or tampered with.
    #[error("the assertion is encrypted under a key this SP does not hold, or was altered")]
    NotForUs,
    /// The plaintext is not an XML element.
    #[error("the decrypted assertion is not an XML element")]
    NotXml,
}

/// One `EncryptedKey`, as sent.
#[derive(Debug, Default)]
struct EncryptedKey {
    algorithm: Option<String>,
    digest: Option<String>,
    mgf: Option<String>,
    cipher_value: String,
    has_oaep_params: bool,
}

/// What the scan of the response found.
#[derive(Debug, Default)]
struct Found {
    /// Byte range of the `EncryptedAssertion` element.
    span: Option<(usize, usize)>,
    /// Byte range of the response's own `Signature` (dropped once it has verified, since
    /// the decrypted document is no longer what it signed).
    root_signature: Option<(usize, usize)>,
    data_algorithm: Option<String>,
    data_cipher_value: Option<String>,
    keys: Vec<EncryptedKey>,
}

/// Which text the scan is collecting.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Collect {
    DataCipher,
    KeyCipher,
}

/// Decrypts the response's `EncryptedAssertion` with the first of `keys` that opens it and
/// returns the response with the plaintext assertion in its place (and without the response's
/// own signature when `drop_root_signature`, for a response whose signature the caller has
/// verified on the encrypted form).
pub fn open(
    xml: &str,
    keys: &[&PKey<Private>],
    drop_root_signature: bool,
) -> Result<String, DecryptError> {
    if keys.is_empty() {
        return Err(DecryptError::NoKey);
    }
    let found = scan(xml)?;
    let (start, end) = found
        .span
        .ok_or(DecryptError::Shape("no EncryptedAssertion"))?;
    let content_algorithm = found
        .data_algorithm
        .as_deref()
        .ok_or(DecryptError::Shape("EncryptedData has no EncryptionMethod"))?;
    let content = ContentCipher::for_algorithm(content_algorithm)?;
    let data = decode(
        found
            .data_cipher_value
            .as_deref()
            .ok_or(DecryptError::Shape("EncryptedData has no CipherValue"))?,
    )?;
    if found.keys.is_empty() {
        return Err(DecryptError::Shape("no EncryptedKey"));
    }
    let plaintext = found
        .keys
        .iter()
        .flat_map(|k| keys.iter().map(move |key| (k, *key)))
        .map(|(encrypted, key)| {
            let content_key = unwrap_key(encrypted, key, content.key_len())?;
            content.decrypt(&content_key, &data)
        })
        .find_map(|r| match r {
            Ok(plain) => Some(Ok(plain)),
            Err(DecryptError::NotForUs) => None,
            Err(other) => Some(Err(other)),
        })
        .unwrap_or(Err(DecryptError::NotForUs))?;
    let assertion = String::from_utf8(plaintext).map_err(|_| DecryptError::NotXml)?;
    let assertion = assertion.trim();
    if !assertion.starts_with('<') || !assertion.ends_with('>') || assertion.starts_with("<?") {
        return Err(DecryptError::NotXml);
    }
    let mut out = String::with_capacity(xml.len() + assertion.len());
    let mut cursor = 0;
    let mut cuts = vec![(start, end, assertion)];
    if let Some((s, e)) = found.root_signature.filter(|_| drop_root_signature) {
        cuts.push((s, e, ""));
    }
    cuts.sort_by_key(|(s, _, _)| *s);
    for (s, e, with) in cuts {
        out.push_str(xml.get(cursor..s).ok_or(DecryptError::Shape("overlap"))?);
        out.push_str(with);
        cursor = e;
    }
    out.push_str(xml.get(cursor..).unwrap_or(""));
    Ok(out)
}

/// Finds the encrypted assertion's pieces (the guard has already admitted the shape).
fn scan(xml: &str) -> Result<Found, DecryptError> {
    let malformed = |_| DecryptError::Shape("unreadable XML");
    let mut reader = NsReader::from_str(xml);
    let mut found = Found::default();
    // (namespace, local name) of the open elements.
    let mut path: Vec<(Vec<u8>, String)> = Vec::new();
    let mut collecting: Option<Collect> = None;
    let mut before = 0usize;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(malformed)?;
        let ns = match ns {
            ResolveResult::Bound(n) => n.as_ref().to_vec(),
            _ => Vec::new(),
        };
        let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let (start, empty) = match event {
            Event::Eof => break,
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::Text(t) => {
                if let Some(what) = collecting {
                    let text = t.decode().map_err(|_| DecryptError::Shape("text"))?;
                    match what {
                        Collect::DataCipher => found
                            .data_cipher_value
                            .get_or_insert_with(String::new)
                            .push_str(&text),
                        Collect::KeyCipher => {
                            if let Some(k) = found.keys.last_mut() {
                                k.cipher_value.push_str(&text);
                            }
                        }
                    }
                }
                before = after;
                continue;
            }
            Event::End(_) => {
                collecting = None;
                if let Some((ns, local)) = path.pop() {
                    if path.len() == 1 && ns == ASSERTION_NS && local == "EncryptedAssertion" {
                        let begin = found.span.map_or(before, |(s, _)| s);
                        found.span = Some((begin, after));
                    }
                    if path.len() == 1 && ns == DSIG_NS && local == "Signature" {
                        let begin = found.root_signature.map_or(before, |(s, _)| s);
                        found.root_signature = Some((begin, after));
                    }
                }
                before = after;
                continue;
            }
            _ => {
                before = after;
                continue;
            }
        };
        let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
        let algorithm = start
            .try_get_attribute("Algorithm")
            .ok()
            .flatten()
            .and_then(|a| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .ok()
                    .map(|v| v.into_owned())
            });
        let depth = path.len();
        let parent = path.last().map(|(n, l)| (n.as_slice(), l.as_str()));
        let in_key = path
            .iter()
            .any(|(n, l)| n == XENC_NS && l == "EncryptedKey");
        match (ns.as_slice(), local.as_str(), parent) {
            (ASSERTION_NS, "EncryptedAssertion", _) if depth == 1 => {
                if found.span.is_some() {
                    return Err(DecryptError::Shape("two EncryptedAssertions"));
                }
                found.span = Some((before, before));
            }
            (DSIG_NS, "Signature", _) if depth == 1 => {
                found.root_signature = Some((before, before));
            }
            (XENC_NS, "EncryptedKey", _) => {
                if found.keys.len() >= MAX_ENCRYPTED_KEYS {
                    return Err(DecryptError::Shape("more than 4 EncryptedKeys"));
                }
                found.keys.push(EncryptedKey::default());
            }
            (XENC_NS, "EncryptionMethod", Some((XENC_NS, "EncryptedData"))) if !in_key => {
                found.data_algorithm = algorithm;
            }
            (XENC_NS, "EncryptionMethod", Some((XENC_NS, "EncryptedKey"))) => {
                if let Some(k) = found.keys.last_mut() {
                    k.algorithm = algorithm;
                }
            }
            (DSIG_NS | XENC11_NS, "DigestMethod", Some((XENC_NS, "EncryptionMethod")))
                if in_key =>
            {
                if let Some(k) = found.keys.last_mut() {
                    k.digest = algorithm;
                }
            }
            (XENC11_NS, "MGF", Some((XENC_NS, "EncryptionMethod"))) if in_key => {
                if let Some(k) = found.keys.last_mut() {
                    k.mgf = algorithm;
                }
            }
            (XENC_NS, "OAEPparams", _) if in_key => {
                if let Some(k) = found.keys.last_mut() {
                    k.has_oaep_params = true;
                }
            }
            (XENC_NS, "CipherValue", Some((XENC_NS, "CipherData"))) => {
                let holder = path
                    .iter()
                    .rev()
                    .nth(1)
                    .map(|(n, l)| (n.as_slice(), l.as_str()));
                collecting = match holder {
                    Some((XENC_NS, "EncryptedKey")) => Some(Collect::KeyCipher),
                    Some((XENC_NS, "EncryptedData")) => {
                        if found.data_cipher_value.is_some() {
                            return Err(DecryptError::Shape("two EncryptedData"));
                        }
                        Some(Collect::DataCipher)
                    }
                    _ => None,
                };
            }
            _ => {}
        }
        if empty {
            if depth == 1 && ns == ASSERTION_NS && local == "EncryptedAssertion" {
                found.span = Some((before, after));
            }
            if depth == 1 && ns == DSIG_NS && local == "Signature" {
                found.root_signature = Some((before, after));
            }
        } else {
            path.push((ns, local));
        }
        before = after;
    }
    Ok(found)
}

fn decode(text: &str) -> Result<Vec<u8>, DecryptError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    openssl::base64::decode_block(&compact)
        .map_err(|_| DecryptError::Shape("CipherValue is not base64"))
}

/// The content key from one `EncryptedKey` under one of our keys. An RSA 1.5 key that does not
/// unpad becomes a random key of the right length (implicit rejection: the failure then looks
/// like any other wrong key, and its timing says nothing about the padding).
fn unwrap_key(
    encrypted: &EncryptedKey,
    key: &PKey<Private>,
    key_len: usize,
) -> Result<Vec<u8>, DecryptError> {
    let algorithm = encrypted.algorithm.as_deref().unwrap_or("");
    let wrapped = decode(&encrypted.cipher_value)?;
    let mut ctx = PkeyCtx::new(key).map_err(|_| DecryptError::NotForUs)?;
    ctx.decrypt_init().map_err(|_| DecryptError::NotForUs)?;
    match algorithm {
        RSA_OAEP_MGF1P | RSA_OAEP => {
            if encrypted.has_oaep_params {
                return Err(DecryptError::KeyAlgorithm(format!(
                    "{algorithm} with OAEPparams"
                )));
            }
            let digest = oaep_digest(encrypted.digest.as_deref())?;
            let mgf = match (algorithm, encrypted.mgf.as_deref()) {
                (RSA_OAEP_MGF1P, None) => Md::sha1(),
                (RSA_OAEP_MGF1P, Some(other)) => {
                    return Err(DecryptError::KeyAlgorithm(format!(
                        "{algorithm} with MGF {other}"
                    )))
                }
                (_, mgf) => mgf_digest(mgf)?,
            };
            ctx.set_rsa_padding(Padding::PKCS1_OAEP)
                .and_then(|()| ctx.set_rsa_oaep_md(digest))
                .and_then(|()| ctx.set_rsa_mgf1_md(mgf))
                .map_err(|_| DecryptError::NotForUs)?;
            let mut out = Vec::new();
            ctx.decrypt_to_vec(&wrapped, &mut out)
                .map_err(|_| DecryptError::NotForUs)?;
            if out.len() != key_len {
                return Err(DecryptError::NotForUs);
            }
            Ok(out)
        }
        RSA_1_5 => {
            ctx.set_rsa_padding(Padding::PKCS1)
                .map_err(|_| DecryptError::NotForUs)?;
            let mut out = Vec::new();
            match ctx.decrypt_to_vec(&wrapped, &mut out) {
                Ok(_) if out.len() == key_len => Ok(out),
                _ => {
                    let mut random = vec![0u8; key_len];
                    openssl::rand::rand_bytes(&mut random).map_err(|_| DecryptError::NotForUs)?;
                    Ok(random)
                }
            }
        }
        other => Err(DecryptError::KeyAlgorithm(other.to_string())),
    }
}

/// RSA-OAEP's digest (`DigestMethod`; SHA-1 when absent, as the spec says).
fn oaep_digest(uri: Option<&str>) -> Result<&'static MdRef, DecryptError> {
    match uri {
        None | Some("http://www.w3.org/2000/09/xmldsig#sha1") => Ok(Md::sha1()),
        Some("http://www.w3.org/2001/04/xmlenc#sha256") => Ok(Md::sha256()),
        Some("http://www.w3.org/2001/04/xmldsig-more#sha384") => Ok(Md::sha384()),
        Some("http://www.w3.org/2001/04/xmlenc#sha512") => Ok(Md::sha512()),
        Some(other) => Err(DecryptError::KeyAlgorithm(format!(
            "RSA-OAEP digest {other}"
        ))),
    }
}

/// XML Encryption 1.1's mask generation function (MGF1 with SHA-1 when absent).
fn mgf_digest(uri: Option<&str>) -> Result<&'static MdRef, DecryptError> {
    match uri {
        None | Some("http://www.w3.org/2009/xmlenc11#mgf1sha1") => Ok(Md::sha1()),
        Some("http://www.w3.org/2009/xmlenc11#mgf1sha256") => Ok(Md::sha256()),
        Some("http://www.w3.org/2009/xmlenc11#mgf1sha384") => Ok(Md::sha384()),
        Some("http://www.w3.org/2009/xmlenc11#mgf1sha512") => Ok(Md::sha512()),
        Some(other) => Err(DecryptError::KeyAlgorithm(format!("RSA-OAEP MGF {other}"))),
    }
}

/// The content cipher an `EncryptedData` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentCipher {
    Cbc(usize),
    Gcm(usize),
}

impl ContentCipher {
    fn for_algorithm(uri: &str) -> Result<Self, DecryptError> {
        Ok(match uri {
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => Self::Cbc(16),
            "http://www.w3.org/2001/04/xmlenc#aes192-cbc" => Self::Cbc(24),
            "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => Self::Cbc(32),
            "http://www.w3.org/2009/xmlenc11#aes128-gcm" => Self::Gcm(16),
            "http://www.w3.org/2009/xmlenc11#aes192-gcm" => Self::Gcm(24),
            "http://www.w3.org/2009/xmlenc11#aes256-gcm" => Self::Gcm(32),
            other => return Err(DecryptError::ContentAlgorithm(other.to_string())),
        })
    }

    fn key_len(self) -> usize {
        match self {
            Self::Cbc(n) | Self::Gcm(n) => n,
        }
    }

    /// Decrypts `data` (IV, then ciphertext, then for GCM the 16-byte tag).
    fn decrypt(self, key: &[u8], data: &[u8]) -> Result<Vec<u8>, DecryptError> {
        match self {
            Self::Cbc(n) => {
                let cipher = match n {
                    16 => Cipher::aes_128_cbc(),
                    24 => Cipher::aes_192_cbc(),
                    _ => Cipher::aes_256_cbc(),
                };
                let (iv, body) = data.split_at_checked(16).ok_or(DecryptError::NotForUs)?;
                if body.is_empty() || body.len() % 16 != 0 {
                    return Err(DecryptError::NotForUs);
                }
                // XML Encryption pads with arbitrary bytes and a final length byte (not
                // PKCS#7), so the padding is taken off here rather than by openssl.
                let mut crypter = Crypter::new(cipher, Mode::Decrypt, key, Some(iv))
                    .map_err(|_| DecryptError::NotForUs)?;
                crypter.pad(false);
                let mut out = vec![0u8; body.len() + 16];
                let mut len = crypter
                    .update(body, &mut out)
                    .map_err(|_| DecryptError::NotForUs)?;
                len += crypter
                    .finalize(out.get_mut(len..).ok_or(DecryptError::NotForUs)?)
                    .map_err(|_| DecryptError::NotForUs)?;
                out.truncate(len);
                let pad = usize::from(*out.last().ok_or(DecryptError::NotForUs)?);
                if pad == 0 || pad > 16 || pad > out.len() {
                    return Err(DecryptError::NotForUs);
                }
                out.truncate(out.len() - pad);
                Ok(out)
            }
            Self::Gcm(n) => {
                let cipher = match n {
                    16 => Cipher::aes_128_gcm(),
                    24 => Cipher::aes_192_gcm(),
                    _ => Cipher::aes_256_gcm(),
                };
                let (iv, rest) = data.split_at_checked(12).ok_or(DecryptError::NotForUs)?;
                let body_len = rest.len().checked_sub(16).ok_or(DecryptError::NotForUs)?;
                let (body, tag) = rest.split_at(body_len);
                decrypt_aead(cipher, key, Some(iv), &[], body, tag)
                    .map_err(|_| DecryptError::NotForUs)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;
    use openssl::symm::encrypt_aead;

    fn key() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        openssl::base64::encode_block(bytes)
    }

    fn wrap(key: &PKey<Private>, content_key: &[u8], padding: Padding) -> Vec<u8> {
        let mut ctx = PkeyCtx::new(key).unwrap();
        ctx.encrypt_init().unwrap();
        ctx.set_rsa_padding(padding).unwrap();
        let mut out = Vec::new();
        ctx.encrypt_to_vec(content_key, &mut out).unwrap();
        out
    }

    fn cbc(key: &[u8], plain: &[u8]) -> Vec<u8> {
        let iv = [7u8; 16];
        let pad = 16 - plain.len() % 16;
        let mut padded = plain.to_vec();
        padded.extend(std::iter::repeat_n(0xAAu8, pad - 1));
        padded.push(u8::try_from(pad).unwrap());
        let cipher = match key.len() {
            16 => Cipher::aes_128_cbc(),
            _ => Cipher::aes_256_cbc(),
        };
        let mut c = Crypter::new(cipher, Mode::Encrypt, key, Some(&iv)).unwrap();
        c.pad(false);
        let mut out = vec![0u8; padded.len() + 16];
        let n = c.update(&padded, &mut out).unwrap();
        out.truncate(n);
        [iv.to_vec(), out].concat()
    }

    fn gcm(key: &[u8], plain: &[u8]) -> Vec<u8> {
        let iv = [9u8; 12];
        let mut tag = [0u8; 16];
        let body =
            encrypt_aead(Cipher::aes_256_gcm(), key, Some(&iv), &[], plain, &mut tag).unwrap();
        [iv.to_vec(), body, tag.to_vec()].concat()
    }

    const ASSERTION: &str =
        "<saml:Assertion ID=\"a1\"><saml:Issuer>idp</saml:Issuer></saml:Assertion>";

    fn response(data_alg: &str, data: &[u8], key_alg: &str, wrapped: &[u8]) -> String {
        format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"r1\">\
<saml:Issuer>idp</saml:Issuer>\
<saml:EncryptedAssertion><xenc:EncryptedData xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\" Type=\"http://www.w3.org/2001/04/xmlenc#Element\">\
<xenc:EncryptionMethod Algorithm=\"{data_alg}\"/>\
<ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><xenc:EncryptedKey><xenc:EncryptionMethod Algorithm=\"{key_alg}\"><ds:DigestMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha1\"/></xenc:EncryptionMethod>\
<xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo>\
<xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></saml:EncryptedAssertion></samlp:Response>",
            b64(wrapped),
            b64(data)
        )
    }

    #[test]
    fn opens_oaep_with_cbc_and_gcm_and_puts_the_assertion_in_place() {
        let k = key();
        for (alg, len, seal) in [
            (
                "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
                16,
                cbc as fn(&[u8], &[u8]) -> Vec<u8>,
            ),
            ("http://www.w3.org/2001/04/xmlenc#aes256-cbc", 32, cbc),
            ("http://www.w3.org/2009/xmlenc11#aes256-gcm", 32, gcm),
        ] {
            let content_key = vec![3u8; len];
            let xml = response(
                alg,
                &seal(&content_key, ASSERTION.as_bytes()),
                RSA_OAEP_MGF1P,
                &wrap(&k, &content_key, Padding::PKCS1_OAEP),
            );
            let opened = open(&xml, &[&k], false).unwrap();
            assert!(
                opened.contains("<saml:Issuer>idp</saml:Issuer><saml:Assertion ID=\"a1\">"),
                "{opened}"
            );
            assert!(!opened.contains("Encrypted"), "{opened}");
            assert!(
                opened.ends_with("</saml:Assertion></samlp:Response>"),
                "{opened}"
            );
        }
    }

    #[test]
    fn tries_each_key_and_refuses_a_foreign_one() {
        let (ours, next, theirs) = (key(), key(), key());
        let content_key = vec![5u8; 16];
        let xml = response(
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
            &cbc(&content_key, ASSERTION.as_bytes()),
            RSA_OAEP_MGF1P,
            &wrap(&next, &content_key, Padding::PKCS1_OAEP),
        );
        assert!(open(&xml, &[&ours, &next], false).is_ok());
        assert_eq!(
            open(&xml, &[&ours, &theirs], false),
            Err(DecryptError::NotForUs)
        );
        assert_eq!(open(&xml, &[], false), Err(DecryptError::NoKey));
    }

    #[test]
    fn rsa_1_5_with_bad_padding_reads_like_a_wrong_key() {
        let k = key();
        let content_key = vec![1u8; 16];
        let good = wrap(&k, &content_key, Padding::PKCS1);
        let data = cbc(&content_key, ASSERTION.as_bytes());
        let xml = response(
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
            &data,
            RSA_1_5,
            &good,
        );
        assert!(open(&xml, &[&k], false).is_ok());
        let mut bad = good.clone();
        if let Some(b) = bad.get_mut(10) {
            *b ^= 0xff;
        }
        let xml = response(
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
            &data,
            RSA_1_5,
            &bad,
        );
        assert!(matches!(
            open(&xml, &[&k], false),
            Err(DecryptError::NotForUs | DecryptError::NotXml)
        ));
    }

    #[test]
    fn refuses_weak_or_unknown_algorithms_and_garbage() {
        let k = key();
        let content_key = vec![2u8; 16];
        let wrapped = wrap(&k, &content_key, Padding::PKCS1_OAEP);
        let data = cbc(&content_key, ASSERTION.as_bytes());
        let tdes = response(
            "http://www.w3.org/2001/04/xmlenc#tripledes-cbc",
            &data,
            RSA_OAEP_MGF1P,
            &wrapped,
        );
        assert!(matches!(
            open(&tdes, &[&k], false),
            Err(DecryptError::ContentAlgorithm(_))
        ));
        let unknown_key = response(
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
            &data,
            "urn:x",
            &wrapped,
        );
        assert!(matches!(
            open(&unknown_key, &[&k], false),
            Err(DecryptError::KeyAlgorithm(_))
        ));
        // Short, empty or markup-less plaintext: refused, never a panic.
        for cipher_text in [
            vec![],
            vec![1u8; 5],
            vec![0u8; 16],
            cbc(&content_key, b"no markup"),
        ] {
            let xml = response(
                "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
                &cipher_text,
                RSA_OAEP_MGF1P,
                &wrapped,
            );
            assert!(open(&xml, &[&k], false).is_err());
            let xml = response(
                "http://www.w3.org/2009/xmlenc11#aes256-gcm",
                &cipher_text,
                RSA_OAEP_MGF1P,
                &wrapped,
            );
            assert!(open(&xml, &[&k], false).is_err());
        }
        // A tampered GCM body fails its tag.
        let gkey = vec![4u8; 32];
        let gwrapped = wrap(&k, &gkey, Padding::PKCS1_OAEP);
        let mut sealed = gcm(&gkey, ASSERTION.as_bytes());
        if let Some(b) = sealed.get_mut(20) {
            *b ^= 1;
        }
        let xml = response(
            "http://www.w3.org/2009/xmlenc11#aes256-gcm",
            &sealed,
            RSA_OAEP_MGF1P,
            &gwrapped,
        );
        assert_eq!(open(&xml, &[&k], false), Err(DecryptError::NotForUs));
    }

    #[test]
    fn a_response_padded_with_encrypted_keys_is_refused_before_any_rsa_work() {
        let k = key();
        let content_key = vec![8u8; 16];
        let xml = response(
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
            &cbc(&content_key, ASSERTION.as_bytes()),
            RSA_OAEP_MGF1P,
            &wrap(&k, &content_key, Padding::PKCS1_OAEP),
        );
        let start = xml.find("<xenc:EncryptedKey>").unwrap();
        let end = xml.find("</xenc:EncryptedKey>").unwrap() + "</xenc:EncryptedKey>".len();
        let one = &xml[start..end];
        let padded = xml.replacen(one, &one.repeat(5), 1);
        assert_eq!(
            open(&padded, &[&k], false),
            Err(DecryptError::Shape("more than 4 EncryptedKeys"))
        );
        let four = xml.replacen(one, &one.repeat(4), 1);
        assert!(open(&four, &[&k], false).is_ok());
    }

    #[test]
    fn drops_the_verified_response_signature_when_asked() {
        let k = key();
        let content_key = vec![6u8; 16];
        let xml = response(
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
            &cbc(&content_key, ASSERTION.as_bytes()),
            RSA_OAEP_MGF1P,
            &wrap(&k, &content_key, Padding::PKCS1_OAEP),
        )
        .replace(
            "<saml:Issuer>idp</saml:Issuer><saml:Encrypted",
            "<saml:Issuer>idp</saml:Issuer><ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignatureValue>x</ds:SignatureValue></ds:Signature><saml:Encrypted",
        );
        let kept = open(&xml, &[&k], false).unwrap();
        assert!(kept.contains("<ds:Signature"));
        let dropped = open(&xml, &[&k], true).unwrap();
        assert!(!dropped.contains("Signature"), "{dropped}");
        assert!(dropped.contains("<saml:Issuer>idp</saml:Issuer><saml:Assertion ID=\"a1\">"));
    }
}
