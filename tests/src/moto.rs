//! The AWS APIs, served by `moto_server` on a free loopback port.

use std::process::Stdio;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use tokio::process::{Child, Command};

/// A running moto server; stopped when dropped.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub port: u16,
    _child: Child,
}

/// The region the bench uses.
pub const REGION: &str = "us-east-1";
/// moto's default account id.
pub const ACCOUNT: &str = "123456789012";

impl Moto {
    /// Starts `moto_server` (the venv's, through `tests/moto/server.py`, which adds ECS's
    /// deployment circuit breaker: [`Moto::trip_circuit_breaker`]) and waits until it answers.
    pub async fn start() -> Moto {
        let port = crate::free_port();
        let mut cmd = Command::new(crate::paths::venv_bin("python3"));
        cmd.arg(crate::paths::root().join("tests/moto/server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = crate::die_with_parent(&mut cmd)
            .spawn()
            .expect("start moto_server (run the test command once to create .venv)");
        crate::wait_for_port(port, Duration::from_secs(30), "moto_server").await;
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            _child: child,
        }
    }

    /// Environment for a function process that talks to this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_SESSION_TOKEN", "testing"),
            ("S3_FORCE_PATH_STYLE", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// SDK configuration for the test itself (arranging and checking state in moto).
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "bench",
            ))
            .load()
            .await
    }

    /// An S3 client (path-style) for this server.
    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk_config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Creates `bucket` with versioning enabled (as the template creates its buckets).
    pub async fn versioned_bucket(&self, bucket: &str) -> Result<(), String> {
        let s3 = self.s3().await;
        s3.create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| format!("CreateBucket {bucket}: {e:?}"))?;
        enable_versioning(&s3, bucket).await
    }

    /// An ECS client for this server.
    pub async fn ecs(&self) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::new(&self.sdk_config().await)
    }

    /// A Secrets Manager client for this server.
    pub async fn secretsmanager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config().await)
    }

    /// An EventBridge client for this server.
    pub async fn eventbridge(&self) -> aws_sdk_eventbridge::Client {
        aws_sdk_eventbridge::Client::new(&self.sdk_config().await)
    }

    /// An EventBridge Scheduler client for this server.
    pub async fn scheduler(&self) -> aws_sdk_scheduler::Client {
        aws_sdk_scheduler::Client::new(&self.sdk_config().await)
    }

    /// A Step Functions client for this server.
    pub async fn sfn(&self) -> aws_sdk_sfn::Client {
        aws_sdk_sfn::Client::new(&self.sdk_config().await)
    }

    /// An EventBridge Pipes client for this server.
    pub async fn pipes(&self) -> aws_sdk_pipes::Client {
        aws_sdk_pipes::Client::new(&self.sdk_config().await)
    }

    /// An RDS client for this server.
    pub async fn rds(&self) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::new(&self.sdk_config().await)
    }

    /// An ECR client for this server.
    pub async fn ecr(&self) -> aws_sdk_ecr::Client {
        aws_sdk_ecr::Client::new(&self.sdk_config().await)
    }

    /// What ECS's deployment circuit breaker (rollback on) does to a service: its PRIMARY
    /// deployment is listed as ACTIVE with the rollout state FAILED and a new PRIMARY starts.
    /// Returns the new PRIMARY's id.
    pub async fn trip_circuit_breaker(&self, cluster: &str, service: &str) -> String {
        let ecs = self.ecs().await;
        let arn = format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/{cluster}/{service}");
        ecs.tag_resource()
            .resource_arn(&arn)
            .tags(
                aws_sdk_ecs::types::Tag::builder()
                    .key("wikiops-test:circuit-breaker")
                    .value("trip")
                    .build(),
            )
            .send()
            .await
            .expect("trip the circuit breaker (tests/moto/server.py)");
        let state = shared::ecs::describe(&ecs, cluster, service)
            .await
            .expect("describe the service");
        state.primary().map(|d| d.id.clone()).unwrap_or_default()
    }

    /// Registers a revision of `family` (one `wiki` container) and returns its ARN.
    pub async fn register_revision(&self, family: &str) -> String {
        self.ecs()
            .await
            .register_task_definition()
            .family(family)
            .container_definitions(
                aws_sdk_ecs::types::ContainerDefinition::builder()
                    .name("wiki")
                    .image("mediawiki:1.43")
                    .memory(512)
                    .build(),
            )
            .send()
            .await
            .expect("RegisterTaskDefinition")
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .expect("task definition arn")
            .to_string()
    }

    /// Starts a rotation of `secret_arn` by `rotation_lambda` as Secrets Manager does: a new
    /// version staged AWSPENDING under a fresh token, which is returned. moto cannot invoke the
    /// function, so RotateSecret then fails; the caller runs the four steps itself.
    pub async fn start_rotation(&self, secret_arn: &str, rotation_lambda: &str) -> String {
        let token = uuid::Uuid::new_v4().to_string();
        let _ = self
            .secretsmanager()
            .await
            .rotate_secret()
            .secret_id(secret_arn)
            .client_request_token(&token)
            .rotation_lambda_arn(rotation_lambda)
            .rotation_rules(
                aws_sdk_secretsmanager::types::RotationRulesType::builder()
                    .automatically_after_days(30)
                    .build(),
            )
            .send()
            .await;
        token
    }

    /// Creates an ECS cluster and a service in it (one container, `desired` tasks) and
    /// returns the service ARN. moto never starts the tasks.
    pub async fn ecs_service(&self, cluster: &str, service: &str, family: &str) -> String {
        let ecs = self.ecs().await;
        ecs.create_cluster()
            .cluster_name(cluster)
            .send()
            .await
            .expect("CreateCluster");
        let td_arn = self.register_revision(family).await;
        let out = ecs
            .create_service()
            .cluster(cluster)
            .service_name(service)
            .task_definition(td_arn)
            .desired_count(2)
            .send()
            .await
            .expect("CreateService");
        out.service()
            .and_then(|s| s.service_arn())
            .expect("service arn")
            .to_string()
    }
}

/// Turns versioning on for `bucket` (any S3 server).
pub async fn enable_versioning(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<(), String> {
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("PutBucketVersioning {bucket}: {e:?}"))
}
