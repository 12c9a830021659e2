//! Which snapshots to keep, paired with the bucket's lifecycle rule.
//!
//! The template expires noncurrent versions `RETENTION_DAYS + 1` days after they become
//! noncurrent. Only this function writes `files/…`, and a snapshot only references versions
//! that were current when it completed, so a version referenced by snapshot S became
//! noncurrent no earlier than S was taken: it cannot expire before S is
//! `RETENTION_DAYS + 1` days old. Hence a snapshot is kept only if it is among the newest
//! `KEEP_SNAPSHOTS` **and** younger than `RETENTION_DAYS` days, except the newest complete
//! snapshot, which is always kept (its versions are all current). Ids are start times, but
//! `latest` follows the order runs finished in: a run started on a skewed clock can finish
//! last with an id older than another's. So the snapshots named in `protect` (the one `latest`
//! names, those a kept recovery point references) are kept too, whatever their rank or age.
//!
//! The same rule decides which snapshots `list`, `restore` and `verify` offer, so a snapshot
//! that outlived `RETENTION_DAYS` because backups stopped running is never used after its
//! versions may have expired.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// A complete snapshot, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    pub id: String,
    pub created_at: DateTime<Utc>,
}

/// Snapshots to keep and to delete, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RetentionPlan {
    pub keep: Vec<String>,
    pub delete: Vec<String>,
}

/// Applies the retention rule at time `now`.
pub fn plan_retention(
    snapshots: &[SnapshotRef],
    keep_snapshots: usize,
    retention_days: u32,
    now: DateTime<Utc>,
    protect: &[&str],
) -> RetentionPlan {
    let mut sorted: Vec<&SnapshotRef> = snapshots.iter().collect();
    sorted.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let max_age = Duration::days(i64::from(retention_days));
    let mut plan = RetentionPlan::default();
    for (rank, s) in sorted.into_iter().enumerate() {
        let young = now.signed_duration_since(s.created_at) < max_age;
        if rank == 0 || (rank < keep_snapshots && young) || protect.contains(&s.id.as_str()) {
            plan.keep.push(s.id.clone());
        } else {
            plan.delete.push(s.id.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn at(day: f64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + (day * 86_400.0) as i64, 0).unwrap()
    }

    fn snaps(days: &[f64]) -> Vec<SnapshotRef> {
        days.iter()
            .map(|d| SnapshotRef {
                id: format!("s{d}"),
                created_at: at(*d),
            })
            .collect()
    }

    #[test]
    fn keeps_newest_n_within_the_age_limit() {
        let s = snaps(&[0.0, 1.0, 2.0, 3.0, 4.0]);
        let p = plan_retention(&s, 3, 30, at(4.5), &[]);
        assert_eq!(p.keep, ["s4", "s3", "s2"]);
        assert_eq!(p.delete, ["s1", "s0"]);
        // Age limit: only snapshots younger than 2 days (plus the newest).
        let p = plan_retention(&s, 10, 2, at(4.5), &[]);
        assert_eq!(p.keep, ["s4", "s3"]);
    }

    #[test]
    fn newest_is_kept_however_old() {
        let s = snaps(&[0.0, 1.0]);
        let p = plan_retention(&s, 5, 7, at(100.0), &[]);
        assert_eq!(p.keep, ["s1"]);
        assert_eq!(p.delete, ["s0"]);
        assert_eq!(
            plan_retention(&[], 1, 1, at(0.0), &[]),
            RetentionPlan::default()
        );
    }

    #[test]
    fn the_snapshot_latest_names_is_kept_when_a_skewed_clock_gave_it_an_older_id() {
        // s2 was started on a clock running ahead; s1's run finished last and `latest` names it.
        let s = snaps(&[1.0, 2.0]);
        let p = plan_retention(&s, 1, 30, at(2.5), &["s1"]);
        assert_eq!(p.keep, ["s2", "s1"]);
        assert!(p.delete.is_empty());
    }

    proptest! {
        #[test]
        fn a_protected_snapshot_is_never_deleted(
            days in prop::collection::vec(0.0f64..100.0, 1..12),
            pick in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
            keep in 1usize..5,
            retention in 1u32..40,
            now in 0.0f64..200.0,
        ) {
            let s = snaps(&days);
            let protect: Vec<&str> = pick.iter().map(|i| s[i.index(s.len())].id.as_str()).collect();
            let p = plan_retention(&s, keep, retention, at(now), &protect);
            for id in &protect {
                prop_assert!(p.keep.iter().any(|k| k == id), "{} deleted", id);
            }
            prop_assert_eq!(p.keep.len() + p.delete.len(), s.len());
        }
    }

    /// A model of the bucket: versions per path, each with the time it became noncurrent.
    #[derive(Default)]
    struct Bucket {
        next: u64,
        /// path → versions (id, noncurrent_since), current one last with `None`.
        versions: BTreeMap<u32, Vec<(u64, Option<f64>)>>,
    }

    impl Bucket {
        fn put(&mut self, path: u32, now: f64) -> u64 {
            self.next += 1;
            let v = self.versions.entry(path).or_default();
            if let Some(last) = v.last_mut() {
                last.1.get_or_insert(now);
            }
            v.push((self.next, None));
            self.next
        }
        fn delete_marker(&mut self, path: u32, now: f64) {
            if let Some(last) = self.versions.get_mut(&path).and_then(|v| v.last_mut()) {
                last.1.get_or_insert(now);
            }
        }
        /// The lifecycle rule: noncurrent versions expire `days + 1` days after.
        fn expire(&mut self, now: f64, days: u32) {
            for v in self.versions.values_mut() {
                v.retain(|(_, since)| since.is_none_or(|s| now < s + days as f64 + 1.0));
            }
        }
        fn exists(&self, version: u64) -> bool {
            self.versions.values().flatten().any(|(v, _)| *v == version)
        }
    }

    proptest! {
        /// Runs of backups at random times, with random changes between them, retention after
        /// each run and the lifecycle rule applied continuously: no kept snapshot ever
        /// references an expired version.
        #[test]
        fn lifecycle_never_orphans_a_kept_snapshot(
            keep in 1usize..6,
            days in 1u32..6,
            runs in prop::collection::vec(
                (0.01f64..4.0, prop::collection::vec((0u32..6, any::<bool>()), 0..5)),
                1..25),
        ) {
            let mut bucket = Bucket::default();
            let mut tree: BTreeMap<u32, u64> = BTreeMap::new(); // path → current content version
            let mut live: BTreeSet<u32> = BTreeSet::new();
            let mut manifests: BTreeMap<String, (DateTime<Utc>, Vec<u64>)> = BTreeMap::new();
            let mut now = 0.0;
            for (i, (gap, changes)) in runs.into_iter().enumerate() {
                now += gap;
                bucket.expire(now, days);
                // The run: upload changed files, delete-mark removed ones.
                for (path, keep_file) in changes {
                    if keep_file {
                        tree.insert(path, bucket.put(path, now));
                        live.insert(path);
                    } else if live.remove(&path) {
                        tree.remove(&path);
                        bucket.delete_marker(path, now);
                    }
                }
                let id = format!("{i:04}");
                manifests.insert(id, (at(now), tree.values().copied().collect()));
                let refs: Vec<SnapshotRef> = manifests.iter()
                    .map(|(id, (t, _))| SnapshotRef { id: id.clone(), created_at: *t })
                    .collect();
                let plan = plan_retention(&refs, keep, days, at(now), &[]);
                for d in plan.delete {
                    manifests.remove(&d);
                }
                prop_assert!(manifests.len() <= keep);
                // Until the next run nothing is written; at any time T the snapshots the rule
                // still offers (list, restore and verify apply it too) must be whole.
                for later in [0.0, 0.5, 1.0, days as f64, days as f64 + 1.5, 3.0 * days as f64] {
                    let t = now + later;
                    let mut b = Bucket { next: bucket.next, versions: bucket.versions.clone() };
                    b.expire(t, days);
                    let refs: Vec<SnapshotRef> = manifests.iter()
                        .map(|(id, (c, _))| SnapshotRef { id: id.clone(), created_at: *c })
                        .collect();
                    for id in plan_retention(&refs, keep, days, at(t), &[]).keep {
                        for v in &manifests[&id].1 {
                            prop_assert!(b.exists(*v), "snapshot {} lost version {} at {}", id, v, t);
                        }
                    }
                }
            }
        }
    }
}
