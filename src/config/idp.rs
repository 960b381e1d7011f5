//! `[idp.<name>]` tables of `portcullis.toml`: the identity providers apps may name.
//!
//! Owns the on-disk shape and its compilation into [`IdpConfig`], including the Okta preset
//! (issuer derived from `okta_domain` + `authorization_server`) and reading the client secret
//! from a file or the environment. Talking to the provider lives in `idp`.

use super::duration::ConfigDuration;
use super::files::{load_ca_file, resolve, secret_file_exposure};
use super::problem::{Problem, SourceFile};
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

mod saml;
pub use saml::{
    days_until, MetadataSource, SamlIdpConfig, SignatureHash, SsoBinding, EXPIRY_WARNING_DAYS,
};

/// How often refreshed claims are re-read by default (`refresh = true`).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Shortest refresh interval accepted.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Parameters the login flow sets itself; `auth_params` may not override them.
const RESERVED_AUTH_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "request",
    "request_uri",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileIdp {
    kind: Spanned<String>,
    issuer: Option<Spanned<String>>,
    okta_domain: Option<Spanned<String>>,
    authorization_server: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret: Option<Spanned<String>>,
    client_secret_file: Option<Spanned<String>>,
    client_secret_env: Option<Spanned<String>>,
    scopes: Option<Spanned<Vec<Spanned<String>>>>,
    groups_scope: Option<Spanned<String>>,
    groups_claim: Option<Spanned<String>>,
    #[serde(default)]
    auth_params: BTreeMap<String, Spanned<String>>,
    token_auth: Option<Spanned<String>>,
    #[serde(default)]
    userinfo: bool,
    #[serde(default)]
    claims: Vec<Spanned<String>>,
    clock_skew: Option<ConfigDuration>,
    #[serde(default)]
    refresh: bool,
    refresh_interval: Option<Spanned<ConfigDuration>>,
    #[serde(default)]
    allow_insecure_issuer: bool,
    post_logout_redirect_uri: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    health_check_interval: Option<Spanned<ConfigDuration>>,
    timeout: Option<Spanned<ConfigDuration>>,
    // SAML (kind = "saml"); see `saml.rs`.
    metadata_file: Option<Spanned<String>>,
    metadata_url: Option<Spanned<String>>,
    okta_metadata_url: Option<Spanned<String>>,
    metadata_refresh: Option<ConfigDuration>,
    #[serde(default)]
    allow_insecure_metadata_url: bool,
    sp_entity_id: Option<Spanned<String>>,
    sp_key_file: Option<Spanned<String>>,
    sp_cert_file: Option<Spanned<String>>,
    sp_next_cert_file: Option<Spanned<String>>,
    sp_next_key_file: Option<Spanned<String>>,
    require_encrypted_assertions: Option<Spanned<bool>>,
    allow_sha1: Option<Spanned<bool>>,
    authn_request_binding: Option<Spanned<String>>,
    signature_hash: Option<Spanned<String>>,
    sign_requests: Option<Spanned<bool>>,
    want_assertions_signed: Option<Spanned<bool>>,
    max_response_size: Option<Spanned<u64>>,
    name_id_format: Option<Spanned<String>>,
    email_attribute: Option<Spanned<String>>,
    name_attribute: Option<Spanned<String>>,
    groups_attribute: Option<Spanned<String>>,
    #[serde(default)]
    attributes: Vec<Spanned<String>>,
    // Signals that end sessions from outside the browser.
    universal_logout: Option<Spanned<FileSignalSource>>,
    shared_signals: Option<Spanned<FileSignalSource>>,
}

/// `[idp.<name>.universal_logout]` / `[idp.<name>.shared_signals]`: who signs the requests
/// or events, with which keys, for which audience.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSignalSource {
    issuer: Option<Spanned<String>>,
    jwks_uri: Option<Spanned<String>>,
    audience: Spanned<String>,
}

/// Where signed session signals come from: Okta Universal Logout's Global Token Revocation
/// requests, or a Shared Signals Framework transmitter's security event tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalSource {
    /// The `iss` the signed JWTs carry.
    pub issuer: String,
    /// Where the signing keys are published; `None`: the IdP's own JWKS (OpenID Connect).
    pub jwks_uri: Option<String>,
    /// The `aud` they must carry (this gateway's endpoint URL or stream audience).
    pub audience: String,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    /// HTTP Basic with client id and secret (the OpenID Connect default).
    ClientSecretBasic,
    /// Client id and secret in the form body.
    ClientSecretPost,
}

/// A validated OpenID Connect provider.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcIdpConfig {
    /// Issuer identifier, exactly as the provider's discovery document states it.
    pub issuer: String,
    /// Client id registered at the provider.
    pub client_id: String,
    /// Client secret (never logged).
    pub client_secret: Secret,
    /// Scopes requested; always includes `openid`.
    pub scopes: Vec<String>,
    /// Extra authorization request parameters (e.g. `prompt`, `acr_values`).
    pub auth_params: Vec<(String, String)>,
    /// Token endpoint client authentication.
    pub token_auth: TokenAuth,
    /// Also call the userinfo endpoint after login.
    pub userinfo: bool,
    /// The claim holding group names (`groups`; some IdPs use a namespaced URL).
    pub groups_claim: String,
    /// Claims besides the standard ones to keep in the session (for identity headers).
    pub extra_claims: Vec<String>,
    /// Tolerated clock difference for `exp` and `iat`.
    pub clock_skew: Duration,
    /// Refresh tokens (`refresh = true`, asks for `offline_access`): claims are re-read this
    /// often, and before a kept access token expires; `None` when off.
    pub refresh_interval: Option<Duration>,
    /// Plain-HTTP issuer allowed (tests and demo only).
    pub allow_insecure_issuer: bool,
    /// Where the provider sends the browser after logout; default: the gateway's
    /// `/.portcullis/logged-out` page on the app's host.
    pub post_logout_redirect_uri: Option<String>,
    /// Extra CA certificates (PEM) trusted for the provider's TLS, e.g. an internal CA.
    pub ca_pem: Option<Vec<u8>>,
}

/// One configured identity provider.
#[derive(Debug, Clone, PartialEq)]
pub struct IdpConfig {
    /// The name apps use in `idp = "..."`.
    pub name: String,
    /// Protocol settings.
    pub protocol: IdpProtocol,
    /// How often the IdP's reachability is checked while it answers (faster, with backoff,
    /// while it does not).
    pub health_check_interval: Duration,
    /// The longest one back-channel call to the IdP may take (token, JWKS, discovery,
    /// metadata, userinfo): an IdP that hangs costs the waiting user this long, then a page.
    pub timeout: Duration,
    /// Okta Universal Logout (Global Token Revocation requests), when configured.
    pub universal_logout: Option<SignalSource>,
    /// A Shared Signals Framework transmitter pushing CAEP events, when configured.
    pub shared_signals: Option<SignalSource>,
}

impl IdpConfig {
    /// Does a session from this IdP keep its tokens (OpenID Connect with refresh)?
    pub fn keeps_tokens(&self) -> bool {
        matches!(&self.protocol, IdpProtocol::Oidc(o) if o.refresh_interval.is_some())
    }
}

/// Default [`IdpConfig::timeout`].
pub const DEFAULT_IDP_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`IdpConfig::health_check_interval`]: one small GET per IdP every half minute.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The protocol an IdP speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpKind {
    /// OpenID Connect.
    Oidc,
    /// SAML 2.0.
    Saml,
}

/// An app's IdP, resolved when its policy compiled: a name the gateway config defines, and
/// the protocol it speaks. Only the compiler makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpRef {
    name: std::sync::Arc<str>,
    kind: IdpKind,
}

impl IdpRef {
    /// The reference to a configured IdP.
    pub(crate) fn of(config: &IdpConfig) -> Self {
        Self {
            name: crate::intern::intern(&config.name),
            kind: match config.protocol {
                IdpProtocol::Oidc(_) => IdpKind::Oidc,
                IdpProtocol::Saml(_) => IdpKind::Saml,
            },
        }
    }

    /// The IdP's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its protocol.
    pub fn kind(&self) -> IdpKind {
        self.kind
    }
}

/// The protocol an IdP speaks, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum IdpProtocol {
    /// OpenID Connect (authorization code + PKCE).
    Oidc(OidcIdpConfig),
    /// SAML 2.0 (Web Browser SSO profile).
    Saml(SamlIdpConfig),
}

impl IdpConfig {
    /// The OpenID Connect settings, when this is an OIDC provider.
    pub fn oidc(&self) -> Option<&OidcIdpConfig> {
        match &self.protocol {
            IdpProtocol::Oidc(o) => Some(o),
            IdpProtocol::Saml(_) => None,
        }
    }

    /// The SAML settings, when this is a SAML IdP.
    pub fn saml(&self) -> Option<&SamlIdpConfig> {
        match &self.protocol {
            IdpProtocol::Saml(s) => Some(s),
            IdpProtocol::Oidc(_) => None,
        }
    }

    /// `oidc` or `saml`.
    pub fn kind(&self) -> &'static str {
        match &self.protocol {
            IdpProtocol::Oidc(_) => "oidc",
            IdpProtocol::Saml(_) => "saml",
        }
    }

    /// Claims or attributes (besides the standard ones) kept in the session.
    pub fn extra_claims(&self) -> &[String] {
        match &self.protocol {
            IdpProtocol::Oidc(o) => &o.extra_claims,
            IdpProtocol::Saml(s) => &s.extra_attributes,
        }
    }
}

/// Compiles every `[idp.*]` table; problems carry file positions.
pub(super) fn compile_idps(
    src: &SourceFile<'_>,
    base: &Path,
    tables: &BTreeMap<String, FileIdp>,
    problems: &mut Vec<Problem>,
) -> Vec<IdpConfig> {
    let mut out = Vec::new();
    for (name, file) in tables {
        let mut c = IdpCompiler {
            src,
            name,
            problems: Vec::new(),
        };
        let compiled = c.compile(file, base);
        let health_check_interval = c.duration_within(
            file.health_check_interval.as_ref(),
            (Duration::from_secs(1), Duration::from_secs(3600)),
            DEFAULT_HEALTH_CHECK_INTERVAL,
            "health_check_interval must be between 1s and 1h",
        );
        let timeout = c.duration_within(
            file.timeout.as_ref(),
            (Duration::from_secs(1), Duration::from_secs(60)),
            DEFAULT_IDP_TIMEOUT,
            "timeout must be between 1s and 60s",
        );
        let default_issuer = match &compiled {
            Some(IdpProtocol::Oidc(o)) => Some(o.issuer.clone()),
            _ => None,
        };
        let universal_logout = file
            .universal_logout
            .as_ref()
            .and_then(|s| c.signal_source(s, "universal_logout", default_issuer.as_deref()));
        let shared_signals = file
            .shared_signals
            .as_ref()
            .and_then(|s| c.signal_source(s, "shared_signals", default_issuer.as_deref()));
        let failed = c.problems.iter().any(Problem::is_error);
        problems.extend(c.problems);
        if let (Some(protocol), false) = (compiled, failed) {
            out.push(IdpConfig {
                name: name.clone(),
                protocol,
                health_check_interval,
                timeout,
                universal_logout,
                shared_signals,
            });
        }
    }
    out
}

struct IdpCompiler<'a> {
    src: &'a SourceFile<'a>,
    name: &'a str,
    problems: Vec<Problem>,
}

impl IdpCompiler<'_> {
    /// A duration setting within `(min, max)`, or `default` when absent; out of range is an
    /// error at its line (and `default` meanwhile).
    fn duration_within(
        &mut self,
        value: Option<&Spanned<ConfigDuration>>,
        (min, max): (Duration, Duration),
        default: Duration,
        message: &str,
    ) -> Duration {
        match value {
            Some(d) if d.get_ref().0 < min || d.get_ref().0 > max => {
                self.error(d, message);
                default
            }
            Some(d) => d.get_ref().0,
            None => default,
        }
    }

    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let message = format!("idp `{}`: {}", self.name, message.into());
        self.problems.push(self.src.error(Some(at.span()), message));
    }

    fn warning<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let message = format!("idp `{}`: {}", self.name, message.into());
        self.problems
            .push(self.src.warning(Some(at.span()), message));
    }

    fn compile(&mut self, file: &FileIdp, base: &Path) -> Option<IdpProtocol> {
        self.check_name(file);
        match file.kind.get_ref().as_str() {
            "oidc" => {
                self.refuse_saml_keys(file);
                self.compile_oidc(file, base).map(IdpProtocol::Oidc)
            }
            "saml" => {
                self.refuse_oidc_keys(file);
                self.compile_saml(file, base).map(IdpProtocol::Saml)
            }
            other => {
                self.error(
                    &file.kind,
                    format!("kind `{other}` is unknown; use `oidc` or `saml`"),
                );
                None
            }
        }
    }

    /// A signal source: the issuer (default: an OpenID Connect IdP's own), its keys (default:
    /// that IdP's JWKS; required otherwise) and the audience, as absolute URLs where they are
    /// fetched.
    fn signal_source(
        &mut self,
        table: &Spanned<FileSignalSource>,
        key: &str,
        default_issuer: Option<&str>,
    ) -> Option<SignalSource> {
        let s = table.get_ref();
        let issuer = match (&s.issuer, default_issuer) {
            (Some(i), _) if !i.get_ref().trim().is_empty() => i.get_ref().clone(),
            (None, Some(d)) => d.to_string(),
            _ => {
                self.error(
                    table,
                    format!("[{key}] needs `issuer` (the `iss` of the signed requests)"),
                );
                return None;
            }
        };
        let jwks_uri = match &s.jwks_uri {
            Some(u) => match url::Url::parse(u.get_ref()) {
                Ok(parsed) if parsed.scheme() == "https" || parsed.scheme() == "http" => {
                    Some(u.get_ref().clone())
                }
                _ => {
                    self.error(
                        u,
                        format!("[{key}] jwks_uri must be an absolute http(s) URL"),
                    );
                    return None;
                }
            },
            None if default_issuer.is_some()
                && s.issuer
                    .as_ref()
                    .is_none_or(|i| Some(i.get_ref().as_str()) == default_issuer) =>
            {
                None
            }
            None => {
                self.error(
                    table,
                    format!(
                        "[{key}] needs `jwks_uri`: where the issuer publishes its signing keys"
                    ),
                );
                return None;
            }
        };
        if s.audience.get_ref().trim().is_empty() {
            self.error(&s.audience, format!("[{key}] audience must not be empty"));
            return None;
        }
        Some(SignalSource {
            issuer,
            jwks_uri,
            audience: s.audience.get_ref().clone(),
        })
    }

    fn check_name(&mut self, file: &FileIdp) {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.error(
                &file.kind,
                "idp names use only letters, digits, `-` and `_`",
            );
        }
    }

    fn compile_oidc(&mut self, file: &FileIdp, base: &Path) -> Option<OidcIdpConfig> {
        let issuer = self.issuer(file)?;
        let client_id = match &file.client_id {
            Some(id) if !id.get_ref().trim().is_empty() => id.get_ref().clone(),
            Some(id) => {
                self.error(id, "client_id must not be empty");
                return None;
            }
            None => {
                self.error(&file.kind, "client_id is required");
                return None;
            }
        };
        let client_secret = self.client_secret(file, base)?;
        let mut scopes: Vec<String> = match &file.scopes {
            Some(list) => list.get_ref().iter().map(|s| s.get_ref().clone()).collect(),
            None => ["openid", "profile", "email"].map(String::from).to_vec(),
        };
        if let Some(list) = &file.scopes {
            if !scopes.iter().any(|s| s == "openid") {
                self.error(list, "scopes must include `openid`");
            }
            for s in list.get_ref() {
                if s.get_ref().is_empty() || s.get_ref().chars().any(|c| c <= ' ' || c == '"') {
                    self.error(
                        s,
                        format!("scope `{}` is not a valid scope token", s.get_ref()),
                    );
                }
            }
        }
        if let Some(g) = &file.groups_scope {
            if g.get_ref().is_empty() || g.get_ref().chars().any(|c| c <= ' ') {
                self.error(g, "groups_scope must be one scope token, e.g. `groups`");
            } else if !scopes.contains(g.get_ref()) {
                scopes.push(g.get_ref().clone());
            }
        }
        let mut auth_params = Vec::new();
        for (key, value) in &file.auth_params {
            if RESERVED_AUTH_PARAMS.contains(&key.as_str()) {
                self.error(
                    value,
                    format!("auth_params.{key} is set by the login flow itself and cannot be overridden"),
                );
            } else {
                auth_params.push((key.clone(), value.get_ref().clone()));
            }
        }
        let token_auth = match file.token_auth.as_ref().map(|t| (t, t.get_ref().as_str())) {
            None | Some((_, "client_secret_basic")) => TokenAuth::ClientSecretBasic,
            Some((_, "client_secret_post")) => TokenAuth::ClientSecretPost,
            Some((t, other)) => {
                self.error(
                    t,
                    format!("token_auth `{other}` is unknown; use `client_secret_basic` or `client_secret_post`"),
                );
                TokenAuth::ClientSecretBasic
            }
        };
        let mut extra_claims = Vec::new();
        for claim in &file.claims {
            let c = claim.get_ref();
            if c.is_empty() || c.len() > 128 || c.chars().any(char::is_control) {
                self.error(claim, format!("claim name `{c}` is not valid"));
            } else {
                extra_claims.push(c.clone());
            }
        }
        let groups_claim = match &file.groups_claim {
            Some(g) if g.get_ref().is_empty() || g.get_ref().chars().any(char::is_control) => {
                self.error(g, "groups_claim must name a claim, e.g. `groups`");
                String::new()
            }
            Some(g) => g.get_ref().clone(),
            None => "groups".to_string(),
        };
        let post_logout_redirect_uri = self.post_logout_redirect_uri(file);
        let ca_pem = self.ca_pem(file, base);
        let refresh_interval = match (&file.refresh_interval, file.refresh) {
            (Some(i), false) => {
                self.error(i, "refresh_interval needs refresh = true");
                None
            }
            (Some(i), true) if i.get_ref().0 < MIN_REFRESH_INTERVAL => {
                self.error(
                    i,
                    format!(
                        "refresh_interval must be at least {}s (each refresh is a call to the IdP)",
                        MIN_REFRESH_INTERVAL.as_secs()
                    ),
                );
                None
            }
            (Some(i), true) => Some(i.get_ref().0),
            (None, true) => Some(DEFAULT_REFRESH_INTERVAL),
            (None, false) => None,
        };
        if refresh_interval.is_some() && !scopes.iter().any(|s| s == "offline_access") {
            scopes.push("offline_access".to_string());
        }
        Some(OidcIdpConfig {
            ca_pem,
            issuer,
            client_id,
            client_secret,
            scopes,
            auth_params,
            token_auth,
            userinfo: file.userinfo,
            groups_claim,
            extra_claims,
            clock_skew: file.clock_skew.map_or(Duration::from_secs(60), |d| d.0),
            refresh_interval,
            allow_insecure_issuer: file.allow_insecure_issuer,
            post_logout_redirect_uri,
        })
    }

    /// Where the IdP sends the browser after logout, if set (an absolute http(s) URL).
    fn post_logout_redirect_uri(&mut self, file: &FileIdp) -> Option<String> {
        let u = file.post_logout_redirect_uri.as_ref()?;
        match url::Url::parse(u.get_ref()) {
            Ok(parsed) if matches!(parsed.scheme(), "https" | "http") => Some(u.get_ref().clone()),
            _ => {
                self.error(
                    u,
                    "post_logout_redirect_uri must be an absolute http(s) URL",
                );
                None
            }
        }
    }

    /// Extra CA certificates (PEM) for talking to the IdP, from `ca_file`.
    fn ca_pem(&mut self, file: &FileIdp, base: &Path) -> Option<Vec<u8>> {
        let f = file.ca_file.as_ref()?;
        match load_ca_file(&resolve(base, f.get_ref())) {
            Ok((pem, _)) => Some(pem),
            Err(message) => {
                self.error(f, message);
                None
            }
        }
    }

    /// The issuer, written out or derived from the Okta preset as Okta documents it: the org
    /// authorization server is `https://{domain}`, a custom one `https://{domain}/oauth2/{id}`.
    fn issuer(&mut self, file: &FileIdp) -> Option<String> {
        let issuer = match (&file.issuer, &file.okta_domain) {
            (Some(_), Some(domain)) => {
                self.error(domain, "set either issuer or okta_domain, not both");
                return None;
            }
            (None, None) => {
                self.error(&file.kind, "issuer (or okta_domain) is required");
                return None;
            }
            (Some(issuer), None) => {
                if let Some(a) = &file.authorization_server {
                    self.error(a, "authorization_server goes with okta_domain");
                }
                issuer.clone()
            }
            (None, Some(domain)) => {
                let text = domain.get_ref().trim_end_matches('/');
                let parsed = url::Url::parse(text).ok();
                let plain_origin = parsed.as_ref().is_some_and(|u| {
                    u.scheme() == "https"
                        && u.host_str().is_some()
                        && u.path() == "/"
                        && u.query().is_none()
                        && u.username().is_empty()
                });
                if !plain_origin {
                    self.error(
                        domain,
                        "okta_domain must look like `https://dev-123.okta.com` (https, no path)",
                    );
                    return None;
                }
                let server = file
                    .authorization_server
                    .as_ref()
                    .map_or("default", |a| a.get_ref().as_str());
                if server == "org" {
                    Spanned::new(domain.span(), text.to_string())
                } else if !server.is_empty() && server.chars().all(|c| c.is_ascii_alphanumeric()) {
                    Spanned::new(domain.span(), format!("{text}/oauth2/{server}"))
                } else {
                    if let Some(a) = &file.authorization_server {
                        self.error(a, "authorization_server is `org`, `default`, or a custom server id like `aus1a2b3c4D5e6F7g8`");
                    }
                    return None;
                }
            }
        };
        let text = issuer.get_ref();
        let Ok(url) = url::Url::parse(text) else {
            self.error(&issuer, format!("issuer `{text}` is not a URL"));
            return None;
        };
        if url.query().is_some() || url.fragment().is_some() || url.host_str().is_none() {
            self.error(
                &issuer,
                "issuer must be an https URL without query or fragment",
            );
            return None;
        }
        match (url.scheme(), file.allow_insecure_issuer) {
            ("https", _) => {}
            ("http", true) => self.warning(
                &issuer,
                "allow_insecure_issuer: tokens and secrets travel unencrypted; for tests and demos only",
            ),
            ("http", false) => {
                self.error(&issuer, "issuer must use https (allow_insecure_issuer = true permits http for tests and demos)");
                return None;
            }
            (other, _) => {
                self.error(&issuer, format!("issuer scheme `{other}` is not supported"));
                return None;
            }
        }
        Some(text.clone())
    }

    fn client_secret(&mut self, file: &FileIdp, base: &Path) -> Option<Secret> {
        let given = [
            file.client_secret.is_some(),
            file.client_secret_file.is_some(),
            file.client_secret_env.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            self.error(
                &file.kind,
                "set exactly one of client_secret_file, client_secret_env or client_secret",
            );
            return None;
        }
        if let Some(inline) = &file.client_secret {
            self.warning(inline, "client_secret is written in the config file: anyone who can read it can impersonate the gateway; use client_secret_file or client_secret_env");
            return non_empty(inline.get_ref()).or_else(|| {
                self.error(inline, "client_secret is empty");
                None
            });
        }
        if let Some(name) = &file.client_secret_env {
            return match std::env::var(name.get_ref()) {
                Ok(v) => non_empty(&v).or_else(|| {
                    self.error(
                        name,
                        format!("environment variable `{}` is empty", name.get_ref()),
                    );
                    None
                }),
                Err(_) => {
                    self.error(
                        name,
                        format!("environment variable `{}` is not set", name.get_ref()),
                    );
                    None
                }
            };
        }
        let file_name = file.client_secret_file.as_ref()?;
        let path = resolve(base, file_name.get_ref());
        if let Some(warning) = secret_file_exposure(&path) {
            self.warning(file_name, warning);
        }
        match std::fs::read_to_string(&path) {
            Ok(v) => non_empty(&v).or_else(|| {
                self.error(
                    file_name,
                    format!("client secret file `{}` is empty", path.display()),
                );
                None
            }),
            Err(e) => {
                self.error(
                    file_name,
                    format!("cannot read client secret file `{}`: {e}", path.display()),
                );
                None
            }
        }
    }
}

/// The secret without surrounding whitespace (files usually end in a newline).
fn non_empty(text: &str) -> Option<Secret> {
    let t = text.trim();
    (!t.is_empty()).then(|| Secret::new(t))
}
