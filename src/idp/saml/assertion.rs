//! What a verified assertion must also say before it signs anyone in, and how its subject and
//! attributes become the session's [`Identity`].
//!
//! samael (0.0.22) accepts an assertion without `Conditions`, without an
//! `AudienceRestriction`, without an `AuthnStatement`, and with an `IssueInstant` in the
//! future; each is refused here. Values are kept as sent: identity headers refuse control
//! characters at injection, exactly as for OpenID Connect.

use crate::config::SamlIdpConfig;
use crate::idp::Identity;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use samael::schema::Assertion;
use std::time::Duration;
use thiserror::Error;

/// Longest an assertion may stay valid; the replay cache holds IDs this long at most.
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(24 * 3600);

const EMAIL_NAME_ID: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// Why a signature-verified assertion is still refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AssertionError {
    /// No `Conditions`.
    #[error("assertion has no Conditions")]
    NoConditions,
    /// No `AudienceRestriction`.
    #[error("assertion has no AudienceRestriction")]
    NoAudience,
    /// An `AudienceRestriction` without our entity ID.
    #[error("assertion audience is not this SP (`{0}`)")]
    WrongAudience(String),
    /// No `AuthnStatement`.
    #[error("assertion has no AuthnStatement")]
    NoAuthnStatement,
    /// `IssueInstant` in the future beyond the clock skew.
    #[error("assertion IssueInstant {0} is in the future")]
    IssuedInFuture(String),
    /// Valid until beyond [`MAX_ASSERTION_LIFETIME`], or no end at all.
    #[error("assertion validity is missing or longer than 24 hours")]
    LifetimeTooLong,
    /// No subject `NameID`.
    #[error("assertion has no Subject NameID")]
    NoNameId,
}

/// Checks the assertion samael verified. Returns how long its ID must stay in the replay
/// cache (until it expires, plus skew).
pub fn check(
    assertion: &Assertion,
    entity_id: &str,
    skew: Duration,
    now: DateTime<Utc>,
) -> Result<Duration, AssertionError> {
    let skew_c = ChronoDuration::from_std(skew).unwrap_or(ChronoDuration::seconds(60));
    if assertion.issue_instant > now + skew_c {
        return Err(AssertionError::IssuedInFuture(
            assertion.issue_instant.to_rfc3339(),
        ));
    }
    let conditions = assertion
        .conditions
        .as_ref()
        .ok_or(AssertionError::NoConditions)?;
    let restrictions = conditions
        .audience_restrictions
        .as_ref()
        .filter(|r| !r.is_empty())
        .ok_or(AssertionError::NoAudience)?;
    // Every restriction must admit us (SAML core §2.5.1.4).
    if !restrictions
        .iter()
        .all(|r| r.audience.iter().any(|a| a == entity_id))
    {
        return Err(AssertionError::WrongAudience(entity_id.to_string()));
    }
    if assertion
        .authn_statements
        .as_ref()
        .is_none_or(|s| s.is_empty())
    {
        return Err(AssertionError::NoAuthnStatement);
    }
    let name_id = assertion
        .subject
        .as_ref()
        .and_then(|s| s.name_id.as_ref())
        .map(|n| n.value.trim())
        .unwrap_or_default();
    if name_id.is_empty() {
        return Err(AssertionError::NoNameId);
    }
    // The latest "not on or after" among conditions and bearer confirmations bounds how
    // long the assertion could be replayed.
    let confirmation_ends = assertion
        .subject
        .iter()
        .flat_map(|s| s.subject_confirmations.iter().flatten())
        .filter_map(|c| c.subject_confirmation_data.as_ref()?.not_on_or_after);
    let until = conditions
        .not_on_or_after
        .into_iter()
        .chain(confirmation_ends)
        .max()
        .ok_or(AssertionError::LifetimeTooLong)?;
    let remaining = (until + skew_c - now)
        .to_std()
        .unwrap_or(Duration::from_secs(1));
    if remaining > MAX_ASSERTION_LIFETIME + skew {
        return Err(AssertionError::LifetimeTooLong);
    }
    Ok(remaining.max(Duration::from_secs(1)))
}

/// The NameID, its format and the session index, kept for single logout.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SamlSubject {
    /// NameID value.
    pub name_id: String,
    /// NameID format.
    pub format: Option<String>,
    /// NameID `NameQualifier`, as received.
    pub name_qualifier: Option<String>,
    /// NameID `SPNameQualifier`, as received.
    pub sp_name_qualifier: Option<String>,
    /// `SessionIndex` of the first AuthnStatement.
    pub session_index: Option<String>,
}

/// The session identity and logout subject from a checked assertion.
pub fn identity(
    assertion: &Assertion,
    idp: &str,
    config: &SamlIdpConfig,
) -> (Identity, SamlSubject) {
    let name_id = assertion.subject.as_ref().and_then(|s| s.name_id.as_ref());
    let subject = SamlSubject {
        name_id: name_id
            .map(|n| n.value.trim().to_string())
            .unwrap_or_default(),
        format: name_id.and_then(|n| n.format.clone()),
        name_qualifier: None,
        sp_name_qualifier: None,
        session_index: assertion
            .authn_statements
            .iter()
            .flatten()
            .find_map(|s| s.session_index.clone()),
    };
    let values = |name: &str| -> Vec<String> {
        assertion
            .attribute_statements
            .iter()
            .flatten()
            .flat_map(|s| s.attributes.iter())
            .filter(|a| a.name.as_deref() == Some(name) || a.friendly_name.as_deref() == Some(name))
            .flat_map(|a| a.values.iter().filter_map(|v| v.value.clone()))
            .collect()
    };
    let first_of = |names: &[String]| -> Option<String> {
        names.iter().find_map(|n| values(n).into_iter().next())
    };
    let email = first_of(&config.email_attributes).or_else(|| {
        (subject.format.as_deref() == Some(EMAIL_NAME_ID)).then(|| subject.name_id.clone())
    });
    let name = first_of(&config.name_attributes).or_else(|| {
        let first = values("firstName").into_iter().next();
        let last = values("lastName").into_iter().next();
        match (first, last) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (f, l) => f.or(l),
        }
    });
    let statement = assertion.authn_statements.iter().flatten().next();
    let identity = Identity {
        subject: subject.name_id.clone(),
        email,
        name,
        // The first of the configured (or usual) attribute names that the assertion carries.
        groups: crate::intern::intern_all(
            config
                .groups_attributes
                .iter()
                .map(|n| values(n))
                .find(|v| !v.is_empty())
                .unwrap_or_default(),
        ),
        claims: config
            .extra_attributes
            .iter()
            .map(|n| (n.clone(), values(n)))
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        acr: statement
            .and_then(|s| s.authn_context.as_ref())
            .and_then(|c| c.value.as_ref())
            .and_then(|r| r.value.as_deref())
            .map(crate::intern::intern),
        amr: Vec::new(),
        auth_time: statement
            .and_then(|s| s.authn_instant)
            .and_then(|t| u64::try_from(t.timestamp()).ok()),
        idp: crate::intern::intern(idp),
    };
    (identity, subject)
}
