//! The one `SdkConfig` per process and the clients built from it.
//!
//! `aws-config` honours `AWS_ENDPOINT_URL` and the per-service variants
//! (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_ECS`, …), so the same binary talks to AWS
//! or to a local emulator. S3 emulators also need path-style addressing:
//! `S3_FORCE_PATH_STYLE=true`.

use aws_config::{BehaviorVersion, SdkConfig};

use crate::settings::{Env, SettingsError};

/// Loads the SDK configuration from the environment (region, credentials, endpoints, retries),
/// with the HTTPS client of [`crate::tls`] (Amazon Trust Services roots plus `AWS_CA_BUNDLE`).
///
/// Call once per process, in `main`, and build every client from the result.
pub async fn sdk_config(env: &Env) -> Result<SdkConfig, SettingsError> {
    let http = crate::tls::https_client(env)?;
    Ok(aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await)
}

/// An S3 client, path-style when `S3_FORCE_PATH_STYLE` is true.
pub fn s3_client(config: &SdkConfig, env: &Env) -> Result<aws_sdk_s3::Client, SettingsError> {
    let path_style = env.flag("S3_FORCE_PATH_STYLE", false)?;
    let conf = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(path_style)
        .build();
    Ok(aws_sdk_s3::Client::from_conf(conf))
}

/// Converts an SDK timestamp to chrono's UTC time.
pub fn to_utc(t: &aws_smithy_types::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// Converts chrono's UTC time to an SDK timestamp.
pub fn from_utc(t: chrono::DateTime<chrono::Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs_and_nanos(t.timestamp(), t.timestamp_subsec_nanos())
}
