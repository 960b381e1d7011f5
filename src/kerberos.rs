//! Kerberos constrained delegation: a ticket to an app's SPN, for a signed-in user, without
//! the user's password. The gateway holds its own service principal (keytab), asks the KDC
//! for a ticket to itself on the user's behalf (S4U2Self, protocol transition) and trades it
//! for one to the app (S4U2Proxy) — which the KDC grants only for the SPNs the gateway's
//! account may delegate to. The result goes to the backend as `Authorization: Negotiate`.
//!
//! MIT's GSSAPI (through `libgssapi`) does the protocol. Its calls block on the network, so
//! they run on the blocking pool under the configured timeout; a KDC that does not answer
//! costs one timeout, never a hung request. Users' delegated credentials are kept for a
//! while (each request still gets a fresh authenticator).

use crate::config::kerberos::{KerberosSettings, RealmSource};
use base64::Engine;
use libgssapi::context::{ClientCtx, CtxFlags};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::name::Name;
use libgssapi::oid::{OidSet, GSS_MECH_KRB5, GSS_NT_HOSTBASED_SERVICE, GSS_NT_KRB5_PRINCIPAL};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long a user's delegated credential is reused (less when its tickets end sooner).
const USER_CRED_TTL: Duration = Duration::from_secs(30 * 60);
/// Credentials closer than this to their end are fetched again (or a quarter of their life,
/// for a realm with short tickets).
const RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);

// MIT krb5 error codes (com_err table), as GSSAPI minor statuses.
const KDC_UNREACH: i32 = -1_765_328_228;
const C_PRINCIPAL_UNKNOWN: i32 = -1_765_328_378;
const S_PRINCIPAL_UNKNOWN: i32 = -1_765_328_377;
const BADOPTION: i32 = -1_765_328_371;
const POLICY: i32 = -1_765_328_372;
const SKEW: i32 = -1_765_328_347;
const CLIENT_REVOKED: i32 = -1_765_328_366;

/// Why no ticket came.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KerberosError {
    /// The user's identity names no Kerberos principal.
    #[error("the signed-in user has no Kerberos principal (no `{0}` in the session)")]
    NoPrincipal(String),
    /// The KDC does not know the user.
    #[error("the KDC knows no principal `{0}`")]
    UnknownUser(String),
    /// The user's account is disabled or locked.
    #[error("the KDC refused `{0}`: account disabled or locked")]
    UserRevoked(String),
    /// The KDC does not let the gateway delegate to this SPN.
    #[error("the KDC does not let the gateway delegate to `{0}` (constrained delegation refused)")]
    DelegationRefused(String),
    /// The app's SPN is not in the realm.
    #[error("the KDC knows no service `{0}`")]
    UnknownService(String),
    /// Clocks differ by more than the realm allows.
    #[error("clock skew too great between the gateway and the KDC")]
    ClockSkew,
    /// No KDC answered.
    #[error("no KDC answered: {0}")]
    Unreachable(String),
    /// No answer within the timeout.
    #[error("no answer from the KDC within {0:?}")]
    Timeout(Duration),
    /// Anything else the library reported.
    #[error("kerberos: {0}")]
    Other(String),
}

impl KerberosError {
    /// The user's own account is the problem (a page that says so), not the service.
    pub fn is_the_users(&self) -> bool {
        matches!(
            self,
            Self::NoPrincipal(_) | Self::UnknownUser(_) | Self::UserRevoked(_)
        )
    }

    /// A short label for metrics and audit records.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::NoPrincipal(_) => "no_principal",
            Self::UnknownUser(_) => "unknown_user",
            Self::UserRevoked(_) => "user_revoked",
            Self::DelegationRefused(_) => "delegation_refused",
            Self::UnknownService(_) => "unknown_service",
            Self::ClockSkew => "clock_skew",
            Self::Unreachable(_) | Self::Timeout(_) => "kdc_unavailable",
            Self::Other(_) => "error",
        }
    }
}

/// Points MIT's library at the gateway's keytab and realm. Must run before any thread that
/// could use Kerberos starts (it sets process environment, read once by the library).
pub fn configure_process(settings: &KerberosSettings, runtime_dir: &Path) -> std::io::Result<()> {
    let conf: Option<PathBuf> = match &settings.realm {
        RealmSource::System => None,
        RealmSource::File(path) => Some(path.clone()),
        RealmSource::Listed { realm, kdcs } => {
            let path = runtime_dir.join("portcullis-krb5.conf");
            let kdc_lines: String = kdcs
                .iter()
                .map(|k| format!("        kdc = {k}\n"))
                .collect();
            let text = format!(
                "# Written by portcullis from [kerberos] in portcullis.toml.\n\
                 [libdefaults]\n    default_realm = {realm}\n    dns_lookup_kdc = false\n    \
                 dns_lookup_realm = false\n    rdns = false\n    forwardable = true\n    \
                 udp_preference_limit = 1\n\
                 [realms]\n    {realm} = {{\n{kdc_lines}    }}\n"
            );
            std::fs::write(&path, text)?;
            Some(path)
        }
    };
    // Safe here: called from `main` before the runtime and the server's threads exist.
    if let Some(conf) = conf {
        std::env::set_var("KRB5_CONFIG", conf);
    }
    std::env::set_var("KRB5_CLIENT_KTNAME", &settings.keytab);
    // The gateway's tickets live in its memory only, never in a file.
    std::env::set_var("KRB5CCNAME", "MEMORY:portcullis");
    Ok(())
}

/// A ticket for the backend.
#[derive(Debug)]
pub struct Negotiated {
    /// The `Authorization` header's value.
    pub authorization: String,
    /// The user's delegated credential came from the KDC for this request (an audit record).
    pub fresh: bool,
}

struct Held {
    cred: Cred,
    until: Instant,
}

/// The gateway's Kerberos side: its own credential and users' delegated ones.
pub struct KerberosClient {
    settings: KerberosSettings,
    own: Mutex<Option<Held>>,
    users: moka::sync::Cache<String, Arc<Held>>,
}

impl KerberosClient {
    /// A client for `settings` (nothing is fetched until the first ticket).
    pub fn new(settings: KerberosSettings) -> Self {
        Self {
            settings,
            own: Mutex::new(None),
            users: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(USER_CRED_TTL)
                .build(),
        }
    }

    /// The realm users' short names are completed with (the gateway principal's).
    fn realm(&self) -> Option<&str> {
        self.settings.principal.rsplit_once('@').map(|(_, r)| r)
    }

    /// The Kerberos principal for a user name from the session: `alice@corp.example`
    /// becomes `alice@CORP.EXAMPLE` (realms are upper case, as AD maps UPN suffixes), a
    /// bare `alice` gets the gateway's realm.
    pub fn principal_for(&self, user: &str) -> String {
        match user.rsplit_once('@') {
            Some((local, domain)) => format!("{local}@{}", domain.to_ascii_uppercase()),
            None => match self.realm() {
                Some(realm) => format!("{user}@{realm}"),
                None => user.to_string(),
            },
        }
    }

    /// `Negotiate <token>` for `user` (a principal) at `spn` (`HTTP/host`).
    pub async fn negotiate(
        self: &Arc<Self>,
        user: &str,
        spn: &str,
    ) -> Result<Negotiated, KerberosError> {
        let this = self.clone();
        let (user, spn) = (user.to_string(), spn.to_string());
        let limit = self.settings.timeout;
        let work = tokio::task::spawn_blocking(move || this.negotiate_blocking(&user, &spn));
        match tokio::time::timeout(limit, work).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(KerberosError::Other(join.to_string())),
            Err(_) => Err(KerberosError::Timeout(limit)),
        }
    }

    fn negotiate_blocking(&self, user: &str, spn: &str) -> Result<Negotiated, KerberosError> {
        let (delegated, fresh) = self.delegated(user)?;
        // GSSAPI names a host-based service `service@host`; an SPN is `service/host`.
        let service = spn.replacen('/', "@", 1);
        let target = Name::new(service.as_bytes(), Some(GSS_NT_HOSTBASED_SERVICE))
            .map_err(|e| KerberosError::Other(e.to_string()))?;
        let mut ctx = ClientCtx::new(
            Some(delegated.cred.clone()),
            target,
            CtxFlags::GSS_C_MUTUAL_FLAG,
            Some(GSS_MECH_KRB5),
        );
        let token = ctx
            .step(None, None)
            .map_err(|e| classify(&e, user, spn))?
            .ok_or_else(|| KerberosError::Other("no initial token".into()))?;
        Ok(Negotiated {
            authorization: format!(
                "Negotiate {}",
                base64::engine::general_purpose::STANDARD.encode(&*token)
            ),
            fresh,
        })
    }

    /// The user's delegated credential (S4U2Self), reused until near its end; `true` when it
    /// was fetched from the KDC just now.
    fn delegated(&self, user: &str) -> Result<(Arc<Held>, bool), KerberosError> {
        if let Some(held) = self.users.get(user) {
            if held.until > Instant::now() {
                return Ok((held, false));
            }
        }
        let own = self.own_cred()?;
        let name = Name::new(user.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))
            .map_err(|_| KerberosError::NoPrincipal(user.to_string()))?;
        let cred = own
            .impersonate(&name, None, CredUsage::Initiate, Some(&krb5_only()?))
            .map_err(|e| classify(&e, user, ""))?;
        let held = Arc::new(Held {
            until: Instant::now() + usable_for(&cred),
            cred,
        });
        self.users.insert(user.to_string(), held.clone());
        Ok((held, true))
    }

    /// The gateway's own initiator credential (from its keytab), fetched again near its end.
    fn own_cred(&self) -> Result<Cred, KerberosError> {
        let mut own = self
            .own
            .lock()
            .map_err(|_| KerberosError::Other("credential lock poisoned".into()))?;
        if let Some(held) = own.as_ref().filter(|h| h.until > Instant::now()) {
            return Ok(held.cred.clone());
        }
        let name = Name::new(
            self.settings.principal.as_bytes(),
            Some(GSS_NT_KRB5_PRINCIPAL),
        )
        .map_err(|e| KerberosError::Other(e.to_string()))?;
        let cred = Cred::acquire(Some(&name), None, CredUsage::Initiate, Some(&krb5_only()?))
            .map_err(|e| classify(&e, &self.settings.principal, ""))?;
        *own = Some(Held {
            until: Instant::now() + usable_for(&cred),
            cred: cred.clone(),
        });
        Ok(cred)
    }

    /// Forgets every user's delegated credential (tests; a changed keytab).
    pub fn forget_users(&self) {
        self.users.invalidate_all();
    }
}

fn krb5_only() -> Result<OidSet, KerberosError> {
    let mut mechs = OidSet::new();
    mechs
        .add(GSS_MECH_KRB5)
        .map_err(|e| KerberosError::Other(e.to_string()))?;
    Ok(mechs)
}

/// How long a credential may be used before it is fetched again.
fn usable_for(cred: &Cred) -> Duration {
    let left = cred.lifetime().unwrap_or(Duration::ZERO);
    left.saturating_sub(RENEW_MARGIN.min(left / 4))
        .min(USER_CRED_TTL)
}

fn classify(error: &libgssapi::error::Error, user: &str, spn: &str) -> KerberosError {
    // `minor` is MIT's krb5 error code, signed.
    #[allow(clippy::cast_possible_wrap)]
    let code = error.minor as i32;
    match code {
        KDC_UNREACH => KerberosError::Unreachable(error.to_string()),
        C_PRINCIPAL_UNKNOWN => KerberosError::UnknownUser(user.to_string()),
        CLIENT_REVOKED => KerberosError::UserRevoked(user.to_string()),
        S_PRINCIPAL_UNKNOWN if !spn.is_empty() => KerberosError::UnknownService(spn.to_string()),
        S_PRINCIPAL_UNKNOWN => KerberosError::UnknownUser(user.to_string()),
        BADOPTION | POLICY if !spn.is_empty() => KerberosError::DelegationRefused(spn.to_string()),
        SKEW => KerberosError::ClockSkew,
        _ => KerberosError::Other(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn client() -> KerberosClient {
        KerberosClient::new(KerberosSettings {
            principal: "HTTP/gw.corp.example@CORP.EXAMPLE".into(),
            keytab: PathBuf::from("/nonexistent"),
            realm: RealmSource::System,
            timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn user_names_become_principals_in_upper_case_realms() {
        let c = client();
        assert_eq!(c.principal_for("alice@corp.example"), "alice@CORP.EXAMPLE");
        assert_eq!(c.principal_for("alice"), "alice@CORP.EXAMPLE");
        // Only the realm part changes case; the last `@` separates it.
        assert_eq!(
            c.principal_for("Al.Ice@Sub.Corp.Example"),
            "Al.Ice@SUB.CORP.EXAMPLE"
        );
    }

    #[test]
    fn the_users_own_problems_are_told_apart_from_the_services() {
        assert!(KerberosError::UnknownUser("a".into()).is_the_users());
        assert!(KerberosError::NoPrincipal("email".into()).is_the_users());
        assert!(!KerberosError::DelegationRefused("HTTP/x".into()).is_the_users());
        assert!(!KerberosError::Timeout(Duration::from_secs(1)).is_the_users());
        assert_eq!(
            KerberosError::Unreachable("x".into()).outcome(),
            KerberosError::Timeout(Duration::from_secs(1)).outcome()
        );
    }
}
