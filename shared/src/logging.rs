//! Tracing that follows Lambda's `LoggingConfig`.
//!
//! `AWS_LAMBDA_LOG_FORMAT=JSON` gives one JSON object per line (CloudWatch Logs Insights
//! parses it); anything else gives plain text. The level comes from `AWS_LAMBDA_LOG_LEVEL`
//! (`FATAL` counts as `ERROR`), then `RUST_LOG` directives (`info,aws_smithy_runtime=debug`),
//! then `info`.

use std::str::FromStr;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let filter = filter(
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_target(false)
        .with_ansi(false);
    let _ = if json {
        builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .without_time()
            .finish()
            .with(filter)
            .try_init()
    } else {
        builder.without_time().finish().with(filter).try_init()
    };
}

/// The filter for Lambda's log level and `RUST_LOG`; unusable values fall through.
pub fn filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> Targets {
    let level = lambda_level.and_then(|l| match l.trim() {
        l if l.eq_ignore_ascii_case("fatal") => Some(LevelFilter::ERROR),
        l => LevelFilter::from_str(l).ok(),
    });
    match level {
        Some(level) => Targets::new().with_default(level),
        None => rust_log
            .and_then(|d| Targets::from_str(d).ok())
            .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn lambda_level_wins_and_fatal_means_error() {
        let f = filter(Some("DEBUG"), Some("trace"));
        assert!(f.would_enable("x", &Level::DEBUG) && !f.would_enable("x", &Level::TRACE));
        let f = filter(Some("FATAL"), None);
        assert!(f.would_enable("x", &Level::ERROR) && !f.would_enable("x", &Level::WARN));
    }

    #[test]
    fn rust_log_directives_apply_per_target() {
        let f = filter(None, Some("warn,aws_smithy_runtime=debug"));
        assert!(f.would_enable("aws_smithy_runtime::client", &Level::DEBUG));
        assert!(!f.would_enable("efs_backup", &Level::INFO));
    }

    #[test]
    fn unusable_values_fall_back_to_info() {
        for f in [
            filter(Some("loud"), None),
            filter(None, Some("=(")),
            filter(None, None),
        ] {
            assert!(f.would_enable("x", &Level::INFO) && !f.would_enable("x", &Level::DEBUG));
        }
    }
}
