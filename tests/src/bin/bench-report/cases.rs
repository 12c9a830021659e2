//! The representative event of each function, and the state it needs in the peers.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use wikiops_tests::measure::Samples;
use wikiops_tests::{Lambda, MariaDb, Moto, events};

type Env = Vec<(String, String)>;
type Prepared<'a> = Pin<Box<dyn Future<Output = (Env, Value)> + 'a>>;

/// One function to measure.
pub struct Case {
    pub binary: &'static str,
    /// Arranges the peers for run `n` and returns the function's env and event.
    pub prepare: for<'a> fn(&'a Moto, &'a MariaDb, &'a Path, usize) -> Prepared<'a>,
    /// Whether the output shows the event was really handled.
    pub check: fn(&Value) -> bool,
}

fn s(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

fn hello<'a>(_: &'a Moto, _: &'a MariaDb, _: &'a Path, _: usize) -> Prepared<'a> {
    Box::pin(async { (Vec::new(), json!({"ping": 1})) })
}

/// A changed LocalSettings.php in a versioned bucket, and the service to redeploy.
fn config_redeploy<'a>(moto: &'a Moto, _: &'a MariaDb, _: &'a Path, n: usize) -> Prepared<'a> {
    Box::pin(async move {
        let (bucket, service) = (format!("wiki-config-{n}"), format!("web-{n}"));
        moto.ecs_service("wiki", &service, &format!("wiki-{n}"))
            .await;
        moto.versioned_bucket(&bucket)
            .await
            .expect("versioned bucket");
        let s3 = moto.s3().await;
        let put = s3
            .put_object()
            .bucket(&bucket)
            .key("LocalSettings.php")
            .body(b"<?php\n$wgSitename = 'Bench';\n".to_vec().into())
            .send()
            .await
            .expect("PutObject");
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let event = events::load_with(
            "config-redeploy-s3-put",
            &[
                ("wiki-config-123456789012", &bucket),
                (
                    "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY",
                    put.version_id().unwrap_or_default(),
                ),
                ("2026-11-29T07:00:00.123Z", &now),
            ],
        );
        let env = vec![
            s("CONFIG_BUCKET", bucket),
            s("ECS_CLUSTER", "wiki"),
            s("ECS_SERVICE", service),
        ];
        (env, event)
    })
}

/// A secret in the rotation state (as RotateSecret leaves it), its user in MariaDB.
async fn rotation_secret(moto: &Moto, db: &MariaDb, n: usize) -> (String, String) {
    let user = format!("bench{n}");
    let mut admin = db.admin().await;
    admin
        .query_drop(format!(
            "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY 'Bench_pw.1' REQUIRE SSL"
        ))
        .await
        .expect("CREATE USER");
    admin
        .query_drop(format!("GRANT SELECT ON wiki.* TO '{user}'@'%'"))
        .await
        .expect("GRANT");
    let _ = admin.disconnect().await;
    let sm = moto.secretsmanager().await;
    let master = sm
        .create_secret()
        .name(format!("bench-master-{n}"))
        .secret_string(
            json!({"username": db.admin_user, "password": db.admin_password}).to_string(),
        )
        .send()
        .await
        .expect("CreateSecret master");
    let secret = sm
        .create_secret()
        .name(format!("bench/db-{n}"))
        .secret_string(
            json!({"engine": "mariadb", "host": "localhost", "port": db.port, "username": user,
                   "password": "Bench_pw.1", "dbname": "wiki", "masterarn": master.arn()})
            .to_string(),
        )
        .send()
        .await
        .expect("CreateSecret");
    let arn = secret.arn().unwrap_or_default().to_string();
    let token = moto
        .start_rotation(
            &arn,
            "arn:aws:lambda:us-east-1:123456789012:function:secret-rotation",
        )
        .await;
    (arn, token)
}

fn rotation_env(db: &MariaDb) -> Env {
    vec![
        s("DB_CA_BUNDLE", db.ca_path.display().to_string()),
        s("DB_ENDPOINT", format!("localhost:{}", db.port)),
        s("ROTATION_STRATEGY", "alternating"),
    ]
}

fn rotation_event(step: &str, arn: &str, token: &str) -> Value {
    events::load_with(
        &format!("secret-rotation-{step}-secret"),
        &[
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:wiki/db-AbCdEf",
                arn,
            ),
            ("9f1c8a52-3d4e-4b7a-9a61-2f0e8c5d7b13", token),
        ],
    )
}

/// createSecret: the step every rotation starts with.
fn secret_rotation<'a>(moto: &'a Moto, db: &'a MariaDb, _: &'a Path, n: usize) -> Prepared<'a> {
    Box::pin(async move {
        let (arn, token) = rotation_secret(moto, db, 1000 + n).await;
        (rotation_env(db), rotation_event("create", &arn, &token))
    })
}

/// A backup of a small MediaWiki-shaped uploads tree.
fn efs_backup<'a>(moto: &'a Moto, _: &'a MariaDb, dir: &'a Path, n: usize) -> Prepared<'a> {
    Box::pin(async move {
        let src = dir.join("images");
        for (i, d) in ["a/ab", "b/b3", "c/c7", "f/f0"].iter().enumerate() {
            std::fs::create_dir_all(src.join(d)).expect("mkdir");
            for j in 0..5 {
                std::fs::write(
                    src.join(d).join(format!("File_{i}_{j}.png")),
                    vec![(i * 5 + j) as u8; 20_000],
                )
                .expect("write");
            }
        }
        let bucket = format!("wiki-backup-{n}");
        moto.versioned_bucket(&bucket)
            .await
            .expect("versioned bucket");
        let env = vec![
            s("SOURCE_DIR", src.display().to_string()),
            s("BACKUP_BUCKET", bucket),
            s("BACKUP_PREFIX", "wiki/"),
        ];
        (env, events::load("efs-backup-backup"))
    })
}

/// A dry run over three families of twelve revisions, one service.
fn taskdef_janitor<'a>(moto: &'a Moto, _: &'a MariaDb, _: &'a Path, n: usize) -> Prepared<'a> {
    Box::pin(async move {
        let prefix = format!("bench{n}-");
        moto.ecs_service(&format!("c{n}"), "web", &format!("{prefix}web"))
            .await;
        for fam in ["web", "jobs", "schema"] {
            for _ in 0..12 {
                moto.register_revision(&format!("{prefix}{fam}")).await;
            }
        }
        (
            vec![s("FAMILY_PREFIXES", prefix)],
            events::load("taskdef-janitor-dry-run"),
        )
    })
}

/// hello-world first (the reference), then the functions.
pub fn all() -> Vec<Case> {
    vec![
        Case {
            binary: "hello-world",
            prepare: hello,
            check: |v| v["hello"]["ping"] == 1,
        },
        Case {
            binary: "config-redeploy",
            prepare: config_redeploy,
            check: |v| v["redeployed"].as_array().is_some_and(|a| a.len() == 1),
        },
        Case {
            binary: "secret-rotation",
            prepare: secret_rotation,
            check: |v| v["outcome"] == "created",
        },
        Case {
            binary: "efs-backup",
            prepare: efs_backup,
            check: |v| v["status"] == "complete" && v["files_uploaded"] == 20,
        },
        Case {
            binary: "taskdef-janitor",
            prepare: taskdef_janitor,
            check: |v| v["kept_recent"].is_array() || v["kept_recent"].is_number(),
        },
    ]
}

/// Wall time of a full four-step rotation (alternating users) against MariaDB with TLS,
/// `runs` times, each with a warm function process (as Secrets Manager's four invocations
/// usually land on one execution environment).
pub async fn rotation_wall_time(bin_dir: &Path, moto: &Moto, db: &MariaDb, runs: usize) -> Samples {
    let program = program(bin_dir, "secret-rotation");
    let mut env = moto.env();
    env.extend(rotation_env(db));
    let lambda = Lambda::start_program("secret-rotation", &program, env).await;
    let mut samples = Samples::default();
    for n in 0..runs {
        let (arn, token) = rotation_secret(moto, db, 2000 + n).await;
        let t = Instant::now();
        let mut ok = true;
        for step in ["create", "set", "test", "finish"] {
            if let Err(e) = lambda
                .invoke_with_deadline(rotation_event(step, &arn, &token), Duration::from_secs(60))
                .await
            {
                eprintln!("bench-report: rotation {n} {step}Secret failed: {e}");
                ok = false;
                break;
            }
        }
        if ok {
            samples.push_ms(t.elapsed());
        }
    }
    lambda.stop().await;
    samples
}

/// A binary in `bin_dir`: `<binary>/bootstrap` in a cargo-lambda output directory, `<binary>` in
/// a cargo one.
pub fn program(bin_dir: &Path, binary: &str) -> std::path::PathBuf {
    let packaged = bin_dir.join(binary).join("bootstrap");
    if packaged.exists() {
        packaged
    } else {
        bin_dir.join(binary)
    }
}
