//! The adapter's read side: what S3 holds (ECS is read through `shared::ecs`).

use aws_sdk_s3::Client;
use serde::de::DeserializeOwned;
use shared::Error;
use shared::config_rules as validate;
use shared::release::{self, Bundled, Current};

use crate::ledger::{self, Ledger};
use crate::plan::ObjectInfo;
use crate::settings::Target;

/// A ledger; `None` when absent or unreadable (someone edited it: no rollback for that deployment).
async fn record<T: DeserializeOwned>(
    s3: &Client,
    bucket: &str,
    key: &str,
) -> Result<Option<T>, Error> {
    let out = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
        Err(e) => return Err(Error::aws("S3", "GetObject", e)),
    };
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| Error::Unreachable(format!("S3 GetObject {key}: {e}")))?
        .into_bytes();
    match serde_json::from_slice(&body) {
        Ok(l) => Ok(Some(l)),
        Err(e) => {
            tracing::warn!(key, error = %e, "unreadable record ignored");
            Ok(None)
        }
    }
}

/// The ledger of a deployment, `None` when this function did not start it.
pub async fn ledger(
    s3: &Client,
    bucket: &str,
    home: &str,
    target: &Target,
    deployment_id: &str,
) -> Result<Option<Ledger>, Error> {
    record(s3, bucket, &ledger::key(home, target, deployment_id)).await
}

/// The current release of the configuration under `home`: the pointer, the last version of a
/// deleted one, or none yet. An unreadable pointer is an error (`shared::release::read_pointer`).
pub async fn pointer(s3: &Client, bucket: &str, home: &str) -> Result<Current, Error> {
    release::read_pointer(s3, bucket, home).await
}

/// What the running image bundles, as wiki-boot published it; `None` before a task did.
pub async fn bundled(s3: &Client, bucket: &str, home: &str) -> Result<Option<Bundled>, Error> {
    record(s3, bucket, &release::image_key(home)).await
}

/// Every object under `prefixes` that `keep` accepts, at its current version, with the whole
/// content of that version for `.php` files of at most `max` bytes (PHP must parse them).
pub async fn objects(
    s3: &Client,
    bucket: &str,
    prefixes: &[&str],
    max: u64,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<ObjectInfo>, Error> {
    let mut keys: Vec<String> = Vec::new();
    for prefix in prefixes {
        let mut pages = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(*prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::aws("S3", "ListObjectsV2", e))?;
            for key in page.contents().iter().filter_map(|o| o.key()) {
                // Nested prefixes list a key twice.
                if keep(key) && !keys.iter().any(|k| k == key) {
                    keys.push(key.to_string());
                }
            }
        }
    }
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        // The version, size and content checked below are one version's.
        let head = match s3.head_object().bucket(bucket).key(&key).send().await {
            Ok(h) => h,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => continue,
            Err(e) => return Err(Error::aws("S3", "HeadObject", e)),
        };
        let version_id = head.version_id().unwrap_or("null").to_string();
        let size = head.content_length().unwrap_or(0).max(0) as u64;
        let body = if validate::is_php(&key) && size > 0 && size <= max {
            Some(body(s3, bucket, &key, &version_id).await?)
        } else {
            None
        };
        out.push(ObjectInfo {
            key,
            version_id,
            size,
            body,
        });
    }
    Ok(out)
}

/// The content of one version of an object.
async fn body(s3: &Client, bucket: &str, key: &str, version_id: &str) -> Result<Vec<u8>, Error> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .version_id(version_id)
        .send()
        .await
        .map_err(|e| Error::aws("S3", "GetObject", e))?;
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| Error::Unreachable(format!("S3 GetObject {key}: {e}")))?
        .into_bytes();
    Ok(bytes.to_vec())
}
