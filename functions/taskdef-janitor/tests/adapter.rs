//! The adapter against a simulated account (aws-smithy-mocks behind real SDK clients, paused
//! tokio clock): what moto cannot do — real pagination, several deployments per service,
//! deregistration times, failures[] in DeleteTaskDefinitions, throttling, failures of every
//! discovery call, and ECS's server-side limits.

mod sim;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::Env;
use sim::{Machine, State, run_task_definition, td_arn};
use taskdef_janitor::pacing::Rate;
use taskdef_janitor::{Report, Settings};

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).unwrap()
}

fn settings(pairs: &[(&str, &str)]) -> Settings {
    Settings::from_env(&Env::from_pairs(pairs.iter().copied())).unwrap()
}

async fn run(
    state: &sim::Shared,
    pairs: &[(&str, &str)],
    budget: Duration,
) -> Result<Report, shared::Error> {
    let clients = sim::clients(state);
    taskdef_janitor::run(&clients, &settings(pairs), false, now(), budget).await
}

fn set(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

fn revs(family: &str, r: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    r.into_iter().map(|r| td_arn(family, r)).collect()
}

const HOUR: Duration = Duration::from_secs(3600);
/// Nothing kept but what is in use, deleted at once.
const KEEP_NOTHING: &[(&str, &str)] = &[("KEEP_REVISIONS", "0"), ("DELETE_AFTER_DAYS", "0")];

#[tokio::test(start_paused = true)]
async fn follows_every_page_and_every_deployment() {
    let mut st = State::new(NOW);
    st.page = 3;
    st.family("web", 80);
    st.family("jobs", 130);
    // 25 services, three deployments each: web 1..=75 are all in use.
    for i in 0..25u32 {
        st.service(
            "wiki",
            &format!("s{i}"),
            &[("web", 3 * i + 1), ("web", 3 * i + 2), ("web", 3 * i + 3)],
        );
    }
    // 120 standalone tasks on jobs 1..=120, in another cluster.
    st.clusters.push("batch".into());
    for r in 1..=120u32 {
        st.tasks
            .push(("batch".into(), format!("t{r}"), td_arn("jobs", r)));
    }
    let state = Arc::new(Mutex::new(st));
    let report = run(&state, &[("KEEP_REVISIONS", "2")], HOUR).await.unwrap();

    let mut expected = revs("web", 76..=78);
    expected.extend(revs("jobs", 121..=128));
    assert_eq!(set(report.deregistered.clone()), expected);
    assert_eq!(report.kept_in_use.len(), 75 + 120);
    assert_eq!(report.scanned.services, 25);
    assert_eq!(report.scanned.tasks, 120);
    let st = state.lock().unwrap();
    assert_eq!(st.max_describe_services, 10);
    assert_eq!(st.calls["ecs:DescribeServices"], 3);
    assert_eq!(
        st.calls["ecs:ListServices"],
        9 + 1,
        "25 services in pages of 3, and an empty cluster"
    );
    assert_eq!(
        st.calls["ecs:ListTasks"],
        1 + 40,
        "an empty cluster, and 120 tasks in pages of 3"
    );
    assert_eq!(
        st.calls["ecs:DescribeTasks"], 2,
        "DescribeTasks takes 100 at a time"
    );
    assert_eq!(st.calls["ecs:ListTaskDefinitionFamilies"], 1);
    assert_eq!(st.active("web").len(), 77);
    assert_eq!(
        report.api_calls, st.calls,
        "the report counts what the account saw"
    );
}

#[tokio::test(start_paused = true)]
async fn deletes_by_deregistration_age_and_reads_failures() {
    let mut st = State::new(NOW);
    st.family("web", 12);
    for (r, age_days) in [(1, 30), (2, 8), (3, 6), (4, 7)] {
        let td = st.tds.get_mut(&("web".to_string(), r)).unwrap();
        td.active = false;
        td.deregistered_at = Some(NOW - age_days * DAY);
    }
    st.delete_failures.insert(
        td_arn("web", 1),
        "TASK_DEFINITION_DELETE_IN_PROGRESS".into(),
    );
    st.delete_failures
        .insert(td_arn("web", 2), "ACCESS_DENIED".into());
    let state = Arc::new(Mutex::new(st));
    let report = run(&state, &[("KEEP_REVISIONS", "5")], HOUR).await.unwrap();

    assert_eq!(
        set(report.deleted.clone()),
        revs("web", [4]),
        "7 days is old enough, 6 is not"
    );
    assert_eq!(report.already_done, 1, "DELETE_IN_PROGRESS counts as done");
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(report.failures[0].task_definition, td_arn("web", 2));
    assert_eq!(report.failures[0].operation, "DeleteTaskDefinitions");
    assert!(report.failures[0].error.contains("ACCESS_DENIED"));
    assert_eq!(set(report.deregistered.clone()), revs("web", 5..=7));
    // Freshly deregistered revisions wait their DELETE_AFTER_DAYS.
    assert_eq!(
        state.lock().unwrap().inactive("web"),
        BTreeSet::from([1, 2, 3, 5, 6, 7])
    );
    assert_eq!(
        report.api_calls["ecs:DeleteTaskDefinitions"], 1,
        "one batch"
    );
}

#[tokio::test(start_paused = true)]
async fn every_discovery_call_fails_closed() {
    for op in [
        "ecs:ListTaskDefinitionFamilies",
        "ecs:ListTaskDefinitions",
        "ecs:ListClusters",
        "ecs:ListServices",
        "ecs:DescribeServices",
        "ecs:ListTasks",
        "ecs:DescribeTasks",
        "events:ListEventBuses",
        "events:ListRules",
        "events:ListTargetsByRule",
        "scheduler:ListSchedules",
        "scheduler:GetSchedule",
        "states:ListStateMachines",
        "states:DescribeStateMachine",
        "states:ListStateMachineAliases",
        "states:DescribeStateMachineAlias",
        "states:ListExecutions",
        "states:DescribeStateMachineForExecution",
        "pipes:ListPipes",
        "pipes:DescribePipe",
    ] {
        let mut st = State::new(NOW);
        st.family("web", 30);
        st.service("wiki", "web", &[("web", 1)]);
        st.tasks
            .push(("wiki".into(), "t1".into(), td_arn("web", 2)));
        st.rules
            .push(("default".into(), "nightly".into(), td_arn("web", 3)));
        st.schedules
            .push(("default".into(), "weekly".into(), td_arn("web", 4)));
        st.state_machines.push(Machine {
            name: "jobs".into(),
            definition: run_task_definition(&td_arn("web", 5)),
            versions: vec![(1, run_task_definition("web:6"))],
            aliases: vec![("live".into(), 1)],
            executions: vec![("run-1".into(), run_task_definition("web:7"))],
        });
        st.pipes.push((
            "on-upload".into(),
            "arn:aws:ecs:us-east-1:123456789012:cluster/batch".into(),
            td_arn("web", 8),
        ));
        st.failing.insert(op, "AccessDeniedException");
        let state = Arc::new(Mutex::new(st));
        let err = run(
            &state,
            &[("KEEP_REVISIONS", "0"), ("DELETE_AFTER_DAYS", "0")],
            HOUR,
        )
        .await
        .unwrap_err();
        assert_eq!(err.error_type(), "AwsApi", "{op}: {err}");
        assert!(
            err.to_string().contains("AccessDeniedException"),
            "{op}: {err}"
        );
        assert!(
            err.to_string().contains("nothing was changed"),
            "{op}: {err}"
        );
        let st = state.lock().unwrap();
        assert_eq!(
            st.active("web").len(),
            30,
            "{op} failed, yet something changed"
        );
        assert!(
            !st.calls.contains_key("ecs:DeregisterTaskDefinition"),
            "{op}"
        );
        assert!(!st.calls.contains_key("ecs:DeleteTaskDefinitions"), "{op}");
    }
}

#[tokio::test(start_paused = true)]
async fn describe_services_failures_other_than_missing_fail_closed() {
    for (reason, ok) in [("MISSING", true), ("ACCESS_DENIED", false)] {
        let mut st = State::new(NOW);
        st.family("web", 5);
        st.service("wiki", "web", &[("web", 1)]);
        st.describe_services_failure = Some(reason);
        let state = Arc::new(Mutex::new(st));
        let res = run(&state, &[("KEEP_REVISIONS", "1")], HOUR).await;
        assert_eq!(res.is_ok(), ok, "{reason}: {res:?}");
        let active = state.lock().unwrap().active("web").len();
        assert_eq!(active, if ok { 1 } else { 5 }, "{reason}");
    }
}

#[tokio::test(start_paused = true)]
async fn rules_and_schedules_pin_their_revisions() {
    let mut st = State::new(NOW);
    st.family("jobs", 10);
    st.rules
        .push(("ops".into(), "on-deploy".into(), td_arn("jobs", 2)));
    st.schedules
        .push(("reports".into(), "weekly".into(), td_arn("jobs", 3)));
    // A reference without revision pins the latest ACTIVE one.
    st.rules
        .push(("default".into(), "latest".into(), "jobs".into()));
    let state = Arc::new(Mutex::new(st));
    let report = run(
        &state,
        &[("KEEP_REVISIONS", "0"), ("DELETE_AFTER_DAYS", "0")],
        HOUR,
    )
    .await
    .unwrap();
    assert_eq!(
        state.lock().unwrap().active("jobs"),
        BTreeSet::from([2, 3, 10])
    );
    assert_eq!(
        set(report.deleted.clone()),
        revs("jobs", [1, 4, 5, 6, 7, 8, 9])
    );
}

/// Issue 27: revisions that Step Functions and Pipes run were retired (nothing discovered them).
#[tokio::test(start_paused = true)]
async fn state_machines_and_pipes_pin_their_revisions() {
    let mut st = State::new(NOW);
    st.family("jobs", 12);
    st.family("web", 3);
    let nested = serde_json::json!({
        "QueryLanguage": "JSONata",
        "StartAt": "Fan",
        "States": {"Fan": {"Type": "Parallel", "End": true, "Branches": [
            {"StartAt": "Each", "States": {"Each": {"Type": "Map", "End": true,
                "ItemProcessor": {"StartAt": "Run", "States": {"Run": {"Type": "Task",
                    "Resource": "arn:aws:states:::ecs:runTask.waitForTaskToken",
                    "Arguments": {"TaskDefinition": "jobs:2"}, "End": true}}}}}},
            {"StartAt": "Sdk", "States": {"Sdk": {"Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:ecs:runTask",
                "Arguments": {"TaskDefinition": "web"}, "End": true}}}
        ]}}
    });
    st.state_machines.push(Machine {
        name: "nightly".into(),
        // The current definition runs :3; version 1 (behind the alias "live") runs :4; a
        // running execution started on an older definition that runs :5.
        definition: run_task_definition(&td_arn("jobs", 3)),
        versions: vec![(1, run_task_definition("jobs:4"))],
        aliases: vec![("live".into(), 1)],
        executions: vec![("run-1".into(), run_task_definition("jobs:5"))],
    });
    st.state_machines.push(Machine {
        name: "fan-out".into(),
        definition: nested.to_string(),
        ..Machine::default()
    });
    st.pipes.push((
        "on-upload".into(),
        "arn:aws:ecs:us-east-1:123456789012:cluster/batch".into(),
        td_arn("jobs", 6),
    ));
    st.pipes.push((
        "to-queue".into(),
        "arn:aws:sqs:us-east-1:123456789012:q".into(),
        td_arn("jobs", 7),
    ));
    let state = Arc::new(Mutex::new(st));
    let report = run(&state, KEEP_NOTHING, HOUR).await.unwrap();
    let st = state.lock().unwrap();
    assert_eq!(st.active("jobs"), BTreeSet::from([2, 3, 4, 5, 6]));
    // "web" alone: its latest ACTIVE revision.
    assert_eq!(st.active("web"), BTreeSet::from([3]));
    assert_eq!(report.scanned.state_machines, 4, "{:?}", report.scanned);
    assert_eq!(report.scanned.pipes, 2);
    // Only the pipe with an ECS target is described.
    assert_eq!(st.calls["pipes:DescribePipe"], 1);
    let users: BTreeSet<String> = report
        .kept_in_use
        .iter()
        .flat_map(|k| k.used_by.iter().cloned())
        .collect();
    for who in [
        "state machine nightly state Run",
        "state machine nightly:1 state Run",
        "execution nightly:run-1 state Run",
        "state machine fan-out state Fan/branch 1/Each/Run",
        "state machine fan-out state Fan/branch 2/Sdk",
        "pipe on-upload",
    ] {
        assert!(users.contains(who), "{who} not in {users:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_definition_chosen_at_run_time_changes_nothing() {
    for (machine, pipe) in [
        (
            Some(
                r#"{"StartAt":"R","States":{"R":{"Type":"Task","Resource":"arn:aws:states:::ecs:runTask.sync","Parameters":{"TaskDefinition.$":"$.td"},"End":true}}}"#,
            ),
            None,
        ),
        (Some("{not json"), None),
        (None, Some("$.detail.task_definition")),
    ] {
        let mut st = State::new(NOW);
        st.family("jobs", 5);
        if let Some(def) = machine {
            st.state_machines.push(Machine {
                name: "dyn".into(),
                definition: def.into(),
                ..Machine::default()
            });
        }
        if let Some(td) = pipe {
            st.pipes.push((
                "dyn".into(),
                "arn:aws:ecs:us-east-1:123456789012:cluster/batch".into(),
                td.into(),
            ));
        }
        let state = Arc::new(Mutex::new(st));
        let err = run(&state, KEEP_NOTHING, HOUR).await.unwrap_err();
        assert_eq!(err.error_type(), "UnresolvedTaskDefinition", "{err}");
        assert!(err.to_string().contains("nothing was changed"), "{err}");
        assert!(err.to_string().contains("dyn"), "{err}");
        assert_eq!(state.lock().unwrap().active("jobs").len(), 5);
    }
}

#[tokio::test(start_paused = true)]
async fn a_throttled_describe_is_reported_and_never_guessed() {
    let mut st = State::new(NOW);
    st.family("web", 6);
    let old = st.tds.get_mut(&("web".to_string(), 1)).unwrap();
    old.active = false;
    old.deregistered_at = Some(NOW - 30 * DAY);
    st.failing
        .insert("ecs:DescribeTaskDefinition", "ThrottlingException");
    let state = Arc::new(Mutex::new(st));
    let report = run(&state, &[("KEEP_REVISIONS", "2")], HOUR).await.unwrap();
    // The age of web:1 is unknown: it is not deleted. Deregistering needs no description.
    assert!(report.deleted.is_empty());
    assert_eq!(set(report.deregistered.clone()), revs("web", 2..=4));
    assert_eq!(report.failures.len(), 6);
    assert!(report.failures.iter().all(
        |f| f.operation == "DescribeTaskDefinition" && f.error.contains("ThrottlingException")
    ));
    let left = report.remaining.unwrap();
    assert_eq!(left.undescribed, 6);
    assert!(!report.complete);
}

#[tokio::test(start_paused = true)]
async fn stays_within_the_ecs_limits() {
    let mut st = State::new(NOW);
    st.family("web", 150);
    st.family("jobs", 150);
    let read = Rate {
        per_second: 20.0,
        burst: 50,
    };
    let modify = Rate {
        per_second: 1.0,
        burst: 20,
    };
    let delete = Rate {
        per_second: 1.0,
        burst: 5,
    };
    st.enforce_limits(read, modify, delete);
    let state = Arc::new(Mutex::new(st));
    let start = tokio::time::Instant::now();
    let report = run(
        &state,
        &[("KEEP_REVISIONS", "10"), ("DELETE_AFTER_DAYS", "0")],
        HOUR,
    )
    .await
    .unwrap();
    let elapsed = start.elapsed();
    let st = state.lock().unwrap();
    assert_eq!(st.throttled, 0, "the janitor exceeded a server-side bucket");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.deregistered.len(), 280);
    assert_eq!(report.deleted.len(), 280);
    assert_eq!(st.max_delete_batch, 10);
    assert_eq!(report.api_calls["ecs:DeleteTaskDefinitions"], 28);
    // 280 deregistrations: 20 at once, then 1/s.
    assert!(elapsed >= Duration::from_secs(260), "{elapsed:?}");
    assert!(
        elapsed <= Duration::from_secs(275),
        "{elapsed:?}: the buckets were not used in parallel"
    );
}

#[tokio::test(start_paused = true)]
async fn stops_before_the_deadline_and_the_next_run_finishes() {
    let mut st = State::new(NOW);
    st.family("web", 100);
    let state = Arc::new(Mutex::new(st));
    let pairs = [("KEEP_REVISIONS", "10"), ("DELETE_AFTER_DAYS", "0")];
    // 90 deregistrations need ~70 s; the invocation has 60 s, minus the 5 s margin.
    let start = tokio::time::Instant::now();
    let first = run(&state, &pairs, Duration::from_secs(60)).await.unwrap();
    assert!(
        start.elapsed() <= Duration::from_secs(55),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(first.stopped, Some("deadline"));
    let left = first.remaining.clone().unwrap();
    assert_eq!(first.deregistered.len() + left.deregister, 90);
    assert!(left.deregister > 0);
    // What was deregistered was also deleted, bar the last few if the deadline came first.
    assert!(first.deleted.len() + 10 >= first.deregistered.len());

    tokio::time::sleep(Duration::from_secs(60)).await;
    let second = run(&state, &pairs, Duration::from_secs(900)).await.unwrap();
    assert!(second.complete, "{:?}", second.remaining);
    let deregistered: BTreeSet<String> = set(first
        .deregistered
        .iter()
        .chain(&second.deregistered)
        .cloned());
    assert_eq!(deregistered, revs("web", 1..=90));
    let deleted: BTreeSet<String> = set(first.deleted.iter().chain(&second.deleted).cloned());
    assert_eq!(deleted, revs("web", 1..=90));
    assert_eq!(state.lock().unwrap().active("web"), (91..=100).collect());
}

#[tokio::test(start_paused = true)]
async fn the_dry_run_plans_exactly_what_the_real_run_does() {
    let fleet = || {
        let mut st = State::new(NOW);
        st.family("web", 40);
        st.family("jobs", 25);
        st.service("wiki", "web", &[("web", 40), ("web", 12)]);
        st.tasks
            .push(("batch".into(), "t1".into(), td_arn("jobs", 3)));
        st.clusters.push("batch".into());
        for (r, age) in [(1, 30), (2, 3), (5, 9)] {
            let td = st.tds.get_mut(&("web".to_string(), r)).unwrap();
            td.active = false;
            td.deregistered_at = Some(NOW - age * DAY);
        }
        // Plaintext: one inside the keep window, one outside, one in use.
        for (f, r) in [("web", 38), ("web", 20), ("web", 12), ("jobs", 3)] {
            st.tds.get_mut(&(f.to_string(), r)).unwrap().env =
                vec![("DB_PASSWORD".into(), "not-a-reference-value".into())];
        }
        Arc::new(Mutex::new(st))
    };
    let pairs = [("KEEP_REVISIONS", "5"), ("PURGE_PLAINTEXT", "true")];

    let dry_state = fleet();
    let clients = sim::clients(&dry_state);
    let dry = taskdef_janitor::run(&clients, &settings(&pairs), true, now(), HOUR)
        .await
        .unwrap();
    {
        let st = dry_state.lock().unwrap();
        assert!(!st.calls.contains_key("ecs:DeregisterTaskDefinition"));
        assert!(!st.calls.contains_key("ecs:DeleteTaskDefinitions"));
        assert_eq!(st.active("web").len(), 37);
    }
    assert!(dry.deregistered.is_empty() && dry.deleted.is_empty());
    assert!(dry.complete);

    let real_state = fleet();
    let real = run(&real_state, &pairs, HOUR).await.unwrap();
    assert_eq!(
        set(dry.planned.deregister.clone()),
        set(real.deregistered.clone())
    );
    assert_eq!(set(dry.planned.delete.clone()), set(real.deleted.clone()));
    // Old INACTIVE (1, 5) and the purged unused ones (38 in the window, 20 outside) go;
    // web:2 (3 days) waits; web:12 and jobs:3 are in use.
    assert_eq!(set(real.deleted.clone()), revs("web", [1, 5, 20, 38]));
    let outcomes: BTreeSet<(String, &str)> = dry
        .plaintext_findings
        .iter()
        .map(|f| (f.task_definition.clone(), f.outcome))
        .collect();
    assert_eq!(
        outcomes,
        BTreeSet::from([
            (td_arn("web", 12), "kept_in_use"),
            (td_arn("web", 20), "would_delete"),
            (td_arn("web", 38), "would_delete"),
            (td_arn("jobs", 3), "kept_in_use"),
        ])
    );
    assert_eq!(real.remaining.unwrap().total, 0);
}

#[tokio::test(start_paused = true)]
async fn every_finding_says_what_became_of_its_revision() {
    let mut st = State::new(NOW);
    st.family("web", 30);
    let young = st.tds.get_mut(&("web".to_string(), 2)).unwrap();
    young.active = false;
    young.deregistered_at = Some(NOW - DAY);
    for r in [2, 3, 20, 29] {
        st.tds.get_mut(&("web".to_string(), r)).unwrap().env =
            vec![("API_TOKEN".into(), "tok-live-not-a-reference".into())];
    }
    let state = Arc::new(Mutex::new(st));
    // Deregistrations at 1 per 2 s with no burst and 10 s: the oldest few are done, the rest
    // (web:20 among them) wait for the next run.
    let pairs = [
        ("KEEP_REVISIONS", "2"),
        ("ECS_MODIFY_RATE", "0.5"),
        ("ECS_MODIFY_BURST", "1"),
        ("DEADLINE_MARGIN_MS", "0"),
    ];
    let report = run(&state, &pairs, Duration::from_secs(10)).await.unwrap();
    let outcome = |r: u32| {
        report
            .plaintext_findings
            .iter()
            .find(|f| f.task_definition == td_arn("web", r))
            .map(|f| f.outcome)
    };
    assert_eq!(outcome(2), Some("kept_inactive"), "{report:#?}");
    assert_eq!(outcome(3), Some("deregistered"));
    assert_eq!(outcome(20), Some("pending"));
    assert_eq!(outcome(29), Some("kept_recent"));
    assert_eq!(report.stopped, Some("deadline"));
    assert!(
        report
            .plaintext_findings
            .iter()
            .all(|f| f.variables[0].variable == "API_TOKEN")
    );
}
