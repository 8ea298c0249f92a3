//! Logging set-up, and [`Escaped`] for strings a peer controls.

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

/// Displays a string a peer controls (a user name, an EHLO argument) with its control
/// characters escaped (`\n`, `\u{1b}`), so that it can never forge a log line or send terminal
/// escapes; the JSON format escapes them anyway.
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            if c.is_control() {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            Escaped("a@x\nINFO forged\u{1b}[31m\0").to_string(),
            "a@x\\nINFO forged\\u{1b}[31m\\u{0}"
        );
        assert_eq!(Escaped("élan@x.org").to_string(), "élan@x.org");
    }
}
