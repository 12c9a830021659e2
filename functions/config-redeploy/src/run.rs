//! Ties the planners to the adapter: observe, plan, apply (or only print in a dry run).

use std::time::Instant;

use chrono::Utc;
use shared::Error;
use shared::config_rules::Problem;
use shared::ecs::{self, ServiceState};
use shared::release::{Current, Pointer};

use crate::event::{DeploymentEvent, ObjectEvent, Trigger};
use crate::ledger::{Kind, Ledger};
use crate::plan::{self, Coverage, Observed, Skipped, TargetPlan};
use crate::rollback::{self, RollbackPlan};
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
    let home = settings.home_of(target);
    let lease_key = lease::key(home, target);
    let holder = holder_id();
    let give_up = Instant::now() + LEASE_WAIT;
    loop {
        let service = ecs::describe(&clients.ecs, &target.cluster, &target.service).await?;
        let pointer = observe::pointer(s3, bucket, home).await?;
        // Duplicates usually end here, after DescribeServices and one GetObject.
        if let Some(plan) = plan::plan_from_pointer(events, &service, pointer.released()) {
            return apply_changes(clients, settings, target, events, plan, summary).await;
        }
        if settings.dry_run {
            let plan =
                observe_and_plan(clients, settings, target, events, service, pointer).await?;
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
        // Under the lease the service and its release may have moved on while we waited.
        let result = async {
            let service = ecs::describe(&clients.ecs, &target.cluster, &target.service).await?;
            let pointer = observe::pointer(s3, bucket, home).await?;
            let plan = match plan::plan_from_pointer(events, &service, pointer.released()) {
                Some(plan) => plan,
                None => {
                    observe_and_plan(clients, settings, target, events, service, pointer).await?
                }
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

/// Reports a plan, and carries out a release (unless dry run).
async fn apply_changes(
    clients: &Clients,
    settings: &Settings,
    target: &Target,
    events: &[ObjectEvent],
    plan: TargetPlan,
    summary: &mut Summary,
) -> Result<(), Error> {
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
                tracing::error!(cluster = target.cluster, service = target.service, key = r.key, problem = %r.problem, "configuration refused: no release; tasks keep booting the current one");
                summary.rejected.push(Rejected {
                    cluster: target.cluster.clone(),
                    service: target.service.clone(),
                    key: r.key.clone(),
                    reason: r.problem.to_string(),
                    line: match &r.problem {
                        plan::Refusal::Invalid(Problem::PhpSyntax { line, .. }) => Some(*line),
                        _ => None,
                    },
                });
            }
            for k in &keys {
                summary.skipped.push(Skipped::key(
                    k,
                    format!("not released: {target} has a refused configuration object"),
                ));
            }
            Ok(())
        }
        TargetPlan::Covered {
            deployment_id,
            coverage,
        } => {
            let why = match coverage {
                Coverage::Released => "boots a release holding it",
                Coverage::SameObjects => "boots a release of the same objects",
            };
            for k in &keys {
                summary.skipped.push(Skipped::key(
                    k,
                    format!("already rolling out: deployment {deployment_id} {why}"),
                ));
            }
            Ok(())
        }
        TargetPlan::Release {
            release,
            previous,
            changes,
        } => {
            let deployment_id = if settings.dry_run {
                None
            } else {
                let pointer = Pointer {
                    release,
                    previous,
                    withdrawn: Default::default(),
                    rollback_of: None,
                };
                let ledger = deploy(
                    clients,
                    settings,
                    target,
                    &pointer,
                    Kind::Config,
                    changes,
                    None,
                )
                .await?;
                Some(ledger.deployment_id)
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

/// Writes `pointer` as the current release, starts the deployment that rolls it out, and
/// records it in its ledger. Returns the ledger.
async fn deploy(
    clients: &Clients,
    settings: &Settings,
    target: &Target,
    pointer: &Pointer,
    kind: Kind,
    changes: Vec<crate::ledger::Rolled>,
    rollback_of: Option<String>,
) -> Result<Ledger, Error> {
    let (s3, bucket, home) = (
        &clients.s3,
        settings.bucket.as_str(),
        settings.home_of(target),
    );
    apply::put_pointer(s3, bucket, home, pointer).await?;
    let id = ecs::force_new_deployment(&clients.ecs, &target.cluster, &target.service).await?;
    tracing::info!(
        cluster = target.cluster,
        service = target.service,
        deployment_id = id,
        ?kind,
        objects = pointer.release.objects.len(),
        "release written, deployment started"
    );
    let ledger = Ledger {
        kind,
        cluster: target.cluster.clone(),
        service: target.service.clone(),
        deployment_id: id.clone(),
        started_at: Utc::now(),
        changes,
        release: pointer.release.clone(),
        previous: match kind {
            Kind::Config => pointer.previous.clone(),
            Kind::Rollback => Some(pointer.release.clone()),
        },
        rollback_of,
        rolled_back_by: None,
    };
    apply::put_ledger(s3, bucket, home, &ledger).await.map_err(|e| {
        Error::Partial(format!(
            "deployment {id} of {target} started, but its ledger was not written (no automatic rollback for it): {e}"
        ))
    })?;
    Ok(ledger)
}

/// Reads what the full decision needs (the PRIMARY's ledger, every configuration object's
/// current version) and plans.
async fn observe_and_plan(
    clients: &Clients,
    settings: &Settings,
    target: &Target,
    events: &[ObjectEvent],
    service: ServiceState,
    pointer: Current,
) -> Result<TargetPlan, Error> {
    let (s3, bucket) = (&clients.s3, settings.bucket.as_str());
    let primary_ledger = primary_ledger(clients, settings, target, &service).await?;
    let objects = observe::objects(
        s3,
        bucket,
        &settings.prefixes_of(target),
        settings.max_config_bytes,
        |k| plan::owned_by(k, target, settings),
    )
    .await?;
    let bundled = observe::bundled(s3, bucket, settings.home_of(target)).await?;
    let observed = Observed {
        bundled,
        service,
        pointer_deleted: matches!(pointer, Current::Deleted { .. }),
        pointer: pointer.into_pointer(),
        primary_ledger,
        objects,
        now: Utc::now(),
    };
    Ok(plan::plan_target(target, events, &observed, settings))
}

/// The ledger of the service's PRIMARY deployment, when this function started it.
async fn primary_ledger(
    clients: &Clients,
    settings: &Settings,
    target: &Target,
    service: &ServiceState,
) -> Result<Option<Ledger>, Error> {
    match service.primary() {
        Some(p) => {
            observe::ledger(
                &clients.s3,
                &settings.bucket,
                settings.home_of(target),
                target,
                &p.id,
            )
            .await
        }
        None => Ok(None),
    }
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
    // The pointer and the redeploy change under the service's lease (duplicates may run in parallel).
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
    let (s3, bucket, home) = (
        &clients.s3,
        settings.bucket.as_str(),
        settings.home_of(target),
    );
    let ledger = failed_ledger(clients, settings, Some(target), d).await?;
    if let Err(reason) = rollback::precheck(d, Some(target), ledger.as_ref()) {
        skip_rollback(d, ledger.as_ref(), reason, summary);
        return Ok(());
    }
    let Some(mut failed) = ledger else {
        return Ok(()); // precheck guarantees it
    };
    let service = ecs::describe(&clients.ecs, &target.cluster, &target.service).await?;
    if service.status != "ACTIVE" {
        return Err(Error::NotFound(format!(
            "ECS service {} in cluster {} is {}",
            target.service, target.cluster, service.status
        )));
    }
    let pointer = observe::pointer(s3, bucket, home).await?.into_pointer();
    let primary = primary_ledger(clients, settings, target, &service).await?;
    let plan = rollback::plan(
        &failed,
        &service,
        pointer.as_ref(),
        primary.as_ref(),
        Utc::now(),
    );
    let plan_json = serde_json::to_string(&plan).unwrap_or_default();
    tracing::info!(deployment_id = d.deployment_id, plan = %plan_json, dry_run = settings.dry_run, "rollback plan");
    let pointer = match plan {
        RollbackPlan::Skip { reason } => {
            skip_rollback(d, Some(&failed), reason, summary);
            return Ok(());
        }
        RollbackPlan::Restore { pointer } => pointer,
        // Checked by the plan: the current pointer is the restored one.
        RollbackPlan::Redeploy => match pointer {
            Some(p) => p,
            None => return Ok(()),
        },
    };
    let restored = pointer.release.clone();
    let deployment_id = if settings.dry_run {
        None
    } else {
        let changes = plan::diff(Some(&failed.release), &restored);
        let ledger = deploy(
            clients,
            settings,
            target,
            &pointer,
            Kind::Rollback,
            changes,
            Some(d.deployment_id.clone()),
        )
        .await?;
        failed.rolled_back_by = Some(ledger.deployment_id.clone());
        apply::put_ledger(s3, bucket, home, &failed).await?;
        Some(ledger.deployment_id)
    };
    summary.rolled_back.push(RolledBack {
        cluster: target.cluster.clone(),
        service: target.service.clone(),
        failed_deployment_id: d.deployment_id.clone(),
        deployment_id,
        withdrawn: rollback::withdrawn_by(&failed, &restored),
        release: restored,
    });
    Ok(())
}
