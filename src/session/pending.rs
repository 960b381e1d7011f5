//! Logins in progress: what the callback needs, keyed by the random `state`, used once.

use crate::clock::{millis, SharedClock};
use crate::secret::Secret;
use crate::session::store::{OneTimeStore, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// One started login, waiting for the IdP to send the browser back.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PendingLogin {
    /// IdP name.
    pub idp: String,
    /// App the user was trying to reach.
    pub app: String,
    /// Host (with port, as the browser sent it) the login started on; the callback must
    /// arrive on the same one.
    pub host: String,
    /// Same-host path (with query) to return to.
    pub return_to: String,
    /// What the protocol needs to finish the login.
    pub flow: PendingFlow,
    /// Set when this login re-authenticates a signed-in user more strongly.
    pub step_up: Option<StepUp>,
}

/// A step-up: the signed-in user must authenticate again, as strongly as a require rule says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepUp {
    /// The require rule asking for it.
    pub rule: String,
    /// Who is signed in now: the same subject must come back.
    pub subject: String,
    /// Acceptable `acr` values (any).
    pub acr: Vec<String>,
    /// Acceptable `amr` values (any).
    pub amr: Vec<String>,
    /// Maximum authentication age.
    pub max_age: Option<Duration>,
    /// When the step-up started (Unix seconds): the new authentication must be later.
    pub started_unix: u64,
}

/// Protocol-specific parts of a pending login.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum PendingFlow {
    /// OpenID Connect.
    Oidc {
        /// The exact redirect URI sent to the IdP.
        redirect_uri: String,
        /// Expected ID token nonce.
        nonce: Secret,
        /// PKCE code verifier.
        pkce_verifier: Secret,
    },
    /// SAML.
    Saml {
        /// The AuthnRequest ID the response must answer.
        request_id: String,
    },
}

/// Pending logins, forgotten after the login timeout: one-time records in the store, so the
/// IdP may send the browser back to any node.
#[derive(Clone)]
pub struct PendingLogins {
    store: Arc<dyn OneTimeStore>,
    ttl: Duration,
    clock: SharedClock,
}

/// A pending login as stored: when it started (Unix milliseconds of the clock) and itself.
#[derive(Serialize, Deserialize)]
struct Stored<T> {
    started_ms: u64,
    login: T,
}

impl PendingLogins {
    /// Logins kept in `store` for `ttl`, on `clock`.
    pub fn new(store: Arc<dyn OneTimeStore>, ttl: Duration, clock: SharedClock) -> Self {
        Self { store, ttl, clock }
    }

    fn key(state: &str) -> String {
        format!("login\0{state}")
    }

    /// Remembers a login under its state.
    pub async fn insert(&self, state: &str, login: &PendingLogin) -> Result<(), StoreError> {
        let record = Stored {
            started_ms: self.clock.now_ms(),
            login,
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|_| StoreError::Unavailable("cannot encode a pending login".into()))?;
        self.store.put(&Self::key(state), bytes, self.ttl).await
    }

    /// Takes the login for this state: a second call with the same state, on any node, finds
    /// nothing.
    pub async fn take(&self, state: &str) -> Result<Option<Arc<PendingLogin>>, StoreError> {
        let Some(bytes) = self.store.take(&Self::key(state)).await? else {
            return Ok(None);
        };
        let Ok(record) = serde_json::from_slice::<Stored<PendingLogin>>(&bytes) else {
            tracing::warn!("unreadable pending login dropped");
            return Ok(None);
        };
        let age = self.clock.now_ms().saturating_sub(record.started_ms);
        if age >= millis(self.ttl) {
            return Ok(None);
        }
        let protocol = match record.login.flow {
            PendingFlow::Oidc { .. } => "oidc",
            PendingFlow::Saml { .. } => "saml",
        };
        crate::metrics::login_round_trip(&record.login.idp, protocol, Duration::from_millis(age));
        Ok(Some(Arc::new(record.login)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> PendingLogin {
        PendingLogin {
            idp: "i".into(),
            app: "a".into(),
            host: "h".into(),
            return_to: "/".into(),
            flow: PendingFlow::Oidc {
                redirect_uri: "http://h/cb".into(),
                nonce: Secret::new("n"),
                pkce_verifier: Secret::new("v"),
            },
            step_up: None,
        }
    }

    #[tokio::test]
    async fn state_is_one_time_and_expires() {
        let clock = crate::clock::ManualClock::new(1_800_000_000_000);
        let memory = Arc::new(crate::session::store::memory::MemoryStore::new(
            10,
            100,
            clock.clone(),
        ));
        let store = PendingLogins::new(memory, Duration::from_secs(300), clock.clone());
        store.insert("s1", &login()).await.unwrap();
        let back = store.take("s1").await.unwrap().unwrap();
        assert_eq!(back.return_to, "/");
        assert!(
            store.take("s1").await.unwrap().is_none(),
            "reused state must be refused"
        );
        store.insert("s2", &login()).await.unwrap();
        store.insert("s3", &login()).await.unwrap();
        clock.advance(Duration::from_secs(299));
        assert!(
            store.take("s3").await.unwrap().is_some(),
            "a login within its time"
        );
        clock.advance(Duration::from_secs(1));
        assert!(
            store.take("s2").await.unwrap().is_none(),
            "expired login must be gone"
        );
    }
}
