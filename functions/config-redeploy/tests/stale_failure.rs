//! A `SERVICE_DEPLOYMENT_FAILED` rolls back only when ECS lists that very deployment as
//! FAILED: through the real adapter, with the S3 and ECS answers mocked.

use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
use aws_sdk_ecs::operation::update_service::UpdateServiceOutput;
use aws_sdk_ecs::types::{Deployment, Service};
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::error::NoSuchKey;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use chrono::DateTime;
use config_redeploy::ledger::{Kind, Ledger};
use config_redeploy::{Clients, Settings, event, process};
use shared::Env;
use shared::release::{Pointer, Release};

const FAILED_ID: &str = "ecs-svc/1234567890123456789";

fn release(secs: i64, version: &str) -> Release {
    Release {
        created_at: DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
        objects: [("LocalSettings.php".to_string(), version.to_string())].into(),
    }
}

fn ledger() -> Ledger {
    Ledger {
        kind: Kind::Config,
        cluster: "wiki".into(),
        service: "web".into(),
        deployment_id: FAILED_ID.into(),
        started_at: DateTime::from_timestamp(1_800_000_001, 0).unwrap(),
        changes: vec![],
        release: release(1, "v2"),
        previous: Some(release(0, "v1")),
        rollback_of: None,
        rolled_back_by: None,
    }
}

fn json_body(v: &impl serde::Serialize) -> GetObjectOutput {
    GetObjectOutput::builder()
        .body(ByteStream::from(serde_json::to_vec(v).unwrap()))
        .build()
}

fn s3_rules() -> Vec<Rule> {
    vec![
        mock!(aws_sdk_s3::Client::get_object)
            .match_requests(|r| {
                r.key()
                    .is_some_and(|k| k.ends_with(&format!("{FAILED_ID}.json")))
            })
            .then_output(|| json_body(&ledger())),
        mock!(aws_sdk_s3::Client::get_object)
            .match_requests(|r| r.key() == Some(".wikiops/release.json"))
            .then_output(|| {
                json_body(&Pointer {
                    release: release(1, "v2"),
                    previous: Some(release(0, "v1")),
                    withdrawn: Default::default(),
                    rollback_of: None,
                })
            }),
        mock!(aws_sdk_s3::Client::get_object)
            .then_error(|| GetObjectError::NoSuchKey(NoSuchKey::builder().build())),
        mock!(aws_sdk_s3::Client::put_object)
            .match_requests(|r| r.key() == Some(".wikiops/release.json"))
            .then_output(|| PutObjectOutput::builder().build()),
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build()),
        mock!(aws_sdk_s3::Client::delete_object).then_output(|| {
            aws_sdk_s3::operation::delete_object::DeleteObjectOutput::builder().build()
        }),
    ]
}

fn service(deployments: &[(&str, &str, &str)]) -> Service {
    let mut b = Service::builder().status("ACTIVE");
    for (id, status, rollout) in deployments {
        b = b.deployments(
            Deployment::builder()
                .id(*id)
                .status(*status)
                .rollout_state(aws_sdk_ecs::types::DeploymentRolloutState::from(*rollout))
                .created_at(aws_sdk_ecs::primitives::DateTime::from_secs(1_800_000_100))
                .build(),
        );
    }
    b.build()
}

/// Runs the failure fixture against ECS listing `deployments`; returns the summary, the
/// number of UpdateService calls and of pointer writes.
async fn run(deployments: &'static [(&str, &str, &str)]) -> (serde_json::Value, usize, usize) {
    let describe = mock!(aws_sdk_ecs::Client::describe_services).then_output(move || {
        DescribeServicesOutput::builder()
            .services(service(deployments))
            .build()
    });
    let update = mock!(aws_sdk_ecs::Client::update_service).then_output(|| {
        UpdateServiceOutput::builder()
            .service(service(&[("ecs-svc/rollback", "PRIMARY", "IN_PROGRESS")]))
            .build()
    });
    let s3 = s3_rules();
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe, &update]);
    let s3_client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3.iter());
    let clients = Clients { ecs, s3: s3_client };
    let settings = Settings::from_env(&Env::from_pairs([
        ("CONFIG_BUCKET", "wiki-config-123456789012"),
        ("ECS_CLUSTER", "wiki"),
        ("ECS_SERVICE", "web"),
    ]))
    .unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/config-redeploy-ecs-deployment-failed.json"
    ))
    .unwrap();
    let trigger = event::parse(&serde_json::from_str(&text).unwrap()).unwrap();
    let out = process(&clients, &settings, trigger).await.unwrap();
    (
        serde_json::to_value(&out).unwrap(),
        update.num_calls(),
        s3[3].num_calls(),
    )
}

#[tokio::test]
async fn a_failure_ecs_no_longer_lists_rolls_nothing_back() {
    // Superseded by a later deployment (a rotation's, say), then the event is replayed.
    let (out, updates, pointer_writes) = run(&[("ecs-svc/later", "PRIMARY", "COMPLETED")]).await;
    assert_eq!((updates, pointer_writes), (0, 0), "{out}");
    assert!(out["rolled_back"].as_array().unwrap().is_empty(), "{out}");
    let reason = out["skipped"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("no longer lists"), "{reason}");
}

#[tokio::test]
async fn a_failure_ecs_does_not_report_failed_rolls_nothing_back() {
    for listed in [
        &[
            ("ecs-svc/later", "PRIMARY", "IN_PROGRESS"),
            (FAILED_ID, "ACTIVE", "IN_PROGRESS"),
        ][..],
        &[(FAILED_ID, "PRIMARY", "COMPLETED")][..],
    ] {
        let listed: &'static [(&str, &str, &str)] = Box::leak(listed.to_vec().into_boxed_slice());
        let (out, updates, pointer_writes) = run(listed).await;
        assert_eq!((updates, pointer_writes), (0, 0), "{out}");
        let reason = out["skipped"][0]["reason"].as_str().unwrap();
        assert!(reason.contains("stale or forged"), "{reason}");
    }
}

#[tokio::test]
async fn a_failure_ecs_lists_as_failed_is_rolled_back() {
    let (out, updates, pointer_writes) = run(&[
        ("ecs-svc/own-rollback", "PRIMARY", "IN_PROGRESS"),
        (FAILED_ID, "ACTIVE", "FAILED"),
    ])
    .await;
    assert_eq!((updates, pointer_writes), (1, 1), "{out}");
    assert_eq!(out["rolled_back"][0]["failed_deployment_id"], FAILED_ID);
    assert_eq!(
        out["rolled_back"][0]["release"]["objects"]["LocalSettings.php"],
        "v1"
    );
}
