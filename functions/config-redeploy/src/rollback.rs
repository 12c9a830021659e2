//! The pure decision for a failed deployment: event + ledger + object histories → rollback plan.
//!
//! Only a `SERVICE_DEPLOYMENT_FAILED` of a routed service, for a deployment this function
//! started for a configuration change (it has a ledger of kind `config`), not yet rolled back,
//! is rolled back. For each object the deployment rolled out that is still current, the
//! version before it is restored (copied on top, or the object deleted again if it did not
//! exist); then the service is redeployed. A rollback is never rolled back, restorations are
//! never reverted, and a bad version that is no longer current is left alone, so each bad
//! version is rolled back at most once.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::event::{DEPLOYMENT_FAILED, DeploymentEvent};
use crate::ledger::{Kind, Ledger};
use crate::settings::Target;

/// One entry of an object's version history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    pub version_id: String,
    pub delete_marker: bool,
}

/// What the adapter observed about one object the failed deployment rolled out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyState {
    /// Versions and delete markers of exactly this key, newest first.
    pub history: Vec<VersionEntry>,
    /// Metadata `wikiops-rollback-for` of the current version, if any.
    pub current_rollback_for: Option<String>,
}

/// How an object is put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Copy this earlier version on top.
    Copy { version_id: String },
    /// The object did not exist before: delete it (a delete marker, itself reversible).
    Delete,
}

/// The decision for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum KeyPlan {
    /// The bad state is current: put the earlier one back.
    Restore {
        key: String,
        /// The bad version (`None`: the bad change was a deletion).
        bad_version: Option<String>,
        #[serde(flatten)]
        action: Action,
    },
    /// A previous run already restored it for this failed deployment.
    AlreadyRestored { key: String },
    /// The object changed since: someone fixed it, or it was rolled back already.
    Superseded { key: String },
    /// The object is itself a restoration: never reverted.
    Restoration { key: String },
    /// Nothing to restore from (unversioned bucket, no earlier version).
    Unrestorable { key: String, reason: String },
}

/// Whether the event asks for a rollback this function owns; the reason when it does not.
pub fn precheck(
    event: &DeploymentEvent,
    target: Option<&Target>,
    ledger: Option<&Ledger>,
) -> Result<(), String> {
    if event.event_name != DEPLOYMENT_FAILED {
        return Err(format!("{} needs no rollback", event.event_name));
    }
    if target.is_none() {
        return Err(format!("service {} is not routed", event.service));
    }
    let Some(ledger) = ledger else {
        return Err("deployment was not started by config-redeploy".into());
    };
    if ledger.kind == Kind::Rollback {
        return Err("the failed deployment is a rollback: a rollback is never rolled back".into());
    }
    if let Some(by) = &ledger.rolled_back_by {
        return Err(format!("already rolled back by deployment {by}"));
    }
    Ok(())
}

/// Decides, for each object the failed deployment rolled out, how to put it back.
pub fn plan_keys(
    failed_deployment: &str,
    ledger: &Ledger,
    states: &BTreeMap<String, KeyState>,
) -> Vec<KeyPlan> {
    ledger
        .changes
        .iter()
        .map(|c| {
            let key = c.key.clone();
            if c.restoration {
                return KeyPlan::Restoration { key };
            }
            let empty = KeyState::default();
            let st = states.get(&c.key).unwrap_or(&empty);
            let h = &st.history;
            let current = h.first();
            let restored_by_us = st.current_rollback_for.as_deref() == Some(failed_deployment);
            match &c.version_id {
                Some(bad) => {
                    let bad_is_current =
                        current.is_some_and(|v| !v.delete_marker && &v.version_id == bad);
                    if bad_is_current {
                        if bad == "null" {
                            return KeyPlan::Unrestorable {
                                key,
                                reason: "the bucket is not versioned".into(),
                            };
                        }
                        let action = match h.get(1) {
                            Some(prev) if !prev.delete_marker => Action::Copy {
                                version_id: prev.version_id.clone(),
                            },
                            _ => Action::Delete,
                        };
                        KeyPlan::Restore {
                            key,
                            bad_version: Some(bad.clone()),
                            action,
                        }
                    } else if restored_by_us
                        || (current.is_some_and(|v| v.delete_marker)
                            && h.get(1).is_some_and(|v| &v.version_id == bad))
                    {
                        KeyPlan::AlreadyRestored { key }
                    } else {
                        KeyPlan::Superseded { key }
                    }
                }
                None => {
                    if current.is_some_and(|v| v.delete_marker) {
                        match h.iter().skip(1).find(|v| !v.delete_marker) {
                            Some(prev) => KeyPlan::Restore {
                                key,
                                bad_version: None,
                                action: Action::Copy {
                                    version_id: prev.version_id.clone(),
                                },
                            },
                            None => KeyPlan::Unrestorable {
                                key,
                                reason: "no earlier version to restore".into(),
                            },
                        }
                    } else if current.is_none() {
                        KeyPlan::Unrestorable {
                            key,
                            reason: "no version history (deleted permanently or never versioned)"
                                .into(),
                        }
                    } else if restored_by_us {
                        KeyPlan::AlreadyRestored { key }
                    } else {
                        KeyPlan::Superseded { key }
                    }
                }
            }
        })
        .collect()
}

/// Whether the service must be redeployed after the restores.
///
/// After a restore, always. When a previous run restored everything but may have stopped
/// before redeploying: unless the PRIMARY deployment is already the rollback of this failure.
pub fn needs_redeploy(
    keys: &[KeyPlan],
    failed_deployment: &str,
    primary_ledger: Option<&Ledger>,
) -> bool {
    if keys.iter().any(|k| matches!(k, KeyPlan::Restore { .. })) {
        return true;
    }
    keys.iter()
        .any(|k| matches!(k, KeyPlan::AlreadyRestored { .. }))
        && !primary_ledger.is_some_and(|l| {
            l.kind == Kind::Rollback && l.rollback_of.as_deref() == Some(failed_deployment)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Rolled;
    use chrono::DateTime;
    use proptest::prelude::*;

    fn v(id: &str) -> VersionEntry {
        VersionEntry {
            version_id: id.into(),
            delete_marker: false,
        }
    }
    fn dm(id: &str) -> VersionEntry {
        VersionEntry {
            version_id: id.into(),
            delete_marker: true,
        }
    }
    fn rolled(key: &str, version: Option<&str>) -> Rolled {
        Rolled {
            key: key.into(),
            version_id: version.map(str::to_string),
            restoration: false,
        }
    }
    fn ledger(kind: Kind, changes: Vec<Rolled>) -> Ledger {
        Ledger {
            kind,
            cluster: "wiki".into(),
            service: "web".into(),
            deployment_id: "ecs-svc/2".into(),
            started_at: DateTime::from_timestamp(0, 0).unwrap(),
            changes,
            snapshot: BTreeMap::new(),
            rollback_of: None,
            rolled_back_by: None,
        }
    }
    fn event(name: &str) -> DeploymentEvent {
        DeploymentEvent {
            event_name: name.into(),
            cluster: Some("wiki".into()),
            service: "web".into(),
            deployment_id: "ecs-svc/2".into(),
            reason: None,
        }
    }
    fn states(entries: Vec<(&str, Vec<VersionEntry>, Option<&str>)>) -> BTreeMap<String, KeyState> {
        entries
            .into_iter()
            .map(|(k, history, rf)| {
                (
                    k.to_string(),
                    KeyState {
                        history,
                        current_rollback_for: rf.map(str::to_string),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn prechecks() {
        let t = Target {
            cluster: "wiki".into(),
            service: "web".into(),
        };
        let l = ledger(Kind::Config, vec![]);
        assert_eq!(
            precheck(&event(DEPLOYMENT_FAILED), Some(&t), Some(&l)),
            Ok(())
        );
        assert!(precheck(&event("SERVICE_DEPLOYMENT_COMPLETED"), Some(&t), Some(&l)).is_err());
        assert!(
            precheck(&event(DEPLOYMENT_FAILED), None, Some(&l))
                .unwrap_err()
                .contains("not routed")
        );
        assert!(
            precheck(&event(DEPLOYMENT_FAILED), Some(&t), None)
                .unwrap_err()
                .contains("not started")
        );
        let r = ledger(Kind::Rollback, vec![]);
        assert!(
            precheck(&event(DEPLOYMENT_FAILED), Some(&t), Some(&r))
                .unwrap_err()
                .contains("never rolled back")
        );
        let mut done = l.clone();
        done.rolled_back_by = Some("ecs-svc/3".into());
        assert!(
            precheck(&event(DEPLOYMENT_FAILED), Some(&t), Some(&done))
                .unwrap_err()
                .contains("ecs-svc/3")
        );
    }

    #[test]
    fn restores_the_version_before_the_bad_one() {
        let l = ledger(
            Kind::Config,
            vec![
                rolled("overwritten.php", Some("v2")),
                rolled("new.php", Some("n1")),
                rolled("deleted.php", None),
                rolled("recreated.php", Some("r2")),
            ],
        );
        let s = states(vec![
            ("overwritten.php", vec![v("v2"), v("v1"), v("v0")], None),
            ("new.php", vec![v("n1")], None),
            ("deleted.php", vec![dm("d3"), dm("d2"), v("d1")], None),
            ("recreated.php", vec![v("r2"), dm("m1"), v("r0")], None),
        ]);
        assert_eq!(
            plan_keys("ecs-svc/2", &l, &s),
            vec![
                KeyPlan::Restore {
                    key: "overwritten.php".into(),
                    bad_version: Some("v2".into()),
                    action: Action::Copy {
                        version_id: "v1".into()
                    }
                },
                KeyPlan::Restore {
                    key: "new.php".into(),
                    bad_version: Some("n1".into()),
                    action: Action::Delete
                },
                KeyPlan::Restore {
                    key: "deleted.php".into(),
                    bad_version: None,
                    action: Action::Copy {
                        version_id: "d1".into()
                    }
                },
                KeyPlan::Restore {
                    key: "recreated.php".into(),
                    bad_version: Some("r2".into()),
                    action: Action::Delete
                },
            ]
        );
    }

    #[test]
    fn leaves_changed_restored_and_restoration_objects_alone() {
        let mut restoration = rolled("restored.php", Some("x2"));
        restoration.restoration = true;
        let l = ledger(
            Kind::Config,
            vec![
                rolled("fixed.php", Some("v2")),
                rolled("ours.php", Some("o2")),
                rolled("deleted-again.php", Some("n1")),
                restoration,
                rolled("unversioned.php", Some("null")),
                rolled("lost.php", None),
                rolled("revived.php", None),
            ],
        );
        let s = states(vec![
            ("fixed.php", vec![v("v3"), v("v2"), v("v1")], None),
            (
                "ours.php",
                vec![v("o3"), v("o2"), v("o1")],
                Some("ecs-svc/2"),
            ),
            ("deleted-again.php", vec![dm("m"), v("n1")], None),
            ("restored.php", vec![v("x2"), v("x1")], None),
            ("unversioned.php", vec![v("null")], None),
            ("lost.php", vec![], None),
            ("revived.php", vec![v("r3"), dm("m"), v("r1")], None),
        ]);
        let plans = plan_keys("ecs-svc/2", &l, &s);
        assert_eq!(
            plans[0],
            KeyPlan::Superseded {
                key: "fixed.php".into()
            }
        );
        assert_eq!(
            plans[1],
            KeyPlan::AlreadyRestored {
                key: "ours.php".into()
            }
        );
        assert_eq!(
            plans[2],
            KeyPlan::AlreadyRestored {
                key: "deleted-again.php".into()
            }
        );
        assert_eq!(
            plans[3],
            KeyPlan::Restoration {
                key: "restored.php".into()
            }
        );
        assert!(matches!(plans[4], KeyPlan::Unrestorable { .. }));
        assert!(matches!(plans[5], KeyPlan::Unrestorable { .. }));
        assert_eq!(
            plans[6],
            KeyPlan::Superseded {
                key: "revived.php".into()
            }
        );
        // A marker of another failed deployment is not ours.
        let s = states(vec![(
            "fixed.php",
            vec![v("v3"), v("v2")],
            Some("ecs-svc/9"),
        )]);
        let l = ledger(Kind::Config, vec![rolled("fixed.php", Some("v2"))]);
        assert_eq!(
            plan_keys("ecs-svc/2", &l, &s)[0],
            KeyPlan::Superseded {
                key: "fixed.php".into()
            }
        );
    }

    #[test]
    fn redeploy_after_restores_once() {
        let restore = KeyPlan::Restore {
            key: "a".into(),
            bad_version: Some("v2".into()),
            action: Action::Delete,
        };
        let done = KeyPlan::AlreadyRestored { key: "a".into() };
        let gone = KeyPlan::Superseded { key: "a".into() };
        let mut rb = ledger(Kind::Rollback, vec![]);
        rb.rollback_of = Some("ecs-svc/2".into());
        assert!(needs_redeploy(
            std::slice::from_ref(&restore),
            "ecs-svc/2",
            Some(&rb)
        ));
        assert!(needs_redeploy(
            std::slice::from_ref(&done),
            "ecs-svc/2",
            None
        ));
        assert!(!needs_redeploy(
            std::slice::from_ref(&done),
            "ecs-svc/2",
            Some(&rb)
        ));
        assert!(!needs_redeploy(&[gone], "ecs-svc/2", None));
        assert!(!needs_redeploy(&[], "ecs-svc/2", None));
    }

    proptest! {
        /// A version is only ever restored over the bad version itself (or its delete marker),
        /// and the restored version is older than the bad one.
        #[test]
        fn restores_only_over_the_bad_state(
            history in proptest::collection::vec((0u8..6, any::<bool>()), 0..6),
            bad in proptest::option::of(0u8..6),
            ours in any::<bool>(),
        ) {
            let mut seen = std::collections::BTreeSet::new();
            let history: Vec<VersionEntry> = history.into_iter()
                .filter(|(id, _)| seen.insert(*id))
                .map(|(id, marker)| VersionEntry { version_id: format!("v{id}"), delete_marker: marker })
                .collect();
            let bad = bad.map(|b| format!("v{b}"));
            let l = ledger(Kind::Config, vec![Rolled { key: "k".into(), version_id: bad.clone(), restoration: false }]);
            let s = [("k".to_string(), KeyState {
                history: history.clone(),
                current_rollback_for: ours.then(|| "ecs-svc/2".to_string()),
            })].into();
            let plans = plan_keys("ecs-svc/2", &l, &s);
            if let KeyPlan::Restore { action, .. } = &plans[0] {
                let current = &history[0];
                match &bad {
                    Some(b) => prop_assert!(!current.delete_marker && &current.version_id == b),
                    None => prop_assert!(current.delete_marker),
                }
                if let Action::Copy { version_id } = action {
                    let pos = history.iter().position(|v| &v.version_id == version_id).unwrap();
                    prop_assert!(pos > 0 && !history[pos].delete_marker);
                }
            }
        }
    }
}
