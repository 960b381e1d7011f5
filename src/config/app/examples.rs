//! Compiling an app's `[[test]]` examples, judged against its own rules.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Compiler<'_> {
    /// The `[[test]]` entries: request syntax, expectation syntax, and that a named rule
    /// exists (and is of the kind the expectation says).
    pub(super) fn examples(
        &mut self,
        file: &FilePolicy,
        rules: &RuleSet,
        text: &str,
        idp: &str,
    ) -> Vec<Example> {
        let mut out = Vec::new();
        for t in &file.test {
            let entry = t.get_ref();
            let request = entry.request.get_ref();
            let Some((method, path)) = request.split_once(' ') else {
                self.error(
                    &entry.request,
                    format!("request `{request}` must be `METHOD /path`, e.g. `GET /reports/q1`"),
                );
                continue;
            };
            let Ok(method) = Method::from_bytes(method.as_bytes()) else {
                self.error(&entry.request, format!("`{method}` is not an HTTP method"));
                continue;
            };
            if !path.starts_with('/') {
                self.error(
                    &entry.request,
                    format!("request path `{path}` must start with `/`"),
                );
                continue;
            }
            let Some(expect) = Expectation::parse(entry.expect.get_ref()) else {
                self.error(&entry.expect, format!("expect `{}` is not one of allow:<rule>, public:<rule>, deny:<rule>, require:<rule>, step-up:<rule>, login, no_allow, refused", entry.expect.get_ref()));
                continue;
            };
            if let Some(rule) = &expect.rule {
                let kind_ok = rules.rules().any(|r| {
                    r.id() == rule
                        && match expect.decision.as_str() {
                            "allow" => r.kind() == RuleKind::AllowSignedIn,
                            "public" => r.kind() == RuleKind::AllowPublic,
                            "deny" => r.kind() == RuleKind::Deny,
                            "step-up" => r.kind() == RuleKind::Require && !r.strength().is_empty(),
                            _ => r.kind() == RuleKind::Require,
                        }
                });
                if !kind_ok {
                    self.error(
                        &entry.expect,
                        format!(
                            "expect `{expect}`: this file has no {} rule `{rule}`",
                            expect.decision
                        ),
                    );
                    continue;
                }
            }
            let now = match &entry.at {
                Some(at) => match chrono::DateTime::parse_from_rfc3339(at.get_ref())
                    .ok()
                    .and_then(|t| u64::try_from(t.timestamp()).ok())
                {
                    Some(t) => t,
                    None => {
                        self.error(
                            at,
                            format!(
                                "at `{}` is not a time like `2026-11-30T09:00:00+01:00`",
                                at.get_ref()
                            ),
                        );
                        continue;
                    }
                },
                None => EXAMPLE_NOW,
            };
            let client_ip = match &entry.ip {
                Some(ip) => match ip.get_ref().parse() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        self.error(ip, format!("ip `{}` is not an IP address", ip.get_ref()));
                        continue;
                    }
                },
                None => None,
            };
            let user = entry
                .user
                .as_ref()
                .map(|u| u.get_ref().user(idp, EXAMPLE_NOW));
            out.push(Example {
                name: entry
                    .name
                    .as_ref()
                    .map_or_else(|| request.clone(), |n| n.get_ref().clone()),
                line: crate::config::problem::line_col(text, t.span().start).0,
                user,
                method,
                path: path.to_string(),
                client_ip,
                now,
                expect,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_mentions, Fixture, HEAD, STAFF};

    fn with_tests(tests: &str) -> String {
        format!("{HEAD}idp = \"corp\"\n{STAFF}{tests}")
    }

    #[test]
    fn examples_compile_with_their_user_and_expectation() {
        let fx = Fixture::new();
        let (app, _) = fx
            .compile(&with_tests(
                "[[test]]\nname = \"staff read\"\nuser = { email = \"a@corp.example\", groups = [\"staff\"] }\nrequest = \"GET /x\"\nexpect = \"allow:staff\"\n\
                 [[test]]\nname = \"anonymous\"\nrequest = \"GET /x\"\nexpect = \"login\"\n",
            ))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(app.examples().len(), 2);
    }

    #[test]
    fn malformed_examples_are_refused() {
        let fx = Fixture::new();
        for (test, needle) in [
            (
                "request = \"/x\"\nexpect = \"login\"",
                "must be `METHOD /path`",
            ),
            (
                "request = \"G@T /x\"\nexpect = \"login\"",
                "not an HTTP method",
            ),
            (
                "request = \"GET x\"\nexpect = \"login\"",
                "must start with `/`",
            ),
            ("request = \"GET /x\"\nexpect = \"maybe\"", "is not one of"),
        ] {
            let policy = with_tests(&format!("[[test]]\nname = \"t\"\n{test}\n"));
            assert_mentions(&fx.errors(&policy), needle);
        }
    }
}
