//! Tracing that follows Lambda's `LoggingConfig`.
//!
//! `AWS_LAMBDA_LOG_FORMAT=JSON` gives one JSON object per line (CloudWatch Logs Insights
//! parses it); anything else gives plain text. The level comes from `AWS_LAMBDA_LOG_LEVEL`,
//! then `RUST_LOG`, then `info`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let filter = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .and_then(|l| EnvFilter::try_new(l.to_ascii_lowercase()).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false);
    let _ = if json {
        builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .without_time()
            .try_init()
    } else {
        builder.without_time().try_init()
    };
}
