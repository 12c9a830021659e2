//! The adapter's read side: what S3 holds (ECS is read through `shared::ecs`).

use std::collections::HashMap;

use aws_sdk_s3::Client;
use shared::Error;

use crate::ledger::{self, Ledger, META_ROLLBACK_FOR, META_ROLLBACK_OF};
use crate::plan::{Head, ObjectInfo};
use crate::rollback::{KeyState, VersionEntry};
use crate::settings::Target;
use crate::validate::{self, HEADER_BYTES};

/// The ledger of a deployment, `None` when this function did not start it.
pub async fn ledger(
    s3: &Client,
    bucket: &str,
    home: &str,
    target: &Target,
    deployment_id: &str,
) -> Result<Option<Ledger>, Error> {
    let key = ledger::key(home, target, deployment_id);
    let out = match s3.get_object().bucket(bucket).key(&key).send().await {
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
            // Someone edited the ledger: treat the deployment as not ours.
            tracing::warn!(key, error = %e, "unreadable ledger ignored");
            Ok(None)
        }
    }
}

/// Every object under `prefixes` that `keep` accepts (size, ETag), with the first bytes of
/// `.php` files.
pub async fn objects(
    s3: &Client,
    bucket: &str,
    prefixes: &[&str],
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<ObjectInfo>, Error> {
    let mut out = Vec::new();
    for prefix in prefixes {
        let mut pages = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(*prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::aws("S3", "ListObjectsV2", e))?;
            for o in page.contents() {
                let Some(key) = o.key().filter(|k| keep(k)) else {
                    continue;
                };
                if out.iter().any(|x: &ObjectInfo| x.key == key) {
                    continue; // nested prefixes list a key twice
                }
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    header: None,
                });
            }
        }
    }
    for o in out
        .iter_mut()
        .filter(|o| validate::is_php(&o.key) && o.size > 0)
    {
        o.header = header(s3, bucket, &o.key).await?;
    }
    Ok(out)
}

/// The first [`HEADER_BYTES`] of an object; `None` if it vanished meanwhile.
async fn header(s3: &Client, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
    let out = match s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes=0-{}", HEADER_BYTES - 1))
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
        Err(e) => return Err(Error::aws("S3", "GetObject", e)),
    };
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| Error::Unreachable(format!("S3 GetObject {key}: {e}")))?
        .into_bytes();
    Ok(Some(
        bytes.iter().take(HEADER_BYTES as usize).copied().collect(),
    ))
}

/// The current version of an object and its metadata; `None` when it is deleted.
pub async fn head(s3: &Client, bucket: &str, key: &str) -> Result<Option<HeadOut>, Error> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(Some(HeadOut {
            version_id: out.version_id().unwrap_or("null").to_string(),
            content_type: out.content_type().map(str::to_string),
            metadata: out.metadata().cloned().unwrap_or_default(),
        })),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
        Err(e) => Err(Error::aws("S3", "HeadObject", e)),
    }
}

/// What [`head`] reads.
#[derive(Debug, Clone)]
pub struct HeadOut {
    pub version_id: String,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
}

impl HeadOut {
    /// The planner's view.
    pub fn to_head(&self) -> Head {
        Head {
            version_id: self.version_id.clone(),
            rollback_of: self.metadata.get(META_ROLLBACK_OF).cloned(),
        }
    }
}

/// A version's content type and metadata (the source of a restore).
pub async fn head_version(
    s3: &Client,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> Result<HeadOut, Error> {
    let out = s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .version_id(version_id)
        .send()
        .await
        .map_err(|e| Error::aws("S3", "HeadObject", e))?;
    Ok(HeadOut {
        version_id: version_id.to_string(),
        content_type: out.content_type().map(str::to_string),
        metadata: out.metadata().cloned().unwrap_or_default(),
    })
}

/// The version history of exactly `key`, newest first, read until the first version older
/// than the current one is known; and the current version's rollback metadata.
pub async fn key_state(s3: &Client, bucket: &str, key: &str) -> Result<KeyState, Error> {
    let mut entries: Vec<(VersionEntry, bool, Option<aws_sdk_s3::primitives::DateTime>)> =
        Vec::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(key)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .map_err(|e| Error::aws("S3", "ListObjectVersions", e))?;
        for v in page.versions().iter().filter(|v| v.key() == Some(key)) {
            entries.push((
                VersionEntry {
                    version_id: v.version_id().unwrap_or("null").to_string(),
                    delete_marker: false,
                },
                v.is_latest().unwrap_or(false),
                v.last_modified().cloned(),
            ));
        }
        for m in page
            .delete_markers()
            .iter()
            .filter(|m| m.key() == Some(key))
        {
            entries.push((
                VersionEntry {
                    version_id: m.version_id().unwrap_or("null").to_string(),
                    delete_marker: true,
                },
                m.is_latest().unwrap_or(false),
                m.last_modified().cloned(),
            ));
        }
        let enough = entries.iter().skip(1).any(|(e, _, _)| !e.delete_marker);
        // Keys sort after `key` once the listing moves past it.
        let past = page.versions().iter().any(|v| v.key() != Some(key))
            || page.delete_markers().iter().any(|m| m.key() != Some(key));
        if enough || past || page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
    // The SDK splits versions and delete markers: merge them back, latest first, newest first.
    entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.2.cmp(&a.2)));
    let history: Vec<VersionEntry> = entries.into_iter().map(|(e, _, _)| e).collect();
    let current_rollback_for = match history.first() {
        Some(v) if !v.delete_marker => head(s3, bucket, key)
            .await?
            .and_then(|h| h.metadata.get(META_ROLLBACK_FOR).cloned()),
        _ => None,
    };
    Ok(KeyState {
        history,
        current_rollback_for,
    })
}
