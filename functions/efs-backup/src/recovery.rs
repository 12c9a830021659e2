//! Recovery points: the whole wiki at one moment — a DB snapshot of the pages, an efs-backup
//! snapshot of the uploads, and the configuration release in force — written as one object,
//! `<prefix>recovery-points/<id>.json`.
//!
//! The consistency rule: the database point (the DB snapshot's `SnapshotCreateTime`) is not
//! later than the start of the walk that made the files snapshot. MediaWiki stores an upload's
//! file before it writes the row that names it, so every file the restored database references
//! was on disk before the walk began and is in the snapshot (unless it was deleted or moved in
//! the minutes between the two; such a file is then missing from the restore). Taking a point
//! is a sequence of idempotent steps, one per invocation, decided by [`next_step`] (pure) from
//! the pending point and the DB snapshot's state: the Step Functions loop invokes again while
//! the answer is `incomplete`. Which points to prune is [`plan_prune`] (pure): a point lives as
//! long as its files snapshot does, and a point abandoned before it completed is cleaned up.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use shared::release::Release;

/// A recovery point, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPoint {
    /// The time it was started, in snapshot-id form (`20261208T030000.000Z`).
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// `pending` until all three parts are in place, then `complete`.
    pub status: Status,
    pub database: DatabasePoint,
    /// The files snapshot (set once a backup whose walk began after the database point is
    /// complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesPoint>,
    /// The configuration release in force when the point was started (`None`: the config
    /// bucket had no release yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// Whether a recovery point is whole yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Complete,
}

/// The pages: a manual DB snapshot of the wiki's instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabasePoint {
    pub instance: String,
    pub snapshot: String,
    /// The snapshot's `SnapshotCreateTime`: the moment the pages are from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<DateTime<Utc>>,
}

/// The uploads: an efs-backup snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesPoint {
    pub snapshot_id: String,
    /// When the walk that completed the snapshot began (not earlier than the database point).
    pub walk_started_at: DateTime<Utc>,
}

/// The configuration: the release every task booted when the point was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPoint {
    pub bucket: String,
    pub prefix: String,
    pub release: Release,
}

/// The DB snapshot as RDS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSnapshot {
    /// `creating`, `available`, `failed`, … (RDS's `Status`).
    pub status: String,
    pub created: Option<DateTime<Utc>>,
}

/// What the next invocation of `recovery-point` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No point pending: start one (create the DB snapshot, record the release, write it).
    Start,
    /// The DB snapshot has not begun yet (no create time): answer `incomplete`.
    WaitForDatabasePoint,
    /// Run (or resume) a backup; its snapshot counts if its walk began at or after `after`.
    Backup { after: DateTime<Utc> },
    /// Files recorded; the DB snapshot is still being made: answer `incomplete`.
    WaitForDatabase,
    /// Every part is in place: mark the point complete.
    Complete,
    /// The DB snapshot failed or vanished: the pending point is given up (and its snapshot
    /// deleted), with this reason.
    Abandon(String),
}

/// The next step for `pending` (the point being taken, if any), given its DB snapshot.
pub fn next_step(pending: Option<&RecoveryPoint>, db: Option<&DbSnapshot>) -> Step {
    let Some(rp) = pending else {
        return Step::Start;
    };
    let Some(db) = db else {
        return Step::Abandon(format!(
            "DB snapshot {} no longer exists",
            rp.database.snapshot
        ));
    };
    if db.status == "failed" || db.status == "deleting" {
        return Step::Abandon(format!(
            "DB snapshot {} is {}",
            rp.database.snapshot, db.status
        ));
    }
    let Some(point) = db.created.or(rp.database.point) else {
        return Step::WaitForDatabasePoint;
    };
    match &rp.files {
        Some(f) if f.walk_started_at >= point && db.status == "available" => Step::Complete,
        Some(f) if f.walk_started_at >= point => Step::WaitForDatabase,
        _ => Step::Backup { after: point },
    }
}

/// Whether a backup whose walk began at `walk_started_at` may be the files part of a point
/// whose database point is `point`.
pub fn files_qualify(walk_started_at: DateTime<Utc>, point: DateTime<Utc>) -> bool {
    walk_started_at >= point
}

/// The DB snapshot identifier of the point `id` of instance `instance`: letters, digits and
/// single hyphens, as RDS requires (`wiki-db` + `20261208T030000.123Z` →
/// `wiki-db-rp-20261208t030000123z`).
pub fn db_snapshot_name(instance: &str, id: &str) -> String {
    format!("{instance}-rp-{}", compact_id(id))
}

/// A point's id as RDS names take it: lowercase letters and digits
/// (`20261208T030000.123Z` → `20261208t030000123z`).
pub fn compact_id(id: &str) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Recovery points to delete (with their DB snapshots), newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PrunePlan {
    pub keep: Vec<String>,
    pub delete: Vec<String>,
}

/// How long a pending point may wait before it counts as abandoned.
pub const ABANDONED_AFTER: Duration = Duration::days(2);

/// A complete point is kept while the files snapshot it references is kept (`kept_snapshots`);
/// a pending one for [`ABANDONED_AFTER`].
pub fn plan_prune(
    points: &[RecoveryPoint],
    kept_snapshots: &[String],
    now: DateTime<Utc>,
) -> PrunePlan {
    let mut sorted: Vec<&RecoveryPoint> = points.iter().collect();
    sorted.sort_by(|a, b| b.id.cmp(&a.id));
    let mut plan = PrunePlan::default();
    for rp in sorted {
        let keep = match (rp.status, &rp.files) {
            (Status::Complete, Some(f)) => kept_snapshots.contains(&f.snapshot_id),
            (Status::Complete, None) => false,
            (Status::Pending, _) => now - rp.created_at < ABANDONED_AFTER,
        };
        if keep {
            plan.keep.push(rp.id.clone());
        } else {
            plan.delete.push(rp.id.clone());
        }
    }
    plan
}

/// The files snapshots kept recovery points reference: never pruned while they are.
pub fn referenced_snapshots(points: &[RecoveryPoint]) -> Vec<String> {
    points
        .iter()
        .filter(|rp| rp.status == Status::Complete)
        .filter_map(|rp| rp.files.as_ref().map(|f| f.snapshot_id.clone()))
        .collect()
}

/// A restore in place under way: `<prefix>recovery-points/in-place.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InPlace {
    /// The recovery point being put back.
    pub target: String,
    /// The point of the state it replaces (taken first), once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_point: Option<String>,
    /// The name the replaced instance is given (kept for the operator to delete).
    pub replaced_instance: String,
    pub started_at: DateTime<Utc>,
}

/// What a restore in place sees of the instances (their RDS status; `None`: no such instance).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instances {
    /// Under the live name.
    pub live: Option<String>,
    /// Restored beside, under its own name.
    pub beside: Option<String>,
    /// The replaced one, under its new name.
    pub replaced: Option<String>,
}

/// The next step of a restore in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InPlaceStep {
    /// Take a recovery point of the current state first (invoke until complete).
    SafetyPoint,
    /// Restore the point's DB snapshot beside the live instance.
    RestoreBeside,
    /// RDS is busy with an instance (creating, renaming): invoke again in a minute.
    Wait(&'static str),
    /// Rename the live instance to the replaced name.
    RenameLive,
    /// Rename the restored instance to the live name.
    RenameRestored,
    /// Restore the point's files over the live folder (`overwrite`), then hand over to a
    /// rotation, which sets the database users and redeploys the wiki.
    Files,
}

/// The next step, from the state recorded and the instances observed. Renames happen only
/// between available instances, and the live name is given to the restored instance only
/// once the replaced one holds its new name: the live name never points at two instances.
pub fn next_in_place(op: &InPlace, seen: &Instances) -> InPlaceStep {
    let available = |s: &Option<String>| s.as_deref() == Some("available");
    if op.safety_point.is_none() {
        return InPlaceStep::SafetyPoint;
    }
    match (&seen.live, &seen.beside, &seen.replaced) {
        // Done renaming: the restored instance holds the live name.
        (Some(_), None, Some(_)) if available(&seen.live) => InPlaceStep::Files,
        (Some(_), None, Some(_)) => InPlaceStep::Wait("the restored instance under the live name"),
        (Some(_), None, None) => InPlaceStep::RestoreBeside,
        (Some(_), Some(_), None) if available(&seen.live) && available(&seen.beside) => {
            InPlaceStep::RenameLive
        }
        (Some(_), Some(_), _) => InPlaceStep::Wait("the restored instance, or the live one"),
        (None, Some(_), Some(_)) if available(&seen.beside) => InPlaceStep::RenameRestored,
        (None, _, _) => InPlaceStep::Wait("the renames"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn point(id: &str, created: i64, files: Option<(&str, i64)>, status: Status) -> RecoveryPoint {
        RecoveryPoint {
            id: id.into(),
            created_at: at(created),
            status,
            database: DatabasePoint {
                instance: "wiki-db".into(),
                snapshot: db_snapshot_name("wiki-db", id),
                point: None,
            },
            files: files.map(|(s, t)| FilesPoint {
                snapshot_id: s.into(),
                walk_started_at: at(t),
            }),
            config: None,
            completed_at: None,
        }
    }

    fn db(status: &str, created: Option<i64>) -> DbSnapshot {
        DbSnapshot {
            status: status.into(),
            created: created.map(at),
        }
    }

    #[test]
    fn a_point_is_taken_in_order_database_first() {
        assert_eq!(next_step(None, None), Step::Start);
        let rp = point("a", 0, None, Status::Pending);
        assert_eq!(
            next_step(Some(&rp), Some(&db("creating", None))),
            Step::WaitForDatabasePoint
        );
        assert_eq!(
            next_step(Some(&rp), Some(&db("creating", Some(5)))),
            Step::Backup { after: at(5) }
        );
        let with_files = point("a", 0, Some(("s", 6)), Status::Pending);
        assert_eq!(
            next_step(Some(&with_files), Some(&db("creating", Some(5)))),
            Step::WaitForDatabase
        );
        assert_eq!(
            next_step(Some(&with_files), Some(&db("available", Some(5)))),
            Step::Complete
        );
        assert!(matches!(next_step(Some(&rp), None), Step::Abandon(_)));
        assert!(matches!(
            next_step(Some(&rp), Some(&db("failed", Some(5)))),
            Step::Abandon(_)
        ));
    }

    #[test]
    fn db_snapshot_names_are_what_rds_accepts() {
        let n = db_snapshot_name("wikiops-db", "20261208T030000.123Z");
        assert_eq!(n, "wikiops-db-rp-20261208t030000123z");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(!n.contains("--"));
    }

    proptest! {
        /// Whatever the order of events, a point completes only with files walked at or after
        /// its database point, and only once its DB snapshot is available.
        #[test]
        fn a_point_never_completes_with_files_older_than_its_pages(
            created in proptest::option::of(0i64..100),
            recorded in proptest::option::of(0i64..100),
            walk in proptest::option::of(0i64..100),
            status in prop::sample::select(vec!["creating", "available", "failed"]),
        ) {
            let mut rp = point("a", 0, walk.map(|w| ("s", w)), Status::Pending);
            rp.database.point = recorded.map(at);
            let step = next_step(Some(&rp), Some(&db(status, created)));
            if step == Step::Complete {
                let point = created.or(recorded).unwrap();
                prop_assert!(walk.unwrap() >= point);
                prop_assert_eq!(status, "available");
            }
            if let Step::Backup { after } = step {
                prop_assert!(walk.is_none_or(|w| at(w) < after));
            }
        }
    }

    #[test]
    fn points_live_as_long_as_their_files_snapshot_and_abandoned_ones_go() {
        let points = vec![
            point("c", 300, Some(("s3", 301)), Status::Complete),
            point("b", 200, Some(("s2", 201)), Status::Complete),
            point("a", 100, Some(("s1", 101)), Status::Complete),
            point("p", 400, None, Status::Pending),
            point("old", 0, None, Status::Pending),
        ];
        let plan = plan_prune(&points, &["s3".into(), "s2".into()], at(3 * 86_400));
        assert_eq!(plan.keep, ["c", "b"]);
        assert_eq!(plan.delete, ["p", "old", "a"]);
        let plan = plan_prune(&points, &["s3".into()], at(500));
        assert_eq!(plan.keep, ["p", "old", "c"]);
        assert_eq!(referenced_snapshots(&points), ["s3", "s2", "s1"]);
    }

    fn op(safety: bool) -> InPlace {
        InPlace {
            target: "t".into(),
            safety_point: safety.then(|| "s".into()),
            replaced_instance: "wiki-db-old".into(),
            started_at: at(0),
        }
    }

    fn seen(live: Option<&str>, beside: Option<&str>, replaced: Option<&str>) -> Instances {
        Instances {
            live: live.map(str::to_string),
            beside: beside.map(str::to_string),
            replaced: replaced.map(str::to_string),
        }
    }

    #[test]
    fn a_restore_in_place_goes_point_beside_rename_rename_files() {
        let a = Some("available");
        assert_eq!(
            next_in_place(&op(false), &seen(a, None, None)),
            InPlaceStep::SafetyPoint
        );
        let op = op(true);
        assert_eq!(
            next_in_place(&op, &seen(a, None, None)),
            InPlaceStep::RestoreBeside
        );
        assert!(matches!(
            next_in_place(&op, &seen(a, Some("creating"), None)),
            InPlaceStep::Wait(_)
        ));
        assert_eq!(
            next_in_place(&op, &seen(a, a, None)),
            InPlaceStep::RenameLive
        );
        assert!(matches!(
            next_in_place(&op, &seen(Some("renaming"), a, None)),
            InPlaceStep::Wait(_)
        ));
        assert_eq!(
            next_in_place(&op, &seen(None, a, a)),
            InPlaceStep::RenameRestored
        );
        assert!(matches!(
            next_in_place(&op, &seen(Some("renaming"), None, a)),
            InPlaceStep::Wait(_)
        ));
        assert_eq!(next_in_place(&op, &seen(a, None, a)), InPlaceStep::Files);
    }

    proptest! {
        /// The live name is handed over only once nothing else holds it, and the live
        /// instance is renamed only once the restored one is available.
        #[test]
        fn renames_never_leave_the_wiki_without_a_database_to_come_back_to(
            live in proptest::option::of(prop::sample::select(vec!["available", "renaming", "creating"])),
            beside in proptest::option::of(prop::sample::select(vec!["available", "renaming", "creating"])),
            replaced in proptest::option::of(prop::sample::select(vec!["available", "renaming"])),
        ) {
            let s = seen(live, beside, replaced);
            match next_in_place(&op(true), &s) {
                InPlaceStep::RenameLive => {
                    prop_assert_eq!(beside, Some("available"));
                    prop_assert_eq!(replaced, None);
                }
                InPlaceStep::RenameRestored => {
                    prop_assert_eq!(live, None);
                    prop_assert!(replaced.is_some());
                }
                InPlaceStep::Files => prop_assert_eq!(live, Some("available")),
                _ => {}
            }
        }
    }
}
