//! The database side of recovery points: manual DB snapshots of the wiki's instance, and
//! instances restored from them beside it. A thin adapter over the RDS API; the rules are in
//! [`crate::recovery`].

use aws_sdk_rds::Client;
use aws_sdk_rds::error::SdkError;
use shared::Error;

use crate::recovery::DbSnapshot;

/// An instance as RDS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub status: String,
    /// `host:port`, once RDS has one.
    pub endpoint: Option<String>,
    pub class: Option<String>,
    pub subnet_group: Option<String>,
    pub security_groups: Vec<String>,
    pub parameter_group: Option<String>,
}

/// The call's output; `None` when it failed in the one way that is no failure here (`benign`:
/// already exists, not found).
fn unless<T, E, R>(
    r: Result<T, SdkError<E, R>>,
    benign: impl Fn(&E) -> bool,
    op: &'static str,
) -> Result<Option<T>, Error>
where
    E: aws_sdk_rds::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match r {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.as_service_error().is_some_and(benign) => Ok(None),
        Err(e) => Err(Error::aws("RDS", op, e)),
    }
}

/// Starts a manual snapshot of `instance` named `snapshot` (one that exists already is fine).
pub async fn create_snapshot(rds: &Client, instance: &str, snapshot: &str) -> Result<(), Error> {
    let r = rds
        .create_db_snapshot()
        .db_instance_identifier(instance)
        .db_snapshot_identifier(snapshot)
        .send()
        .await;
    unless(
        r,
        |e| e.is_db_snapshot_already_exists_fault(),
        "CreateDBSnapshot",
    )
    .map(drop)
}

/// The snapshot's state; `None` when it does not exist.
pub async fn snapshot(rds: &Client, snapshot: &str) -> Result<Option<DbSnapshot>, Error> {
    let r = rds
        .describe_db_snapshots()
        .db_snapshot_identifier(snapshot)
        .send()
        .await;
    let Some(out) = unless(
        r,
        |e| e.is_db_snapshot_not_found_fault(),
        "DescribeDBSnapshots",
    )?
    else {
        return Ok(None);
    };
    Ok(out.db_snapshots().first().map(|s| DbSnapshot {
        status: s.status().unwrap_or_default().to_string(),
        created: s.snapshot_create_time().and_then(shared::aws::to_utc),
    }))
}

/// Deletes a manual snapshot (one already gone is fine).
pub async fn delete_snapshot(rds: &Client, snapshot: &str) -> Result<(), Error> {
    let r = rds
        .delete_db_snapshot()
        .db_snapshot_identifier(snapshot)
        .send()
        .await;
    unless(
        r,
        |e| e.is_db_snapshot_not_found_fault(),
        "DeleteDBSnapshot",
    )
    .map(drop)
}

/// The instance's state; `None` when it does not exist.
pub async fn instance(rds: &Client, id: &str) -> Result<Option<Instance>, Error> {
    let r = rds
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await;
    let Some(out) = unless(
        r,
        |e| e.is_db_instance_not_found_fault(),
        "DescribeDBInstances",
    )?
    else {
        return Ok(None);
    };
    Ok(out.db_instances().first().map(|i| Instance {
        status: i.db_instance_status().unwrap_or_default().to_string(),
        endpoint: i.endpoint().and_then(|e| {
            e.address()
                .map(|a| format!("{a}:{}", e.port().unwrap_or(3306)))
        }),
        class: i.db_instance_class().map(str::to_string),
        subnet_group: i
            .db_subnet_group()
            .and_then(|g| g.db_subnet_group_name())
            .map(str::to_string),
        security_groups: i
            .vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id().map(str::to_string))
            .collect(),
        parameter_group: i
            .db_parameter_groups()
            .first()
            .and_then(|g| g.db_parameter_group_name())
            .map(str::to_string),
    }))
}

/// Restores `snapshot` as a new instance `id` in the live instance's network, class and
/// parameter group, not publicly accessible (one that exists already is fine).
pub async fn restore_beside(
    rds: &Client,
    id: &str,
    snapshot: &str,
    like: &Instance,
) -> Result<(), Error> {
    let r = rds
        .restore_db_instance_from_db_snapshot()
        .db_instance_identifier(id)
        .db_snapshot_identifier(snapshot)
        .set_db_instance_class(like.class.clone())
        .set_db_subnet_group_name(like.subnet_group.clone())
        .set_vpc_security_group_ids(
            (!like.security_groups.is_empty()).then(|| like.security_groups.clone()),
        )
        .set_db_parameter_group_name(like.parameter_group.clone())
        .publicly_accessible(false)
        .multi_az(false)
        .deletion_protection(false)
        .send()
        .await;
    unless(
        r,
        |e| e.is_db_instance_already_exists_fault(),
        "RestoreDBInstanceFromDBSnapshot",
    )
    .map(drop)
}

/// Renames instance `from` to `to` now (`ApplyImmediately`); RDS answers at once and shows
/// the new name within a minute or two.
pub async fn rename(rds: &Client, from: &str, to: &str) -> Result<(), Error> {
    rds.modify_db_instance()
        .db_instance_identifier(from)
        .new_db_instance_identifier(to)
        .apply_immediately(true)
        .send()
        .await
        .map_err(|e| Error::aws("RDS", "ModifyDBInstance", e))?;
    Ok(())
}
