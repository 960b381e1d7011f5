//! Access rules of one app and the pure decision over them.
//!
//! Semantics, identical for every app (and stated in `policies/README.md`): nobody gets in
//! unless some `[[allow]]` rule matches; a matching `[[deny]]` always wins; every condition
//! listed in a rule must hold (inside a list, any value may match); rule order never matters.
//!
//! This module knows nothing of Pingora, sockets or files: it is given request facts and
//! returns a [`Decision`]. Compilation from policy files lives in `config::app`.

pub mod path;

use http::Method;

/// A compiled path condition, matched against the normalised path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// `"/login"`: exactly this path.
    Exact(String),
    /// `"/static/**"`: the directory itself (`/static`, `/static/`) and everything below it.
    /// Stored without the `/**`; `""` for `"/**"` (everything).
    Under(String),
}

impl PathPattern {
    /// Compiles a policy path: a trailing `/**` means "this directory and everything below";
    /// anything else matches exactly. `config::app` validates the text first.
    pub fn parse(text: &str) -> Self {
        match text.strip_suffix("/**") {
            Some(dir) => PathPattern::Under(dir.to_string()),
            None => PathPattern::Exact(text.to_string()),
        }
    }

    /// Does the normalised `path` match?
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => path == p,
            PathPattern::Under(dir) => match path.strip_prefix(dir.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            },
        }
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// `[[allow]] public = true`: anyone, no login.
    AllowPublic,
    /// `[[allow]]` without `public`: signed-in users meeting the rule's identity conditions.
    AllowSignedIn,
    /// `[[deny]]`: refused, whatever else matches.
    Deny,
}

/// Conditions on who the user is. Empty lists hold for every signed-in user; a rule with any
/// identity condition never matches an anonymous request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityConditions {
    /// Member of any of these groups (exact, case-sensitive, as the IdP spells them).
    pub groups: Vec<String>,
    /// One of these email addresses (compared lower-case).
    pub emails: Vec<String>,
    /// Email in one of these domains (lower-case, compared to the part after the last `@`).
    pub email_domains: Vec<String>,
}

impl IdentityConditions {
    /// No identity condition at all.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.emails.is_empty() && self.email_domains.is_empty()
    }

    fn hold_for(&self, user: &UserFacts<'_>) -> bool {
        let email = user.email.map(str::to_ascii_lowercase);
        let groups_ok =
            self.groups.is_empty() || self.groups.iter().any(|g| user.groups.contains(g));
        let emails_ok =
            self.emails.is_empty() || email.as_ref().is_some_and(|e| self.emails.contains(e));
        let domain_ok = self.email_domains.is_empty()
            || email
                .as_ref()
                .and_then(|e| e.rsplit_once('@'))
                .is_some_and(|(_, domain)| self.email_domains.iter().any(|d| d == domain));
        groups_ok && emails_ok && domain_ok
    }
}

/// What the rules know about a signed-in user.
#[derive(Debug, Clone, Copy)]
pub struct UserFacts<'a> {
    /// Verified email, if the IdP gave one.
    pub email: Option<&'a str>,
    /// Group names.
    pub groups: &'a [String],
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    id: String,
    why: String,
    kind: RuleKind,
    paths: Vec<PathPattern>,
    methods: Vec<Method>,
    who: IdentityConditions,
}

impl Rule {
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
            paths,
            methods,
            who: IdentityConditions::default(),
        }
    }

    /// Adds conditions on who the user is.
    pub fn with_identity(mut self, who: IdentityConditions) -> Self {
        self.who = who;
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

    /// Allow or deny.
    pub fn kind(&self) -> RuleKind {
        self.kind
    }

    /// The request conditions (paths, methods) hold; an absent condition holds for every
    /// request.
    fn matches(&self, request: &RequestFacts<'_>) -> bool {
        let path_ok = self.paths.is_empty() || self.paths.iter().any(|p| p.matches(request.path));
        let method_ok = self.methods.is_empty() || self.methods.iter().any(|m| m == request.method);
        path_ok && method_ok
    }

    /// The identity conditions hold for this user (never for an anonymous request, unless the
    /// rule has none and is not a signed-in rule).
    fn matches_user(&self, user: Option<&UserFacts<'_>>) -> bool {
        match user {
            Some(u) => self.who.hold_for(u),
            None => self.who.is_empty() && self.kind != RuleKind::AllowSignedIn,
        }
    }
}

/// What the rules look at. `path` must be the normalised path (see [`path::normalise`]).
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Normalised path, without the query.
    pub path: &'a str,
}

/// The outcome of the rules for one request, naming the rule that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// A public allow rule matched and no deny rule did.
    Public {
        /// Id of the allow rule.
        rule: &'a str,
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
    /// Anonymous request that a rule for signed-in users covers: sign in first.
    LoginNeeded,
    /// No allow rule matched: default deny.
    NoAllowMatched,
}

impl Decision<'_> {
    /// The rule that decided, when one did (default deny and "sign in first" name none).
    pub fn rule(&self) -> Option<&str> {
        match self {
            Decision::Public { rule } | Decision::Allow { rule } | Decision::Deny { rule } => {
                Some(rule)
            }
            Decision::LoginNeeded | Decision::NoAllowMatched => None,
        }
    }
}

/// The rules of one app.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl RuleSet {
    /// Builds a rule set from compiled rules (any order).
    pub fn new(rules: Vec<Rule>) -> Self {
        let (mut deny, mut allow): (Vec<_>, Vec<_>) =
            rules.into_iter().partition(|r| r.kind == RuleKind::Deny);
        // Sorted by id so that, when several rules match, the one named in logs is stable
        // whatever order the file lists them in.
        allow.sort_by(|a, b| a.id.cmp(&b.id));
        deny.sort_by(|a, b| a.id.cmp(&b.id));
        Self { allow, deny }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.allow.len() + self.deny.len()
    }

    /// Are there no rules at all (so everything is denied)?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Does any rule need a signed-in user (so the app needs an IdP)?
    pub fn needs_login(&self) -> bool {
        self.allow
            .iter()
            .chain(&self.deny)
            .any(|r| r.kind == RuleKind::AllowSignedIn || !r.who.is_empty())
    }

    /// Decides one request for an anonymous (`None`) or signed-in user. Pure: same facts,
    /// same answer. A public rule lets anyone in; identity conditions only ever match a
    /// signed-in user; an anonymous request that only a signed-in rule covers must log in.
    pub fn decide(&self, request: &RequestFacts<'_>, user: Option<&UserFacts<'_>>) -> Decision<'_> {
        let applies = |r: &&Rule| r.matches(request) && r.matches_user(user);
        if let Some(rule) = self.deny.iter().find(applies) {
            return Decision::Deny { rule: &rule.id };
        }
        if let Some(rule) = self.allow.iter().find(applies) {
            return match rule.kind {
                RuleKind::AllowPublic => Decision::Public { rule: &rule.id },
                RuleKind::AllowSignedIn | RuleKind::Deny => Decision::Allow { rule: &rule.id },
            };
        }
        let login_would_help = user.is_none()
            && self
                .allow
                .iter()
                .any(|r| r.kind == RuleKind::AllowSignedIn && r.matches(request));
        if login_would_help {
            Decision::LoginNeeded
        } else {
            Decision::NoAllowMatched
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, kind: RuleKind, paths: &[&str], methods: &[Method]) -> Rule {
        Rule::new(
            id.into(),
            "test".into(),
            kind,
            paths.iter().map(|p| PathPattern::parse(p)).collect(),
            methods.to_vec(),
        )
    }

    fn decide<'a>(set: &'a RuleSet, method: &Method, path: &str) -> Decision<'a> {
        set.decide(&RequestFacts { method, path }, None)
    }

    fn signed_in(id: &str, paths: &[&str], who: IdentityConditions) -> Rule {
        rule(id, RuleKind::AllowSignedIn, paths, &[]).with_identity(who)
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
            Decision::Public { rule: "assets" }
        );
        let staff = vec!["staff".to_string()];
        let alice = UserFacts {
            email: Some("alice@corp.example"),
            groups: &staff,
        };
        let facts = RequestFacts {
            method: &Method::GET,
            path: "/x",
        };
        assert_eq!(
            set.decide(&facts, Some(&alice)),
            Decision::Allow { rule: "staff" }
        );
        let nobody = UserFacts {
            email: Some("eve@corp.example"),
            groups: &[],
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
        };
        let user = |email| UserFacts {
            email: Some(email),
            groups: &[],
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
                Decision::Public { rule: "everything" }
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
            Decision::Public { rule: "read-docs" }
        );
        assert_eq!(
            decide(&set, &Method::HEAD, "/docs/a"),
            Decision::Public { rule: "read-docs" }
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
            Decision::Public { rule: "login" }
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
            Decision::Public { rule: "home" }
        );
        assert_eq!(decide(&set, &Method::GET, "/x"), Decision::NoAllowMatched);
        let set = RuleSet::new(vec![rule("all", RuleKind::AllowPublic, &["/**"], &[])]);
        assert_eq!(
            decide(&set, &Method::GET, "/x/y"),
            Decision::Public { rule: "all" }
        );
    }
}
