//! Compiling an app's `[bearer]` table: which access tokens API callers may present.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Access tokens an app accepts in `Authorization: Bearer` (RFC 6750), besides browser
/// sessions.
#[derive(Debug, Clone)]
pub struct BearerConfig {
    /// The OpenID Connect IdP (authorization server) whose tokens count.
    idp: String,
    /// `aud` values any one of which a token must name.
    audiences: Vec<String>,
    /// Clients (`cid`, `client_id`, `azp`) whose tokens count; empty: any client.
    client_ids: Vec<String>,
    /// Where a token is read (empty: the whole app).
    paths: Vec<PathPattern>,
    /// Opaque tokens are checked at the IdP's introspection endpoint (RFC 7662).
    introspect: bool,
}

impl BearerConfig {
    /// The IdP whose tokens count.
    pub fn idp(&self) -> &str {
        &self.idp
    }

    /// Accepted audiences.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Accepted client ids (empty: any).
    pub fn client_ids(&self) -> &[String] {
        &self.client_ids
    }

    /// Opaque tokens are introspected.
    pub fn introspect(&self) -> bool {
        self.introspect
    }

    /// The paths where tokens are accepted, as the policy writes them (all: `/**`).
    pub fn path_list(&self) -> Vec<String> {
        if self.paths.is_empty() {
            return vec!["/**".into()];
        }
        self.paths.iter().map(PathPattern::text).collect()
    }

    /// Is a bearer token read at this (rule-normalised) path?
    pub fn covers(&self, rule_path: &str) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| p.matches(rule_path))
    }
}

impl Compiler<'_> {
    /// `[bearer]`: an OpenID Connect IdP (the app's unless named), at least one audience, and
    /// no delivery that needs a person at a browser (form-fill, a vault password).
    pub(super) fn bearer(
        &mut self,
        file: &FilePolicy,
        idps: &[IdpConfig],
        app_idp: Option<&IdpConfig>,
        fold_case: bool,
    ) -> Option<BearerConfig> {
        let table = file.bearer.as_ref()?;
        let b = table.get_ref();
        let idp = match &b.idp {
            Some(name) => match idps.iter().find(|i| i.name == *name.get_ref()) {
                Some(i) => Some((i, name.span())),
                None => {
                    self.error(
                        name,
                        format!(
                            "[bearer] idp `{}` is not defined in the gateway config",
                            name.get_ref()
                        ),
                    );
                    return None;
                }
            },
            None => app_idp.map(|i| (i, table.span())),
        };
        let Some((idp, at)) = idp else {
            self.error(
                table,
                "[bearer] needs an OpenID Connect IdP: set the app's `idp` or `[bearer] idp`",
            );
            return None;
        };
        if idp.oidc().is_none() {
            self.problems.push(self.src.error(
                Some(at),
                format!("[bearer] idp `{}` is SAML: access tokens come from an OpenID Connect (OAuth 2.0) authorization server", idp.name),
            ));
        }
        if b.audiences.get_ref().is_empty() {
            self.error(&b.audiences, "[bearer] audiences must name at least one `aud` value (the API's, e.g. \"api://timesheet\"): a token meant for another API must not count here");
        }
        for value in b.audiences.get_ref().iter().chain(&b.client_ids) {
            if value.get_ref().trim().is_empty() {
                self.error(
                    value,
                    "[bearer]: audiences and client ids must not be empty",
                );
            }
        }
        if let Some(form) = &file.form_fill {
            self.error(form, "[form_fill] cannot serve bearer-token callers (it logs in as a person at a browser); drop `[bearer]` or `[form_fill]`");
        }
        if let Some(basic) = &file.identity.basic {
            if basic.get_ref().service_username.is_none() {
                self.error(basic, "[identity.basic] with the user's vault password cannot serve bearer-token callers; use a service account or drop `[bearer]`");
            }
        }
        let mut paths = self.paths(&b.paths);
        if fold_case {
            paths = paths.into_iter().map(PathPattern::case_folded).collect();
        }
        Some(BearerConfig {
            idp: idp.name.clone(),
            audiences: b
                .audiences
                .get_ref()
                .iter()
                .map(|a| a.get_ref().clone())
                .collect(),
            client_ids: b.client_ids.iter().map(|c| c.get_ref().clone()).collect(),
            paths,
            introspect: b.introspect.as_ref().is_some_and(|i| *i.get_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_mentions, Fixture, HEAD};

    const BEARER: &str = "[bearer]\naudiences = [\"api://app\"]\n";
    const READERS: &str = "[[allow]]\nid = \"readers\"\nwhy = \"w\"\nscopes = [\"app:read\"]\n";

    #[test]
    fn a_bearer_app_compiles_with_scope_rules() {
        let fx = Fixture::new();
        let (app, _) = fx
            .compile(&format!(
                "{HEAD}idp = \"corp\"\n{BEARER}paths = [\"/api/**\"]\nclient_ids = [\"batch\"]\n{READERS}"
            ))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let bearer = app.bearer().unwrap_or_else(|| panic!("no [bearer]"));
        assert_eq!(bearer.idp(), "corp");
        assert_eq!(bearer.audiences(), ["api://app"]);
        assert!(bearer.covers("/api/x") && !bearer.covers("/"));
        assert!(!bearer.introspect());
    }

    #[test]
    fn bearer_mistakes_are_named() {
        let fx = Fixture::new();
        for (policy, needle) in [
            (
                format!("{HEAD}idp = \"corp\"\n{READERS}"),
                "`scopes` are a bearer token's",
            ),
            (
                format!("{HEAD}idp = \"corp\"\n[bearer]\naudiences = []\n{READERS}"),
                "audiences must name at least one",
            ),
            (format!("{HEAD}{BEARER}{READERS}"), "[bearer] needs an OpenID Connect IdP"),
            (
                format!("{HEAD}idp = \"corp\"\n{BEARER}idp = \"nope\"\n{READERS}"),
                "[bearer] idp `nope` is not defined",
            ),
            (
                format!("{HEAD}idp = \"corp\"\n{BEARER}[identity.basic]\nusername = \"vault\"\n{READERS}"),
                "cannot serve bearer-token callers",
            ),
            (
                format!("{HEAD}idp = \"corp\"\n{BEARER}[[allow]]\nid = \"r\"\nwhy = \"w\"\nscopes = [\"a b\"]\n"),
                "is not a scope",
            ),
            (
                format!("{HEAD}idp = \"corp\"\n{BEARER}audience = \"x\"\n{READERS}"),
                "unknown field `audience`",
            ),
        ] {
            assert_mentions(&fx.errors(&policy), needle);
        }
    }
}
