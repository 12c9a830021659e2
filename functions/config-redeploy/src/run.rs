//! Ties the planners to the adapter: observe, plan, apply (or only print in a dry run).

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use shared::Error;
use shared::ecs;

use crate::event::{DeploymentEvent, ObjectEvent, Trigger};
use crate::ledger::{Kind, Ledger, Rolled};
use crate::plan::{self, Coverage, Observed, Skipped, TargetPlan};
use crate::rollback::{self, Action, KeyPlan};
use crate::settings::{Settings, Target};
use crate::summary::{Failure, Redeployed, Rejected, RolledBack, Summary};
use crate::{Clients, apply, lease, observe};

/// Runs one trigger to completion and reports it.
pub async fn process(
    clients: &Clients,
    settings: &Settings,
    trigger: Trigger,
) -> Result<Summary, Error> {
    let mut summary = Summary {
        dry_run: settings.dry_run,
        ..Summary::default()
    };
    let mut errors = Vec::new();
    match trigger {
        Trigger::S3Test => summary.skipped.push(Skipped {
            key: None,
            deployment_id: None,
            reason: "S3 test event".into(),
        }),
        Trigger::Objects(events) => {
            let routed = plan::route(&events, settings);
            summary.skipped.extend(routed.skipped);
            for (target, events) in &routed.work {
                if let Err(e) = changes(clients, settings, target, events, &mut summary).await {
                    failed(&mut summary, &mut errors, target, e);
                }
            }
        }
        Trigger::Deployment(d) => {
            let target = settings
                .target_for_service(d.cluster.as_deref(), &d.service)
                .cloned();
            if let Err(e) = deployment(clients, settings, target.as_ref(), &d, &mut summary).await {
                let t = target.unwrap_or(Target {
                    cluster: d.cluster.clone().unwrap_or_default(),
                    service: d.service.clone(),
                });
                failed(&mut summary, &mut errors, &t, e);
            }
        }
    }
    summary.record_metrics();
    finish(summary, errors)
}

fn failed(summary: &mut Summary, errors: &mut Vec<Error>, target: &Target, e: Error) {
    tracing::error!(cluster = target.cluster, service = target.service, error_type = e.error_type(), error = %e, "service failed");
    summary.errors.push(Failure {
        cluster: target.cluster.clone(),
        service: target.service.clone(),
        error_type: e.error_type().to_string(),
        message: e.to_string(),
    });
    errors.push(e);
}

fn finish(summary: Summary, mut errors: Vec<Error>) -> Result<Summary, Error> {
    let json = serde_json::to_string(&summary).unwrap_or_default();
    if errors.is_empty() {
        tracing::info!(summary = %json, "done");
        return Ok(summary);
    }
    tracing::error!(summary = %json, "done with errors");
    if errors.len() == 1 && summary.redeployed.is_empty() && summary.rolled_back.is_empty() {
        return Err(errors.remove(0));
    }
    let list: Vec<String> = summary
        .errors
        .iter()
        .map(|f| format!("{}/{}: {}", f.cluster, f.service, f.message))
        .collect();
    Err(Error::Partial(format!(
        "{} service(s) failed ({}); redeployed {}, rolled back {}",
        list.len(),
        list.join("; "),
        summary.redeployed.len(),
        summary.rolled_back.len()
    )))
}

/// Configuration changes for one service: observe, plan, apply.
async fn changes(
    clients: &Clients,
    settings: &Settings,
    target: &Target,
    events: &[ObjectEvent],
    summary: &mut Summary,
) -> Result<(), Error> {
    let (s3, bucket) = (&clients.s3, settings.bucket.as_str());
    let lease_key = lease::key(settings.home_of(target), target);
    let holder = holder_id();
    let give_up = Instant::now() + LEASE_WAIT;
    loop {
        let service = ecs::describe(&clients.ecs, &target.cluster, &target.service).await?;
        // Duplicates usually end here, after one DescribeServices.
        if let Some(plan) = plan::plan_from_deployments(events, &service) {
            return apply_changes(clients, settings, target, events, plan, summary).await;
        }
        if settings.dry_run {
            let plan = observe_and_plan(clients, settings, target, events, service).await?;
            return apply_changes(clients, settings, target, events, plan, summary).await;
        }
        let Some(held) = lease::acquire(s3, bucket, &lease_key, &holder).await? else {
            if Instant::now() >= give_up {
                return Err(Error::Unreachable(format!(
                    "{target} stayed leased by another invocation for {}s ({lease_key})",
                    LEASE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(LEASE_POLL).await;
            continue;
        };
        // Under the lease the service may have moved on while we waited: read it again.
        let result = async {
            let service = ecs::describe(&clients.ecs, &target.cluster, &target.service).await?;
            let plan = match plan::plan_from_deployments(events, &service) {
                Some(plan) => plan,
                None => observe_and_plan(clients, settings, target, events, service).await?,
            };
            apply_changes(clients, settings, target, events, plan, &mut *summary).await
        }
        .await;
        lease::release(s3, bucket, held).await;
        return result;
    }
}

/// How long an invocation waits for another one's lease on the same service.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
const LEASE_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Who holds a lease: this process and the moment it asked.
fn holder_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}

/// Reports a plan, and carries out a redeploy (unless dry run).
async fn apply_changes(
    clients: &Clients,
    settings: &Settings,
    target: &Target,
    events: &[ObjectEvent],
    plan: TargetPlan,
    summary: &mut Summary,
) -> Result<(), Error> {
    let (s3, bucket) = (&clients.s3, settings.bucket.as_str());
    let plan_json = serde_json::to_string(&plan).unwrap_or_default();
    tracing::info!(cluster = target.cluster, service = target.service, plan = %plan_json, dry_run = settings.dry_run, "plan");
    let keys: Vec<String> = events.iter().map(|e| e.key.clone()).collect();

    match plan {
        TargetPlan::Unavailable { status } => Err(Error::NotFound(format!(
            "ECS service {} in cluster {} is {status}",
            target.service, target.cluster
        ))),
        TargetPlan::Rejected { rejections } => {
            for r in &rejections {
                tracing::error!(cluster = target.cluster, service = target.service, key = r.key, problem = %r.problem, "configuration refused; service left untouched");
                summary.rejected.push(Rejected {
                    cluster: target.cluster.clone(),
                    service: target.service.clone(),
                    key: r.key.clone(),
                    reason: r.problem.to_string(),
                });
            }
            for k in &keys {
                summary.skipped.push(Skipped::key(
                    k,
                    format!("not rolled out: {target} has a refused configuration object"),
                ));
            }
            Ok(())
        }
        TargetPlan::Covered {
            deployment_id,
            coverage,
        } => {
            let why = match coverage {
                Coverage::StartedAfter => "started after the change",
                Coverage::SameObjects => "carries the same objects",
            };
            for k in &keys {
                summary.skipped.push(Skipped::key(
                    k,
                    format!("already rolling out: deployment {deployment_id} {why}"),
                ));
            }
            Ok(())
        }
        TargetPlan::Redeploy { changes, snapshot } => {
            let deployment_id = if settings.dry_run {
                None
            } else {
                let id = ecs::force_new_deployment(&clients.ecs, &target.cluster, &target.service)
                    .await?;
                tracing::info!(
                    cluster = target.cluster,
                    service = target.service,
                    deployment_id = id,
                    "new deployment started"
                );
                let ledger = Ledger {
                    kind: Kind::Config,
                    cluster: target.cluster.clone(),
                    service: target.service.clone(),
                    deployment_id: id.clone(),
                    started_at: Utc::now(),
                    changes,
                    snapshot,
                    rollback_of: None,
                    rolled_back_by: None,
                };
                apply::put_ledger(s3, bucket, settings.home_of(target), &ledger).await.map_err(|e| {
                    Error::Partial(format!(
                        "deployment {id} of {target} started, but its ledger was not written (no automatic rollback for it): {e}"
                    ))
                })?;
                Some(id)
            };
            summary.redeployed.push(Redeployed {
                cluster: target.cluster.clone(),
                service: target.service.clone(),
                deployment_id,
                keys,
            });
            Ok(())
        }
    }
}

/// Reads what the full decision needs (the PRIMARY's ledger, the service's objects, the
/// changed objects' versions) and plans.
async fn observe_and_plan(
    clients: &Clients,
    settings: &Settings,
    target: &Target,
    events: &[ObjectEvent],
    service: shared::ecs::ServiceState,
) -> Result<TargetPlan, Error> {
    let (s3, bucket) = (&clients.s3, settings.bucket.as_str());
    let primary_ledger = match service.primary() {
        Some(p) => observe::ledger(s3, bucket, settings.home_of(target), target, &p.id).await?,
        None => None,
    };
    let objects = observe::objects(s3, bucket, &settings.prefixes_of(target), |k| {
        plan::owned_by(k, target, settings)
    })
    .await?;
    let mut heads = BTreeMap::new();
    for e in events {
        let head = observe::head(s3, bucket, &e.key).await?;
        heads.insert(e.key.clone(), head.map(|h| h.to_head()));
    }
    let observed = Observed {
        service,
        primary_ledger,
        objects,
        heads,
    };
    let plan = plan::plan_target(target, events, &observed, settings);
    Ok(plan)
}

/// An ECS deployment state change: roll back a failed configuration deployment.
async fn deployment(
    clients: &Clients,
    settings: &Settings,
    target: Option<&Target>,
    d: &DeploymentEvent,
    summary: &mut Summary,
) -> Result<(), Error> {
    let (s3, bucket) = (&clients.s3, settings.bucket.as_str());
    let ledger = failed_ledger(clients, settings, target, d).await?;
    if let Err(reason) = rollback::precheck(d, target, ledger.as_ref()) {
        skip_rollback(d, ledger.as_ref(), reason, summary);
        return Ok(());
    }
    let Some(target) = target else {
        return Ok(()); // precheck guarantees it
    };
    if settings.dry_run {
        return roll_back(clients, settings, target, d, summary).await;
    }
    // Restores and the redeploy run under the service's lease (duplicates may run in parallel).
    let lease_key = lease::key(settings.home_of(target), target);
    let holder = holder_id();
    let give_up = Instant::now() + LEASE_WAIT;
    loop {
        if let Some(held) = lease::acquire(s3, bucket, &lease_key, &holder).await? {
            let result = roll_back(clients, settings, target, d, &mut *summary).await;
            lease::release(s3, bucket, held).await;
            return result;
        }
        if Instant::now() >= give_up {
            return Err(Error::Unreachable(format!(
                "{target} stayed leased by another invocation for {}s ({lease_key})",
                LEASE_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}

/// The ledger of the deployment a failure event names, when it can matter.
async fn failed_ledger(
    clients: &Clients,
    settings: &Settings,
    target: Option<&Target>,
    d: &DeploymentEvent,
) -> Result<Option<Ledger>, Error> {
    match target {
        Some(t) if d.event_name == crate::event::DEPLOYMENT_FAILED => {
            observe::ledger(
                &clients.s3,
                &settings.bucket,
                settings.home_of(t),
                t,
                &d.deployment_id,
            )
            .await
        }
        _ => Ok(None),
    }
}

fn skip_rollback(
    d: &DeploymentEvent,
    ledger: Option<&Ledger>,
    reason: String,
    summary: &mut Summary,
) {
    if ledger.is_some_and(|l| l.kind == Kind::Rollback) {
        tracing::error!(
            deployment_id = d.deployment_id,
            reason = d.reason,
            "a rollback deployment failed; not rolling it back: the cause is probably not the configuration"
        );
    } else {
        tracing::info!(deployment_id = d.deployment_id, reason, "no rollback");
    }
    summary.skipped.push(Skipped {
        key: None,
        deployment_id: Some(d.deployment_id.clone()),
        reason,
    });
}

/// Rolls back a failed configuration deployment (re-reading its ledger: another invocation
/// may have rolled it back while this one waited for the lease).
async fn roll_back(
    clients: &Clients,
    settings: &Settings,
    target: &Target,
    d: &DeploymentEvent,
    summary: &mut Summary,
) -> Result<(), Error> {
    let (s3, bucket) = (&clients.s3, settings.bucket.as_str());
    let skip = |summary: &mut Summary, reason: String| {
        summary.skipped.push(Skipped {
            key: None,
            deployment_id: Some(d.deployment_id.clone()),
            reason,
        })
    };
    let ledger = failed_ledger(clients, settings, Some(target), d).await?;
    if let Err(reason) = rollback::precheck(d, Some(target), ledger.as_ref()) {
        skip_rollback(d, ledger.as_ref(), reason, summary);
        return Ok(());
    }
    let Some(mut failed_ledger) = ledger else {
        return Ok(()); // precheck guarantees it
    };

    let mut states = BTreeMap::new();
    for c in failed_ledger.changes.iter().filter(|c| !c.restoration) {
        states.insert(c.key.clone(), observe::key_state(s3, bucket, &c.key).await?);
    }
    let keys = rollback::plan_keys(&d.deployment_id, &failed_ledger, &states);
    let service = ecs::describe(&clients.ecs, &target.cluster, &target.service).await?;
    if service.status != "ACTIVE" {
        return Err(Error::NotFound(format!(
            "ECS service {} in cluster {} is {}",
            target.service, target.cluster, service.status
        )));
    }
    let primary_ledger = match service.primary() {
        Some(p) => observe::ledger(s3, bucket, settings.home_of(target), target, &p.id).await?,
        None => None,
    };
    let plan_json = serde_json::to_string(&keys).unwrap_or_default();
    tracing::info!(deployment_id = d.deployment_id, plan = %plan_json, dry_run = settings.dry_run, "rollback plan");
    if !rollback::needs_redeploy(&keys, &d.deployment_id, primary_ledger.as_ref()) {
        let reason = if keys
            .iter()
            .any(|k| matches!(k, KeyPlan::AlreadyRestored { .. }))
        {
            "already rolled back: the rollback deployment is running".to_string()
        } else if keys
            .iter()
            .any(|k| matches!(k, KeyPlan::Unrestorable { .. }))
        {
            format!("nothing restorable: {plan_json}")
        } else {
            "nothing to roll back: every object changed since the failed deployment".to_string()
        };
        skip(summary, reason);
        return Ok(());
    }
    if settings.dry_run {
        summary.rolled_back.push(RolledBack {
            cluster: target.cluster.clone(),
            service: target.service.clone(),
            failed_deployment_id: d.deployment_id.clone(),
            deployment_id: None,
            objects: keys,
        });
        return Ok(());
    }

    let mut restored = Vec::new();
    for k in &keys {
        if let KeyPlan::Restore {
            key,
            bad_version,
            action,
        } = k
        {
            let version = apply::restore(
                s3,
                bucket,
                key,
                action,
                bad_version.as_deref(),
                &d.deployment_id,
            )
            .await?;
            tracing::info!(key, bad_version, restored = ?action, "restored");
            restored.push(Rolled {
                key: key.clone(),
                version_id: match action {
                    Action::Delete => None,
                    Action::Copy { .. } => version,
                },
                restoration: true,
            });
        }
    }
    // What the rollback deployment boots with, read before it starts.
    let snapshot = plan::snapshot(
        &observe::objects(s3, bucket, &settings.prefixes_of(target), |k| {
            plan::owned_by(k, target, settings)
        })
        .await?,
        target,
        settings,
    );
    let id = ecs::force_new_deployment(&clients.ecs, &target.cluster, &target.service).await?;
    tracing::info!(
        cluster = target.cluster,
        service = target.service,
        deployment_id = id,
        failed_deployment_id = d.deployment_id,
        "rollback deployment started"
    );
    let ledger = Ledger {
        kind: Kind::Rollback,
        cluster: target.cluster.clone(),
        service: target.service.clone(),
        deployment_id: id.clone(),
        started_at: Utc::now(),
        changes: restored,
        snapshot,
        rollback_of: Some(d.deployment_id.clone()),
        rolled_back_by: None,
    };
    apply::put_ledger(s3, bucket, settings.home_of(target), &ledger).await?;
    failed_ledger.rolled_back_by = Some(id.clone());
    apply::put_ledger(s3, bucket, settings.home_of(target), &failed_ledger).await?;
    summary.rolled_back.push(RolledBack {
        cluster: target.cluster.clone(),
        service: target.service.clone(),
        failed_deployment_id: d.deployment_id.clone(),
        deployment_id: Some(id),
        objects: keys,
    });
    Ok(())
}
