//! One app's policy file (`policies/<app>.toml`): who owns it, where it lives, where traffic
//! goes, and its access rules.
//!
//! Owns the on-disk shape and its compilation into [`AppConfig`]. The rule semantics live in
//! `policy`; cross-file checks (duplicate hosts, ids) live in `config::mod`.

mod bearer;
mod examples;
mod file;
mod identity;
mod maintenance;
mod rewrite;
mod rules;
mod upstreams;

pub use bearer::BearerConfig;
pub use file::example_user;
use file::*;
pub use maintenance::Maintenance;

use super::duration::ConfigDuration;
use super::files::{load_ca_file, resolve, secret_file_exposure};
use super::gateway::GatewayConfig;
use super::idp::{IdpConfig, IdpRef};
use super::problem::{Problem, SourceFile};
use crate::delivery::basic::BasicReplay;
use crate::delivery::form_fill::FormFill;
use crate::delivery::identity::{IdentityCookies, IdentityHeaders, IdentitySource, Multi};
use crate::delivery::{Delivery, Step};
use crate::idp::Identity;
use crate::policy::examples::{Example, ExampleUser, Expectation};
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
    id: String,
    /// Who answers for this app.
    owner: String,
    /// One line saying what the app is.
    summary: String,
    /// The policy file.
    file: PathBuf,
    /// Host names served.
    hosts: Vec<HostPattern>,
    /// Path prefix on those hosts, normalised, without trailing slash (`""` = whole host).
    path_prefix: String,
    /// Send the client's Host header upstream (legacy apps build links from it).
    preserve_host: bool,
    /// Backends.
    upstreams: Vec<UpstreamTarget>,
    /// TLS towards backends.
    upstream_tls: UpstreamTls,
    /// Timeouts towards backends.
    timeouts: UpstreamTimeouts,
    /// Access rules.
    rules: RuleSet,
    /// The identity provider users of this app sign in with.
    idp: Option<IdpRef>,
    /// A backend path that means "log out" (intercepted: ends the gateway and IdP sessions).
    logout_path: Option<String>,
    /// Accept IdP-initiated (unsolicited) SAML responses on this app's host.
    allow_idp_initiated: bool,
    /// Where an IdP-initiated login may land when its RelayState names a path of this app
    /// (`idp_initiated_relay_state = true`): these patterns (empty: nowhere but `/`).
    idp_initiated_deep_links: Vec<PathPattern>,
    /// Pass `%2F` in paths through (kept encoded) instead of refusing it.
    allow_encoded_slash: bool,
    /// Routing and rules compare paths without letter case (IIS and most Windows backends
    /// serve `/ADMIN` and `/admin` alike).
    case_insensitive_paths: bool,
    /// When an upstream is left out after refusing connections.
    passive_health: crate::upstream::PassiveHealth,
    /// Probes of the upstreams on a schedule (`[health] path`), when on.
    active_health: Option<crate::upstream::ActiveHealth>,
    /// SHA-256 (hex) of the policy file as loaded: which version decided, for the audit trail.
    policy_sha256: String,
    /// The file's `[[test]]` examples (run by `portcullis policy test`).
    examples: Vec<Example>,
    /// Session idle timeout for this app.
    session_idle: Duration,
    /// Session absolute lifetime for this app.
    session_absolute: Duration,
    /// How the backend learns who the user is (headers, cookies, assertion, form-fill,
    /// Basic), in the order the steps run.
    delivery: Delivery,
    /// Access tokens API callers may present instead of a browser session.
    bearer: Option<BearerConfig>,
    /// Internal origins in the app's answers, moved to the public one.
    rewrite: crate::rewrite::Rewrite,
    /// Down for maintenance (`[maintenance] enabled = true`), except to its administrators.
    maintenance: Option<Maintenance>,
    /// Sessions whose directory lookup failed are refused here: the directory's
    /// "unavailable" claim (`[directory] on_failure = "refuse"`, the default where the app
    /// reads directory attributes).
    directory_required: Option<String>,
}

/// Read-only: an `AppConfig` is made only by [`compile_app`], so one that exists passed every
/// check.
impl AppConfig {
    /// App id used in logs and audit.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Who answers for this app.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// One line saying what the app is.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The policy file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Host names served.
    pub fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }

    /// Path prefix on those hosts, normalised, without trailing slash (`""` = whole host).
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// Send the client's Host header upstream (legacy apps build links from it).
    pub fn preserve_host(&self) -> bool {
        self.preserve_host
    }

    /// Backends.
    pub fn upstreams(&self) -> &[UpstreamTarget] {
        &self.upstreams
    }

    /// TLS towards backends.
    pub fn upstream_tls(&self) -> &UpstreamTls {
        &self.upstream_tls
    }

    /// Timeouts towards backends.
    pub fn timeouts(&self) -> UpstreamTimeouts {
        self.timeouts
    }

    /// Access rules.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The identity provider users of this app sign in with.
    pub fn idp(&self) -> Option<&str> {
        self.idp.as_ref().map(IdpRef::name)
    }

    /// The same IdP with its protocol, as resolved when the policy compiled.
    pub fn idp_ref(&self) -> Option<&IdpRef> {
        self.idp.as_ref()
    }

    /// A backend path that means "log out" (intercepted: ends the gateway and IdP sessions).
    pub fn logout_path(&self) -> Option<&str> {
        self.logout_path.as_deref()
    }

    /// Accept IdP-initiated (unsolicited) SAML responses on this app's host.
    pub fn allow_idp_initiated(&self) -> bool {
        self.allow_idp_initiated
    }

    /// Does an IdP-initiated login whose RelayState is `path` (normalised, in rule form) land
    /// there? Only on this app's own paths its policy lists.
    pub fn idp_initiated_lands_on(&self, rule_path: &str) -> bool {
        self.idp_initiated_deep_links
            .iter()
            .any(|p| p.matches(rule_path))
    }

    /// Pass `%2F` in paths through (kept encoded) instead of refusing it.
    pub fn allow_encoded_slash(&self) -> bool {
        self.allow_encoded_slash
    }

    /// Routing and rules compare paths without letter case (IIS and most Windows backends
    /// serve `/ADMIN` and `/admin` alike).
    pub fn case_insensitive_paths(&self) -> bool {
        self.case_insensitive_paths
    }

    /// When an upstream is left out after refusing connections.
    pub fn passive_health(&self) -> crate::upstream::PassiveHealth {
        self.passive_health
    }

    /// Probes of the upstreams on a schedule (`[health] path`), when on.
    pub fn active_health(&self) -> Option<&crate::upstream::ActiveHealth> {
        self.active_health.as_ref()
    }

    /// SHA-256 (hex) of the policy file as loaded: which version decided, for the audit trail.
    pub fn policy_sha256(&self) -> &str {
        &self.policy_sha256
    }

    /// The file's `[[test]]` examples (run by `portcullis policy test`).
    pub fn examples(&self) -> &[Example] {
        &self.examples
    }

    /// Session idle timeout for this app.
    pub fn session_idle(&self) -> Duration {
        self.session_idle
    }

    /// Session absolute lifetime for this app.
    pub fn session_absolute(&self) -> Duration {
        self.session_absolute
    }

    /// How the backend learns who the user is (headers, cookies, assertion, form-fill,
    /// Basic), in the order the steps run.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Access tokens API callers may present instead of a browser session.
    pub fn bearer(&self) -> Option<&BearerConfig> {
        self.bearer.as_ref()
    }

    /// Internal origins in the app's answers, moved to the public one.
    pub fn rewrite(&self) -> &crate::rewrite::Rewrite {
        &self.rewrite
    }

    /// Down for maintenance (`[maintenance] enabled = true`), except to its administrators.
    pub fn maintenance(&self) -> Option<&Maintenance> {
        self.maintenance.as_ref()
    }

    /// The claim that, on a session, means its directory lookup failed and this app refuses
    /// it (`None`: the app serves such sessions, without directory attributes).
    pub fn directory_required(&self) -> Option<&str> {
        self.directory_required.as_deref()
    }
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
    let src = SourceFile::new(path, text);
    let file: FilePolicy = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => return (None, vec![src.from_toml(&e)]),
    };
    let mut out = Compiler {
        src: &src,
        problems: Vec::new(),
        directory: file
            .idp
            .as_ref()
            .and_then(|i| gateway.directory_for(i.get_ref())),
        uses_directory: false,
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
    let rewrite = out.rewrite(&file, &upstreams, &path_prefix);
    let maintenance = out.maintenance(&file);
    let idp_config = out.idp(&file, &gateway.idps);
    let idp = idp_config.map(|i| i.name.as_str());
    // Follow-on checks ask whether an IdP is *named*, so an unknown name is one error, not many.
    let rules = out.rules(&file, file.idp.is_some(), idp_config);
    let examples = out.examples(&file, &rules, text, idp.unwrap_or("test"));
    let delivery = out.delivery(&file, base, gateway, idp_config);
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
            let saml = idp_config.is_some_and(|i| i.saml().is_some());
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
    let idp_initiated_deep_links = match &file.idp_initiated_relay_state {
        Some(flag) if *flag.get_ref() => {
            if !allow_idp_initiated && file.allow_idp_initiated.is_none() {
                out.error(
                    flag,
                    "idp_initiated_relay_state needs allow_idp_initiated = true",
                );
            }
            if file.idp_initiated_paths.is_empty() {
                // `/**`: any path of the app.
                vec![PathPattern::Under(String::new())]
            } else {
                out.paths(&file.idp_initiated_paths)
            }
        }
        _ => {
            if let Some(first) = file.idp_initiated_paths.first() {
                out.error(
                    first,
                    "idp_initiated_paths needs idp_initiated_relay_state = true",
                );
            }
            Vec::new()
        }
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
    let passive_health = out.passive_health(&file.health);
    let active_health = out.active_health(&file.health);
    let bearer = out.bearer(&file, &gateway.idps, idp_config, case_insensitive_paths);
    let directory_required = out.directory_failure(&file);
    let timeouts = upstreams::timeouts(&file.timeouts, gateway.upstream_timeouts);

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
        idp: idp_config.map(IdpRef::of),
        logout_path,
        allow_idp_initiated,
        idp_initiated_deep_links: if case_insensitive_paths {
            idp_initiated_deep_links
                .into_iter()
                .map(PathPattern::case_folded)
                .collect()
        } else {
            idp_initiated_deep_links
        },
        allow_encoded_slash: file.allow_encoded_slash,
        case_insensitive_paths,
        passive_health,
        active_health,
        examples,
        policy_sha256: openssl::sha::sha256(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        session_idle,
        session_absolute,
        delivery,
        bearer,
        rewrite,
        maintenance,
        directory_required,
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
    /// The directory the app's IdP looks users up in, if any.
    directory: Option<&'a crate::config::directory::DirectoryConfig>,
    /// Some identity value or rule reads a directory attribute.
    uses_directory: bool,
}

impl Compiler<'_> {
    /// `[directory] on_failure`: refuse (the default when the app reads directory
    /// attributes) or continue without them.
    fn directory_failure(&mut self, file: &FilePolicy) -> Option<String> {
        let refuse = match &file.directory {
            Some(spec) => {
                let on_failure = &spec.get_ref().on_failure;
                if self.directory.is_none() {
                    self.error(spec, "[directory] needs an IdP whose users are looked up in a directory ([directory.*] idps)");
                    return None;
                }
                match on_failure.get_ref().as_str() {
                    "refuse" => true,
                    "continue" => false,
                    other => {
                        self.error(on_failure, format!("[directory] on_failure `{other}` must be \"refuse\" or \"continue\""));
                        return None;
                    }
                }
            }
            None => self.uses_directory,
        };
        let directory = self.directory?;
        refuse.then(|| directory.unavailable_claim())
    }

    /// Is `claim` one the app's directory adds (`corp:employeeNumber`)? Noted when it is.
    fn directory_claim(&mut self, claim: &str) -> bool {
        let found = self
            .directory
            .is_some_and(|d| d.claim_names().iter().any(|n| n == claim));
        self.uses_directory |= found;
        found
    }

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
    fn idp<'g>(&mut self, file: &FilePolicy, idps: &'g [IdpConfig]) -> Option<&'g IdpConfig> {
        let name = file.idp.as_ref()?;
        match idps.iter().find(|i| i.name == *name.get_ref()) {
            Some(i) => Some(i),
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

/// A gateway to compile policies against in unit tests: an OIDC IdP `corp` (with a
/// `department` claim), signing keys and a vault from `certs/dev`, in a temporary directory.
#[cfg(test)]
pub(super) mod testing {
    use super::*;

    /// The gateway and the directory its relative paths resolve against.
    pub struct Fixture {
        pub dir: tempfile::TempDir,
        pub gateway: GatewayConfig,
    }

    /// What compiling one policy gave: the app, or the problems (position and message).
    pub type Compiled = Result<(AppConfig, Vec<String>), Vec<(Option<(usize, usize)>, String)>>;

    impl Fixture {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::create_dir(dir.path().join("policies")).expect("policies dir");
            std::fs::write(dir.path().join("secret"), "s3cret\n").expect("secret");
            let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/dev");
            let text = format!(
                "[listen]\nhttp = \"127.0.0.1:8080\"\n\
                 [idp.corp]\nkind = \"oidc\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\n\
                 client_secret_file = \"secret\"\nclaims = [\"department\"]\n\
                 [jwt]\nkey_files = [\"{certs}/jwt-signing.key\"]\n\
                 [vault]\nfile = \"vault.json\"\nkeys = [{{ id = \"t\", file = \"{certs}/vault.key\" }}]\n"
            );
            let path = dir.path().join("portcullis.toml");
            let (gateway, _) = crate::config::gateway::compile_gateway(&path, &text)
                .unwrap_or_else(|p| panic!("test gateway: {p:?}"));
            Self { dir, gateway }
        }

        /// Compiles `policy` as `policies/app.toml`.
        pub fn compile(&self, policy: &str) -> Compiled {
            let path = self.dir.path().join("policies/app.toml");
            let (app, problems) = compile_app(&path, policy, &self.gateway);
            match app {
                Some(app) => Ok((app, problems.into_iter().map(|p| p.message).collect())),
                None => Err(problems
                    .into_iter()
                    .filter(Problem::is_error)
                    .map(|p| (p.position, p.message))
                    .collect()),
            }
        }

        /// The error messages compiling `policy` gives (none when it compiles).
        pub fn errors(&self, policy: &str) -> Vec<String> {
            match self.compile(policy) {
                Ok(_) => Vec::new(),
                Err(problems) => problems.into_iter().map(|(_, m)| m).collect(),
            }
        }
    }

    /// A policy's required top, for `hosts = ["app.example"]` and a loopback upstream.
    pub const HEAD: &str = "schema = 1\napp = \"app\"\nowner = \"o@corp.example\"\nsummary = \"s\"\nhosts = [\"app.example\"]\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\n";

    /// One allow rule for signed-in staff.
    pub const STAFF: &str = "[[allow]]\nid = \"staff\"\nwhy = \"w\"\ngroups = [\"staff\"]\n";

    /// Asserts some message contains `needle`.
    pub fn assert_mentions(messages: &[String], needle: &str) {
        assert!(
            messages.iter().any(|m| m.contains(needle)),
            "no message mentions `{needle}`: {messages:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{assert_mentions, Fixture, HEAD, STAFF};

    #[test]
    fn a_minimal_app_gets_the_gateways_defaults() {
        let fx = Fixture::new();
        let (app, warnings) = fx
            .compile(&format!("{HEAD}idp = \"corp\"\n{STAFF}"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(app.id(), "app");
        assert_eq!(app.path_prefix(), "");
        assert_eq!(app.idp(), Some("corp"));
        assert_eq!(
            app.idp_ref().map(super::super::idp::IdpRef::kind),
            Some(super::super::idp::IdpKind::Oidc)
        );
        assert_eq!(app.session_idle(), fx.gateway.sessions.idle);
        assert_eq!(app.session_absolute(), fx.gateway.sessions.absolute);
        assert_eq!(app.timeouts(), fx.gateway.upstream_timeouts);
        assert_eq!(
            app.passive_health(),
            crate::upstream::PassiveHealth::default()
        );
        assert_eq!(app.policy_sha256().len(), 64);
        assert!(
            app.preserve_host(),
            "the client's Host is passed on by default"
        );
        assert!(!app.case_insensitive_paths());
        assert!(app.delivery().steps().is_empty());
    }

    #[test]
    fn every_top_level_mistake_is_named_with_its_line() {
        let fx = Fixture::new();
        let problems = fx
            .compile(
                "schema = 2\napp = \"Bad App\"\nowner = \"\"\nsummary = \"s\"\nhosts = []\nupstreams = [{ url = \"http://127.0.0.1:9\" }]\nidp = \"nobody\"\n",
            )
            .err()
            .unwrap_or_default();
        let at = |needle: &str| {
            problems
                .iter()
                .find(|(_, m)| m.contains(needle))
                .and_then(|(p, _)| *p)
                .map(|(line, _)| line)
        };
        assert_eq!(at("schema 2 is not supported"), Some(1));
        assert_eq!(at("app id must be"), Some(2));
        assert_eq!(at("owner"), Some(3));
        assert_eq!(at("hosts must list at least one"), Some(5));
        assert_eq!(at("nobody"), Some(7), "{problems:?}");
    }

    #[test]
    fn unknown_keys_and_bad_hosts_are_refused() {
        let fx = Fixture::new();
        assert_mentions(&fx.errors(&format!("{HEAD}hots = []\n")), "hots");
        let bad_host = HEAD.replace("app.example", "app example");
        assert!(!fx.errors(&bad_host).is_empty());
        let (app, _) = fx
            .compile(&HEAD.replace("\"app.example\"", "\"app.example\", \"*.apps.example\""))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(app.hosts().len(), 2);
    }

    #[test]
    fn session_limits_and_the_logout_path_need_an_idp_and_sense() {
        let fx = Fixture::new();
        assert_mentions(
            &fx.errors(&format!("{HEAD}[session]\nidle = \"1h\"\n")),
            "[session] needs `idp`",
        );
        assert_mentions(
            &fx.errors(&format!(
                "{HEAD}idp = \"corp\"\n[session]\nidle = \"9h\"\nabsolute = \"1h\"\n{STAFF}"
            )),
            "idle must be above zero and not longer than absolute",
        );
        assert_mentions(
            &fx.errors(&format!("{HEAD}logout_path = \"/logout\"\n")),
            "logout_path needs `idp`",
        );
        let (app, _) = fx
            .compile(&format!(
                "{HEAD}idp = \"corp\"\nlogout_path = \"/bye\"\n[session]\nidle = \"10m\"\n{STAFF}"
            ))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(app.session_idle(), std::time::Duration::from_secs(600));
        assert_eq!(app.logout_path(), Some("/bye"));
    }
}
