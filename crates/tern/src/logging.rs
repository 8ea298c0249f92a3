use crate::config::{LogFormat, LogSection};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Logs to stderr, as text or one JSON object per line. RUST_LOG overrides the configured level.
pub fn init(log: &LogSection) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
