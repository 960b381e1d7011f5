//! `[sessions]`' storage settings: the snapshot file of the embedded store, or the Redis a
//! gateway shares with its other nodes (`[sessions.redis]`).

use super::duration::ConfigDuration;
use super::files::{load_ca_file, resolve};
use super::problem::{Problem, SourceFile};
use crate::secret::Secret;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// `[sessions.redis]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRedis {
    url: Option<Spanned<String>>,
    sentinels: Option<Spanned<Vec<String>>>,
    master: Option<Spanned<String>>,
    cluster: Option<Spanned<Vec<String>>>,
    username: Option<String>,
    password_file: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    #[serde(default)]
    tls: bool,
    timeout: Option<Spanned<ConfigDuration>>,
    l1_ttl: Option<Spanned<ConfigDuration>>,
    touch_interval: Option<Spanned<ConfigDuration>>,
    key_prefix: Option<String>,
}

/// Which Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server: `redis://host:port/db` (`rediss://` for TLS).
    Single(String),
    /// The master a set of Sentinels names (followed through failovers).
    Sentinel {
        /// Sentinel addresses (`redis://host:26379`).
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
    },
    /// A Redis Cluster, by any of its nodes.
    Cluster(Vec<String>),
}

/// The shared session store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Which Redis.
    pub topology: RedisTopology,
    /// ACL user.
    pub username: Option<String>,
    /// ACL password (from a file or the environment).
    pub password: Option<Secret>,
    /// CA certificates (PEM) for `rediss://` servers signed by a private CA.
    pub ca_pem: Option<Vec<u8>>,
    /// TLS to the master Sentinel names.
    pub tls: bool,
    /// Longest any Redis call may take before it counts as unavailable.
    pub timeout: Duration,
    /// How long a node keeps a session it read (0 = no L1: every request reads Redis).
    pub l1_ttl: Duration,
    /// Least time between two writes of one session's last use.
    pub touch_interval: Duration,
    /// Prefix of every key (several gateways may share one Redis).
    pub key_prefix: String,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
const DEFAULT_L1_TTL: Duration = Duration::from_secs(5);
const DEFAULT_TOUCH_INTERVAL: Duration = Duration::from_secs(5);
/// A touch interval past the expiry grace could let Redis drop a session still in use.
const MAX_TOUCH_INTERVAL: Duration = Duration::from_secs(30);

pub(super) fn compile_redis(
    src: &SourceFile<'_>,
    base: &Path,
    file: &Spanned<FileRedis>,
    problems: &mut Vec<Problem>,
) -> Option<RedisSettings> {
    let span = Some(file.span());
    let file = file.get_ref();
    let before = problems.len();
    let topology = match (&file.url, &file.sentinels, &file.cluster) {
        (Some(url), None, None) => {
            check_url(src, url.get_ref(), url.span(), problems);
            RedisTopology::Single(url.get_ref().clone())
        }
        (None, Some(sentinels), None) => {
            if sentinels.get_ref().is_empty() {
                problems
                    .push(src.error(Some(sentinels.span()), "sessions.redis.sentinels is empty"));
            }
            for s in sentinels.get_ref() {
                check_url(src, s, sentinels.span(), problems);
            }
            let Some(master) = &file.master else {
                problems.push(src.error(
                    Some(sentinels.span()),
                    "sessions.redis.sentinels needs `master`: the name the Sentinels monitor",
                ));
                return None;
            };
            RedisTopology::Sentinel {
                sentinels: sentinels.get_ref().clone(),
                master: master.get_ref().clone(),
            }
        }
        (None, None, Some(nodes)) => {
            if nodes.get_ref().is_empty() {
                problems.push(src.error(Some(nodes.span()), "sessions.redis.cluster is empty"));
            }
            for n in nodes.get_ref() {
                check_url(src, n, nodes.span(), problems);
            }
            RedisTopology::Cluster(nodes.get_ref().clone())
        }
        _ => {
            problems.push(src.error(
                span,
                "[sessions.redis] needs exactly one of `url` (one server), `sentinels` + `master` (Sentinel) or `cluster` (Redis Cluster)",
            ));
            return None;
        }
    };
    if file.master.is_some() && !matches!(topology, RedisTopology::Sentinel { .. }) {
        problems.push(src.error(
            span.clone(),
            "sessions.redis.master is only for `sentinels`",
        ));
    }
    let password = super::files::secret_from_file_or_env(
        src,
        base,
        (file.password_file.as_ref(), file.password_env.as_ref()),
        (
            "sessions.redis.password_file",
            "sessions.redis.password_env",
        ),
        problems,
    )
    .unwrap_or(None);
    if let (Some(f), RedisTopology::Cluster(_)) = (&file.ca_file, &topology) {
        problems.push(src.error(
            Some(f.span()),
            "sessions.redis.ca_file is not supported with `cluster` (the cluster client trusts the system's CAs); use a CA the system trusts",
        ));
    }
    let ca_pem =
        file.ca_file
            .as_ref()
            .and_then(|f| match load_ca_file(&resolve(base, f.get_ref())) {
                Ok((pem, _)) => Some(pem),
                Err(e) => {
                    problems.push(src.error(Some(f.span()), e));
                    None
                }
            });
    let mut duration = |value: &Option<Spanned<ConfigDuration>>,
                        default: Duration,
                        range: (Duration, Duration),
                        what: &str| {
        match value {
            Some(v) if v.get_ref().0 < range.0 || v.get_ref().0 > range.1 => {
                problems.push(src.error(
                    Some(v.span()),
                    format!(
                        "sessions.redis.{what} must be between {:?} and {:?}",
                        range.0, range.1
                    ),
                ));
                default
            }
            Some(v) => v.get_ref().0,
            None => default,
        }
    };
    let timeout = duration(
        &file.timeout,
        DEFAULT_TIMEOUT,
        (Duration::from_millis(10), Duration::from_secs(10)),
        "timeout",
    );
    let l1_ttl = duration(
        &file.l1_ttl,
        DEFAULT_L1_TTL,
        (Duration::ZERO, Duration::from_secs(60)),
        "l1_ttl",
    );
    let touch_interval = duration(
        &file.touch_interval,
        DEFAULT_TOUCH_INTERVAL,
        (Duration::from_millis(100), MAX_TOUCH_INTERVAL),
        "touch_interval",
    );
    let key_prefix = file
        .key_prefix
        .clone()
        .unwrap_or_else(|| "portcullis".into());
    if key_prefix.is_empty() || key_prefix.contains(char::is_whitespace) {
        problems.push(src.error(
            span.clone(),
            "sessions.redis.key_prefix must be non-empty, without spaces",
        ));
    }
    (!problems.iter().skip(before).any(Problem::is_error)).then(|| RedisSettings {
        topology,
        username: file.username.clone(),
        password,
        ca_pem,
        tls: file.tls,
        timeout,
        l1_ttl,
        touch_interval,
        key_prefix,
    })
}

fn check_url(
    src: &SourceFile<'_>,
    url: &str,
    span: std::ops::Range<usize>,
    problems: &mut Vec<Problem>,
) {
    if url.contains('@') {
        problems.push(src.error(
            Some(span),
            "put the Redis user and password in sessions.redis.username and password_file (or password_env), not in the URL",
        ));
    } else if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url) {
        problems.push(src.error(Some(span), format!("`{url}` is not a Redis URL: {e}")));
    }
}
