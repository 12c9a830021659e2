//! The deployment ledger: which release a deployment started by this function rolled out,
//! and the last good release before it (where its rollback goes).
//!
//! One small JSON object per deployment, in the config bucket, in the reserved folder
//! `.wikiops/` under the service's configuration prefix (the wiki's boot program never copies
//! it, events for it are ignored, and the function's IAM policy on `<prefix>*` covers it):
//! `<prefix>.wikiops/deployments/<cluster>/<service>/<deployment-id>.json`. A failed
//! deployment without a ledger was not started by this function and is left to ECS.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
pub use shared::config_rules::is_reserved;
pub use shared::release::RESERVED_PREFIX;
use shared::release::Release;

use crate::settings::Target;

/// The ledger key of a deployment of `target`, whose configuration lives under `prefix`.
pub fn key(prefix: &str, target: &Target, deployment_id: &str) -> String {
    format!(
        "{prefix}{RESERVED_PREFIX}deployments/{}/{}/{deployment_id}.json",
        target.cluster, target.service
    )
}

/// Why a deployment was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A configuration change.
    Config,
    /// An automatic rollback (never rolled back itself).
    Rollback,
}

/// One object state a deployment changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rolled {
    pub key: String,
    /// The version rolled out; `None` when the change removed the object.
    pub version_id: Option<String>,
}

/// What a deployment started by this function carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub kind: Kind,
    pub cluster: String,
    pub service: String,
    pub deployment_id: String,
    pub started_at: DateTime<Utc>,
    /// What differs from the release the tasks booted before.
    pub changes: Vec<Rolled>,
    /// The release it rolls out (written as the current release before it started).
    pub release: Release,
    /// The last good release when it started: where its rollback goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Release>,
    /// For a rollback: the failed deployment it undid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    /// For a failed deployment that was rolled back: the rollback deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_and_round_trip() {
        let t = Target {
            cluster: "wiki".into(),
            service: "web".into(),
        };
        assert_eq!(
            key("", &t, "ecs-svc/123"),
            ".wikiops/deployments/wiki/web/ecs-svc/123.json"
        );
        assert_eq!(
            key("config/", &t, "ecs-svc/123"),
            "config/.wikiops/deployments/wiki/web/ecs-svc/123.json"
        );
        assert!(is_reserved(&key("config/", &t, "x")));
        assert!(is_reserved(".wikiops/x"));
        assert!(!is_reserved("config/wikiops/x"));
        assert!(!is_reserved("config/x.wikiops/y"));
        let l = Ledger {
            kind: Kind::Config,
            cluster: "wiki".into(),
            service: "web".into(),
            deployment_id: "ecs-svc/123".into(),
            started_at: DateTime::from_timestamp(1, 0).unwrap(),
            changes: vec![Rolled {
                key: "LocalSettings.php".into(),
                version_id: Some("v2".into()),
            }],
            release: Release {
                created_at: DateTime::from_timestamp(1, 0).unwrap(),
                objects: [("LocalSettings.php".to_string(), "v2".to_string())].into(),
            },
            previous: None,
            rollback_of: None,
            rolled_back_by: None,
        };
        let text = serde_json::to_string(&l).unwrap();
        assert!(!text.contains("rollback_of"), "{text}");
        assert_eq!(serde_json::from_str::<Ledger>(&text).unwrap(), l);
    }
}
