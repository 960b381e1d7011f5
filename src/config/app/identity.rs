//! Compiling what an app's backend is told about the user (`[identity]`, `[form_fill]`) into
//! its delivery steps.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::delivery::kerberos::KerberosDelivery;

impl Compiler<'_> {
    /// The app's delivery steps, in the order they run: headers, cookies, the signed
    /// assertion, form-fill, Basic.
    pub(super) fn delivery(
        &mut self,
        file: &FilePolicy,
        base: &Path,
        gateway: &GatewayConfig,
        idp_config: Option<&IdpConfig>,
    ) -> Delivery {
        let identity = self.identity(file, base, idp_config);
        let identity_cookies = self.identity_cookies(file, base, idp_config);
        let jwt_header = file.identity.jwt_header.as_ref().and_then(|h| {
            if file.idp.is_none() {
                self.error(
                    h,
                    "jwt_header needs `idp`: the assertion says who signed in",
                );
                return None;
            }
            if gateway.jwt.is_none() {
                self.error(
                    h,
                    "jwt_header needs signing keys: add [jwt] key_files to the gateway config",
                );
                return None;
            }
            match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(name) if !RESERVED_HEADERS.contains(&name.as_str()) => Some(name),
                _ => {
                    self.error(
                        h,
                        format!("`{}` is not a header name the gateway may set", h.get_ref()),
                    );
                    None
                }
            }
        });
        let basic = file.identity.basic.as_ref().and_then(|b| {
            let fb = b.get_ref();
            if file.idp.is_none() {
                self.error(b, "[identity.basic] needs `idp`: credentials are replayed for signed-in users");
                return None;
            }
            let service = self.service_credential(
                fb.service_username.as_ref(),
                fb.service_password_file.as_ref(),
                fb.service_password_env.as_ref(),
                base,
            )?;
            if service.is_some() {
                if let Some(u) = &fb.username {
                    self.error(u, "`username` comes from the service account here: drop it or the service_* keys");
                }
                return Some(BasicReplay { username: None, service });
            }
            if gateway.vault.is_none() {
                self.error(b, "[identity.basic] needs the credential vault (add [vault] to the gateway config) or a service_username + service_password_file");
                return None;
            }
            let username = match fb.username.as_ref().map(|u| (u, u.get_ref().as_str())) {
                None | Some((_, "vault")) => None,
                Some((u, name)) => {
                    Some(self.identity_source(
                        "[identity.basic] username",
                        &Spanned::new(u.span(), toml::Value::String(name.to_string())),
                        base,
                        idp_config,
                    )?)
                }
            };
            Some(BasicReplay { username, service: None })
        });
        let kerberos = file.identity.kerberos.as_ref().and_then(|k| {
            let fk = k.get_ref();
            if file.idp.is_none() {
                self.error(k, "[identity.kerberos] needs `idp`: tickets are for signed-in users");
                return None;
            }
            if gateway.kerberos.is_none() {
                self.error(k, "[identity.kerberos] needs the gateway's service principal: add [kerberos] (principal, keytab_file) to the gateway config");
                return None;
            }
            if file.identity.basic.is_some() || file.form_fill.is_some() {
                self.error(k, "[identity.kerberos] and [identity.basic] / [form_fill] each sign the user in to the backend: choose one");
                return None;
            }
            let spn = fk.spn.get_ref().trim();
            let valid = spn.split_once('/').is_some_and(|(service, host)| {
                !service.is_empty()
                    && !host.is_empty()
                    && service.chars().all(|c| c.is_ascii_alphanumeric())
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            });
            if !valid {
                self.error(&fk.spn, format!("spn `{spn}` must be service/host, e.g. `HTTP/sharepoint.corp.example` (the realm comes from [kerberos])"));
                return None;
            }
            let from = fk
                .principal
                .as_ref()
                .map_or("email", |p| p.get_ref().as_str())
                .to_string();
            let at = fk.principal.as_ref().map_or(k.span(), Spanned::span);
            let principal = self.identity_source(
                "[identity.kerberos] principal",
                &Spanned::new(at, toml::Value::String(from.clone())),
                base,
                idp_config,
            )?;
            Some(KerberosDelivery {
                spn: spn.to_string(),
                principal,
                principal_from: from,
            })
        });
        let form_fill = file.form_fill.as_ref().and_then(|f| {
            let ff = f.get_ref();
            if file.idp.is_none() {
                self.error(
                    f,
                    "[form_fill] needs `idp`: credentials are stored per signed-in user",
                );
                return None;
            }
            let service = self.service_credential(
                ff.service_username.as_ref(),
                ff.service_password_file.as_ref(),
                ff.service_password_env.as_ref(),
                base,
            )?;
            if service.is_none() && gateway.vault.is_none() {
                self.error(f, "[form_fill] needs the credential vault (add [vault] to the gateway config) or a service_username + service_password_file");
                return None;
            }
            if file.identity.basic.is_some() {
                self.error(
                    f,
                    "[form_fill] and [identity.basic] both log in for the user: choose one",
                );
                return None;
            }
            let login_url = self.exact_path(&ff.login_url)?;
            for field in [&ff.username_field, &ff.password_field]
                .into_iter()
                .chain(ff.csrf_field.as_ref())
            {
                if field.get_ref().is_empty() || field.get_ref().chars().any(char::is_control) {
                    self.error(field, "form field names must be non-empty");
                    return None;
                }
            }
            let username = match ff.username.as_ref().map(|u| (u, u.get_ref().as_str())) {
                None | Some((_, "vault")) => None,
                Some((u, name)) => {
                    Some(self.identity_source(
                        "[form_fill] username",
                        &Spanned::new(u.span(), toml::Value::String(name.to_string())),
                        base,
                        idp_config,
                    )?)
                }
            };
            Some(FormFill {
                login_url,
                username_field: ff.username_field.get_ref().clone(),
                password_field: ff.password_field.get_ref().clone(),
                csrf_field: ff.csrf_field.as_ref().map(|c| c.get_ref().clone()),
                extra_fields: ff
                    .extra_fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                success_cookie: ff.success_cookie.as_ref().map(|c| c.get_ref().clone()),
                success_status: ff.success_status.as_ref().map(|c| *c.get_ref()),
                logged_out_marker: ff
                    .logged_out_marker
                    .as_ref()
                    .map(|m| m.get_ref().clone())
                    .filter(|m| !m.is_empty()),
                username,
                service,
            })
        });
        Delivery::new(
            [
                (!identity.is_empty()).then_some(Step::Headers(identity)),
                (!identity_cookies.is_empty()).then_some(Step::Cookies(identity_cookies)),
                jwt_header.map(Step::Assertion),
                form_fill.map(Step::FormFill),
                basic.map(Step::Basic),
                kerberos.map(Step::Kerberos),
            ]
            .into_iter()
            .flatten()
            .collect(),
        )
    }

    /// `[identity.headers]`: header name → attribute, claim, static value or shared secret.
    pub(super) fn identity(
        &mut self,
        file: &FilePolicy,
        base: &Path,
        idp: Option<&IdpConfig>,
    ) -> IdentityHeaders {
        let mut headers: Vec<(http::HeaderName, IdentitySource)> = Vec::new();
        for (name, value) in &file.identity.headers {
            if file.idp.is_none() {
                self.error(
                    value,
                    "[identity.headers] needs `idp`: identity comes from login",
                );
                continue;
            }
            let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
                self.error(value, format!("`{name}` is not a valid header name"));
                continue;
            };
            if RESERVED_HEADERS.contains(&header.as_str()) || header.as_str().starts_with("proxy-")
            {
                self.error(value, format!("header `{name}` is managed by the gateway or HTTP itself and cannot carry identity"));
                continue;
            }
            if headers.iter().any(|(h, _)| *h == header) {
                self.error(
                    value,
                    format!("header `{name}` is listed twice (names are case-insensitive)"),
                );
                continue;
            }
            if let Some(source) =
                self.identity_source(&format!("header `{name}`"), value, base, idp)
            {
                headers.push((header, source));
            }
        }
        IdentityHeaders::new(headers)
    }

    /// `[identity.cookies]`: cookie names (RFC 6265 tokens, not the gateway's own) and the
    /// same value sources as headers.
    pub(super) fn identity_cookies(
        &mut self,
        file: &FilePolicy,
        base: &Path,
        idp: Option<&IdpConfig>,
    ) -> IdentityCookies {
        let mut cookies: Vec<(String, IdentitySource)> = Vec::new();
        for (name, value) in &file.identity.cookies {
            if file.idp.is_none() {
                self.error(
                    value,
                    "[identity.cookies] needs `idp`: identity comes from login",
                );
                continue;
            }
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !token {
                self.error(value, format!("`{name}` is not a valid cookie name"));
                continue;
            }
            if crate::session::cookies::is_gateway_cookie(name) {
                self.error(value, format!("cookie `{name}` is the gateway's own"));
                continue;
            }
            let key = crate::session::cookies::cookie_name_key(name);
            if cookies
                .iter()
                .any(|(n, _)| crate::session::cookies::cookie_name_key(n) == key)
            {
                self.error(value, format!("cookie `{name}` is listed twice (backends may not tell case, `-`, `_` and `.` apart)"));
                continue;
            }
            if let Some(source) =
                self.identity_source(&format!("cookie `{name}`"), value, base, idp)
            {
                cookies.push((name.clone(), source));
            }
        }
        IdentityCookies::new(cookies)
    }

    /// How a list becomes one value: `join`, `nth` or `count` in an identity value's table.
    fn pick(&mut self, name: &str, value: &Spanned<toml::Value>, t: &toml::Table) -> Option<Multi> {
        Some(match (t.get("join"), t.get("nth"), t.get("count")) {
            (None, None, None) => Multi::default(),
            (Some(toml::Value::String(join)), _, _) => {
                if join.chars().any(char::is_control) {
                    self.error(
                        value,
                        format!("{name}: join must not hold control characters"),
                    );
                    return None;
                }
                Multi::Join(join.clone())
            }
            (_, Some(toml::Value::Integer(n)), _) => match usize::try_from(*n) {
                Ok(n) => Multi::Nth(n),
                Err(_) => {
                    self.error(value, format!("{name}: nth counts from 0"));
                    return None;
                }
            },
            (_, _, Some(toml::Value::Boolean(true))) => Multi::Count,
            _ => {
                self.error(
                    value,
                    format!("{name}: join is a string, nth a number from 0, count = true"),
                );
                return None;
            }
        })
    }

    pub(super) fn identity_source(
        &mut self,
        name: &str,
        value: &Spanned<toml::Value>,
        base: &Path,
        idp: Option<&IdpConfig>,
    ) -> Option<IdentitySource> {
        let attribute = |attr: &str, pick: Multi| -> Option<IdentitySource> {
            Some(match attr {
                "sub" => IdentitySource::Subject,
                "email" => IdentitySource::Email,
                "name" => IdentitySource::Name,
                "groups" => IdentitySource::Groups { pick },
                "idp" => IdentitySource::Idp,
                "acr" => IdentitySource::Acr,
                "amr" => IdentitySource::Amr { pick },
                "access_token" => IdentitySource::AccessToken,
                other if idp.is_some_and(|i| i.extra_claims().iter().any(|c| c == other)) => {
                    IdentitySource::Claim {
                        name: other.to_string(),
                        pick,
                    }
                }
                _ => return None,
            })
        };
        let unknown = |attr: &str| {
            format!("{name}: `{attr}` is not a session attribute (sub, email, name, groups, idp, acr, amr) nor a claim listed in the IdP's `claims` (OIDC) or `attributes` (SAML)")
        };
        match value.get_ref() {
            toml::Value::String(attr) => {
                let found = attribute(attr, Multi::default());
                if found.is_none() {
                    self.error(value, unknown(attr));
                }
                // Only an IdP whose tokens are kept — and kept fresh — has one to give.
                if found == Some(IdentitySource::AccessToken)
                    && !idp.is_some_and(IdpConfig::keeps_tokens)
                {
                    self.error(value, format!("{name}: `access_token` needs an OpenID Connect IdP with `refresh = true` (the token is kept and refreshed only then)"));
                    return None;
                }
                found
            }
            toml::Value::Table(t) => {
                let keys: Vec<&str> = t.keys().map(String::as_str).collect();
                let shapes = format!("{name}: use one of {{ claim = \"...\" }} or {{ directory = \"...\", attribute = \"...\" }} (with at most one of join = \",\", nth = 0, count = true), {{ value = \"...\" }}, {{ secret_env = \"...\" }}, {{ secret_file = \"...\" }}");
                let picks = ["join", "nth", "count"];
                let fits = if keys.contains(&"claim") {
                    keys.len() <= 2 && keys.iter().all(|k| *k == "claim" || picks.contains(k))
                } else if keys.contains(&"directory") {
                    keys.contains(&"attribute")
                        && keys.len() <= 3
                        && keys
                            .iter()
                            .all(|k| ["directory", "attribute"].contains(k) || picks.contains(k))
                } else {
                    keys.len() == 1
                        && keys
                            .iter()
                            .all(|k| ["value", "secret_env", "secret_file"].contains(k))
                };
                if !fits {
                    self.error(value, shapes);
                    return None;
                }
                let text = |key: &str| t.get(key).and_then(toml::Value::as_str).map(str::to_string);
                if let (Some(directory), Some(attribute)) = (text("directory"), text("attribute")) {
                    let pick = self.pick(name, value, t)?;
                    let configured = self.directory.map(|d| d.name.clone());
                    if configured.as_deref() != Some(directory.as_str()) {
                        self.error(value, format!("{name}: directory `{directory}` is not where this app's IdP looks users up ({})", configured.map_or_else(|| "its IdP has no [directory.*] naming it in `idps`".to_string(), |c| format!("that is `{c}`"))));
                        return None;
                    }
                    let claim = format!("{directory}:{attribute}");
                    if !self.directory_claim(&claim) {
                        self.error(value, format!("{name}: `{attribute}` is not read from directory `{directory}`: add it to its `attributes` (or set groups_base_dn for `groups`)"));
                        return None;
                    }
                    return Some(IdentitySource::Claim { name: claim, pick });
                }
                if let Some(claim) = text("claim") {
                    let pick = self.pick(name, value, t)?;
                    let found = attribute(&claim, pick);
                    if found.is_none() {
                        self.error(value, unknown(&claim));
                    }
                    return found;
                }
                if let Some(v) = text("value") {
                    return self
                        .static_value(name, value, v)
                        .map(IdentitySource::Static);
                }
                let secret = match (text("secret_env"), text("secret_file")) {
                    (Some(var), _) => Some(
                        std::env::var(&var)
                            .map_err(|_| format!("environment variable `{var}` is not set")),
                    ),
                    (None, Some(file)) => {
                        let path = resolve(base, &file);
                        if let Some(warning) = secret_file_exposure(&path) {
                            self.warning(value, format!("{name}: {warning}"));
                        }
                        Some(std::fs::read_to_string(&path).map_err(|e| {
                            format!("cannot read secret file `{}`: {e}", path.display())
                        }))
                    }
                    (None, None) => None,
                };
                match secret {
                    Some(Ok(v)) => {
                        return self
                            .static_value(name, value, v.trim().to_string())
                            .map(|v| IdentitySource::Secret(Secret::new(v)))
                    }
                    Some(Err(why)) => {
                        self.error(value, format!("{name}: {why}"));
                        return None;
                    }
                    None => {}
                }
                self.error(value, format!("{name}: values must be strings"));
                None
            }
            _ => {
                self.error(
                    value,
                    format!("{name}: expected an attribute name like \"email\" or a table"),
                );
                None
            }
        }
    }

    pub(super) fn static_value(
        &mut self,
        name: &str,
        at: &Spanned<toml::Value>,
        v: String,
    ) -> Option<String> {
        if v.is_empty()
            || v.len() > crate::delivery::identity::MAX_IDENTITY_VALUE
            || v.chars().any(char::is_control)
        {
            self.error(
                at,
                format!(
                    "header `{name}`: value must be 1-{} characters without control characters",
                    crate::delivery::identity::MAX_IDENTITY_VALUE
                ),
            );
            return None;
        }
        Some(v)
    }

    /// A shared service account (`service_username` with `service_password_file` or
    /// `service_password_env`). `Some(None)` when none is configured; `None` on an error.
    pub(super) fn service_credential(
        &mut self,
        username: Option<&Spanned<String>>,
        file: Option<&Spanned<String>>,
        env: Option<&Spanned<String>>,
        base: &Path,
    ) -> Option<Option<crate::delivery::vault::Credential>> {
        let Some(user) = username else {
            if let Some(stray) = file.or(env) {
                self.error(stray, "a service password needs `service_username`");
                return None;
            }
            return Some(None);
        };
        let password = match (file, env) {
            (Some(f), None) => {
                let path = crate::config::files::resolve(base, f.get_ref());
                if let Some(warning) = crate::config::files::secret_file_exposure(&path) {
                    self.warning(f, warning);
                }
                match std::fs::read_to_string(&path) {
                    Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
                    Ok(_) => {
                        self.error(
                            f,
                            format!("service password file `{}` is empty", path.display()),
                        );
                        return None;
                    }
                    Err(e) => {
                        self.error(
                            f,
                            format!(
                                "cannot read service password file `{}`: {e}",
                                path.display()
                            ),
                        );
                        return None;
                    }
                }
            }
            (None, Some(e)) => match std::env::var(e.get_ref()) {
                Ok(v) if !v.is_empty() => v,
                _ => {
                    self.error(
                        e,
                        format!("environment variable `{}` is not set", e.get_ref()),
                    );
                    return None;
                }
            },
            _ => {
                self.error(user, "service_username needs exactly one of service_password_file or service_password_env");
                return None;
            }
        };
        Some(Some(crate::delivery::vault::Credential {
            username: user.get_ref().clone(),
            password: crate::secret::Secret::new(password),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_mentions, Fixture, HEAD, STAFF};
    use crate::delivery::Step;

    fn with_idp(rest: &str) -> String {
        format!("{HEAD}idp = \"corp\"\n{STAFF}{rest}")
    }

    fn kinds(steps: &[Step]) -> Vec<&'static str> {
        steps
            .iter()
            .map(|s| match s {
                Step::Headers(_) => "headers",
                Step::Cookies(_) => "cookies",
                Step::Assertion(_) => "assertion",
                Step::FormFill(_) => "form-fill",
                Step::Basic(_) => "basic",
                Step::Kerberos(_) => "kerberos",
            })
            .collect()
    }

    #[test]
    fn delivery_steps_run_in_a_fixed_order() {
        let fx = Fixture::new();
        let (app, _) = fx
            .compile(&with_idp(
                "[identity]\njwt_header = \"X-Identity\"\n[identity.headers]\n\"X-Remote-User\" = \"email\"\n\
                 [identity.cookies]\nwho = \"sub\"\n[identity.basic]\nusername = \"vault\"\n",
            ))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let delivery = app.delivery();
        assert_eq!(
            kinds(delivery.steps()),
            ["headers", "cookies", "assertion", "basic"]
        );
        let names: Vec<&str> = delivery.header_names().collect();
        assert_eq!(names, ["x-remote-user", "x-identity"]);
        assert!(delivery.replays_credentials() && delivery.asks_username());
    }

    #[test]
    fn lists_are_joined_picked_or_counted_as_the_policy_says() {
        let fx = Fixture::new();
        let (app, _) = fx
            .compile(&with_idp(
                "[identity.headers]\n\"X-Groups\" = { claim = \"groups\", join = \";\" }\n\
                 \"X-Primary-Group\" = { claim = \"groups\", nth = 0 }\n\
                 \"X-Group-Count\" = { claim = \"groups\", count = true }\n",
            ))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(app
            .delivery()
            .header_names()
            .any(|n| n == "x-primary-group"));
        for (bad, needle) in [
            ("{ claim = \"groups\", nth = -1 }", "counts from 0"),
            (
                "{ claim = \"groups\", nth = 0, join = \",\" }",
                "at most one of",
            ),
            ("{ claim = \"groups\", count = \"yes\" }", "count = true"),
        ] {
            assert_mentions(
                &fx.errors(&with_idp(&format!("[identity.headers]\n\"X-G\" = {bad}\n"))),
                needle,
            );
        }
    }

    #[test]
    fn identity_that_cannot_be_sent_safely_is_refused() {
        let fx = Fixture::new();
        for (identity, needle) in [
            ("[identity.headers]\n\"Host\" = \"email\"\n", "Host"),
            ("[identity]\njwt_header = \"Content-Length\"\n", "not a header name the gateway may set"),
            ("[identity.basic]\nusername = \"vault\"\n[form_fill]\nlogin_url = \"/login\"\nusername_field = \"u\"\npassword_field = \"p\"\n", "choose one"),
            // The test IdP `corp` keeps no tokens (no `refresh = true`).
            ("[identity.headers]\n\"X-Access-Token\" = \"access_token\"\n", "`access_token` needs an OpenID Connect IdP with `refresh = true`"),
        ] {
            assert_mentions(&fx.errors(&with_idp(identity)), needle);
        }
        // Identity for signed-in users needs an IdP.
        assert_mentions(
            &fx.errors(&format!("{HEAD}[identity]\njwt_header = \"X-Identity\"\n")),
            "jwt_header needs `idp`",
        );
    }

    #[test]
    fn form_fill_compiles_its_login_form() {
        let fx = Fixture::new();
        let (app, _) = fx
            .compile(&with_idp(
                "[form_fill]\nlogin_url = \"/login\"\nusername_field = \"user\"\npassword_field = \"pass\"\ncsrf_field = \"token\"\nlogged_out_marker = \"Please log in\"\n",
            ))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let form = app
            .delivery()
            .form_fill()
            .unwrap_or_else(|| panic!("no form-fill step"));
        assert_eq!(form.login_url, "/login");
        assert_eq!(form.csrf_field.as_deref(), Some("token"));
        assert_eq!(form.logged_out_marker.as_deref(), Some("Please log in"));
        assert!(app.delivery().asks_username());
    }
}
