//! Diagnostics and access logs through `tracing`, in text or JSON, plus the hash-chained audit
//! file when `[audit]` names one. Pingora's own `log` records are bridged into the same
//! subscriber, so one stream carries everything.

use crate::audit::chain::ChainError;
use crate::audit::sink::AuditFileLayer;
use crate::audit::syslog::SyslogLayer;
use crate::config::audit::SyslogSettings;
use crate::config::{AuditSettings, LogFormat};
use thiserror::Error;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Why logging could not start.
#[derive(Debug, Error)]
pub enum LoggingError {
    /// The configured filter does not parse.
    #[error("invalid log filter `{0}`")]
    BadFilter(String),
    /// Another subscriber was installed first.
    #[error("logging already initialised: {0}")]
    AlreadySet(String),
    /// The audit file cannot be opened.
    #[error(transparent)]
    Audit(#[from] ChainError),
    /// The audit syslog sink cannot start.
    #[error(transparent)]
    Syslog(#[from] crate::audit::syslog::SyslogError),
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level of the log; the
/// audit file always receives every `audit` record, whatever the log filter says.
pub fn init(
    format: LogFormat,
    level: &str,
    audit: Option<&AuditSettings>,
    syslog: Option<&SyslogSettings>,
) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => {
            EnvFilter::try_new(&env).map_err(|_| LoggingError::BadFilter(env))?
        }
        _ => EnvFilter::try_new(level).map_err(|_| LoggingError::BadFilter(level.to_string()))?,
    };
    let log = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let audit_file = audit
        .map(|a| AuditFileLayer::start(&a.file, a.max_size, a.keep))
        .transpose()?
        .map(|layer| layer.with_filter(Targets::new().with_target("audit", Level::INFO)));
    let audit_syslog = syslog
        .map(SyslogLayer::start)
        .transpose()?
        .map(|layer| layer.with_filter(Targets::new().with_target("audit", Level::INFO)));
    // `try_init` also installs the `log` → `tracing` bridge for Pingora's records.
    tracing_subscriber::registry()
        .with(log)
        .with(audit_file)
        .with(audit_syslog)
        .try_init()
        .map_err(|e| LoggingError::AlreadySet(e.to_string()))
}
