//! Throttling, which no peer on the bench produces: the SDK's retry policy absorbs a burst,
//! and a persistent one is one clear `AwsApi` error with nothing changed.

use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
use aws_sdk_ecs::operation::update_service::UpdateServiceOutput;
use aws_sdk_ecs::types::{Deployment, Service};
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::Object;
use aws_sdk_s3::types::error::NoSuchKey;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use config_redeploy::{Clients, Settings, event, process};
use shared::Env;

const THROTTLED: &str = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;

fn service(deployment: &str, created: i64) -> Service {
    Service::builder()
        .status("ACTIVE")
        .deployments(
            Deployment::builder()
                .id(deployment)
                .status("PRIMARY")
                .created_at(aws_sdk_ecs::primitives::DateTime::from_secs(created))
                .build(),
        )
        .build()
}

fn s3_rules() -> Vec<Rule> {
    vec![
        mock!(aws_sdk_s3::Client::get_object)
            .match_requests(|r| r.key().is_some_and(|k| k.contains(".wikiops/")))
            .then_error(|| GetObjectError::NoSuchKey(NoSuchKey::builder().build())),
        mock!(aws_sdk_s3::Client::get_object)
            .match_requests(|r| r.key() == Some("LocalSettings.php"))
            .then_output(|| {
                GetObjectOutput::builder()
                    .body(ByteStream::from_static(b"<?php\n$wgSitename = 'Wiki';  \n"))
                    .build()
            }),
        // The pointer key never held a version: no release yet.
        mock!(aws_sdk_s3::Client::list_object_versions).then_output(|| {
            aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput::builder().build()
        }),
        mock!(aws_sdk_s3::Client::list_objects_v2).then_output(|| {
            ListObjectsV2Output::builder()
                .contents(
                    Object::builder()
                        .key("LocalSettings.php")
                        .size(30)
                        .e_tag("\"e1\"")
                        .build(),
                )
                .build()
        }),
        mock!(aws_sdk_s3::Client::head_object).then_output(|| {
            HeadObjectOutput::builder()
                .version_id("v2")
                .content_length(30)
                .build()
        }),
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build()),
        mock!(aws_sdk_s3::Client::delete_object).then_output(|| {
            aws_sdk_s3::operation::delete_object::DeleteObjectOutput::builder().build()
        }),
    ]
}

fn clients(describe: &Rule, update: &Rule, s3: &[Rule]) -> Clients {
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [describe, update], |b| b
        .retry_config(
            aws_sdk_ecs::config::retry::RetryConfig::standard().with_max_attempts(3)
        ));
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3.iter(), |b| b
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3)
        ));
    Clients { ecs, s3 }
}

fn setup() -> (Settings, event::Trigger) {
    let settings = Settings::from_env(&Env::from_pairs([
        ("CONFIG_BUCKET", "wiki-config-123456789012"),
        ("ECS_CLUSTER", "wiki"),
        ("ECS_SERVICE", "web"),
    ]))
    .unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/config-redeploy-s3-put.json"
    ))
    .unwrap();
    let trigger = event::parse(&serde_json::from_str(&text).unwrap()).unwrap();
    (settings, trigger)
}

fn update_rule() -> Rule {
    mock!(aws_sdk_ecs::Client::update_service).then_output(|| {
        UpdateServiceOutput::builder()
            .service(service("ecs-svc/new", 2_000_000_000))
            .build()
    })
}

#[tokio::test]
async fn a_burst_of_throttling_is_retried() {
    let (settings, trigger) = setup();
    let describe = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .http_status(400, Some(THROTTLED.into()))
        .times(2)
        .output(|| {
            DescribeServicesOutput::builder()
                .services(service("ecs-svc/old", 1_000_000_000))
                .build()
        })
        .repeatedly()
        .build();
    let update = update_rule();
    let s3 = s3_rules();
    let out = process(&clients(&describe, &update, &s3), &settings, trigger)
        .await
        .unwrap();
    // Three attempts, then once more under the service's lease.
    assert_eq!(describe.num_calls(), 4);
    assert_eq!(update.num_calls(), 1);
    assert_eq!(
        out.redeployed[0].deployment_id.as_deref(),
        Some("ecs-svc/new")
    );
}

#[tokio::test]
async fn persistent_throttling_is_one_clear_error_and_changes_nothing() {
    let (settings, trigger) = setup();
    let describe = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .http_status(400, Some(THROTTLED.into()))
        .repeatedly()
        .build();
    let update = update_rule();
    let s3 = s3_rules();
    let err = process(&clients(&describe, &update, &s3), &settings, trigger)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AwsApi");
    assert_eq!(err.aws_code(), Some("ThrottlingException"));
    assert!(err.to_string().contains("ECS DescribeServices"), "{err}");
    assert_eq!(describe.num_calls(), 3, "the SDK's three attempts");
    assert_eq!(update.num_calls(), 0);
    assert!(
        s3.iter().skip(4).all(|r| r.num_calls() == 0),
        "no ledger written"
    );
}
