//! The pure decision for a failed deployment: event + ledger + what ECS and S3 say → rollback plan.
//!
//! Only a `SERVICE_DEPLOYMENT_FAILED` of a routed service, for a deployment this function
//! started for a configuration change (it has a ledger of kind `config`), not yet rolled back,
//! and that ECS itself lists with the rollout state `FAILED`, is rolled back: the
//! release pointer goes back to the last good release recorded in the ledger (the exact
//! versions, no object copied) and the service is redeployed. A rollback is never rolled back,
//! and a release made after the failed one is left alone.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::ecs::ServiceState;
use shared::release::{Pointer, Release};

use crate::event::{DEPLOYMENT_FAILED, DeploymentEvent};
use crate::ledger::{Kind, Ledger};
use crate::plan::diff;
use crate::settings::Target;

/// What to do about a failed deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum RollbackPlan {
    /// Nothing, and why.
    Skip { reason: String },
    /// Write `pointer` (the previous release), then redeploy.
    Restore { pointer: Pointer },
    /// A previous run already pointed back but stopped before redeploying: redeploy.
    Redeploy,
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

/// ECS's rollout state of a failed deployment.
pub const FAILED: &str = "FAILED";

/// Decides how to roll back the failed deployment `failed` (its ledger passed [`precheck`]).
///
/// `service` is what ECS reports now, `pointer` the current release, `primary_ledger` the
/// ledger of the PRIMARY deployment when this function started it.
pub fn plan(
    failed: &Ledger,
    service: &ServiceState,
    pointer: Option<&Pointer>,
    primary_ledger: Option<&Ledger>,
    now: DateTime<Utc>,
) -> RollbackPlan {
    let skip = |reason: String| RollbackPlan::Skip { reason };
    let id = &failed.deployment_id;
    // A previous run pointed back (after ECS said FAILED) but stopped before redeploying:
    // finish it, whatever ECS lists now (the redeploy changes no configuration).
    if let Some(p) = pointer.filter(|p| p.rollback_of.as_deref() == Some(id.as_str())) {
        let running = service.primary().zip(primary_ledger).is_some_and(|(d, l)| {
            l.deployment_id == d.id
                && l.kind == Kind::Rollback
                && l.rollback_of.as_deref() == Some(id.as_str())
                && l.release.objects == p.release.objects
        });
        return if running {
            skip("already rolled back: the rollback deployment is running".into())
        } else {
            RollbackPlan::Redeploy
        };
    }
    // ECS's word: only a deployment it lists as FAILED is rolled back. One it no longer lists
    // (superseded, the event replayed or forged) or reports otherwise changes nothing.
    match service.deployments.iter().find(|d| &d.id == id) {
        None => {
            return skip(format!(
                "ECS no longer lists deployment {id}: the failure event is stale or forged; nothing rolled back"
            ));
        }
        Some(d) if d.rollout_state.as_deref() != Some(FAILED) => {
            return skip(format!(
                "ECS reports deployment {id} as {}: the failure event is stale or forged; nothing rolled back",
                d.rollout_state
                    .as_deref()
                    .unwrap_or("without a rollout state")
            ));
        }
        Some(_) => {}
    }
    let Some(previous) = &failed.previous else {
        return skip(format!(
            "deployment {id} rolled out the first release: there is no earlier one to go back to"
        ));
    };
    match pointer {
        Some(p) if p.release.objects == failed.release.objects => {
            let mut withdrawn = p.withdrawn.clone();
            for c in diff(Some(previous), &failed.release) {
                withdrawn.insert(c.key, c.version_id);
            }
            RollbackPlan::Restore {
                pointer: Pointer {
                    release: Release {
                        created_at: now,
                        objects: previous.objects.clone(),
                    },
                    previous: None,
                    withdrawn,
                    rollback_of: Some(id.clone()),
                },
            }
        }
        Some(_) => skip(format!(
            "a release made after deployment {id} is current: left alone"
        )),
        None => skip("no current release to roll back".into()),
    }
}

/// The withdrawn states of a rollback, for the summary: key → version (`None`: a removal).
pub fn withdrawn_by(failed: &Ledger, restored: &Release) -> BTreeMap<String, Option<String>> {
    diff(Some(restored), &failed.release)
        .into_iter()
        .map(|c| (c.key, c.version_id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Rolled;
    use proptest::prelude::*;
    use shared::ecs::Deployment;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    fn release(s: i64, objects: &[(&str, &str)]) -> Release {
        Release {
            created_at: t(s),
            objects: objects
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
    fn ledger(kind: Kind, changes: Vec<Rolled>) -> Ledger {
        Ledger {
            kind,
            cluster: "wiki".into(),
            service: "web".into(),
            deployment_id: "ecs-svc/2".into(),
            started_at: t(0),
            changes,
            release: release(1, &[("LocalSettings.php", "v2"), ("New.php", "n1")]),
            previous: Some(release(
                0,
                &[("LocalSettings.php", "v1"), ("Old.php", "o1")],
            )),
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
    fn service(deployments: &[(&str, &str, &str)]) -> ServiceState {
        ServiceState {
            cluster: "wiki".into(),
            service: "web".into(),
            status: "ACTIVE".into(),
            deployments: deployments
                .iter()
                .map(|(id, status, rollout)| Deployment {
                    id: id.to_string(),
                    status: status.to_string(),
                    created_at: Some(t(5)),
                    task_definition: None,
                    rollout_state: Some(rollout.to_string()),
                })
                .collect(),
        }
    }
    fn current(r: Release) -> Pointer {
        Pointer {
            release: r,
            previous: None,
            withdrawn: BTreeMap::new(),
            rollback_of: None,
        }
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
    fn points_back_to_the_previous_release_exactly() {
        let l = ledger(Kind::Config, vec![]);
        let p = current(l.release.clone());
        // ECS rolled back by itself (a new PRIMARY) and reports the failed one FAILED.
        for s in [
            service(&[
                ("ecs-svc/3", "PRIMARY", "IN_PROGRESS"),
                ("ecs-svc/2", "ACTIVE", "FAILED"),
            ]),
            service(&[("ecs-svc/2", "PRIMARY", "FAILED")]),
        ] {
            let RollbackPlan::Restore { pointer } = plan(&l, &s, Some(&p), None, t(9)) else {
                panic!()
            };
            assert_eq!(
                pointer.release.objects,
                l.previous.as_ref().unwrap().objects
            );
            assert_eq!(pointer.release.created_at, t(9));
            assert_eq!(pointer.rollback_of.as_deref(), Some("ecs-svc/2"));
            assert_eq!(
                pointer.withdrawn,
                [
                    ("LocalSettings.php".to_string(), Some("v2".to_string())),
                    ("New.php".to_string(), Some("n1".to_string())),
                    ("Old.php".to_string(), None),
                ]
                .into()
            );
        }
    }

    #[test]
    fn a_healthy_deployment_is_never_rolled_back() {
        let l = ledger(Kind::Config, vec![]);
        let p = current(l.release.clone());
        for state in ["COMPLETED", "IN_PROGRESS"] {
            let got = plan(
                &l,
                &service(&[("ecs-svc/2", "PRIMARY", state)]),
                Some(&p),
                None,
                t(9),
            );
            let RollbackPlan::Skip { reason } = got else {
                panic!("{got:?}")
            };
            assert!(
                reason.contains(state) && reason.contains("stale or forged"),
                "{reason}"
            );
        }
    }

    #[test]
    fn newer_releases_first_releases_and_finished_rollbacks_are_left_alone() {
        let l = ledger(Kind::Config, vec![]);
        let s = service(&[
            ("ecs-svc/3", "PRIMARY", "IN_PROGRESS"),
            ("ecs-svc/2", "ACTIVE", "FAILED"),
        ]);
        let newer = current(release(7, &[("LocalSettings.php", "v3")]));
        assert!(
            matches!(plan(&l, &s, Some(&newer), None, t(9)), RollbackPlan::Skip { reason } if reason.contains("after"))
        );
        let mut first = l.clone();
        first.previous = None;
        let p = current(l.release.clone());
        assert!(
            matches!(plan(&first, &s, Some(&p), None, t(9)), RollbackPlan::Skip { reason } if reason.contains("first release"))
        );
        // Pointed back already: redeploy unless the rollback deployment runs.
        let RollbackPlan::Restore { pointer } = plan(&l, &s, Some(&p), None, t(9)) else {
            panic!()
        };
        assert_eq!(
            plan(&l, &s, Some(&pointer), None, t(10)),
            RollbackPlan::Redeploy
        );
        let mut rb = ledger(Kind::Rollback, vec![]);
        rb.deployment_id = "ecs-svc/3".into();
        rb.rollback_of = Some("ecs-svc/2".into());
        rb.release = pointer.release.clone();
        assert!(
            matches!(plan(&l, &s, Some(&pointer), Some(&rb), t(10)), RollbackPlan::Skip { reason } if reason.contains("already"))
        );
    }

    /// A failure event for a deployment ECS no longer lists (superseded, then replayed or
    /// forged), or one it does not report FAILED, rolls nothing back.
    #[test]
    fn only_a_deployment_ecs_reports_failed_is_rolled_back() {
        let l = ledger(Kind::Config, vec![]);
        let p = current(l.release.clone());
        for (s, why) in [
            (
                service(&[("ecs-svc/3", "PRIMARY", "COMPLETED")]),
                "no longer lists",
            ),
            (service(&[]), "no longer lists"),
            (
                service(&[
                    ("ecs-svc/3", "PRIMARY", "IN_PROGRESS"),
                    ("ecs-svc/2", "ACTIVE", "DRAINING"),
                ]),
                "DRAINING",
            ),
        ] {
            let got = plan(&l, &s, Some(&p), None, t(9));
            let RollbackPlan::Skip { reason } = &got else {
                panic!("{got:?}")
            };
            assert!(
                reason.contains(why) && reason.contains("ecs-svc/2"),
                "{reason}"
            );
        }
        let mut unknown = service(&[("ecs-svc/2", "ACTIVE", "FAILED")]);
        unknown.deployments[0].rollout_state = None;
        assert!(matches!(
            plan(&l, &unknown, Some(&p), None, t(9)),
            RollbackPlan::Skip { .. }
        ));
    }

    proptest! {
        /// A restore always points at exactly the previous release, and only when the failed
        /// release is current and ECS lists the deployment FAILED.
        #[test]
        fn restores_only_the_previous_release_over_the_failed_one(
            prev in proptest::collection::btree_map("[a-c]", "v[0-2]", 0..3),
            bad in proptest::collection::btree_map("[a-c]", "v[0-2]", 0..3),
            cur in proptest::collection::btree_map("[a-c]", "v[0-2]", 0..3),
            state in proptest::sample::select(vec!["COMPLETED", "IN_PROGRESS", "FAILED", "gone"]),
        ) {
            let mut l = ledger(Kind::Config, vec![]);
            l.previous = Some(Release { created_at: t(0), objects: prev.clone() });
            l.release = Release { created_at: t(1), objects: bad.clone() };
            let p = current(Release { created_at: t(1), objects: cur.clone() });
            let s = if state == "gone" { service(&[]) } else { service(&[("ecs-svc/2", "ACTIVE", state)]) };
            if let RollbackPlan::Restore { pointer } = plan(&l, &s, Some(&p), None, t(9)) {
                prop_assert_eq!(&pointer.release.objects, &prev);
                prop_assert_eq!(&cur, &bad);
                prop_assert_eq!(state, "FAILED");
                for (k, v) in &pointer.withdrawn {
                    prop_assert_eq!(bad.get(k), v.as_ref());
                    prop_assert!(prev.get(k) != bad.get(k));
                }
            }
        }
    }
}
