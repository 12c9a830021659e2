//! Configuration releases: the exact S3 versions a wiki task boots.
//!
//! config-redeploy validates a service's configuration objects and records the result as a
//! [`Release`], every key under the prefix with its S3 version id, in the pointer object
//! `<prefix>.wikiops/release.json` ([`Pointer`]), before it starts the deployment that rolls it
//! out. wiki-boot reads the pointer and downloads exactly those versions, so an upload that was
//! refused, or not yet validated, reaches no task however the task starts. A rollback points
//! back to the previous release: no object is copied.
//!
//! The pointer can be deleted from outside (`aws s3 sync --delete` from a folder without
//! `.wikiops/`; the template's bucket policy refuses it, a bucket without that policy does not):
//! [`read_pointer`] then reads its last version from the key's history ([`Current::Deleted`]),
//! so a deleted pointer never reads as "no release yet", which only a key that never held a
//! version means. [`last_version`] is the pure rule; [`read_pointer`] the one S3 adapter
//! config-redeploy and wiki-boot share. The rest is pure (the types and the key layout).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The folder under a configuration prefix that holds config-redeploy's records.
pub const RESERVED_PREFIX: &str = ".wikiops/";

/// The key of the release pointer for the configuration under `prefix` (`""` or `"<p>/"`).
pub fn pointer_key(prefix: &str) -> String {
    format!("{prefix}{RESERVED_PREFIX}release.json")
}

/// The key where wiki-boot publishes what the running image bundles ([`Bundled`]).
pub fn image_key(prefix: &str) -> String {
    format!("{prefix}{RESERVED_PREFIX}image.json")
}

/// What the wiki image bundles, published by wiki-boot's schema step at every task start: the
/// extensions and skins a configuration may `wfLoadExtension`/`wfLoadSkin`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundled {
    pub extensions: std::collections::BTreeSet<String>,
    pub skins: std::collections::BTreeSet<String>,
}

/// A validated set of configuration objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// When config-redeploy made it (before the deployment that rolls it out started).
    pub created_at: DateTime<Utc>,
    /// Every configuration object: key → S3 version id (`null` in an unversioned bucket).
    pub objects: BTreeMap<String, String>,
}

/// The current release of a configuration prefix, and what config-redeploy needs to move it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// What every task boots.
    pub release: Release,
    /// The last release known good when this one was made: where a rollback goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Release>,
    /// Object states a rollback withdrew (key → version id, `null` for a deletion): while a
    /// key's latest state is still withdrawn, no new release is made.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub withdrawn: BTreeMap<String, Option<String>>,
    /// Set when a rollback wrote this pointer: the failed deployment it undid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
}

/// What the pointer key of a configuration prefix holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// The pointer: what tasks boot.
    Released(Pointer),
    /// The pointer was deleted, and `version_id` is its last version: that release is still what
    /// tasks boot, and config-redeploy must release again (writing the pointer) before anything
    /// counts as deployed. Never "no release yet".
    Deleted {
        version_id: String,
        pointer: Pointer,
    },
    /// The key never held a version: no release yet (a fresh stack).
    Unreleased,
}

impl Current {
    /// The pointer in force, current or last version of a deleted one.
    pub fn pointer(&self) -> Option<&Pointer> {
        match self {
            Current::Released(p) | Current::Deleted { pointer: p, .. } => Some(p),
            Current::Unreleased => None,
        }
    }

    /// The pointer in force, owned.
    pub fn into_pointer(self) -> Option<Pointer> {
        match self {
            Current::Released(p) | Current::Deleted { pointer: p, .. } => Some(p),
            Current::Unreleased => None,
        }
    }

    /// The pointer only while the key holds it.
    pub fn released(&self) -> Option<&Pointer> {
        match self {
            Current::Released(p) => Some(p),
            _ => None,
        }
    }
}

/// One entry of the pointer key's history (`ListObjectVersions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub version_id: String,
    pub delete_marker: bool,
    pub last_modified: Option<DateTime<Utc>>,
}

/// The history of an absent pointer, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// Never written: no release yet.
    Never,
    /// Deleted; the newest version that is not a delete marker.
    Last(String),
    /// Only delete markers are left (its versions expired or were deleted one by one).
    OnlyDeleteMarkers,
}

/// Judges an absent pointer's history: its newest real version, if any.
pub fn last_version(history: &[Version]) -> History {
    if history.is_empty() {
        return History::Never;
    }
    // S3 lists a key's versions newest first; the time decides when it is there.
    let mut real: Vec<(usize, &Version)> = history
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.delete_marker)
        .collect();
    real.sort_by(|(i, a), (j, b)| b.last_modified.cmp(&a.last_modified).then(i.cmp(j)));
    match real.first() {
        Some((_, v)) => History::Last(v.version_id.clone()),
        None => History::OnlyDeleteMarkers,
    }
}

fn unreadable(bucket: &str, key: &str, why: impl std::fmt::Display) -> Error {
    Error::Rejected(format!(
        "the release pointer s3://{bucket}/{key} is unreadable ({why}): restore its last good version (aws s3api list-object-versions --prefix {key}), or upload any configuration file so config-redeploy writes a new one"
    ))
}

async fn get_pointer(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<Option<Pointer>, Error> {
    let out = match s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version_id.map(str::to_string))
        .send()
        .await
    {
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
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| unreadable(bucket, key, e))
}

async fn history(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<Version>, Error> {
    let mut out = Vec::new();
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(key)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .map_err(|e| Error::aws("S3", "ListObjectVersions", e))?;
        let time = |t: Option<&aws_sdk_s3::primitives::DateTime>| {
            t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        };
        for v in page.versions().iter().filter(|v| v.key() == Some(key)) {
            out.push(Version {
                version_id: v.version_id().unwrap_or("null").to_string(),
                delete_marker: false,
                last_modified: time(v.last_modified()),
            });
        }
        for m in page
            .delete_markers()
            .iter()
            .filter(|m| m.key() == Some(key))
        {
            out.push(Version {
                version_id: m.version_id().unwrap_or("null").to_string(),
                delete_marker: true,
                last_modified: time(m.last_modified()),
            });
        }
        if page.is_truncated() != Some(true) || page.next_key_marker().is_none() {
            return Ok(out);
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
}

/// Reads the release pointer of the configuration under `prefix`: the pointer, the last
/// version of a deleted one, or "never released". An unreadable pointer is an error, never an
/// absence.
pub async fn read_pointer(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Current, Error> {
    let key = pointer_key(prefix);
    if let Some(p) = get_pointer(s3, bucket, &key, None).await? {
        return Ok(Current::Released(p));
    }
    match last_version(&history(s3, bucket, &key).await?) {
        History::Never => Ok(Current::Unreleased),
        History::Last(version_id) => {
            match get_pointer(s3, bucket, &key, Some(&version_id)).await? {
                Some(pointer) => Ok(Current::Deleted {
                    version_id,
                    pointer,
                }),
                None => Err(unreadable(
                    bucket,
                    &key,
                    format!("it was deleted and its last version {version_id} is gone"),
                )),
            }
        }
        History::OnlyDeleteMarkers => Err(unreadable(
            bucket,
            &key,
            "it was deleted and no earlier version is left",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, marker: bool, secs: i64) -> Version {
        Version {
            version_id: id.into(),
            delete_marker: marker,
            last_modified: DateTime::from_timestamp(secs, 0),
        }
    }

    #[test]
    fn a_deleted_pointer_is_never_a_first_release() {
        assert_eq!(last_version(&[]), History::Never);
        assert_eq!(
            last_version(&[v("dm", true, 30), v("p2", false, 20), v("p1", false, 10)]),
            History::Last("p2".into())
        );
        // Listed in any order, the newest real version wins.
        assert_eq!(
            last_version(&[v("p1", false, 10), v("dm", true, 30), v("p2", false, 20)]),
            History::Last("p2".into())
        );
        assert_eq!(
            last_version(&[v("dm2", true, 30), v("dm1", true, 20)]),
            History::OnlyDeleteMarkers
        );
    }

    #[test]
    fn layout_and_round_trip() {
        assert_eq!(pointer_key(""), ".wikiops/release.json");
        assert_eq!(pointer_key("config/"), "config/.wikiops/release.json");
        let p = Pointer {
            release: Release {
                created_at: DateTime::from_timestamp(1, 0).unwrap_or_default(),
                objects: [("config/LocalSettings.php".to_string(), "v1".to_string())].into(),
            },
            previous: None,
            withdrawn: BTreeMap::new(),
            rollback_of: None,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(
            !text.contains("withdrawn") && !text.contains("previous"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Pointer>(&text).unwrap(), p);
    }
}
