//! Access rules of one app and the pure decision over them.
//!
//! Semantics, identical for every app (and stated in `policies/README.md`): nobody gets in
//! unless some `[[allow]]` rule matches; a matching `[[deny]]` always wins; every condition
//! listed in a rule must hold (inside a list, any value may match); rule order never matters.
//!
//! This module knows nothing of Pingora, sockets or files: it is given request facts and
//! returns a [`Decision`]. Compilation from policy files lives in `config::app`.

pub mod examples;
pub mod path;
pub mod pattern;

pub use pattern::{PathPattern, PatternError};

use http::Method;
use ipnet::IpNet;
use regex::Regex;
use std::net::IpAddr;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// `[[allow]] public = true`: anyone, no login.
    AllowPublic,
    /// `[[allow]]` without `public`: signed-in users meeting the rule's identity conditions.
    AllowSignedIn,
    /// `[[deny]]`: refused, whatever else matches.
    Deny,
    /// `[[require]]`: where it applies (its paths and methods), its conditions must hold.
    Require,
}

impl RuleKind {
    /// The rule's table name as the policy file writes it: `allow`, `deny` or `require`.
    pub fn table(self) -> &'static str {
        match self {
            RuleKind::AllowPublic | RuleKind::AllowSignedIn => "allow",
            RuleKind::Deny => "deny",
            RuleKind::Require => "require",
        }
    }
}

/// Whether a rule is enforced or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Decides requests.
    #[default]
    Enforce,
    /// Only logged: "would allow / would deny", never changes a decision.
    Shadow,
}

/// A test on one claim or attribute (any of its values may pass).
#[derive(Debug, Clone)]
pub enum ClaimTest {
    /// Equal to this value.
    Equals(String),
    /// One of these values.
    OneOf(Vec<String>),
    /// Matches this anchored regular expression.
    Matches(Regex),
}

/// A condition on a claim (OIDC) or attribute (SAML) kept in the session.
#[derive(Debug, Clone)]
pub struct ClaimCondition {
    /// Claim name (`sub`, `email`, `name`, `idp`, `acr`, `amr`, `groups`, or a kept claim).
    pub name: String,
    /// The test.
    pub test: ClaimTest,
}

impl ClaimCondition {
    fn holds(&self, user: &UserFacts<'_>) -> bool {
        user.values(&self.name).iter().any(|v| match &self.test {
            ClaimTest::Equals(want) => v == want,
            ClaimTest::OneOf(set) => set.iter().any(|w| w == v),
            ClaimTest::Matches(re) => re.is_match(v),
        })
    }

    fn describe(&self) -> String {
        match &self.test {
            ClaimTest::Equals(v) => format!("claim {} = {v:?}", self.name),
            ClaimTest::OneOf(vs) => format!("claim {} one of {vs:?}", self.name),
            ClaimTest::Matches(re) => format!("claim {} matches /{}/", self.name, re.as_str()),
        }
    }
}

/// Conditions on who the user is. Empty lists hold for every signed-in user; a rule with any
/// identity condition never matches an anonymous request.
#[derive(Debug, Clone, Default)]
pub struct IdentityConditions {
    /// Member of any of these groups (exact, case-sensitive, as the IdP spells them).
    pub groups: Vec<String>,
    /// Member of all of these groups.
    pub groups_all: Vec<String>,
    /// One of these email addresses (compared lower-case).
    pub emails: Vec<String>,
    /// Email in one of these domains (lower-case, compared to the part after the last `@`).
    pub email_domains: Vec<String>,
    /// Claim or attribute tests, all of which must pass.
    pub claims: Vec<ClaimCondition>,
    /// The request's bearer token grants any of these scopes (never holds for a browser
    /// session, which has no scopes).
    pub scopes: Vec<String>,
}

impl IdentityConditions {
    /// No identity condition at all.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
            && self.groups_all.is_empty()
            && self.emails.is_empty()
            && self.email_domains.is_empty()
            && self.claims.is_empty()
            && self.scopes.is_empty()
    }

    fn hold_for(&self, user: &UserFacts<'_>) -> bool {
        self.checks(user).iter().all(|c| c.held)
    }

    /// Each condition, described, with whether it holds for `user`.
    fn checks(&self, user: &UserFacts<'_>) -> Vec<Check> {
        let email = user.email.map(str::to_ascii_lowercase);
        let mut out = Vec::new();
        if !self.groups.is_empty() {
            out.push(Check::new(
                format!("groups any of {:?}", self.groups),
                self.groups.iter().any(|g| holds(user.groups, g)),
            ));
        }
        if !self.groups_all.is_empty() {
            out.push(Check::new(
                format!("groups all of {:?}", self.groups_all),
                self.groups_all.iter().all(|g| holds(user.groups, g)),
            ));
        }
        if !self.emails.is_empty() {
            out.push(Check::new(
                format!("email one of {:?}", self.emails),
                email.as_ref().is_some_and(|e| self.emails.contains(e)),
            ));
        }
        if !self.email_domains.is_empty() {
            out.push(Check::new(
                format!("email domain one of {:?}", self.email_domains),
                email
                    .as_ref()
                    .and_then(|e| e.rsplit_once('@'))
                    .is_some_and(|(_, domain)| self.email_domains.iter().any(|d| d == domain)),
            ));
        }
        for claim in &self.claims {
            out.push(Check::new(claim.describe(), claim.holds(user)));
        }
        if !self.scopes.is_empty() {
            out.push(Check::new(
                format!("token scopes any of {:?}", self.scopes),
                self.scopes.iter().any(|s| holds(user.scopes, s)),
            ));
        }
        out
    }
}

/// How recently and how strongly the user authenticated (`[[require]]` only). Unmet by a
/// signed-in user who otherwise qualifies, it asks for a step-up login rather than refusing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Strength {
    /// The session's `acr` must be one of these.
    pub acr: Vec<String>,
    /// The session's `amr` must contain one of these.
    pub amr: Vec<String>,
    /// Authenticated at most this long ago.
    pub max_age: Option<std::time::Duration>,
}

impl Strength {
    /// No strength condition.
    pub fn is_empty(&self) -> bool {
        self.acr.is_empty() && self.amr.is_empty() && self.max_age.is_none()
    }

    fn checks(&self, user: &UserFacts<'_>, now: u64) -> Vec<Check> {
        let mut out = Vec::new();
        if !self.acr.is_empty() {
            out.push(Check::new(
                format!("acr one of {:?}", self.acr),
                user.acr.is_some_and(|a| self.acr.iter().any(|w| w == a)),
            ));
        }
        if !self.amr.is_empty() {
            out.push(Check::new(
                format!("amr any of {:?}", self.amr),
                self.amr.iter().any(|m| holds(user.amr, m)),
            ));
        }
        if let Some(max) = self.max_age {
            out.push(Check::new(
                format!("authenticated within {}s", max.as_secs()),
                user.auth_time
                    .is_some_and(|t| now.saturating_sub(t) <= max.as_secs()),
            ));
        }
        out
    }

    fn holds(&self, user: Option<&UserFacts<'_>>, now: u64) -> bool {
        if self.is_empty() {
            return true;
        }
        user.is_some_and(|u| self.checks(u, now).iter().all(|c| c.held))
    }
}

/// A weekly time window in a time zone: `days` (empty = every day) between `from` and `to`
/// (minutes after midnight; `from > to` spans midnight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindow {
    /// Days of the week (local), empty = all.
    pub days: Vec<chrono::Weekday>,
    /// Start, minutes after local midnight (inclusive).
    pub from: u32,
    /// End, minutes after local midnight (exclusive).
    pub to: u32,
    /// The time zone the window is written in.
    pub tz: chrono_tz::Tz,
}

impl TimeWindow {
    /// Is `now` (Unix seconds) inside the window?
    pub fn contains(&self, now: u64) -> bool {
        use chrono::{Datelike, TimeZone, Timelike};
        let Ok(secs) = i64::try_from(now) else {
            return false;
        };
        let Some(local) = chrono::Utc
            .timestamp_opt(secs, 0)
            .single()
            .map(|t| t.with_timezone(&self.tz))
        else {
            return false;
        };
        let minute = local.hour() * 60 + local.minute();
        let day_ok = self.days.is_empty() || self.days.contains(&local.weekday());
        let time_ok = if self.from <= self.to {
            self.from <= minute && minute < self.to
        } else {
            minute >= self.from || minute < self.to
        };
        day_ok && time_ok
    }

    fn describe(&self) -> String {
        let days: Vec<String> = self.days.iter().map(ToString::to_string).collect();
        format!(
            "time within {} {:02}:{:02}-{:02}:{:02} {}",
            if days.is_empty() {
                "every day".to_string()
            } else {
                days.join(",")
            },
            self.from / 60,
            self.from % 60,
            self.to / 60,
            self.to % 60,
            self.tz
        )
    }
}

/// Does a user's list (groups, amr) hold `wanted`?
fn holds(list: &[std::sync::Arc<str>], wanted: &str) -> bool {
    list.iter().any(|have| **have == *wanted)
}

/// What the rules know about a signed-in user.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserFacts<'a> {
    /// Stable subject (OIDC `sub`, SAML NameID).
    pub subject: &'a str,
    /// Verified email, if the IdP gave one.
    pub email: Option<&'a str>,
    /// Display name.
    pub name: Option<&'a str>,
    /// Group names.
    pub groups: &'a [std::sync::Arc<str>],
    /// The IdP that signed the user in.
    pub idp: &'a str,
    /// Authentication context (`acr`, SAML AuthnContextClassRef).
    pub acr: Option<&'a str>,
    /// Authentication methods (`amr`).
    pub amr: &'a [std::sync::Arc<str>],
    /// Other kept claims or attributes.
    pub claims: &'a [(String, Vec<String>)],
    /// When the user authenticated at the IdP (Unix seconds).
    pub auth_time: Option<u64>,
    /// Scopes of the request's bearer token (empty for a browser session).
    pub scopes: &'a [std::sync::Arc<str>],
}

impl<'a> UserFacts<'a> {
    /// Values of a claim by name: the standard ones first, then kept claims.
    pub fn values(&self, name: &str) -> Vec<&'a str> {
        match name {
            "sub" => vec![self.subject],
            "email" => self.email.into_iter().collect(),
            "name" => self.name.into_iter().collect(),
            "idp" => vec![self.idp],
            "acr" => self.acr.into_iter().collect(),
            "amr" => self.amr.iter().map(|m| &**m).collect(),
            "groups" => self.groups.iter().map(|g| &**g).collect(),
            other => self
                .claims
                .iter()
                .filter(|(n, _)| n == other)
                .flat_map(|(_, v)| v.iter().map(String::as_str))
                .collect(),
        }
    }
}

/// One condition of a rule and whether it held (for `policy explain` and audit reasons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The condition, in words.
    pub condition: String,
    /// Did it hold?
    pub held: bool,
}

impl Check {
    fn new(condition: String, held: bool) -> Self {
        Self { condition, held }
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    id: String,
    why: String,
    kind: RuleKind,
    mode: Mode,
    adaptive: bool,
    paths: Vec<PathPattern>,
    methods: Vec<Method>,
    networks: Vec<IpNet>,
    who: IdentityConditions,
    strength: Strength,
    time: Option<TimeWindow>,
}

impl Rule {
    /// The same rule for an app whose paths compare without letter case.
    pub fn with_case_folded_paths(mut self) -> Self {
        self.paths = self
            .paths
            .into_iter()
            .map(PathPattern::case_folded)
            .collect();
        self
    }

    /// Builds a rule; `config::app` validates the pieces first.
    pub fn new(
        id: String,
        why: String,
        kind: RuleKind,
        paths: Vec<PathPattern>,
        methods: Vec<Method>,
    ) -> Self {
        Self {
            id,
            why,
            kind,
            mode: Mode::Enforce,
            adaptive: false,
            paths,
            methods,
            networks: Vec::new(),
            who: IdentityConditions::default(),
            strength: Strength::default(),
            time: None,
        }
    }

    /// Adds a time-window condition.
    pub fn with_time(mut self, time: Option<TimeWindow>) -> Self {
        self.time = time;
        self
    }

    /// Adds authentication-strength conditions (require rules).
    pub fn with_strength(mut self, strength: Strength) -> Self {
        self.strength = strength;
        self
    }

    /// Its authentication-strength conditions.
    pub fn strength(&self) -> &Strength {
        &self.strength
    }

    /// Adds conditions on who the user is.
    pub fn with_identity(mut self, who: IdentityConditions) -> Self {
        self.who = who;
        self
    }

    /// Adds a condition on the client network (any of these CIDRs).
    pub fn with_networks(mut self, networks: Vec<IpNet>) -> Self {
        self.networks = networks;
        self
    }

    /// Enforced or shadow.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// A public rule that still sends identity when the browser has a session.
    pub fn with_adaptive(mut self, adaptive: bool) -> Self {
        self.adaptive = adaptive;
        self
    }

    /// Stable name used in logs, audit records and tests.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The policy author's reason for the rule.
    pub fn why(&self) -> &str {
        &self.why
    }

    /// Allow, deny or require.
    pub fn kind(&self) -> RuleKind {
        self.kind
    }

    /// Enforced or shadow.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Its path conditions.
    pub fn paths(&self) -> &[PathPattern] {
        &self.paths
    }

    /// Its identity conditions.
    pub fn identity(&self) -> &IdentityConditions {
        &self.who
    }

    /// Does this (deny) rule refuse every request `allow` could admit? True when it has no
    /// condition on who, where from or when, and its paths and methods cover the allow rule's.
    /// Used by `check` to warn about allow rules that can never take effect.
    pub fn always_overrides(&self, allow: &Rule) -> bool {
        if self.kind != RuleKind::Deny || self.mode != Mode::Enforce || allow.mode != Mode::Enforce
        {
            return false;
        }
        if !self.who.is_empty() || !self.networks.is_empty() || self.time.is_some() {
            return false;
        }
        let methods_covered = self.methods.is_empty()
            || (!allow.methods.is_empty()
                && allow.methods.iter().all(|m| self.methods.contains(m)));
        let covers = |path: &PathPattern| {
            self.paths.iter().any(|d| match (d, path) {
                (PathPattern::Under(dir), PathPattern::Exact(p) | PathPattern::Under(p)) => p
                    .strip_prefix(dir.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
                (PathPattern::Exact(a), PathPattern::Exact(b)) => a == b,
                _ => false,
            })
        };
        let paths_covered = self.paths.is_empty()
            || if allow.paths.is_empty() {
                self.paths
                    .iter()
                    .any(|d| d == &PathPattern::Under(String::new()))
            } else {
                allow.paths.iter().all(covers)
            };
        methods_covered && paths_covered
    }

    /// Where the rule applies: paths and methods (absent = everywhere).
    fn in_scope(&self, request: &RequestFacts<'_>) -> bool {
        let path_ok = self.paths.is_empty() || self.paths.iter().any(|p| p.matches(request.path));
        let method_ok = self.methods.is_empty() || self.methods.iter().any(|m| m == request.method);
        path_ok && method_ok
    }

    /// The client network and time conditions hold (absent: always).
    fn network_ok(&self, request: &RequestFacts<'_>) -> bool {
        let net_ok = self.networks.is_empty()
            || request
                .client_ip
                .is_some_and(|ip| self.networks.iter().any(|n| n.contains(&ip)));
        net_ok && self.time.as_ref().is_none_or(|w| w.contains(request.now))
    }

    /// The identity conditions hold for this user (never for an anonymous request, unless the
    /// rule has none and is not a signed-in rule).
    fn matches_user(&self, user: Option<&UserFacts<'_>>) -> bool {
        match user {
            Some(u) => self.who.hold_for(u),
            None => self.who.is_empty() && self.kind != RuleKind::AllowSignedIn,
        }
    }

    /// Everything about the rule holds for this request and user.
    fn matches(&self, request: &RequestFacts<'_>, user: Option<&UserFacts<'_>>) -> bool {
        self.in_scope(request) && self.network_ok(request) && self.matches_user(user)
    }

    /// A require rule's conditions (beyond its scope) hold.
    fn requirement_met(&self, request: &RequestFacts<'_>, user: Option<&UserFacts<'_>>) -> bool {
        self.network_ok(request)
            && self.matches_user(user)
            && self.strength.holds(user, request.now)
    }

    /// Each condition of the rule with whether it holds, for explanations.
    /// The rule's conditions in words, for people reading the policy (the auditor's report).
    pub fn conditions(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.paths.is_empty() {
            let paths: Vec<String> = self.paths.iter().map(PathPattern::text).collect();
            out.push(format!("path one of {paths:?}"));
        }
        if !self.methods.is_empty() {
            let names: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
            out.push(format!("method one of {names:?}"));
        }
        if !self.networks.is_empty() {
            let nets: Vec<String> = self.networks.iter().map(ToString::to_string).collect();
            out.push(format!("client network one of {nets:?}"));
        }
        if let Some(window) = &self.time {
            out.push(window.describe());
        }
        let nobody = UserFacts::default();
        out.extend(self.who.checks(&nobody).into_iter().map(|c| c.condition));
        out.extend(
            self.strength
                .checks(&nobody, 0)
                .into_iter()
                .map(|c| c.condition),
        );
        match self.kind {
            RuleKind::AllowPublic => out.push("anyone, without signing in".into()),
            RuleKind::AllowSignedIn if self.who.is_empty() && self.strength.is_empty() => {
                out.push("any signed-in user".into());
            }
            _ => {}
        }
        out
    }

    pub fn checks(&self, request: &RequestFacts<'_>, user: Option<&UserFacts<'_>>) -> Vec<Check> {
        let mut out = Vec::new();
        if !self.paths.is_empty() {
            out.push(Check::new(
                "path".to_string(),
                self.paths.iter().any(|p| p.matches(request.path)),
            ));
        }
        if !self.methods.is_empty() {
            let names: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
            out.push(Check::new(
                format!("method one of {names:?}"),
                self.methods.iter().any(|m| m == request.method),
            ));
        }
        if !self.networks.is_empty() {
            let nets: Vec<String> = self.networks.iter().map(ToString::to_string).collect();
            out.push(Check::new(
                format!("client network one of {nets:?}"),
                request
                    .client_ip
                    .is_some_and(|ip| self.networks.iter().any(|n| n.contains(&ip))),
            ));
        }
        if let Some(window) = &self.time {
            out.push(Check::new(window.describe(), window.contains(request.now)));
        }
        match user {
            Some(u) => {
                out.extend(self.who.checks(u));
                out.extend(self.strength.checks(u, request.now));
            }
            None if self.kind == RuleKind::AllowSignedIn
                || !self.who.is_empty()
                || !self.strength.is_empty() =>
            {
                out.push(Check::new("signed in".to_string(), false));
            }
            None => {}
        }
        out
    }
}

/// What the rules look at. `path` must be the normalised path (see [`path::normalise`]).
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Normalised path, without the query.
    pub path: &'a str,
    /// The client's address (from the socket, or a trusted proxy's `X-Forwarded-For`).
    pub client_ip: Option<IpAddr>,
    /// Now, in Unix seconds (for `max_age`).
    pub now: u64,
}

/// The outcome of the rules for one request, naming the rule that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// A public allow rule matched and no deny rule did.
    Public {
        /// Id of the allow rule.
        rule: &'a str,
        /// Send identity anyway when a session exists (`adaptive = true`).
        adaptive: bool,
    },
    /// A signed-in user meets an allow rule and no deny rule matched.
    Allow {
        /// Id of the allow rule.
        rule: &'a str,
    },
    /// A deny rule matched (the first by id, so logs are stable).
    Deny {
        /// Id of the deny rule.
        rule: &'a str,
    },
    /// A require rule applies and its conditions do not hold.
    Unmet {
        /// Id of the require rule.
        rule: &'a str,
    },
    /// A require rule applies and only the authentication is too weak or too old: the
    /// signed-in user must authenticate again, more strongly.
    StepUp {
        /// Id of the require rule.
        rule: &'a str,
    },
    /// Anonymous request that a rule for signed-in users covers: sign in first.
    LoginNeeded,
    /// No allow rule matched: default deny.
    NoAllowMatched,
}

impl Decision<'_> {
    /// The rule that decided, when one did (default deny and "sign in first" name none).
    pub fn rule(&self) -> Option<&str> {
        match self {
            Decision::Public { rule, .. }
            | Decision::Allow { rule }
            | Decision::Deny { rule }
            | Decision::Unmet { rule }
            | Decision::StepUp { rule } => Some(rule),
            Decision::LoginNeeded | Decision::NoAllowMatched => None,
        }
    }

    /// Short name used in audit records and `policy test` expectations.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Public { .. } => "public",
            Decision::Allow { .. } => "allow",
            Decision::Deny { .. } => "deny",
            Decision::Unmet { .. } => "require",
            Decision::StepUp { .. } => "step-up",
            Decision::LoginNeeded => "login",
            Decision::NoAllowMatched => "no_allow",
        }
    }

    /// Is the request let through?
    pub fn admits(&self) -> bool {
        matches!(self, Decision::Public { .. } | Decision::Allow { .. })
    }
}

/// A shadow rule that would have changed the outcome, had it been enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowHit<'a> {
    /// The shadow rule.
    pub rule: &'a str,
    /// `allow`, `deny` or `require`: what it would have done.
    pub would: &'static str,
}

/// What the rules made of a request, kept to the end of it (logs, audit, metrics), so nothing
/// downstream has to match strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A public rule let it through.
    Public,
    /// An allow rule let a signed-in user through.
    Allowed,
    /// A deny rule matched.
    Denied,
    /// A require rule's conditions do not hold.
    Unmet,
    /// A stronger sign-in was asked for.
    StepUp,
    /// A stronger sign-in would be needed but cannot be asked for (no session, unknown rule).
    StepUpRefused,
    /// Sign-in needed first.
    LoginNeeded,
    /// No allow rule matched (default deny).
    NoAllowRule,
}

impl Outcome {
    /// The outcome of a decision.
    pub fn of(decision: &Decision<'_>) -> Self {
        match decision {
            Decision::Public { .. } => Outcome::Public,
            Decision::Allow { .. } => Outcome::Allowed,
            Decision::Deny { .. } => Outcome::Denied,
            Decision::Unmet { .. } => Outcome::Unmet,
            Decision::StepUp { .. } => Outcome::StepUp,
            Decision::LoginNeeded => Outcome::LoginNeeded,
            Decision::NoAllowMatched => Outcome::NoAllowRule,
        }
    }

    /// Name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Public => "public",
            Outcome::Allowed => "allow",
            Outcome::Denied => "deny",
            Outcome::Unmet => "require",
            Outcome::StepUp => "step-up",
            Outcome::StepUpRefused => "step-up-refused",
            Outcome::LoginNeeded => "login",
            Outcome::NoAllowRule => "no_allow",
        }
    }
}

/// The decision and any shadow rules that would have decided otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// The enforced decision.
    pub decision: Decision<'a>,
    /// Shadow rules that matched.
    pub shadow: Vec<ShadowHit<'a>>,
}

/// The rules of one app.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    require: Vec<Rule>,
    /// Paths compare without ASCII letter case (the patterns were folded when compiled).
    fold_case: bool,
}

impl RuleSet {
    /// Builds a rule set from compiled rules (any order).
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut set = Self::default();
        for rule in rules {
            match rule.kind {
                RuleKind::Deny => set.deny.push(rule),
                RuleKind::Require => set.require.push(rule),
                RuleKind::AllowPublic | RuleKind::AllowSignedIn => set.allow.push(rule),
            }
        }
        // Sorted by id so that, when several rules match, the one named in logs is stable
        // whatever order the file lists them in.
        for list in [&mut set.allow, &mut set.deny, &mut set.require] {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        set
    }

    /// Compares paths without ASCII letter case: the rules' patterns must have been folded
    /// ([`PathPattern::case_folded`]); request paths are lowered before matching.
    pub fn with_case_folding(mut self, fold_case: bool) -> Self {
        self.fold_case = fold_case;
        self
    }

    /// The path as this set's rules compare it (lower-cased when folding case).
    pub fn rule_path<'p>(&self, path: &'p str) -> std::borrow::Cow<'p, str> {
        if self.fold_case && path.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(path.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(path)
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.allow.len() + self.deny.len() + self.require.len()
    }

    /// Are there no rules at all (so everything is denied)?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rule called `id`.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules().find(|r| r.id == id)
    }

    /// Every rule, allow rules first, then deny, then require (each sorted by id).
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.allow.iter().chain(&self.deny).chain(&self.require)
    }

    /// Does any rule need a signed-in user (so the app needs an IdP)?
    pub fn needs_login(&self) -> bool {
        self.rules().any(|r| {
            r.kind == RuleKind::AllowSignedIn || !r.who.is_empty() || !r.strength.is_empty()
        })
    }

    /// Decides one request for an anonymous (`None`) or signed-in user.
    pub fn decide(&self, request: &RequestFacts<'_>, user: Option<&UserFacts<'_>>) -> Decision<'_> {
        self.evaluate(request, user).decision
    }

    /// Decides one request and reports shadow rules. Pure: same facts, same answer. A
    /// matching deny wins; then every require rule in scope must hold (an anonymous user
    /// whom login could help is sent to log in); then some allow rule must match.
    pub fn evaluate(
        &self,
        request: &RequestFacts<'_>,
        user: Option<&UserFacts<'_>>,
    ) -> Verdict<'_> {
        let path = self.rule_path(request.path);
        let request = &RequestFacts {
            path: &path,
            ..*request
        };
        let enforced = |r: &&Rule| r.mode == Mode::Enforce;
        let shadowed = |r: &&Rule| r.mode == Mode::Shadow;
        let mut shadow: Vec<ShadowHit<'_>> = self
            .deny
            .iter()
            .filter(shadowed)
            .filter(|r| r.matches(request, user))
            .map(|r| ShadowHit {
                rule: &r.id,
                would: "deny",
            })
            .collect();
        shadow.extend(
            self.require
                .iter()
                .filter(shadowed)
                .filter(|r| r.in_scope(request) && !r.requirement_met(request, user))
                .map(|r| ShadowHit {
                    rule: &r.id,
                    would: "require",
                }),
        );
        let decision = self.enforced_decision(request, user, &enforced);
        if !decision.admits() {
            shadow.extend(
                self.allow
                    .iter()
                    .filter(shadowed)
                    .filter(|r| r.matches(request, user))
                    .map(|r| ShadowHit {
                        rule: &r.id,
                        would: "allow",
                    }),
            );
        }
        Verdict { decision, shadow }
    }

    /// Why a request was refused, naming the conditions that failed (for audit records and
    /// `policy explain`). Allowed requests get a fixed phrase (no work on the hot path).
    pub fn reason(
        &self,
        decision: &Decision<'_>,
        request: &RequestFacts<'_>,
        user: Option<&UserFacts<'_>>,
    ) -> String {
        let path = self.rule_path(request.path);
        let request = &RequestFacts {
            path: &path,
            ..*request
        };
        let failed = |r: &Rule| -> String {
            let missing: Vec<String> = r
                .checks(request, user)
                .into_iter()
                .filter(|c| !c.held)
                .map(|c| c.condition)
                .collect();
            missing.join("; ")
        };
        let find = |id: &str| self.rules().find(|r| r.id == id);
        match decision {
            Decision::Public { .. } => "a public allow rule matched".into(),
            Decision::Allow { .. } => "an allow rule matched and no deny rule did".into(),
            Decision::Deny { rule } => format!("deny rule `{rule}` matched"),
            Decision::Unmet { rule } => match find(rule) {
                Some(r) => format!("require rule `{rule}` not met: {}", failed(r)),
                None => format!("require rule `{rule}` not met"),
            },
            Decision::StepUp { rule } => match find(rule) {
                Some(r) => format!(
                    "require rule `{rule}` needs a stronger or fresher sign-in: {}",
                    failed(r)
                ),
                None => format!("require rule `{rule}` needs a stronger sign-in"),
            },
            Decision::LoginNeeded => {
                "sign-in required: a rule for signed-in users covers this request".into()
            }
            Decision::NoAllowMatched => {
                // The allow rules that apply here, and what each lacked.
                let near: Vec<String> = self
                    .allow
                    .iter()
                    .filter(|r| r.mode == Mode::Enforce && r.in_scope(request))
                    .map(|r| format!("`{}` needs {}", r.id, failed(r)))
                    .collect();
                if near.is_empty() {
                    "no allow rule covers this path and method (default deny)".into()
                } else {
                    format!("no allow rule matched (default deny): {}", near.join("; "))
                }
            }
        }
    }

    fn enforced_decision<'s>(
        &'s self,
        request: &RequestFacts<'_>,
        user: Option<&UserFacts<'_>>,
        enforced: &dyn Fn(&&Rule) -> bool,
    ) -> Decision<'s> {
        if let Some(rule) = self
            .deny
            .iter()
            .filter(|r| enforced(r))
            .find(|r| r.matches(request, user))
        {
            return Decision::Deny { rule: &rule.id };
        }
        for rule in self.require.iter().filter(|r| enforced(r)) {
            if rule.in_scope(request) && !rule.requirement_met(request, user) {
                if user.is_none() && (!rule.who.is_empty() || !rule.strength.is_empty()) {
                    return Decision::LoginNeeded;
                }
                if user.is_some() && rule.network_ok(request) && rule.matches_user(user) {
                    return Decision::StepUp { rule: &rule.id };
                }
                return Decision::Unmet { rule: &rule.id };
            }
        }
        if let Some(rule) = self
            .allow
            .iter()
            .filter(|r| enforced(r))
            .find(|r| r.matches(request, user))
        {
            return match rule.kind {
                RuleKind::AllowPublic => Decision::Public {
                    rule: &rule.id,
                    adaptive: rule.adaptive,
                },
                _ => Decision::Allow { rule: &rule.id },
            };
        }
        let login_would_help = user.is_none()
            && self.allow.iter().filter(|r| enforced(r)).any(|r| {
                r.kind == RuleKind::AllowSignedIn && r.in_scope(request) && r.network_ok(request)
            });
        if login_would_help {
            Decision::LoginNeeded
        } else {
            Decision::NoAllowMatched
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rule(id: &str, kind: RuleKind, paths: &[&str], methods: &[Method]) -> Rule {
        Rule::new(
            id.into(),
            "test".into(),
            kind,
            paths
                .iter()
                .map(|p| PathPattern::parse(p).unwrap())
                .collect(),
            methods.to_vec(),
        )
    }

    fn decide<'a>(set: &'a RuleSet, method: &Method, path: &str) -> Decision<'a> {
        set.decide(
            &RequestFacts {
                method,
                path,
                client_ip: None,
                now: 0,
            },
            None,
        )
    }

    fn signed_in(id: &str, paths: &[&str], who: IdentityConditions) -> Rule {
        rule(id, RuleKind::AllowSignedIn, paths, &[]).with_identity(who)
    }

    #[test]
    fn scope_conditions_hold_only_for_a_token_with_one_of_the_scopes() {
        let set = RuleSet::new(vec![signed_in(
            "api-read",
            &["/api/**"],
            IdentityConditions {
                scopes: vec!["orders:read".into(), "orders:admin".into()],
                ..Default::default()
            },
        )]);
        let facts = RequestFacts {
            method: &Method::GET,
            path: "/api/x",
            client_ip: None,
            now: 0,
        };
        let read: Vec<std::sync::Arc<str>> = vec!["profile".into(), "orders:read".into()];
        let write: Vec<std::sync::Arc<str>> = vec!["orders:write".into()];
        let caller = |scopes| UserFacts {
            subject: "batch",
            scopes,
            ..Default::default()
        };
        assert_eq!(
            set.decide(&facts, Some(&caller(&read))),
            Decision::Allow { rule: "api-read" }
        );
        assert_eq!(
            set.decide(&facts, Some(&caller(&write))),
            Decision::NoAllowMatched
        );
        // A browser session has no scopes.
        assert_eq!(
            set.decide(&facts, Some(&caller(&[]))),
            Decision::NoAllowMatched
        );
    }

    #[test]
    fn anonymous_request_covered_by_a_signed_in_rule_must_log_in() {
        let set = RuleSet::new(vec![
            signed_in(
                "staff",
                &["/**"],
                IdentityConditions {
                    groups: vec!["staff".into()],
                    ..Default::default()
                },
            ),
            rule("assets", RuleKind::AllowPublic, &["/static/**"], &[]),
        ]);
        assert_eq!(decide(&set, &Method::GET, "/x"), Decision::LoginNeeded);
        assert_eq!(
            decide(&set, &Method::GET, "/static/a.css"),
            Decision::Public {
                rule: "assets",
                adaptive: false
            }
        );
        let staff: Vec<std::sync::Arc<str>> = vec!["staff".into()];
        let alice = UserFacts {
            email: Some("alice@corp.example"),
            groups: &staff,
            ..Default::default()
        };
        let facts = RequestFacts {
            method: &Method::GET,
            path: "/x",
            client_ip: None,
            now: 0,
        };
        assert_eq!(
            set.decide(&facts, Some(&alice)),
            Decision::Allow { rule: "staff" }
        );
        let nobody = UserFacts {
            email: Some("eve@corp.example"),
            groups: &[],
            ..Default::default()
        };
        assert_eq!(set.decide(&facts, Some(&nobody)), Decision::NoAllowMatched);
    }

    #[test]
    fn identity_conditions_all_hold_and_deny_by_domain_wins() {
        let set = RuleSet::new(vec![
            signed_in(
                "corp",
                &[],
                IdentityConditions {
                    email_domains: vec!["corp.example".into()],
                    ..Default::default()
                },
            ),
            signed_in(
                "named",
                &[],
                IdentityConditions {
                    emails: vec!["guest@other.example".into()],
                    ..Default::default()
                },
            ),
            rule("no-contractors", RuleKind::Deny, &[], &[]).with_identity(IdentityConditions {
                email_domains: vec!["contractors.corp.example".into()],
                ..Default::default()
            }),
        ]);
        let facts = RequestFacts {
            method: &Method::GET,
            path: "/",
            client_ip: None,
            now: 0,
        };
        let user = |email| UserFacts {
            email: Some(email),
            groups: &[],
            ..Default::default()
        };
        assert_eq!(
            set.decide(&facts, Some(&user("Ana@CORP.example"))),
            Decision::Allow { rule: "corp" }
        );
        assert_eq!(
            set.decide(&facts, Some(&user("guest@other.example"))),
            Decision::Allow { rule: "named" }
        );
        assert_eq!(
            set.decide(&facts, Some(&user("x@notcorp.example"))),
            Decision::NoAllowMatched
        );
        assert_eq!(
            set.decide(&facts, Some(&user("x@corp.example.evil"))),
            Decision::NoAllowMatched
        );
        assert_eq!(
            set.decide(&facts, Some(&user("c@contractors.corp.example"))),
            Decision::Deny {
                rule: "no-contractors"
            }
        );
        // Anonymous: the identity deny cannot apply; logging in is the way forward.
        assert_eq!(set.decide(&facts, None), Decision::LoginNeeded);
        let no_email = UserFacts {
            email: None,
            groups: &[],
            ..Default::default()
        };
        assert_eq!(
            set.decide(&facts, Some(&no_email)),
            Decision::NoAllowMatched
        );
    }

    #[test]
    fn nothing_is_allowed_without_an_allow_rule() {
        let set = RuleSet::new(vec![]);
        assert_eq!(decide(&set, &Method::GET, "/"), Decision::NoAllowMatched);
    }

    #[test]
    fn deny_rule_beats_allow_rule_whatever_the_order() {
        let allow = rule("everything", RuleKind::AllowPublic, &["/**"], &[]);
        let deny = rule("no-admin", RuleKind::Deny, &["/admin/**"], &[]);
        for rules in [vec![allow.clone(), deny.clone()], vec![deny, allow]] {
            let set = RuleSet::new(rules);
            assert_eq!(
                decide(&set, &Method::GET, "/admin/users"),
                Decision::Deny { rule: "no-admin" }
            );
            assert_eq!(
                decide(&set, &Method::GET, "/admin"),
                Decision::Deny { rule: "no-admin" }
            );
            assert_eq!(
                decide(&set, &Method::GET, "/administrator"),
                Decision::Public {
                    rule: "everything",
                    adaptive: false
                }
            );
        }
    }

    #[test]
    fn every_condition_of_a_rule_must_hold() {
        let set = RuleSet::new(vec![rule(
            "read-docs",
            RuleKind::AllowPublic,
            &["/docs/**"],
            &[Method::GET, Method::HEAD],
        )]);
        assert_eq!(
            decide(&set, &Method::GET, "/docs/a"),
            Decision::Public {
                rule: "read-docs",
                adaptive: false
            }
        );
        assert_eq!(
            decide(&set, &Method::HEAD, "/docs/a"),
            Decision::Public {
                rule: "read-docs",
                adaptive: false
            }
        );
        assert_eq!(
            decide(&set, &Method::POST, "/docs/a"),
            Decision::NoAllowMatched
        );
        assert_eq!(
            decide(&set, &Method::GET, "/other"),
            Decision::NoAllowMatched
        );
    }

    #[test]
    fn exact_paths_match_only_themselves() {
        let set = RuleSet::new(vec![rule("login", RuleKind::AllowPublic, &["/login"], &[])]);
        assert_eq!(
            decide(&set, &Method::GET, "/login"),
            Decision::Public {
                rule: "login",
                adaptive: false
            }
        );
        assert_eq!(
            decide(&set, &Method::GET, "/login/x"),
            Decision::NoAllowMatched
        );
        assert_eq!(
            decide(&set, &Method::GET, "/LOGIN"),
            Decision::NoAllowMatched
        );
    }

    #[test]
    fn root_is_exact_and_double_star_covers_everything() {
        let set = RuleSet::new(vec![rule("home", RuleKind::AllowPublic, &["/"], &[])]);
        assert_eq!(
            decide(&set, &Method::GET, "/"),
            Decision::Public {
                rule: "home",
                adaptive: false
            }
        );
        assert_eq!(decide(&set, &Method::GET, "/x"), Decision::NoAllowMatched);
        let set = RuleSet::new(vec![rule("all", RuleKind::AllowPublic, &["/**"], &[])]);
        assert_eq!(
            decide(&set, &Method::GET, "/x/y"),
            Decision::Public {
                rule: "all",
                adaptive: false
            }
        );
    }

    fn req<'a>(path: &'a str, ip: &str) -> RequestFacts<'a> {
        RequestFacts {
            method: &Method::GET,
            path,
            client_ip: ip.parse().ok(),
            now: 1_000_000,
        }
    }

    fn person<'a>(
        groups: &'a [std::sync::Arc<str>],
        claims: &'a [(String, Vec<String>)],
    ) -> UserFacts<'a> {
        UserFacts {
            subject: "00u1",
            email: Some("ana@corp.example"),
            groups,
            idp: "okta",
            acr: Some("urn:okta:loa:1fa:pwd"),
            claims,
            ..Default::default()
        }
    }

    #[test]
    fn table_of_identity_and_network_conditions() {
        let finance_staff: Vec<std::sync::Arc<str>> = vec!["staff".into(), "finance".into()];
        let staff_only: Vec<std::sync::Arc<str>> = vec!["staff".into()];
        let dept = vec![("department".to_string(), vec!["finance".to_string()])];
        let other_dept = vec![("department".to_string(), vec!["sales".to_string()])];
        let claim = |name: &str, test: ClaimTest| ClaimCondition {
            name: name.into(),
            test,
        };
        let cases: Vec<(&str, IdentityConditions, Vec<IpNet>, bool, bool)> = vec![
            // (name, identity, networks, holds for finance staff in finance from 10.1.2.3,
            //  holds for plain staff in sales from 192.0.2.7)
            (
                "groups any",
                IdentityConditions {
                    groups: vec!["finance".into(), "hr".into()],
                    ..Default::default()
                },
                vec![],
                true,
                false,
            ),
            (
                "groups all",
                IdentityConditions {
                    groups_all: vec!["staff".into(), "finance".into()],
                    ..Default::default()
                },
                vec![],
                true,
                false,
            ),
            (
                "claim equals",
                IdentityConditions {
                    claims: vec![claim("department", ClaimTest::Equals("finance".into()))],
                    ..Default::default()
                },
                vec![],
                true,
                false,
            ),
            (
                "claim one of",
                IdentityConditions {
                    claims: vec![claim(
                        "department",
                        ClaimTest::OneOf(vec!["hr".into(), "sales".into()]),
                    )],
                    ..Default::default()
                },
                vec![],
                false,
                true,
            ),
            (
                "claim regex",
                IdentityConditions {
                    claims: vec![claim(
                        "sub",
                        ClaimTest::Matches(Regex::new("^00u[0-9]+$").unwrap()),
                    )],
                    ..Default::default()
                },
                vec![],
                true,
                true,
            ),
            (
                "standard claim",
                IdentityConditions {
                    claims: vec![claim("idp", ClaimTest::Equals("okta".into()))],
                    ..Default::default()
                },
                vec![],
                true,
                true,
            ),
            (
                "acr",
                IdentityConditions {
                    claims: vec![claim(
                        "acr",
                        ClaimTest::Equals("urn:okta:loa:2fa:any".into()),
                    )],
                    ..Default::default()
                },
                vec![],
                false,
                false,
            ),
            (
                "network",
                IdentityConditions::default(),
                vec!["10.0.0.0/8".parse().unwrap()],
                true,
                false,
            ),
        ];
        for (name, who, nets, want_a, want_b) in cases {
            let set = RuleSet::new(vec![rule("r", RuleKind::AllowSignedIn, &[], &[])
                .with_identity(who)
                .with_networks(nets)]);
            let a = set.decide(&req("/x", "10.1.2.3"), Some(&person(&finance_staff, &dept)));
            let b = set.decide(
                &req("/x", "192.0.2.7"),
                Some(&person(&staff_only, &other_dept)),
            );
            assert_eq!(a == Decision::Allow { rule: "r" }, want_a, "{name}: {a:?}");
            assert_eq!(b == Decision::Allow { rule: "r" }, want_b, "{name}: {b:?}");
        }
        // A network rule with no client address (unknown) never matches.
        let set = RuleSet::new(vec![rule("r", RuleKind::AllowPublic, &[], &[])
            .with_networks(vec!["0.0.0.0/0".parse().unwrap()])]);
        let unknown = RequestFacts {
            method: &Method::GET,
            path: "/",
            client_ip: None,
            now: 0,
        };
        assert_eq!(set.decide(&unknown, None), Decision::NoAllowMatched);
    }

    #[test]
    fn require_rules_must_hold_where_they_apply() {
        let staff: Vec<std::sync::Arc<str>> = vec!["staff".into()];
        let admins: Vec<std::sync::Arc<str>> = vec!["staff".into(), "admins".into()];
        let set = RuleSet::new(vec![
            rule("staff", RuleKind::AllowSignedIn, &["/**"], &[]),
            rule("admin-area", RuleKind::Require, &["/admin/**"], &[]).with_identity(
                IdentityConditions {
                    groups: vec!["admins".into()],
                    ..Default::default()
                },
            ),
            rule("office-only", RuleKind::Require, &["/payroll/**"], &[])
                .with_networks(vec!["10.0.0.0/8".parse().unwrap()]),
        ]);
        let u = person(&staff, &[]);
        let a = person(&admins, &[]);
        assert_eq!(
            set.decide(&req("/wiki", "10.0.0.1"), Some(&u)),
            Decision::Allow { rule: "staff" }
        );
        assert_eq!(
            set.decide(&req("/admin/x", "10.0.0.1"), Some(&u)),
            Decision::Unmet { rule: "admin-area" }
        );
        assert_eq!(
            set.decide(&req("/admin/x", "10.0.0.1"), Some(&a)),
            Decision::Allow { rule: "staff" }
        );
        assert_eq!(
            set.decide(&req("/admin/x", "10.0.0.1"), None),
            Decision::LoginNeeded
        );
        assert_eq!(
            set.decide(&req("/payroll/q1", "192.0.2.1"), Some(&a)),
            Decision::Unmet {
                rule: "office-only"
            }
        );
        assert_eq!(
            set.decide(&req("/payroll/q1", "10.9.9.9"), Some(&a)),
            Decision::Allow { rule: "staff" }
        );
        let reason = set.reason(
            &Decision::Unmet { rule: "admin-area" },
            &req("/admin/x", "10.0.0.1"),
            Some(&u),
        );
        assert_eq!(
            reason,
            "require rule `admin-area` not met: groups any of [\"admins\"]"
        );
    }

    #[test]
    fn shadow_rules_are_reported_and_never_enforced() {
        let set = RuleSet::new(vec![
            rule("everyone", RuleKind::AllowPublic, &["/**"], &[]),
            rule("new-deny", RuleKind::Deny, &["/old/**"], &[]).with_mode(Mode::Shadow),
            rule("new-allow", RuleKind::AllowPublic, &["/**"], &[]).with_mode(Mode::Shadow),
        ]);
        let v = set.evaluate(&req("/old/page", "10.0.0.1"), None);
        assert_eq!(
            v.decision,
            Decision::Public {
                rule: "everyone",
                adaptive: false
            }
        );
        assert_eq!(
            v.shadow,
            vec![ShadowHit {
                rule: "new-deny",
                would: "deny"
            }]
        );
        let only_shadow_allow = RuleSet::new(vec![rule(
            "new-allow",
            RuleKind::AllowPublic,
            &["/**"],
            &[],
        )
        .with_mode(Mode::Shadow)]);
        let v = only_shadow_allow.evaluate(&req("/x", "10.0.0.1"), None);
        assert_eq!(v.decision, Decision::NoAllowMatched);
        assert_eq!(
            v.shadow,
            vec![ShadowHit {
                rule: "new-allow",
                would: "allow"
            }]
        );
    }

    #[test]
    fn refusal_reasons_name_the_missing_conditions() {
        let staff: Vec<std::sync::Arc<str>> = vec!["staff".into()];
        let set = RuleSet::new(vec![rule(
            "finance",
            RuleKind::AllowSignedIn,
            &["/ledger/**"],
            &[],
        )
        .with_identity(IdentityConditions {
            groups: vec!["finance".into()],
            ..Default::default()
        })]);
        let r = req("/ledger/2026", "10.0.0.1");
        let d = set.decide(&r, Some(&person(&staff, &[])));
        assert_eq!(d, Decision::NoAllowMatched);
        assert_eq!(
            set.reason(&d, &r, Some(&person(&staff, &[]))),
            "no allow rule matched (default deny): `finance` needs groups any of [\"finance\"]"
        );
        let elsewhere = req("/other", "10.0.0.1");
        assert_eq!(
            set.reason(&Decision::NoAllowMatched, &elsewhere, None),
            "no allow rule covers this path and method (default deny)"
        );
    }

    #[test]
    fn time_windows_follow_their_time_zone_and_may_span_midnight() {
        use chrono::Weekday::*;
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let office = TimeWindow {
            days: vec![Mon, Tue, Wed, Thu, Fri],
            from: 8 * 60,
            to: 18 * 60,
            tz: berlin,
        };
        let at = |text: &str| {
            u64::try_from(
                chrono::DateTime::parse_from_rfc3339(text)
                    .unwrap()
                    .timestamp(),
            )
            .unwrap()
        };
        // Monday 30 Nov 2026, 08:30 in Berlin is 07:30 UTC.
        assert!(office.contains(at("2026-11-30T07:30:00Z")));
        assert!(!office.contains(at("2026-11-30T06:59:00Z")), "07:59 Berlin");
        assert!(
            !office.contains(at("2026-11-30T17:00:00Z")),
            "18:00 Berlin is outside"
        );
        assert!(!office.contains(at("2026-11-29T10:00:00Z")), "Sunday");
        let night = TimeWindow {
            days: vec![],
            from: 22 * 60,
            to: 6 * 60,
            tz: chrono_tz::UTC,
        };
        assert!(night.contains(at("2026-11-30T23:00:00Z")));
        assert!(night.contains(at("2026-11-30T05:59:00Z")));
        assert!(!night.contains(at("2026-11-30T12:00:00Z")));
        let set = RuleSet::new(vec![
            rule("office-hours", RuleKind::AllowPublic, &[], &[]).with_time(Some(office))
        ]);
        let mut r = req("/", "10.0.0.1");
        r.now = at("2026-11-30T07:30:00Z");
        assert_eq!(
            set.decide(&r, None),
            Decision::Public {
                rule: "office-hours",
                adaptive: false
            }
        );
        r.now = at("2026-11-29T07:30:00Z");
        assert_eq!(set.decide(&r, None), Decision::NoAllowMatched);
    }

    #[test]
    fn a_deny_rule_always_overrides_only_what_it_fully_covers() {
        let allow =
            |paths: &[&str], methods: &[Method]| rule("a", RuleKind::AllowPublic, paths, methods);
        let deny = |paths: &[&str], methods: &[Method]| rule("d", RuleKind::Deny, paths, methods);
        assert!(deny(&["/admin/**"], &[]).always_overrides(&allow(&["/admin/users"], &[])));
        assert!(deny(&["/admin/**"], &[]).always_overrides(&allow(&["/admin/**"], &[Method::GET])));
        assert!(deny(&[], &[]).always_overrides(&allow(&["/x"], &[])));
        assert!(!deny(&["/admin/**"], &[]).always_overrides(&allow(&["/administrator"], &[])));
        assert!(!deny(&["/admin/**"], &[]).always_overrides(&allow(&[], &[])));
        assert!(!deny(&["/admin/**"], &[Method::POST]).always_overrides(&allow(&["/admin/x"], &[])));
        assert!(!deny(&["/admin/**"], &[])
            .with_identity(IdentityConditions {
                groups: vec!["x".into()],
                ..Default::default()
            })
            .always_overrides(&allow(&["/admin/x"], &[])));
        assert!(!deny(&["/admin/**"], &[])
            .with_mode(Mode::Shadow)
            .always_overrides(&allow(&["/admin/x"], &[])));
    }
}
