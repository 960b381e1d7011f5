//! Users' attributes and groups from LDAP / Active Directory (`[directory.<name>]`), read once
//! at sign-in and kept in the session as claims named `<directory>:<attribute>` (and
//! `<directory>:groups`), which policies deliver and judge like any claim.
//!
//! A lookup that fails never yields a wrong identity: the session then carries none of the
//! directory's claims, only the mark `<directory>:!unavailable`, and each app's `[directory]
//! on_failure` decides whether such a session is refused (the default) or served without them.
//! An IdP's token can never fill these claims: they are replaced at every lookup.

use crate::config::directory::{DirectoryConfig, GroupSearch, Nesting};
use crate::idp::Identity;
use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Deepest nesting followed by `expand` (a cycle or a runaway tree stops here).
const MAX_DEPTH: usize = 10;
/// Most groups one user is given (the rest are left out, with a log line).
const MAX_GROUPS: usize = 1000;

/// Why a lookup failed.
#[derive(Debug, Error)]
pub enum DirectoryError {
    /// The server could not be reached, or the exchange broke off.
    #[error("directory unreachable: {0}")]
    Unreachable(String),
    /// The gateway's own account was refused.
    #[error("bind refused: {0}")]
    Bind(String),
    /// A search failed.
    #[error("search failed: {0}")]
    Search(String),
    /// The whole lookup took longer than `timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The filter needs a value the sign-in did not give (e.g. no email).
    #[error("the user filter needs `{0}`, which this sign-in did not provide")]
    MissingValue(&'static str),
    /// No entry matched the user.
    #[error("no directory entry for this user")]
    NotFound,
    /// Several entries matched: which one is the user cannot be told.
    #[error("{0} directory entries match this user: refusing to guess")]
    Ambiguous(usize),
}

impl DirectoryError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            _ => "unavailable",
        }
    }
}

/// What the directory says about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The user's DN.
    pub dn: String,
    /// The configured attributes the entry has, with their values.
    pub attributes: Vec<(String, Vec<String>)>,
    /// Names of the user's groups (nested ones included, as configured).
    pub groups: Vec<String>,
}

/// One configured directory.
#[derive(Debug)]
pub struct Directory {
    config: DirectoryConfig,
}

/// The user filter with the sign-in's values filled in, each escaped (RFC 4515), so a name
/// like `*)(uid=*` matches only itself.
pub fn user_filter(template: &str, identity: &Identity) -> Result<String, DirectoryError> {
    let mut filter = template.to_string();
    for (placeholder, key, value) in [
        ("{email}", "email", identity.email.as_deref()),
        ("{upn}", "email", identity.email.as_deref()),
        ("{name}", "name", identity.name.as_deref()),
        ("{sub}", "sub", Some(identity.subject.as_str())),
    ] {
        if filter.contains(placeholder) {
            let value = value.ok_or(DirectoryError::MissingValue(key))?;
            filter = filter.replace(placeholder, &ldap_escape(value));
        }
    }
    Ok(filter)
}

impl Directory {
    /// A directory client for `config` (it connects per lookup).
    pub fn new(config: DirectoryConfig) -> Self {
        Self { config }
    }

    /// The directory's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// `identity` with this directory's claims: the user's attributes and groups, or the
    /// unavailable mark when the lookup failed (logged, and counted in metrics).
    pub async fn enrich(&self, mut identity: Identity) -> Identity {
        let own = format!("{}:", self.config.name);
        identity.claims.retain(|(name, _)| !name.starts_with(&own));
        let started = Instant::now();
        match self.lookup(&identity).await {
            Ok(entry) => {
                crate::metrics::directory_lookup(self.name(), "ok", started.elapsed());
                for (attribute, values) in entry.attributes {
                    identity
                        .claims
                        .push((self.config.claim_name(&attribute), values));
                }
                if self.config.groups.is_some() {
                    identity
                        .claims
                        .push((self.config.claim_name("groups"), entry.groups));
                }
            }
            Err(e) => {
                crate::metrics::directory_lookup(self.name(), e.outcome(), started.elapsed());
                tracing::warn!(directory = self.name(), error = %e, "directory lookup failed: the session carries no directory attributes");
                identity
                    .claims
                    .push((self.config.unavailable_claim(), vec!["true".to_string()]));
            }
        }
        identity
    }

    /// Looks the user up: bind, find exactly one entry, read its attributes and groups.
    pub async fn lookup(&self, identity: &Identity) -> Result<Entry, DirectoryError> {
        let filter = user_filter(&self.config.user_filter, identity)?;
        let limit = self.config.timeout;
        tokio::time::timeout(limit, self.exchange(&filter))
            .await
            .unwrap_or(Err(DirectoryError::Timeout(limit)))
    }

    async fn exchange(&self, filter: &str) -> Result<Entry, DirectoryError> {
        let mut ldap = self.connect().await?;
        let result = self.read_user(&mut ldap, filter).await;
        // Best effort: the connection is dropped either way.
        let _ = ldap.unbind().await;
        result
    }

    /// An exchange that failed: ldap3's own per-operation timer and the whole lookup's
    /// timer have the same limit, so whichever fires first is reported the same way.
    fn broken_off(&self, error: ldap3::LdapError) -> DirectoryError {
        match error {
            ldap3::LdapError::Timeout { .. } => DirectoryError::Timeout(self.config.timeout),
            other => DirectoryError::Unreachable(other.to_string()),
        }
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.config.timeout);
        if let Some(pem) = &self.config.ca_pem {
            let mut builder = native_tls::TlsConnector::builder();
            for cert in openssl::x509::X509::stack_from_pem(pem)
                .map_err(|e| DirectoryError::Unreachable(e.to_string()))?
            {
                let der = cert
                    .to_der()
                    .map_err(|e| DirectoryError::Unreachable(e.to_string()))?;
                builder.add_root_certificate(
                    native_tls::Certificate::from_der(&der)
                        .map_err(|e| DirectoryError::Unreachable(e.to_string()))?,
                );
            }
            builder.disable_built_in_roots(true);
            settings = settings.set_connector(
                builder
                    .build()
                    .map_err(|e| DirectoryError::Unreachable(e.to_string()))?,
            );
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|e| self.broken_off(e))?;
        let name = self.config.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(directory = name, error = %e, "directory connection ended");
            }
        });
        if let (Some(dn), Some(password)) = (&self.config.bind_dn, &self.config.bind_password) {
            ldap.with_timeout(self.config.timeout)
                .simple_bind(dn, password.expose())
                .await
                .map_err(|e| self.broken_off(e))?
                .success()
                .map_err(|e| DirectoryError::Bind(e.to_string()))?;
        }
        Ok(ldap)
    }

    async fn search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        filter: &str,
        attributes: Vec<&str>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let (entries, _) = ldap
            .with_timeout(self.config.timeout)
            .search(base, Scope::Subtree, filter, attributes)
            .await
            .map_err(|e| self.broken_off(e))?
            .success()
            .map_err(|e| DirectoryError::Search(e.to_string()))?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    async fn read_user(&self, ldap: &mut Ldap, filter: &str) -> Result<Entry, DirectoryError> {
        let wanted: Vec<&str> = self.config.attributes.iter().map(String::as_str).collect();
        let mut found = self
            .search(ldap, &self.config.base_dn, filter, wanted)
            .await?;
        let user = match found.len() {
            0 => return Err(DirectoryError::NotFound),
            1 => found.remove(0),
            n => return Err(DirectoryError::Ambiguous(n)),
        };
        // Attribute names are case-insensitive in LDAP; the policy's spelling is kept.
        let attributes = self
            .config
            .attributes
            .iter()
            .filter_map(|name| {
                user.attrs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, values)| (name.clone(), values.clone()))
            })
            .collect();
        let groups = match &self.config.groups {
            Some(search) => self.groups_of(ldap, &user.dn, search).await?,
            None => Vec::new(),
        };
        Ok(Entry {
            dn: user.dn,
            attributes,
            groups,
        })
    }

    /// The names of the groups `dn` belongs to, nested as configured.
    async fn groups_of(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        search: &GroupSearch,
    ) -> Result<Vec<String>, DirectoryError> {
        let name_of = |entry: &SearchEntry| {
            entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&search.name_attribute))
                .and_then(|(_, v)| v.first().cloned())
        };
        if search.nesting == Nesting::InChain {
            let filter = format!("(member:1.2.840.113556.1.4.1941:={})", ldap_escape(dn));
            let found = self
                .search(ldap, &search.base_dn, &filter, vec![&search.name_attribute])
                .await?;
            return Ok(found.iter().filter_map(name_of).take(MAX_GROUPS).collect());
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut names = Vec::new();
        let mut members = vec![dn.to_string()];
        for _ in 0..MAX_DEPTH {
            let mut next = Vec::new();
            for member in &members {
                let filter = search.filter.replace("{dn}", &ldap_escape(member));
                let found = self
                    .search(ldap, &search.base_dn, &filter, vec![&search.name_attribute])
                    .await?;
                for group in found {
                    if names.len() >= MAX_GROUPS {
                        tracing::warn!(
                            directory = self.name(),
                            "user in more than {MAX_GROUPS} groups: the rest are left out"
                        );
                        return Ok(names);
                    }
                    if seen.insert(group.dn.to_ascii_lowercase()) {
                        if let Some(name) = name_of(&group) {
                            names.push(name);
                        }
                        next.push(group.dn);
                    }
                }
            }
            if next.is_empty() || search.nesting == Nesting::Direct {
                break;
            }
            members = next;
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: Option<&str>) -> Identity {
        Identity {
            subject: "00u1".into(),
            email: email.map(str::to_string),
            name: Some("Alice (HR)".into()),
            groups: Vec::new(),
            claims: Vec::new(),
            acr: None,
            amr: Vec::new(),
            auth_time: None,
            idp: "corp".into(),
        }
    }

    #[tokio::test]
    async fn a_failed_lookup_leaves_only_the_mark_even_over_claims_an_idp_sent() {
        let config = DirectoryConfig {
            name: "corp".into(),
            url: "ldap://127.0.0.1:1".into(),
            idps: vec!["corp".into()],
            bind_dn: None,
            bind_password: None,
            base_dn: "dc=corp,dc=example".into(),
            user_filter: "(mail={email})".into(),
            attributes: vec!["employeeNumber".into()],
            groups: None,
            timeout: Duration::from_secs(1),
            ca_pem: None,
        };
        let mut who = user(Some("alice@corp.example"));
        // An IdP that sends a claim spelled like the directory's must not be believed.
        who.claims
            .push(("corp:employeeNumber".into(), vec!["1001".into()]));
        who.claims.push(("department".into(), vec!["hr".into()]));
        let out = Directory::new(config).enrich(who).await;
        assert_eq!(
            out.claims,
            vec![
                ("department".to_string(), vec!["hr".to_string()]),
                ("corp:!unavailable".to_string(), vec!["true".to_string()]),
            ]
        );
    }

    #[test]
    fn filters_escape_what_the_user_brings() {
        assert_eq!(
            user_filter("(mail={email})", &user(Some("alice@corp.example"))).unwrap(),
            "(mail=alice@corp.example)"
        );
        // An injection attempt matches only itself.
        let hostile = user_filter("(mail={email})", &user(Some("*)(uid=*"))).unwrap();
        assert_eq!(hostile, "(mail=\\2a\\29\\28uid=\\2a)");
        assert_eq!(
            user_filter("(&(cn={name})(x={sub}))", &user(None)).unwrap(),
            "(&(cn=Alice \\28HR\\29)(x=00u1))"
        );
        assert!(matches!(
            user_filter("(userPrincipalName={upn})", &user(None)),
            Err(DirectoryError::MissingValue("email"))
        ));
    }
}
