//! The pure decision for configuration changes: events + observed state + settings → plan.
//!
//! 1. [`route`] sorts the object events: other buckets, the reserved `.wikiops/` prefix,
//!    folder markers, non-content events and unrouted keys are skipped with a reason; the
//!    rest are grouped by ECS service (one deployment per service, however many files).
//! 2. The adapter observes each service: its deployments, the ledger of its PRIMARY
//!    deployment, its configuration objects, the changed objects' current versions.
//! 3. [`plan_target`] decides: refuse (a configuration object is invalid), skip (the PRIMARY
//!    deployment already carries the change), or redeploy (and what to record in the ledger).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use shared::ecs::{self, Decision, ServiceState};

use crate::event::{Change, ObjectEvent};
use crate::ledger::{Ledger, RESERVED_PREFIX, Rolled, is_reserved};
use crate::settings::{Settings, Target};
use crate::validate::{self, Problem};

/// An event or deployment that needs nothing, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    pub reason: String,
}

impl Skipped {
    /// A skipped object key.
    pub fn key(key: &str, reason: impl Into<String>) -> Self {
        Skipped {
            key: Some(key.to_string()),
            deployment_id: None,
            reason: reason.into(),
        }
    }
}

/// Object events sorted by service.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routed {
    pub skipped: Vec<Skipped>,
    /// Changed keys per service, each key once, in event order.
    pub work: BTreeMap<Target, Vec<ObjectEvent>>,
}

/// Whether `key` is a folder marker (`dir/`), which no task reads.
pub fn is_folder_marker(key: &str) -> bool {
    key.ends_with('/')
}

/// Sorts object events into skipped ones and per-service work.
pub fn route(events: &[ObjectEvent], settings: &Settings) -> Routed {
    let mut out = Routed::default();
    for e in events {
        let reason = if e.bucket != settings.bucket {
            Some(format!("bucket {} is not CONFIG_BUCKET", e.bucket))
        } else if is_reserved(&e.key) {
            Some(format!(
                "{RESERVED_PREFIX} folders hold config-redeploy's own records"
            ))
        } else if is_folder_marker(&e.key) {
            Some("folder marker".to_string())
        } else if let Change::Other(name) = &e.change {
            Some(format!("{name} does not change the content"))
        } else {
            None
        };
        if let Some(reason) = reason {
            out.skipped.push(Skipped::key(&e.key, reason));
            continue;
        }
        match settings.route_for(&e.key) {
            None => out
                .skipped
                .push(Skipped::key(&e.key, "outside every configured prefix")),
            Some(r) => {
                let list = out.work.entry(r.target.clone()).or_default();
                match list.iter_mut().find(|o| o.key == e.key) {
                    // Keep the latest news about a key (duplicates and quick successions).
                    Some(prev) => {
                        if e.time.map(|t| t.latest()) >= prev.time.map(|t| t.latest()) {
                            *prev = e.clone();
                        }
                    }
                    None => list.push(e.clone()),
                }
            }
        }
    }
    out
}

/// A configuration object as listed (`header`: its first bytes, read for `.php` files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub header: Option<Vec<u8>>,
}

/// A changed object's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `null` in a bucket that was never versioned.
    pub version_id: String,
    /// Set on versions a rollback restored (metadata `wikiops-rollback-of`).
    pub rollback_of: Option<String>,
}

/// What the adapter observed for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub service: ServiceState,
    /// The ledger of the PRIMARY deployment, when this function started it.
    pub primary_ledger: Option<Ledger>,
    /// Every object under the service's prefixes (filtered here to the ones it owns).
    pub objects: Vec<ObjectInfo>,
    /// The current version of each changed key; `None` when it is deleted.
    pub heads: BTreeMap<String, Option<Head>>,
}

/// A refused object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub key: String,
    pub problem: Problem,
}

/// How the PRIMARY deployment was found to carry a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// It was created after the last instant the change may have happened.
    StartedAfter,
    /// Its ledger lists exactly the service's current objects (ETags).
    SameObjects,
}

/// The plan for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum TargetPlan {
    /// Start one deployment; record `changes` and `snapshot` in its ledger.
    Redeploy {
        changes: Vec<Rolled>,
        snapshot: BTreeMap<String, String>,
    },
    /// The PRIMARY deployment already carries the change.
    Covered {
        deployment_id: String,
        coverage: Coverage,
    },
    /// A configuration object is invalid: the service is left untouched.
    Rejected { rejections: Vec<Rejection> },
    /// The service is not ACTIVE.
    Unavailable { status: String },
}

/// Whether `key` is one of `target`'s configuration objects.
pub fn owned_by(key: &str, target: &Target, settings: &Settings) -> bool {
    !is_reserved(key)
        && !is_folder_marker(key)
        && settings.route_for(key).is_some_and(|r| &r.target == target)
}

/// The service's current configuration: key → ETag.
pub fn snapshot(
    objects: &[ObjectInfo],
    target: &Target,
    settings: &Settings,
) -> BTreeMap<String, String> {
    objects
        .iter()
        .filter(|o| owned_by(&o.key, target, settings))
        .map(|o| (o.key.clone(), o.etag.clone()))
        .collect()
}

/// The decision that needs only the service's deployments, so the adapter reads nothing
/// else for it: the service is not ACTIVE, or its PRIMARY deployment was created after the
/// last instant any of the changes may have happened (nothing is rolled out, so nothing needs
/// validating). `None`: look further ([`plan_target`]).
pub fn plan_from_deployments(events: &[ObjectEvent], service: &ServiceState) -> Option<TargetPlan> {
    // The last instant any of the changes may have happened; unknown if one has no time.
    let changed_at = events
        .iter()
        .map(|e| e.time.map(|t| t.latest()))
        .collect::<Option<Vec<_>>>()
        .and_then(|ts| ts.into_iter().max());
    match ecs::decide(service, changed_at) {
        Decision::NotActive { status } => Some(TargetPlan::Unavailable { status }),
        Decision::AlreadyRollingOut { deployment_id } => Some(TargetPlan::Covered {
            deployment_id,
            coverage: Coverage::StartedAfter,
        }),
        Decision::Redeploy => None,
    }
}

/// Decides what to do for one service, given its changed objects and what was observed.
pub fn plan_target(
    target: &Target,
    events: &[ObjectEvent],
    observed: &Observed,
    settings: &Settings,
) -> TargetPlan {
    if let Some(plan) = plan_from_deployments(events, &observed.service) {
        return plan;
    }

    // Everything the new tasks would read must be valid, not only the changed files.
    let rejections: Vec<Rejection> = observed
        .objects
        .iter()
        .filter(|o| owned_by(&o.key, target, settings))
        .filter_map(|o| {
            validate::check(
                &o.key,
                o.size,
                o.header.as_deref(),
                settings.max_config_bytes,
            )
            .map(|problem| Rejection {
                key: o.key.clone(),
                problem,
            })
        })
        .collect();
    if !rejections.is_empty() {
        return TargetPlan::Rejected { rejections };
    }

    let snapshot = snapshot(&observed.objects, target, settings);
    // The PRIMARY deployment and its ledger, when this function started it.
    let ours = observed
        .service
        .primary()
        .zip(observed.primary_ledger.as_ref())
        .filter(|(p, l)| l.deployment_id == p.id);
    if let Some((primary, _)) = ours.filter(|(_, l)| l.snapshot == snapshot) {
        return TargetPlan::Covered {
            deployment_id: primary.id.clone(),
            coverage: Coverage::SameObjects,
        };
    }

    let mut changes: Vec<Rolled> = events
        .iter()
        .map(|e| {
            let head = observed.heads.get(&e.key).cloned().flatten();
            Rolled {
                key: e.key.clone(),
                restoration: head.as_ref().is_some_and(|h| h.rollback_of.is_some()),
                version_id: head.map(|h| h.version_id),
            }
        })
        .collect();
    // A PRIMARY deployment of ours that has not completed is replaced by the new one, which
    // carries its untested changes too: they must stay revertible.
    if let Some((_, ledger)) = ours.filter(|(p, _)| p.rollout_state.as_deref() != Some("COMPLETED"))
    {
        let seen: BTreeSet<String> = changes.iter().map(|c| c.key.clone()).collect();
        changes.extend(
            ledger
                .changes
                .iter()
                .filter(|c| !seen.contains(&c.key))
                .cloned(),
        );
    }
    TargetPlan::Redeploy { changes, snapshot }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;
    use crate::ledger::Kind;
    use chrono::{DateTime, Duration, Utc};
    use proptest::prelude::*;
    use shared::Env;
    use shared::ecs::Deployment;

    fn settings() -> Settings {
        Settings::from_env(&Env::from_pairs([
            ("CONFIG_BUCKET", "cfg"),
            ("ECS_CLUSTER", "wiki"),
            ("ECS_SERVICE", "web"),
            (
                "CONFIG_ROUTES",
                r#"[{"prefix":"de/","cluster":"wiki","service":"de"},{"prefix":"de/shared/","cluster":"wiki","service":"web"}]"#,
            ),
            ("MAX_CONFIG_BYTES", "100"),
        ]))
        .unwrap()
    }

    fn web() -> Target {
        Target {
            cluster: "wiki".into(),
            service: "web".into(),
        }
    }

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn ev(key: &str, ms: Option<i64>) -> ObjectEvent {
        ObjectEvent {
            bucket: "cfg".into(),
            key: key.into(),
            change: Change::Created,
            version_id: None,
            sequencer: None,
            time: ms.map(|ms| EventTime {
                at: t(ms),
                resolution: Duration::milliseconds(1),
            }),
        }
    }

    fn state(primary_ms: i64, rollout: &str) -> ServiceState {
        ServiceState {
            cluster: "wiki".into(),
            service: "web".into(),
            status: "ACTIVE".into(),
            deployments: vec![Deployment {
                id: "ecs-svc/1".into(),
                status: "PRIMARY".into(),
                created_at: Some(t(primary_ms)),
                task_definition: None,
                rollout_state: Some(rollout.into()),
            }],
        }
    }

    fn obj(key: &str, body: &[u8]) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: body.len() as u64,
            etag: format!("\"{}\"", body.len()),
            header: Some(body.iter().take(16).copied().collect()),
        }
    }

    fn observed(primary_ms: i64, objects: Vec<ObjectInfo>) -> Observed {
        let heads = objects
            .iter()
            .map(|o| {
                (
                    o.key.clone(),
                    Some(Head {
                        version_id: format!("v-{}", o.key),
                        rollback_of: None,
                    }),
                )
            })
            .collect();
        Observed {
            service: state(primary_ms, "COMPLETED"),
            primary_ledger: None,
            objects,
            heads,
        }
    }

    fn ledger(snapshot: BTreeMap<String, String>, changes: Vec<Rolled>) -> Ledger {
        Ledger {
            kind: Kind::Config,
            cluster: "wiki".into(),
            service: "web".into(),
            deployment_id: "ecs-svc/1".into(),
            started_at: t(0),
            changes,
            snapshot,
            rollback_of: None,
            rolled_back_by: None,
        }
    }

    #[test]
    fn routing_skips_with_reasons_and_groups_by_service() {
        let s = settings();
        let mut other = ev("LocalSettings.php", Some(1));
        other.bucket = "elsewhere".into();
        let mut tag = ev("x.php", Some(1));
        tag.change = Change::Other("ObjectTagging:Put".into());
        let events = vec![
            ev("LocalSettings.php", Some(1)),
            ev("LocalSettings.php", Some(3)),
            ev("LocalSettings.php", Some(2)),
            ev("de/LocalSettings.php", Some(1)),
            ev("de/shared/skin.css", Some(1)),
            ev("images/", Some(1)),
            ev(".wikiops/deployments/wiki/web/ecs-svc/1.json", Some(1)),
            ev("de/.wikiops/deployments/wiki/de/ecs-svc/1.json", Some(1)),
            other,
            tag,
        ];
        let r = route(&events, &s);
        let reasons: Vec<_> = r.skipped.iter().map(|k| k.reason.as_str()).collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert!(reasons[0].contains("folder marker"));
        assert!(reasons[1].contains("own records"));
        assert!(reasons[2].contains("own records"));
        assert!(reasons[3].contains("CONFIG_BUCKET"));
        assert!(reasons[4].contains("ObjectTagging:Put"));
        assert_eq!(r.work.len(), 2);
        let web_keys: Vec<_> = r.work[&web()].iter().map(|e| e.key.as_str()).collect();
        assert_eq!(web_keys, vec!["LocalSettings.php", "de/shared/skin.css"]);
        // The latest duplicate is kept.
        assert_eq!(r.work[&web()][0].time.unwrap().at, t(3));

        let only = Settings::from_env(&Env::from_pairs([
            ("CONFIG_BUCKET", "cfg"),
            ("CONFIG_PREFIX", "wiki/"),
            ("ECS_CLUSTER", "wiki"),
            ("ECS_SERVICE", "web"),
        ]))
        .unwrap();
        let r = route(&[ev("other/LocalSettings.php", Some(1))], &only);
        assert_eq!(r.skipped[0].reason, "outside every configured prefix");
        assert!(r.work.is_empty());
    }

    #[test]
    fn redeploys_a_new_change_and_records_it() {
        let s = settings();
        let o = observed(0, vec![obj("LocalSettings.php", b"<?php\n$a=1;")]);
        let plan = plan_target(&web(), &[ev("LocalSettings.php", Some(10))], &o, &s);
        let TargetPlan::Redeploy { changes, snapshot } = plan else {
            panic!("{plan:?}")
        };
        assert_eq!(
            changes,
            vec![Rolled {
                key: "LocalSettings.php".into(),
                version_id: Some("v-LocalSettings.php".into()),
                restoration: false
            }]
        );
        assert_eq!(snapshot.len(), 1);
    }

    #[test]
    fn dedupe_at_the_resolution_edge() {
        let s = settings();
        let objects = vec![obj("LocalSettings.php", b"<?php\n")];
        // Millisecond event time 10 ms: the change happened in [10, 11) ms.
        let e = [ev("LocalSettings.php", Some(10))];
        for (primary_ms, covered) in [(9, false), (10, false), (11, true), (12, true)] {
            let plan = plan_target(&web(), &e, &observed(primary_ms, objects.clone()), &s);
            assert_eq!(
                matches!(plan, TargetPlan::Covered { .. }),
                covered,
                "{primary_ms}: {plan:?}"
            );
        }
        // The same instant at one-second resolution (EventBridge): covered only a second later.
        let mut coarse = ev("LocalSettings.php", None);
        coarse.time = Some(EventTime {
            at: t(0),
            resolution: Duration::seconds(1),
        });
        for (primary_ms, covered) in [(500, false), (999, false), (1000, true)] {
            let plan = plan_target(
                &web(),
                std::slice::from_ref(&coarse),
                &observed(primary_ms, objects.clone()),
                &s,
            );
            assert_eq!(
                matches!(plan, TargetPlan::Covered { .. }),
                covered,
                "{primary_ms}: {plan:?}"
            );
        }
        // No time at all: never covered by time.
        let plan = plan_target(
            &web(),
            &[ev("LocalSettings.php", None)],
            &observed(1_000_000, objects),
            &s,
        );
        assert!(matches!(plan, TargetPlan::Redeploy { .. }), "{plan:?}");
    }

    #[test]
    fn a_batch_is_covered_only_when_every_change_is() {
        let s = settings();
        let objects = vec![obj("a.php", b"<?php\n"), obj("b.php", b"<?php\n")];
        let e = [ev("a.php", Some(10)), ev("b.php", Some(30))];
        assert!(matches!(
            plan_target(&web(), &e, &observed(20, objects.clone()), &s),
            TargetPlan::Redeploy { .. }
        ));
        assert!(matches!(
            plan_target(&web(), &e, &observed(31, objects), &s),
            TargetPlan::Covered { .. }
        ));
    }

    #[test]
    fn same_objects_as_the_primary_ledger_is_covered() {
        let s = settings();
        let objects = vec![obj("LocalSettings.php", b"<?php\n")];
        let mut o = observed(0, objects.clone());
        o.primary_ledger = Some(ledger(snapshot(&objects, &web(), &s), vec![]));
        let plan = plan_target(&web(), &[ev("LocalSettings.php", Some(10))], &o, &s);
        assert_eq!(
            plan,
            TargetPlan::Covered {
                deployment_id: "ecs-svc/1".into(),
                coverage: Coverage::SameObjects
            }
        );
        // A different ETag is a different configuration.
        let mut changed = objects[0].clone();
        changed.etag = "\"other\"".into();
        o.objects = vec![changed];
        assert!(matches!(
            plan_target(&web(), &[ev("LocalSettings.php", Some(10))], &o, &s),
            TargetPlan::Redeploy { .. }
        ));
        // A ledger of another deployment does not count.
        let mut o = observed(0, objects.clone());
        let mut l = ledger(snapshot(&objects, &web(), &s), vec![]);
        l.deployment_id = "ecs-svc/0".into();
        o.primary_ledger = Some(l);
        assert!(matches!(
            plan_target(&web(), &[ev("LocalSettings.php", Some(10))], &o, &s),
            TargetPlan::Redeploy { .. }
        ));
    }

    #[test]
    fn any_invalid_object_of_the_service_blocks_the_redeploy() {
        let s = settings();
        let good = obj("LocalSettings.php", b"<?php\n");
        for (bad, problem) in [
            (obj("Extra.php", b""), Problem::Empty),
            (obj("Extra.php", b"echo 1;"), Problem::NotPhp),
            (
                obj("big.css", &[b'x'; 101]),
                Problem::TooLarge {
                    size: 101,
                    max: 100,
                },
            ),
        ] {
            let o = observed(0, vec![good.clone(), bad.clone()]);
            let plan = plan_target(&web(), &[ev("LocalSettings.php", Some(10))], &o, &s);
            assert_eq!(
                plan,
                TargetPlan::Rejected {
                    rejections: vec![Rejection {
                        key: bad.key.clone(),
                        problem
                    }]
                }
            );
        }
        // Objects of other services, folder markers and the ledger are not this service's.
        let o = observed(
            0,
            vec![
                good.clone(),
                obj("de/x.php", b""),
                obj("dir/", b""),
                obj(".wikiops/x.json", b""),
            ],
        );
        assert!(matches!(
            plan_target(&web(), &[ev("LocalSettings.php", Some(10))], &o, &s),
            TargetPlan::Redeploy { .. }
        ));
    }

    #[test]
    fn deployments_alone_settle_duplicates() {
        let e = [ev("LocalSettings.php", Some(10))];
        assert_eq!(
            plan_from_deployments(&e, &state(11, "IN_PROGRESS")),
            Some(TargetPlan::Covered {
                deployment_id: "ecs-svc/1".into(),
                coverage: Coverage::StartedAfter
            })
        );
        assert_eq!(plan_from_deployments(&e, &state(10, "COMPLETED")), None);
        // Covered: nothing is rolled out, so an invalid object is not even looked at.
        let o = observed(11, vec![obj("Extra.php", b"")]);
        assert!(matches!(
            plan_target(&web(), &e, &o, &settings()),
            TargetPlan::Covered { .. }
        ));
    }

    #[test]
    fn inactive_service_is_unavailable() {
        let s = settings();
        let mut o = observed(0, vec![]);
        o.service.status = "INACTIVE".into();
        assert_eq!(
            plan_target(&web(), &[ev("a.php", Some(1))], &o, &s),
            TargetPlan::Unavailable {
                status: "INACTIVE".into()
            }
        );
    }

    #[test]
    fn deleted_restored_and_carried_changes() {
        let s = settings();
        let objects = vec![obj("b.php", b"<?php\n")];
        let mut o = observed(0, objects);
        o.heads.insert("gone.php".into(), None);
        o.heads.insert(
            "b.php".into(),
            Some(Head {
                version_id: "v9".into(),
                rollback_of: Some("v8".into()),
            }),
        );
        let unfinished = vec![
            Rolled {
                key: "c.php".into(),
                version_id: Some("v3".into()),
                restoration: false,
            },
            Rolled {
                key: "b.php".into(),
                version_id: Some("v8".into()),
                restoration: false,
            },
        ];
        o.primary_ledger = Some(ledger(BTreeMap::new(), unfinished.clone()));
        o.service = state(0, "IN_PROGRESS");
        let plan = plan_target(
            &web(),
            &[ev("gone.php", Some(5)), ev("b.php", Some(5))],
            &o,
            &s,
        );
        let TargetPlan::Redeploy { changes, .. } = plan else {
            panic!("{plan:?}")
        };
        assert_eq!(
            changes,
            vec![
                Rolled {
                    key: "gone.php".into(),
                    version_id: None,
                    restoration: false
                },
                Rolled {
                    key: "b.php".into(),
                    version_id: Some("v9".into()),
                    restoration: true
                },
                unfinished[0].clone(),
            ]
        );
        // A completed PRIMARY is not carried.
        o.service = state(0, "COMPLETED");
        let TargetPlan::Redeploy { changes, .. } =
            plan_target(&web(), &[ev("gone.php", Some(5))], &o, &s)
        else {
            panic!()
        };
        assert_eq!(changes.len(), 1);
    }

    proptest! {
        /// Every object event is accounted for: skipped with a reason, or in its route's work.
        #[test]
        fn every_event_is_skipped_or_routed(
            keys in proptest::collection::vec("(de/|de/shared/|\\.wikiops/|x/)?[a-c]{0,2}/?", 0..12),
            foreign in proptest::collection::vec(any::<bool>(), 12),
        ) {
            let s = settings();
            let events: Vec<ObjectEvent> = keys.iter().zip(&foreign).map(|(k, f)| {
                let mut e = ev(k, Some(1));
                if *f { e.bucket = "other".into(); }
                e
            }).collect();
            let r = route(&events, &s);
            for e in &events {
                let skipped = r.skipped.iter().any(|k| k.key.as_deref() == Some(e.key.as_str()));
                let routed = s.route_for(&e.key).is_some_and(|rt| {
                    r.work.get(&rt.target).is_some_and(|w| w.iter().any(|x| x.key == e.key))
                });
                prop_assert!(skipped || routed, "{e:?} lost");
                if e.bucket != "cfg" || is_reserved(&e.key) || is_folder_marker(&e.key) {
                    prop_assert!(skipped);
                }
            }
            // Each key at most once per service.
            for w in r.work.values() {
                let keys: BTreeSet<&str> = w.iter().map(|e| e.key.as_str()).collect();
                prop_assert_eq!(keys.len(), w.len());
            }
        }

        /// A change is never skipped unless the PRIMARY started strictly after it could have
        /// happened (or carries exactly the current objects).
        #[test]
        fn never_skips_a_change_the_primary_may_predate(
            primary_ms in 0i64..5_000,
            change_ms in proptest::collection::vec(0i64..5_000, 1..5),
            coarse in any::<bool>(),
        ) {
            let s = settings();
            let resolution = if coarse { Duration::seconds(1) } else { Duration::milliseconds(1) };
            let events: Vec<ObjectEvent> = change_ms.iter().enumerate().map(|(i, ms)| {
                let mut e = ev(&format!("f{i}.txt"), None);
                let at = if coarse { t(ms - ms % 1000) } else { t(*ms) };
                e.time = Some(EventTime { at, resolution });
                e
            }).collect();
            let objects: Vec<ObjectInfo> = events.iter().map(|e| obj(&e.key, b"x")).collect();
            let plan = plan_target(&web(), &events, &observed(primary_ms, objects), &s);
            let primary = t(primary_ms);
            if matches!(plan, TargetPlan::Covered { .. }) {
                for e in &events {
                    let t = e.time.unwrap();
                    prop_assert!(primary >= t.at + t.resolution);
                }
            }
            // …and a primary that started after every possible change instant does cover it.
            if events.iter().all(|e| { let t = e.time.unwrap(); primary >= t.at + t.resolution }) {
                let covered = matches!(plan, TargetPlan::Covered { .. });
                prop_assert!(covered);
            }
        }
    }
}
