//! Who may send the gateway session signals, and the keys their JWTs are checked with: per
//! IdP, Okta Universal Logout (Global Token Revocation requests) and a Shared Signals
//! Framework transmitter. Keys are the IdP's own JWKS or one fetched from `jwks_uri`
//! (fetched on first use, again — at most every 10 s — for a key id it does not hold).

use crate::config::{IdpConfig, IdpProtocol, SignalSource};
use crate::idp::http::IdpHttpClient;
use crate::idp::jwt::{Claims, JwtError, JwtKeys};
use crate::idp::oidc::OidcProvider;
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Least time between two fetches of a remote JWKS.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// A JWKS published at a URL.
pub struct RemoteJwks {
    url: String,
    http: IdpHttpClient,
    keys: ArcSwap<JwtKeys>,
    last_fetch: Mutex<Option<Instant>>,
}

impl RemoteJwks {
    fn new(url: &str, http: IdpHttpClient) -> Self {
        Self {
            url: url.to_string(),
            http,
            keys: ArcSwap::from_pointee(JwtKeys::default()),
            last_fetch: Mutex::new(None),
        }
    }

    async fn verify(&self, raw: &str) -> Result<(Option<String>, Claims), JwtError> {
        match self.keys.load().verify(raw) {
            Err(JwtError::UnknownKey) if self.fetch_allowed() => {
                match self.http.get("jwks", &self.url).await {
                    Ok((200, body)) => match serde_json::from_slice(&body) {
                        Ok(document) => {
                            let keys = JwtKeys::from_jwks(&document);
                            tracing::info!(url = %self.url, keys = keys.len(), "fetched signal JWKS");
                            self.keys.store(Arc::new(keys));
                        }
                        Err(_) => tracing::warn!(url = %self.url, "signal JWKS is not JSON"),
                    },
                    Ok((status, _)) => {
                        tracing::warn!(url = %self.url, status, "signal JWKS fetch refused")
                    }
                    Err(e) => {
                        tracing::warn!(url = %self.url, error = %e, "signal JWKS unreachable")
                    }
                }
                self.keys.load().verify(raw)
            }
            other => other,
        }
    }

    fn fetch_allowed(&self) -> bool {
        let Ok(mut last) = self.last_fetch.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < JWKS_REFETCH_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Where a receiver's keys come from.
enum SignalKeys {
    /// The OpenID Connect IdP's own JWKS (as discovered).
    Idp(Arc<OidcProvider>),
    /// A JWKS at a URL.
    Remote(RemoteJwks),
}

/// One source of signed signals, for one IdP's sessions.
pub struct SignalReceiver {
    /// The IdP whose sessions the signals name.
    pub idp: String,
    /// Issuers that name this IdP's users in `iss_sub` subjects: the IdP's own issuer (or
    /// SAML entity id) and the signal source's.
    pub subject_issuers: Vec<String>,
    /// What the JWTs must say about themselves.
    pub source: SignalSource,
    keys: SignalKeys,
}

impl SignalReceiver {
    /// Verifies a JWT's signature with this source's keys.
    pub async fn verify(&self, raw: &str) -> Result<(Option<String>, Claims), JwtError> {
        match &self.keys {
            SignalKeys::Idp(provider) => provider.verify_jwt(raw).await,
            SignalKeys::Remote(remote) => remote.verify(raw).await,
        }
    }
}

/// Every configured receiver, by kind.
#[derive(Default)]
pub struct Receivers {
    /// Okta Universal Logout (Global Token Revocation).
    pub universal_logout: Vec<SignalReceiver>,
    /// Shared Signals Framework push delivery.
    pub shared_signals: Vec<SignalReceiver>,
}

impl Receivers {
    /// Receivers for the IdPs that configure them. `oidc` finds an IdP's provider (for its
    /// JWKS), `saml_entity` a SAML IdP's entity id, `http` makes a client for remote JWKS.
    pub fn new(
        idps: &[IdpConfig],
        oidc: impl Fn(&str) -> Option<Arc<OidcProvider>>,
        saml_entity: impl Fn(&str) -> Option<String>,
        http: impl Fn(&IdpConfig) -> Option<IdpHttpClient>,
    ) -> Self {
        let mut out = Self::default();
        for idp in idps {
            let own_issuer = match &idp.protocol {
                IdpProtocol::Oidc(o) => Some(o.issuer.clone()),
                IdpProtocol::Saml(_) => saml_entity(&idp.name),
            };
            let make = |source: &SignalSource| -> Option<SignalReceiver> {
                let keys = match &source.jwks_uri {
                    Some(url) => SignalKeys::Remote(RemoteJwks::new(url, http(idp)?)),
                    None => SignalKeys::Idp(oidc(&idp.name)?),
                };
                let mut subject_issuers: Vec<String> = own_issuer.iter().cloned().collect();
                if !subject_issuers.contains(&source.issuer) {
                    subject_issuers.push(source.issuer.clone());
                }
                Some(SignalReceiver {
                    idp: idp.name.clone(),
                    subject_issuers,
                    source: source.clone(),
                    keys,
                })
            };
            if let Some(r) = idp.universal_logout.as_ref().and_then(make) {
                out.universal_logout.push(r);
            }
            if let Some(r) = idp.shared_signals.as_ref().and_then(make) {
                out.shared_signals.push(r);
            }
        }
        out
    }
}
