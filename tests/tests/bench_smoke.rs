//! The bench proves itself: moto answers ECS calls (the shared redeploy operation), MariaDB
//! takes a TLS login verified against the test's CA, and a binary answers events through
//! the Runtime API.

use std::time::Duration;

use serde_json::json;
use shared::ecs::{self, Redeployed};
use wikiops_tests::{Lambda, MariaDb, Moto};

#[tokio::test]
async fn shared_redeploy_against_moto_deduplicates() {
    let moto = Moto::start().await;
    moto.ecs_service("wiki", "web", "wiki-web").await;
    let client = moto.ecs().await;

    let before = ecs::describe(&client, "wiki", "web").await.unwrap();
    let old = before.primary().unwrap().clone();

    // The change happened after the current PRIMARY was created: redeploy.
    let changed_at = old.created_at.unwrap() + chrono::Duration::milliseconds(1);
    let first = ecs::redeploy(&client, "wiki", "web", Some(changed_at))
        .await
        .unwrap();
    let Redeployed::Started { deployment_id, .. } = first else {
        panic!("expected a new deployment, got {first:?}")
    };
    assert_ne!(deployment_id, old.id);

    // The same change again: the new PRIMARY already carries it.
    let again = ecs::redeploy(&client, "wiki", "web", Some(changed_at))
        .await
        .unwrap();
    assert_eq!(
        again,
        Redeployed::AlreadyRollingOut {
            cluster: "wiki".into(),
            service: "web".into(),
            deployment_id: deployment_id.clone()
        }
    );
    let after = ecs::describe(&client, "wiki", "web").await.unwrap();
    assert_eq!(after.primary().unwrap().id, deployment_id);

    let missing = ecs::redeploy(&client, "wiki", "nope", None)
        .await
        .unwrap_err();
    assert_eq!(missing.error_type(), "NotFound", "{missing}");
}

#[tokio::test]
async fn mariadb_login_is_tls_and_verified() {
    use mysql_async::prelude::Queryable;
    let db = MariaDb::start().await;
    let mut conn = db.admin().await;
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .await
        .unwrap();
    let version = cipher.map(|(_, v)| v).unwrap_or_default();
    assert!(
        version.starts_with("TLS"),
        "session is not TLS: {version:?}"
    );
    conn.disconnect().await.unwrap();

    // A client that trusts another CA must refuse the server.
    let other = wikiops_tests::tls::Ca::new("someone else");
    let opts = db.opts(&db.admin_user, &db.admin_password).ssl_opts(
        mysql_async::SslOpts::default()
            .with_root_certs(vec![other.cert_pem.as_bytes().to_vec().into()])
            .with_disable_built_in_roots(true),
    );
    let err = mysql_async::Conn::new(opts)
        .await
        .expect_err("untrusted server accepted");
    assert!(matches!(err, mysql_async::Error::Io(_)), "{err:?}");

    // Wrong password: the server's own error code.
    let err = db
        .try_connect(&db.admin_user, "wrong")
        .await
        .expect_err("bad password accepted");
    match err {
        mysql_async::Error::Server(e) => assert_eq!(e.code, 1045),
        other => panic!("expected access denied, got {other:?}"),
    }
}

#[tokio::test]
async fn binaries_answer_through_the_runtime_api() {
    let hello = Lambda::start("hello-world", Vec::<(String, String)>::new()).await;
    let out = hello.invoke(json!({"ping": 1})).await.unwrap();
    assert_eq!(out, json!({"hello": {"ping": 1}}));
    let out = hello.invoke(json!("again")).await.unwrap();
    assert_eq!(out, json!({"hello": "again"}));
    assert!(hello.init_duration().is_some());

    let moto = Moto::start().await;
    moto.ecs_service("wiki", "web", "wiki-web").await;

    // Missing setting: one error naming the variable, typed, nothing changed.
    let probe = Lambda::start("shared-probe", moto.env()).await;
    let err = probe.invoke(json!({})).await.unwrap_err();
    assert_eq!(err.error_type, "Settings");
    assert_eq!(
        err.error_message,
        "missing environment variable PROBE_CLUSTER"
    );
    drop(probe);

    let mut env = moto.env();
    env.push(("PROBE_CLUSTER".into(), "wiki".into()));
    env.push(("PROBE_SERVICE".into(), "web".into()));
    let probe = Lambda::start("shared-probe", env).await;
    let out = probe.invoke(json!({})).await.unwrap();
    assert_eq!(out["outcome"], "started", "{out}");

    let err = probe
        .invoke(json!({"changed_at": "yesterday"}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent");

    // Logs are JSON lines (LoggingConfig JSON) and one EMF document per invocation.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = probe.logs();
    let emf: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert!(
        emf.iter()
            .any(|v| v["ProbeRedeploys"] == 1 && v["Function"] == "shared-probe"),
        "no EMF document with the metric: {logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.starts_with('{') && l.contains("new deployment started")),
        "no JSON log line: {logs}"
    );
}

#[tokio::test]
async fn a_dead_process_is_reported_like_lambda_does() {
    // An event the runtime cannot even fetch because the binary is not a Lambda function.
    let lambda = Lambda::start_program(
        "false",
        std::path::Path::new("/bin/false"),
        Vec::<(String, String)>::new(),
    )
    .await;
    let err = lambda.invoke(json!({})).await.unwrap_err();
    assert_eq!(err.error_type, "Runtime.ExitError");
}
