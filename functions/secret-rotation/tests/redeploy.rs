//! finishSecret's redeploy, for what moto does not report: after the stage move UpdateService
//! goes out alone (no DescribeServices first), and a service ECS calls inactive is named as
//! such; on a retry the service is read first and a deployment newer than the change is kept.

use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
use aws_sdk_ecs::operation::update_service::{UpdateServiceError, UpdateServiceOutput};
use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::error::ServiceNotActiveException;
use aws_sdk_ecs::types::{Deployment, Service};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use chrono::TimeZone;
use shared::Error;
use shared::ecs::{Redeployed, redeploy};

fn service(created: i64) -> Service {
    Service::builder()
        .status("ACTIVE")
        .deployments(
            Deployment::builder()
                .id("ecs-svc/new")
                .status("PRIMARY")
                .created_at(DateTime::from_secs(created))
                .build(),
        )
        .build()
}

/// DescribeServices reporting a PRIMARY deployment created at `primary_created`, and
/// UpdateService (forceNewDeployment of `wiki`) starting a new one.
fn describe_and_update(primary_created: i64) -> (Rule, Rule) {
    let describe = mock!(aws_sdk_ecs::Client::describe_services).then_output(move || {
        DescribeServicesOutput::builder()
            .services(service(primary_created))
            .build()
    });
    let update = mock!(aws_sdk_ecs::Client::update_service)
        .match_requests(|r| r.force_new_deployment() == Some(true) && r.service() == Some("wiki"))
        .then_output(move || {
            UpdateServiceOutput::builder()
                .service(service(primary_created + 100))
                .build()
        });
    (describe, update)
}

#[tokio::test]
async fn after_the_stage_move_update_service_goes_out_alone() {
    let (describe, update) = describe_and_update(0);
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe, &update]);
    let out = redeploy(&ecs, "cluster", "wiki", None).await.unwrap();
    assert_eq!(
        out,
        Redeployed::Started {
            cluster: "cluster".into(),
            service: "wiki".into(),
            deployment_id: "ecs-svc/new".into(),
        }
    );
    assert_eq!(update.num_calls(), 1);
    assert_eq!(
        describe.num_calls(),
        0,
        "no DescribeServices before UpdateService"
    );
}

#[tokio::test]
async fn an_inactive_service_is_named() {
    let update = mock!(aws_sdk_ecs::Client::update_service).then_error(|| {
        UpdateServiceError::ServiceNotActiveException(
            ServiceNotActiveException::builder()
                .message("Service was not ACTIVE.")
                .build(),
        )
    });
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&update]);
    let err = redeploy(&ecs, "cluster", "wiki", None).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains("wiki"), "{err}");
    assert!(err.to_string().contains("not ACTIVE"), "{err}");
}

#[tokio::test]
async fn a_retry_reads_the_service_and_keeps_a_deployment_newer_than_the_change() {
    let changed = chrono::Utc.timestamp_opt(100, 0).unwrap();
    let (describe, update) = describe_and_update(200);
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe, &update]);
    let out = redeploy(&ecs, "cluster", "wiki", Some(changed))
        .await
        .unwrap();
    assert!(
        matches!(out, Redeployed::AlreadyRollingOut { ref deployment_id, .. } if deployment_id == "ecs-svc/new"),
        "{out:?}"
    );
    assert_eq!(update.num_calls(), 0);
    assert_eq!(describe.num_calls(), 1);

    // A deployment from before the change: the retry redeploys.
    let (describe, update) = describe_and_update(0);
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe, &update]);
    let out = redeploy(&ecs, "cluster", "wiki", Some(changed))
        .await
        .unwrap();
    assert!(matches!(out, Redeployed::Started { .. }), "{out:?}");
    assert_eq!((describe.num_calls(), update.num_calls()), (1, 1));
}
