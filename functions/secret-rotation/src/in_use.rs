//! Whether running tasks may still use the user an alternating setSecret is about to change.
//!
//! ECS hands a task the secret when the task starts, so a task started before the AWSCURRENT
//! change still logs in as the user that change retired, the one the next rotation changes. A
//! deployment created before the change that still has tasks, or a task started before it,
//! blocks setSecret until the redeploy has replaced them. A task ECS is stopping counts until its
//! containers have stopped: after a redeploy the old tasks drain from the load balancer
//! (desired status STOPPED, last status DEACTIVATING, then STOPPING) and still finish requests.
//! The standalone tasks of a task-definition family (RunTask: the scheduled jobs, which run for
//! minutes holding the same user) count the same way.
//! [`blocker`] is the pure rule; [`observe`] reads each service's deployments and tasks
//! (DescribeServices, ListTasks of desired status RUNNING and STOPPED), each family's running
//! tasks (ListTasks), and all those tasks in one DescribeTasks.

use aws_sdk_ecs::Client;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::Error;
use shared::aws::to_utc;

use crate::failure::{Cause, THROTTLING_CODES};

/// One deployment of a service and how many tasks it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentUse {
    pub id: String,
    pub created_at: Option<DateTime<Utc>>,
    /// Running plus pending tasks.
    pub tasks: i64,
}

/// One task whose containers may still run: ECS wants it running, or is stopping it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskUse {
    pub arn: String,
    /// `startedBy`: the deployment id for a service's task.
    pub started_by: Option<String>,
    /// When it started, else (still pending) when it was created.
    pub since: Option<DateTime<Utc>>,
    /// Its last status (`RUNNING`, `DEACTIVATING`, `STOPPING`, …).
    pub status: Option<String>,
}

/// Whether a task in this last status may still run its containers: every status before
/// `DEPROVISIONING` (ECS's task lifecycle), an unknown one included.
pub fn may_still_run(last_status: Option<&str>) -> bool {
    !matches!(last_status, Some("DEPROVISIONING" | "STOPPED"))
}

/// What a service runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceUse {
    pub service: String,
    pub deployments: Vec<DeploymentUse>,
    pub tasks: Vec<TaskUse>,
}

/// The standalone tasks of a task-definition family (`ECS_TASK_FAMILY`) that may still run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyUse {
    pub family: String,
    pub tasks: Vec<TaskUse>,
}

/// What the in-use check read: every `ECS_SERVICE` and every `ECS_TASK_FAMILY`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct InUse {
    pub services: Vec<ServiceUse>,
    pub families: Vec<FamilyUse>,
}

/// Why setSecret must wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "blocker", rename_all = "snake_case")]
pub enum Blocker {
    /// A deployment created before the change still has tasks.
    Deployment {
        service: String,
        deployment_id: String,
        created_at: Option<DateTime<Utc>>,
        tasks: i64,
    },
    /// A task started before the change (or at an unknown time) still runs, or is stopping.
    Task {
        service: String,
        task_arn: String,
        deployment_id: Option<String>,
        since: Option<DateTime<Utc>>,
        status: Option<String>,
    },
    /// A standalone task of a family (a jobs run) started before the change still runs.
    FamilyTask {
        family: String,
        task_arn: String,
        started_by: Option<String>,
        since: Option<DateTime<Utc>>,
        status: Option<String>,
    },
}

fn time(t: &Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "at an unknown time".to_string(), |t| t.to_rfc3339())
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocker::Deployment {
                service,
                deployment_id,
                created_at,
                tasks,
            } => write!(
                f,
                "service {service}: deployment {deployment_id}, created {}, still has {tasks} tasks",
                time(created_at)
            ),
            Blocker::Task {
                service,
                task_arn,
                deployment_id,
                since,
                status,
            } => write!(
                f,
                "service {service}: task {task_arn} of deployment {}, started {}, still runs \
                 (last status {})",
                deployment_id.as_deref().unwrap_or("(none)"),
                time(since),
                status.as_deref().unwrap_or("unknown")
            ),
            Blocker::FamilyTask {
                family,
                task_arn,
                started_by,
                since,
                status,
            } => write!(
                f,
                "task family {family}: task {task_arn}, started by {}, started {}, still runs \
                 (last status {})",
                started_by.as_deref().unwrap_or("(unknown)"),
                time(since),
                status.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

/// The first deployment or task that may still hold credentials from before `changed_at`
/// (a time not known counts as before); `None`: setSecret may change the retired user.
pub fn blocker(observed: &InUse, changed_at: DateTime<Utc>) -> Option<Blocker> {
    let before = |t: &Option<DateTime<Utc>>| t.is_none_or(|t| t <= changed_at);
    for f in &observed.families {
        if let Some(t) = f.tasks.iter().find(|t| before(&t.since)) {
            return Some(Blocker::FamilyTask {
                family: f.family.clone(),
                task_arn: t.arn.clone(),
                started_by: t.started_by.clone(),
                since: t.since,
                status: t.status.clone(),
            });
        }
    }
    for s in &observed.services {
        if let Some(d) = s
            .deployments
            .iter()
            .find(|d| d.tasks > 0 && before(&d.created_at))
        {
            return Some(Blocker::Deployment {
                service: s.service.clone(),
                deployment_id: d.id.clone(),
                created_at: d.created_at,
                tasks: d.tasks,
            });
        }
        if let Some(t) = s.tasks.iter().find(|t| before(&t.since)) {
            return Some(Blocker::Task {
                service: s.service.clone(),
                task_arn: t.arn.clone(),
                deployment_id: t.started_by.clone(),
                since: t.since,
                status: t.status.clone(),
            });
        }
    }
    None
}

/// An ECS error: throttling is its own cause, the rest keep code and message.
fn ecs_error<E, R>(operation: &'static str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.code() {
        Some(c) if THROTTLING_CODES.contains(&c) => {
            Cause::Throttled.error(format!("ECS {operation} failed: {c}"))
        }
        _ => Error::aws("ECS", operation, e),
    }
}

/// Reads what may still use the retired user: each service's deployments and the tasks ECS
/// wants running or is stopping (ListTasks of each desired status; a stopped task stays listed
/// for about an hour and is left out by its last status), and each family's running standalone
/// tasks; all tasks in one DescribeTasks (per 100).
pub async fn observe(
    ecs: &Client,
    cluster: &str,
    services: &[String],
    families: &[String],
) -> Result<InUse, Error> {
    use aws_sdk_ecs::types::DesiredStatus;
    let services = async {
        let mut out = Vec::new();
        for service in services {
            let list = |desired| {
                all_pages(
                    ecs.list_tasks()
                        .cluster(cluster)
                        .service_name(service)
                        .desired_status(desired),
                )
            };
            let (deployments, running, stopping) = tokio::join!(
                deployments(ecs, cluster, service),
                list(DesiredStatus::Running),
                list(DesiredStatus::Stopped),
            );
            let mut arns = running?;
            for arn in stopping? {
                if !arns.contains(&arn) {
                    arns.push(arn);
                }
            }
            out.push((service.clone(), deployments?, arns));
        }
        Ok::<_, Error>(out)
    };
    let families = async {
        let mut out = Vec::new();
        for family in families {
            let arns = all_pages(
                ecs.list_tasks()
                    .cluster(cluster)
                    .family(family)
                    .desired_status(DesiredStatus::Running),
            )
            .await?;
            out.push((family.clone(), arns));
        }
        Ok::<_, Error>(out)
    };
    let (services, families) = tokio::join!(services, families);
    let (services, families) = (services?, families?);
    let mut arns: Vec<String> = Vec::new();
    for arn in services
        .iter()
        .flat_map(|(_, _, a)| a)
        .chain(families.iter().flat_map(|(_, a)| a))
    {
        if !arns.contains(arn) {
            arns.push(arn.clone());
        }
    }
    let described = describe_tasks(ecs, cluster, &arns).await?;
    let tasks_of = |arns: &[String]| -> Vec<TaskUse> {
        arns.iter()
            .filter_map(|a| described.iter().find(|t| &t.arn == a).cloned())
            .collect()
    };
    Ok(InUse {
        services: services
            .iter()
            .map(|(service, deployments, arns)| ServiceUse {
                service: service.clone(),
                deployments: deployments.clone(),
                tasks: tasks_of(arns),
            })
            .collect(),
        families: families
            .iter()
            .map(|(family, arns)| FamilyUse {
                family: family.clone(),
                tasks: tasks_of(arns),
            })
            .collect(),
    })
}

/// The tasks among `arns` whose containers may still run (DescribeTasks, 100 at a time).
async fn describe_tasks(
    ecs: &Client,
    cluster: &str,
    arns: &[String],
) -> Result<Vec<TaskUse>, Error> {
    let mut tasks = Vec::new();
    for chunk in arns.chunks(100) {
        let out = ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| ecs_error("DescribeTasks", e))?;
        tasks.extend(
            out.tasks()
                .iter()
                .filter(|t| may_still_run(t.last_status()))
                .map(|t| TaskUse {
                    arn: t.task_arn().unwrap_or_default().to_string(),
                    started_by: t.started_by().map(str::to_string),
                    since: t.started_at().or(t.created_at()).and_then(to_utc),
                    status: t.last_status().map(str::to_string),
                }),
        );
    }
    Ok(tasks)
}

/// A service's deployments and how many tasks each has (DescribeServices).
async fn deployments(
    ecs: &Client,
    cluster: &str,
    service: &str,
) -> Result<Vec<DeploymentUse>, Error> {
    let out = ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .map_err(|e| ecs_error("DescribeServices", e))?;
    let svc = out
        .services()
        .first()
        .ok_or_else(|| Error::NotFound(format!("ECS service {service} in cluster {cluster}")))?;
    Ok(svc
        .deployments()
        .iter()
        .map(|d| DeploymentUse {
            id: d.id().unwrap_or_default().to_string(),
            created_at: d.created_at().and_then(to_utc),
            tasks: i64::from(d.running_count()) + i64::from(d.pending_count()),
        })
        .collect())
}

/// Every page of a ListTasks request.
async fn all_pages(
    request: aws_sdk_ecs::operation::list_tasks::builders::ListTasksFluentBuilder,
) -> Result<Vec<String>, Error> {
    let mut pages = request.into_paginator().send();
    let mut arns = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ecs_error("ListTasks", e))?;
        arns.extend(page.task_arns().iter().cloned());
    }
    Ok(arns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::{prop_assert, proptest};

    fn at(s: i64) -> Option<DateTime<Utc>> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).single()
    }

    fn only(s: ServiceUse) -> InUse {
        InUse {
            services: vec![s],
            families: vec![],
        }
    }

    fn service(deployments: &[(&str, Option<i64>, i64)], tasks: &[Option<i64>]) -> ServiceUse {
        ServiceUse {
            service: "wiki".into(),
            deployments: deployments
                .iter()
                .map(|(id, c, n)| DeploymentUse {
                    id: id.to_string(),
                    created_at: c.and_then(at),
                    tasks: *n,
                })
                .collect(),
            tasks: tasks
                .iter()
                .enumerate()
                .map(|(i, s)| TaskUse {
                    arn: format!("task/{i}"),
                    started_by: Some("ecs-svc/1".into()),
                    since: s.and_then(at),
                    status: Some("RUNNING".into()),
                })
                .collect(),
        }
    }

    #[test]
    fn a_completed_redeploy_after_the_change_frees_the_user() {
        let changed = at(0).unwrap();
        let done = service(&[("ecs-svc/2", Some(10), 2)], &[Some(20), Some(25)]);
        assert_eq!(blocker(&only(done), changed), None);
    }

    #[test]
    fn old_deployments_and_old_tasks_block_and_are_named() {
        let changed = at(0).unwrap();
        // The redeploy is rolling out: the old deployment still has a task.
        let rolling = service(
            &[("ecs-svc/2", Some(10), 2), ("ecs-svc/1", Some(-100), 1)],
            &[Some(20), Some(-50)],
        );
        let b = blocker(&only(rolling), changed).unwrap();
        assert!(
            matches!(&b, Blocker::Deployment { deployment_id, tasks: 1, .. } if deployment_id == "ecs-svc/1"),
            "{b:?}"
        );
        assert!(b.to_string().contains("deployment ecs-svc/1"), "{b}");
        // A task older than the change, or of unknown age, blocks even in a new deployment.
        for t in [Some(-1), Some(0), None] {
            let s = service(&[("ecs-svc/2", Some(10), 2)], &[Some(20), t]);
            let b = blocker(&only(s), changed).unwrap();
            assert!(
                matches!(&b, Blocker::Task { task_arn, .. } if task_arn == "task/1"),
                "{b:?}"
            );
        }
        // A deployment without tasks left blocks nothing.
        let drained = service(
            &[("ecs-svc/2", Some(10), 2), ("ecs-svc/1", Some(-100), 0)],
            &[],
        );
        assert_eq!(blocker(&only(drained), changed), None);
    }

    #[test]
    fn a_standalone_task_of_a_family_from_before_the_change_blocks() {
        let changed = at(0).unwrap();
        let jobs = |since: Option<i64>| FamilyUse {
            family: "wiki-jobs".into(),
            tasks: vec![TaskUse {
                arn: "task/jobs".into(),
                started_by: Some("events-rule/jobs".into()),
                since: since.and_then(at),
                status: Some("RUNNING".into()),
            }],
        };
        let web = service(&[("ecs-svc/2", Some(10), 2)], &[Some(20)]);
        for started in [Some(-30), Some(0), None] {
            let observed = InUse {
                services: vec![web.clone()],
                families: vec![jobs(started)],
            };
            let b = blocker(&observed, changed).unwrap();
            assert!(
                matches!(&b, Blocker::FamilyTask { family, task_arn, .. } if family == "wiki-jobs" && task_arn == "task/jobs"),
                "{b:?}"
            );
            assert!(b.to_string().contains("task family wiki-jobs"), "{b}");
        }
        let after = InUse {
            services: vec![web],
            families: vec![jobs(Some(30))],
        };
        assert_eq!(blocker(&after, changed), None);
    }

    #[test]
    fn a_task_may_still_run_until_its_containers_have_stopped() {
        for s in [
            "PROVISIONING",
            "PENDING",
            "ACTIVATING",
            "RUNNING",
            "DEACTIVATING",
            "STOPPING",
        ] {
            assert!(may_still_run(Some(s)), "{s}");
        }
        assert!(may_still_run(None), "unknown counts as running");
        assert!(!may_still_run(Some("DEPROVISIONING")));
        assert!(!may_still_run(Some("STOPPED")));
    }

    proptest! {
        /// setSecret proceeds exactly when every deployment with tasks was created, and every
        /// task started, after the change.
        #[test]
        fn blocks_exactly_when_something_predates_the_change(
            deployments in proptest::collection::vec((proptest::option::of(-5i64..5), 0i64..3), 0..4),
            tasks in proptest::collection::vec(proptest::option::of(-5i64..5), 0..5),
        ) {
            let changed = at(0).unwrap();
            let deployments: Vec<(&str, Option<i64>, i64)> =
                deployments.iter().map(|(c, n)| ("d", *c, *n)).collect();
            let s = service(&deployments, &tasks);
            let old = |t: &Option<DateTime<Utc>>| t.is_none_or(|t| t <= changed);
            let predates = s.deployments.iter().any(|d| d.tasks > 0 && old(&d.created_at))
                || s.tasks.iter().any(|t| old(&t.since));
            prop_assert!(blocker(&only(s.clone()), changed).is_some() == predates);
        }
    }
}
