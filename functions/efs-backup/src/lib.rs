//! efs-backup: incremental, browsable, verifiable EFS → S3 backups with point-in-time restore.
//!
//! The handler reads the event ([`Request`]) and the settings ([`settings::Settings`]), then:
//! - `backup` (also any scheduled event): [`backup::run`] walks `SOURCE_DIR`, plans the diff
//!   against the previous snapshot ([`plan::plan_backup`]), uploads new and changed files to
//!   `files/<path>`, writes the manifest last, then `latest`, then applies retention;
//! - `restore`: [`restore::run`] writes a snapshot (or some paths) into a directory;
//! - `list`: the snapshots the retention rule still offers;
//! - `verify`: re-reads a sample of a snapshot's objects and checks their SHA-256;
//! - `prune`: applies the retention rule ([`retention::plan_retention`]) now.

pub mod backup;
pub mod lease;
pub mod manifest;
pub mod plan;
pub mod rds;
pub mod recover;
pub mod recovery;
pub mod restore;
pub mod retention;
pub mod settings;
pub mod store;
pub mod upload;
pub mod verify;
pub mod walk;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use serde_json::Value;
use shared::{Env, Error};

use crate::manifest::{Layout, Manifest};
use crate::settings::Settings;
use crate::store::Store;

/// The clients built once per process (RDS on first use: only recovery points need it).
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub rds: shared::aws::LazyClient<aws_sdk_rds::Client>,
}

/// What an invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Backup {
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        allow_empty: bool,
        #[serde(default)]
        rescan: bool,
    },
    Restore {
        #[serde(default = "latest")]
        snapshot: String,
        target_dir: String,
        #[serde(default)]
        paths: Vec<String>,
        #[serde(default)]
        overwrite: bool,
        #[serde(default)]
        dry_run: bool,
    },
    List {},
    Verify {
        #[serde(default = "latest")]
        snapshot: String,
        #[serde(default = "default_sample")]
        sample: usize,
    },
    Prune {
        #[serde(default)]
        dry_run: bool,
    },
    /// Takes (the next step of) a recovery point: DB snapshot, files snapshot, release.
    #[serde(rename = "recovery-point")]
    RecoveryPoint {},
    /// Restores a recovery point beside the live wiki: a new DB instance, files in a fresh
    /// folder.
    #[serde(rename = "restore-beside")]
    RestoreBeside {
        #[serde(default = "latest")]
        recovery_point: String,
    },
    /// Puts a recovery point back under the live names (`confirm` repeats its id).
    #[serde(rename = "restore-in-place")]
    RestoreInPlace {
        recovery_point: String,
        #[serde(default)]
        confirm: String,
    },
}

fn latest() -> String {
    "latest".into()
}

fn default_sample() -> usize {
    100
}

impl Request {
    /// Parses an event: an action object, or an EventBridge scheduled event (a backup).
    pub fn parse(event: &Value) -> Result<Request, Error> {
        if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
            || event.get("source").and_then(Value::as_str) == Some("aws.scheduler")
        {
            return Ok(Request::Backup {
                dry_run: false,
                allow_empty: false,
                rescan: false,
            });
        }
        if event.get("action").is_none() {
            return Err(Error::InvalidEvent(
                "expected an \"action\" (backup, restore, list, verify, prune, recovery-point, restore-beside, restore-in-place) or a scheduled event"
                    .into(),
            ));
        }
        let req: Request = serde_json::from_value(event.clone())
            .map_err(|e| Error::InvalidEvent(e.to_string()))?;
        if let Request::Restore {
            target_dir, paths, ..
        } = &req
        {
            if !target_dir.starts_with('/') || target_dir.split('/').any(|c| c == "..") {
                return Err(Error::InvalidEvent(
                    "target_dir must be an absolute path without ..".into(),
                ));
            }
            for p in paths {
                let p = p.trim_matches('/');
                if !p.is_empty() && manifest::check_path(p).is_err() {
                    return Err(Error::InvalidEvent(format!("invalid path prefix {p:?}")));
                }
            }
        }
        if let Request::Verify { sample: 0, .. } = req {
            return Err(Error::InvalidEvent("sample must be at least 1".into()));
        }
        Ok(req)
    }
}

/// The instant the invocation must have answered by.
fn deadline_of(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// Handles one invocation.
pub async fn handler(clients: &Clients, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let deadline = deadline_of(event.context.deadline);
    let req = Request::parse(&event.payload)?;
    let settings = Settings::from_env(&Env::from_process())?;
    let store = Store {
        s3: clients.s3.clone(),
        bucket: settings.bucket.clone(),
        layout: Layout {
            prefix: settings.prefix.clone(),
        },
    };
    let out = match req {
        Request::Backup {
            dry_run,
            allow_empty,
            rescan,
        } => {
            let opts = backup::BackupOptions {
                dry_run: dry_run || settings.dry_run,
                allow_empty,
                rescan,
            };
            to_json(Box::pin(backup::run(&store, &settings, deadline, &opts)).await?)
        }
        Request::Restore {
            snapshot,
            target_dir,
            paths,
            overwrite,
            dry_run,
        } => {
            let m = resolve(&store, &settings, &snapshot).await?;
            let req = restore::RestoreRequest {
                target_dir,
                paths,
                overwrite,
                dry_run: dry_run || settings.dry_run,
            };
            let stop_at = backup::stop_time(&settings, deadline);
            to_json(
                Box::pin(restore::run(
                    &store,
                    &m,
                    &req,
                    settings.upload_concurrency,
                    stop_at,
                ))
                .await?,
            )
        }
        Request::List {} => {
            let mut out = to_json(Box::pin(verify::list(&store, &settings)).await?);
            out["recovery_points"] = listed_points(&recover::list_points(&store).await?);
            out
        }
        Request::Verify { snapshot, sample } => {
            let m = resolve(&store, &settings, &snapshot).await?;
            to_json(
                Box::pin(verify::verify(
                    &store,
                    &m,
                    sample,
                    settings.upload_concurrency,
                ))
                .await?,
            )
        }
        Request::Prune { dry_run } => {
            let dry_run = dry_run || settings.dry_run;
            match backup::prune_now(&store, &settings, deadline, dry_run).await? {
                Some(plan) => {
                    let points = match settings.db_instance {
                        Some(_) => Some(
                            recover::prune_points(&store, &settings, clients.rds.get(), dry_run)
                                .await?,
                        ),
                        None => None,
                    };
                    serde_json::json!({
                        "action": "prune",
                        "status": if dry_run { "dry_run" } else { "complete" },
                        "keep": plan.keep,
                        "delete": plan.delete,
                        "recovery_points": points,
                    })
                }
                None => serde_json::json!({"action": "prune", "status": "busy"}),
            }
        }
        Request::RecoveryPoint {} => to_json(
            Box::pin(recover::take(
                &store,
                &settings,
                clients.rds.get(),
                deadline,
            ))
            .await?,
        ),
        Request::RestoreInPlace {
            recovery_point,
            confirm,
        } => {
            if settings.dry_run {
                return Err(Error::Rejected(
                    "a restore in place has no dry run; DRY_RUN is set".into(),
                ));
            }
            to_json(
                Box::pin(recover::restore_in_place(
                    &store,
                    &settings,
                    clients.rds.get(),
                    &recovery_point,
                    &confirm,
                    deadline,
                ))
                .await?,
            )
        }
        Request::RestoreBeside { recovery_point } => {
            let stop_at = backup::stop_time(&settings, deadline);
            to_json(
                Box::pin(recover::restore_beside(
                    &store,
                    &settings,
                    clients.rds.get(),
                    &recovery_point,
                    stop_at,
                ))
                .await?,
            )
        }
    };
    tracing::info!(result = %out, "done");
    Ok(out)
}

/// Recovery points as `list` shows them: id, age in hours, and the three parts.
fn listed_points(points: &[recovery::RecoveryPoint]) -> Value {
    let now = chrono::Utc::now();
    Value::Array(
        points
            .iter()
            .map(|rp| {
                serde_json::json!({
                    "recovery_point": rp.id,
                    "age_hours": (now - rp.created_at).num_minutes() as f64 / 60.0,
                    "db_snapshot": rp.database.snapshot,
                    "database_point": rp.database.point,
                    "files_snapshot": rp.files.as_ref().map(|f| &f.snapshot_id),
                    "config_release": rp.config.as_ref().map(|c| c.release.created_at),
                })
            })
            .collect(),
    )
}

fn to_json<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The manifest of `snapshot` (an id or `latest`), if the retention rule still offers it.
pub async fn resolve(
    store: &Store,
    settings: &Settings,
    snapshot: &str,
) -> Result<Manifest, Error> {
    let id = if snapshot == "latest" {
        store
            .latest()
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no snapshot in s3://{}/{}",
                    store.bucket, store.layout.prefix
                ))
            })?
            .snapshot_id
    } else {
        if manifest::parse_snapshot_id(snapshot).is_none() {
            return Err(Error::InvalidEvent(format!(
                "snapshot must be \"latest\" or an id like 20261129T070000.000Z, not {snapshot:?}"
            )));
        }
        snapshot.to_string()
    };
    let offered = verify::offered(store, settings).await?;
    if !offered.iter().any(|s| s.id == id) {
        return Err(Error::NotFound(format!(
            "snapshot {id} (it may have been pruned, or be older than RETENTION_DAYS)"
        )));
    }
    store
        .manifest(&id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("snapshot {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_actions_and_scheduled_events() {
        let sched = json!({"version":"0","id":"x","detail-type":"Scheduled Event","source":"aws.events","detail":{}});
        assert_eq!(
            Request::parse(&sched).unwrap(),
            Request::Backup {
                dry_run: false,
                allow_empty: false,
                rescan: false
            }
        );
        assert_eq!(
            Request::parse(&json!({"action":"restore","target_dir":"/mnt/wiki/restore"})).unwrap(),
            Request::Restore {
                snapshot: "latest".into(),
                target_dir: "/mnt/wiki/restore".into(),
                paths: vec![],
                overwrite: false,
                dry_run: false
            }
        );
        assert_eq!(
            Request::parse(
                &json!({"action":"verify","snapshot":"20261129T070000.000Z","sample":5})
            )
            .unwrap(),
            Request::Verify {
                snapshot: "20261129T070000.000Z".into(),
                sample: 5
            }
        );
        assert_eq!(
            Request::parse(&json!({"action":"list"})).unwrap(),
            Request::List {}
        );
    }

    #[test]
    fn malformed_events_are_invalid() {
        for e in [
            json!({}),
            json!("backup"),
            json!({"action":"explode"}),
            json!({"action":"restore"}),
            json!({"action":"restore","target_dir":"relative"}),
            json!({"action":"restore","target_dir":"/x/../etc"}),
            json!({"action":"restore","target_dir":"/x","paths":["../etc"]}),
            json!({"action":"verify","sample":0}),
            json!({"action":"backup","dryrun":true}),
        ] {
            let err = Request::parse(&e).unwrap_err();
            assert_eq!(err.error_type(), "InvalidEvent", "{e}: {err}");
        }
    }
}
