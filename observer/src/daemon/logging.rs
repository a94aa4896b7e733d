//! Logging of `brokerscope run`: `tracing` to stderr, human lines or JSON lines.
//!
//! The level is a tracing `EnvFilter` string: a level (`info`) or directives
//! (`info,observer::capture=debug`). Logs go to stderr so stdout stays free for `--print-config`.
use tracing_subscriber::EnvFilter;

use super::config::{ConfigError, LogFormat};

/// Parses a level or filter string; the error is the parser's explanation.
pub(crate) fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    if filter.trim().is_empty() {
        return Err("the filter is empty".to_string());
    }
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| e.to_string())
}

/// Installs the global subscriber: stderr, `format`, filtered by `filter`.
///
/// An invalid filter is a [`ConfigError::LogFilter`]. Calling it again once a global subscriber
/// is installed (by an earlier call or by anyone else) is not an error: the first one stays.
pub fn init(format: LogFormat, filter: &str) -> Result<(), ConfigError> {
    let env_filter = parse_filter(filter).map_err(|message| ConfigError::LogFilter {
        filter: filter.to_string(),
        message,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(env_filter);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    if let Err(e) = result {
        // Already installed: keep it (tests and embedders may set their own).
        tracing::debug!("logging already initialised, keeping the existing subscriber: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_parse() {
        for ok in [
            "info",
            "debug",
            "warn,observer::capture=trace",
            "observer=debug",
            "TRACE",
        ] {
            assert!(parse_filter(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn invalid_filter_is_a_clear_error() {
        for bad in ["", "observer=loud", "info,[{"] {
            let err = init(LogFormat::Human, bad).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, ConfigError::LogFilter { .. }), "{bad}: {msg}");
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("--log-level"), "{msg}");
        }
    }

    #[test]
    fn second_init_is_not_an_error() {
        init(LogFormat::Json, "warn").unwrap();
        init(LogFormat::Human, "info").unwrap();
        tracing::warn!("logging test line");
    }
}
