//! The policy file as written: its on-disk shape (serde), spans kept for error positions.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePolicy {
    pub(super) schema: Spanned<u32>,
    pub(super) app: Spanned<String>,
    pub(super) owner: Spanned<String>,
    pub(super) summary: Spanned<String>,
    pub(super) hosts: Spanned<Vec<Spanned<String>>>,
    pub(super) path_prefix: Option<Spanned<String>>,
    #[serde(default = "default_true")]
    pub(super) preserve_host: bool,
    pub(super) upstreams: Spanned<Vec<FileUpstream>>,
    #[serde(default)]
    pub(super) upstream_tls: FileUpstreamTls,
    #[serde(default)]
    pub(super) timeouts: FileTimeouts,
    #[serde(default)]
    pub(super) allow: Vec<Spanned<FileRule>>,
    #[serde(default)]
    pub(super) deny: Vec<Spanned<FileRule>>,
    #[serde(default)]
    pub(super) require: Vec<Spanned<FileRule>>,
    #[serde(default)]
    pub(super) test: Vec<Spanned<FileTest>>,
    pub(super) idp: Option<Spanned<String>>,
    pub(super) logout_path: Option<Spanned<String>>,
    pub(super) allow_idp_initiated: Option<Spanned<bool>>,
    pub(super) idp_initiated_relay_state: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) idp_initiated_paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_encoded_slash: bool,
    pub(super) case_insensitive_paths: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) health: FileHealth,
    pub(super) form_fill: Option<Spanned<FileFormFill>>,
    #[serde(default)]
    pub(super) session: FileAppSession,
    #[serde(default)]
    pub(super) identity: FileIdentity,
    pub(super) bearer: Option<Spanned<FileBearer>>,
    #[serde(default)]
    pub(super) rewrite: FileRewrite,
    pub(super) maintenance: Option<Spanned<FileMaintenance>>,
    pub(super) directory: Option<Spanned<FileAppDirectory>>,
}

/// `[directory]`: what happens when the directory could not be read at sign-in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAppDirectory {
    pub(super) on_failure: Spanned<String>,
}

/// `[maintenance]`: the app answers "down for maintenance", except to its administrators.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMaintenance {
    pub(super) enabled: Spanned<bool>,
    pub(super) message: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) admin_groups: Vec<Spanned<String>>,
    pub(super) retry_after: Option<Spanned<ConfigDuration>>,
}

/// `[rewrite]`: an app that writes its internal name into redirects, cookies and pages.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRewrite {
    pub(super) headers: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) internal_origins: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) body: Vec<Spanned<String>>,
}

/// `[bearer]`: API callers may present an access token instead of a browser session.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileBearer {
    pub(super) idp: Option<Spanned<String>>,
    pub(super) audiences: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) client_ids: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) paths: Vec<Spanned<String>>,
    pub(super) introspect: Option<Spanned<bool>>,
}

/// `[health]`: passive health of the app's upstreams.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHealth {
    pub(super) eject_after: Option<Spanned<u32>>,
    pub(super) eject_for: Option<Spanned<ConfigDuration>>,
    /// Active checks: on when a path is given.
    pub(super) path: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) expect_status: Vec<Spanned<u16>>,
    pub(super) interval: Option<Spanned<ConfigDuration>>,
    pub(super) timeout: Option<Spanned<ConfigDuration>>,
    pub(super) unhealthy_after: Option<Spanned<u32>>,
    pub(super) healthy_after: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAppSession {
    pub(super) idle: Option<Spanned<ConfigDuration>>,
    pub(super) absolute: Option<Spanned<ConfigDuration>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileIdentity {
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) cookies: BTreeMap<String, Spanned<toml::Value>>,
    pub(super) jwt_header: Option<Spanned<String>>,
    pub(super) basic: Option<Spanned<FileBasic>>,
    pub(super) kerberos: Option<Spanned<FileKerberosIdentity>>,
}

/// `[identity.kerberos]`: Kerberos tickets for the user by constrained delegation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileKerberosIdentity {
    pub(super) spn: Spanned<String>,
    pub(super) principal: Option<Spanned<String>>,
}

/// `[form_fill]`: log in to the backend's own form with the user's stored password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileFormFill {
    pub(super) login_url: Spanned<String>,
    pub(super) username_field: Spanned<String>,
    pub(super) password_field: Spanned<String>,
    pub(super) csrf_field: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) extra_fields: BTreeMap<String, String>,
    pub(super) success_cookie: Option<Spanned<String>>,
    pub(super) success_status: Option<Spanned<u16>>,
    pub(super) logged_out_marker: Option<Spanned<String>>,
    pub(super) username: Option<Spanned<String>>,
    pub(super) service_username: Option<Spanned<String>>,
    pub(super) service_password_file: Option<Spanned<String>>,
    pub(super) service_password_env: Option<Spanned<String>>,
}

/// `[identity.basic]`: HTTP Basic credentials replayed from the vault.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileBasic {
    pub(super) username: Option<Spanned<String>>,
    pub(super) service_username: Option<Spanned<String>>,
    pub(super) service_password_file: Option<Spanned<String>>,
    pub(super) service_password_env: Option<Spanned<String>>,
}

pub(super) fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpstream {
    pub(super) url: Spanned<String>,
    pub(super) weight: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpstreamTls {
    pub(super) verify: Option<Spanned<bool>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) sni: Option<Spanned<String>>,
    pub(super) client_cert_file: Option<Spanned<String>>,
    pub(super) client_key_file: Option<Spanned<String>>,
    pub(super) min_version: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTimeouts {
    pub(super) connect: Option<ConfigDuration>,
    pub(super) read: Option<ConfigDuration>,
    pub(super) write: Option<ConfigDuration>,
}

/// One `[[allow]]`, `[[deny]]` or `[[require]]` table. One shape for all three (serde cannot
/// combine `flatten` with `deny_unknown_fields`); keys that do not fit the kind are errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRule {
    pub(super) id: Spanned<String>,
    pub(super) why: Spanned<String>,
    pub(super) public: Option<Spanned<bool>>,
    pub(super) adaptive: Option<Spanned<bool>>,
    pub(super) mode: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) groups: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) groups_all: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) emails: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) email_domain: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) networks: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) claims: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) acr: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) amr: Vec<Spanned<String>>,
    pub(super) max_age: Option<Spanned<ConfigDuration>>,
    pub(super) time: Option<Spanned<FileTime>>,
    #[serde(default)]
    pub(super) scopes: Vec<Spanned<String>>,
}

/// `time = { days = ["mon", …], from = "08:00", to = "18:00", tz = "Europe/Berlin" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTime {
    #[serde(default)]
    pub(super) days: Vec<String>,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) tz: Option<String>,
}

/// One `[[test]]` example: a user, a request and the expected decision.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTest {
    pub(super) name: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<FileTestUser>>,
    pub(super) request: Spanned<String>,
    pub(super) ip: Option<Spanned<String>>,
    pub(super) at: Option<Spanned<String>>,
    pub(super) expect: Spanned<String>,
}

/// The signed-in user of a `[[test]]` (absent = anonymous).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTestUser {
    pub(super) sub: Option<String>,
    pub(super) email: Option<String>,
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
    pub(super) idp: Option<String>,
    pub(super) acr: Option<String>,
    #[serde(default)]
    pub(super) amr: Vec<String>,
    #[serde(default)]
    pub(super) claims: BTreeMap<String, toml::Value>,
    /// How long ago the user authenticated (default: just now).
    pub(super) auth_age: Option<ConfigDuration>,
    /// An API caller: its bearer token's scopes.
    #[serde(default)]
    pub(super) scopes: Vec<String>,
}

impl FileTestUser {
    /// The signed-in identity this example user stands for, authenticated `auth_age` before
    /// `now` at `idp` (unless it names its own).
    pub(super) fn user(&self, idp: &str, now: u64) -> ExampleUser {
        ExampleUser {
            identity: self.identity(idp, now),
            scopes: crate::intern::intern_all(&self.scopes),
        }
    }

    fn identity(&self, idp: &str, now: u64) -> Identity {
        let claims = self
            .claims
            .iter()
            .map(|(k, v)| {
                let values = match v {
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                        .collect(),
                    toml::Value::String(s) => vec![s.clone()],
                    other => vec![other.to_string()],
                };
                (k.clone(), values)
            })
            .collect();
        Identity {
            subject: self
                .sub
                .clone()
                .or_else(|| self.email.clone())
                .unwrap_or_else(|| "test-user".into()),
            email: self.email.clone(),
            name: self.name.clone(),
            groups: crate::intern::intern_all(&self.groups),
            claims,
            acr: self.acr.as_deref().map(Into::into),
            amr: crate::intern::intern_all(&self.amr),
            auth_time: Some(now.saturating_sub(self.auth_age.map_or(0, |a| a.0.as_secs()))),
            idp: self.idp.as_deref().unwrap_or(idp).into(),
        }
    }
}

/// A user as `[[test]]` examples write one (`{ email = "…", groups = [...] }`, the same keys,
/// unknown ones refused), given as the value of `user` in the TOML document `doc`, signed in
/// at `now` unless `auth_age` says earlier. For `portcullis policy explain --user`.
pub fn example_user(doc: &str, idp: &str, now: u64) -> Result<ExampleUser, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        user: FileTestUser,
    }
    let parsed: Doc = toml::from_str(doc).map_err(|e| e.message().to_string())?;
    Ok(parsed.user.user(idp, now))
}

/// The moment `[[test]]` examples are judged at (users' `auth_age` counts back from it).
pub(super) const EXAMPLE_NOW: u64 = 1_800_000_000;
