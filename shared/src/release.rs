//! Configuration releases: the exact S3 versions a wiki task boots.
//!
//! config-redeploy validates a service's configuration objects and records the result as a
//! [`Release`], every key under the prefix with its S3 version id, in the pointer object
//! `<prefix>.wikiops/release.json` ([`Pointer`]), before it starts the deployment that rolls it
//! out. wiki-boot reads the pointer and downloads exactly those versions, so an upload that was
//! refused, or not yet validated, reaches no task however the task starts. A rollback points
//! back to the previous release: no object is copied. All pure (the types and the key layout).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The folder under a configuration prefix that holds config-redeploy's records.
pub const RESERVED_PREFIX: &str = ".wikiops/";

/// The key of the release pointer for the configuration under `prefix` (`""` or `"<p>/"`).
pub fn pointer_key(prefix: &str) -> String {
    format!("{prefix}{RESERVED_PREFIX}release.json")
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

#[cfg(test)]
mod tests {
    use super::*;

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
