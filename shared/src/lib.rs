//! What the wikiops functions share.
//!
//! - [`config_rules`]: what a configuration object must look like before a task reads it;
//! - [`aws`]: the one `SdkConfig` per process, and clients that honour emulator settings;
//! - [`logging`]: tracing that follows Lambda's `LoggingConfig` (JSON or text);
//! - [`settings`]: typed settings read from the environment, with errors that name the variable;
//! - [`error`]: the error type every handler returns, mapped to a stable Lambda `errorType`;
//! - [`lease`]: one holder at a time, by S3 conditional writes (config-redeploy, efs-backup);
//! - [`ecs`]: the "redeploy an ECS service" operation, deduplicated against running deployments;
//! - [`metrics`]: CloudWatch Embedded Metric Format, flushed once per invocation;
//! - `php` (feature `php`): whether PHP can parse a configuration file (config-redeploy, wiki-boot);
//! - [`release`]: configuration releases, the exact S3 versions a wiki task boots;
//! - [`runtime`]: the Lambda loop that ties the above together;
//! - [`sql`]: SQL string literals and identifiers, right under any `sql_mode`;
//! - [`tls`]: the roots the SDK trusts (Amazon Trust Services, plus `AWS_CA_BUNDLE`).

pub mod aws;
pub mod config_rules;
pub mod ecs;
pub mod error;
pub mod lease;
pub mod logging;
pub mod metrics;
#[cfg(feature = "php")]
pub mod php;
pub mod release;
pub mod runtime;
pub mod settings;
pub mod sql;
pub mod tls;

pub use error::Error;
pub use settings::{Env, SettingsError};
