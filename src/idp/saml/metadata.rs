//! A SAML IdP's metadata: entity ID, where to send logins and logouts, and the keys it signs
//! with. Parsed by samael, then narrowed to what this gateway will trust.
//!
//! samael verifies responses against every signing certificate in the metadata it is handed
//! and, with none, accepts unsigned responses. So a metadata document is only usable here
//! with at least one strong signing key (RSA ≥ 2048 bits, or EC on a ≥ 256-bit curve); weak
//! or unusable keys are dropped before samael sees the descriptor.

use super::guard;
use base64::Engine;
use openssl::pkey::Id;
use openssl::x509::X509;
use samael::crypto::CertificateDer;
use samael::metadata::{EntityDescriptor, HTTP_POST_BINDING, HTTP_REDIRECT_BINDING};
use thiserror::Error;

/// Largest metadata document accepted (Okta's are a few KiB; aggregates are refused anyway).
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;

/// Why a metadata document cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MetadataError {
    /// Larger than [`MAX_METADATA_BYTES`].
    #[error("metadata is larger than {MAX_METADATA_BYTES} bytes")]
    TooLarge,
    /// Unsafe XML (DOCTYPE and the like).
    #[error("metadata XML refused: {0}")]
    Unsafe(String),
    /// Not parseable as one `EntityDescriptor`.
    #[error("metadata is not a SAML EntityDescriptor: {0}")]
    Parse(String),
    /// No `entityID`.
    #[error("metadata has no entityID")]
    NoEntityId,
    /// No `IDPSSODescriptor`.
    #[error("metadata has no IDPSSODescriptor (is this an SP's metadata?)")]
    NotAnIdp,
    /// No `SingleSignOnService` this SP can send an AuthnRequest to.
    #[error("metadata has no SingleSignOnService with the HTTP-Redirect or HTTP-POST binding")]
    NoSso,
    /// No signing certificate strong enough to trust.
    #[error("metadata has no usable signing certificate (need RSA >= 2048 bits or EC P-256 or stronger){0}")]
    NoSigningCert(String),
    /// Its `validUntil` has passed.
    #[error("metadata expired (validUntil {0})")]
    Expired(String),
}

/// The parts of an IdP's metadata this gateway uses.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    /// The IdP's entity ID (the `Issuer` of its responses).
    pub entity_id: String,
    /// Where SP-initiated logins go: the HTTP-Redirect endpoint, else the HTTP-POST one.
    pub sso_url: String,
    /// The HTTP-Redirect `SingleSignOnService`, if the IdP offers one.
    pub sso_redirect_url: Option<String>,
    /// The HTTP-POST `SingleSignOnService`, if the IdP offers one.
    pub sso_post_url: Option<String>,
    /// Where logouts go (HTTP-Redirect binding), when the IdP offers single logout.
    pub slo_url: Option<String>,
    /// Where logout responses go, when it differs from `slo_url`.
    pub slo_response_url: Option<String>,
    /// Certificates that may sign responses and logout messages (all checked strong).
    pub signing_certs: Vec<CertificateDer>,
    /// The descriptor handed to samael, narrowed to the strong signing keys.
    pub descriptor: EntityDescriptor,
    /// Whether the IdP wants signed AuthnRequests.
    pub wants_signed_requests: bool,
    /// Keys that were ignored, and why (for a warning).
    pub ignored_keys: Vec<String>,
}

impl IdpMetadata {
    /// Parses and checks one `EntityDescriptor` document.
    pub fn parse(xml: &str) -> Result<Self, MetadataError> {
        if xml.len() > MAX_METADATA_BYTES {
            return Err(MetadataError::TooLarge);
        }
        guard::reject_unsafe_constructs(xml).map_err(|e| MetadataError::Unsafe(e.to_string()))?;
        if !root_is_entity_descriptor(xml) {
            // Aggregates (EntitiesDescriptor) and HTML error pages alike.
            return Err(MetadataError::Parse(
                "the root element must be md:EntityDescriptor".into(),
            ));
        }
        let mut descriptor = xml
            .parse::<EntityDescriptor>()
            .map_err(|e| MetadataError::Parse(e.to_string()))?;
        let entity_id = descriptor
            .entity_id
            .clone()
            .filter(|e| !e.trim().is_empty())
            .ok_or(MetadataError::NoEntityId)?;
        if let Some(until) = descriptor.valid_until {
            if until < chrono::Utc::now() {
                return Err(MetadataError::Expired(until.to_rfc3339()));
            }
        }
        let idps = descriptor
            .idp_sso_descriptors
            .as_mut()
            .filter(|d| !d.is_empty())
            .ok_or(MetadataError::NotAnIdp)?;
        let mut signing_certs = Vec::new();
        let mut ignored_keys = Vec::new();
        let mut sso_redirect_url = None;
        let mut sso_post_url = None;
        let mut slo = None;
        let mut wants_signed_requests = false;
        for idp in idps.iter_mut() {
            wants_signed_requests |= idp.want_authn_requests_signed.unwrap_or(false);
            let sso = |binding: &str| {
                idp.single_sign_on_services
                    .iter()
                    .find(|s| s.binding == binding)
                    .map(|s| s.location.clone())
            };
            if sso_redirect_url.is_none() {
                sso_redirect_url = sso(HTTP_REDIRECT_BINDING);
            }
            if sso_post_url.is_none() {
                sso_post_url = sso(HTTP_POST_BINDING);
            }
            if slo.is_none() {
                slo = idp
                    .single_logout_services
                    .iter()
                    .find(|s| s.binding == HTTP_REDIRECT_BINDING)
                    .map(|s| (s.location.clone(), s.response_location.clone()));
            }
            let mut kept = Vec::new();
            for mut key in std::mem::take(&mut idp.key_descriptors) {
                let usage = key.key_use.as_deref().unwrap_or("");
                if usage != "signing" && !usage.is_empty() {
                    continue; // encryption keys: this SP never asks for encrypted assertions
                }
                let Some(data) = key.key_info.x509_data.as_mut() else {
                    continue;
                };
                let mut strong = Vec::new();
                for text in &data.certificates {
                    match strong_cert(text) {
                        Ok(der) => {
                            signing_certs.push(CertificateDer::from(der));
                            strong.push(text.clone());
                        }
                        Err(why) => ignored_keys.push(why),
                    }
                }
                if !strong.is_empty() {
                    data.certificates = strong;
                    key.key_use = Some("signing".to_string());
                    kept.push(key);
                }
            }
            idp.key_descriptors = kept;
        }
        if signing_certs.is_empty() {
            let detail = if ignored_keys.is_empty() {
                String::new()
            } else {
                format!("; ignored: {}", ignored_keys.join("; "))
            };
            return Err(MetadataError::NoSigningCert(detail));
        }
        let sso_url = sso_redirect_url
            .clone()
            .or_else(|| sso_post_url.clone())
            .ok_or(MetadataError::NoSso)?;
        let (slo_url, slo_response_url) = match slo {
            Some((url, response)) => (Some(url), response),
            None => (None, None),
        };
        Ok(Self {
            entity_id,
            sso_url,
            sso_redirect_url,
            sso_post_url,
            slo_url,
            slo_response_url,
            signing_certs,
            descriptor,
            wants_signed_requests,
            ignored_keys,
        })
    }
}

fn root_is_entity_descriptor(xml: &str) -> bool {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let mut reader = quick_xml::NsReader::from_str(xml);
    loop {
        match reader.read_resolved_event() {
            Ok((ns, Event::Start(e) | Event::Empty(e))) => {
                return matches!(ns, ResolveResult::Bound(n) if n.as_ref() == b"urn:oasis:names:tc:SAML:2.0:metadata")
                    && e.local_name().as_ref() == b"EntityDescriptor";
            }
            Ok((_, Event::Eof)) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

/// DER bytes of a base64 certificate whose key is strong enough, or why not.
fn strong_cert(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| "a certificate that is not base64".to_string())?;
    let cert = X509::from_der(&der).map_err(|_| "a certificate that does not parse".to_string())?;
    let key = cert
        .public_key()
        .map_err(|_| "a certificate without a usable public key".to_string())?;
    let ok = match key.id() {
        Id::RSA => key.bits() >= 2048,
        Id::EC => key.bits() >= 256,
        _ => false,
    };
    if ok {
        Ok(der)
    } else {
        Err(format!(
            "a {:?} key of {} bits (too weak or unsupported)",
            key.id(),
            key.bits()
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::idp::saml::testing::{metadata_xml, self_signed};

    #[test]
    fn strong_rsa_metadata_is_accepted_with_its_endpoints() {
        let (_, cert) = self_signed(2048);
        let md = IdpMetadata::parse(&metadata_xml("https://idp.example/x", &[&cert])).unwrap();
        assert_eq!(md.entity_id, "https://idp.example/x");
        assert_eq!(md.sso_url, "https://idp.example/sso");
        assert_eq!(md.slo_url.as_deref(), Some("https://idp.example/slo"));
        assert_eq!(md.signing_certs.len(), 1);
    }

    #[test]
    fn a_post_only_sso_endpoint_is_used_and_none_at_all_is_refused() {
        let (_, cert) = self_signed(2048);
        let xml = metadata_xml("https://idp.example/x", &[&cert]);
        let post_only = xml.replace(
            r#"<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect""#,
            r#"<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST""#,
        );
        let md = IdpMetadata::parse(&post_only).unwrap();
        assert_eq!(md.sso_redirect_url, None);
        assert_eq!(md.sso_post_url.as_deref(), Some("https://idp.example/sso"));
        assert_eq!(md.sso_url, "https://idp.example/sso");
        let none = xml.replace(
            r#"<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect""#,
            r#"<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:SOAP""#,
        );
        assert!(matches!(
            IdpMetadata::parse(&none),
            Err(MetadataError::NoSso)
        ));
    }

    #[test]
    fn metadata_without_signing_cert_is_refused() {
        let err = IdpMetadata::parse(&metadata_xml("https://idp.example/x", &[])).unwrap_err();
        assert!(matches!(err, MetadataError::NoSigningCert(_)), "{err}");
    }

    #[test]
    fn weak_keys_are_dropped_and_alone_are_refused() {
        let (_, weak) = self_signed(1024);
        let err = IdpMetadata::parse(&metadata_xml("https://idp.example/x", &[&weak])).unwrap_err();
        assert!(err.to_string().contains("1024 bits"), "{err}");
        let (_, strong) = self_signed(2048);
        let md =
            IdpMetadata::parse(&metadata_xml("https://idp.example/x", &[&weak, &strong])).unwrap();
        assert_eq!(md.signing_certs.len(), 1);
        assert_eq!(md.ignored_keys.len(), 1);
    }

    #[test]
    fn doctype_in_metadata_is_refused() {
        let (_, cert) = self_signed(2048);
        let xml = metadata_xml("https://idp.example/x", &[&cert]);
        let evil = format!("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{xml}");
        assert!(matches!(
            IdpMetadata::parse(&evil),
            Err(MetadataError::Unsafe(_))
        ));
    }
}
