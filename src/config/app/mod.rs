//! One app's policy file (`policies/<app>.toml`): who owns it, where it lives, where traffic
//! goes, and its access rules.
//!
//! Owns the on-disk shape and its compilation into [`AppConfig`]. The rule semantics live in
//! `policy`; cross-file checks (duplicate hosts, ids) live in `config::mod`.

use super::duration::ConfigDuration;
use super::files::{load_ca_file, resolve, secret_file_exposure};
use super::gateway::GatewayConfig;
use super::idp::IdpConfig;
use super::problem::{Problem, SourceFile};
use crate::delivery::basic::BasicReplay;
use crate::delivery::form_fill::FormFill;
use crate::delivery::identity::{IdentityCookies, IdentityHeaders, IdentitySource};
use crate::delivery::{Delivery, Step};
use crate::idp::Identity;
use crate::policy::examples::{Example, Expectation};
use crate::policy::path::normalise;
use crate::policy::{
    ClaimCondition, ClaimTest, IdentityConditions, Mode, PathPattern, PatternError, Rule, RuleKind,
    RuleSet, Strength, TimeWindow,
};
use crate::secret::Secret;
use crate::upstream::{UpstreamTarget, UpstreamTimeouts, UpstreamTls};
use http::Method;
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Headers that cannot carry identity: HTTP framing, routing and the gateway's own.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-request-id",
];

/// The only policy schema this build understands.
pub const SCHEMA_VERSION: u32 = 1;

// ---- on-disk shape ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePolicy {
    schema: Spanned<u32>,
    app: Spanned<String>,
    owner: Spanned<String>,
    summary: Spanned<String>,
    hosts: Spanned<Vec<Spanned<String>>>,
    path_prefix: Option<Spanned<String>>,
    #[serde(default = "default_true")]
    preserve_host: bool,
    upstreams: Spanned<Vec<FileUpstream>>,
    #[serde(default)]
    upstream_tls: FileUpstreamTls,
    #[serde(default)]
    timeouts: FileTimeouts,
    #[serde(default)]
    allow: Vec<Spanned<FileRule>>,
    #[serde(default)]
    deny: Vec<Spanned<FileRule>>,
    #[serde(default)]
    require: Vec<Spanned<FileRule>>,
    #[serde(default)]
    test: Vec<Spanned<FileTest>>,
    idp: Option<Spanned<String>>,
    logout_path: Option<Spanned<String>>,
    allow_idp_initiated: Option<Spanned<bool>>,
    #[serde(default)]
    allow_encoded_slash: bool,
    case_insensitive_paths: Option<Spanned<bool>>,
    #[serde(default)]
    health: FileHealth,
    form_fill: Option<Spanned<FileFormFill>>,
    #[serde(default)]
    session: FileAppSession,
    #[serde(default)]
    identity: FileIdentity,
}

/// `[health]`: passive health of the app's upstreams.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    eject_after: Option<Spanned<u32>>,
    eject_for: Option<Spanned<ConfigDuration>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileAppSession {
    idle: Option<Spanned<ConfigDuration>>,
    absolute: Option<Spanned<ConfigDuration>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileIdentity {
    #[serde(default)]
    headers: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    cookies: BTreeMap<String, Spanned<toml::Value>>,
    jwt_header: Option<Spanned<String>>,
    basic: Option<Spanned<FileBasic>>,
}

/// `[form_fill]`: log in to the backend's own form with the user's stored password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormFill {
    login_url: Spanned<String>,
    username_field: Spanned<String>,
    password_field: Spanned<String>,
    csrf_field: Option<Spanned<String>>,
    #[serde(default)]
    extra_fields: BTreeMap<String, String>,
    success_cookie: Option<Spanned<String>>,
    success_status: Option<Spanned<u16>>,
    logged_out_marker: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    service_username: Option<Spanned<String>>,
    service_password_file: Option<Spanned<String>>,
    service_password_env: Option<Spanned<String>>,
}

/// `[identity.basic]`: HTTP Basic credentials replayed from the vault.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBasic {
    username: Option<Spanned<String>>,
    service_username: Option<Spanned<String>>,
    service_password_file: Option<Spanned<String>>,
    service_password_env: Option<Spanned<String>>,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    url: Spanned<String>,
    weight: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileUpstreamTls {
    verify: Option<Spanned<bool>>,
    ca_file: Option<Spanned<String>>,
    sni: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileTimeouts {
    connect: Option<ConfigDuration>,
    read: Option<ConfigDuration>,
    write: Option<ConfigDuration>,
}

/// One `[[allow]]`, `[[deny]]` or `[[require]]` table. One shape for all three (serde cannot
/// combine `flatten` with `deny_unknown_fields`); keys that do not fit the kind are errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    id: Spanned<String>,
    why: Spanned<String>,
    public: Option<Spanned<bool>>,
    adaptive: Option<Spanned<bool>>,
    mode: Option<Spanned<String>>,
    #[serde(default)]
    paths: Vec<Spanned<String>>,
    #[serde(default)]
    methods: Vec<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    groups_all: Vec<Spanned<String>>,
    #[serde(default)]
    emails: Vec<Spanned<String>>,
    #[serde(default)]
    email_domain: Vec<Spanned<String>>,
    #[serde(default)]
    networks: Vec<Spanned<String>>,
    #[serde(default)]
    claims: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    acr: Vec<Spanned<String>>,
    #[serde(default)]
    amr: Vec<Spanned<String>>,
    max_age: Option<Spanned<ConfigDuration>>,
    time: Option<Spanned<FileTime>>,
}

/// `time = { days = ["mon", …], from = "08:00", to = "18:00", tz = "Europe/Berlin" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTime {
    #[serde(default)]
    days: Vec<String>,
    from: String,
    to: String,
    tz: Option<String>,
}

/// One `[[test]]` example: a user, a request and the expected decision.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTest {
    name: Option<Spanned<String>>,
    user: Option<Spanned<FileTestUser>>,
    request: Spanned<String>,
    ip: Option<Spanned<String>>,
    at: Option<Spanned<String>>,
    expect: Spanned<String>,
}

/// The signed-in user of a `[[test]]` (absent = anonymous).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTestUser {
    sub: Option<String>,
    email: Option<String>,
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    idp: Option<String>,
    acr: Option<String>,
    #[serde(default)]
    amr: Vec<String>,
    #[serde(default)]
    claims: BTreeMap<String, toml::Value>,
    /// How long ago the user authenticated (default: just now).
    auth_age: Option<ConfigDuration>,
}

impl FileTestUser {
    /// The signed-in identity this example user stands for, authenticated `auth_age` before
    /// `now` at `idp` (unless it names its own).
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
pub fn example_user(doc: &str, idp: &str, now: u64) -> Result<Identity, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        user: FileTestUser,
    }
    let parsed: Doc = toml::from_str(doc).map_err(|e| e.message().to_string())?;
    Ok(parsed.user.identity(idp, now))
}

/// The moment `[[test]]` examples are judged at (users' `auth_age` counts back from it).
const EXAMPLE_NOW: u64 = 1_800_000_000;

// ---- compiled app ----------------------------------------------------------------------------

/// A host name an app serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `wiki.corp.example`
    Exact(String),
    /// `*.corp.example`: exactly one more label in front (like a TLS wildcard); the stored
    /// value is the suffix, `corp.example`.
    Wildcard(String),
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// A validated app policy.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// App id used in logs and audit.
    pub id: String,
    /// Who answers for this app.
    pub owner: String,
    /// One line saying what the app is.
    pub summary: String,
    /// The policy file.
    pub file: PathBuf,
    /// Host names served.
    pub hosts: Vec<HostPattern>,
    /// Path prefix on those hosts, normalised, without trailing slash (`""` = whole host).
    pub path_prefix: String,
    /// Send the client's Host header upstream (legacy apps build links from it).
    pub preserve_host: bool,
    /// Backends.
    pub upstreams: Vec<UpstreamTarget>,
    /// TLS towards backends.
    pub upstream_tls: UpstreamTls,
    /// Timeouts towards backends.
    pub timeouts: UpstreamTimeouts,
    /// Access rules.
    pub rules: RuleSet,
    /// The identity provider users of this app sign in with.
    pub idp: Option<String>,
    /// A backend path that means "log out" (intercepted: ends the gateway and IdP sessions).
    pub logout_path: Option<String>,
    /// Accept IdP-initiated (unsolicited) SAML responses on this app's host.
    pub allow_idp_initiated: bool,
    /// Pass `%2F` in paths through (kept encoded) instead of refusing it.
    pub allow_encoded_slash: bool,
    /// Routing and rules compare paths without letter case (IIS and most Windows backends
    /// serve `/ADMIN` and `/admin` alike).
    pub case_insensitive_paths: bool,
    /// When an upstream is left out after refusing connections.
    pub passive_health: crate::upstream::PassiveHealth,
    /// SHA-256 (hex) of the policy file as loaded: which version decided, for the audit trail.
    pub policy_sha256: String,
    /// The file's `[[test]]` examples (run by `portcullis policy test`).
    pub examples: Vec<Example>,
    /// Session idle timeout for this app.
    pub session_idle: Duration,
    /// Session absolute lifetime for this app.
    pub session_absolute: Duration,
    /// How the backend learns who the user is (headers, cookies, assertion, form-fill,
    /// Basic), in the order the steps run.
    pub delivery: Delivery,
}

/// What little can be read from a policy file that failed to compile, so its hosts can be
/// answered with "temporarily unavailable" rather than falling through to anything else.
#[derive(Debug, Clone)]
pub struct BrokenApp {
    /// The policy file.
    pub file: PathBuf,
    /// App id, when readable.
    pub id: Option<String>,
    /// Hosts the file claims, when readable.
    pub hosts: Vec<HostPattern>,
    /// Path prefix the file claims (`""` when absent or unreadable).
    pub path_prefix: String,
}

/// Compiles one policy file. Returns the app (if it has no errors) and all problems found.
pub fn compile_app(
    path: &Path,
    text: &str,
    gateway: &GatewayConfig,
) -> (Option<AppConfig>, Vec<Problem>) {
    let base = gateway.base_dir();
    let defaults: UpstreamTimeouts = gateway.upstream_timeouts;
    let src = SourceFile::new(path, text);
    let file: FilePolicy = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => return (None, vec![src.from_toml(&e)]),
    };
    let mut out = Compiler {
        src: &src,
        problems: Vec::new(),
    };

    if *file.schema.get_ref() != SCHEMA_VERSION {
        out.error(
            &file.schema,
            format!(
                "schema {} is not supported (this gateway reads schema {SCHEMA_VERSION})",
                file.schema.get_ref()
            ),
        );
    }
    let id = file.app.get_ref().clone();
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        out.error(
            &file.app,
            "app id must be 1-64 characters of a-z, 0-9, `-`, `_`",
        );
    }
    out.non_empty(&file.owner, "owner");
    out.non_empty(&file.summary, "summary");

    if file.hosts.get_ref().is_empty() {
        out.error(&file.hosts, "hosts must list at least one host name");
    }
    let hosts: Vec<HostPattern> = file
        .hosts
        .get_ref()
        .iter()
        .filter_map(|h| match parse_host_pattern(h.get_ref()) {
            Ok(p) => Some(p),
            Err(msg) => {
                out.error(h, msg);
                None
            }
        })
        .collect();

    let path_prefix = match &file.path_prefix {
        Some(p) => out.path_prefix(p),
        None => String::new(),
    };

    let upstreams = out.upstreams(&file);
    let upstream_tls = out.upstream_tls(&file.upstream_tls, base);
    let idp = out.idp(&file, &gateway.idps);
    // Follow-on checks ask whether an IdP is *named*, so an unknown name is one error, not many.
    let idp_config = idp.and_then(|name| gateway.idps.iter().find(|i| i.name == name));
    let rules = out.rules(&file, file.idp.is_some(), idp_config);
    let examples = out.examples(&file, &rules, text, idp.unwrap_or("test"));
    let identity = out.identity(
        &file,
        base,
        idp.and_then(|name| gateway.idps.iter().find(|i| i.name == name)),
    );
    let identity_cookies = out.identity_cookies(
        &file,
        base,
        idp.and_then(|name| gateway.idps.iter().find(|i| i.name == name)),
    );
    let jwt_header = file.identity.jwt_header.as_ref().and_then(|h| {
        if file.idp.is_none() {
            out.error(
                h,
                "jwt_header needs `idp`: the assertion says who signed in",
            );
            return None;
        }
        if gateway.jwt.is_none() {
            out.error(
                h,
                "jwt_header needs signing keys: add [jwt] key_files to the gateway config",
            );
            return None;
        }
        match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(name) if !RESERVED_HEADERS.contains(&name.as_str()) => Some(name),
            _ => {
                out.error(
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
            out.error(b, "[identity.basic] needs `idp`: credentials are replayed for signed-in users");
            return None;
        }
        let service = out.service_credential(
            fb.service_username.as_ref(),
            fb.service_password_file.as_ref(),
            fb.service_password_env.as_ref(),
            base,
        )?;
        if service.is_some() {
            if let Some(u) = &fb.username {
                out.error(u, "`username` comes from the service account here: drop it or the service_* keys");
            }
            return Some(BasicReplay { username: None, service });
        }
        if gateway.vault.is_none() {
            out.error(b, "[identity.basic] needs the credential vault (add [vault] to the gateway config) or a service_username + service_password_file");
            return None;
        }
        let username = match fb.username.as_ref().map(|u| (u, u.get_ref().as_str())) {
            None | Some((_, "vault")) => None,
            Some((u, name)) => {
                let idp_config = idp.and_then(|n| gateway.idps.iter().find(|i| i.name == n));
                Some(out.identity_source(
                    "[identity.basic] username",
                    &Spanned::new(u.span(), toml::Value::String(name.to_string())),
                    base,
                    idp_config,
                )?)
            }
        };
        Some(BasicReplay { username, service: None })
    });
    let form_fill = file.form_fill.as_ref().and_then(|f| {
        let ff = f.get_ref();
        if file.idp.is_none() {
            out.error(
                f,
                "[form_fill] needs `idp`: credentials are stored per signed-in user",
            );
            return None;
        }
        let service = out.service_credential(
            ff.service_username.as_ref(),
            ff.service_password_file.as_ref(),
            ff.service_password_env.as_ref(),
            base,
        )?;
        if service.is_none() && gateway.vault.is_none() {
            out.error(f, "[form_fill] needs the credential vault (add [vault] to the gateway config) or a service_username + service_password_file");
            return None;
        }
        if file.identity.basic.is_some() {
            out.error(
                f,
                "[form_fill] and [identity.basic] both log in for the user: choose one",
            );
            return None;
        }
        let login_url = out.exact_path(&ff.login_url)?;
        for field in [&ff.username_field, &ff.password_field]
            .into_iter()
            .chain(ff.csrf_field.as_ref())
        {
            if field.get_ref().is_empty() || field.get_ref().chars().any(char::is_control) {
                out.error(field, "form field names must be non-empty");
                return None;
            }
        }
        let username = match ff.username.as_ref().map(|u| (u, u.get_ref().as_str())) {
            None | Some((_, "vault")) => None,
            Some((u, name)) => {
                let idp_config = idp.and_then(|n| gateway.idps.iter().find(|i| i.name == n));
                Some(out.identity_source(
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
    let logout_path = file.logout_path.as_ref().and_then(|p| {
        if file.idp.is_none() {
            out.error(
                p,
                "logout_path needs `idp`: there is no session to end without login",
            );
        }
        out.exact_path(p)
    });
    let allow_idp_initiated = match &file.allow_idp_initiated {
        Some(flag) if *flag.get_ref() => {
            let saml = idp
                .and_then(|name| gateway.idps.iter().find(|i| i.name == name))
                .is_some_and(|i| i.saml().is_some());
            if !saml && file.idp.is_some() {
                out.error(
                    flag,
                    "allow_idp_initiated applies to SAML only; this app's idp is not `kind = \"saml\"`",
                );
            }
            saml
        }
        _ => false,
    };
    let session_idle = file
        .session
        .idle
        .as_ref()
        .map_or(gateway.sessions.idle, |d| d.get_ref().0);
    let session_absolute = file
        .session
        .absolute
        .as_ref()
        .map_or(gateway.sessions.absolute, |d| d.get_ref().0);
    if let Some(at) = file
        .session
        .idle
        .as_ref()
        .or(file.session.absolute.as_ref())
    {
        if session_idle > session_absolute || session_idle.is_zero() {
            out.error(
                at,
                "[session] idle must be above zero and not longer than absolute",
            );
        }
        if file.idp.is_none() {
            out.error(at, "[session] needs `idp`: sessions exist only with login");
        }
    }

    let case_insensitive_paths = file
        .case_insensitive_paths
        .as_ref()
        .is_some_and(|f| *f.get_ref());
    let mut passive_health = crate::upstream::PassiveHealth::default();
    if let Some(n) = &file.health.eject_after {
        if !(1..=100).contains(n.get_ref()) {
            out.error(
                n,
                "[health] eject_after must be between 1 and 100 connect failures",
            );
        }
        passive_health.eject_after = *n.get_ref();
    }
    if let Some(d) = &file.health.eject_for {
        if d.get_ref().0.is_zero() || d.get_ref().0 > Duration::from_secs(3600) {
            out.error(d, "[health] eject_for must be above zero and at most 1h");
        }
        passive_health.eject_for = d.get_ref().0;
    }

    let timeouts = UpstreamTimeouts {
        connect: file.timeouts.connect.map_or(defaults.connect, |d| d.0),
        read: file.timeouts.read.map_or(defaults.read, |d| d.0),
        write: file.timeouts.write.map_or(defaults.write, |d| d.0),
    };

    let mut problems = out.problems;
    // Report in reading order, whatever order the checks ran in.
    problems.sort_by_key(|p| p.position);
    if problems.iter().any(Problem::is_error) {
        return (None, problems);
    }
    let app = AppConfig {
        id,
        owner: file.owner.into_inner(),
        summary: file.summary.into_inner(),
        file: path.to_path_buf(),
        hosts,
        path_prefix,
        preserve_host: file.preserve_host,
        upstreams,
        upstream_tls,
        timeouts,
        rules,
        idp: idp.map(str::to_string),
        logout_path,
        allow_idp_initiated,
        allow_encoded_slash: file.allow_encoded_slash,
        case_insensitive_paths,
        passive_health,
        examples,
        policy_sha256: openssl::sha::sha256(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        session_idle,
        session_absolute,
        delivery: Delivery::new(
            [
                (!identity.is_empty()).then_some(Step::Headers(identity)),
                (!identity_cookies.is_empty()).then_some(Step::Cookies(identity_cookies)),
                jwt_header.map(Step::Assertion),
                form_fill.map(Step::FormFill),
                basic.map(Step::Basic),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
    };
    (Some(app), problems)
}

/// Reads what it can of a broken policy file: its id, hosts and prefix.
pub fn salvage_broken(path: &Path, text: &str) -> BrokenApp {
    let table: Option<toml::Table> = toml::from_str(text).ok();
    let get_str = |key: &str| {
        table
            .as_ref()
            .and_then(|t| t.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let hosts = table
        .as_ref()
        .and_then(|t| t.get("hosts"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str())
                .filter_map(|h| parse_host_pattern(h).ok())
                .collect()
        })
        .unwrap_or_default();
    let path_prefix = get_str("path_prefix")
        .and_then(|p| normalise(&p).ok())
        .map(|p| p.trim_end_matches('/').to_string())
        .unwrap_or_default();
    BrokenApp {
        file: path.to_path_buf(),
        id: get_str("app"),
        hosts,
        path_prefix,
    }
}

/// Parses a configured host name: lower-case DNS name (or `*.` + name), no port.
pub fn parse_host_pattern(text: &str) -> Result<HostPattern, String> {
    let (wildcard, name) = match text.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!(
            "host `{text}` is not a lower-case host name (no port, no scheme; `*.example.com` for a wildcard)"
        ));
    }
    Ok(if wildcard {
        HostPattern::Wildcard(name.to_string())
    } else {
        HostPattern::Exact(name.to_string())
    })
}

/// Collects problems while compiling one file.
struct Compiler<'a> {
    src: &'a SourceFile<'a>,
    problems: Vec<Problem>,
}

impl Compiler<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.problems.push(self.src.error(Some(at.span()), message));
    }

    fn warning<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.problems
            .push(self.src.warning(Some(at.span()), message));
    }

    fn non_empty(&mut self, value: &Spanned<String>, what: &str) {
        if value.get_ref().trim().is_empty() {
            self.error(value, format!("{what} must not be empty"));
        }
    }

    fn path_prefix(&mut self, p: &Spanned<String>) -> String {
        let text = p.get_ref();
        match normalise(text) {
            Ok(n) if n == *text || n == format!("{text}/") => n.trim_end_matches('/').to_string(),
            Ok(n) => {
                self.error(
                    p,
                    format!("path_prefix `{text}` is not in normal form; write `{n}`"),
                );
                String::new()
            }
            Err(e) => {
                self.error(p, format!("path_prefix `{text}` is not a valid path: {e}"));
                String::new()
            }
        }
    }

    fn upstreams(&mut self, file: &FilePolicy) -> Vec<UpstreamTarget> {
        if file.upstreams.get_ref().is_empty() {
            self.error(&file.upstreams, "upstreams must list at least one backend");
        }
        let sni_override = file.upstream_tls.sni.as_ref().map(|s| s.get_ref().clone());
        let mut targets = Vec::new();
        for up in file.upstreams.get_ref() {
            let weight = match &up.weight {
                Some(w) if !(1..=100).contains(w.get_ref()) => {
                    self.error(w, "weight must be between 1 and 100");
                    1
                }
                Some(w) => *w.get_ref(),
                None => 1,
            };
            let raw = up.url.get_ref();
            let url = match url::Url::parse(raw) {
                Ok(u) => u,
                Err(e) => {
                    self.error(&up.url, format!("upstream url `{raw}` is invalid: {e}"));
                    continue;
                }
            };
            let tls = match url.scheme() {
                "http" => false,
                "https" => true,
                other => {
                    self.error(
                        &up.url,
                        format!("upstream scheme `{other}` is not supported (use http or https)"),
                    );
                    continue;
                }
            };
            if !url.username().is_empty() || url.password().is_some() {
                self.error(&up.url, "upstream url must not carry credentials");
                continue;
            }
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                self.error(
                    &up.url,
                    "upstream url must be scheme://host[:port] only (no path or query)",
                );
                continue;
            }
            let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
                self.error(&up.url, "upstream url needs a host");
                continue;
            };
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let verify = file
                .upstream_tls
                .verify
                .as_ref()
                .is_none_or(|v| *v.get_ref());
            if tls && verify && sni_override.is_none() && host.parse::<std::net::IpAddr>().is_ok() {
                // Certificates are checked against a DNS name (and SNI may not be an IP,
                // RFC 6066 §3), so an IP upstream needs the name its certificate carries.
                self.error(&up.url, format!("https upstream `{raw}` is an IP address: set [upstream_tls] sni to the name in its certificate"));
                continue;
            }
            // Resolved once here: request handling must never block on DNS.
            let addr = match (host.as_str(), port)
                .to_socket_addrs()
                .map(|mut a| a.next())
            {
                Ok(Some(a)) => a,
                Ok(None) | Err(_) => {
                    self.error(
                        &up.url,
                        format!("upstream host `{host}` cannot be resolved"),
                    );
                    continue;
                }
            };
            targets.push(UpstreamTarget {
                url: raw.clone(),
                addr,
                tls,
                host_header: match url.port() {
                    Some(port) => format!("{}:{port}", url.host_str().unwrap_or(&host)),
                    None => url.host_str().unwrap_or(&host).to_string(),
                },
                sni: sni_override.clone().unwrap_or(host),
                weight,
            });
        }
        targets
    }

    fn upstream_tls(&mut self, tls: &FileUpstreamTls, base: &Path) -> UpstreamTls {
        if let Some(sni) = &tls.sni {
            // An empty SNI would make the TLS connector skip certificate checks altogether.
            if parse_host_pattern(sni.get_ref())
                .map_or(true, |h| matches!(h, HostPattern::Wildcard(_)))
            {
                self.error(sni, format!("sni `{}` must be a host name", sni.get_ref()));
            }
        }
        let verify = tls.verify.as_ref().is_none_or(|v| *v.get_ref());
        if let Some(v) = &tls.verify {
            if !v.get_ref() {
                self.warning(v, "upstream certificate verification is off: anyone on the path can impersonate the backend");
            }
        }
        let ca =
            tls.ca_file
                .as_ref()
                .and_then(|f| match load_ca_file(&resolve(base, f.get_ref())) {
                    Ok((_, certs)) => Some(certs),
                    Err(message) => {
                        self.error(f, message);
                        None
                    }
                });
        UpstreamTls { verify, ca }
    }

    fn rules(&mut self, file: &FilePolicy, has_idp: bool, idp: Option<&IdpConfig>) -> RuleSet {
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

    fn rule(
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
            self.error(rule, format!("require rule `{id}` requires nothing: name groups, emails, claims, networks, time, acr, amr or max_age"));
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

    /// The `[[test]]` entries: request syntax, expectation syntax, and that a named rule
    /// exists (and is of the kind the expectation says).
    fn examples(
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
                .map(|u| u.get_ref().identity(idp, EXAMPLE_NOW));
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

    fn time_window(&mut self, spanned: &Spanned<FileTime>) -> Option<TimeWindow> {
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

    /// A shared service account (`service_username` with `service_password_file` or
    /// `service_password_env`). `Some(None)` when none is configured; `None` on an error.
    fn service_credential(
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

    fn networks(&mut self, list: &[Spanned<String>]) -> Vec<IpNet> {
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

    fn identity_conditions(&mut self, r: &FileRule, idp: Option<&IdpConfig>) -> IdentityConditions {
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
        for (name, value) in &r.claims {
            let standard = ["sub", "email", "name", "idp", "acr", "amr", "groups"];
            let kept = idp.is_some_and(|i| i.extra_claims().iter().any(|c| c == name));
            if !standard.contains(&name.as_str()) && !kept {
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

    /// The app's IdP: must be defined in `portcullis.toml`.
    fn idp<'g>(&mut self, file: &FilePolicy, idps: &'g [IdpConfig]) -> Option<&'g str> {
        let name = file.idp.as_ref()?;
        match idps.iter().find(|i| i.name == *name.get_ref()) {
            Some(i) => Some(i.name.as_str()),
            None => {
                let known: Vec<&str> = idps.iter().map(|i| i.name.as_str()).collect();
                self.error(
                    name,
                    format!(
                        "idp `{}` is not defined in the gateway config (defined: {})",
                        name.get_ref(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                None
            }
        }
    }

    /// An exact, normalised path (e.g. `logout_path`).
    fn exact_path(&mut self, p: &Spanned<String>) -> Option<String> {
        match normalise(p.get_ref()) {
            Ok(n) if n == *p.get_ref() && !p.get_ref().contains('*') => Some(n),
            Ok(n) => {
                self.error(
                    p,
                    format!("path `{}` is not in normal form; write `{n}`", p.get_ref()),
                );
                None
            }
            Err(e) => {
                self.error(
                    p,
                    format!("path `{}` is not a valid path: {e}", p.get_ref()),
                );
                None
            }
        }
    }

    /// `[identity.headers]`: header name → attribute, claim, static value or shared secret.
    fn identity(
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
    fn identity_cookies(
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

    fn identity_source(
        &mut self,
        name: &str,
        value: &Spanned<toml::Value>,
        base: &Path,
        idp: Option<&IdpConfig>,
    ) -> Option<IdentitySource> {
        let attribute = |attr: &str, join: String| -> Option<IdentitySource> {
            Some(match attr {
                "sub" => IdentitySource::Subject,
                "email" => IdentitySource::Email,
                "name" => IdentitySource::Name,
                "groups" => IdentitySource::Groups { join },
                "idp" => IdentitySource::Idp,
                "acr" => IdentitySource::Acr,
                "amr" => IdentitySource::Amr { join },
                other if idp.is_some_and(|i| i.extra_claims().iter().any(|c| c == other)) => {
                    IdentitySource::Claim {
                        name: other.to_string(),
                        join,
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
                let found = attribute(attr, ",".to_string());
                if found.is_none() {
                    self.error(value, unknown(attr));
                }
                found
            }
            toml::Value::Table(t) => {
                let keys: Vec<&str> = t.keys().map(String::as_str).collect();
                let allowed: &[&str] = match keys.first() {
                    Some(&"claim") | Some(&"join") => &["claim", "join"],
                    _ => &["value", "secret_env", "secret_file"],
                };
                if keys.len() != 1
                    && !(keys.len() == 2 && keys.contains(&"claim") && keys.contains(&"join"))
                    || keys.iter().any(|k| !allowed.contains(k))
                {
                    self.error(value, format!("{name}: use one of {{ claim = \"...\", join = \",\" }}, {{ value = \"...\" }}, {{ secret_env = \"...\" }}, {{ secret_file = \"...\" }}"));
                    return None;
                }
                let text = |key: &str| t.get(key).and_then(toml::Value::as_str).map(str::to_string);
                if let Some(claim) = text("claim") {
                    let join = text("join").unwrap_or_else(|| ",".to_string());
                    if join.chars().any(char::is_control) {
                        self.error(
                            value,
                            format!("{name}: join must not hold control characters"),
                        );
                        return None;
                    }
                    let found = attribute(&claim, join);
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

    fn static_value(&mut self, name: &str, at: &Spanned<toml::Value>, v: String) -> Option<String> {
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

    /// Checks what every rule has: a well-formed id unique in the file, and a reason.
    fn rule_header(&mut self, id: &Spanned<String>, why: &Spanned<String>, seen: &mut Vec<String>) {
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

    fn paths(&mut self, paths: &[Spanned<String>]) -> Vec<PathPattern> {
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

    fn methods(&mut self, methods: &[Spanned<String>]) -> Vec<Method> {
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
