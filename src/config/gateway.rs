//! `portcullis.toml`: the gateway's own settings (listeners, TLS, admin, logging, defaults).
//!
//! Owns the on-disk shape (`File*` structs) and its compilation into [`GatewayConfig`].
//! Per-app settings live in policy files (see `config::app`), not here.

pub use super::audit::AuditSettings;
use super::duration::ConfigDuration;
use super::files::{resolve, secret_file_exposure};
use super::idp::{compile_idps, FileIdp, IdpConfig};
use super::problem::{file_problem, Problem, SourceFile};
use crate::secret::{Secret, SecretBytes};
use crate::upstream::UpstreamTimeouts;
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Identity headers stripped from every client request, whatever the config says. Operators
/// can add to this list (`[headers] strip`), never remove from it.
pub const DEFAULT_STRIPPED_HEADERS: &[&str] = &[
    "X-Remote-User",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "Remote-User",
    "Remote-Email",
    "Remote-Groups",
    "X-User",
    "X-Email",
];

/// Header name prefixes stripped from every client request (`X-Portcullis-*` is ours).
pub const DEFAULT_STRIPPED_PREFIXES: &[&str] = &["X-Portcullis-"];

// ---- on-disk shape ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGateway {
    policies: Option<Spanned<String>>,
    listen: Spanned<FileListen>,
    #[serde(default)]
    admin: Option<FileAdmin>,
    #[serde(default)]
    sessions: FileSessions,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    upstream: FileUpstreamDefaults,
    #[serde(default)]
    headers: FileHeaders,
    #[serde(default)]
    idp: BTreeMap<String, FileIdp>,
    #[serde(default)]
    directory: BTreeMap<String, Spanned<super::directory::FileDirectory>>,
    kerberos: Option<super::kerberos::FileKerberos>,
    audit: Option<super::audit::FileAudit>,
    jwt: Option<FileJwt>,
    vault: Option<FileVault>,
    login_limits: Option<FileLoginLimits>,
}

/// `[login_limits]`: sign-in requests per minute (0 turns a limit off).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLoginLimits {
    per_address: Option<u32>,
    per_host: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVault {
    file: Spanned<String>,
    keys: Spanned<Vec<Spanned<FileVaultKey>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVaultKey {
    id: String,
    file: Option<String>,
    env: Option<String>,
}

/// The credential vault (`[vault]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// The encrypted store.
    pub file: PathBuf,
    /// Key id → 32-byte key; the first seals new entries.
    pub keys: Vec<(String, SecretBytes)>,
}

/// A 32-byte vault key from raw bytes, or from 64 hex digits or base64 text.
fn vault_key(bytes: &[u8]) -> Option<SecretBytes> {
    use base64::Engine;
    if bytes.len() == 32 {
        return Some(SecretBytes::new(bytes.to_vec()));
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let hex: Option<Vec<u8>> = (text.len() == 64)
        .then(|| {
            (0..32)
                .map(|i| u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    hex.or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .filter(|k| k.len() == 32)
        .map(SecretBytes::new)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJwt {
    key_files: Spanned<Vec<Spanned<String>>>,
    issuer: Option<Spanned<String>>,
    ttl: Option<ConfigDuration>,
}

/// Signing keys for identity assertions (`[jwt]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// PEM EC P-256 private keys; the first signs, all are published.
    pub keys: Vec<SecretBytes>,
    /// The `iss` of every assertion.
    pub issuer: String,
    /// Lifetime of an assertion.
    pub ttl: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListen {
    http: Option<Spanned<String>>,
    https: Option<FileHttps>,
    #[serde(default)]
    h2c: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttps {
    addr: Spanned<String>,
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    listen: Spanned<String>,
    token_file: Option<Spanned<String>>,
    console: Option<super::console::FileConsole>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSessions {
    idle: Option<ConfigDuration>,
    absolute: Option<ConfigDuration>,
    cookie_key_file: Option<Spanned<String>>,
    max_sessions: Option<Spanned<u64>>,
    login_timeout: Option<ConfigDuration>,
    max_pending_logins: Option<Spanned<u64>>,
    snapshot_file: Option<Spanned<String>>,
    redis: Option<Spanned<super::session_store::FileRedis>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<LogFormat>,
    level: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileServer {
    threads: Option<Spanned<usize>>,
    grace_period: Option<ConfigDuration>,
    shutdown_timeout: Option<ConfigDuration>,
    request_head_timeout: Option<Spanned<ConfigDuration>>,
    upgrade_sock: Option<Spanned<String>>,
    pid_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileUpstreamDefaults {
    connect_timeout: Option<ConfigDuration>,
    read_timeout: Option<ConfigDuration>,
    write_timeout: Option<ConfigDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileHeaders {
    #[serde(default)]
    strip: Vec<Spanned<String>>,
    #[serde(default)]
    strip_prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
}

// ---- compiled config -------------------------------------------------------------------------

/// Access log and diagnostics format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The HTTPS listener: address plus certificate chain and key (PEM).
#[derive(Debug, Clone)]
pub struct HttpsListener {
    /// Address to bind.
    pub addr: SocketAddr,
    /// PEM certificate chain file.
    pub cert: PathBuf,
    /// PEM private key file.
    pub key: PathBuf,
}

/// Sessions and pending logins: limits and the cookie key.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    /// A session unused this long ends (apps may shorten it).
    pub idle: Duration,
    /// A session ends this long after login, used or not (apps may shorten it).
    pub absolute: Duration,
    /// Key for encrypting and authenticating gateway cookies; `None` = a random key per
    /// process (sessions then end with the process anyway, being held in memory).
    pub cookie_key: Option<SecretBytes>,
    /// Most sessions held; the least recently used go first.
    pub max_sessions: u64,
    /// How long a started login may take before its state is forgotten.
    pub login_timeout: Duration,
    /// Most logins in progress held at once (bounds memory under a flood of anonymous requests).
    pub max_pending_logins: u64,
    /// Where the embedded store writes its sessions on stop and reads them on start.
    pub snapshot_file: Option<PathBuf>,
    /// The Redis shared with the other nodes; `None` = the embedded store.
    pub redis: Option<super::session_store::RedisSettings>,
}

/// Default deadline for a request head: generous for a human on a slow link (a head is a few
/// KiB), short enough that a slowloris client holds a connection for seconds, not for ever.
pub const DEFAULT_REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a new process waits for the old one's listening sockets, unless `[server]
/// upgrade_sock` says otherwise.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/portcullis-upgrade.sock";

/// Shortest cookie key accepted: 256 bits, stretched to the cookie crate's 512 by HKDF.
pub const MIN_COOKIE_KEY_BYTES: usize = 32;

/// Validated gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file these settings came from.
    pub source: PathBuf,
    /// Directory holding one policy file per app.
    pub policies_dir: PathBuf,
    /// Plain HTTP listener.
    pub http: Option<SocketAddr>,
    /// HTTPS listener (HTTP/1.1 and HTTP/2 via ALPN).
    pub https: Option<HttpsListener>,
    /// Accept HTTP/2 without TLS (prior knowledge) on the plain listener.
    pub h2c: bool,
    /// Admin listener for `/healthz` and `/readyz`.
    pub admin: Option<SocketAddr>,
    /// Sign-in rate limits (`[login_limits]`).
    pub login_limits: crate::login_limits::LoginLimitSettings,
    /// The token `portcullis sessions` (and any admin API caller) must present; without one
    /// the admin API answers nobody.
    pub admin_token: Option<Secret>,
    /// The admin console's address and operators (`[admin.console]`); without it the console
    /// takes the admin token only.
    pub console: Option<super::console::ConsoleSettings>,
    /// Session settings (defaults for every app).
    pub sessions: SessionSettings,
    /// Identity providers by name.
    pub idps: Vec<IdpConfig>,
    /// LDAP / Active Directory servers users' attributes and groups are read from.
    pub directories: Vec<super::directory::DirectoryConfig>,
    /// The gateway's Kerberos service principal, for apps that take `Negotiate` only.
    pub kerberos: Option<super::kerberos::KerberosSettings>,
    /// Log line format.
    pub log_format: LogFormat,
    /// Default log filter (`info`, `portcullis=debug`, ...); `RUST_LOG` overrides it.
    pub log_level: String,
    /// The hash-chained audit file, if configured.
    pub audit: Option<AuditSettings>,
    /// Audit records to a SIEM over syslog, if configured.
    pub audit_syslog: Option<super::audit::SyslogSettings>,
    /// Identity assertion keys, if configured.
    pub jwt: Option<JwtSettings>,
    /// The credential vault, if configured.
    pub vault: Option<VaultSettings>,
    /// Worker threads for the proxy.
    pub threads: usize,
    /// After SIGTERM: how long to keep serving while load balancers notice.
    pub grace_period: Duration,
    /// After the grace period: how long in-flight requests may take to finish.
    pub shutdown_timeout: Duration,
    /// Longest wait for a request's line and headers (slowloris); also bounds how long an idle
    /// kept-alive connection waits for its next request.
    pub request_head_timeout: Duration,
    /// The Unix socket a zero-downtime upgrade hands the listening sockets over
    /// (`portcullis run --upgrade`).
    pub upgrade_sock: PathBuf,
    /// Where the serving process writes its pid (rewritten by the process an upgrade starts),
    /// for service managers and upgrade scripts.
    pub pid_file: Option<PathBuf>,
    /// Default upstream timeouts.
    pub upstream_timeouts: UpstreamTimeouts,
    /// Extra identity headers to strip (on top of [`DEFAULT_STRIPPED_HEADERS`]).
    pub extra_stripped_headers: Vec<String>,
    /// Extra header prefixes to strip (on top of [`DEFAULT_STRIPPED_PREFIXES`]).
    pub extra_stripped_prefixes: Vec<String>,
    /// Peers whose `X-Forwarded-*` and `X-Request-Id` are believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl GatewayConfig {
    /// The directory users of IdP `idp` are looked up in, if any.
    pub fn directory_for(&self, idp: &str) -> Option<&super::directory::DirectoryConfig> {
        self.directories
            .iter()
            .find(|d| d.idps.iter().any(|i| i == idp))
    }

    /// Directory that relative paths in configuration are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.source.parent().unwrap_or_else(|| Path::new("."))
    }
}

/// Reads and validates `portcullis.toml`, returning every problem found.
pub fn load_gateway(path: &Path) -> Result<(GatewayConfig, Vec<Problem>), Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![file_problem(
            path,
            format!("cannot read gateway config: {e}"),
        )]
    })?;
    compile_gateway(path, &text)
}

/// Compiles gateway settings from text (split from [`load_gateway`] for tests).
pub fn compile_gateway(
    path: &Path,
    text: &str,
) -> Result<(GatewayConfig, Vec<Problem>), Vec<Problem>> {
    let src = SourceFile::new(path, text);
    let file: FileGateway = toml::from_str(text).map_err(|e| vec![src.from_toml(&e)])?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let mut problems = Vec::new();

    let mut socket = |value: &Spanned<String>, what: &str| -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(src.error(
                    Some(value.span()),
                    format!(
                        "{what} `{}` is not an address like `127.0.0.1:8080`",
                        value.get_ref()
                    ),
                ));
                None
            }
        }
    };
    let listen = file.listen.get_ref();
    let http = listen.http.as_ref().and_then(|a| socket(a, "listen.http"));
    let https_addr = listen
        .https
        .as_ref()
        .and_then(|h| socket(&h.addr, "listen.https.addr"));
    let admin = file
        .admin
        .as_ref()
        .and_then(|a| socket(&a.listen, "admin.listen"));
    let admin_token = file
        .admin
        .as_ref()
        .and_then(|a| a.token_file.as_ref())
        .and_then(|f| admin_token(&src, base, f, &mut problems));

    let https = match (&listen.https, https_addr) {
        (Some(h), Some(addr)) => {
            let cert = resolve(base, h.cert.get_ref());
            let key = resolve(base, h.key.get_ref());
            for (file_path, spanned, what) in
                [(&cert, &h.cert, "certificate"), (&key, &h.key, "key")]
            {
                if !file_path.is_file() {
                    problems.push(src.error(
                        Some(spanned.span()),
                        format!("TLS {what} file `{}` not found", file_path.display()),
                    ));
                }
            }
            if cert.is_file() && key.is_file() {
                if let Err(msg) = check_key_pair(&cert, &key) {
                    problems.push(src.error(Some(h.cert.span()), msg));
                }
            }
            Some(HttpsListener { addr, cert, key })
        }
        _ => None,
    };
    if listen.http.is_none() && listen.https.is_none() {
        problems.push(src.error(
            Some(file.listen.span()),
            "[listen] needs `http` or `https` (or both)",
        ));
    }

    let log_level = match &file.log.level {
        Some(level) => {
            let text = level.get_ref();
            if tracing_subscriber::EnvFilter::try_new(text).is_err() {
                problems.push(src.error(
                    Some(level.span()),
                    format!("log.level `{text}` is not a valid filter (e.g. `info`, `portcullis=debug`)"),
                ));
            }
            text.clone()
        }
        None => "info".to_string(),
    };

    let (audit, audit_syslog) = file.audit.as_ref().map_or((None, None), |a| {
        super::audit::compile_audit(a, &src, base, &mut problems)
    });

    let jwt = file.jwt.as_ref().map(|j| {
        let mut keys = Vec::new();
        if j.key_files.get_ref().is_empty() {
            problems.push(src.error(
                Some(j.key_files.span()),
                "jwt.key_files must name at least one EC P-256 key (the first signs)",
            ));
        }
        for f in j.key_files.get_ref() {
            let path = resolve(base, f.get_ref());
            if let Some(warning) = secret_file_exposure(&path) {
                problems.push(src.warning(Some(f.span()), warning));
            }
            match std::fs::read(&path) {
                Ok(pem) => match crate::delivery::assertion::key_id(&pem) {
                    Ok(_) => keys.push(SecretBytes::new(pem)),
                    Err(e) => problems.push(
                        src.error(Some(f.span()), format!("jwt key `{}`: {e}", path.display())),
                    ),
                },
                Err(e) => problems.push(src.error(
                    Some(f.span()),
                    format!("cannot read jwt key `{}`: {e}", path.display()),
                )),
            }
        }
        let ttl = j.ttl.map_or(Duration::from_secs(60), |d| d.0);
        if ttl > Duration::from_secs(3600) {
            problems.push(src.warning(
                None,
                "jwt.ttl over 1h: a stolen assertion stays valid that long",
            ));
        }
        JwtSettings {
            keys,
            issuer: j
                .issuer
                .as_ref()
                .map_or("portcullis".to_string(), |i| i.get_ref().clone()),
            ttl,
        }
    });

    let vault = file.vault.as_ref().map(|v| {
        let mut keys = Vec::new();
        if v.keys.get_ref().is_empty() {
            problems.push(src.error(Some(v.keys.span()), "vault.keys must list at least one key (the first seals new entries)"));
        }
        for k in v.keys.get_ref() {
            let entry = k.get_ref();
            let raw = match (&entry.file, &entry.env) {
                (Some(f), None) => {
                    let path = resolve(base, f);
                    if let Some(warning) = secret_file_exposure(&path) {
                        problems.push(src.warning(Some(k.span()), warning));
                    }
                    std::fs::read(&path).map_err(|e| format!("cannot read vault key `{}`: {e}", path.display()))
                }
                (None, Some(var)) => std::env::var(var)
                    .map(String::into_bytes)
                    .map_err(|_| format!("environment variable `{var}` is not set")),
                _ => Err(format!("vault key `{}`: set exactly one of `file` or `env`", entry.id)),
            };
            match raw.map(|bytes| vault_key(&bytes)) {
                Ok(Some(key)) => keys.push((entry.id.clone(), key)),
                Ok(None) => problems.push(src.error(Some(k.span()), format!("vault key `{}` must be 32 bytes (raw, 64 hex digits or base64; `openssl rand -out vault.key 32`)", entry.id))),
                Err(message) => problems.push(src.error(Some(k.span()), message)),
            }
        }
        VaultSettings {
            file: resolve(base, v.file.get_ref()),
            keys,
        }
    });

    let threads = match &file.server.threads {
        Some(t) if *t.get_ref() == 0 || *t.get_ref() > 1024 => {
            problems.push(src.error(Some(t.span()), "server.threads must be between 1 and 1024"));
            1
        }
        Some(t) => *t.get_ref(),
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };

    let request_head_timeout = match &file.server.request_head_timeout {
        Some(t)
            if t.get_ref().0 < Duration::from_millis(100)
                || t.get_ref().0 > Duration::from_secs(3600) =>
        {
            problems.push(src.error(
                Some(t.span()),
                "server.request_head_timeout must be between 100ms and 1h",
            ));
            DEFAULT_REQUEST_HEAD_TIMEOUT
        }
        Some(t) => t.get_ref().0,
        None => DEFAULT_REQUEST_HEAD_TIMEOUT,
    };

    let sessions = compile_sessions(&src, base, &file.sessions, &mut problems);
    let idps = compile_idps(&src, base, &file.idp, &mut problems);
    let console = file
        .admin
        .as_ref()
        .and_then(|a| a.console.as_ref())
        .and_then(|c| super::console::compile_console(c, &src, &idps, &mut problems));
    let directories =
        super::directory::compile_directories(&file.directory, &src, base, &idps, &mut problems);
    let kerberos = file
        .kerberos
        .as_ref()
        .and_then(|k| super::kerberos::compile_kerberos(k, &src, base, &mut problems));

    let mut header_name = |value: &Spanned<String>, what: &str| -> Option<String> {
        let name = value.get_ref();
        if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(src.error(
                Some(value.span()),
                format!("{what} `{name}` is not a valid header name"),
            ));
            None
        } else {
            Some(name.clone())
        }
    };
    let extra_stripped_headers = file
        .headers
        .strip
        .iter()
        .filter_map(|h| header_name(h, "headers.strip entry"))
        .collect();
    let extra_stripped_prefixes = file
        .headers
        .strip_prefixes
        .iter()
        .filter_map(|h| header_name(h, "headers.strip_prefixes entry"))
        .collect();

    let mut trusted_proxies = Vec::new();
    for cidr in &file.headers.trusted_proxies {
        match parse_cidr(cidr.get_ref()) {
            Some(net) => trusted_proxies.push(net),
            None => problems.push(src.error(
                Some(cidr.span()),
                format!(
                    "trusted proxy `{}` is not an IP address or CIDR like `10.0.0.0/8`",
                    cidr.get_ref()
                ),
            )),
        }
    }

    let policies_dir = resolve(
        base,
        file.policies.as_ref().map_or("policies", |p| p.get_ref()),
    );
    if !policies_dir.is_dir() {
        problems.push(src.error(
            file.policies.as_ref().map(|p| p.span()),
            format!("policies directory `{}` not found", policies_dir.display()),
        ));
    }

    let defaults = &file.upstream;
    let config = GatewayConfig {
        source: path.to_path_buf(),
        policies_dir,
        http,
        https,
        h2c: listen.h2c,
        admin,
        admin_token,
        console,
        directories,
        kerberos,
        login_limits: file.login_limits.as_ref().map_or_else(
            crate::login_limits::LoginLimitSettings::default,
            |l| {
                let defaults = crate::login_limits::LoginLimitSettings::default();
                crate::login_limits::LoginLimitSettings {
                    per_address: l
                        .per_address
                        .map_or(defaults.per_address, std::num::NonZeroU32::new),
                    per_host: l
                        .per_host
                        .map_or(defaults.per_host, std::num::NonZeroU32::new),
                }
            },
        ),
        sessions,
        idps,
        log_format: file.log.format.unwrap_or_default(),
        log_level,
        audit,
        audit_syslog,
        jwt,
        vault,
        threads,
        grace_period: file
            .server
            .grace_period
            .map_or(Duration::from_secs(5), |d| d.0),
        shutdown_timeout: file
            .server
            .shutdown_timeout
            .map_or(Duration::from_secs(10), |d| d.0),
        request_head_timeout,
        upgrade_sock: file.server.upgrade_sock.as_ref().map_or_else(
            || PathBuf::from(DEFAULT_UPGRADE_SOCK),
            |s| resolve(base, s.get_ref()),
        ),
        pid_file: file
            .server
            .pid_file
            .as_ref()
            .map(|p| resolve(base, p.get_ref())),
        upstream_timeouts: UpstreamTimeouts {
            connect: defaults
                .connect_timeout
                .map_or(Duration::from_secs(5), |d| d.0),
            read: defaults
                .read_timeout
                .map_or(Duration::from_secs(60), |d| d.0),
            write: defaults
                .write_timeout
                .map_or(Duration::from_secs(60), |d| d.0),
        },
        extra_stripped_headers,
        extra_stripped_prefixes,
        trusted_proxies,
    };
    problems.sort_by_key(|p| p.position);
    if problems.iter().any(Problem::is_error) {
        Err(problems)
    } else {
        Ok((config, problems))
    }
}

/// Fewest characters an admin token may have (a random 32-byte value, hex or base64, is longer).
const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// Reads `[admin] token_file`.
fn admin_token(
    src: &SourceFile<'_>,
    base: &Path,
    file: &Spanned<String>,
    problems: &mut Vec<Problem>,
) -> Option<Secret> {
    let path = resolve(base, file.get_ref());
    if let Some(warning) = secret_file_exposure(&path) {
        problems.push(src.warning(Some(file.span()), warning));
    }
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().chars().count() >= MIN_ADMIN_TOKEN_CHARS => {
            Some(Secret::new(text.trim()))
        }
        Ok(_) => {
            problems.push(src.error(
                Some(file.span()),
                format!(
                    "admin token file `{}` holds fewer than {MIN_ADMIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32 > admin.token`)",
                    path.display()
                ),
            ));
            None
        }
        Err(e) => {
            problems.push(src.error(
                Some(file.span()),
                format!("cannot read admin token file `{}`: {e}", path.display()),
            ));
            None
        }
    }
}

fn compile_sessions(
    src: &SourceFile<'_>,
    base: &Path,
    file: &FileSessions,
    problems: &mut Vec<Problem>,
) -> SessionSettings {
    let idle = file.idle.map_or(Duration::from_secs(3600), |d| d.0);
    let absolute = file.absolute.map_or(Duration::from_secs(8 * 3600), |d| d.0);
    if idle > absolute || idle.is_zero() {
        problems.push(src.error(
            None,
            "sessions.idle must be above zero and not longer than sessions.absolute",
        ));
    }
    let cookie_key = file.cookie_key_file.as_ref().and_then(|f| {
        let path = resolve(base, f.get_ref());
        if let Some(warning) = secret_file_exposure(&path) {
            problems.push(src.warning(Some(f.span()), warning));
        }
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() >= MIN_COOKIE_KEY_BYTES => Some(SecretBytes::new(bytes)),
            Ok(bytes) => {
                problems.push(src.error(
                    Some(f.span()),
                    format!(
                        "cookie key file `{}` holds {} bytes; it needs at least {MIN_COOKIE_KEY_BYTES} random bytes (e.g. `openssl rand -out cookie.key 64`)",
                        path.display(),
                        bytes.len()
                    ),
                ));
                None
            }
            Err(e) => {
                problems.push(src.error(
                    Some(f.span()),
                    format!("cannot read cookie key file `{}`: {e}", path.display()),
                ));
                None
            }
        }
    });
    let redis = file
        .redis
        .as_ref()
        .and_then(|r| super::session_store::compile_redis(src, base, r, problems));
    let snapshot_file = file
        .snapshot_file
        .as_ref()
        .map(|f| resolve(base, f.get_ref()));
    let key_needed = |what: &str, span| {
        src.error(
            Some(span),
            format!("{what} needs sessions.cookie_key_file: with a key made at each start, no other node and no later start could read what this one stored"),
        )
    };
    if file.cookie_key_file.is_none() {
        if let Some(r) = &file.redis {
            problems.push(key_needed("[sessions.redis]", r.span()));
        }
        if let Some(f) = &file.snapshot_file {
            problems.push(key_needed("sessions.snapshot_file", f.span()));
        }
    }
    if let (Some(f), Some(_)) = (&file.snapshot_file, &file.redis) {
        problems.push(src.warning(
            Some(f.span()),
            "sessions.snapshot_file is ignored with [sessions.redis]: Redis keeps the sessions",
        ));
    }
    let mut count = |value: &Option<Spanned<u64>>, default: u64, what: &str| match value {
        Some(v) if *v.get_ref() == 0 => {
            problems.push(src.error(
                Some(v.span()),
                format!("sessions.{what} must be at least 1"),
            ));
            default
        }
        Some(v) => *v.get_ref(),
        None => default,
    };
    SessionSettings {
        idle,
        absolute,
        cookie_key,
        snapshot_file,
        redis,
        max_sessions: count(&file.max_sessions, 1_000_000, "max_sessions"),
        login_timeout: file.login_timeout.map_or(Duration::from_secs(600), |d| d.0),
        max_pending_logins: count(&file.max_pending_logins, 100_000, "max_pending_logins"),
    }
}

/// Loads a PEM certificate chain and key and checks that they belong together, so a mismatch
/// is found by `check` rather than at the first TLS handshake.
fn check_key_pair(cert: &Path, key: &Path) -> Result<(), String> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| format!("cannot read `{}`: {e}", cert.display()))?;
    let key_pem =
        std::fs::read(key).map_err(|e| format!("cannot read `{}`: {e}", key.display()))?;
    let chain = openssl::x509::X509::stack_from_pem(&cert_pem)
        .map_err(|_| format!("`{}` is not a PEM certificate", cert.display()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| format!("`{}` holds no certificate", cert.display()))?;
    let private = openssl::pkey::PKey::private_key_from_pem(&key_pem)
        .map_err(|_| format!("`{}` is not a PEM private key", key.display()))?;
    let public = leaf.public_key().map_err(|e| e.to_string())?;
    if public.public_eq(&private) {
        Ok(())
    } else {
        Err(format!(
            "TLS key `{}` does not match certificate `{}`",
            key.display(),
            cert.display()
        ))
    }
}

/// Parses `10.0.0.0/8` or a bare address (treated as a single host).
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<GatewayConfig, Vec<String>> {
        let dir = tempfile::tempdir().map_err(|e| vec![e.to_string()])?;
        std::fs::create_dir(dir.path().join("policies")).map_err(|e| vec![e.to_string()])?;
        let path = dir.path().join("portcullis.toml");
        compile_gateway(&path, text)
            .map(|(c, _)| c)
            .map_err(|ps| ps.iter().map(|p| p.message.clone()).collect())
    }

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let c = compile("[listen]\nhttp = \"127.0.0.1:8080\"\n").map_err(|e| e.join("; "));
        let c = c.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.upstream_timeouts.connect, Duration::from_secs(5));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = compile("[listen]\nhttp = \"127.0.0.1:8080\"\nhtps = \"x\"\n").err();
        let err = err.unwrap_or_default().join("; ");
        assert!(err.contains("unknown field `htps`"), "{err}");
    }

    #[test]
    fn collects_every_bad_value() {
        let text =
            "[listen]\nhttp = \"nope\"\n[headers]\ntrusted_proxies = [\"10.0.0.0/33\", \"x\"]\n";
        let err = compile(text).err().unwrap_or_default();
        assert_eq!(err.len(), 3, "{err:?}");
    }

    #[test]
    fn audit_syslog_settings_and_their_mistakes() {
        let ok = compile(
            "[listen]\nhttp = \"127.0.0.1:8080\"\n[audit.syslog]\naddress = \"siem.corp.example:6514\"\n",
        )
        .unwrap_or_else(|e| panic!("{}", e.join("; ")));
        let syslog = ok.audit_syslog.expect("syslog sink");
        assert!(ok.audit.is_none(), "no file asked for");
        assert_eq!(syslog.facility, 4, "auth by default");
        assert_eq!(
            syslog.tls.map(|t| t.server_name),
            Some("siem.corp.example".to_string()),
            "TLS by default, checked against the address's host"
        );
        let err =
            compile("[listen]\nhttp = \"127.0.0.1:8080\"\n[audit.syslog]\naddress = \"siem\"\n")
                .err()
                .unwrap_or_default()
                .join("; ");
        assert!(err.contains("host:port"), "{err}");
        let err = compile(
            "[listen]\nhttp = \"127.0.0.1:8080\"\n[audit.syslog]\naddress = \"s:514\"\n\
             transport = \"udp\"\nfacility = \"kern\"\nformat = \"cef\"\n",
        )
        .err()
        .unwrap_or_default();
        assert_eq!(err.len(), 1, "transport stops the rest: {err:?}");
        assert!(err.join("").contains("transport `udp`"), "{err:?}");
        let err = compile(
            "[listen]\nhttp = \"127.0.0.1:8080\"\n[audit.syslog]\naddress = \"s:514\"\n\
             transport = \"tcp\"\nfacility = \"kern\"\nformat = \"cef\"\nserver_name = \"s\"\n",
        )
        .err()
        .unwrap_or_default()
        .join("; ");
        for wanted in [
            "facility `kern`",
            "format `cef`",
            "server_name is for transport",
        ] {
            assert!(err.contains(wanted), "{wanted}: {err}");
        }
        let err = compile("[listen]\nhttp = \"127.0.0.1:8080\"\n[audit]\nkeep = 3\n")
            .err()
            .unwrap_or_default()
            .join("; ");
        assert!(err.contains("needs `file`"), "{err}");
    }

    fn idp_config(table: &str) -> Result<(GatewayConfig, Vec<String>), Vec<String>> {
        let dir = tempfile::tempdir().map_err(|e| vec![e.to_string()])?;
        std::fs::create_dir(dir.path().join("policies")).map_err(|e| vec![e.to_string()])?;
        std::fs::write(dir.path().join("secret"), "s3cret\n").map_err(|e| vec![e.to_string()])?;
        let path = dir.path().join("portcullis.toml");
        let text = format!("[listen]\nhttp = \"127.0.0.1:8080\"\n[idp.okta]\nkind = \"oidc\"\nclient_id = \"0oa1\"\n{table}");
        compile_gateway(&path, &text)
            .map(|(c, ps)| (c, ps.iter().map(|p| p.message.clone()).collect()))
            .map_err(|ps| ps.iter().map(|p| p.message.clone()).collect())
    }

    fn issuer_of(table: &str) -> String {
        let (c, _) = idp_config(table).unwrap_or_else(|e| panic!("{e:?}"));
        c.idps
            .first()
            .and_then(|i| i.oidc().map(|o| o.issuer.clone()))
            .unwrap_or_default()
    }

    #[test]
    fn okta_preset_derives_the_issuer_as_okta_documents_it() {
        let secret = "client_secret_file = \"secret\"\n";
        assert_eq!(
            issuer_of(&format!(
                "okta_domain = \"https://dev-123.okta.com\"\n{secret}"
            )),
            "https://dev-123.okta.com/oauth2/default"
        );
        assert_eq!(
            issuer_of(&format!("okta_domain = \"https://dev-123.okta.com/\"\nauthorization_server = \"org\"\n{secret}")),
            "https://dev-123.okta.com"
        );
        assert_eq!(
            issuer_of(&format!("okta_domain = \"https://corp.okta.com\"\nauthorization_server = \"aus1abc\"\n{secret}")),
            "https://corp.okta.com/oauth2/aus1abc"
        );
        let err = idp_config(&format!(
            "okta_domain = \"http://dev-123.okta.com\"\n{secret}"
        ))
        .err();
        assert!(err
            .unwrap_or_default()
            .join(";")
            .contains("okta_domain must look like"));
    }

    #[test]
    fn idp_secrets_and_issuers_are_checked() {
        let (c, warnings) =
            idp_config("issuer = \"https://idp.example\"\nclient_secret = \"inline\"\n")
                .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(warnings
            .join(";")
            .contains("client_secret is written in the config file"));
        assert_eq!(
            c.idps
                .first()
                .and_then(|i| i.oidc().map(|o| o.client_secret.expose().to_string())),
            Some("inline".into())
        );
        let (c, _) =
            idp_config("issuer = \"https://idp.example\"\nclient_secret_file = \"secret\"\n")
                .unwrap_or_else(|e| panic!("{e:?}"));
        let idp = c.idps.first().and_then(|i| i.oidc().cloned());
        assert_eq!(
            idp.as_ref().map(|i| i.client_secret.expose()),
            Some("s3cret")
        );
        assert_eq!(
            idp.map(|i| i.scopes),
            Some(vec!["openid".into(), "profile".into(), "email".into()])
        );

        let errors = |table: &str| idp_config(table).err().unwrap_or_default().join("; ");
        assert!(
            errors("issuer = \"http://idp.example\"\nclient_secret_file = \"secret\"\n")
                .contains("issuer must use https")
        );
        assert!(errors(
            "issuer = \"https://idp.example\"\nclient_secret_env = \"PORTCULLIS_TEST_UNSET_VAR\"\n"
        )
        .contains("is not set"));
        assert!(errors("issuer = \"https://idp.example\"\n").contains("exactly one of"));
        assert!(errors("issuer = \"https://idp.example\"\nclient_secret_file = \"secret\"\nscopes = [\"email\"]\n").contains("must include `openid`"));
        assert!(errors("issuer = \"https://idp.example\"\nclient_secret_file = \"secret\"\nauth_params = { state = \"x\" }\n").contains("cannot be overridden"));
        assert!(errors(
            "issuer = \"https://idp.example\"\nclient_secret_file = \"secret\"\nca_file = \"secret\"\n"
        )
        .contains("holds no certificate"));
        // Allowed for tests and demos, with a warning.
        let (_, warnings) = idp_config("issuer = \"http://127.0.0.1:9\"\nallow_insecure_issuer = true\nclient_secret_file = \"secret\"\n")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(warnings.join(";").contains("allow_insecure_issuer"));
    }

    #[test]
    fn signal_sources_default_to_the_idp_and_are_checked() {
        let base =
            "issuer = \"https://corp.okta.com/oauth2/default\"\nclient_secret_file = \"secret\"\n";
        let (c, _) = idp_config(&format!(
            "{base}[idp.okta.universal_logout]\naudience = \"https://gw.example/.portcullis/global-token-revocation\"\n\
             [idp.okta.shared_signals]\nissuer = \"https://corp.okta.com\"\njwks_uri = \"https://corp.okta.com/oauth2/v1/keys\"\naudience = \"https://gw.example\"\n"
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        let idp = c.idps.first().unwrap_or_else(|| panic!("no idp"));
        let gtr = idp
            .universal_logout
            .as_ref()
            .unwrap_or_else(|| panic!("no gtr"));
        assert_eq!(gtr.issuer, "https://corp.okta.com/oauth2/default");
        assert_eq!(gtr.jwks_uri, None, "the IdP's own keys");
        let ssf = idp
            .shared_signals
            .as_ref()
            .unwrap_or_else(|| panic!("no ssf"));
        assert_eq!(
            ssf.jwks_uri.as_deref(),
            Some("https://corp.okta.com/oauth2/v1/keys")
        );

        let errors = |table: &str| {
            idp_config(&format!("{base}{table}"))
                .err()
                .unwrap_or_default()
                .join("; ")
        };
        assert!(errors(
            "[idp.okta.shared_signals]\nissuer = \"https://other.example\"\naudience = \"a\"\n"
        )
        .contains("needs `jwks_uri`"));
        assert!(errors("[idp.okta.universal_logout]\naudience = \"\"\n")
            .contains("audience must not be empty"));
        assert!(errors(
            "[idp.okta.universal_logout]\naudience = \"a\"\njwks_uri = \"keys.json\"\n"
        )
        .contains("absolute http(s) URL"));
        assert!(
            errors("[idp.okta.universal_logout]\naudiences = [\"a\"]\n").contains("unknown field")
        );
    }

    #[test]
    fn secret_files_readable_by_others_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("key");
        std::fs::write(&file, [1u8; 64]).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let warning = secret_file_exposure(&file).unwrap_or_default();
        assert!(
            warning.contains("readable by other users (mode 644)"),
            "{warning}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(secret_file_exposure(&file), None);
    }

    #[test]
    fn session_storage_settings_are_checked() {
        let key = format!(
            "cookie_key_file = \"{}/certs/dev/cookie.key\"\n",
            env!("CARGO_MANIFEST_DIR")
        );
        let base = "[listen]\nhttp = \"127.0.0.1:8080\"\n[sessions]\n";
        let errors = |extra: &str| {
            compile(&format!("{base}{extra}"))
                .err()
                .unwrap_or_default()
                .join("; ")
        };
        assert!(
            errors("[sessions.redis]\nurl = \"redis://127.0.0.1:6379\"\n")
                .contains("needs sessions.cookie_key_file")
        );
        assert!(errors("snapshot_file = \"s.snap\"\n").contains("needs sessions.cookie_key_file"));
        let with_key = |extra: &str| errors(&format!("{key}{extra}"));
        assert!(
            with_key("[sessions.redis]\nurl = \"redis://u:Pa55-TEST-ONLY@127.0.0.1:6379\"\n")
                .contains("not in the URL")
        );
        assert!(
            !with_key("[sessions.redis]\nurl = \"redis://u:Pa55-TEST-ONLY@127.0.0.1:6379\"\n")
                .contains("Pa55-TEST-ONLY"),
            "the password is not repeated back"
        );
        assert!(
            with_key("[sessions.redis]\nurl = \"redis://a:1\"\ncluster = [\"redis://b:1\"]\n")
                .contains("exactly one of")
        );
        assert!(
            with_key("[sessions.redis]\nsentinels = [\"redis://a:26379\"]\n")
                .contains("needs `master`")
        );
        assert!(
            with_key("[sessions.redis]\nurl = \"redis://a:1\"\ntouch_interval = \"2m\"\n")
                .contains("touch_interval must be between")
        );
        assert!(with_key("[sessions.redis]\nurl = \"redis://a:1\"\npassword_env = \"PORTCULLIS_TEST_UNSET_VAR\"\n")
            .contains("is not set"));
        let c = compile(&format!(
            "{base}{key}snapshot_file = \"s.snap\"\n[sessions.redis]\nsentinels = [\"redis://a:26379\"]\nmaster = \"m\"\nl1_ttl = \"0s\"\n"
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        let redis = c
            .sessions
            .redis
            .unwrap_or_else(|| panic!("no redis settings"));
        assert_eq!(
            redis.topology,
            super::super::session_store::RedisTopology::Sentinel {
                sentinels: vec!["redis://a:26379".into()],
                master: "m".into()
            }
        );
        assert_eq!(redis.l1_ttl, Duration::ZERO);
        assert_eq!(redis.timeout, Duration::from_millis(500));
    }
}
