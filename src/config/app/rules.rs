//! Compiling an app's `[[allow]]`, `[[deny]]` and `[[require]]` rules.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Compiler<'_> {
    pub(super) fn rules(
        &mut self,
        file: &FilePolicy,
        has_idp: bool,
        idp: Option<&IdpConfig>,
    ) -> RuleSet {
        let mut rules = Vec::new();
        let mut seen_ids: Vec<String> = Vec::new();
        let kinds = [
            ("allow", &file.allow),
            ("deny", &file.deny),
            ("require", &file.require),
        ];
        for (table, list) in kinds {
            for rule in list {
                if let Some(r) = self.rule(table, rule, has_idp, idp, &mut seen_ids) {
                    rules.push(r);
                }
            }
        }
        if file.bearer.is_none() {
            for scope in kinds
                .iter()
                .flat_map(|(_, l)| l.iter())
                .flat_map(|r| r.get_ref().scopes.first())
            {
                self.error(scope, "`scopes` are a bearer token's: the app needs a `[bearer]` table (browser sessions have no scopes)");
            }
        }
        // A rule that can never take effect is almost always a mistake worth a warning (only
        // worth saying about a file without errors: the errors come first).
        let has_errors = self.problems.iter().any(Problem::is_error);
        for allow in rules
            .iter()
            .filter(|_| !has_errors)
            .filter(|r| matches!(r.kind(), RuleKind::AllowPublic | RuleKind::AllowSignedIn))
        {
            if let Some(deny) = rules.iter().find(|d| d.always_overrides(allow)) {
                let at = file
                    .allow
                    .iter()
                    .find(|a| a.get_ref().id.get_ref() == allow.id())
                    .map(|a| a.span());
                let message = format!(
                    "allow rule `{}` never admits anyone: deny rule `{}` always overrides it",
                    allow.id(),
                    deny.id()
                );
                self.problems.push(self.src.warning(at, message));
            }
        }
        let fold_case = file
            .case_insensitive_paths
            .as_ref()
            .is_some_and(|f| *f.get_ref());
        let rules = rules
            .into_iter()
            .map(|r| {
                if fold_case {
                    r.with_case_folded_paths()
                } else {
                    r
                }
            })
            .collect();
        RuleSet::new(rules).with_case_folding(fold_case)
    }

    pub(super) fn rule(
        &mut self,
        table: &str,
        rule: &Spanned<FileRule>,
        has_idp: bool,
        idp: Option<&IdpConfig>,
        seen_ids: &mut Vec<String>,
    ) -> Option<Rule> {
        let r = rule.get_ref();
        self.rule_header(&r.id, &r.why, seen_ids);
        let id = r.id.get_ref();
        let who = self.identity_conditions(r, idp);
        let public = r.public.as_ref().is_some_and(|p| *p.get_ref());
        let adaptive = r.adaptive.as_ref().is_some_and(|a| *a.get_ref());
        if table != "allow" {
            for (key, present) in [
                ("public", r.public.is_some()),
                ("adaptive", r.adaptive.is_some()),
            ] {
                if present {
                    self.error(
                        rule,
                        format!("{table} rule `{id}`: `{key}` belongs to allow rules"),
                    );
                }
            }
        }
        let kind = match table {
            "allow" if public => {
                if !who.is_empty() {
                    self.error(rule, format!("allow rule `{id}` is public (anyone, no login) yet names groups, emails or claims: drop `public` or the conditions"));
                }
                RuleKind::AllowPublic
            }
            "allow" => {
                if adaptive {
                    self.error(rule, format!("allow rule `{id}`: `adaptive` applies to public rules (signed-in rules always send identity)"));
                }
                if !has_idp {
                    self.error(rule, format!("allow rule `{id}` is for signed-in users: name the app's identity provider with `idp = \"...\"`, or set `public = true`"));
                }
                RuleKind::AllowSignedIn
            }
            "deny" => RuleKind::Deny,
            _ => RuleKind::Require,
        };
        if kind != RuleKind::AllowSignedIn && !who.is_empty() && !has_idp {
            self.error(rule, format!("{table} rule `{id}` names groups, emails or claims: the app needs `idp = \"...\"`"));
        }
        if adaptive && kind == RuleKind::AllowPublic && !has_idp {
            self.error(rule, format!("allow rule `{id}`: `adaptive` needs the app's `idp` (there is no session to send)"));
        }
        let mode = match r.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
            None | Some((_, "enforce")) => Mode::Enforce,
            Some((_, "shadow")) => Mode::Shadow,
            Some((m, other)) => {
                self.error(
                    m,
                    format!("mode `{other}` is unknown; use `enforce` (default) or `shadow`"),
                );
                Mode::Enforce
            }
        };
        let paths = self.paths(&r.paths);
        let methods = self.methods(&r.methods);
        let networks = self.networks(&r.networks);
        let time = r.time.as_ref().and_then(|t| self.time_window(t));
        let strength = Strength {
            acr: r.acr.iter().map(|a| a.get_ref().clone()).collect(),
            amr: r.amr.iter().map(|a| a.get_ref().clone()).collect(),
            max_age: r.max_age.as_ref().map(|m| m.get_ref().0),
        };
        for value in r.acr.iter().chain(&r.amr) {
            if value.get_ref().is_empty()
                || value.get_ref().chars().any(|c| c.is_control() || c == ' ')
            {
                self.error(
                    value,
                    format!("`{}` is not an acr/amr value", value.get_ref()),
                );
            }
        }
        if kind != RuleKind::Require && !strength.is_empty() {
            self.error(rule, format!("{table} rule `{id}`: acr, amr and max_age belong to require rules (they trigger a step-up sign-in)"));
        }
        if !strength.is_empty() && !has_idp {
            self.error(rule, format!("{table} rule `{id}` asks for a sign-in strength: the app needs `idp = \"...\"`"));
        }
        if kind == RuleKind::Require
            && who.is_empty()
            && networks.is_empty()
            && strength.is_empty()
            && time.is_none()
        {
            self.error(rule, format!("require rule `{id}` requires nothing: name groups, emails, claims, scopes, networks, time, acr, amr or max_age"));
        }
        Some(
            Rule::new(id.clone(), r.why.get_ref().clone(), kind, paths, methods)
                .with_identity(who)
                .with_strength(strength)
                .with_time(time)
                .with_networks(networks)
                .with_mode(mode)
                .with_adaptive(adaptive),
        )
    }

    pub(super) fn time_window(&mut self, spanned: &Spanned<FileTime>) -> Option<TimeWindow> {
        let t = spanned.get_ref();
        let minutes = |text: &str| -> Option<u32> {
            let (h, m) = text.split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && text.len() == 5).then_some(h * 60 + m)
        };
        let (Some(from), Some(to)) = (minutes(&t.from), minutes(&t.to)) else {
            self.error(
                spanned,
                "time: `from` and `to` are 24-hour times like \"08:00\" and \"18:00\"",
            );
            return None;
        };
        if from == to {
            self.error(
                spanned,
                "time: `from` and `to` are the same: the window would be empty",
            );
            return None;
        }
        let mut days = Vec::new();
        for d in &t.days {
            match d
                .to_ascii_lowercase()
                .get(..3)
                .and_then(|p| p.parse::<chrono::Weekday>().ok())
            {
                Some(day) if d.len() >= 3 => days.push(day),
                _ => {
                    self.error(
                        spanned,
                        format!("time: `{d}` is not a day (mon, tue, wed, thu, fri, sat, sun)"),
                    );
                    return None;
                }
            }
        }
        let tz_name = t.tz.as_deref().unwrap_or("UTC");
        let Ok(tz) = tz_name.parse::<chrono_tz::Tz>() else {
            self.error(
                spanned,
                format!("time: `{tz_name}` is not an IANA time zone like \"Europe/Berlin\""),
            );
            return None;
        };
        Some(TimeWindow { days, from, to, tz })
    }

    pub(super) fn networks(&mut self, list: &[Spanned<String>]) -> Vec<IpNet> {
        let mut out = Vec::new();
        for n in list {
            let text = n.get_ref().trim();
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) if net.trunc() == net => out.push(net),
                Ok(net) => self.error(
                    n,
                    format!(
                        "network `{text}` has host bits set; write `{}`",
                        net.trunc()
                    ),
                ),
                Err(_) => self.error(
                    n,
                    format!("network `{text}` is not a CIDR like `10.0.0.0/8` or an IP address"),
                ),
            }
        }
        out
    }

    pub(super) fn identity_conditions(
        &mut self,
        r: &FileRule,
        idp: Option<&IdpConfig>,
    ) -> IdentityConditions {
        let mut who = IdentityConditions::default();
        for (list, out) in [
            (&r.groups, &mut who.groups),
            (&r.groups_all, &mut who.groups_all),
        ] {
            for g in list {
                if g.get_ref().is_empty() {
                    self.error(g, "group name must not be empty");
                }
                out.push(g.get_ref().clone());
            }
        }
        for e in &r.emails {
            let text = e.get_ref();
            match text.rsplit_once('@') {
                Some((local, domain))
                    if !local.is_empty()
                        && parse_host_pattern(&domain.to_ascii_lowercase()).is_ok() =>
                {
                    who.emails.push(text.to_ascii_lowercase());
                }
                _ => self.error(e, format!("`{text}` is not an email address")),
            }
        }
        for d in &r.email_domain {
            let text = d.get_ref().trim_start_matches('@').to_ascii_lowercase();
            match parse_host_pattern(&text) {
                Ok(HostPattern::Exact(domain)) => who.email_domains.push(domain),
                _ => self.error(
                    d,
                    format!(
                        "email_domain `{}` is not a domain like `corp.example`",
                        d.get_ref()
                    ),
                ),
            }
        }
        for s in &r.scopes {
            let text = s.get_ref();
            if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(s, format!("`{text}` is not a scope (one word, no spaces)"));
            }
            who.scopes.push(text.clone());
        }
        for (name, value) in &r.claims {
            let standard = ["sub", "email", "name", "idp", "acr", "amr", "groups"];
            let kept = idp.is_some_and(|i| i.extra_claims().iter().any(|c| c == name));
            let from_directory = self.directory_claim(name);
            if !standard.contains(&name.as_str()) && !kept && !from_directory {
                self.error(value, format!("claim `{name}` is not kept in the session: add it to the IdP's `claims` (OIDC) or `attributes` (SAML), or use one of {standard:?}"));
                continue;
            }
            let test = match value.get_ref() {
                toml::Value::String(v) => Some(ClaimTest::Equals(v.clone())),
                toml::Value::Array(items) => {
                    let values: Option<Vec<String>> = items
                        .iter()
                        .map(|i| i.as_str().map(str::to_string))
                        .collect();
                    match values {
                        Some(v) if !v.is_empty() => Some(ClaimTest::OneOf(v)),
                        _ => None,
                    }
                }
                toml::Value::Table(t) if t.len() == 1 => {
                    match t.get("regex").and_then(toml::Value::as_str) {
                        Some(re) if re.starts_with('^') && re.ends_with('$') => {
                            match regex::Regex::new(re) {
                                Ok(compiled) => Some(ClaimTest::Matches(compiled)),
                                Err(e) => {
                                    self.error(
                                        value,
                                        format!("claim `{name}`: regex does not compile: {e}"),
                                    );
                                    continue;
                                }
                            }
                        }
                        Some(_) => {
                            self.error(
                                value,
                                format!("claim `{name}`: regex must be anchored (`^…$`)"),
                            );
                            continue;
                        }
                        None => None,
                    }
                }
                _ => None,
            };
            match test {
                Some(test) => who.claims.push(ClaimCondition {
                    name: name.clone(),
                    test,
                }),
                None => self.error(value, format!("claim `{name}`: write a value (\"finance\"), a list ([\"finance\", \"hr\"]) or {{ regex = \"^…$\" }}")),
            }
        }
        who
    }

    /// Checks what every rule has: a well-formed id unique in the file, and a reason.
    pub(super) fn rule_header(
        &mut self,
        id: &Spanned<String>,
        why: &Spanned<String>,
        seen: &mut Vec<String>,
    ) {
        let text = id.get_ref();
        if text.is_empty()
            || !text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.error(
                id,
                "rule id must be non-empty and use only letters, digits, `-`, `_`",
            );
        } else if seen.contains(text) {
            self.error(id, format!("rule id `{text}` is used twice in this file"));
        }
        seen.push(text.clone());
        self.non_empty(why, "why");
    }

    pub(super) fn paths(&mut self, paths: &[Spanned<String>]) -> Vec<PathPattern> {
        let mut out = Vec::new();
        for p in paths {
            let text = p.get_ref();
            if text.starts_with('~') {
                match PathPattern::parse(text) {
                    Ok(pattern) => out.push(pattern),
                    Err(PatternError::Unanchored) => {
                        self.error(p, format!("path regex `{text}` must be anchored: `~^/…$`"))
                    }
                    Err(PatternError::BadRegex(e)) => {
                        self.error(p, format!("path regex `{text}` does not compile: {e}"))
                    }
                }
                continue;
            }
            // Wildcards stand in for whole names: the literal text around them must already be
            // in normal form, since requests are matched after normalisation.
            let literal = text.replace('*', "x");
            match normalise(&literal) {
                Ok(n) if n == literal => match PathPattern::parse(text) {
                    Ok(pattern) => out.push(pattern),
                    Err(_) => self.error(p, format!("path `{text}` is not a valid pattern")),
                },
                Ok(n) => {
                    let hint = match text.strip_suffix("/**") {
                        Some(dir) if !dir.contains('*') => normalise(dir)
                            .map(|d| format!("; write `{}/**`", d.trim_end_matches('/')))
                            .unwrap_or_default(),
                        _ if !text.contains('*') => format!("; write `{n}`"),
                        _ => String::new(),
                    };
                    self.error(p, format!("path `{text}` is not in normal form (requests are matched after normalisation){hint}"));
                }
                Err(e) => self.error(p, format!("path `{text}` is not a valid path: {e}")),
            }
        }
        out
    }

    pub(super) fn methods(&mut self, methods: &[Spanned<String>]) -> Vec<Method> {
        let mut out = Vec::new();
        for m in methods {
            let text = m.get_ref();
            let upper = text.to_ascii_uppercase();
            if text.is_empty() || !text.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
                self.error(m, format!("method `{text}` is not an HTTP method"));
            } else if *text != upper {
                self.error(m, format!("methods are upper-case: write `{upper}`"));
            } else if let Ok(method) = Method::from_bytes(text.as_bytes()) {
                out.push(method);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_mentions, Fixture, HEAD, STAFF};
    use crate::policy::RuleKind;

    fn with_idp(rest: &str) -> String {
        format!("{HEAD}idp = \"corp\"\n{rest}")
    }

    #[test]
    fn rules_of_each_kind_compile_with_their_conditions() {
        let fx = Fixture::new();
        let (app, _) = fx
            .compile(&with_idp(&format!(
                "{STAFF}[[allow]]\nid = \"logos\"\nwhy = \"w\"\npaths = [\"/static/\"]\npublic = true\n\
                 [[deny]]\nid = \"no-contractors\"\nwhy = \"w\"\nemail_domain = [\"contractors.example\"]\n\
                 [[require]]\nid = \"admin-mfa\"\nwhy = \"w\"\npaths = [\"/admin/\"]\nmethods = [\"POST\"]\nacr = [\"mfa\"]\nmax_age = \"15m\"\n"
            )))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let rules = app.rules();
        assert_eq!(rules.len(), 4);
        let kind = |id: &str| rules.rule(id).map(crate::policy::Rule::kind);
        assert_eq!(kind("staff"), Some(RuleKind::AllowSignedIn));
        assert_eq!(kind("logos"), Some(RuleKind::AllowPublic));
        assert_eq!(kind("no-contractors"), Some(RuleKind::Deny));
        assert_eq!(kind("admin-mfa"), Some(RuleKind::Require));
        assert!(rules
            .rule("admin-mfa")
            .is_some_and(|r| !r.strength().acr.is_empty()));
    }

    #[test]
    fn rules_that_could_be_misread_are_refused() {
        let fx = Fixture::new();
        for (rules, needle) in [
            (format!("{STAFF}{STAFF}"), "used twice"),
            ("[[allow]]\nid = \"p\"\nwhy = \"w\"\npublic = true\ngroups = [\"staff\"]\n".to_string(), "is public"),
            ("[[deny]]\nid = \"d\"\nwhy = \"w\"\nacr = [\"mfa\"]\n".to_string(), "belong to require rules"),
            ("[[require]]\nid = \"r\"\nwhy = \"w\"\n".to_string(), "requires nothing"),
            ("[[allow]]\nid = \"m\"\nwhy = \"w\"\ngroups = [\"staff\"]\nmethods = [\"get\"]\n".to_string(), "methods are upper-case"),
            ("[[allow]]\nid = \"p\"\nwhy = \"w\"\ngroups = [\"staff\"]\npaths = [\"/a/../b\"]\n".to_string(), "normal form"),
            ("[[allow]]\nid = \"p\"\nwhy = \"w\"\ngroups = [\"staff\"]\npaths = [\"~/a.*\"]\n".to_string(), "must be anchored"),
            ("[[allow]]\nid = \"n\"\nwhy = \"w\"\ngroups = [\"staff\"]\nnetworks = [\"10.0.0.0/33\"]\n".to_string(), "not a CIDR"),
            ("[[allow]]\nid = \"c\"\nwhy = \"w\"\nclaims = { cost_centre = \"x\" }\n".to_string(), "not kept in the session"),
            ("[[allow]]\nid = \"t\"\nwhy = \"w\"\ngroups = [\"staff\"]\ntime = { from = \"25:00\", to = \"18:00\" }\n".to_string(), "24-hour times"),
        ] {
            assert_mentions(&fx.errors(&with_idp(&rules)), needle);
        }
        // Signed-in conditions without an IdP.
        assert_mentions(
            &fx.errors(&format!("{HEAD}{STAFF}")),
            "name the app's identity provider",
        );
    }

    #[test]
    fn kept_claims_may_be_tested() {
        let fx = Fixture::new();
        let policy = with_idp(
            "[[allow]]\nid = \"c\"\nwhy = \"w\"\nclaims = { department = [\"finance\", \"hr\"] }\n",
        );
        assert!(fx.compile(&policy).is_ok(), "{:?}", fx.errors(&policy));
    }
}
