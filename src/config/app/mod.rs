//! One app's policy file (`policies/<app>.toml`): who owns it, where it lives, where traffic
//! goes, and its access rules.
//!
//! Owns the on-disk shape and its compilation into [`AppConfig`]. The rule semantics live in
//! `policy`; cross-file checks (duplicate hosts, ids) live in `config::mod`.

mod examples;
mod file;
mod identity;
mod rules;
mod upstreams;

pub use file::example_user;
use file::*;

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
}
