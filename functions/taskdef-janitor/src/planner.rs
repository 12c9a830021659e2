//! The plan: what to do with each revision, as a pure function of plain data.
//!
//! Inputs are the revisions of the selected families (status, deregistration time and
//! plaintext findings when known), the set of revisions in use, the policy and the time.
//! Rules, first match wins:
//!
//! 1. in use (pinned by a service, deployment, task set, task, rule or schedule; a reference
//!    without revision pins the family's latest ACTIVE revision) → keep;
//! 2. holds plaintext credentials and `PURGE_PLAINTEXT` → deregister (if ACTIVE) and delete,
//!    even inside the keep window;
//! 3. among the newest `KEEP_REVISIONS` of its family by revision number → keep;
//! 4. ACTIVE → deregister (and delete at once when `DELETE_AFTER_DAYS=0`);
//! 5. INACTIVE → delete once deregistered at least `DELETE_AFTER_DAYS` days ago. An unknown
//!    deregistration time is "not old enough" (unless `DELETE_AFTER_DAYS=0`).
//!
//! What is not known yet (a revision not described) never leads to more work: the plan with
//! less knowledge is contained in the plan with more ([`Decision::NeedsDetails`] marks the
//! revisions whose fate the details may still change).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::plaintext::Finding;
use crate::refs::{RevisionId, TdRef};

/// A revision's registration status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Active,
    Inactive,
}

/// One revision, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub id: RevisionId,
    pub status: Status,
    /// When it was deregistered, if known.
    pub deregistered_at: Option<DateTime<Utc>>,
    /// Plaintext findings once the revision has been described; `None`: not scanned yet.
    pub findings: Option<Vec<Finding>>,
}

/// Which revisions are in use, and by what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InUse {
    /// Pinned revisions and their users.
    pub pinned: BTreeMap<RevisionId, BTreeSet<String>>,
    /// Families referenced without a revision (their latest ACTIVE revision) and their users.
    pub latest: BTreeMap<String, BTreeSet<String>>,
}

impl InUse {
    /// Records that `user` references `reference`.
    pub fn add(&mut self, reference: TdRef, user: impl Into<String>) {
        let user = user.into();
        match reference.revision {
            Some(r) => self
                .pinned
                .entry(RevisionId::new(reference.family, r))
                .or_default()
                .insert(user),
            None => self
                .latest
                .entry(reference.family)
                .or_default()
                .insert(user),
        };
    }

    /// Everything that uses `rev` (empty when nothing does).
    pub fn users(&self, rev: &RevisionId, ctx: &FamilyContext) -> BTreeSet<String> {
        let mut users = self.pinned.get(rev).cloned().unwrap_or_default();
        if ctx.latest_active == Some(rev.revision)
            && let Some(u) = self.latest.get(&rev.family)
        {
            users.extend(u.iter().cloned());
        }
        users
    }

    fn contains(&self, rev: &RevisionId, ctx: &FamilyContext) -> bool {
        self.pinned.contains_key(rev)
            || (ctx.latest_active == Some(rev.revision) && self.latest.contains_key(&rev.family))
    }
}

/// The settings the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The newest revisions kept per family.
    pub keep_revisions: u32,
    /// Days an INACTIVE revision stays before it is deleted (0: delete at once).
    pub delete_after_days: u32,
    /// Deregister and delete unused revisions that hold plaintext credentials, even recent ones.
    pub purge_plaintext: bool,
}

/// What the plan needs to know about a revision's family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyContext {
    /// The newest `keep_revisions` revision numbers.
    pub recent: BTreeSet<u32>,
    /// The highest ACTIVE revision number (what a reference without revision runs).
    pub latest_active: Option<u32>,
}

impl FamilyContext {
    /// The context of one family from its revisions.
    pub fn new<'a>(revisions: impl IntoIterator<Item = &'a Revision>, keep: u32) -> Self {
        let mut numbers = BTreeSet::new();
        let mut latest_active = None;
        for r in revisions {
            numbers.insert(r.id.revision);
            if r.status == Status::Active {
                latest_active = latest_active.max(Some(r.id.revision));
            }
        }
        FamilyContext {
            recent: numbers.into_iter().rev().take(keep as usize).collect(),
            latest_active,
        }
    }
}

/// Why a revision is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// Deregistered at least `DELETE_AFTER_DAYS` ago.
    Expired,
    /// `DELETE_AFTER_DAYS=0`.
    Immediate,
    /// Holds plaintext credentials and `PURGE_PLAINTEXT` is on.
    Plaintext,
}

/// The decision for one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    KeepInUse,
    KeepRecent,
    /// INACTIVE, not deregistered long enough ago (or when is unknown).
    KeepInactive,
    /// The details (deregistration time, findings) may still change the decision.
    NeedsDetails,
    Deregister,
    DeregisterThenDelete(Why),
    Delete(Why),
}

impl Decision {
    /// Whether the decision changes the revision.
    pub fn touches(&self) -> bool {
        matches!(
            self,
            Decision::Deregister | Decision::DeregisterThenDelete(_) | Decision::Delete(_)
        )
    }

    /// Whether the decision ends with a deletion.
    pub fn deletes(&self) -> bool {
        matches!(
            self,
            Decision::DeregisterThenDelete(_) | Decision::Delete(_)
        )
    }
}

/// Decides what to do with one revision of a family described by `ctx`.
pub fn decide(
    rev: &Revision,
    ctx: &FamilyContext,
    in_use: &InUse,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Decision {
    if in_use.contains(&rev.id, ctx) {
        return Decision::KeepInUse;
    }
    let dirty = rev.findings.as_ref().map(|f| !f.is_empty());
    if policy.purge_plaintext && dirty == Some(true) {
        return match rev.status {
            Status::Active => Decision::DeregisterThenDelete(Why::Plaintext),
            Status::Inactive => Decision::Delete(Why::Plaintext),
        };
    }
    if ctx.recent.contains(&rev.id.revision) {
        return if policy.purge_plaintext && dirty.is_none() {
            Decision::NeedsDetails
        } else {
            Decision::KeepRecent
        };
    }
    match rev.status {
        Status::Active if policy.delete_after_days == 0 => {
            Decision::DeregisterThenDelete(Why::Immediate)
        }
        Status::Active => Decision::Deregister,
        Status::Inactive if policy.delete_after_days == 0 => Decision::Delete(Why::Immediate),
        Status::Inactive => {
            let age = rev.deregistered_at.map(|t| now - t);
            let limit = chrono::Duration::days(i64::from(policy.delete_after_days));
            if age.is_some_and(|a| a >= limit) {
                Decision::Delete(Why::Expired)
            } else if rev.findings.is_none() {
                // Not described yet: the description may show it is old enough, or dirty.
                Decision::NeedsDetails
            } else {
                Decision::KeepInactive
            }
        }
    }
}

/// The contexts of every family in `revisions`.
pub fn contexts(revisions: &[Revision], keep: u32) -> BTreeMap<String, FamilyContext> {
    let mut by_family: BTreeMap<&str, Vec<&Revision>> = BTreeMap::new();
    for r in revisions {
        by_family.entry(&r.id.family).or_default().push(r);
    }
    by_family
        .into_iter()
        .map(|(f, revs)| (f.to_string(), FamilyContext::new(revs, keep)))
        .collect()
}

/// The decision for every revision.
pub fn plan(
    revisions: &[Revision],
    in_use: &InUse,
    policy: &Policy,
    now: DateTime<Utc>,
) -> BTreeMap<RevisionId, Decision> {
    let ctxs = contexts(revisions, policy.keep_revisions);
    revisions
        .iter()
        .map(|r| {
            let ctx = &ctxs[&r.id.family];
            (r.id.clone(), decide(r, ctx, in_use, policy, now))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plaintext::Kind;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn days_ago(d: i64) -> Option<DateTime<Utc>> {
        Some(now() - chrono::Duration::days(d))
    }

    fn rev(n: u32, status: Status) -> Revision {
        Revision {
            id: RevisionId::new("wiki", n),
            status,
            deregistered_at: None,
            findings: Some(vec![]),
        }
    }

    fn dirty(mut r: Revision) -> Revision {
        r.findings = Some(vec![Finding {
            container: "wiki".into(),
            variable: "DB_PASSWORD".into(),
            kind: Kind::CredentialName,
        }]);
        r
    }

    fn policy(keep: u32, days: u32, purge: bool) -> Policy {
        Policy {
            keep_revisions: keep,
            delete_after_days: days,
            purge_plaintext: purge,
        }
    }

    fn decisions(revs: &[Revision], in_use: &InUse, p: Policy) -> Vec<Decision> {
        let plan = plan(revs, in_use, &p, now());
        revs.iter().map(|r| plan[&r.id]).collect()
    }

    use Decision::*;
    use Status::*;

    #[test]
    fn keeps_the_newest_by_number_not_by_listing_order() {
        let revs: Vec<_> = [9, 10, 2, 11, 1].map(|n| rev(n, Active)).into();
        assert_eq!(
            decisions(&revs, &InUse::default(), policy(2, 7, false)),
            vec![Deregister, KeepRecent, Deregister, KeepRecent, Deregister]
        );
    }

    #[test]
    fn in_use_wins_over_everything() {
        let revs = vec![
            dirty(rev(1, Active)),
            dirty(rev(2, Inactive)),
            rev(3, Active),
        ];
        let mut in_use = InUse::default();
        in_use.add(crate::refs::parse("wiki:1").unwrap(), "service wiki/web");
        in_use.add(crate::refs::parse("wiki:2").unwrap(), "task wiki/abc");
        assert_eq!(
            decisions(&revs, &in_use, policy(0, 0, true)),
            vec![KeepInUse, KeepInUse, DeregisterThenDelete(Why::Immediate)]
        );
    }

    #[test]
    fn a_reference_without_revision_pins_the_latest_active_one() {
        let revs = vec![
            rev(1, Active),
            rev(2, Active),
            rev(3, Inactive),
            rev(4, Inactive),
        ];
        let mut in_use = InUse::default();
        in_use.add(crate::refs::parse("wiki").unwrap(), "rule default/nightly");
        assert_eq!(
            decisions(&revs, &in_use, policy(0, 0, false)),
            vec![
                DeregisterThenDelete(Why::Immediate),
                KeepInUse,
                Delete(Why::Immediate),
                Delete(Why::Immediate)
            ]
        );
        let ctxs = contexts(&revs, 0);
        assert_eq!(
            in_use.users(&RevisionId::new("wiki", 2), &ctxs["wiki"]),
            BTreeSet::from(["rule default/nightly".to_string()])
        );
    }

    #[test]
    fn inactive_revisions_wait_delete_after_days() {
        let mut old = rev(1, Inactive);
        old.deregistered_at = days_ago(8);
        let mut young = rev(2, Inactive);
        young.deregistered_at = days_ago(6);
        let mut exactly = rev(3, Inactive);
        exactly.deregistered_at = days_ago(7);
        let unknown = rev(4, Inactive);
        let mut undescribed = rev(5, Inactive);
        undescribed.findings = None;
        let revs = vec![old, young, exactly, unknown, undescribed, rev(6, Active)];
        assert_eq!(
            decisions(&revs, &InUse::default(), policy(1, 7, false)),
            vec![
                Delete(Why::Expired),
                KeepInactive,
                Delete(Why::Expired),
                KeepInactive,
                NeedsDetails,
                KeepRecent
            ]
        );
        // DELETE_AFTER_DAYS=0: age does not matter, even unknown.
        assert_eq!(
            decisions(&revs, &InUse::default(), policy(1, 0, false)),
            vec![
                Delete(Why::Immediate),
                Delete(Why::Immediate),
                Delete(Why::Immediate),
                Delete(Why::Immediate),
                Delete(Why::Immediate),
                KeepRecent
            ]
        );
    }

    #[test]
    fn purge_reaches_inside_the_keep_window_but_not_in_use() {
        let mut undescribed = rev(4, Active);
        undescribed.findings = None;
        let revs = vec![
            dirty(rev(1, Inactive)),
            dirty(rev(2, Active)),
            rev(3, Active),
            undescribed,
            dirty(rev(5, Active)),
        ];
        let mut in_use = InUse::default();
        in_use.add(crate::refs::parse("wiki:5").unwrap(), "service wiki/web");
        assert_eq!(
            decisions(&revs, &in_use, policy(10, 7, true)),
            vec![
                Delete(Why::Plaintext),
                DeregisterThenDelete(Why::Plaintext),
                KeepRecent,
                NeedsDetails,
                KeepInUse
            ]
        );
        // Without purge the findings change nothing.
        assert_eq!(
            decisions(&revs, &in_use, policy(10, 7, false)),
            vec![KeepRecent, KeepRecent, KeepRecent, KeepRecent, KeepInUse]
        );
    }

    #[test]
    fn active_outside_the_window_is_deregistered_then_deleted_at_zero_days() {
        let revs = vec![rev(1, Active), rev(2, Active)];
        assert_eq!(
            decisions(&revs, &InUse::default(), policy(1, 7, false)),
            vec![Deregister, KeepRecent]
        );
        assert_eq!(
            decisions(&revs, &InUse::default(), policy(1, 0, false)),
            vec![DeregisterThenDelete(Why::Immediate), KeepRecent]
        );
        assert!(Deregister.touches() && !Deregister.deletes());
        assert!(Delete(Why::Expired).deletes());
        assert!(!KeepInactive.touches() && !NeedsDetails.touches());
    }

    #[test]
    fn families_are_planned_independently() {
        let mut revs: Vec<_> = (1..=3).map(|n| rev(n, Active)).collect();
        revs.push(Revision {
            id: RevisionId::new("worker", 1),
            status: Active,
            deregistered_at: None,
            findings: None,
        });
        assert_eq!(
            decisions(&revs, &InUse::default(), policy(1, 7, false)),
            vec![Deregister, Deregister, KeepRecent, KeepRecent]
        );
    }

    // --- properties ---------------------------------------------------------------------

    fn arb_revision(families: u32) -> impl Strategy<Value = Revision> {
        (
            0..families,
            1u32..40,
            any::<bool>(),
            proptest::option::of(0i64..20),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(f, n, active, age, dirty_flag)| Revision {
                id: RevisionId::new(format!("fam{f}"), n),
                status: if active { Active } else { Inactive },
                deregistered_at: if active { None } else { age.and_then(days_ago) },
                findings: dirty_flag.map(|d| {
                    if d {
                        vec![Finding {
                            container: "c".into(),
                            variable: "TOKEN".into(),
                            kind: Kind::CredentialName,
                        }]
                    } else {
                        vec![]
                    }
                }),
            })
    }

    fn arb_fleet() -> impl Strategy<Value = (Vec<Revision>, InUse, Policy)> {
        (
            proptest::collection::vec(arb_revision(4), 0..60),
            proptest::collection::vec((0u32..4, proptest::option::of(1u32..40)), 0..8),
            0u32..12,
            0u32..10,
            any::<bool>(),
        )
            .prop_map(|(revs, refs, keep, days, purge)| {
                // One revision per (family, number).
                let mut seen = BTreeSet::new();
                let revs: Vec<_> = revs
                    .into_iter()
                    .filter(|r| seen.insert(r.id.clone()))
                    .collect();
                let mut in_use = InUse::default();
                for (i, (f, n)) in refs.into_iter().enumerate() {
                    in_use.add(
                        TdRef {
                            family: format!("fam{f}"),
                            revision: n,
                        },
                        format!("user{i}"),
                    );
                }
                (revs, in_use, policy(keep, days, purge))
            })
    }

    fn strip_details(revs: &[Revision]) -> Vec<Revision> {
        revs.iter()
            .map(|r| Revision {
                deregistered_at: None,
                findings: None,
                ..r.clone()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn no_revision_in_use_is_ever_touched((revs, in_use, p) in arb_fleet()) {
            let ctxs = contexts(&revs, p.keep_revisions);
            for (id, d) in plan(&revs, &in_use, &p, now()) {
                let ctx = &ctxs[&id.family];
                let used = in_use.pinned.contains_key(&id)
                    || (in_use.latest.contains_key(&id.family) && ctx.latest_active == Some(id.revision));
                prop_assert!(!(used && d.touches()), "{id} in use but {d:?}");
            }
        }

        #[test]
        fn the_newest_keep_revisions_are_never_touched_unless_purged((revs, in_use, p) in arb_fleet()) {
            let plan = plan(&revs, &in_use, &p, now());
            let mut by_family: BTreeMap<&str, Vec<&Revision>> = BTreeMap::new();
            for r in &revs { by_family.entry(&r.id.family).or_default().push(r); }
            for (_, mut rs) in by_family {
                rs.sort_by_key(|r| std::cmp::Reverse(r.id.revision));
                for r in rs.into_iter().take(p.keep_revisions as usize) {
                    let d = plan[&r.id];
                    let purged = p.purge_plaintext
                        && r.findings.as_ref().is_some_and(|f| !f.is_empty())
                        && d.deletes();
                    prop_assert!(!d.touches() || purged, "{} is recent but {d:?}", r.id);
                }
            }
        }

        #[test]
        fn actions_fit_the_status((revs, in_use, p) in arb_fleet()) {
            let plan = plan(&revs, &in_use, &p, now());
            for r in &revs {
                match plan[&r.id] {
                    Deregister | DeregisterThenDelete(_) => prop_assert_eq!(r.status, Active),
                    Delete(_) => prop_assert_eq!(r.status, Inactive),
                    _ => {}
                }
                if let Delete(Why::Expired) = plan[&r.id] {
                    let age = now() - r.deregistered_at.unwrap();
                    prop_assert!(age >= chrono::Duration::days(p.delete_after_days.into()));
                }
                if let Delete(Why::Plaintext) | DeregisterThenDelete(Why::Plaintext) = plan[&r.id] {
                    prop_assert!(p.purge_plaintext);
                }
            }
        }

        #[test]
        fn knowing_less_never_plans_more((revs, in_use, p) in arb_fleet()) {
            let full = plan(&revs, &in_use, &p, now());
            let partial = plan(&strip_details(&revs), &in_use, &p, now());
            for (id, d) in partial {
                let f = full[&id];
                match d {
                    Deregister => prop_assert!(matches!(f, Deregister | DeregisterThenDelete(_)), "{id}: {d:?} → {f:?}"),
                    DeregisterThenDelete(_) => prop_assert!(matches!(f, DeregisterThenDelete(_)), "{id}: {d:?} → {f:?}"),
                    Delete(_) => prop_assert!(matches!(f, Delete(_)), "{id}: {d:?} → {f:?}"),
                    _ => {}
                }
            }
        }

        #[test]
        fn applying_the_plan_leaves_nothing_to_do((revs, in_use, p) in arb_fleet()) {
            let first = plan(&revs, &in_use, &p, now());
            let after: Vec<Revision> = revs
                .iter()
                .filter(|r| !first[&r.id].deletes())
                .map(|r| match first[&r.id] {
                    Deregister => Revision { status: Inactive, deregistered_at: Some(now()), ..r.clone() },
                    _ => r.clone(),
                })
                .collect();
            let second = plan(&after, &in_use, &p, now());
            for (id, d) in second {
                prop_assert!(!d.touches(), "{id}: {d:?} on the second run");
            }
        }
    }
}
