//! CloudWatch Embedded Metric Format, through `metrics_cloudwatch_embedded`.
//!
//! Functions record with the `metrics` macros (`metrics::counter!("Redeployed").increment(1)`);
//! [`crate::runtime::run`] flushes one EMF document per invocation to stdout, tagged with
//! the request id.

use std::sync::OnceLock;

use metrics_cloudwatch_embedded::Collector;

/// The CloudWatch namespace every wikiops function publishes to.
pub const NAMESPACE: &str = "wikiops";

static COLLECTOR: OnceLock<&'static Collector> = OnceLock::new();

/// Installs the EMF recorder with the dimension `Function=<function>`. Idempotent.
pub fn init(function: &'static str) {
    if COLLECTOR.get().is_some() {
        return;
    }
    match metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(NAMESPACE)
        .with_dimension("Function", function)
        .init()
    {
        Ok(c) => {
            let _ = COLLECTOR.set(c);
        }
        Err(e) => tracing::warn!(error = %e, "metrics recorder not installed"),
    }
}

/// Writes the metrics recorded since the last flush as one EMF document on stdout.
pub fn flush(request_id: &str) {
    if let Some(c) = COLLECTOR.get() {
        let r = c
            .set_property("RequestId", request_id.to_string())
            .flush(std::io::stdout().lock());
        if let Err(e) = r {
            tracing::warn!(error = %e, "metrics flush failed");
        }
    }
}
