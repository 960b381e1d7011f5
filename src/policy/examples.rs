//! Executable examples a policy file carries as `[[test]]` entries: an identity and a request,
//! and the decision (with the deciding rule) the file's rules must give. `portcullis policy
//! test` runs them, so a file's examples can never drift from its rules.

use super::path::normalise;
use super::{Decision, RequestFacts, RuleSet};
use crate::idp::Identity;
use http::Method;
use std::net::IpAddr;

/// What an example expects: a decision name and, for decisions made by a rule, its id —
/// written `allow:staff`, `public:assets`, `deny:no-contractors`, `require:admin-area`,
/// `step-up:mfa-for-payroll`, `login`, `no_allow`, or `refused` (a path the gateway rejects
/// before any rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// `allow`, `public`, `deny`, `require`, `step-up`, `login`, `no_allow` or `refused`.
    pub decision: String,
    /// The deciding rule, when the decision names one.
    pub rule: Option<String>,
}

impl Expectation {
    /// Parses `decision[:rule]`; `None` when the text is not one of the forms above.
    pub fn parse(text: &str) -> Option<Self> {
        let (decision, rule) = match text.split_once(':') {
            Some((d, r)) => (d, Some(r)),
            None => (text, None),
        };
        let needs_rule = matches!(
            decision,
            "allow" | "public" | "deny" | "require" | "step-up"
        );
        let ruleless = matches!(decision, "login" | "no_allow" | "refused");
        let ok = match rule {
            Some(r) => needs_rule && !r.is_empty(),
            None => ruleless,
        };
        ok.then(|| Self {
            decision: decision.to_string(),
            rule: rule.map(str::to_string),
        })
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.rule {
            Some(r) => write!(f, "{}:{r}", self.decision),
            None => f.write_str(&self.decision),
        }
    }
}

/// A `[[test]]` user: who they are and, for an API caller, their bearer token's scopes.
#[derive(Debug, Clone, Default)]
pub struct ExampleUser {
    /// The signed-in identity.
    pub identity: Identity,
    /// Scopes of the caller's bearer token (empty: a browser session).
    pub scopes: Vec<std::sync::Arc<str>>,
}

impl ExampleUser {
    /// What the rules look at.
    pub fn facts(&self) -> crate::policy::UserFacts<'_> {
        crate::policy::UserFacts {
            scopes: &self.scopes,
            ..self.identity.facts()
        }
    }
}

/// One `[[test]]` entry, compiled.
#[derive(Debug, Clone)]
pub struct Example {
    /// Its name (or the request, when unnamed).
    pub name: String,
    /// Line of the entry in the policy file.
    pub line: usize,
    /// The signed-in user; `None` = anonymous.
    pub user: Option<ExampleUser>,
    /// Request method.
    pub method: Method,
    /// Request path as a client would send it (normalised like a real request).
    pub path: String,
    /// Client address.
    pub client_ip: Option<IpAddr>,
    /// The time the example is judged at (Unix seconds; `max_age` is measured against it).
    pub now: u64,
    /// What must come out.
    pub expect: Expectation,
}

/// What an example produced, when it differs from what it expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// What came out, in the expectation's notation.
    pub got: String,
    /// Why the rules decided so.
    pub reason: String,
}

/// Runs one example against an app's rules.
pub fn run(rules: &RuleSet, example: &Example) -> Result<(), Mismatch> {
    let path = match normalise(&example.path) {
        Ok(p) => p,
        Err(e) => {
            return if example.expect.decision == "refused" {
                Ok(())
            } else {
                Err(Mismatch {
                    got: "refused".into(),
                    reason: format!("the gateway refuses this path before any rule: {e}"),
                })
            };
        }
    };
    let facts = RequestFacts {
        method: &example.method,
        path: &path,
        client_ip: example.client_ip,
        now: example.now,
    };
    let user = example.user.as_ref().map(ExampleUser::facts);
    let decision = rules.decide(&facts, user.as_ref());
    let got = Expectation {
        decision: decision.name().to_string(),
        rule: decision.rule().map(str::to_string),
    };
    if got == example.expect {
        Ok(())
    } else {
        Err(Mismatch {
            got: got.to_string(),
            reason: rules.reason(&decision, &facts, user.as_ref()),
        })
    }
}

/// `decision` named as an [`Expectation`] would be.
pub fn describe(decision: &Decision<'_>) -> String {
    match decision.rule() {
        Some(r) => format!("{}:{r}", decision.name()),
        None => decision.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_parse_only_in_their_forms() {
        for good in [
            "allow:staff",
            "public:assets",
            "deny:x",
            "require:y",
            "step-up:z",
            "login",
            "no_allow",
            "refused",
        ] {
            assert!(Expectation::parse(good).is_some(), "{good}");
        }
        for bad in ["allow", "deny:", "login:x", "permit:x", "", "no_allow:y"] {
            assert!(Expectation::parse(bad).is_none(), "{bad}");
        }
    }
}
