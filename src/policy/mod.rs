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
    /// `[[deny]]`: refused, whatever else matches.
    Deny,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    id: String,
    why: String,
    kind: RuleKind,
    paths: Vec<PathPattern>,
    methods: Vec<Method>,
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
        }
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

    /// Every listed condition must hold; an absent condition holds for every request.
    fn matches(&self, request: &RequestFacts<'_>) -> bool {
        let path_ok = self.paths.is_empty() || self.paths.iter().any(|p| p.matches(request.path));
        let method_ok = self.methods.is_empty() || self.methods.iter().any(|m| m == request.method);
        path_ok && method_ok
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
    /// A deny rule matched (the first by id, so logs are stable).
    Deny {
        /// Id of the deny rule.
        rule: &'a str,
    },
    /// No allow rule matched: default deny. (With login, this becomes "sign in first".)
    NoAllowMatched,
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

    /// Decides one request. Pure: same facts, same answer.
    pub fn decide(&self, request: &RequestFacts<'_>) -> Decision<'_> {
        if let Some(rule) = self.deny.iter().find(|r| r.matches(request)) {
            return Decision::Deny { rule: &rule.id };
        }
        match self.allow.iter().find(|r| r.matches(request)) {
            Some(rule) => Decision::Public { rule: &rule.id },
            None => Decision::NoAllowMatched,
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
        set.decide(&RequestFacts { method, path })
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
