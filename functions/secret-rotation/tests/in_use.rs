//! What moto's ECS cannot produce: tasks with start times (moto reports none, and ignores
//! ListTasks' service filter, so a family's tasks cannot be told from a service's there) and
//! throttled ECS calls. `in_use::observe` reads them as ECS reports them, and
//! `in_use::blocker` decides.

use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::{Deployment, Service, Task};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use chrono::TimeZone;
use secret_rotation::in_use::{Blocker, InUse, ServiceUse, blocker, observe};

const CHANGED: i64 = 1_800_000_000;

/// A task as DescribeTasks reports it.
fn task(arn: &str, started_by: &str, started_at: i64, last_status: &str) -> Task {
    Task::builder()
        .task_arn(arn)
        .started_by(started_by)
        .started_at(DateTime::from_secs(started_at))
        .last_status(last_status)
        .build()
}

/// The one service `wiki`, no family.
async fn observe_one(ecs: &aws_sdk_ecs::Client) -> Result<ServiceUse, shared::Error> {
    let mut observed = observe(ecs, "cluster", &["wiki".to_string()], &[]).await?;
    Ok(observed.services.remove(0))
}

fn only(s: ServiceUse) -> InUse {
    InUse {
        services: vec![s],
        families: vec![],
    }
}

/// DescribeServices: one PRIMARY deployment, created after the change, with `running` tasks.
fn services(running: i32) -> aws_smithy_mocks::Rule {
    mock!(aws_sdk_ecs::Client::describe_services).then_output(move || {
        DescribeServicesOutput::builder()
            .services(
                Service::builder()
                    .service_name("wiki")
                    .deployments(
                        Deployment::builder()
                            .id("ecs-svc/new")
                            .status("PRIMARY")
                            .created_at(DateTime::from_secs(CHANGED + 60))
                            .running_count(running)
                            .build(),
                    )
                    .build(),
            )
            .build()
    })
}

fn client(task_started: i64) -> aws_sdk_ecs::Client {
    let services = services(2);
    let pages = mock!(aws_sdk_ecs::Client::list_tasks)
        .match_requests(|r| {
            r.service_name() == Some("wiki")
                && r.desired_status() == Some(&aws_sdk_ecs::types::DesiredStatus::Running)
        })
        .sequence()
        .output(|| {
            ListTasksOutput::builder()
                .task_arns("task/a")
                .next_token("more")
                .build()
        })
        .output(|| ListTasksOutput::builder().task_arns("task/b").build())
        .build();
    let tasks = mock!(aws_sdk_ecs::Client::describe_tasks).then_output(move || {
        DescribeTasksOutput::builder()
            .tasks(
                Task::builder()
                    .task_arn("task/a")
                    .started_by("ecs-svc/new")
                    .started_at(DateTime::from_secs(CHANGED + 90))
                    .build(),
            )
            .tasks(
                Task::builder()
                    .task_arn("task/b")
                    .started_by("ecs-svc/old")
                    .created_at(DateTime::from_secs(task_started))
                    .build(),
            )
            .build()
    });
    let stopping = stopping_tasks(&[]);
    mock_client!(
        aws_sdk_ecs,
        RuleMode::MatchAny,
        [&services, &pages, &stopping, &tasks]
    )
}

/// ListTasks of desired status STOPPED: `arns`, one page.
fn stopping_tasks(arns: &[&'static str]) -> aws_smithy_mocks::Rule {
    let arns = arns.to_vec();
    mock!(aws_sdk_ecs::Client::list_tasks)
        .match_requests(|r| {
            r.service_name() == Some("wiki")
                && r.desired_status() == Some(&aws_sdk_ecs::types::DesiredStatus::Stopped)
        })
        .then_output(move || {
            ListTasksOutput::builder()
                .set_task_arns(Some(arns.iter().map(|a| a.to_string()).collect()))
                .build()
        })
}

/// After a redeploy the old tasks drain (desired STOPPED, last status DEACTIVATING, then
/// STOPPING): one started before the change blocks until its containers have stopped; a task
/// that has stopped (DEPROVISIONING, STOPPED: ListTasks keeps it listed for an hour) does not.
#[tokio::test]
async fn a_task_being_stopped_blocks_until_its_containers_stop() {
    let changed = chrono::Utc.timestamp_opt(CHANGED, 0).unwrap();
    let observed = |last_status: &'static str| {
        let services = services(1);
        let running = mock!(aws_sdk_ecs::Client::list_tasks)
            .match_requests(|r| {
                r.desired_status() == Some(&aws_sdk_ecs::types::DesiredStatus::Running)
            })
            .then_output(|| ListTasksOutput::builder().task_arns("task/new").build());
        let stopping = stopping_tasks(&["task/old", "task/new"]);
        let tasks = mock!(aws_sdk_ecs::Client::describe_tasks)
            .match_requests(|r| r.tasks() == ["task/new".to_string(), "task/old".to_string()])
            .then_output(move || {
                DescribeTasksOutput::builder()
                    .tasks(task("task/new", "ecs-svc/new", CHANGED + 90, "RUNNING"))
                    .tasks(task("task/old", "ecs-svc/old", CHANGED - 3600, last_status))
                    .build()
            });
        async move {
            let ecs = mock_client!(
                aws_sdk_ecs,
                RuleMode::MatchAny,
                [&services, &running, &stopping, &tasks]
            );
            let use_ = observe_one(&ecs).await.unwrap();
            assert_eq!(tasks.num_calls(), 1, "one DescribeTasks for both lists");
            use_
        }
    };
    for draining in ["DEACTIVATING", "STOPPING"] {
        match blocker(&only(observed(draining).await), changed) {
            Some(b @ Blocker::Task { .. }) => {
                let Blocker::Task {
                    ref task_arn,
                    ref status,
                    ..
                } = b
                else {
                    unreachable!()
                };
                assert_eq!(task_arn, "task/old");
                assert_eq!(status.as_deref(), Some(draining));
                assert!(b.to_string().contains(draining), "{b}");
            }
            other => panic!("{draining}: {other:?}"),
        }
    }
    for stopped in ["DEPROVISIONING", "STOPPED"] {
        let use_ = observed(stopped).await;
        assert_eq!(use_.tasks.len(), 1, "{stopped}: {use_:?}");
        assert_eq!(blocker(&only(use_), changed), None, "{stopped}");
    }
}

#[tokio::test]
async fn a_task_from_before_the_change_blocks_and_is_named() {
    let changed = chrono::Utc.timestamp_opt(CHANGED, 0).unwrap();
    let old = observe_one(&client(CHANGED - 3600)).await.unwrap();
    assert_eq!(old.tasks.len(), 2, "both pages read");
    match blocker(&only(old), changed) {
        Some(Blocker::Task {
            task_arn,
            deployment_id,
            ..
        }) => {
            assert_eq!(task_arn, "task/b");
            assert_eq!(deployment_id.as_deref(), Some("ecs-svc/old"));
        }
        other => panic!("{other:?}"),
    }
    let new = observe_one(&client(CHANGED + 120)).await.unwrap();
    assert_eq!(blocker(&only(new), changed), None);
}

#[tokio::test]
async fn throttled_ecs_is_its_own_cause() {
    let throttled = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .http_status(
            400,
            Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into()),
        )
        .times(5)
        .build();
    // The task lists go out with DescribeServices (none listed).
    let lists =
        mock!(aws_sdk_ecs::Client::list_tasks).then_output(|| ListTasksOutput::builder().build());
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&throttled, &lists], |b| b
        .retry_config(
            aws_sdk_ecs::config::retry::RetryConfig::standard().with_max_attempts(2)
        ));
    let err = observe_one(&ecs).await.unwrap_err();
    assert_eq!(err.error_type(), "Throttled", "{err}");
    assert!(err.to_string().contains("DescribeServices"), "{err}");
}

/// A scheduled jobs task (RunTask of the jobs family, no deployment) started before the change
/// holds the retired user for minutes: it blocks, named, until it ends; one that started after
/// the change does not. The family costs one ListTasks; its tasks share the services'
/// DescribeTasks.
#[tokio::test]
async fn a_jobs_task_from_before_the_change_blocks_and_is_named() {
    let changed = chrono::Utc.timestamp_opt(CHANGED, 0).unwrap();
    let observed = |jobs_started: i64| {
        let services = services(1);
        let web = mock!(aws_sdk_ecs::Client::list_tasks)
            .match_requests(|r| r.service_name() == Some("wiki") && r.family().is_none())
            .then_output(|| ListTasksOutput::builder().task_arns("task/web").build());
        let jobs = mock!(aws_sdk_ecs::Client::list_tasks)
            .match_requests(|r| {
                r.family() == Some("wiki-jobs")
                    && r.service_name().is_none()
                    && r.desired_status() == Some(&aws_sdk_ecs::types::DesiredStatus::Running)
            })
            .then_output(|| ListTasksOutput::builder().task_arns("task/jobs").build());
        let tasks = mock!(aws_sdk_ecs::Client::describe_tasks)
            .match_requests(|r| r.tasks() == ["task/web".to_string(), "task/jobs".to_string()])
            .then_output(move || {
                DescribeTasksOutput::builder()
                    .tasks(task("task/web", "ecs-svc/new", CHANGED + 90, "RUNNING"))
                    .tasks(task(
                        "task/jobs",
                        "events-rule/wiki-JobsRule",
                        jobs_started,
                        "RUNNING",
                    ))
                    .build()
            });
        async move {
            let ecs = mock_client!(
                aws_sdk_ecs,
                RuleMode::MatchAny,
                [&services, &web, &jobs, &tasks]
            );
            let observed = observe(
                &ecs,
                "cluster",
                &["wiki".to_string()],
                &["wiki-jobs".to_string()],
            )
            .await
            .unwrap();
            assert_eq!(jobs.num_calls(), 1, "one ListTasks for the family");
            assert_eq!(tasks.num_calls(), 1, "one DescribeTasks for all tasks");
            observed
        }
    };
    let old = observed(CHANGED - 120).await;
    assert_eq!(old.families.len(), 1);
    assert_eq!(old.families[0].tasks.len(), 1, "{old:?}");
    assert_eq!(old.services[0].tasks.len(), 1, "{old:?}");
    match blocker(&old, changed) {
        Some(b @ Blocker::FamilyTask { .. }) => {
            let text = b.to_string();
            assert!(text.contains("task family wiki-jobs"), "{text}");
            assert!(text.contains("task/jobs"), "{text}");
            assert!(text.contains("events-rule/wiki-JobsRule"), "{text}");
        }
        other => panic!("the jobs task was not counted: {other:?}"),
    }
    let new = observed(CHANGED + 120).await;
    assert_eq!(blocker(&new, changed), None);
}
