//! taskdef-janitor through its real binary against moto: fleets with services (several
//! deployments, task sets), standalone tasks, EventBridge rules and Scheduler schedules
//! over several families; Step Functions state machines and EventBridge Pipes that run ECS
//! tasks; dry run; fail-closed discovery; deregister then delete; the plaintext report (values
//! never logged); pacing and the resume after a deadline.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{
    ContainerDefinition, DeploymentController, DeploymentControllerType, KeyValuePair, LaunchType,
    TaskDefinitionStatus,
};
use serde_json::{Value, json};
use wikiops_tests::{Lambda, Moto, events};

const ROLE: &str = "arn:aws:iam::123456789012:role/ecs-events";
const SFN_ROLE: &str = "arn:aws:iam::123456789012:role/sfn";
const DB_PASSWORD: &str = "Sup3r-Secr3t-Value-9f8e7d";
const ACCESS_KEY: &str = "AKIAQWERTYUIOPASDFGH";
const URL_PASSWORD: &str = "pl41n-in-the-url";

/// Registers one revision of `family` with `environment` and returns its ARN.
async fn register(ecs: &aws_sdk_ecs::Client, family: &str, environment: &[(&str, &str)]) -> String {
    let mut container = ContainerDefinition::builder()
        .name("wiki")
        .image("mediawiki:1.43")
        .memory(512);
    for (k, v) in environment {
        container = container.environment(KeyValuePair::builder().name(*k).value(*v).build());
    }
    ecs.register_task_definition()
        .family(family)
        .container_definitions(container.build())
        .send()
        .await
        .expect("RegisterTaskDefinition")
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .expect("arn")
        .to_string()
}

/// Registers revisions 1..=n of `family`.
async fn register_n(ecs: &aws_sdk_ecs::Client, family: &str, n: u32) -> Vec<String> {
    let mut arns = vec![];
    for _ in 0..n {
        arns.push(register(ecs, family, &[("MW_SITE_NAME", "Wiki")]).await);
    }
    arns
}

fn arn(family: &str, revision: u32) -> String {
    format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{family}:{revision}")
}

/// Revision numbers of `family` with `status`.
async fn listed(
    ecs: &aws_sdk_ecs::Client,
    family: &str,
    status: TaskDefinitionStatus,
) -> BTreeSet<u32> {
    ecs.list_task_definitions()
        .family_prefix(family)
        .status(status)
        .send()
        .await
        .expect("ListTaskDefinitions")
        .task_definition_arns()
        .iter()
        .map(|a| a.rsplit(':').next().unwrap().parse().unwrap())
        .collect()
}

async fn active(ecs: &aws_sdk_ecs::Client, family: &str) -> BTreeSet<u32> {
    listed(ecs, family, TaskDefinitionStatus::Active).await
}

async fn inactive(ecs: &aws_sdk_ecs::Client, family: &str) -> BTreeSet<u32> {
    listed(ecs, family, TaskDefinitionStatus::Inactive).await
}

/// Every family's ACTIVE and INACTIVE revisions (to prove nothing changed).
async fn snapshot(
    ecs: &aws_sdk_ecs::Client,
    families: &[&str],
) -> Vec<(BTreeSet<u32>, BTreeSet<u32>)> {
    let mut out = vec![];
    for f in families {
        out.push((active(ecs, f).await, inactive(ecs, f).await));
    }
    out
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn arns(items: &[(&str, u32)]) -> BTreeSet<String> {
    items.iter().map(|(f, r)| arn(f, *r)).collect()
}

fn range(family: &str, revisions: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    revisions.into_iter().map(|r| arn(family, r)).collect()
}

fn env(moto: &Moto, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = moto.env();
    env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

const FAMILIES: [&str; 5] = [
    "wiki-web",
    "wiki-jobs",
    "wiki-legacy",
    "other-app",
    "unrelated",
];

/// The fleet: two clusters, services with a rolled deployment and a task set, a standalone
/// task, rules on two buses and schedules (templated and universal targets).
async fn fleet(moto: &Moto) {
    let ecs = moto.ecs().await;
    register_n(&ecs, "wiki-web", 15).await;
    register_n(&ecs, "wiki-jobs", 12).await;
    register_n(&ecs, "wiki-legacy", 13).await;
    register_n(&ecs, "other-app", 5).await;
    register_n(&ecs, "unrelated", 5).await;

    for cluster in ["wiki", "batch"] {
        ecs.create_cluster()
            .cluster_name(cluster)
            .send()
            .await
            .unwrap();
    }
    // web: created on :2, then updated to :3 — moto keeps the deployment on :2.
    ecs.create_service()
        .cluster("wiki")
        .service_name("web")
        .task_definition(arn("wiki-web", 2))
        .desired_count(2)
        .send()
        .await
        .unwrap();
    ecs.update_service()
        .cluster("wiki")
        .service("web")
        .task_definition(arn("wiki-web", 3))
        .send()
        .await
        .unwrap();
    // canary: an EXTERNAL deployment controller whose task set runs :4.
    ecs.create_service()
        .cluster("wiki")
        .service_name("canary")
        .deployment_controller(
            DeploymentController::builder()
                .r#type(DeploymentControllerType::External)
                .build()
                .unwrap(),
        )
        .desired_count(1)
        .send()
        .await
        .unwrap();
    ecs.create_task_set()
        .cluster("wiki")
        .service("canary")
        .task_definition(arn("wiki-web", 4))
        .send()
        .await
        .unwrap();
    // A standalone task on wiki-jobs:1.
    ecs.run_task()
        .cluster("batch")
        .task_definition(arn("wiki-jobs", 1))
        .launch_type(LaunchType::Fargate)
        .send()
        .await
        .unwrap();

    // EventBridge: a rule on the default bus runs wiki-jobs:2; a rule on a custom bus runs
    // other-app without a revision (its latest ACTIVE one).
    let eventbridge = moto.eventbridge().await;
    eventbridge
        .create_event_bus()
        .name("ops")
        .send()
        .await
        .unwrap();
    let cluster_arn = "arn:aws:ecs:us-east-1:123456789012:cluster/batch";
    for (bus, rule, td) in [
        ("default", "nightly-jobs", arn("wiki-jobs", 2)),
        (
            "ops",
            "other-app-latest",
            "arn:aws:ecs:us-east-1:123456789012:task-definition/other-app".to_string(),
        ),
    ] {
        let rule_builder = eventbridge.put_rule().name(rule).event_bus_name(bus);
        // Schedules live on the default bus; custom buses match events.
        let rule_builder = if bus == "default" {
            rule_builder.schedule_expression("rate(1 day)")
        } else {
            rule_builder.event_pattern(r#"{"source":["wikiops.deploy"]}"#)
        };
        rule_builder.send().await.unwrap();
        eventbridge
            .put_targets()
            .rule(rule)
            .event_bus_name(bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("ecs")
                    .arn(cluster_arn)
                    .role_arn(ROLE)
                    .ecs_parameters(
                        aws_sdk_eventbridge::types::EcsParameters::builder()
                            .task_definition_arn(td)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    // Scheduler: a templated ECS target on wiki-jobs:3, a universal target on wiki-jobs:5.
    let scheduler = moto.scheduler().await;
    let window = aws_sdk_scheduler::types::FlexibleTimeWindow::builder()
        .mode(aws_sdk_scheduler::types::FlexibleTimeWindowMode::Off)
        .build()
        .unwrap();
    scheduler
        .create_schedule()
        .name("weekly-report")
        .schedule_expression("rate(7 days)")
        .flexible_time_window(window.clone())
        .target(
            aws_sdk_scheduler::types::Target::builder()
                .arn(cluster_arn)
                .role_arn(ROLE)
                .ecs_parameters(
                    aws_sdk_scheduler::types::EcsParameters::builder()
                        .task_definition_arn(arn("wiki-jobs", 3))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    scheduler
        .create_schedule()
        .name("sdk-run-task")
        .schedule_expression("rate(1 hour)")
        .flexible_time_window(window)
        .target(
            aws_sdk_scheduler::types::Target::builder()
                .arn("arn:aws:scheduler:::aws-sdk:ecs:runTask")
                .role_arn(ROLE)
                .input(json!({"Cluster": "batch", "TaskDefinition": "wiki-jobs:5"}).to_string())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // other-app: 3..5 already deregistered by hand; :2 is its latest ACTIVE revision.
    for r in 3..=5 {
        ecs.deregister_task_definition()
            .task_definition(arn("other-app", r))
            .send()
            .await
            .unwrap();
    }
}

const FLEET_SETTINGS: [(&str, &str); 3] = [
    ("FAMILY_PREFIXES", "wiki-,other"),
    ("EXCLUDE_FAMILIES", "wiki-legacy"),
    ("KEEP_REVISIONS", "3"),
];

fn expected_retired() -> BTreeSet<String> {
    let mut e = range("wiki-web", [1].into_iter().chain(5..=12));
    e.extend(range("wiki-jobs", [4].into_iter().chain(6..=9)));
    e.insert(arn("other-app", 1));
    e
}

#[tokio::test]
async fn dry_run_plans_everything_and_changes_nothing() {
    let moto = Moto::start().await;
    fleet(&moto).await;
    let ecs = moto.ecs().await;
    let before = snapshot(&ecs, &FAMILIES).await;

    // DRY_RUN in the environment …
    let lambda = Lambda::start(
        "taskdef-janitor",
        env(
            &moto,
            &[
                FLEET_SETTINGS[0],
                FLEET_SETTINGS[1],
                FLEET_SETTINGS[2],
                ("DRY_RUN", "true"),
            ],
        ),
    )
    .await;
    let out = lambda
        .invoke(events::load("taskdef-janitor-scheduled"))
        .await
        .unwrap();
    assert_eq!(out["dry_run"], true, "{out}");
    assert_eq!(
        strings(&out["planned"]["deregister"]),
        expected_retired(),
        "{out:#}"
    );
    assert!(strings(&out["deregistered"]).is_empty() && strings(&out["deleted"]).is_empty());
    assert_eq!(out["complete"], true, "{out}");
    assert_eq!(
        snapshot(&ecs, &FAMILIES).await,
        before,
        "a dry run changed something"
    );
    let calls = out["api_calls"].as_object().unwrap();
    assert!(
        !calls.contains_key("ecs:DeregisterTaskDefinition")
            && !calls.contains_key("ecs:DeleteTaskDefinitions"),
        "{out}"
    );
    drop(lambda);

    // … or in the event, with DELETE_AFTER_DAYS=0: the plan deletes what it deregisters.
    let lambda = Lambda::start(
        "taskdef-janitor",
        env(
            &moto,
            &[
                FLEET_SETTINGS[0],
                FLEET_SETTINGS[1],
                FLEET_SETTINGS[2],
                ("DELETE_AFTER_DAYS", "0"),
            ],
        ),
    )
    .await;
    let out = lambda
        .invoke(events::load("taskdef-janitor-dry-run"))
        .await
        .unwrap();
    assert_eq!(out["dry_run"], true, "{out}");
    assert_eq!(
        strings(&out["planned"]["deregister"]),
        expected_retired(),
        "{out:#}"
    );
    // other-app:3..5 were INACTIVE already but sit in the keep window (the 3 newest).
    assert_eq!(
        strings(&out["planned"]["delete"]),
        expected_retired(),
        "{out:#}"
    );
    assert_eq!(
        snapshot(&ecs, &FAMILIES).await,
        before,
        "a dry run changed something"
    );
}

#[tokio::test]
async fn retires_stale_revisions_and_keeps_everything_in_use() {
    let moto = Moto::start().await;
    fleet(&moto).await;
    let ecs = moto.ecs().await;
    let lambda = Lambda::start("taskdef-janitor", env(&moto, &FLEET_SETTINGS)).await;
    let out = lambda
        .invoke(events::load("taskdef-janitor-scheduled"))
        .await
        .unwrap();

    assert_eq!(strings(&out["deregistered"]), expected_retired(), "{out:#}");
    assert!(
        strings(&out["deleted"]).is_empty(),
        "young INACTIVE revisions were deleted: {out}"
    );
    assert_eq!(out["complete"], true);
    assert_eq!(out["remaining"]["total"], 0);
    assert_eq!(out["families"], 3, "wiki-web, wiki-jobs, other-app: {out}");

    // What is in use, and why.
    let kept: BTreeSet<String> = out["kept_in_use"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["task_definition"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kept,
        arns(&[
            ("wiki-web", 2),
            ("wiki-web", 3),
            ("wiki-web", 4),
            ("wiki-jobs", 1),
            ("wiki-jobs", 2),
            ("wiki-jobs", 3),
            ("wiki-jobs", 5),
            ("other-app", 2)
        ]),
        "{out:#}"
    );
    let used_by = |td: &str| -> String {
        out["kept_in_use"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["task_definition"] == td)
            .unwrap()["used_by"]
            .to_string()
    };
    assert!(
        used_by(&arn("wiki-web", 2)).contains("service wiki/web deployment"),
        "{out:#}"
    );
    assert!(used_by(&arn("wiki-web", 3)).contains("service wiki/web"));
    assert!(used_by(&arn("wiki-web", 4)).contains("task set"));
    assert!(used_by(&arn("wiki-jobs", 1)).contains("task batch/"));
    assert!(used_by(&arn("wiki-jobs", 2)).contains("rule default/nightly-jobs"));
    assert!(used_by(&arn("wiki-jobs", 3)).contains("schedule default/weekly-report"));
    assert!(used_by(&arn("wiki-jobs", 5)).contains("schedule default/sdk-run-task"));
    assert!(used_by(&arn("other-app", 2)).contains("rule ops/other-app-latest"));
    assert_eq!(
        out["scanned"],
        json!({"clusters": 2, "services": 2, "tasks": 1, "rules": 2, "schedules": 2,
               "state_machines": 0, "pipes": 0})
    );

    // moto agrees.
    assert_eq!(
        active(&ecs, "wiki-web").await,
        BTreeSet::from([2, 3, 4, 13, 14, 15])
    );
    assert_eq!(
        active(&ecs, "wiki-jobs").await,
        BTreeSet::from([1, 2, 3, 5, 10, 11, 12])
    );
    assert_eq!(active(&ecs, "other-app").await, BTreeSet::from([2]));
    assert_eq!(
        active(&ecs, "wiki-legacy").await.len(),
        13,
        "excluded family touched"
    );
    assert_eq!(
        active(&ecs, "unrelated").await.len(),
        5,
        "family outside the prefixes touched"
    );

    // At least once: a second run finds nothing to do, and moto gives no deregistration
    // time, so the INACTIVE revisions wait (unknown age is "not old enough").
    let again = lambda.invoke(json!({})).await.unwrap();
    assert!(strings(&again["deregistered"]).is_empty(), "{again}");
    assert!(strings(&again["deleted"]).is_empty(), "{again}");
    assert_eq!(again["remaining"]["total"], 0);

    // EMF: one document with the run's metrics.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = lambda.logs();
    assert!(
        logs.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v.get("_aws").is_some()
                && v["Deregistered"] == 15
                && v["Function"] == "taskdef-janitor"),
        "no EMF document: {logs}"
    );
}

#[tokio::test]
async fn deregisters_then_deletes_in_batches_of_ten() {
    let moto = Moto::start().await;
    let ecs = moto.ecs().await;
    register_n(&ecs, "wiki-web", 26).await;
    ecs.create_cluster()
        .cluster_name("wiki")
        .send()
        .await
        .unwrap();
    ecs.create_service()
        .cluster("wiki")
        .service_name("web")
        .task_definition(arn("wiki-web", 7))
        .desired_count(1)
        .send()
        .await
        .unwrap();
    // 1..=3 were deregistered before (their age is unknown to moto).
    for r in 1..=3 {
        ecs.deregister_task_definition()
            .task_definition(arn("wiki-web", r))
            .send()
            .await
            .unwrap();
    }

    let lambda = Lambda::start(
        "taskdef-janitor",
        env(
            &moto,
            &[("KEEP_REVISIONS", "2"), ("DELETE_AFTER_DAYS", "0")],
        ),
    )
    .await;
    let out = lambda
        .invoke(events::load("taskdef-janitor-scheduled"))
        .await
        .unwrap();
    let retired: BTreeSet<String> = range("wiki-web", (4..=24).filter(|r| *r != 7));
    assert_eq!(strings(&out["deregistered"]), retired, "{out:#}");
    let mut deleted = retired.clone();
    deleted.extend(range("wiki-web", 1..=3));
    assert_eq!(strings(&out["deleted"]), deleted, "{out:#}");
    // 23 deletions: three DeleteTaskDefinitions calls.
    assert_eq!(out["api_calls"]["ecs:DeleteTaskDefinitions"], 3, "{out}");
    assert_eq!(
        out["api_calls"]["ecs:DeregisterTaskDefinition"], 20,
        "{out}"
    );
    assert_eq!(active(&ecs, "wiki-web").await, BTreeSet::from([7, 25, 26]));
    assert!(inactive(&ecs, "wiki-web").await.is_empty());
    let gone = ecs
        .describe_task_definition()
        .task_definition(arn("wiki-web", 5))
        .send()
        .await;
    assert!(gone.is_err(), "wiki-web:5 still exists");

    let again = lambda.invoke(json!({})).await.unwrap();
    assert!(
        strings(&again["deleted"]).is_empty() && strings(&again["deregistered"]).is_empty(),
        "{again}"
    );
}

#[tokio::test]
async fn reports_plaintext_secrets_by_name_and_purges_unused_ones() {
    let moto = Moto::start().await;
    let ecs = moto.ecs().await;
    register(
        &ecs,
        "wiki-web",
        &[("DB_PASSWORD", DB_PASSWORD), ("MW_SITE_NAME", "Wiki")],
    )
    .await; // 1
    register(&ecs, "wiki-web", &[("UPLOADER", ACCESS_KEY)]).await; // 2
    register(
        &ecs,
        "wiki-web",
        &[(
            "DB_PASSWORD_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
        )],
    )
    .await; // 3
    let url = format!("mysql://wiki:{URL_PASSWORD}@db:3306/wiki");
    register(
        &ecs,
        "wiki-web",
        &[("DATABASE_URL", &url), ("DB_PASSWORD", DB_PASSWORD)],
    )
    .await; // 4 (in use)
    register(&ecs, "wiki-web", &[("MW_SITE_NAME", "Wiki")]).await; // 5
    ecs.create_cluster()
        .cluster_name("wiki")
        .send()
        .await
        .unwrap();
    ecs.create_service()
        .cluster("wiki")
        .service_name("web")
        .task_definition(arn("wiki-web", 4))
        .desired_count(1)
        .send()
        .await
        .unwrap();
    // 1 was deregistered before: INACTIVE revisions are scanned too.
    ecs.deregister_task_definition()
        .task_definition(arn("wiki-web", 1))
        .send()
        .await
        .unwrap();

    let check_no_values = |lambda: &Lambda, out: &Value| {
        let text = format!("{}\n{out}", lambda.logs());
        for v in [DB_PASSWORD, ACCESS_KEY, URL_PASSWORD] {
            assert!(
                !text.contains(v),
                "a plaintext value reached the logs or the output"
            );
        }
    };

    // Report only: everything sits in the keep window (10), nothing changes.
    let lambda = Lambda::start("taskdef-janitor", env(&moto, &[])).await;
    let out = lambda.invoke(json!({})).await.unwrap();
    let findings = out["plaintext_findings"].as_array().unwrap();
    let by_td = |r: u32| {
        findings
            .iter()
            .find(|f| f["task_definition"] == arn("wiki-web", r))
            .cloned()
    };
    assert_eq!(findings.len(), 3, "{out:#}");
    let f1 = by_td(1).unwrap();
    assert_eq!(f1["status"], "INACTIVE");
    assert_eq!(
        f1["variables"],
        json!([{"container": "wiki", "variable": "DB_PASSWORD", "kind": "credential_name"}])
    );
    assert_eq!(
        by_td(2).unwrap()["variables"][0]["kind"],
        "aws_access_key_id"
    );
    let f4 = by_td(4).unwrap();
    assert_eq!(f4["in_use"], true);
    assert_eq!(f4["outcome"], "kept_in_use");
    let kinds: BTreeSet<&str> = f4["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["credential_name", "url_with_password"])
    );
    assert!(
        by_td(3).is_none(),
        "an ARN reference is not a plaintext secret"
    );
    assert!(strings(&out["deregistered"]).is_empty() && strings(&out["deleted"]).is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = lambda.logs();
    assert!(
        logs.contains("plaintext credentials in a task definition") && logs.contains("DB_PASSWORD"),
        "{logs}"
    );
    check_no_values(&lambda, &out);
    drop(lambda);

    // Purge: the unused dirty revisions go, inside the keep window; the one in use stays.
    let lambda = Lambda::start(
        "taskdef-janitor",
        env(&moto, &[("PURGE_PLAINTEXT", "true")]),
    )
    .await;
    let out = lambda.invoke(json!({})).await.unwrap();
    assert_eq!(
        strings(&out["deregistered"]),
        arns(&[("wiki-web", 2)]),
        "{out:#}"
    );
    assert_eq!(
        strings(&out["deleted"]),
        arns(&[("wiki-web", 1), ("wiki-web", 2)]),
        "{out:#}"
    );
    assert_eq!(active(&ecs, "wiki-web").await, BTreeSet::from([3, 4, 5]));
    assert!(inactive(&ecs, "wiki-web").await.is_empty());
    let outcomes: BTreeSet<(String, String)> = out["plaintext_findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["task_definition"].as_str().unwrap().to_string(),
                f["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        BTreeSet::from([
            (arn("wiki-web", 1), "deleted".to_string()),
            (arn("wiki-web", 2), "deleted".to_string()),
            (arn("wiki-web", 4), "kept_in_use".to_string()),
        ])
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    check_no_values(&lambda, &out);
}

#[tokio::test]
async fn a_failing_discovery_call_changes_nothing() {
    let moto = Moto::start().await;
    fleet(&moto).await;
    let ecs = moto.ecs().await;
    let before = snapshot(&ecs, &FAMILIES).await;
    let dead = format!("http://127.0.0.1:{}", wikiops_tests::free_port());
    for (var, service) in [
        ("AWS_ENDPOINT_URL_EVENTBRIDGE", "EventBridge"),
        ("AWS_ENDPOINT_URL_SCHEDULER", "Scheduler"),
        ("AWS_ENDPOINT_URL_SFN", "Step Functions"),
        ("AWS_ENDPOINT_URL_PIPES", "Pipes"),
    ] {
        let lambda = Lambda::start(
            "taskdef-janitor",
            env(
                &moto,
                &[
                    ("KEEP_REVISIONS", "1"),
                    ("DELETE_AFTER_DAYS", "0"),
                    (var, &dead),
                ],
            ),
        )
        .await;
        let err = lambda
            .invoke(events::load("taskdef-janitor-scheduled"))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "AwsApi", "{err}");
        assert!(err.error_message.starts_with(service), "{err}");
        assert!(err.error_message.contains("nothing was changed"), "{err}");
        assert_eq!(
            snapshot(&ecs, &FAMILIES).await,
            before,
            "{service} down, yet something changed"
        );
    }
}

/// A state machine definition: `Run` on `pinned` (JSONPath), a `Parallel` whose first branch
/// maps `Each` over items with a full ARN (`waitForTaskToken`), and a JSONata branch.
fn nested_definition(pinned: &str, in_map: &str, jsonata: &str) -> String {
    json!({
        "StartAt": "Run",
        "States": {
            "Run": {"Type": "Task", "Resource": "arn:aws:states:::ecs:runTask.sync",
                    "Parameters": {"Cluster": "batch", "TaskDefinition": pinned}, "Next": "Fan"},
            "Fan": {"Type": "Parallel", "End": true, "Branches": [
                {"StartAt": "Each", "States": {"Each": {"Type": "Map", "End": true,
                    "ItemProcessor": {"StartAt": "Item", "States": {"Item": {"Type": "Task",
                        "Resource": "arn:aws:states:::ecs:runTask.waitForTaskToken",
                        "Parameters": {"TaskDefinition": in_map}, "End": true}}}}}},
                {"QueryLanguage": "JSONata", "StartAt": "Late", "States": {"Late": {
                    "Type": "Task", "QueryLanguage": "JSONata",
                    "Resource": "arn:aws:states:::aws-sdk:ecs:runTask",
                    "Arguments": {"TaskDefinition": jsonata}, "End": true}}}
            ]}
        }
    })
    .to_string()
}

/// Creates a state machine of one `ecs:runTask` state `R` with `parameters`.
async fn one_state_machine(sfn: &aws_sdk_sfn::Client, name: &str, parameters: Value) {
    sfn.create_state_machine()
        .name(name)
        .role_arn(SFN_ROLE)
        .definition(
            json!({"StartAt": "R", "States": {"R": {"Type": "Task",
                "Resource": "arn:aws:states:::ecs:runTask", "Parameters": parameters, "End": true}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
}

/// Issue 27: revisions that state machines (current definition, an alias's version, nested
/// states, a family alone) and pipes run were retired; a dynamic reference changes nothing.
#[tokio::test]
async fn keeps_what_state_machines_and_pipes_run() {
    let moto = Moto::start().await;
    let ecs = moto.ecs().await;
    register_n(&ecs, "wiki-jobs", 8).await;
    register_n(&ecs, "other-app", 4).await;
    // other-app: :3 and :4 deregistered, so :2 is what "other-app" alone runs.
    for r in [3, 4] {
        ecs.deregister_task_definition()
            .task_definition(arn("other-app", r))
            .send()
            .await
            .unwrap();
    }
    let sfn = moto.sfn().await;
    // Version 1 (published, behind the alias "live") runs wiki-jobs:6; the current
    // definition runs :2, :3 and :4.
    let nightly = sfn
        .create_state_machine()
        .name("nightly")
        .role_arn(SFN_ROLE)
        .definition(nested_definition(
            "wiki-jobs:6",
            "wiki-jobs:6",
            "wiki-jobs:6",
        ))
        .publish(true)
        .send()
        .await
        .unwrap();
    let version = nightly.state_machine_version_arn().unwrap().to_string();
    sfn.update_state_machine()
        .state_machine_arn(nightly.state_machine_arn())
        .definition(nested_definition(
            "wiki-jobs:2",
            &arn("wiki-jobs", 3),
            "wiki-jobs:4",
        ))
        .send()
        .await
        .unwrap();
    sfn.create_state_machine_alias()
        .name("live")
        .routing_configuration(
            aws_sdk_sfn::types::RoutingConfigurationListItem::builder()
                .state_machine_version_arn(version)
                .weight(100)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    one_state_machine(&sfn, "other-latest", json!({"TaskDefinition": "other-app"})).await;
    let pipes = moto.pipes().await;
    pipes
        .create_pipe()
        .name("on-upload")
        .role_arn(ROLE)
        .source("arn:aws:sqs:us-east-1:123456789012:uploads")
        .target("arn:aws:ecs:us-east-1:123456789012:cluster/batch")
        .target_parameters(
            aws_sdk_pipes::types::PipeTargetParameters::builder()
                .ecs_task_parameters(
                    aws_sdk_pipes::types::PipeTargetEcsTaskParameters::builder()
                        .task_definition_arn(arn("wiki-jobs", 5))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let janitor = |keep: &'static str| {
        Lambda::start(
            "taskdef-janitor",
            env(
                &moto,
                &[
                    ("FAMILY_PREFIXES", "wiki-jobs,other-app"),
                    ("KEEP_REVISIONS", keep),
                    ("DELETE_AFTER_DAYS", "0"),
                ],
            ),
        )
    };
    let lambda = janitor("1").await;
    let out = lambda
        .invoke(events::load("taskdef-janitor-scheduled"))
        .await
        .unwrap();
    assert_eq!(
        active(&ecs, "wiki-jobs").await,
        BTreeSet::from([2, 3, 4, 5, 6, 8])
    );
    assert_eq!(active(&ecs, "other-app").await, BTreeSet::from([2]));
    // other-app:3 was INACTIVE already, outside the keep window (:4): deleted too.
    let expected = arns(&[
        ("wiki-jobs", 1),
        ("wiki-jobs", 7),
        ("other-app", 1),
        ("other-app", 3),
    ]);
    assert_eq!(strings(&out["deleted"]), expected, "{out:#}");
    assert_eq!(out["scanned"]["state_machines"], 3, "{out:#}");
    assert_eq!(out["scanned"]["pipes"], 1, "{out:#}");
    let users: BTreeSet<String> = out["kept_in_use"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|k| strings(&k["used_by"]))
        .collect();
    for who in [
        "state machine nightly state Run",
        "state machine nightly state Fan/branch 1/Each/Item",
        "state machine nightly state Fan/branch 2/Late",
        "state machine nightly:1 state Run",
        "state machine other-latest state R",
        "pipe on-upload",
    ] {
        assert!(users.contains(who), "{who} not in {users:?}");
    }

    // A task definition chosen at run time: nothing can be known, nothing changes.
    one_state_machine(&sfn, "dynamic", json!({"TaskDefinition.$": "$.td"})).await;
    let before = snapshot(&ecs, &["wiki-jobs", "other-app"]).await;
    let lambda = janitor("0").await;
    let err = lambda.invoke(json!({})).await.unwrap_err();
    assert_eq!(err.error_type, "UnresolvedTaskDefinition", "{err}");
    assert!(
        err.error_message.contains("state machine dynamic state R")
            && err.error_message.contains("$.td"),
        "{err}"
    );
    assert_eq!(snapshot(&ecs, &["wiki-jobs", "other-app"]).await, before);
}

#[tokio::test]
async fn bad_settings_and_events_are_refused_before_any_call() {
    let moto = Moto::start().await;
    let lambda = Lambda::start("taskdef-janitor", env(&moto, &[("KEEP_REVISIONS", "ten")])).await;
    let err = lambda.invoke(json!({})).await.unwrap_err();
    assert_eq!(err.error_type, "Settings");
    assert!(
        err.error_message.contains("KEEP_REVISIONS") && !err.error_message.contains("ten"),
        "{err}"
    );
    drop(lambda);
    let lambda = Lambda::start("taskdef-janitor", moto.env()).await;
    let err = lambda
        .invoke(json!({"dry_run": "please"}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent", "{err}");
    let err = lambda.invoke(json!("run")).await.unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent", "{err}");
}

#[tokio::test]
async fn paces_deregistrations_and_resumes_after_the_deadline() {
    let moto = Moto::start().await;
    let ecs = moto.ecs().await;
    register_n(&ecs, "wiki-web", 30).await;
    let settings = [
        ("KEEP_REVISIONS", "2"),
        ("ECS_MODIFY_RATE", "2"),
        ("ECS_MODIFY_BURST", "1"),
        ("DEADLINE_MARGIN_MS", "1000"),
    ];
    let lambda = Lambda::start("taskdef-janitor", env(&moto, &settings)).await;
    let expected = range("wiki-web", 1..=28);

    // 28 deregistrations at 2/s need 13.5 s; the function has 6 s, stops early and says so.
    let first = lambda
        .invoke_with_deadline(
            events::load("taskdef-janitor-scheduled"),
            Duration::from_secs(6),
        )
        .await
        .unwrap();
    assert_eq!(first["stopped"], "deadline", "{first:#}");
    assert_eq!(first["complete"], false);
    let done_first = strings(&first["deregistered"]);
    let left = first["remaining"]["deregister"].as_u64().unwrap() as usize;
    assert!(!done_first.is_empty() && left > 0, "{first:#}");
    assert_eq!(done_first.len() + left, 28, "{first:#}");
    // A burst of 1 at 2/s allows at most 1 + 2 × 5 s calls before the stop.
    assert!(
        done_first.len() <= 11,
        "more calls than the bucket allows: {first:#}"
    );
    assert!(
        first["paced_ms"]["modify"].as_u64().unwrap() > 0,
        "{first:#}"
    );

    // The next run recomputes and finishes the rest, no faster than the bucket allows.
    let start = Instant::now();
    let second = lambda.invoke(json!({})).await.unwrap();
    let elapsed = start.elapsed();
    let done_second = strings(&second["deregistered"]);
    assert_eq!(done_second.len(), left, "{second:#}");
    assert!(done_first.is_disjoint(&done_second));
    let all: BTreeSet<String> = done_first.union(&done_second).cloned().collect();
    assert_eq!(all, expected);
    assert_eq!(second["complete"], true);
    assert_eq!(second["remaining"]["total"], 0);
    assert!(
        elapsed >= Duration::from_millis(500 * (left as u64 - 1)),
        "{left} deregistrations in {elapsed:?}: not paced"
    );
    assert_eq!(active(&ecs, "wiki-web").await, BTreeSet::from([29, 30]));
}
