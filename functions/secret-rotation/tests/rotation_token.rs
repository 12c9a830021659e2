//! What moto does not check: createSecret hands Secrets Manager's `RotationToken` to
//! PutSecretValue (with the version id and the AWSPENDING stage), and a throttled
//! PutSecretValue is one clear `Throttled` error after the SDK's retries.

use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
use aws_sdk_secretsmanager::operation::get_secret_value::{
    GetSecretValueError, GetSecretValueOutput,
};
use aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueOutput;
use aws_sdk_secretsmanager::types::error::ResourceNotFoundException;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use secret_rotation::event::RotationEvent;
use secret_rotation::settings::Settings;
use secret_rotation::{Clients, steps};
use serde_json::json;
use shared::Env;

const TOKEN: &str = "9f1c8a52-3d4e-4b7a-9a61-2f0e8c5d7b13";

fn rules() -> Vec<Rule> {
    vec![
        mock!(aws_sdk_secretsmanager::Client::describe_secret).then_output(|| {
            DescribeSecretOutput::builder()
                .rotation_enabled(true)
                .version_ids_to_stages("v0", vec!["AWSCURRENT".into()])
                .version_ids_to_stages(TOKEN, vec!["AWSPENDING".into()])
                .build()
        }),
        mock!(aws_sdk_secretsmanager::Client::get_secret_value)
            .match_requests(|r| r.version_stage() == Some("AWSCURRENT"))
            .then_output(|| {
                GetSecretValueOutput::builder()
                    .version_id("v0")
                    .secret_string(
                        json!({"engine": "mysql", "host": "db", "username": "wiki",
                               "password": "old-pw", "masterarn": "arn:m"})
                        .to_string(),
                    )
                    .build()
            }),
        mock!(aws_sdk_secretsmanager::Client::get_secret_value)
            .match_requests(|r| r.version_stage() == Some("AWSPENDING"))
            .then_error(|| {
                GetSecretValueError::ResourceNotFoundException(
                    ResourceNotFoundException::builder().build(),
                )
            }),
    ]
}

fn clients(rules: &[Rule]) -> Clients {
    let ecs_rules: [&Rule; 0] = [];
    Clients {
        secretsmanager: mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, rules, |b| b
            .retry_config(
                aws_sdk_secretsmanager::config::retry::RetryConfig::standard().with_max_attempts(3)
            )),
        ecs: shared::aws::LazyClient::ready(mock_client!(
            aws_sdk_ecs,
            RuleMode::MatchAny,
            ecs_rules
        )),
    }
}

fn event(rotation_token: Option<&str>) -> RotationEvent {
    let mut e = json!({
        "Step": "createSecret", "SecretId": "arn:s", "ClientRequestToken": TOKEN,
    });
    if let Some(t) = rotation_token {
        e["RotationToken"] = json!(t);
    }
    RotationEvent::parse(e).unwrap()
}

#[tokio::test]
async fn create_secret_passes_the_rotation_token() {
    let settings = Settings::from_env(&Env::from_pairs(Vec::<(String, String)>::new())).unwrap();
    for rotation_token in [Some("rt-6a1f0c2e"), None] {
        let put = mock!(aws_sdk_secretsmanager::Client::put_secret_value)
            .match_requests(move |r| {
                r.rotation_token() == rotation_token
                    && r.client_request_token() == Some(TOKEN)
                    && r.version_stages() == ["AWSPENDING".to_string()]
                    && r.secret_string().is_some_and(|s| {
                        let v: serde_json::Value = serde_json::from_str(s).unwrap();
                        // Drawn by the function: 32 characters of the default alphabet.
                        v["username"] == "wiki_clone"
                            && v["password"].as_str().is_some_and(|p| {
                                p.len() == 32
                                    && p.chars()
                                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
                            })
                    })
            })
            .then_output(|| PutSecretValueOutput::builder().build());
        let mut all = rules();
        all.push(put.clone());
        let out = steps::run(&clients(&all), &settings, &event(rotation_token))
            .await
            .unwrap();
        assert_eq!(out["outcome"], "created", "{out}");
        assert_eq!(put.num_calls(), 1);
    }
}

#[tokio::test]
async fn throttled_put_is_one_clear_error() {
    let settings = Settings::from_env(&Env::from_pairs(Vec::<(String, String)>::new())).unwrap();
    // The password the function drew, as sent: it must not reach the error.
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = sent.clone();
    let put = mock!(aws_sdk_secretsmanager::Client::put_secret_value)
        .match_requests(move |r| {
            let v: serde_json::Value =
                serde_json::from_str(r.secret_string().unwrap_or("{}")).unwrap();
            if let Some(p) = v["password"].as_str() {
                seen.lock().unwrap().push(p.to_string());
            }
            true
        })
        .sequence()
        .http_status(
            400,
            Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into()),
        )
        .times(5)
        .build();
    let mut all = rules();
    all.push(put.clone());
    let err = steps::run(&clients(&all), &settings, &event(Some("rt")))
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "Throttled", "{err}");
    assert!(err.to_string().contains("PutSecretValue"), "{err}");
    assert!(err.to_string().contains("ThrottlingException"), "{err}");
    let sent = sent.lock().unwrap();
    assert!(!sent.is_empty());
    for p in sent.iter() {
        assert!(!err.to_string().contains(p.as_str()), "{err}");
    }
    assert_eq!(put.num_calls(), 3, "the SDK retried");
}

#[tokio::test]
async fn an_unreadable_secret_response_is_an_error_without_its_body() {
    let settings = Settings::from_env(&Env::from_pairs(Vec::<(String, String)>::new())).unwrap();
    let broken = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .sequence()
        .http_status(
            200,
            Some(r#"{"SecretString": 7, "Name": "s3cr3t-in-the-body"#.into()),
        )
        .build();
    let mut all = vec![broken];
    all.extend(rules());
    let err = steps::run(&clients(&all), &settings, &event(None))
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "AwsApi", "{err}");
    assert!(err.to_string().contains("GetSecretValue"), "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    assert!(!format!("{err:?}").contains("s3cr3t"), "{err:?}");
}
