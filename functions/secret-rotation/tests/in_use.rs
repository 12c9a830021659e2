//! What moto's ECS cannot produce: tasks with start times (moto reports none, and ignores
//! ListTasks' service filter) and throttled ECS calls. `in_use::observe` reads them as ECS
//! reports them, and `in_use::blocker` decides.

use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::{Deployment, Service, Task};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use chrono::TimeZone;
use secret_rotation::in_use::{Blocker, blocker, observe};

const CHANGED: i64 = 1_800_000_000;

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
                    .tasks(
                        Task::builder()
                            .task_arn("task/new")
                            .started_by("ecs-svc/new")
                            .started_at(DateTime::from_secs(CHANGED + 90))
                            .last_status("RUNNING")
                            .build(),
                    )
                    .tasks(
                        Task::builder()
                            .task_arn("task/old")
                            .started_by("ecs-svc/old")
                            .started_at(DateTime::from_secs(CHANGED - 3600))
                            .last_status(last_status)
                            .build(),
                    )
                    .build()
            });
        async move {
            let ecs = mock_client!(
                aws_sdk_ecs,
                RuleMode::MatchAny,
                [&services, &running, &stopping, &tasks]
            );
            let use_ = observe(&ecs, "cluster", "wiki").await.unwrap();
            assert_eq!(tasks.num_calls(), 1, "one DescribeTasks for both lists");
            use_
        }
    };
    for draining in ["DEACTIVATING", "STOPPING"] {
        match blocker(&[observed(draining).await], changed) {
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
        assert_eq!(blocker(&[use_], changed), None, "{stopped}");
    }
}

#[tokio::test]
async fn a_task_from_before_the_change_blocks_and_is_named() {
    let changed = chrono::Utc.timestamp_opt(CHANGED, 0).unwrap();
    let old = observe(&client(CHANGED - 3600), "cluster", "wiki")
        .await
        .unwrap();
    assert_eq!(old.tasks.len(), 2, "both pages read");
    match blocker(&[old], changed) {
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
    let new = observe(&client(CHANGED + 120), "cluster", "wiki")
        .await
        .unwrap();
    assert_eq!(blocker(&[new], changed), None);
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
    let err = observe(&ecs, "cluster", "wiki").await.unwrap_err();
    assert_eq!(err.error_type(), "Throttled", "{err}");
    assert!(err.to_string().contains("DescribeServices"), "{err}");
}
