//! Logging: text or JSON lines on stderr, filtered by `--log-filter` / `RUST_LOG`.
use crate::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub fn init(config: &Config) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(&config.log_filter).map_err(|e| format!("--log-filter: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| e.to_string())
}
