//! SAML 2.0 service provider (Web Browser SSO profile): AuthnRequests out over
//! HTTP-Redirect, responses in over HTTP-POST, single logout both ways.
//!
//! samael (pinned `=0.0.22`) verifies signatures and the subject confirmation. Around it this
//! module adds what samael leaves open, in order: a size cap before decoding, the streaming
//! [`guard`] before any XML library sees the message, verification on a bounded blocking
//! pool, the [`assertion`] checks samael skips, and a replay cache of assertion IDs.

pub mod assertion;
pub mod decrypt;
pub mod guard;
pub mod metadata;
pub mod redirect;
#[cfg(test)]
pub(crate) mod testing;

use crate::config::{MetadataSource, SamlIdpConfig, SsoBinding};
use crate::idp::http::IdpHttpClient;
use crate::idp::inspect::Inspection;
use crate::idp::{Identity, ToIdp};
use crate::session::pending::StepUp;
use crate::session::store::{OneTimeStore, ReplayCache, StoreError, Stores};
use arc_swap::ArcSwapOption;
use assertion::{AssertionError, SamlSubject};
use base64::Engine;
use chrono::Utc;
use guard::{GuardError, GuardFacts, Root};
use metadata::{IdpMetadata, MetadataError};
use openssl::pkey::{PKey, Private};
use redirect::RedirectError;
use samael::crypto::{AllowedSignatureAlgorithm, ReduceMode};
use samael::key_info::{KeyInfo, X509Data};
use samael::metadata::{
    Endpoint, EntityDescriptor, IndexedEndpoint, KeyDescriptor, SpSsoDescriptor, HTTP_POST_BINDING,
    HTTP_REDIRECT_BINDING,
};
use samael::schema::{
    Assertion, AuthnContextClassRef, AuthnContextComparison, AuthnRequest, Issuer, LogoutRequest,
    LogoutResponse, NameIdPolicy, RequestedAuthnContext, Status, StatusCode,
};
use samael::service_provider::ServiceProvider;
use samael::traits::ToXml;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::Semaphore;

/// One signing certificate of an IdP, as the admin console shows it.
#[derive(Debug, Clone)]
pub struct SigningCertificate {
    /// Its subject's names.
    pub subject: String,
    /// The end of its validity, as OpenSSL prints it.
    pub not_after: String,
    /// Days from now until then (negative once expired).
    pub days_left: Option<i32>,
}

/// SP metadata for the admin to paste into the IdP.
pub const METADATA_PATH: &str = "/.portcullis/saml/metadata";
/// Assertion consumer service (HTTP-POST).
pub const ACS_PATH: &str = "/.portcullis/saml/acs";
/// Single logout (HTTP-Redirect).
pub const SLO_PATH: &str = "/.portcullis/saml/slo";

const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const PROTOCOL_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";

/// How long a verification waits for a pool slot before the login is refused as busy.
const VERIFY_QUEUE_WAIT: Duration = Duration::from_secs(5);
/// How long an incoming logout message stays acceptable after it was issued.
const MESSAGE_MAX_AGE: Duration = Duration::from_secs(300);

/// Signature algorithms accepted by xmlsec (the guard checks the same list first).
const STRONG_ALGORITHMS: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// Signature verification slots shared by every SAML IdP: one per core, so a flood of
/// responses queues here instead of occupying the threads that proxy traffic.
static VERIFY_SLOTS: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
});

/// Why a SAML login or logout message was refused. Safe to log (no assertion content
/// beyond IDs and URLs).
#[derive(Debug, Error)]
pub enum SamlError {
    /// No metadata loaded yet.
    #[error("IdP metadata not loaded yet")]
    NotReady,
    /// The posted response is larger than allowed.
    #[error("SAMLResponse larger than {0} bytes")]
    TooLarge(usize),
    /// Not base64 / UTF-8.
    #[error("SAMLResponse is not valid base64 XML: {0}")]
    Encoding(&'static str),
    /// Refused before verification.
    #[error("refused before signature check: {0}")]
    Guard(#[from] GuardError),
    /// The assertion is not signed though the config wants it.
    #[error("assertion is not signed (want_assertions_signed = true)")]
    AssertionUnsigned,
    /// The response names another destination.
    #[error("response Destination `{0}` is not this ACS")]
    Destination(String),
    /// IdP-initiated login on an app that does not allow it.
    #[error("unsolicited (IdP-initiated) response, and this app does not allow_idp_initiated")]
    UnsolicitedNotAllowed,
    /// An unsolicited response that answers some request (a stolen or misrouted response).
    #[error("unsolicited response carries InResponseTo of another login")]
    StrayInResponseTo,
    /// A solicited response answering another request.
    #[error("InResponseTo does not match this login's request")]
    WrongInResponseTo,
    /// A signed response that names no destination.
    #[error("signed Response has no Destination (SAML Profiles 4.1.4.5)")]
    NoDestination,
    /// The response's own status is not Success.
    #[error("the Response's status is `{0}`, not Success")]
    ResponseStatus(String),
    /// The response's or the assertion's Issuer is not this IdP (or they differ).
    #[error("Issuer `{0}` is not this IdP's, or differs between Response and Assertion")]
    IssuerMismatch(String),
    /// `IssueInstant` of the message in the future.
    #[error("message IssueInstant is in the future or not a time")]
    IssueInstant,
    /// samael refused it (signature, issuer, times, recipient, status…).
    #[error("verification failed: {0}")]
    Verify(String),
    /// The assertion lacks what this SP requires.
    #[error(transparent)]
    Assertion(#[from] AssertionError),
    /// The assertion was used before.
    #[error("assertion `{0}` was already used (replay)")]
    Replay(String),
    /// The replay cache or one-time store could not answer: refused, never let through.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The verification pool stayed full.
    #[error("too many SAML verifications in progress")]
    Busy,
    /// A redirect-binding message failed.
    #[error(transparent)]
    Redirect(#[from] RedirectError),
    /// A logout message that does not fit.
    #[error("logout message refused: {0}")]
    Logout(String),
    /// Building an outgoing message failed.
    #[error("cannot build SAML message: {0}")]
    Build(String),
    /// An encrypted assertion that could not be opened.
    #[error("encrypted assertion refused: {0}")]
    Decrypt(#[from] decrypt::DecryptError),
    /// A plain assertion where this IdP entry requires an encrypted one.
    #[error("assertion is not encrypted (require_encrypted_assertions = true)")]
    NotEncrypted,
}

impl SamlError {
    /// A fixed name for metrics (the message itself may name ids and URLs).
    pub fn code(&self) -> &'static str {
        match self {
            SamlError::NotReady => "not_ready",
            SamlError::TooLarge(_) => "too_large",
            SamlError::Encoding(_) => "encoding",
            SamlError::Guard(_) => "guard",
            SamlError::AssertionUnsigned => "assertion_unsigned",
            SamlError::Destination(_) | SamlError::NoDestination => "destination",
            SamlError::UnsolicitedNotAllowed => "unsolicited",
            SamlError::StrayInResponseTo | SamlError::WrongInResponseTo => "in_response_to",
            SamlError::ResponseStatus(_) => "idp_status",
            SamlError::IssuerMismatch(_) => "issuer",
            SamlError::IssueInstant => "issue_instant",
            SamlError::Verify(_) => "signature_or_conditions",
            SamlError::Assertion(_) => "assertion",
            SamlError::Replay(_) => "replay",
            SamlError::Store(_) => "store_unavailable",
            SamlError::Busy => "busy",
            SamlError::Redirect(_) => "redirect_binding",
            SamlError::Logout(_) => "logout",
            SamlError::Build(_) => "build",
            SamlError::Decrypt(_) => "decrypt",
            SamlError::NotEncrypted => "not_encrypted",
        }
    }
}

/// This SP's URLs on one app origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpEndpoints {
    /// Entity ID (the audience).
    pub entity_id: String,
    /// ACS URL (recipient and destination of responses).
    pub acs_url: String,
    /// SLO URL.
    pub slo_url: String,
}

/// A started login.
pub struct LoginRequest {
    /// Where the browser goes with the AuthnRequest.
    pub to_idp: ToIdp,
    /// The AuthnRequest's ID, which the response must answer.
    pub request_id: String,
}

/// A verified login.
pub struct SamlLogin {
    /// The session's identity.
    pub identity: Identity,
    /// NameID and session index, for single logout.
    pub subject: SamlSubject,
    /// When the user authenticated at the IdP (`AuthnInstant`, Unix milliseconds): the same
    /// for every login single sign-on makes from that authentication.
    pub authenticated_ms: Option<u64>,
}

/// A verified IdP-initiated logout request.
#[derive(Debug)]
pub struct IdpLogout {
    /// Its ID (our response's InResponseTo).
    pub id: String,
    /// Whose sessions end.
    pub name_id: String,
    /// Which IdP sessions (`SessionIndex` elements); none named means all of the NameID's.
    pub session_indexes: Vec<String>,
    /// RelayState to echo.
    pub relay_state: Option<String>,
}

/// Why the IdP did not confirm our logout (the local session has ended either way).
#[derive(Debug, Error)]
pub enum LogoutResponseError {
    /// The message or its signature failed.
    #[error(transparent)]
    Refused(#[from] SamlError),
    /// It answers no LogoutRequest this gateway sent (or one already answered).
    #[error("LogoutResponse answers no logout this gateway started")]
    UnknownRequest,
    /// The IdP says the logout did not (fully) happen.
    #[error("the IdP answered the logout with status `{0}`")]
    Status(String),
}

/// A LogoutResponse whose signature, issuer and destination held: which request it answers
/// and what it says.
struct LogoutAnswer {
    in_response_to: Option<String>,
    status: Result<(), LogoutResponseError>,
}

/// The one-time record of a LogoutRequest sent.
fn sent_logout_key(id: &str) -> String {
    format!("saml-logout-sent\0{id}")
}

/// Metadata load state, for readiness and logs.
#[derive(Debug, Clone)]
pub struct MetadataStatus {
    /// Metadata usable.
    pub ready: bool,
    /// Last load error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// One SAML IdP, as this SP sees it.
pub struct SamlProvider {
    name: String,
    config: SamlIdpConfig,
    http: IdpHttpClient,
    metadata: ArcSwapOption<IdpMetadata>,
    last_error: Mutex<Option<String>>,
    /// Assertion ids already used (shared by every node with a shared store).
    replay: Arc<dyn ReplayCache>,
    /// IDs of the LogoutRequests sent, so each LogoutResponse must answer one of ours, once
    /// (on whichever node it arrives).
    sent_logouts: Arc<dyn OneTimeStore>,
    /// Whether the IdP answers (watched in the background).
    pub health: crate::idp::health::Reachability,
    sp_key: Option<PKey<Private>>,
    sp_cert_der: Option<Vec<u8>>,
    /// The next SP certificate, published beside it during a key rollover.
    sp_next_cert_der: Option<Vec<u8>>,
    /// The next SP key, when given: assertions encrypted to either key are opened.
    sp_next_key: Option<PKey<Private>>,
    clock: crate::clock::SharedClock,
}

impl SamlProvider {
    /// Now, on the gateway's clock (message times and their checks).
    fn now(&self) -> chrono::DateTime<Utc> {
        crate::clock::utc_now(&*self.clock)
    }

    /// A provider; metadata from a file is loaded now, from a URL by [`Self::load_until_ready`].
    pub fn new(
        name: &str,
        config: SamlIdpConfig,
        http: IdpHttpClient,
        clock: crate::clock::SharedClock,
        stores: &Stores,
    ) -> Result<Self, SamlError> {
        let key = |pem: Option<&crate::secret::SecretBytes>, what: &str| {
            pem.map(|k| PKey::private_key_from_pem(k.expose()))
                .transpose()
                .map_err(|e| SamlError::Build(format!("{what}: {e}")))
        };
        let cert_der = |pem: Option<&Vec<u8>>, what: &str| {
            pem.map(|c| openssl::x509::X509::from_pem(c).and_then(|x| x.to_der()))
                .transpose()
                .map_err(|e| SamlError::Build(format!("{what}: {e}")))
        };
        let sp_key = key(config.sp_key.as_ref(), "sp key")?;
        let sp_cert_der = cert_der(config.sp_cert_pem.as_ref(), "sp certificate")?;
        let sp_next_cert_der = cert_der(config.sp_next_cert_pem.as_ref(), "sp next certificate")?;
        let sp_next_key = key(config.sp_next_key.as_ref(), "sp next key")?;
        let provider = Self {
            name: name.to_string(),
            clock,
            http,
            metadata: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            replay: stores.replay.clone(),
            sent_logouts: stores.one_time.clone(),
            health: crate::idp::health::Reachability::default(),
            sp_key,
            sp_cert_der,
            sp_next_cert_der,
            sp_next_key,
            config,
        };
        if let Some(xml) = provider.config.file_metadata() {
            let md = IdpMetadata::parse(xml).map_err(|e| SamlError::Build(e.to_string()))?;
            provider.install(md);
            provider.warn_of_expiring_certificates();
        }
        Ok(provider)
    }

    /// The pass before any XML library ([`guard`]), with SHA-1 admitted where this IdP
    /// entry opts in.
    fn guard(&self, xml: &str, expected: Root) -> Result<GuardFacts, GuardError> {
        if self.config.allow_sha1 {
            guard::check_message_allowing_sha1(xml, expected)
        } else {
            guard::check_message(xml, expected)
        }
    }

    /// The signature algorithms samael may verify: SHA-256 and up, or — with `allow_sha1`,
    /// which samael cannot name — whatever the guard admitted.
    fn samael_algorithms(&self) -> Option<&'static [AllowedSignatureAlgorithm]> {
        (!self.config.allow_sha1).then_some(STRONG_ALGORITHMS)
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the browser goes after single logout, if configured.
    pub fn post_logout_redirect_uri(&self) -> Option<&str> {
        self.config.post_logout_redirect_uri.as_deref()
    }

    /// Largest `SAMLResponse` accepted (base64 characters).
    pub fn max_response_bytes(&self) -> usize {
        self.config.max_response_bytes
    }

    /// Is usable metadata loaded?
    pub fn is_ready(&self) -> bool {
        self.metadata.load().is_some()
    }

    /// Metadata state for `/readyz`.
    pub fn status(&self) -> MetadataStatus {
        MetadataStatus {
            ready: self.is_ready(),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// The IdP's signing certificates (from its metadata): subject and the end of validity
    /// (`notAfter`), with the days left (negative once expired).
    pub fn signing_certificates(&self) -> Vec<SigningCertificate> {
        let Some(md) = self.metadata.load_full() else {
            return Vec::new();
        };
        let today = openssl::asn1::Asn1Time::days_from_now(0).ok();
        md.signing_certs
            .iter()
            .filter_map(|der| openssl::x509::X509::from_der(der.der_data()).ok())
            .map(|cert| SigningCertificate {
                subject: cert
                    .subject_name()
                    .entries()
                    .filter_map(|e| e.data().to_string().ok())
                    .collect::<Vec<_>>()
                    .join(", "),
                not_after: cert.not_after().to_string(),
                days_left: today
                    .as_ref()
                    .and_then(|t| t.diff(cert.not_after()).ok())
                    .map(|d| d.days),
            })
            .collect()
    }

    /// The IdP's signing certificates that expire within
    /// [`crate::config::idp::EXPIRY_WARNING_DAYS`] (or have): a key rollover is due.
    pub fn expiring_certificates(&self) -> Vec<SigningCertificate> {
        self.signing_certificates()
            .into_iter()
            .filter(|c| {
                c.days_left
                    .is_some_and(|d| d < crate::config::idp::EXPIRY_WARNING_DAYS)
            })
            .collect()
    }

    fn warn_of_expiring_certificates(&self) {
        for cert in self.expiring_certificates() {
            tracing::warn!(idp = %self.name, subject = %cert.subject, not_after = %cert.not_after, days_left = cert.days_left.unwrap_or_default(), "the IdP's signing certificate expires soon: ask for its successor in the metadata");
        }
    }

    /// The IdP's entity ID, once metadata is loaded.
    pub fn idp_entity_id(&self) -> Option<String> {
        self.metadata.load().as_ref().map(|m| m.entity_id.clone())
    }

    fn install(&self, md: IdpMetadata) {
        if md.wants_signed_requests && !self.config.sign_requests {
            tracing::warn!(idp = %self.name, "IdP metadata asks for signed AuthnRequests, but no sp_key_file is configured: logins will fail at the IdP");
        }
        for why in &md.ignored_keys {
            tracing::warn!(idp = %self.name, "IdP metadata: ignoring {why}");
        }
        self.metadata.store(Some(Arc::new(md)));
        self.health.loaded();
    }

    /// One reachability check: the metadata URL (when metadata comes from one) or the SSO
    /// endpoint answers with anything but a server error.
    pub async fn probe(&self) -> Result<(), String> {
        let url = match &self.config.metadata {
            MetadataSource::Url(url) => url.clone(),
            _ => self
                .metadata
                .load()
                .as_ref()
                .map(|m| m.sso_url.clone())
                .ok_or_else(|| "metadata not loaded".to_string())?,
        };
        match self.http.get("metadata", &url).await {
            Ok((status, _)) if status < 500 => Ok(()),
            Ok((status, _)) => Err(format!("{url} answered HTTP {status}")),
            Err(e) => Err(crate::idp::error_chain(&e)),
        }
    }

    /// One metadata fetch from the configured URL; the current copy stays on failure.
    pub async fn refresh(&self) -> Result<(), String> {
        let MetadataSource::Url(url) = &self.config.metadata else {
            return Ok(());
        };
        let outcome = match self.http.get("metadata", url).await {
            Ok((200, body)) if body.len() <= metadata::MAX_METADATA_BYTES => {
                String::from_utf8(body)
                    .map_err(|_| "metadata is not UTF-8".to_string())
                    .and_then(|xml| {
                        IdpMetadata::parse(&xml).map_err(|e: MetadataError| e.to_string())
                    })
            }
            Ok((200, _)) => Err("metadata too large".to_string()),
            Ok((status, _)) => Err(format!("metadata URL answered HTTP {status}")),
            Err(e) => Err(e.to_string()),
        };
        let result = outcome.map(|md| self.install(md));
        if let Ok(mut last) = self.last_error.lock() {
            *last = result.as_ref().err().cloned();
        }
        result
    }

    /// For a metadata URL: fetches with backoff until it works, then refreshes on the
    /// configured interval for ever, keeping the last good copy when a refresh fails.
    pub async fn load_until_ready(&self) {
        let MetadataSource::Url(url) = &self.config.metadata else {
            return;
        };
        let mut delay = Duration::from_secs(1);
        loop {
            match self.refresh().await {
                Ok(()) => {
                    tracing::info!(idp = %self.name, %url, "SAML IdP metadata loaded");
                    self.warn_of_expiring_certificates();
                    delay = self.config.metadata_refresh;
                }
                Err(e) if self.is_ready() => {
                    tracing::warn!(idp = %self.name, %url, error = %e, "SAML metadata refresh failed; keeping the last good copy");
                    delay = self.config.metadata_refresh.min(Duration::from_secs(300));
                }
                Err(e) => {
                    tracing::warn!(idp = %self.name, %url, error = %e, retry_in_s = delay.as_secs(), "SAML metadata not loaded; protected apps answer 'sign-in unavailable' until it is");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                    continue;
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// This SP's URLs on an app origin (`https://host[:port]`).
    pub fn endpoints(&self, origin_base: &str) -> SpEndpoints {
        SpEndpoints {
            entity_id: self
                .config
                .sp_entity_id
                .clone()
                .unwrap_or_else(|| format!("{origin_base}{METADATA_PATH}")),
            acs_url: format!("{origin_base}{ACS_PATH}"),
            slo_url: format!("{origin_base}{SLO_PATH}"),
        }
    }

    /// The SP's key and hash for what it signs, when it signs.
    fn signer(&self) -> Option<redirect::MessageSigner<'_>> {
        let key = self.sp_key.as_ref().filter(|_| self.config.sign_requests)?;
        Some(redirect::MessageSigner {
            key,
            hash: self.config.signature_hash,
        })
    }

    /// Do all app hosts share one SP entity ID (`sp_entity_id`), so one IdP integration
    /// serves them all?
    pub fn shares_entity_id(&self) -> bool {
        self.config.sp_entity_id.is_some()
    }

    /// The SP metadata document for this origin; `other_acs` are the ACS URLs of the other
    /// app hosts that share its entity ID, listed after this host's own (index 0, the
    /// default).
    pub fn sp_metadata(&self, sp: &SpEndpoints, other_acs: &[String]) -> Result<String, SamlError> {
        let key_descriptor = |key_use: &str, der: &Vec<u8>| KeyDescriptor {
            key_use: Some(key_use.to_string()),
            key_info: KeyInfo {
                id: None,
                x509_data: Some(X509Data {
                    certificates: vec![base64::engine::general_purpose::STANDARD.encode(der)],
                }),
            },
            encryption_methods: (key_use == "encryption").then(|| {
                decrypt::SUPPORTED_ALGORITHMS
                    .iter()
                    .map(|a| samael::metadata::EncryptionMethod {
                        algorithm: (*a).to_string(),
                    })
                    .collect()
            }),
        };
        // The key in use, and during a rollover the next one: the IdP trusts both for
        // signatures, and may encrypt to either whose private key is here.
        let key_descriptors = self.sp_cert_der.as_ref().map(|der| {
            let signing = std::iter::once(der)
                .chain(self.sp_next_cert_der.as_ref())
                .map(|der| key_descriptor("signing", der));
            let next_encryption = self
                .sp_next_cert_der
                .as_ref()
                .filter(|_| self.sp_next_key.is_some());
            let encryption = std::iter::once(der)
                .chain(next_encryption)
                .map(|der| key_descriptor("encryption", der));
            signing.chain(encryption).collect()
        });
        let descriptor = EntityDescriptor {
            entity_id: Some(sp.entity_id.clone()),
            sp_sso_descriptors: Some(vec![SpSsoDescriptor {
                protocol_support_enumeration: Some(PROTOCOL_NS.to_string()),
                key_descriptors,
                single_logout_services: Some(vec![
                    Endpoint {
                        binding: HTTP_REDIRECT_BINDING.to_string(),
                        location: sp.slo_url.clone(),
                        response_location: None,
                    },
                    Endpoint {
                        binding: HTTP_POST_BINDING.to_string(),
                        location: sp.slo_url.clone(),
                        response_location: None,
                    },
                ]),
                name_id_formats: self.config.name_id_format.clone().map(|f| vec![f]),
                authn_requests_signed: Some(self.signer().is_some()),
                want_assertions_signed: Some(self.config.want_assertions_signed),
                assertion_consumer_services: std::iter::once(&sp.acs_url)
                    .chain(other_acs.iter().filter(|a| **a != sp.acs_url))
                    .enumerate()
                    .map(|(index, location)| IndexedEndpoint {
                        binding: HTTP_POST_BINDING.to_string(),
                        location: location.clone(),
                        response_location: None,
                        index,
                        is_default: Some(index == 0),
                    })
                    .collect(),
                ..SpSsoDescriptor::default()
            }]),
            ..EntityDescriptor::default()
        };
        descriptor
            .to_string()
            .map_err(|e| SamlError::Build(e.to_string()))
    }

    /// Starts a login: an AuthnRequest with a fresh 160-bit ID, to the IdP's SSO URL, with
    /// `relay_state` (an opaque server-side key) alongside.
    pub fn begin_login(
        &self,
        sp: &SpEndpoints,
        relay_state: &str,
        step_up: Option<&StepUp>,
    ) -> Result<LoginRequest, SamlError> {
        let md = self.metadata.load_full().ok_or(SamlError::NotReady)?;
        let (binding, sso_url) = self.sso_endpoint(&md)?;
        let request_id = random_id().ok_or_else(|| SamlError::Build("no random bytes".into()))?;
        let request = AuthnRequest {
            id: request_id.clone(),
            version: "2.0".to_string(),
            issue_instant: self.now(),
            destination: Some(sso_url.to_string()),
            issuer: Some(issuer(&sp.entity_id)),
            assertion_consumer_service_url: Some(sp.acs_url.clone()),
            protocol_binding: Some(HTTP_POST_BINDING.to_string()),
            name_id_policy: Some(NameIdPolicy {
                format: self.config.name_id_format.clone(),
                allow_create: Some(true),
                ..NameIdPolicy::default()
            }),
            // A step-up asks for a fresh authentication of the requested class.
            force_authn: step_up.map(|_| true),
            requested_authn_context: step_up.filter(|s| !s.acr.is_empty()).map(|s| {
                RequestedAuthnContext {
                    authn_context_class_refs: Some(
                        s.acr
                            .iter()
                            .map(|a| AuthnContextClassRef {
                                value: Some(a.clone()),
                            })
                            .collect(),
                    ),
                    authn_context_decl_refs: None,
                    comparison: Some(AuthnContextComparison::Exact),
                }
            }),
            ..AuthnRequest::default()
        };
        let to_idp = match binding {
            SsoBinding::Redirect => {
                let xml = request
                    .to_string()
                    .map_err(|e| SamlError::Build(e.to_string()))?;
                ToIdp::Redirect(redirect::encode(
                    sso_url,
                    "SAMLRequest",
                    &xml,
                    Some(relay_state),
                    self.signer(),
                )?)
            }
            SsoBinding::Post => ToIdp::Post {
                action: sso_url.to_string(),
                fields: vec![
                    ("SAMLRequest", self.posted_request(request)?),
                    ("RelayState", relay_state.to_string()),
                ],
            },
        };
        Ok(LoginRequest { to_idp, request_id })
    }

    /// The binding and endpoint AuthnRequests go to: the configured binding (which the
    /// metadata must offer), else HTTP-Redirect where offered, else HTTP-POST.
    fn sso_endpoint<'m>(&self, md: &'m IdpMetadata) -> Result<(SsoBinding, &'m str), SamlError> {
        let redirect = md
            .sso_redirect_url
            .as_deref()
            .map(|u| (SsoBinding::Redirect, u));
        let post = md.sso_post_url.as_deref().map(|u| (SsoBinding::Post, u));
        match self.config.authn_request_binding {
            Some(SsoBinding::Post) => post.ok_or_else(|| {
                SamlError::Build("authn_request_binding = \"post\", but the IdP's metadata lists no HTTP-POST SingleSignOnService".into())
            }),
            Some(SsoBinding::Redirect) => redirect.ok_or_else(|| {
                SamlError::Build("authn_request_binding = \"redirect\", but the IdP's metadata lists no HTTP-Redirect SingleSignOnService".into())
            }),
            None => redirect.or(post).ok_or_else(|| SamlError::Build("no SingleSignOnService".into())),
        }
    }

    /// An AuthnRequest for the HTTP-POST binding, base64: signed as XML (an enveloped
    /// signature, exclusive c14n, `signature_hash` for both the signature and the digest)
    /// when this SP signs requests.
    fn posted_request(&self, mut request: AuthnRequest) -> Result<String, SamlError> {
        let xml = match (self.signer(), self.sp_cert_der.as_ref()) {
            (Some(signer), Some(cert)) => {
                use samael::signature::{DigestAlgorithm, Signature, SignatureAlgorithm};
                let cert = samael::crypto::CertificateDer::from(cert.clone());
                let mut signature = Signature::template(&request.id, &cert);
                // samael's template says RSA-SHA256 over a SHA-1 digest; neither is ours to keep.
                signature.signed_info.signature_method.algorithm =
                    SignatureAlgorithm::Unsupported(signer.algorithm_uri().to_string());
                for reference in &mut signature.signed_info.reference {
                    reference.digest_method.algorithm =
                        DigestAlgorithm::Unsupported(signer.digest_uri().to_string());
                }
                request.signature = Some(signature);
                let der = signer
                    .key
                    .private_key_to_der()
                    .map_err(|e| SamlError::Build(format!("sp key: {e}")))?;
                request
                    .to_signed_xml(&der)
                    .map_err(|e| SamlError::Build(format!("signing the AuthnRequest: {e}")))?
            }
            _ => request
                .to_string()
                .map_err(|e| SamlError::Build(e.to_string()))?,
        };
        Ok(base64::engine::general_purpose::STANDARD.encode(xml))
    }

    /// Verifies a posted `SAMLResponse`. `request_id` is the AuthnRequest this answers, or
    /// `None` for an IdP-initiated login (which the caller has checked the app allows).
    pub async fn finish_login(
        &self,
        saml_response: &str,
        sp: &SpEndpoints,
        request_id: Option<&str>,
    ) -> Result<SamlLogin, SamlError> {
        let md = self.metadata.load_full().ok_or(SamlError::NotReady)?;
        let received = self.decode_response(saml_response)?;
        let envelope = self.guard(&received, Root::Response)?;
        let opened = self.open(received, &envelope, &md).await?;
        let facts = self.facts_of(&opened, envelope)?;
        self.signed_as_wanted(&facts)?;
        destination_is(&facts, sp)?;
        status_is_success(&facts)?;
        envelope_issuer_is(&facts, &md)?;
        in_response_to(&facts, request_id)?;
        self.issued_in_the_past(&facts)?;
        let assertion = self
            .verify_signed(opened, &facts, sp, &md, request_id)
            .await?;
        let ttl = assertion::check(
            &assertion,
            &sp.entity_id,
            self.config.clock_skew,
            self.now(),
        )?;
        assertion_issuer_is(&assertion, &md)?;
        let key = format!("saml-assertion\u{0}{}\u{0}{}", md.entity_id, assertion.id);
        if !self.replay.first_use(&key, ttl).await? {
            return Err(SamlError::Replay(assertion.id.clone()));
        }
        let (identity, mut subject) = assertion::identity(&assertion, &self.name, &self.config);
        // samael drops the NameID's qualifiers; the guard read them from the one (signed)
        // assertion so a logout can send the NameID back exactly as received.
        subject.name_qualifier = facts.name_qualifiers.name_qualifier.clone();
        subject.sp_name_qualifier = facts.name_qualifiers.sp_name_qualifier.clone();
        let authenticated_ms = assertion
            .authn_statements
            .iter()
            .flatten()
            .find_map(|s| s.authn_instant)
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok());
        Ok(SamlLogin {
            identity,
            subject,
            authenticated_ms,
        })
    }

    /// Every check [`SamlProvider::finish_login`] makes, run on a pasted response (base64
    /// or XML) for `sp`, each with its verdict — except `InResponseTo` (no login to match)
    /// and replay (nothing is recorded). For `portcullis idp inspect`.
    pub async fn inspect_response(&self, pasted: &str, sp: &SpEndpoints) -> Inspection {
        let mut report = Inspection::new("SAML response");
        let Some(md) = self.metadata.load_full() else {
            report.fail("IdP metadata", "not loaded");
            return report;
        };
        report.pass("IdP metadata", &format!("loaded for {}", md.entity_id));
        let trimmed = pasted.trim();
        let xml = if trimmed.starts_with('<') {
            guard::prepare(trimmed)
                .map(str::to_string)
                .map_err(SamlError::from)
        } else {
            self.decode_response(trimmed)
        };
        let xml = match xml {
            Ok(xml) => xml,
            Err(e) => {
                report.fail("decoding", &e.to_string());
                return report;
            }
        };
        let structure = "structure (signature wrapping, DTDs, one assertion)";
        let envelope = match self.guard(&xml, Root::Response) {
            Ok(facts) => facts,
            Err(e) => {
                report.fail(structure, &e.to_string());
                return report;
            }
        };
        let encrypted = envelope.assertion_encrypted;
        let opened = match self.open(xml, &envelope, &md).await {
            Ok(opened) => opened,
            Err(e) => {
                report.fail("encrypted assertion", &e.to_string());
                return report;
            }
        };
        let facts = match self.facts_of(&opened, envelope) {
            Ok(facts) => facts,
            Err(e) => {
                report.fail(structure, &format!("after decryption: {e}"));
                return report;
            }
        };
        if encrypted {
            report.pass("encrypted assertion", "opened with this SP's key");
        }
        report.pass(structure, "one Response, one Assertion");
        let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        report.said("Response ID", &shown(&facts.root_id));
        report.said("Issuer (Response)", &shown(&facts.root_issuer));
        report.said("Issuer (Assertion)", &shown(&facts.assertion_issuer));
        report.said("Destination", &shown(&facts.destination));
        report.said("IssueInstant", &shown(&facts.issue_instant));
        report.said("InResponseTo", &shown(&facts.in_response_to));
        report.said("Status", &facts.status.join(" / "));
        report.said(
            "Signed",
            &format!(
                "response: {}, assertion: {}",
                facts.root_signed, facts.assertion_signed
            ),
        );
        report.check("assertion signed as wanted", self.signed_as_wanted(&facts));
        report.check("Destination is this ACS", destination_is(&facts, sp));
        report.check("status is Success", status_is_success(&facts));
        report.check(
            "Response Issuer is the IdP's",
            envelope_issuer_is(&facts, &md),
        );
        report.check(
            "IssueInstant not in the future",
            self.issued_in_the_past(&facts),
        );
        report.note(
            "InResponseTo",
            "left aside: no sign-in of this gateway to match",
        );
        let assertion = match self.verify_signed(opened, &facts, sp, &md, None).await {
            Ok(a) => {
                report.pass(
                    "signature and conditions (xmlsec, via samael)",
                    "valid under the IdP's metadata certificates",
                );
                a
            }
            Err(e) => {
                report.fail(
                    "signature and conditions (xmlsec, via samael)",
                    &e.to_string(),
                );
                return report;
            }
        };
        report.check(
            "audience, lifetime, AuthnStatement",
            assertion::check(
                &assertion,
                &sp.entity_id,
                self.config.clock_skew,
                self.now(),
            )
            .map(|_| ())
            .map_err(SamlError::from),
        );
        report.check(
            "Assertion Issuer is the IdP's",
            assertion_issuer_is(&assertion, &md),
        );
        let (identity, subject) = assertion::identity(&assertion, &self.name, &self.config);
        report.said("NameID", &subject.name_id);
        report.said("NameID format", &subject.format.unwrap_or_default());
        report.said("email", identity.email.as_deref().unwrap_or("(none)"));
        report.said("name", identity.name.as_deref().unwrap_or("(none)"));
        report.said("groups", &identity.groups.join(", "));
        report.said(
            "AuthnContextClassRef",
            identity.acr.as_deref().unwrap_or("(none)"),
        );
        report
    }

    /// The posted value as the XML the guard and libxml2 will read: within the size limit,
    /// base64, UTF-8, and with no declaration left to switch encodings on.
    fn decode_response(&self, saml_response: &str) -> Result<String, SamlError> {
        let limit = self.config.max_response_bytes;
        if saml_response.len() > limit {
            return Err(SamlError::TooLarge(limit));
        }
        let bytes =
            redirect::decode_base64(saml_response).map_err(|_| SamlError::Encoding("base64"))?;
        let decoded = String::from_utf8(bytes).map_err(|_| SamlError::Encoding("UTF-8"))?;
        Ok(guard::prepare(&decoded)?.to_string())
    }

    fn signed_as_wanted(&self, facts: &GuardFacts) -> Result<(), SamlError> {
        if self.config.want_assertions_signed && !facts.assertion_signed {
            return Err(SamlError::AssertionUnsigned);
        }
        Ok(())
    }

    fn issued_in_the_past(&self, facts: &GuardFacts) -> Result<(), SamlError> {
        let skew = chrono::Duration::from_std(self.config.clock_skew)
            .unwrap_or(chrono::Duration::seconds(60));
        let issued = facts
            .issue_instant
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .ok_or(SamlError::IssueInstant)?;
        if issued > self.now() + skew {
            return Err(SamlError::IssueInstant);
        }
        Ok(())
    }

    /// The response as the checks read it: as received, or with its encrypted assertion
    /// opened. A signature over the encrypted response is verified first, on what was
    /// signed: once decrypted, the document no longer matches it.
    async fn open(
        &self,
        received: String,
        envelope: &GuardFacts,
        md: &IdpMetadata,
    ) -> Result<Opened, SamlError> {
        if !envelope.assertion_encrypted {
            if self.config.require_encrypted_assertions {
                return Err(SamlError::NotEncrypted);
            }
            return Ok(Opened::Plain(received));
        }
        let envelope_verified = envelope.root_signed;
        if envelope_verified {
            self.reduce_to_signed(received.clone(), md.signing_certs.clone())
                .await?;
        }
        let keys: Vec<PKey<Private>> = self
            .sp_key
            .iter()
            .chain(self.sp_next_key.iter())
            .cloned()
            .collect();
        let xml = on_verify_pool(move || {
            let keys: Vec<&PKey<Private>> = keys.iter().collect();
            Ok(decrypt::open(&received, &keys, envelope_verified))
        })
        .await??;
        Ok(Opened::Decrypted {
            xml,
            envelope_verified,
        })
    }

    /// What the checks read of an opened response: the envelope's facts for a plain one; for a
    /// decrypted one, the guard's pass over the plaintext in place — the response still
    /// counting as signed when it was (its verified signature went with the ciphertext, and a
    /// signed response must name its Destination).
    fn facts_of(&self, opened: &Opened, envelope: GuardFacts) -> Result<GuardFacts, GuardError> {
        match opened {
            Opened::Plain(_) => Ok(envelope),
            Opened::Decrypted { xml, .. } => Ok(GuardFacts {
                root_signed: envelope.root_signed,
                ..self.guard(xml, Root::Response)?
            }),
        }
    }

    /// Signature, times and recipient, by samael (xmlsec) in the bounded verification pool.
    /// A decrypted assertion that is not signed itself passes only when the response
    /// around it was signed and verified before decryption (see [`Self::open`]).
    async fn verify_signed(
        &self,
        opened: Opened,
        facts: &GuardFacts,
        sp: &SpEndpoints,
        md: &IdpMetadata,
        request_id: Option<&str>,
    ) -> Result<Assertion, SamlError> {
        let skew_c = chrono::Duration::from_std(self.config.clock_skew)
            .unwrap_or(chrono::Duration::seconds(60));
        let mut idp_metadata = md.descriptor.clone();
        let xml = match opened {
            Opened::Plain(xml) => xml,
            Opened::Decrypted {
                xml,
                envelope_verified,
            } => {
                if !facts.assertion_signed {
                    if !envelope_verified {
                        return Err(SamlError::Verify(
                            "the decrypted assertion is not signed, and neither is the response"
                                .into(),
                        ));
                    }
                    // Verified already, over the encrypted form: samael only parses and
                    // checks the conditions here.
                    for descriptor in idp_metadata.idp_sso_descriptors.iter_mut().flatten() {
                        descriptor.key_descriptors.clear();
                    }
                }
                xml
            }
        };
        let verifier = ServiceProvider {
            entity_id: Some(sp.entity_id.clone()),
            acs_url: Some(sp.acs_url.clone()),
            slo_url: Some(sp.slo_url.clone()),
            idp_metadata,
            allow_idp_initiated: request_id.is_none(),
            max_clock_skew: skew_c,
            max_issue_delay: chrono::Duration::seconds(300) + skew_c,
            allowed_signature_algorithms: self.samael_algorithms().map(<[_]>::to_vec),
            ..ServiceProvider::default()
        };
        let ids: Vec<String> = request_id.into_iter().map(str::to_string).collect();
        on_verify_pool(move || {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            // PreDigest: what is parsed is exactly what the verified reference digested (the
            // Response when it is signed, else the Assertion) — the strictest of samael's
            // modes, and it skips the node bookkeeping of the others (a sixth of an ACS post).
            verifier
                .parse_xml_response_with_mode(&xml, Some(&ids), ReduceMode::PreDigest)
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// SP-initiated single logout: the IdP's SLO URL with a LogoutRequest for this subject,
    /// or `None` when the IdP offers no single logout.
    pub async fn logout_url(&self, sp: &SpEndpoints, subject: &SamlSubject) -> Option<String> {
        let md = self.metadata.load_full()?;
        let slo = md.slo_url.clone()?;
        // Written here: samael 0.0.22 puts SessionIndex before NameID, which the schema (and
        // strict IdPs) refuse.
        let id = random_id()?;
        let xml = logout_request_xml(&id, &slo, &sp.entity_id, subject, self.now());
        match redirect::encode(&slo, "SAMLRequest", &xml, None, self.signer()) {
            Ok(url) => {
                let ttl = MESSAGE_MAX_AGE * 2;
                if let Err(e) = self
                    .sent_logouts
                    .put(&sent_logout_key(&id), Vec::new(), ttl)
                    .await
                {
                    // The user is signed out here anyway; the IdP's answer will not be matched.
                    tracing::warn!(idp = %self.name, error = %e, "cannot record the LogoutRequest sent");
                }
                Some(url)
            }
            Err(e) => {
                tracing::warn!(idp = %self.name, error = %e, "cannot build LogoutRequest");
                None
            }
        }
    }

    /// Verifies an IdP-initiated LogoutRequest (HTTP-Redirect, signature required).
    pub fn verify_logout_request(
        &self,
        raw_query: &str,
        sp: &SpEndpoints,
    ) -> Result<IdpLogout, SamlError> {
        let md = self.metadata.load_full().ok_or(SamlError::NotReady)?;
        let received = redirect::verify(raw_query, "SAMLRequest", &md.signing_certs)?;
        self.check_logout_request(&received.xml, received.relay_state, &md, sp)
    }

    /// Checks the IdP's answer to our LogoutRequest (HTTP-Redirect, signature required):
    /// signed by the IdP, answering a LogoutRequest this gateway sent (once), issued by the
    /// IdP, sent to this SLO endpoint, with status Success.
    pub async fn verify_logout_response(
        &self,
        raw_query: &str,
        sp: &SpEndpoints,
    ) -> Result<(), LogoutResponseError> {
        let md = self.metadata.load_full().ok_or(SamlError::NotReady)?;
        let received = redirect::verify(raw_query, "SAMLResponse", &md.signing_certs)
            .map_err(SamlError::from)?;
        let answer = self.check_logout_response(&received.xml, &md, sp)?;
        self.answered(answer).await
    }

    /// A checked LogoutResponse counts only if it answers a LogoutRequest sent (by any node)
    /// and not answered before.
    async fn answered(&self, answer: LogoutAnswer) -> Result<(), LogoutResponseError> {
        let sent = match &answer.in_response_to {
            Some(id) => self
                .sent_logouts
                .take(&sent_logout_key(id))
                .await
                .map_err(SamlError::Store)?,
            None => None,
        };
        if sent.is_none() {
            return Err(LogoutResponseError::UnknownRequest);
        }
        answer.status
    }

    /// [`Self::verify_logout_response`] for the HTTP-POST binding (an enveloped signature).
    pub async fn verify_posted_logout_response(
        &self,
        saml_response: &str,
        sp: &SpEndpoints,
    ) -> Result<(), LogoutResponseError> {
        let md = self.metadata.load_full().ok_or(SamlError::NotReady)?;
        if saml_response.len() > self.config.max_response_bytes {
            return Err(SamlError::TooLarge(self.config.max_response_bytes).into());
        }
        let bytes =
            redirect::decode_base64(saml_response).map_err(|_| SamlError::Encoding("base64"))?;
        let decoded = String::from_utf8(bytes).map_err(|_| SamlError::Encoding("UTF-8"))?;
        let xml = guard::prepare(&decoded)
            .map_err(SamlError::from)?
            .to_string();
        let facts = self
            .guard(&xml, Root::LogoutResponse)
            .map_err(SamlError::from)?;
        if !facts.root_signed {
            return Err(SamlError::Logout("LogoutResponse is not signed".into()).into());
        }
        let signed_xml = self.reduce_to_signed(xml, md.signing_certs.clone()).await?;
        let answer = self.check_logout_response(&signed_xml, &md, sp)?;
        self.answered(answer).await
    }

    fn check_logout_response(
        &self,
        xml: &str,
        md: &IdpMetadata,
        sp: &SpEndpoints,
    ) -> Result<LogoutAnswer, LogoutResponseError> {
        let xml = guard::prepare(xml).map_err(SamlError::from)?;
        let facts = self
            .guard(xml, Root::LogoutResponse)
            .map_err(SamlError::from)?;
        let response = xml
            .parse::<LogoutResponse>()
            .map_err(|e| SamlError::Logout(e.to_string()))?;
        let issuer = response.issuer.as_ref().and_then(|i| i.value.as_deref());
        if issuer != Some(md.entity_id.as_str()) {
            return Err(SamlError::Logout("issuer is not the IdP".into()).into());
        }
        if response
            .destination
            .as_deref()
            .is_some_and(|d| d != sp.slo_url)
        {
            return Err(SamlError::Logout("destination is not this SLO endpoint".into()).into());
        }
        Ok(LogoutAnswer {
            in_response_to: response.in_response_to.clone(),
            status: match facts.status.first().map(String::as_str) {
                Some(STATUS_SUCCESS) => Ok(()),
                _ => Err(LogoutResponseError::Status(facts.status.join(" / "))),
            },
        })
    }

    /// Verifies enveloped signatures with the IdP's keys on the bounded pool and returns the
    /// signed part of the document.
    async fn reduce_to_signed(
        &self,
        xml: String,
        certs: Vec<samael::crypto::CertificateDer>,
    ) -> Result<String, SamlError> {
        let algorithms = self.samael_algorithms();
        on_verify_pool(move || {
            use samael::crypto::{Crypto, CryptoProvider};
            Crypto::reduce_xml_to_signed_with_allowed_algorithms(
                &xml,
                &certs,
                ReduceMode::ValidateAndMarkNoAncestors,
                algorithms,
            )
            .map_err(|e| e.to_string())
        })
        .await
    }

    /// Verifies an IdP-initiated LogoutRequest sent with the HTTP-POST binding (an enveloped
    /// XML signature, required), on the same bounded pool as logins.
    pub async fn verify_posted_logout_request(
        &self,
        saml_request: &str,
        relay_state: Option<String>,
        sp: &SpEndpoints,
    ) -> Result<IdpLogout, SamlError> {
        let md = self.metadata.load_full().ok_or(SamlError::NotReady)?;
        if saml_request.len() > self.config.max_response_bytes {
            return Err(SamlError::TooLarge(self.config.max_response_bytes));
        }
        let bytes =
            redirect::decode_base64(saml_request).map_err(|_| SamlError::Encoding("base64"))?;
        let decoded = String::from_utf8(bytes).map_err(|_| SamlError::Encoding("UTF-8"))?;
        let xml = guard::prepare(&decoded)?.to_string();
        let facts = self.guard(&xml, Root::LogoutRequest)?;
        if !facts.root_signed {
            return Err(SamlError::Logout("LogoutRequest is not signed".into()));
        }
        let signed_xml = self.reduce_to_signed(xml, md.signing_certs.clone()).await?;
        self.check_logout_request(&signed_xml, relay_state, &md, sp)
    }

    fn check_logout_request(
        &self,
        xml: &str,
        relay_state: Option<String>,
        md: &IdpMetadata,
        sp: &SpEndpoints,
    ) -> Result<IdpLogout, SamlError> {
        let xml = guard::prepare(xml)?;
        // samael reads SessionIndex as an attribute, but SAML sends elements (Core §3.7.1):
        // the guard collects them.
        let facts = self.guard(xml, Root::LogoutRequest)?;
        let request = xml
            .parse::<LogoutRequest>()
            .map_err(|e| SamlError::Logout(e.to_string()))?;
        let issuer_ok =
            request.issuer.as_ref().and_then(|i| i.value.as_deref()) == Some(md.entity_id.as_str());
        if !issuer_ok {
            return Err(SamlError::Logout("issuer is not the IdP".into()));
        }
        if request
            .destination
            .as_deref()
            .is_some_and(|d| d != sp.slo_url)
        {
            return Err(SamlError::Logout(
                "destination is not this SLO endpoint".into(),
            ));
        }
        let issued = request.issue_instant.ok_or(SamlError::IssueInstant)?;
        let skew = chrono::Duration::from_std(self.config.clock_skew)
            .unwrap_or(chrono::Duration::seconds(60));
        let max_age =
            chrono::Duration::from_std(MESSAGE_MAX_AGE).unwrap_or(chrono::Duration::seconds(300));
        let now = self.now();
        if issued > now + skew || issued + max_age + skew < now {
            return Err(SamlError::IssueInstant);
        }
        let id = request
            .id
            .ok_or_else(|| SamlError::Logout("no ID".into()))?;
        let name_id = request
            .name_id
            .map(|n| n.value.trim().to_string())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| SamlError::Logout("no NameID".into()))?;
        if facts.session_indexes.iter().any(String::is_empty) {
            return Err(SamlError::Logout("empty SessionIndex".into()));
        }
        Ok(IdpLogout {
            id,
            name_id,
            session_indexes: facts.session_indexes,
            relay_state,
        })
    }

    /// The LogoutResponse redirect answering an IdP-initiated logout.
    pub fn logout_response_url(&self, sp: &SpEndpoints, logout: &IdpLogout) -> Option<String> {
        let md = self.metadata.load_full()?;
        let target = md.slo_response_url.clone().or_else(|| md.slo_url.clone())?;
        let response = LogoutResponse {
            id: random_id(),
            in_response_to: Some(logout.id.clone()),
            version: Some("2.0".to_string()),
            issue_instant: Some(self.now()),
            destination: Some(target.clone()),
            consent: None,
            issuer: Some(issuer(&sp.entity_id)),
            signature: None,
            status: Some(Status {
                status_code: StatusCode {
                    value: Some(STATUS_SUCCESS.to_string()),
                },
                status_message: None,
                status_detail: None,
            }),
        };
        let xml = response.to_string().ok()?;
        redirect::encode(
            &target,
            "SAMLResponse",
            &xml,
            logout.relay_state.as_deref(),
            self.signer(),
        )
        .ok()
    }
}

/// A signed Response must say where it is going (SAML Profiles §4.1.4.5), or it could be
/// replayed at any SP that trusts this IdP; when it says, it must be this ACS.
/// A response ready for verification.
enum Opened {
    /// As received (its assertion was not encrypted).
    Plain(String),
    /// With its assertion decrypted in place; `envelope_verified` when the response was
    /// signed and that signature verified over the encrypted form.
    Decrypted {
        xml: String,
        envelope_verified: bool,
    },
}

/// Runs CPU-heavy XML work (signatures, decryption) on the blocking pool, at most one task
/// per core at a time; a queue that stays full answers `Busy` rather than piling up.
async fn on_verify_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, SamlError> {
    let permit = tokio::time::timeout(VERIFY_QUEUE_WAIT, VERIFY_SLOTS.acquire())
        .await
        .map_err(|_| SamlError::Busy)?
        .map_err(|_| SamlError::Busy)?;
    let done = tokio::task::spawn_blocking(work).await;
    drop(permit);
    match done {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(SamlError::Verify(e)),
        Err(join) => {
            tracing::error!(error = %join, "SAML verification task failed");
            Err(SamlError::Verify("verifier crashed".into()))
        }
    }
}

fn destination_is(facts: &GuardFacts, sp: &SpEndpoints) -> Result<(), SamlError> {
    match &facts.destination {
        Some(destination) if *destination != sp.acs_url => {
            Err(SamlError::Destination(destination.clone()))
        }
        None if facts.root_signed => Err(SamlError::NoDestination),
        _ => Ok(()),
    }
}

/// The outer status is part of what the IdP said, signed or not: a failure status around a
/// valid assertion (pasted from another response) signs no one in.
fn status_is_success(facts: &GuardFacts) -> Result<(), SamlError> {
    if facts.status.first().map(String::as_str) != Some(STATUS_SUCCESS) {
        return Err(SamlError::ResponseStatus(facts.status.join(" / ")));
    }
    Ok(())
}

/// The envelope's Issuer, when present, must be the assertion's — and the IdP's.
fn envelope_issuer_is(facts: &GuardFacts, md: &IdpMetadata) -> Result<(), SamlError> {
    if let Some(outer) = &facts.root_issuer {
        if facts.assertion_issuer.as_deref() != Some(outer.as_str()) || *outer != md.entity_id {
            return Err(SamlError::IssuerMismatch(outer.clone()));
        }
    }
    Ok(())
}

/// A solicited response answers this login's request; an unsolicited one answers none.
fn in_response_to(facts: &GuardFacts, request_id: Option<&str>) -> Result<(), SamlError> {
    match request_id {
        Some(id) if facts.in_response_to.as_deref().is_some_and(|r| r != id) => {
            Err(SamlError::WrongInResponseTo)
        }
        None if facts.in_response_to.is_some() || facts.assertion_in_response_to => {
            Err(SamlError::StrayInResponseTo)
        }
        _ => Ok(()),
    }
}

fn assertion_issuer_is(assertion: &Assertion, md: &IdpMetadata) -> Result<(), SamlError> {
    if assertion.issuer.value.as_deref() != Some(md.entity_id.as_str()) {
        return Err(SamlError::IssuerMismatch(
            assertion.issuer.value.clone().unwrap_or_default(),
        ));
    }
    Ok(())
}

/// A `LogoutRequest` in schema order: Issuer, NameID (exactly as received: format and
/// qualifiers, which strict IdPs compare), SessionIndex.
fn logout_request_xml(
    id: &str,
    destination: &str,
    issuer: &str,
    subject: &SamlSubject,
    now: chrono::DateTime<Utc>,
) -> String {
    use quick_xml::escape::escape;
    let attribute = |name: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| format!(" {name}=\"{}\"", escape(v)))
            .unwrap_or_default()
    };
    let format = format!(
        "{}{}{}",
        attribute("NameQualifier", &subject.name_qualifier),
        attribute("SPNameQualifier", &subject.sp_name_qualifier),
        attribute("Format", &subject.format)
    );
    let session_index = subject
        .session_index
        .as_deref()
        .map(|s| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", escape(s)))
        .unwrap_or_default();
    format!(
        "<samlp:LogoutRequest xmlns:samlp=\"{PROTOCOL_NS}\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" \
         ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\">\
         <saml:Issuer>{}</saml:Issuer><saml:NameID{format}>{}</saml:NameID>{session_index}</samlp:LogoutRequest>",
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        escape(destination),
        escape(issuer),
        escape(&subject.name_id),
    )
}

fn issuer(entity_id: &str) -> Issuer {
    Issuer {
        value: Some(entity_id.to_string()),
        ..Issuer::default()
    }
}

/// `_` + 40 hex digits: 160 random bits, a valid XML ID.
fn random_id() -> Option<String> {
    let mut bytes = [0u8; 20];
    openssl::rand::rand_bytes(&mut bytes).ok()?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("_{hex}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn request_ids_have_160_random_bits() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert_eq!(a.len(), 41);
        assert!(a.starts_with('_'));
        assert_ne!(a, b);
    }
}
