//! config-redeploy on the bench: the real binary, through the Lambda Runtime API, against moto
//! (a versioned config bucket, an ECS cluster and services).
//!
//! Deployments are counted the way moto shows them: `UpdateService` with `forceNewDeployment`
//! gives the PRIMARY deployment a new id, so "one deployment" means the PRIMARY id changed
//! once, to the id the function reported.

#[path = "wiki_support.rs"]
mod support;

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use shared::ecs;
use wikiops_tests::{Lambda, Moto, events};

const BUCKET: &str = "wiki-config";
const FIXTURE_BUCKET: &str = "wiki-config-123456789012";
const FIXTURE_VERSION: &str = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY";
const FIXTURE_TIME: &str = "2026-11-29T07:00:00.123Z";
/// A valid LocalSettings.php with a password in it, which must never reach the logs.
const GOOD: &str = "<?php\n$wgSitename = 'Wiki';\n$wgDBpassword = 'pw-hidden';\n";
const SECRET: &str = "pw-hidden";

struct Bench {
    moto: Moto,
    s3: aws_sdk_s3::Client,
    ecs: aws_sdk_ecs::Client,
}

impl Bench {
    async fn start() -> Bench {
        let moto = Moto::start().await;
        moto.versioned_bucket(BUCKET).await.unwrap();
        let s3 = moto.s3().await;
        moto.ecs_service("wiki", "web", "wiki-web").await;
        let ecs = moto.ecs().await;
        Bench { moto, s3, ecs }
    }

    async fn lambda(&self, extra: &[(&str, &str)]) -> Lambda {
        let mut env = self.moto.env();
        env.push(("CONFIG_BUCKET".into(), BUCKET.into()));
        env.push(("ECS_CLUSTER".into(), "wiki".into()));
        env.push(("ECS_SERVICE".into(), "web".into()));
        for (k, v) in extra {
            env.retain(|(n, _)| n != k);
            env.push((k.to_string(), v.to_string()));
        }
        Lambda::start("config-redeploy", env).await
    }

    /// Puts an object and returns its version id.
    async fn put(&self, key: &str, body: &str) -> String {
        self.s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .content_type("text/x-php")
            .body(ByteStream::from(body.as_bytes().to_vec()))
            .send()
            .await
            .unwrap()
            .version_id()
            .unwrap()
            .to_string()
    }

    async fn body(&self, key: &str) -> String {
        let out = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        String::from_utf8(out.body.collect().await.unwrap().into_bytes().to_vec()).unwrap()
    }

    async fn primary(&self, service: &str) -> String {
        ecs::describe(&self.ecs, "wiki", service)
            .await
            .unwrap()
            .primary()
            .unwrap()
            .id
            .clone()
    }

    /// The current release's objects (key → version id), `None` before the first release.
    async fn release(&self) -> Option<BTreeMap<String, String>> {
        let out = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(".wikiops/release.json")
            .send()
            .await
            .ok()?;
        let v: Value =
            serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).ok()?;
        serde_json::from_value(v["release"]["objects"].clone()).ok()
    }

    /// How many versions `key` has (how many times it was written).
    async fn versions(&self, key: &str) -> usize {
        let out = self
            .s3
            .list_object_versions()
            .bucket(BUCKET)
            .prefix(key)
            .send()
            .await
            .unwrap();
        out.versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .count()
    }

    /// What ECS's own circuit breaker does when a deployment fails: the failed PRIMARY is
    /// listed as FAILED and a new PRIMARY (the same task definition) starts.
    async fn ecs_rolls_back_by_itself(&self) -> String {
        self.moto.trip_circuit_breaker("wiki", "web").await
    }

    /// A deployment that is not a configuration change (a rotation's redeploy, say): the
    /// PRIMARY it replaces is no longer listed.
    async fn other_deployment(&self) -> String {
        self.ecs
            .update_service()
            .cluster("wiki")
            .service("web")
            .force_new_deployment(true)
            .send()
            .await
            .unwrap();
        self.primary("web").await
    }

    /// Runs the real `wiki-boot pull` (a task starting) against the bucket and returns the
    /// run and the web root it wrote.
    async fn boot(&self) -> (support::Run, tempfile::TempDir) {
        let web = support::open_tempdir();
        let env = support::task_env(&self.moto, BUCKET, "", web.path());
        let run = support::run_boot(&["pull"], &env, std::time::Duration::from_secs(60)).await;
        (run, web)
    }

    async fn ledger(&self, prefix: &str, service: &str, deployment: &str) -> Option<Value> {
        let key = format!("{prefix}.wikiops/deployments/wiki/{service}/{deployment}.json");
        let out = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .ok()?;
        serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).ok()
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The S3 put fixture for `key` (written as S3 encodes it), version and time.
fn s3_put(encoded_key: &str, version: &str, time: &str) -> Value {
    events::load_with(
        "config-redeploy-s3-put",
        &[
            (FIXTURE_BUCKET, BUCKET),
            ("\"LocalSettings.php\"", &format!("\"{encoded_key}\"")),
            (FIXTURE_VERSION, version),
            (FIXTURE_TIME, time),
        ],
    )
}

/// An S3 notification with one record per `(encoded key, version)`, from the batch fixture's first record.
fn s3_batch(records: &[(&str, &str)]) -> Value {
    let template = s3_put("LocalSettings.php", "v", &now())["Records"][0].clone();
    let records: Vec<Value> = records
        .iter()
        .map(|(key, version)| {
            let mut r = template.clone();
            r["s3"]["object"]["key"] = json!(key);
            r["s3"]["object"]["versionId"] = json!(version);
            r
        })
        .collect();
    json!({ "Records": records })
}

fn deployment_failed(deployment: &str) -> Value {
    events::load_with(
        "config-redeploy-ecs-deployment-failed",
        &[("ecs-svc/1234567890123456789", deployment)],
    )
}

fn reasons(out: &Value) -> Vec<String> {
    out["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap().to_string())
        .collect()
}

fn emf(lambda: &Lambda) -> Vec<Value> {
    lambda
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

#[tokio::test]
async fn one_change_one_deployment_and_duplicates_change_nothing() {
    let b = Bench::start().await;
    let lambda = b.lambda(&[]).await;
    let before = b.primary("web").await;

    // A key with a space and a plus, as S3 encodes it in notifications.
    let key = "extensions/My Extension+1.php";
    let version = b.put(key, GOOD).await;
    let event = s3_put("extensions/My+Extension%2B1.php", &version, &now());
    let out = lambda.invoke(event.clone()).await.unwrap();
    let deployed = b.primary("web").await;
    assert_ne!(deployed, before, "{out}");
    assert_eq!(
        out["redeployed"],
        json!([{"cluster": "wiki", "service": "web", "deployment_id": deployed, "keys": [key]}])
    );
    let ledger = b
        .ledger("", "web", &deployed)
        .await
        .expect("ledger written");
    assert_eq!(ledger["kind"], "config");
    assert_eq!(ledger["changes"][0]["key"], key);
    assert_eq!(ledger["changes"][0]["version_id"], version.as_str());

    // Ten deliveries of the same event: still that one deployment.
    for _ in 0..10 {
        let again = lambda.invoke(event.clone()).await.unwrap();
        assert_eq!(again["redeployed"], json!([]), "{again}");
        assert!(reasons(&again)[0].contains(&deployed), "{again}");
    }
    assert_eq!(b.primary("web").await, deployed);

    // The ledger write is an event too, and is ignored.
    let ledger_key = format!(".wikiops/deployments/wiki/web/{deployed}.json");
    let out = lambda
        .invoke(s3_put(&ledger_key, "x", &now()))
        .await
        .unwrap();
    assert!(reasons(&out)[0].contains("own records"), "{out}");
    assert_eq!(b.primary("web").await, deployed);

    // One EMF document per invocation, with the counters that moved.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let docs = emf(&lambda);
    assert_eq!(docs.len(), 12, "{docs:?}");
    assert_eq!(docs[0]["Redeployed"], 1);
    assert_eq!(docs[0]["Function"], "config-redeploy");
    assert!(
        docs[1..].iter().all(|d| d["Skipped"] == 1
            && d.get("Redeployed").is_none()
            && d.get("Errors").is_none()),
        "{docs:?}"
    );
}

#[tokio::test]
async fn duplicates_are_settled_by_the_release_whatever_the_event_time() {
    let b = Bench::start().await;
    let lambda = b.lambda(&[]).await;
    let before = b.primary("web").await;
    let version = b.put("LocalSettings.php", GOOD).await;
    // EventBridge writes whole seconds. A time in the future (a skewed clock) means the
    // deployment can never be proven newer than the change: only the ledger can tell.
    let future =
        (Utc::now() + chrono::Duration::seconds(30)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let event = events::load_with(
        "config-redeploy-eventbridge-object-created",
        &[
            (FIXTURE_BUCKET, BUCKET),
            (FIXTURE_VERSION, &version),
            ("2026-11-29T07:00:00Z", &future),
        ],
    );
    let out = lambda.invoke(event.clone()).await.unwrap();
    let deployed = b.primary("web").await;
    assert_ne!(deployed, before);
    assert_eq!(out["redeployed"][0]["deployment_id"], deployed.as_str());
    for _ in 0..10 {
        let again = lambda.invoke(event.clone()).await.unwrap();
        assert_eq!(again["redeployed"], json!([]), "{again}");
        assert!(
            reasons(&again)[0].contains("boots a release holding it"),
            "{again}"
        );
    }
    assert_eq!(b.primary("web").await, deployed);

    // A real change under the same coarse time is not mistaken for a duplicate.
    let v2 = b
        .put("LocalSettings.php", "<?php\n$wgSitename = 'Other';\n")
        .await;
    let mut event = event;
    event["detail"]["object"]["version-id"] = json!(v2);
    let out = lambda.invoke(event).await.unwrap();
    let third = b.primary("web").await;
    assert_ne!(third, deployed);
    assert_eq!(out["redeployed"][0]["deployment_id"], third.as_str());
}

#[tokio::test]
async fn a_batch_is_one_deployment_per_service_and_routes_by_longest_prefix() {
    let b = Bench::start().await;
    b.moto.ecs_service("wiki", "de", "wiki-de").await;
    let lambda = b
        .lambda(&[(
            "CONFIG_ROUTES",
            r#"[{"prefix":"de/","cluster":"wiki","service":"de"}]"#,
        )])
        .await;
    let (web0, de0) = (b.primary("web").await, b.primary("de").await);
    let v1 = b.put("LocalSettings.php", GOOD).await;
    let v2 = b.put("extensions/Cite.php", GOOD).await;
    let v3 = b.put("de/LocalSettings.php", GOOD).await;
    let v4 = b.put("de/skins/custom styles.css", "body{}").await;
    let mut event = s3_batch(&[
        ("LocalSettings.php", &v1),
        ("extensions/Cite.php", &v2),
        ("de/LocalSettings.php", &v3),
        ("de/skins/custom+styles.css", &v4),
        ("images/", "null"),
        ("de/.wikiops/deployments/wiki/de/ecs-svc/1.json", "x"),
        ("LocalSettings.php", &v1),
    ]);
    let mut foreign = event["Records"][0].clone();
    foreign["s3"]["bucket"]["name"] = json!("someone-else");
    event["Records"].as_array_mut().unwrap().push(foreign);

    let out = lambda.invoke(event.clone()).await.unwrap();
    let (web1, de1) = (b.primary("web").await, b.primary("de").await);
    assert_ne!(web1, web0);
    assert_ne!(de1, de0);
    let redeployed = out["redeployed"].as_array().unwrap();
    assert_eq!(redeployed.len(), 2, "{out}");
    let by = |svc: &str| {
        redeployed
            .iter()
            .find(|r| r["service"] == svc)
            .unwrap()
            .clone()
    };
    assert_eq!(by("web")["deployment_id"], web1.as_str());
    assert_eq!(
        by("web")["keys"],
        json!(["LocalSettings.php", "extensions/Cite.php"])
    );
    assert_eq!(by("de")["deployment_id"], de1.as_str());
    assert_eq!(
        by("de")["keys"],
        json!(["de/LocalSettings.php", "de/skins/custom styles.css"])
    );
    let r = reasons(&out);
    assert_eq!(r.len(), 3, "{out}");
    assert!(r.iter().any(|s| s == "folder marker"));
    assert!(r.iter().any(|s| s.contains("own records")));
    assert!(r.iter().any(|s| s.contains("someone-else")));
    // The de ledger lives under the de prefix, and its release lists only the de objects.
    let de_ledger = b.ledger("de/", "de", &de1).await.unwrap();
    assert_eq!(
        de_ledger["release"]["objects"],
        json!({"de/LocalSettings.php": v3, "de/skins/custom styles.css": v4})
    );

    // The whole batch again: nothing new.
    let out = lambda.invoke(event).await.unwrap();
    assert_eq!(out["redeployed"], json!([]), "{out}");
    assert_eq!((b.primary("web").await, b.primary("de").await), (web1, de1));
}

#[tokio::test]
async fn an_invalid_object_is_refused_and_the_service_left_alone() {
    let b = Bench::start().await;
    let lambda = b.lambda(&[("MAX_CONFIG_BYTES", "64")]).await;
    let before = b.primary("web").await;
    b.put("LocalSettings.php", GOOD).await;
    let v1 = b.put("Extra.php", "echo 'no opening tag';\n").await;
    let v2 = b.put("Empty.php", "").await;
    let v3 = b.put("big.css", &"x".repeat(65)).await;
    let event = s3_batch(&[("Extra.php", &v1), ("Empty.php", &v2), ("big.css", &v3)]);
    let out = lambda.invoke(event).await.unwrap();
    assert_eq!(b.primary("web").await, before, "{out}");
    assert_eq!(out["redeployed"], json!([]));
    let rejected = out["rejected"].as_array().unwrap();
    let keys: Vec<&str> = rejected
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["Empty.php", "Extra.php", "big.css"], "{out}");
    assert!(rejected[0]["reason"].as_str().unwrap().contains("empty"));
    assert!(rejected[1]["reason"].as_str().unwrap().contains("<?php"));
    assert!(
        rejected[2]["reason"]
            .as_str()
            .unwrap()
            .contains("MAX_CONFIG_BYTES")
    );

    // A valid change elsewhere would still boot the refused ones: still refused.
    let v = b.put("skin.css", "body{}").await;
    let out = lambda.invoke(s3_put("skin.css", &v, &now())).await.unwrap();
    assert_eq!(out["rejected"].as_array().unwrap().len(), 3, "{out}");
    assert_eq!(b.primary("web").await, before);

    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let docs = emf(&lambda);
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert!(
        docs.iter()
            .all(|d| d["Rejected"] == 3 && d.get("Redeployed").is_none()),
        "{docs:?}"
    );
    assert!(lambda.logs().contains("configuration refused"));
    assert!(
        !lambda.logs().contains(SECRET),
        "file content reached the logs"
    );

    // Fixed: the next change rolls out.
    b.s3.delete_object()
        .bucket(BUCKET)
        .key("Empty.php")
        .send()
        .await
        .unwrap();
    b.s3.delete_object()
        .bucket(BUCKET)
        .key("big.css")
        .send()
        .await
        .unwrap();
    let v = b.put("Extra.php", "<?php\necho 'fixed';\n").await;
    let out = lambda
        .invoke(s3_put("Extra.php", &v, &now()))
        .await
        .unwrap();
    assert_eq!(out["rejected"], json!([]), "{out}");
    assert_ne!(b.primary("web").await, before);
}

#[tokio::test]
async fn a_failed_deployment_points_back_to_the_previous_release_exactly() {
    let b = Bench::start().await;
    let lambda = b.lambda(&[]).await;
    let original = b.primary("web").await;
    let good = b.put("LocalSettings.php", GOOD).await;
    let old = b.put("extensions/Old.php", "<?php\n// old\n").await;
    lambda
        .invoke(s3_batch(&[
            ("LocalSettings.php", &good),
            ("extensions/Old.php", &old),
        ]))
        .await
        .unwrap();
    let d1 = b.primary("web").await;
    let r1 = b.release().await.expect("first release");
    assert_eq!(
        r1,
        BTreeMap::from([
            ("LocalSettings.php".to_string(), good.clone()),
            ("extensions/Old.php".to_string(), old.clone())
        ])
    );

    // A bad configuration: one file changed, one added, one removed.
    let bad_body = "<?php\n$wgDBserver = 'nowhere';\n";
    let bad = b.put("LocalSettings.php", bad_body).await;
    let created = b.put("extensions/New.php", "<?php\n// new\n").await;
    b.s3.delete_object()
        .bucket(BUCKET)
        .key("extensions/Old.php")
        .send()
        .await
        .unwrap();
    let mut batch = s3_batch(&[
        ("LocalSettings.php", &bad),
        ("extensions/New.php", &created),
    ]);
    let mut removed = batch["Records"][0].clone();
    removed["eventName"] = json!("ObjectRemoved:DeleteMarkerCreated");
    removed["s3"]["object"]["key"] = json!("extensions/Old.php");
    batch["Records"].as_array_mut().unwrap().push(removed);
    let out = lambda.invoke(batch).await.unwrap();
    let d2 = b.primary("web").await;
    assert_ne!(d2, d1);
    assert_eq!(out["redeployed"][0]["deployment_id"], d2.as_str());
    let r2 = b.release().await.unwrap();
    assert_eq!(
        r2,
        BTreeMap::from([
            ("LocalSettings.php".to_string(), bad.clone()),
            ("extensions/New.php".to_string(), created.clone())
        ])
    );
    let l2 = b.ledger("", "web", &d2).await.unwrap();
    assert_eq!(l2["previous"]["objects"], json!(r1));

    // A forged or stale failure for the deployment ECS reports healthy: nothing changes.
    let out = lambda.invoke(deployment_failed(&d2)).await.unwrap();
    assert_eq!(out["rolled_back"], json!([]), "{out}");
    assert!(reasons(&out)[0].contains("stale or forged"), "{out}");
    assert_eq!(b.primary("web").await, d2);
    assert_eq!(b.release().await.unwrap(), r2);

    // ECS's circuit breaker fails d2 (and starts its own rollback): the configuration points
    // back to the previous release, exactly, and the service redeploys. No object is copied.
    let ecs_own = b.ecs_rolls_back_by_itself().await;
    let versions_before = (
        b.versions("LocalSettings.php").await,
        b.versions("extensions/Old.php").await,
        b.versions("extensions/New.php").await,
    );
    // This time the deployment alarms failed it (the pages broke after it booted): the same handling.
    let mut by_alarm = deployment_failed(&d2);
    by_alarm["detail"]["reason"] =
        json!("ECS deployment alarm(s) in ALARM state: wiki-Alb5xxAlarm-1A2B3C4D5E6F.");
    let out = lambda.invoke(by_alarm).await.unwrap();
    let d3 = b.primary("web").await;
    assert_ne!(d3, ecs_own);
    let rb = &out["rolled_back"][0];
    assert_eq!(rb["failed_deployment_id"], d2.as_str(), "{out}");
    assert_eq!(rb["deployment_id"], d3.as_str());
    assert_eq!(rb["release"]["objects"], json!(r1));
    assert_eq!(
        rb["withdrawn"],
        json!({"LocalSettings.php": bad, "extensions/New.php": created, "extensions/Old.php": null})
    );
    assert_eq!(
        b.release().await.unwrap(),
        r1,
        "the previous release, version for version"
    );
    assert_eq!(
        (
            b.versions("LocalSettings.php").await,
            b.versions("extensions/Old.php").await,
            b.versions("extensions/New.php").await,
        ),
        versions_before,
        "no object written"
    );
    let ledger = b.ledger("", "web", &d3).await.unwrap();
    assert_eq!(ledger["kind"], "rollback");
    assert_eq!(ledger["rollback_of"], d2.as_str());
    assert_eq!(ledger["release"]["objects"], json!(r1));
    assert_eq!(
        b.ledger("", "web", &d2).await.unwrap()["rolled_back_by"],
        d3.as_str()
    );
    // A task starting now boots the previous release, whatever the bucket's latest objects.
    let (run, web) = b.boot().await;
    assert_eq!(run.code, Some(0), "{}", run.logs());
    assert_eq!(
        std::fs::read_to_string(web.path().join("LocalSettings.php")).unwrap(),
        GOOD
    );
    assert_eq!(
        support::files_under(web.path()),
        vec!["LocalSettings.php", "extensions/Old.php"]
    );

    // The same failure delivered again: nothing more.
    let out = lambda.invoke(deployment_failed(&d2)).await.unwrap();
    assert_eq!(out["rolled_back"], json!([]), "{out}");
    assert!(reasons(&out)[0].contains("already rolled back"), "{out}");
    // Another change while the bad file is still the latest: refused until it is fixed.
    let v = b.put("skin.css", "body{}").await;
    let out = lambda.invoke(s3_put("skin.css", &v, &now())).await.unwrap();
    let refused: Vec<&str> = out["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        refused,
        vec![
            "LocalSettings.php",
            "extensions/New.php",
            "extensions/Old.php"
        ],
        "{out}"
    );
    assert_eq!(b.primary("web").await, d3);
    // The rollback fails too: never rolled back.
    b.ecs_rolls_back_by_itself().await;
    let out = lambda.invoke(deployment_failed(&d3)).await.unwrap();
    assert_eq!(out["rolled_back"], json!([]), "{out}");
    assert!(reasons(&out)[0].contains("never rolled back"), "{out}");
    // A deployment this function did not start is ECS's business.
    let out = lambda.invoke(deployment_failed(&original)).await.unwrap();
    assert!(
        reasons(&out)[0].contains("not started by config-redeploy"),
        "{out}"
    );
    // Other deployment events and other services are not rollbacks.
    let mut completed = deployment_failed(&d3);
    completed["detail"]["eventName"] = json!("SERVICE_DEPLOYMENT_COMPLETED");
    let out = lambda.invoke(completed).await.unwrap();
    assert!(reasons(&out)[0].contains("needs no rollback"), "{out}");
    let mut other = deployment_failed(&d2);
    other["resources"] = json!(["arn:aws:ecs:us-east-1:123456789012:service/wiki/api"]);
    let out = lambda.invoke(other).await.unwrap();
    assert!(reasons(&out)[0].contains("not routed"), "{out}");
    assert_eq!(b.release().await.unwrap(), r1);
    assert!(
        !lambda.logs().contains(SECRET),
        "file content reached the logs"
    );
}

/// A failure event for a deployment ECS no longer lists (superseded by a rotation's deployment,
/// then replayed or forged) rolls nothing back: only ECS's FAILED for that very deployment does.
#[tokio::test]
async fn a_stale_failure_for_a_superseded_deployment_rolls_nothing_back() {
    let b = Bench::start().await;
    let lambda = b.lambda(&[]).await;
    for body in [GOOD, "<?php\n$wgSitename = 'Two';\n"] {
        let v = b.put("LocalSettings.php", body).await;
        lambda
            .invoke(s3_put("LocalSettings.php", &v, &now()))
            .await
            .unwrap();
    }
    let d2 = b.primary("web").await;
    let r2 = b.release().await.unwrap();
    let later = b.other_deployment().await;
    let out = lambda.invoke(deployment_failed(&d2)).await.unwrap();
    assert_eq!(out["rolled_back"], json!([]), "{out}");
    assert!(reasons(&out)[0].contains("no longer lists"), "{out}");
    assert_eq!(b.release().await.unwrap(), r2, "the pointer is unchanged");
    assert_eq!(b.primary("web").await, later, "no deployment started");
}

/// `aws s3 sync ./config s3://…/ --delete` from a folder without `.wikiops/` deletes the release
/// pointer and the ledgers (here no bucket policy refuses it): a task still boots the last
/// release (the pointer's last version), never the latest objects, and the next change is not a
/// first release (the withdrawn file stays refused). An unreadable pointer is an error.
#[tokio::test]
async fn a_deleted_pointer_is_read_from_its_history_never_a_first_release() {
    let b = Bench::start().await;
    let lambda = b.lambda(&[]).await;
    let good = b.put("LocalSettings.php", GOOD).await;
    lambda
        .invoke(s3_put("LocalSettings.php", &good, &now()))
        .await
        .unwrap();
    let bad = b
        .put("LocalSettings.php", "<?php\n$wgServer = 'wrong';\n")
        .await;
    lambda
        .invoke(s3_put("LocalSettings.php", &bad, &now()))
        .await
        .unwrap();
    let failed = b.primary("web").await;
    b.ecs_rolls_back_by_itself().await;
    let out = lambda.invoke(deployment_failed(&failed)).await.unwrap();
    assert_eq!(out["rolled_back"].as_array().unwrap().len(), 1, "{out}");

    // The sync: every `.wikiops/` key deleted (delete markers; versions stay).
    let listed =
        b.s3.list_objects_v2()
            .bucket(BUCKET)
            .prefix(".wikiops/")
            .send()
            .await
            .unwrap();
    for o in listed.contents() {
        b.s3.delete_object()
            .bucket(BUCKET)
            .key(o.key().unwrap())
            .send()
            .await
            .unwrap();
    }
    assert_eq!(b.release().await, None, "the pointer is gone");

    // A task starting now boots the last release, not the withdrawn latest object.
    let (run, web) = b.boot().await;
    assert_eq!(run.code, Some(0), "{}", run.logs());
    assert_eq!(
        std::fs::read_to_string(web.path().join("LocalSettings.php")).unwrap(),
        GOOD,
        "{}",
        run.logs()
    );
    assert!(run.logs().contains("deleted"), "{}", run.logs());
    // The next change is no first release: the withdrawn file is still refused.
    let v = b.put("skin.css", "body{}").await;
    let out = lambda.invoke(s3_put("skin.css", &v, &now())).await.unwrap();
    assert_eq!(out["rejected"][0]["key"], "LocalSettings.php", "{out}");
    assert_eq!(out["redeployed"], json!([]), "{out}");
    // A fix releases again and writes the pointer back.
    let fixed = b.put("LocalSettings.php", GOOD).await;
    let out = lambda
        .invoke(s3_put("LocalSettings.php", &fixed, &now()))
        .await
        .unwrap();
    assert_eq!(out["redeployed"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(
        b.release().await.unwrap().get("LocalSettings.php"),
        Some(&fixed)
    );

    // An unreadable pointer is an error for both, never "no release yet".
    b.put(".wikiops/release.json", "{ not json").await;
    let v = b.put("skin.css", "body{color:red}").await;
    let err = lambda
        .invoke(s3_put("skin.css", &v, &now()))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "Rejected", "{err}");
    assert!(err.to_string().contains("release.json"), "{err}");
    let (run, _web) = b.boot().await;
    assert_ne!(run.code, Some(0), "{}", run.logs());
    assert!(run.logs().contains("unreadable"), "{}", run.logs());
}

/// A `LocalSettings.php` PHP cannot parse is refused within the invocation that sees its upload,
/// named with its line and message, counted as a metric; no deployment starts and a task
/// still boots the last release. Before any release, wiki-boot refuses it the same way.
#[tokio::test]
async fn a_php_syntax_error_is_refused_before_any_task_starts() {
    let b = Bench::start().await;
    let lambda = b.lambda(&[]).await;
    let broken =
        "<?php\n$wgSitename = 'Wiki';\n$wgGroupPermissions['*']['edit'] = false\n$wgLogo = 'x';\n";
    // Before the first release: a task refuses it, naming the file and the line.
    b.put("LocalSettings.php", broken).await;
    let (run, _web) = b.boot().await;
    assert_ne!(run.code, Some(0), "{}", run.logs());
    assert!(
        run.logs().contains("LocalSettings.php") && run.logs().contains("line 4"),
        "{}",
        run.logs()
    );
    let good = b.put("LocalSettings.php", GOOD).await;
    lambda
        .invoke(s3_put("LocalSettings.php", &good, &now()))
        .await
        .unwrap();
    let released = b.primary("web").await;
    let bad = b.put("LocalSettings.php", broken).await;
    let started = std::time::Instant::now();
    let out = lambda
        .invoke(s3_put("LocalSettings.php", &bad, &now()))
        .await
        .unwrap();
    let took = started.elapsed();
    let r = &out["rejected"][0];
    assert_eq!(r["key"], "LocalSettings.php", "{out}");
    assert_eq!(r["line"], 4, "{out}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .starts_with("PHP syntax error on line 4: "),
        "{out}"
    );
    assert_eq!(out["redeployed"], json!([]), "{out}");
    assert_eq!(b.primary("web").await, released, "no deployment");
    assert!(lambda.logs().contains("PhpSyntaxErrors"), "the metric");
    assert!(
        took < std::time::Duration::from_secs(5),
        "rejected in {took:?}"
    );
    println!("time to reject a syntax error (debug build, moto): {took:?}");
    let (run, web) = b.boot().await;
    assert_eq!(run.code, Some(0), "{}", run.logs());
    assert_eq!(
        std::fs::read_to_string(web.path().join("LocalSettings.php")).unwrap(),
        GOOD
    );
}

#[tokio::test]
async fn a_rejected_upload_never_reaches_a_task() {
    let b = Bench::start().await;
    let lambda = b.lambda(&[]).await;
    let good = b.put("LocalSettings.php", GOOD).await;
    lambda
        .invoke(s3_put("LocalSettings.php", &good, &now()))
        .await
        .unwrap();
    let released = b.primary("web").await;
    for bad_body in ["", "$wgSitename = 'no opening tag';\n", "\u{feff}<?php\n"] {
        let bad = b.put("LocalSettings.php", bad_body).await;
        let out = lambda
            .invoke(s3_put("LocalSettings.php", &bad, &now()))
            .await
            .unwrap();
        assert_eq!(out["rejected"][0]["key"], "LocalSettings.php", "{out}");
        assert_eq!(b.primary("web").await, released);
        assert_eq!(b.release().await.unwrap()["LocalSettings.php"], good);
        // A task starting for any other reason (scale out, replacement) boots the release.
        let (run, web) = b.boot().await;
        assert_eq!(run.code, Some(0), "{}", run.logs());
        assert_eq!(
            std::fs::read_to_string(web.path().join("LocalSettings.php")).unwrap(),
            GOOD,
            "{bad_body:?} reached a task"
        );
        assert!(
            run.logs()
                .contains("booting the current configuration release")
        );
    }
}

#[tokio::test]
async fn before_the_first_release_a_task_checks_what_it_finds() {
    let b = Bench::start().await;
    b.put("LocalSettings.php", GOOD).await;
    let (run, web) = b.boot().await;
    assert_eq!(run.code, Some(0), "{}", run.logs());
    assert!(
        run.logs().contains("no configuration release yet"),
        "{}",
        run.logs()
    );
    assert_eq!(
        std::fs::read_to_string(web.path().join("LocalSettings.php")).unwrap(),
        GOOD
    );
    // An invalid object: refused with one line naming it, nothing installed.
    b.put("extensions/Broken.php", "echo 1;").await;
    let (run, web) = b.boot().await;
    assert_ne!(run.code, Some(0), "{}", run.logs());
    let logs = run.logs();
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("extensions/Broken.php"))
        .collect();
    assert_eq!(refusals.len(), 1, "{}", run.logs());
    assert!(
        refusals[0].contains("does not begin with <?php"),
        "{}",
        refusals[0]
    );
    assert!(support::files_under(web.path()).is_empty());
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let b = Bench::start().await;
    let lambda = b.lambda(&[("DRY_RUN", "true")]).await;
    let before = b.primary("web").await;
    let v = b.put("LocalSettings.php", GOOD).await;
    let out = lambda
        .invoke(s3_put("LocalSettings.php", &v, &now()))
        .await
        .unwrap();
    assert_eq!(out["dry_run"], true);
    assert_eq!(
        out["redeployed"],
        json!([{"cluster": "wiki", "service": "web", "deployment_id": null, "keys": ["LocalSettings.php"]}])
    );
    assert_eq!(b.primary("web").await, before);
    assert!(b.ledger("", "web", &before).await.is_none());
    assert!(lambda.logs().contains("\"plan\":"), "plan not logged");
    assert!(lambda.logs().contains("redeploy"), "plan not logged");

    // A rollback in a dry run: planned, not done.
    let wet = b.lambda(&[]).await;
    wet.invoke(s3_put("LocalSettings.php", &v, &now()))
        .await
        .unwrap();
    let bad_body = "<?php\n$wgServer = 'wrong';\n";
    let bad = b.put("LocalSettings.php", bad_body).await;
    wet.invoke(s3_put("LocalSettings.php", &bad, &now()))
        .await
        .unwrap();
    let failed = b.primary("web").await;
    let release = b.release().await;
    let after = b.ecs_rolls_back_by_itself().await;
    let out = lambda.invoke(deployment_failed(&failed)).await.unwrap();
    let rb = &out["rolled_back"][0];
    assert_eq!(rb["deployment_id"], Value::Null, "{out}");
    assert_eq!(rb["release"]["objects"], json!({"LocalSettings.php": v}));
    assert_eq!(rb["withdrawn"], json!({"LocalSettings.php": bad}));
    assert_eq!(b.body("LocalSettings.php").await, bad_body);
    assert_eq!(b.release().await, release);
    assert_eq!(b.primary("web").await, after);
    assert!(lambda.logs().contains("rollback plan"));
}

#[tokio::test]
async fn errors_name_their_cause_and_other_services_still_roll_out() {
    let b = Bench::start().await;

    // Missing setting: one error naming it, nothing changed.
    let mut env = b.moto.env();
    env.push(("CONFIG_BUCKET".into(), BUCKET.into()));
    env.push(("ECS_CLUSTER".into(), "wiki".into()));
    let lambda = Lambda::start("config-redeploy", env).await;
    let before = b.primary("web").await;
    let v = b.put("LocalSettings.php", GOOD).await;
    let err = lambda
        .invoke(s3_put("LocalSettings.php", &v, &now()))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "Settings");
    assert_eq!(
        err.error_message,
        "missing environment variable ECS_SERVICE"
    );
    drop(lambda);

    let lambda = b
        .lambda(&[(
            "CONFIG_ROUTES",
            r#"[{"prefix":"gone/","cluster":"wiki","service":"gone"}]"#,
        )])
        .await;
    // Malformed event.
    let err = lambda
        .invoke(json!({"Records": [{"nope": 1}]}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent", "{err}");
    assert_eq!(b.primary("web").await, before);

    // One route's service does not exist: its error, and the other route still rolls out.
    let g = b.put("gone/LocalSettings.php", GOOD).await;
    let batch = s3_batch(&[("LocalSettings.php", &v), ("gone/LocalSettings.php", &g)]);
    let err = lambda.invoke(batch).await.unwrap_err();
    assert_eq!(err.error_type, "PartialFailure", "{err}");
    assert!(err.error_message.contains("wiki/gone"), "{err}");
    assert_ne!(b.primary("web").await, before);
    assert!(lambda.logs().contains("done with errors"));

    // Only the missing one: its own error type.
    let err = lambda
        .invoke(s3_put("gone/LocalSettings.php", &g, &now()))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "NotFound", "{err}");
    assert!(err.error_message.contains("gone"), "{err}");
}

#[tokio::test]
async fn an_eventbridge_deletion_is_a_change_too() {
    let b = Bench::start().await;
    let lambda = b.lambda(&[]).await;
    let v1 = b.put("LocalSettings.php", GOOD).await;
    let v2 = b.put("extensions/Cite.php", GOOD).await;
    lambda
        .invoke(s3_batch(&[
            ("LocalSettings.php", &v1),
            ("extensions/Cite.php", &v2),
        ]))
        .await
        .unwrap();
    let before = b.primary("web").await;
    let marker =
        b.s3.delete_object()
            .bucket(BUCKET)
            .key("extensions/Cite.php")
            .send()
            .await
            .unwrap()
            .version_id()
            .unwrap()
            .to_string();
    let event = events::load_with(
        "config-redeploy-eventbridge-object-deleted",
        &[
            (FIXTURE_BUCKET, BUCKET),
            ("Zf4b6oFE0xF0dWp9jvhtXyAdqX5k7Ihg", &marker),
            (
                "2026-11-29T07:05:00Z",
                &Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
        ],
    );
    let out = lambda.invoke(event.clone()).await.unwrap();
    let deployed = b.primary("web").await;
    assert_ne!(deployed, before);
    assert_eq!(
        out["redeployed"][0]["keys"],
        json!(["extensions/Cite.php"]),
        "{out}"
    );
    let ledger = b.ledger("", "web", &deployed).await.unwrap();
    assert_eq!(
        ledger["changes"],
        json!([{"key": "extensions/Cite.php", "version_id": null}])
    );
    assert_eq!(
        ledger["release"]["objects"],
        json!({"LocalSettings.php": v1})
    );
    let out = lambda.invoke(event).await.unwrap();
    assert_eq!(out["redeployed"], json!([]), "{out}");
    assert_eq!(b.primary("web").await, deployed);
}

#[tokio::test]
async fn a_deleted_service_is_an_error_for_its_route() {
    let b = Bench::start().await;
    b.moto.ecs_service("wiki", "old", "wiki-old").await;
    b.ecs
        .delete_service()
        .cluster("wiki")
        .service("old")
        .force(true)
        .send()
        .await
        .unwrap();
    let lambda = b
        .lambda(&[(
            "CONFIG_ROUTES",
            r#"[{"prefix":"old/","cluster":"wiki","service":"old"}]"#,
        )])
        .await;
    let before = b.primary("web").await;
    let v = b.put("old/LocalSettings.php", GOOD).await;
    let w = b.put("LocalSettings.php", GOOD).await;
    let err = lambda
        .invoke(s3_batch(&[
            ("old/LocalSettings.php", &v),
            ("LocalSettings.php", &w),
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "PartialFailure", "{err}");
    assert!(err.error_message.contains("wiki/old"), "{err}");
    assert!(
        err.error_message.contains("INACTIVE") || err.error_message.contains("MISSING"),
        "{err}"
    );
    assert_ne!(
        b.primary("web").await,
        before,
        "the other route still rolled out"
    );
    // The summary is logged even though the invocation failed.
    let logs = lambda.logs();
    let summary: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "done with errors")
        .and_then(|l| serde_json::from_str(l["fields"]["summary"].as_str()?).ok())
        .expect("summary logged");
    assert_eq!(summary["errors"][0]["service"], "old", "{summary}");
    assert_eq!(summary["errors"][0]["error_type"], "NotFound", "{summary}");
    assert_eq!(summary["redeployed"][0]["service"], "web", "{summary}");
}

#[tokio::test]
async fn files_uploaded_together_and_handled_in_parallel_make_one_deployment() {
    let b = Bench::start().await;
    // `aws s3 sync` of four files: four EventBridge events, four concurrent function instances.
    let lambdas = [
        b.lambda(&[]).await,
        b.lambda(&[]).await,
        b.lambda(&[]).await,
        b.lambda(&[]).await,
    ];
    for l in &lambdas {
        l.wait_ready(std::time::Duration::from_secs(10)).await;
    }
    let before = b.primary("web").await;
    let mut events_ = Vec::new();
    for key in ["LocalSettings.php", "a.php", "b.php", "c.css"] {
        let version = b.put(key, GOOD).await;
        let mut e = events::load_with(
            "config-redeploy-eventbridge-object-created",
            &[
                (FIXTURE_BUCKET, BUCKET),
                (FIXTURE_VERSION, &version),
                (
                    "2026-11-29T07:00:00Z",
                    &Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
                ),
            ],
        );
        e["detail"]["object"]["key"] = json!(key);
        events_.push(e);
    }
    let (o1, o2, o3, o4) = tokio::join!(
        lambdas[0].invoke(events_[0].clone()),
        lambdas[1].invoke(events_[1].clone()),
        lambdas[2].invoke(events_[2].clone()),
        lambdas[3].invoke(events_[3].clone()),
    );
    let outs: Vec<Value> = [o1, o2, o3, o4].into_iter().map(|o| o.unwrap()).collect();
    let ids: Vec<&str> = outs
        .iter()
        .flat_map(|o| o["redeployed"].as_array().unwrap())
        .map(|r| r["deployment_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{outs:?}");
    let primary = b.primary("web").await;
    assert_ne!(primary, before);
    assert_eq!(ids[0], primary);
    // One release, written once, for the one deployment: every file at its uploaded version.
    assert_eq!(b.versions(".wikiops/release.json").await, 1);
    let release = b.release().await.unwrap();
    assert_eq!(release.len(), 4);
    for e in &events_ {
        let key = e["detail"]["object"]["key"].as_str().unwrap();
        assert_eq!(
            release[key],
            e["detail"]["object"]["version-id"].as_str().unwrap()
        );
    }
    // The lease is gone again.
    let lease =
        b.s3.head_object()
            .bucket(BUCKET)
            .key(".wikiops/lease/wiki/web.json")
            .send()
            .await;
    assert!(lease.is_err(), "lease left behind");
}

/// The release bookkeeping's cost, measured: every AWS call of config-redeploy and of a task
/// booting goes through a counting HTTPS front to moto (N = 3 objects, P = 2 of them `.php`).
#[tokio::test]
async fn aws_calls_per_duplicate_release_rollback_and_boot() {
    use wikiops_tests::https_proxy::{self, HttpsProxy};
    let b = Bench::start().await;
    let ca = wikiops_tests::tls::Ca::new("wikiops test CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let ca_path = ca_path.display().to_string();
    let proxy = HttpsProxy::start(&ca, &b.moto.endpoint).await;
    let mut env = https_proxy::through(b.moto.env(), &proxy.endpoint, &ca_path);
    env.extend(
        [
            ("CONFIG_BUCKET", BUCKET),
            ("ECS_CLUSTER", "wiki"),
            ("ECS_SERVICE", "web"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let lambda = Lambda::start("config-redeploy", env).await;
    let calls = |before: usize| proxy.forwarded() - before;

    let v1 = b.put("LocalSettings.php", GOOD).await;
    let v2 = b.put("extra.php", "<?php\n// extra\n").await;
    let v3 = b.put("logo.png", "png").await;
    let batch = s3_batch(&[
        ("LocalSettings.php", &v1),
        ("extra.php", &v2),
        ("logo.png", &v3),
    ]);
    let n = proxy.forwarded();
    let out = lambda.invoke(batch.clone()).await.unwrap();
    assert_eq!(out["redeployed"].as_array().unwrap().len(), 1, "{out}");
    // S3: pointer x2 (the first release: absent, so its history is listed too, x2), lease put
    // + delete, PRIMARY ledger, the image's list, list, 3 heads, 2 .php bodies, pointer put,
    // ledger put = 11 + N + P = 16; ECS: 2 DescribeServices + 1 UpdateService.
    assert_eq!(calls(n), 16 + 3, "a first release");

    let n = proxy.forwarded();
    lambda.invoke(batch).await.unwrap();
    assert_eq!(
        calls(n),
        1 + 1,
        "a duplicate: the pointer and DescribeServices"
    );

    let web = support::open_tempdir();
    let boot_env = https_proxy::through(
        support::task_env(&b.moto, BUCKET, "", web.path()),
        &proxy.endpoint,
        &ca_path,
    );
    let n = proxy.forwarded();
    let run = support::run_boot(&["pull"], &boot_env, std::time::Duration::from_secs(60)).await;
    assert_eq!(run.code, Some(0), "{}", run.logs());
    assert_eq!(calls(n), 1 + 3, "a boot: the pointer and each version");

    let bad = b
        .put("LocalSettings.php", "<?php\n$wgServer = 'x';\n")
        .await;
    lambda
        .invoke(s3_put("LocalSettings.php", &bad, &now()))
        .await
        .unwrap();
    let failed = b.primary("web").await;
    b.ecs_rolls_back_by_itself().await;
    let n = proxy.forwarded();
    let out = lambda.invoke(deployment_failed(&failed)).await.unwrap();
    assert_eq!(out["rolled_back"].as_array().unwrap().len(), 1, "{out}");
    // S3: failed ledger x2, lease put + delete, pointer, PRIMARY ledger, pointer put, two
    // ledger puts = 9; ECS: DescribeServices + UpdateService.
    assert_eq!(calls(n), 9 + 2, "a rollback");
}
