//! `[idp.<name>] kind = "saml"`: IdP metadata (file, URL or the Okta preset), the SP's own
//! entity ID and signing key, and how assertion attributes become the session's identity.
//!
//! A metadata file is checked here, so `portcullis check` fails on metadata the gateway would
//! refuse at start (no strong signing certificate, no SSO endpoint, DOCTYPE…).

use super::{FileIdp, IdpCompiler};
use crate::config::files::{resolve, secret_file_exposure};
use crate::idp::saml::metadata::IdpMetadata;
use crate::secret::SecretBytes;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Default cap on a posted `SAMLResponse` (checked before decoding).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Where the IdP's metadata comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataSource {
    /// A local file, read (and checked) when the configuration is loaded.
    File {
        /// Resolved path.
        path: PathBuf,
        /// The document.
        xml: String,
    },
    /// Fetched at start and refreshed; the last good copy is kept.
    Url(String),
}

/// How AuthnRequests go to the IdP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoBinding {
    /// HTTP-Redirect: the request in the query, signed over the query octets.
    Redirect,
    /// HTTP-POST: an auto-submitted form, the request signed as XML.
    Post,
}

/// The hash of the signatures this SP makes (AuthnRequests, logout messages), and of the
/// digest inside an XML signature. SHA-256 is the floor; no SHA-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureHash {
    /// RSA-SHA256 / ECDSA-SHA256 (what every IdP accepts).
    #[default]
    Sha256,
    /// RSA-SHA384 / ECDSA-SHA384.
    Sha384,
    /// RSA-SHA512 / ECDSA-SHA512.
    Sha512,
}

/// A validated SAML IdP.
#[derive(Debug, Clone, PartialEq)]
pub struct SamlIdpConfig {
    /// The IdP's metadata.
    pub metadata: MetadataSource,
    /// How often metadata from a URL is fetched again.
    pub metadata_refresh: Duration,
    /// The SP entity ID; default: `<app origin>/.portcullis/saml/metadata`, one per app host.
    pub sp_entity_id: Option<String>,
    /// PEM private key the SP signs AuthnRequests and logout messages with.
    pub sp_key: Option<SecretBytes>,
    /// PEM certificate of that key, published in the SP metadata.
    pub sp_cert_pem: Option<Vec<u8>>,
    /// The certificate of the SP's next key, published beside the current one ahead of a
    /// switch (so the IdP trusts both while it rolls over).
    pub sp_next_cert_pem: Option<Vec<u8>>,
    /// The next key itself (`sp_next_key_file`): assertions encrypted to the next
    /// certificate are decrypted with it while the IdP rolls over.
    pub sp_next_key: Option<SecretBytes>,
    /// Refuse assertions that are not encrypted (`require_encrypted_assertions`).
    pub require_encrypted_assertions: bool,
    /// Accept RSA-SHA1 signatures and SHA-1 digests from this IdP (`allow_sha1`; warned).
    pub allow_sha1: bool,
    /// The binding for AuthnRequests (`authn_request_binding`); `None`: HTTP-Redirect when
    /// the IdP's metadata offers it, else HTTP-POST.
    pub authn_request_binding: Option<SsoBinding>,
    /// The hash of what this SP signs (`signature_hash`).
    pub signature_hash: SignatureHash,
    /// Sign AuthnRequests and logout messages (default: when a key is configured).
    pub sign_requests: bool,
    /// Require the assertion itself to be signed, not only the response around it.
    pub want_assertions_signed: bool,
    /// Tolerated clock difference for every time check.
    pub clock_skew: Duration,
    /// Largest posted `SAMLResponse` accepted, in bytes.
    pub max_response_bytes: usize,
    /// NameID format asked for in AuthnRequests.
    pub name_id_format: Option<String>,
    /// Attribute names holding the email, tried in order; the NameID counts when its
    /// format is emailAddress.
    pub email_attributes: Vec<String>,
    /// Attribute names holding the display name, tried in order.
    pub name_attributes: Vec<String>,
    /// The multi-valued attribute holding group names.
    pub groups_attributes: Vec<String>,
    /// Other attributes kept in the session (for identity headers).
    pub extra_attributes: Vec<String>,
    /// Extra CA certificates (PEM) for fetching metadata over TLS.
    pub ca_pem: Option<Vec<u8>>,
    /// Where the browser goes after single logout; default: the signed-out page.
    pub post_logout_redirect_uri: Option<String>,
}

impl SamlIdpConfig {
    /// Metadata parsed from the configured file, if the source is a file.
    pub fn file_metadata(&self) -> Option<&str> {
        match &self.metadata {
            MetadataSource::File { xml, .. } => Some(xml),
            MetadataSource::Url(_) => None,
        }
    }
}

impl IdpCompiler<'_> {
    /// OpenID Connect keys make no sense on a SAML IdP: say so rather than ignore them.
    pub(super) fn refuse_oidc_keys(&mut self, file: &FileIdp) {
        let oidc_only: [(&str, Option<&Spanned<String>>); 10] = [
            ("issuer", file.issuer.as_ref()),
            ("okta_domain", file.okta_domain.as_ref()),
            ("authorization_server", file.authorization_server.as_ref()),
            ("client_id", file.client_id.as_ref()),
            ("client_secret", file.client_secret.as_ref()),
            ("client_secret_file", file.client_secret_file.as_ref()),
            ("client_secret_env", file.client_secret_env.as_ref()),
            ("groups_scope", file.groups_scope.as_ref()),
            ("groups_claim", file.groups_claim.as_ref()),
            ("token_auth", file.token_auth.as_ref()),
        ];
        for (key, value) in oidc_only {
            if let Some(v) = value {
                self.error(
                    v,
                    format!("`{key}` is an OpenID Connect setting; this IdP is `kind = \"saml\"`"),
                );
            }
        }
        if file.scopes.is_some()
            || file.userinfo
            || !file.auth_params.is_empty()
            || file.allow_insecure_issuer
        {
            self.error(&file.kind, "scopes, userinfo, auth_params and allow_insecure_issuer are OpenID Connect settings; this IdP is `kind = \"saml\"`");
        }
        if let Some(first) = file.claims.first() {
            self.error(first, "`claims` is for OpenID Connect; a SAML IdP keeps extra values with `attributes = [...]`");
        }
    }

    /// SAML keys on an OpenID Connect IdP are a mistake worth naming.
    pub(super) fn refuse_saml_keys(&mut self, file: &FileIdp) {
        let saml_only: [(&str, Option<&Spanned<String>>); 13] = [
            ("metadata_file", file.metadata_file.as_ref()),
            ("metadata_url", file.metadata_url.as_ref()),
            ("okta_metadata_url", file.okta_metadata_url.as_ref()),
            ("sp_entity_id", file.sp_entity_id.as_ref()),
            ("sp_key_file", file.sp_key_file.as_ref()),
            ("sp_cert_file", file.sp_cert_file.as_ref()),
            ("sp_next_cert_file", file.sp_next_cert_file.as_ref()),
            ("sp_next_key_file", file.sp_next_key_file.as_ref()),
            ("name_id_format", file.name_id_format.as_ref()),
            ("email_attribute", file.email_attribute.as_ref()),
            ("name_attribute", file.name_attribute.as_ref()),
            ("groups_attribute", file.groups_attribute.as_ref()),
            ("signature_hash", file.signature_hash.as_ref()),
        ];
        for (key, value) in saml_only {
            if let Some(v) = value {
                self.error(
                    v,
                    format!("`{key}` is a SAML setting; this IdP is `kind = \"oidc\"`"),
                );
            }
        }
        if let Some(first) = file.attributes.first() {
            self.error(first, "`attributes` is for SAML; an OpenID Connect IdP keeps extra values with `claims = [...]`");
        }
        if file.want_assertions_signed.is_some()
            || file.sign_requests.is_some()
            || file.require_encrypted_assertions.is_some()
            || file.allow_sha1.is_some()
            || file.authn_request_binding.is_some()
            || file.max_response_size.is_some()
            || file.metadata_refresh.is_some()
            || file.allow_insecure_metadata_url
        {
            self.error(&file.kind, "want_assertions_signed, sign_requests, require_encrypted_assertions, allow_sha1, authn_request_binding, max_response_size, metadata_refresh and allow_insecure_metadata_url are SAML settings; this IdP is `kind = \"oidc\"`");
        }
    }

    pub(super) fn compile_saml(&mut self, file: &FileIdp, base: &Path) -> Option<SamlIdpConfig> {
        let metadata = self.metadata_source(file, base)?;
        let sp_entity_id = file.sp_entity_id.as_ref().and_then(|e| {
            let text = e.get_ref().trim();
            if text.is_empty() || text.len() > 1024 || text.chars().any(char::is_control) {
                self.error(
                    e,
                    "sp_entity_id must be a non-empty URI (e.g. `https://wiki.corp.example/saml`)",
                );
                None
            } else {
                Some(text.to_string())
            }
        });
        let (sp_key, sp_cert_pem) = self.sp_key_pair(file, base);
        let (sp_next_key, sp_next_cert_pem) = match &file.sp_next_key_file {
            Some(k) if sp_cert_pem.is_none() => {
                self.error(
                    k,
                    "sp_next_key_file needs sp_key_file and sp_cert_file (the key in use now)",
                );
                (None, None)
            }
            Some(_) => self.key_pair(
                base,
                ("sp_next_key_file", file.sp_next_key_file.as_ref()),
                ("sp_next_cert_file", file.sp_next_cert_file.as_ref()),
            ),
            None => (None, self.sp_next_cert(file, base, sp_cert_pem.is_some())),
        };
        let allow_sha1 = match &file.allow_sha1 {
            Some(flag) if *flag.get_ref() => {
                self.warning(flag, "allow_sha1: this IdP's SHA-1 signatures are accepted; SHA-1 collisions are practical, so switch the IdP to RSA-SHA256 and remove this");
                true
            }
            _ => false,
        };
        let authn_request_binding =
            file.authn_request_binding
                .as_ref()
                .and_then(|b| match b.get_ref().as_str() {
                    "redirect" => Some(SsoBinding::Redirect),
                    "post" => Some(SsoBinding::Post),
                    other => {
                        self.error(
                            b,
                            format!(
                            "authn_request_binding must be \"redirect\" or \"post\", not `{other}`"
                        ),
                        );
                        None
                    }
                });
        let signature_hash = file
            .signature_hash
            .as_ref()
            .and_then(|h| match h.get_ref().as_str() {
                "sha256" => Some(SignatureHash::Sha256),
                "sha384" => Some(SignatureHash::Sha384),
                "sha512" => Some(SignatureHash::Sha512),
                other => {
                    self.error(
                        h,
                        format!("signature_hash must be \"sha256\", \"sha384\" or \"sha512\", not `{other}` (SHA-1 is never used to sign)"),
                    );
                    None
                }
            })
            .unwrap_or_default();
        let has_key = sp_key.is_some();
        let require_encrypted_assertions = self.needs_sp_key(
            file.require_encrypted_assertions.as_ref(),
            has_key,
            "require_encrypted_assertions = true needs sp_key_file and sp_cert_file (the IdP encrypts to that certificate)",
        )
        .unwrap_or(false);
        let sign_requests = self
            .needs_sp_key(
                file.sign_requests.as_ref(),
                has_key,
                "sign_requests = true needs sp_key_file and sp_cert_file",
            )
            .unwrap_or(has_key);
        let max_response_bytes = match &file.max_response_size {
            Some(n) if *n.get_ref() < 4096 || *n.get_ref() > 16 * 1024 * 1024 => {
                self.error(
                    n,
                    "max_response_size must be between 4096 and 16777216 bytes",
                );
                DEFAULT_MAX_RESPONSE_BYTES
            }
            Some(n) => usize::try_from(*n.get_ref()).unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            None => DEFAULT_MAX_RESPONSE_BYTES,
        };
        let attribute = |a: &Option<Spanned<String>>, defaults: &[&str]| -> Vec<String> {
            match a {
                Some(v) => vec![v.get_ref().clone()],
                None => defaults.iter().map(|s| s.to_string()).collect(),
            }
        };
        let email_attributes = attribute(
            &file.email_attribute,
            &[
                "email",
                "mail",
                "urn:oid:0.9.2342.19200300.100.1.3",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            ],
        );
        let name_attributes = attribute(
            &file.name_attribute,
            &[
                "displayName",
                "name",
                "urn:oid:2.16.840.1.113730.3.1.241",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            ],
        );
        // Okta and most IdPs say `groups`; ADFS sends claim URIs, Shibboleth `isMemberOf`.
        let groups_attributes = attribute(
            &file.groups_attribute,
            &[
                "groups",
                "memberOf",
                "isMemberOf",
                "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
                "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
                "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
            ],
        );
        let mut extra_attributes = Vec::new();
        for a in &file.attributes {
            let name = a.get_ref();
            if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
                self.error(a, format!("attribute name `{name}` is not valid"));
            } else {
                extra_attributes.push(name.clone());
            }
        }
        let post_logout_redirect_uri = self.post_logout_redirect_uri(file);
        let ca_pem = self.ca_pem(file, base);
        Some(SamlIdpConfig {
            metadata,
            metadata_refresh: file
                .metadata_refresh
                .map_or(Duration::from_secs(3600), |d| {
                    d.0.max(Duration::from_secs(60))
                }),
            sp_entity_id,
            sp_key,
            sp_cert_pem,
            sp_next_cert_pem,
            sp_next_key,
            require_encrypted_assertions,
            allow_sha1,
            authn_request_binding,
            signature_hash,
            sign_requests,
            want_assertions_signed: file
                .want_assertions_signed
                .as_ref()
                .is_none_or(|w| *w.get_ref()),
            clock_skew: file.clock_skew.map_or(Duration::from_secs(60), |d| d.0),
            max_response_bytes,
            name_id_format: file.name_id_format.as_ref().map(|f| f.get_ref().clone()),
            email_attributes,
            name_attributes,
            groups_attributes,
            extra_attributes,
            ca_pem,
            post_logout_redirect_uri,
        })
    }

    fn metadata_source(&mut self, file: &FileIdp, base: &Path) -> Option<MetadataSource> {
        let given = [
            file.metadata_file.as_ref(),
            file.metadata_url.as_ref(),
            file.okta_metadata_url.as_ref(),
        ];
        let set: Vec<&Spanned<String>> = given.into_iter().flatten().collect();
        let Some(&only) = set.first().filter(|_| set.len() == 1) else {
            self.error(
                &file.kind,
                "set exactly one of metadata_file, metadata_url or okta_metadata_url",
            );
            return None;
        };
        if let Some(name) = &file.metadata_file {
            let path = resolve(base, name.get_ref());
            let xml = match std::fs::read_to_string(&path) {
                Ok(xml) => xml,
                Err(e) => {
                    self.error(
                        name,
                        format!("cannot read metadata file `{}`: {e}", path.display()),
                    );
                    return None;
                }
            };
            return match IdpMetadata::parse(&xml) {
                Ok(md) => {
                    for why in &md.ignored_keys {
                        self.warning(
                            name,
                            format!("metadata `{}`: ignoring {why}", path.display()),
                        );
                    }
                    Some(MetadataSource::File { path, xml })
                }
                Err(e) => {
                    self.error(name, format!("metadata file `{}`: {e}", path.display()));
                    None
                }
            };
        }
        let text = only.get_ref().trim();
        let okta = file.okta_metadata_url.is_some();
        match url::Url::parse(text) {
            Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {}
            Ok(u) if u.scheme() == "http" && file.allow_insecure_metadata_url && !okta => {
                self.warning(only, "allow_insecure_metadata_url: anyone on the path can swap the IdP's signing keys; for tests and demos only");
            }
            _ => {
                let hint = if okta {
                    "okta_metadata_url must be the https metadata URL from the Okta app's Sign On tab (e.g. `https://dev-123.okta.com/app/exk.../sso/saml/metadata`)"
                } else {
                    "metadata_url must be an https URL (allow_insecure_metadata_url = true permits http for tests and demos)"
                };
                self.error(only, hint);
                return None;
            }
        }
        Some(MetadataSource::Url(text.to_string()))
    }

    /// A yes/no setting that, when yes, needs the SP's key: its value (`false`, with `error`
    /// named at its line, when the key is missing), or `None` when not set.
    fn needs_sp_key(
        &mut self,
        flag: Option<&Spanned<bool>>,
        has_key: bool,
        error: &str,
    ) -> Option<bool> {
        let flag = flag?;
        if *flag.get_ref() && !has_key {
            self.error(flag, error);
            return Some(false);
        }
        Some(*flag.get_ref())
    }

    /// `sp_next_cert_file`: the next SP certificate, published ahead of a key switch.
    fn sp_next_cert(&mut self, file: &FileIdp, base: &Path, has_current: bool) -> Option<Vec<u8>> {
        let c = file.sp_next_cert_file.as_ref()?;
        if !has_current {
            self.error(
                c,
                "sp_next_cert_file needs sp_key_file and sp_cert_file (the key in use now)",
            );
            return None;
        }
        let path = resolve(base, c.get_ref());
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) => {
                self.error(
                    c,
                    format!("cannot read sp_next_cert_file `{}`: {e}", path.display()),
                );
                return None;
            }
        };
        match openssl::x509::X509::from_pem(&pem) {
            Ok(cert) => {
                if days_until(cert.not_after()).is_some_and(|d| d < 0) {
                    self.error(
                        c,
                        format!("sp_next_cert_file `{}` has expired", path.display()),
                    );
                    return None;
                }
                Some(pem)
            }
            Err(_) => {
                self.error(
                    c,
                    format!(
                        "sp_next_cert_file `{}` is not a PEM certificate",
                        path.display()
                    ),
                );
                None
            }
        }
    }

    /// `sp_key_file` + `sp_cert_file`: the SP's key in use.
    fn sp_key_pair(
        &mut self,
        file: &FileIdp,
        base: &Path,
    ) -> (Option<SecretBytes>, Option<Vec<u8>>) {
        self.key_pair(
            base,
            ("sp_key_file", file.sp_key_file.as_ref()),
            ("sp_cert_file", file.sp_cert_file.as_ref()),
        )
    }

    /// A private key and its certificate, each named by its setting: both readable, both PEM,
    /// belonging together, the certificate not expired (and warned about near its end).
    fn key_pair(
        &mut self,
        base: &Path,
        (key_setting, key_file): (&str, Option<&Spanned<String>>),
        (cert_setting, cert_file): (&str, Option<&Spanned<String>>),
    ) -> (Option<SecretBytes>, Option<Vec<u8>>) {
        match (key_file, cert_file) {
            (None, None) => (None, None),
            (Some(k), None) => {
                self.error(
                    k,
                    format!("{key_setting} needs {cert_setting} (the certificate published in the SP metadata)"),
                );
                (None, None)
            }
            (None, Some(c)) => {
                self.error(c, format!("{cert_setting} needs {key_setting}"));
                (None, None)
            }
            (Some(k), Some(c)) => {
                let key_path = resolve(base, k.get_ref());
                let cert_path = resolve(base, c.get_ref());
                if let Some(warning) = secret_file_exposure(&key_path) {
                    self.warning(k, warning);
                }
                let key = match std::fs::read(&key_path) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        self.error(
                            k,
                            format!("cannot read {key_setting} `{}`: {e}", key_path.display()),
                        );
                        return (None, None);
                    }
                };
                let cert = match std::fs::read(&cert_path) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        self.error(
                            c,
                            format!("cannot read {cert_setting} `{}`: {e}", cert_path.display()),
                        );
                        return (None, None);
                    }
                };
                let parsed_key = openssl::pkey::PKey::private_key_from_pem(&key);
                let parsed_cert = openssl::x509::X509::from_pem(&cert);
                match (parsed_key, parsed_cert) {
                    (Err(_), _) => {
                        self.error(
                            k,
                            format!(
                                "{key_setting} `{}` is not a PEM private key",
                                key_path.display()
                            ),
                        );
                        (None, None)
                    }
                    (_, Err(_)) => {
                        self.error(
                            c,
                            format!(
                                "{cert_setting} `{}` is not a PEM certificate",
                                cert_path.display()
                            ),
                        );
                        (None, None)
                    }
                    (Ok(pkey), Ok(x509)) => {
                        let matches = x509
                            .public_key()
                            .is_ok_and(|public| public.public_eq(&pkey));
                        if !matches {
                            self.error(
                                c,
                                format!("{cert_setting} does not belong to {key_setting}"),
                            );
                            return (None, None);
                        }
                        if let Some(days) = days_until(x509.not_after()) {
                            if days < 0 {
                                self.error(c, format!("{cert_setting} `{}` expired {} days ago: IdPs refuse what it signs", cert_path.display(), -days));
                                return (None, None);
                            } else if days < EXPIRY_WARNING_DAYS {
                                self.warning(c, format!("{cert_setting} `{}` expires in {days} days: publish its successor in the IdP now", cert_path.display()));
                            }
                        }
                        (Some(SecretBytes::new(key)), Some(cert))
                    }
                }
            }
        }
    }
}

/// A certificate that expires sooner than this is warned about (`check`, start, `/readyz`).
pub const EXPIRY_WARNING_DAYS: i32 = 30;

/// Whole days from now until `moment` (negative once past).
pub fn days_until(moment: &openssl::asn1::Asn1TimeRef) -> Option<i32> {
    let now = openssl::asn1::Asn1Time::days_from_now(0).ok()?;
    now.diff(moment).ok().map(|d| d.days)
}
