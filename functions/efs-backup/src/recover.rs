//! The recovery-point actions: `recovery-point` (take one, a step per invocation), listing,
//! pruning with the backups, and `restore-beside`. The adapter around [`crate::recovery`]'s
//! rules: the bucket, RDS ([`crate::rds`]) and the configuration bucket's release pointer.

use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use chrono::Utc;
use serde::Serialize;
use shared::{Error, SettingsError};

use crate::backup::{self, BackupOptions, BackupOutput};
use crate::manifest;
use crate::rds;
use crate::recovery::{
    self, ConfigPoint, DatabasePoint, FilesPoint, InPlace, InPlaceStep, Instances, PrunePlan,
    RecoveryPoint, Status, Step,
};
use crate::restore::{self, RestoreOutput, RestoreRequest};
use crate::settings::Settings;
use crate::store::Store;

/// The answer to `recovery-point`.
#[derive(Debug, Clone, Serialize)]
pub struct TakeOutput {
    pub action: &'static str,
    /// `complete`; `incomplete` (invoke again now: a backup is under way) or `waiting`
    /// (invoke again in a minute: RDS is making the snapshot); `busy` (another run holds the
    /// backup lease).
    pub status: &'static str,
    pub recovery_point: Option<RecoveryPoint>,
    /// What this invocation waited for or did last.
    pub step: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<PrunePlan>,
}

/// The answer to `restore-beside`.
#[derive(Debug, Clone, Serialize)]
pub struct BesideOutput {
    pub action: &'static str,
    /// `complete` once the instance is available and every file is restored; otherwise
    /// `waiting` (invoke again in a minute) or `incomplete` (files remain: invoke again now).
    pub status: &'static str,
    pub recovery_point: String,
    /// The new instance: its identifier, RDS status and endpoint (`host:port`).
    pub db_instance: String,
    pub db_status: String,
    pub db_endpoint: Option<String>,
    /// Where the uploads were restored (a fresh folder on the file system).
    pub files_dir: String,
    pub files: RestoreOutput,
    /// The configuration release to boot the pair with.
    pub config: Option<ConfigPoint>,
}

fn instance_of(settings: &Settings) -> Result<String, Error> {
    settings
        .db_instance
        .clone()
        .ok_or_else(|| Error::Settings(SettingsError::Missing("DB_INSTANCE_ID".into())))
}

/// The `recovery-point` action: takes the next step of the point being taken (starting one if
/// none is), and as many more as finish at once.
pub async fn take(
    store: &Store,
    settings: &Settings,
    rds_client: &aws_sdk_rds::Client,
    deadline: Instant,
) -> Result<TakeOutput, Error> {
    let instance = instance_of(settings)?;
    let mut out = TakeOutput {
        action: "recovery-point",
        status: "waiting",
        recovery_point: None,
        step: "start",
        backup: None,
        pruned: None,
    };
    if settings.dry_run {
        // The step the next invocation would take, and nothing done.
        let (pending, step) = observe_pending(store, rds_client).await?;
        out.status = "dry_run";
        out.step = step_name(&step);
        out.recovery_point = pending;
        return Ok(out);
    }
    // A start, a backup and the completion can all finish in one invocation.
    for _ in 0..4 {
        let (pending, step) = observe_pending(store, rds_client).await?;
        tracing::info!(?step, "recovery point");
        out.step = step_name(&step);
        // The point this invocation joined was finished (or given up) by another one: that
        // was the point asked for, not a reason to start a second.
        if let (Step::Start, Some(joined)) = (&step, &out.recovery_point) {
            let key = store.layout.recovery_point_key(&joined.id);
            out.recovery_point = read_point(store, &key).await?;
            out.status = if out.recovery_point.is_some() {
                "complete"
            } else {
                "waiting"
            };
            out.step = "taken by another invocation";
            return Ok(out);
        }
        out.recovery_point = pending.clone();
        match (step, pending) {
            (Step::Start, _) => start(store, settings, rds_client, &instance).await?,
            (Step::WaitForDatabasePoint | Step::WaitForDatabase, _) => return Ok(out),
            (Step::Backup { after }, Some(mut rp)) => {
                let b = backup::run(store, settings, deadline, &BackupOptions::default()).await?;
                let done = matches!(b.status, "complete" | "partial");
                let qualifies = b
                    .walk_started_at
                    .is_some_and(|w| recovery::files_qualify(w, after));
                if done && qualifies {
                    rp.database.point = Some(after);
                    rp.files = b.walk_started_at.map(|w| FilesPoint {
                        snapshot_id: b.snapshot_id.clone(),
                        walk_started_at: w,
                    });
                    put_point(store, &store.layout.pending_point_key(), &rp).await?;
                }
                if !done {
                    out.status = b.status;
                    out.backup = Some(b);
                    return Ok(out);
                }
                out.backup = Some(b);
            }
            (Step::Complete, Some(mut rp)) => {
                rp.status = Status::Complete;
                rp.completed_at = Some(Utc::now());
                put_point(store, &store.layout.recovery_point_key(&rp.id), &rp).await?;
                store.delete(&store.layout.pending_point_key()).await?;
                metrics::counter!("RecoveryPointsTaken").increment(1);
                tracing::info!(id = %rp.id, "recovery point complete");
                out.status = "complete";
                out.recovery_point = Some(rp);
                out.pruned = Some(prune_points(store, settings, rds_client, false).await?);
                return Ok(out);
            }
            (Step::Abandon(reason), Some(rp)) => {
                rds::delete_snapshot(rds_client, &rp.database.snapshot).await?;
                store.delete(&store.layout.pending_point_key()).await?;
                metrics::counter!("RecoveryPointsAbandoned").increment(1);
                return Err(Error::Rejected(format!(
                    "recovery point {} given up: {reason}; the next invocation starts a new one",
                    rp.id
                )));
            }
            (_, None) => return Ok(out),
        }
    }
    Ok(out)
}

/// The point being taken, if any, and the next step for it (RDS's view of its snapshot).
async fn observe_pending(
    store: &Store,
    rds_client: &aws_sdk_rds::Client,
) -> Result<(Option<RecoveryPoint>, Step), Error> {
    let pending = read_point(store, &store.layout.pending_point_key()).await?;
    let db = match &pending {
        Some(rp) => rds::snapshot(rds_client, &rp.database.snapshot).await?,
        None => None,
    };
    let step = recovery::next_step(pending.as_ref(), db.as_ref());
    Ok((pending, step))
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Start => "start",
        Step::WaitForDatabasePoint => "database snapshot starting",
        Step::Backup { .. } => "files",
        Step::WaitForDatabase => "database snapshot",
        Step::Complete => "complete",
        Step::Abandon(_) => "abandon",
    }
}

/// Starts a point: records the release in force, claims `pending.json` (one point at a time),
/// then asks RDS for the snapshot.
async fn start(
    store: &Store,
    settings: &Settings,
    rds_client: &aws_sdk_rds::Client,
    instance: &str,
) -> Result<(), Error> {
    let now = Utc::now();
    let id = manifest::snapshot_id(now);
    let rp = RecoveryPoint {
        database: DatabasePoint {
            instance: instance.to_string(),
            snapshot: recovery::db_snapshot_name(instance, &id),
            point: None,
        },
        id,
        created_at: now,
        status: Status::Pending,
        files: None,
        config: release_in_force(store, settings).await?,
        completed_at: None,
    };
    if !create_json(store, &store.layout.pending_point_key(), &rp).await? {
        // Another invocation started one meanwhile: it is the point being taken.
        return Ok(());
    }
    rds::create_snapshot(rds_client, instance, &rp.database.snapshot).await
}

/// The configuration release every task boots now (`None` without `CONFIG_BUCKET`, or before
/// the first release): the pointer, or the last version of a deleted one (`shared::release`).
async fn release_in_force(
    store: &Store,
    settings: &Settings,
) -> Result<Option<ConfigPoint>, Error> {
    let Some(bucket) = &settings.config_bucket else {
        return Ok(None);
    };
    let current = shared::release::read_pointer(&store.s3, bucket, &settings.config_prefix).await?;
    Ok(current.into_pointer().map(|p| ConfigPoint {
        bucket: bucket.clone(),
        prefix: settings.config_prefix.clone(),
        release: p.release,
    }))
}

async fn read_point(store: &Store, key: &str) -> Result<Option<RecoveryPoint>, Error> {
    let Some(bytes) = store.get(key, None).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Rejected(format!("{key} is not a recovery point: {e}")))
}

async fn put_point(store: &Store, key: &str, rp: &RecoveryPoint) -> Result<(), Error> {
    put_json(store, key, rp).await
}

/// Every complete recovery point, newest first.
pub async fn list_points(store: &Store) -> Result<Vec<RecoveryPoint>, Error> {
    let mut keys = Vec::new();
    let mut pages = store
        .s3
        .list_objects_v2()
        .bucket(&store.bucket)
        .prefix(store.layout.recovery_points_prefix())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Error::aws("S3", "ListObjectsV2", e))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key())
                .filter(|k| {
                    k.strip_prefix(&store.layout.recovery_points_prefix())
                        .and_then(|n| n.strip_suffix(".json"))
                        .is_some_and(|id| manifest::parse_snapshot_id(id).is_some())
                })
                .map(str::to_string),
        );
    }
    let mut points = Vec::new();
    for k in keys {
        if let Some(rp) = read_point(store, &k).await? {
            points.push(rp);
        }
    }
    points.sort_by(|a, b| b.id.cmp(&a.id));
    Ok(points)
}

/// Deletes the recovery points whose files snapshot the retention rule no longer keeps, DB
/// snapshot first (so none is ever orphaned), and a pending point abandoned for two days.
pub async fn prune_points(
    store: &Store,
    settings: &Settings,
    rds_client: &aws_sdk_rds::Client,
    dry_run: bool,
) -> Result<PrunePlan, Error> {
    let mut points = list_points(store).await?;
    let pending = read_point(store, &store.layout.pending_point_key()).await?;
    points.extend(pending.clone());
    let kept: Vec<String> = crate::verify::offered(store, settings)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let plan = recovery::plan_prune(&points, &kept, Utc::now());
    if dry_run {
        return Ok(plan);
    }
    for id in &plan.delete {
        let Some(rp) = points.iter().find(|p| &p.id == id) else {
            continue;
        };
        rds::delete_snapshot(rds_client, &rp.database.snapshot).await?;
        let key = if rp.status == Status::Pending {
            store.layout.pending_point_key()
        } else {
            store.layout.recovery_point_key(id)
        };
        store.delete(&key).await?;
        tracing::info!(id, snapshot = %rp.database.snapshot, "recovery point pruned");
    }
    metrics::counter!("RecoveryPointsPruned").increment(plan.delete.len() as u64);
    Ok(plan)
}

/// The recovery point `id` (`latest`: the newest complete one).
pub async fn point(store: &Store, id: &str) -> Result<RecoveryPoint, Error> {
    if id == "latest" {
        return list_points(store)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound("no recovery point has been taken".into()));
    }
    if manifest::parse_snapshot_id(id).is_none() {
        return Err(Error::InvalidEvent(format!(
            "recovery_point must be \"latest\" or an id like 20261208T030000.000Z, not {id:?}"
        )));
    }
    read_point(store, &store.layout.recovery_point_key(id))
        .await?
        .ok_or_else(|| Error::NotFound(format!("recovery point {id}")))
}

/// The identifier of the instance restored beside `instance` from point `id` (RDS allows 63
/// characters: letters, digits, single hyphens).
pub fn beside_instance(instance: &str, id: &str) -> String {
    derived_instance(instance, "rp", id)
}

/// `<instance>-<tag><compact id>`, the instance's name cut so the whole fits RDS's 63
/// characters.
fn derived_instance(instance: &str, tag: &str, id: &str) -> String {
    let suffix = format!("{tag}{}", recovery::compact_id(id));
    let room = 63 - suffix.len() - 1;
    let head: String = instance.chars().take(room).collect();
    format!("{}-{suffix}", head.trim_end_matches('-'))
}

/// The `restore-beside` action: a new instance from the point's DB snapshot and its files in
/// `<SOURCE_DIR>/.efs-restore/<id>`, the live wiki untouched. Resumable: invoke again until
/// `complete`.
pub async fn restore_beside(
    store: &Store,
    settings: &Settings,
    rds_client: &aws_sdk_rds::Client,
    id: &str,
    stop_at: Instant,
) -> Result<BesideOutput, Error> {
    let rp = point(store, id).await?;
    let files = rp.files.clone().ok_or_else(|| {
        Error::Rejected(format!("recovery point {} has no files snapshot", rp.id))
    })?;
    let beside = beside_instance(&rp.database.instance, &rp.id);
    if !settings.dry_run && rds::instance(rds_client, &beside).await?.is_none() {
        let live = rds::instance(rds_client, &rp.database.instance)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("DB instance {} (the wiki's)", rp.database.instance))
            })?;
        if rds::snapshot(rds_client, &rp.database.snapshot)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!(
                "DB snapshot {} of recovery point {}",
                rp.database.snapshot, rp.id
            )));
        }
        rds::restore_beside(rds_client, &beside, &rp.database.snapshot, &live).await?;
    }
    let files_dir = format!("{}/.efs-restore/{}", settings.source_dir, rp.id);
    let restored = restore_files(
        store,
        settings,
        &files.snapshot_id,
        &files_dir,
        false,
        stop_at,
    )
    .await?;
    let db = rds::instance(rds_client, &beside).await?;
    let db_status = db.as_ref().map(|i| i.status.clone()).unwrap_or_default();
    let status = match (restored.status, db_status.as_str()) {
        ("dry_run", _) => "dry_run",
        ("complete", "available") => "complete",
        ("complete", _) => "waiting",
        _ => "incomplete",
    };
    Ok(BesideOutput {
        action: "restore-beside",
        status,
        recovery_point: rp.id,
        db_instance: beside,
        db_status,
        db_endpoint: db.and_then(|i| i.endpoint),
        files_dir,
        files: restored,
        config: rp.config,
    })
}

/// The answer to `restore-in-place`.
#[derive(Debug, Clone, Serialize)]
pub struct InPlaceOutput {
    pub action: &'static str,
    /// `complete`; `waiting` (invoke again in a minute: RDS is creating or renaming an
    /// instance, or making the safety point's snapshot); `incomplete` (invoke again now).
    pub status: &'static str,
    pub recovery_point: String,
    /// The point of the replaced state, taken first.
    pub safety_point: Option<String>,
    /// The replaced instance's new name (kept: delete it once the restore is checked).
    pub replaced_instance: String,
    /// What this invocation did last or waits for.
    pub step: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<RestoreOutput>,
    /// What is left for the operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The `restore-in-place` action: the point `id` put back under the live names, one step per
/// invocation where RDS must be waited for ([`recovery::next_in_place`]). `confirm` must repeat
/// the point's id. First a recovery point of the current state; then the point's DB snapshot
/// restored beside; the live instance renamed away; the restored one renamed to the live name
/// (same endpoint); the point's files restored over the live folder with `overwrite`.
pub async fn restore_in_place(
    store: &Store,
    settings: &Settings,
    rds_client: &aws_sdk_rds::Client,
    id: &str,
    confirm: &str,
    deadline: Instant,
) -> Result<InPlaceOutput, Error> {
    let live = instance_of(settings)?;
    let key = store.layout.in_place_key();
    let mut op = match read_in_place(store, &key).await? {
        Some(op) if op.target != id && id != "latest" => {
            return Err(Error::Rejected(format!(
                "a restore in place of recovery point {} is under way ({key}); finish it first",
                op.target
            )));
        }
        Some(op) => op,
        None => {
            let target = point(store, id).await?;
            if confirm != target.id {
                return Err(Error::InvalidEvent(format!(
                    "a restore in place replaces the live database and files: send \"confirm\":\"{}\"",
                    target.id
                )));
            }
            let now = Utc::now();
            let op = InPlace {
                target: target.id,
                safety_point: None,
                replaced_instance: derived_instance(&live, "old", &manifest::snapshot_id(now)),
                started_at: now,
            };
            // One restore in place at a time: two invocations at once start it once.
            if !create_json(store, &key, &op).await? {
                return Err(Error::Rejected(format!(
                    "another invocation started a restore in place meanwhile ({key}); invoke again to follow it"
                )));
            }
            op
        }
    };
    let target = point(store, &op.target).await?;
    let files = target.files.clone().ok_or_else(|| {
        Error::Rejected(format!(
            "recovery point {} has no files snapshot",
            target.id
        ))
    })?;
    let beside = beside_instance(&live, &target.id);
    let mut out = InPlaceOutput {
        action: "restore-in-place",
        status: "waiting",
        recovery_point: target.id.clone(),
        safety_point: op.safety_point.clone(),
        replaced_instance: op.replaced_instance.clone(),
        step: "start",
        files: None,
        next: None,
    };
    for _ in 0..8 {
        let status = |i: Option<rds::Instance>| i.map(|i| i.status);
        let seen = Instances {
            live: status(rds::instance(rds_client, &live).await?),
            beside: status(rds::instance(rds_client, &beside).await?),
            replaced: status(rds::instance(rds_client, &op.replaced_instance).await?),
        };
        let step = recovery::next_in_place(&op, &seen);
        tracing::info!(?step, ?seen, "restore in place");
        match step {
            InPlaceStep::SafetyPoint => {
                out.step = "recovery point of the current state";
                let taken = Box::pin(take(store, settings, rds_client, deadline)).await?;
                let Some(rp) = taken.recovery_point.filter(|_| taken.status == "complete") else {
                    out.status = taken.status;
                    return Ok(out);
                };
                op.safety_point = Some(rp.id);
                out.safety_point = op.safety_point.clone();
                put_json(store, &key, &op).await?;
            }
            InPlaceStep::RestoreBeside => {
                out.step = "restore beside";
                let like = rds::instance(rds_client, &live)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("DB instance {live}")))?;
                rds::restore_beside(rds_client, &beside, &target.database.snapshot, &like).await?;
            }
            InPlaceStep::Wait(what) => {
                out.step = what;
                return Ok(out);
            }
            InPlaceStep::RenameLive => {
                out.step = "rename the live instance away";
                rds::rename(rds_client, &live, &op.replaced_instance).await?;
            }
            InPlaceStep::RenameRestored => {
                out.step = "rename the restored instance to the live name";
                rds::rename(rds_client, &beside, &live).await?;
            }
            InPlaceStep::Files => {
                out.step = "files";
                let restored = restore_files(
                    store,
                    settings,
                    &files.snapshot_id,
                    &settings.source_dir,
                    true,
                    backup::stop_time(settings, deadline),
                )
                .await?;
                out.status = if restored.status == "complete" {
                    store.delete(&key).await?;
                    metrics::counter!("RestoresInPlace").increment(1);
                    out.next = Some(format!(
                        "rotate the database secret now (aws secretsmanager rotate-secret): it sets the wiki's database user on the restored instance and redeploys the wiki; delete the replaced instance {} once the wiki is checked",
                        op.replaced_instance
                    ));
                    "complete"
                } else {
                    "incomplete"
                };
                out.files = Some(restored);
                return Ok(out);
            }
        }
    }
    Ok(out)
}

async fn read_in_place(store: &Store, key: &str) -> Result<Option<InPlace>, Error> {
    let Some(bytes) = store.get(key, None).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Rejected(format!("{key} is not a restore in place: {e}")))
}

async fn put_json<T: Serialize>(store: &Store, key: &str, v: &T) -> Result<(), Error> {
    let body = serde_json::to_vec_pretty(v).map_err(|e| Error::Partial(format!("{key}: {e}")))?;
    store.put(key, body, "application/json").await?;
    Ok(())
}

/// Writes `v` at `key` only if nothing is there (`If-None-Match: *`): `false` when another
/// invocation wrote it first.
async fn create_json<T: Serialize>(store: &Store, key: &str, v: &T) -> Result<bool, Error> {
    let body = serde_json::to_vec_pretty(v).map_err(|e| Error::Partial(format!("{key}: {e}")))?;
    let put = store
        .s3
        .put_object()
        .bucket(&store.bucket)
        .key(key)
        .content_type("application/json")
        .if_none_match("*")
        .body(ByteStream::from(body))
        .send()
        .await;
    match put {
        Ok(_) => Ok(true),
        Err(e) if shared::lease::precondition_failed(&e) => Ok(false),
        Err(e) => Err(Error::aws("S3", "PutObject", e)),
    }
}

/// Restores files snapshot `snapshot` under `target_dir` (resumable: what is in place counts).
async fn restore_files(
    store: &Store,
    settings: &Settings,
    snapshot: &str,
    target_dir: &str,
    overwrite: bool,
    stop_at: Instant,
) -> Result<RestoreOutput, Error> {
    let manifest = crate::resolve(store, settings, snapshot).await?;
    let req = RestoreRequest {
        target_dir: target_dir.to_string(),
        paths: Vec::new(),
        overwrite,
        dry_run: settings.dry_run,
    };
    Box::pin(restore::run(
        store,
        &manifest,
        &req,
        settings.upload_concurrency,
        stop_at,
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_beside_has_a_name_rds_accepts() {
        let id = "20261208T030000.123Z";
        assert_eq!(
            beside_instance("wikiops-db", id),
            "wikiops-db-rp20261208t030000123z"
        );
        let long = beside_instance(&"a-".repeat(40), id);
        assert!(long.len() <= 63, "{long}");
        assert!(!long.contains("--"), "{long}");
        assert!(long.ends_with("rp20261208t030000123z"));
        let live = format!("wiki-{}", "0123abcd-".repeat(4));
        let old = derived_instance(&live, "old", id);
        assert!(
            old.len() <= 63 && old.ends_with("-old20261208t030000123z"),
            "{old}"
        );
    }
}
