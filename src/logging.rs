//! Diagnostics and access logs through `tracing`, in text or JSON. Pingora's own `log` records
//! are bridged into the same subscriber, so one stream carries everything.

use crate::config::LogFormat;
use thiserror::Error;
use tracing_subscriber::EnvFilter;

/// Why logging could not start.
#[derive(Debug, Error)]
pub enum LoggingError {
    /// The configured filter does not parse.
    #[error("invalid log filter `{0}`")]
    BadFilter(String),
    /// Another subscriber was installed first.
    #[error("logging already initialised: {0}")]
    AlreadySet(String),
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(format: LogFormat, level: &str) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => {
            EnvFilter::try_new(&env).map_err(|_| LoggingError::BadFilter(env))?
        }
        _ => EnvFilter::try_new(level).map_err(|_| LoggingError::BadFilter(level.to_string()))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` also installs the `log` → `tracing` bridge for Pingora's records.
    let result = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| LoggingError::AlreadySet(e.to_string()))
}
