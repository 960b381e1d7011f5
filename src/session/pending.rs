//! Logins in progress: what the callback needs, keyed by the random `state`, used once.

use crate::clock::{millis, SharedClock};
use crate::secret::Secret;
use moka::future::Cache;
use std::sync::Arc;
use std::time::Duration;

/// One started login, waiting for the IdP to send the browser back.
#[derive(Debug)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug)]
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

/// Pending logins, forgotten after the login timeout.
#[derive(Clone)]
pub struct PendingLogins {
    /// Each login with when it started (Unix milliseconds of `clock`).
    cache: Cache<String, (u64, Arc<PendingLogin>)>,
    ttl: Duration,
    clock: SharedClock,
}

impl PendingLogins {
    /// A store whose entries live `ttl` on `clock` and number at most `max`.
    pub fn new(ttl: Duration, max: u64, clock: SharedClock) -> Self {
        Self {
            cache: Cache::builder().time_to_live(ttl).max_capacity(max).build(),
            ttl,
            clock,
        }
    }

    /// Remembers a login under its state.
    pub async fn insert(&self, state: String, login: PendingLogin) {
        self.cache
            .insert(state, (self.clock.now_ms(), Arc::new(login)))
            .await;
    }

    /// Takes the login for this state: a second call with the same state finds nothing.
    pub async fn take(&self, state: &str) -> Option<Arc<PendingLogin>> {
        // `remove` may hand back an entry that expired but was not evicted yet.
        let (started_ms, login) = self.cache.remove(state).await?;
        let age = self.clock.now_ms().saturating_sub(started_ms);
        (age < millis(self.ttl)).then_some(login)
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
        let store = PendingLogins::new(Duration::from_secs(300), 100, clock.clone());
        store.insert("s1".into(), login()).await;
        assert!(store.take("s1").await.is_some());
        assert!(
            store.take("s1").await.is_none(),
            "reused state must be refused"
        );
        store.insert("s2".into(), login()).await;
        store.insert("s3".into(), login()).await;
        clock.advance(Duration::from_secs(299));
        assert!(store.take("s3").await.is_some(), "a login within its time");
        clock.advance(Duration::from_secs(1));
        assert!(
            store.take("s2").await.is_none(),
            "expired login must be gone"
        );
    }
}
