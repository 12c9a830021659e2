//! The taskdef-janitor benchmark: API calls and simulated wall time for 2,000 revisions over
//! 20 families under ECS's limits (reads 50 + 20/s, task-definition modifications 20 + 1/s,
//! DeleteTaskDefinitions 5 + 1/s), against a simulated account that enforces those limits
//! server-side. Time is tokio's paused clock, so the figures are exact and repeatable.
//!
//! The reference, measured in the same run on the same account and buckets, is the usual
//! script: describe everything, then deregister and delete one revision at a time.
//!
//! `cargo run -p taskdef-janitor --example bench [-- --smoke]` (or `scripts/bench-taskdef-janitor`)
//! prints a markdown table and writes it to `target/bench/taskdef-janitor.md`.

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::DateTime;
use shared::Env;
use sim::{State, td_arn};
use taskdef_janitor::discovery::{self, Ctx};
use taskdef_janitor::pacing::{Deadline, Pacer, Rate};
use taskdef_janitor::planner::{self, Decision};
use taskdef_janitor::{Calls, Settings};

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;
/// Lambda's longest timeout.
const INVOCATION: Duration = Duration::from_secs(900);
/// Time between invocations (the next scheduled run; ECS's buckets refill).
const GAP: Duration = Duration::from_secs(60);

const READ: Rate = Rate {
    per_second: 20.0,
    burst: 50,
};
const MODIFY: Rate = Rate {
    per_second: 1.0,
    burst: 20,
};
const DELETE: Rate = Rate {
    per_second: 1.0,
    burst: 5,
};

#[derive(Clone, Copy)]
enum Start {
    /// Every revision ACTIVE (a fleet that was never cleaned).
    Fresh,
    /// What the first run left: everything outside the keep window INACTIVE since `days` ago.
    Deregistered { days: i64 },
    /// Only what the policy keeps.
    Clean,
}

struct Scenario {
    name: &'static str,
    start: Start,
    env: &'static [(&'static str, &'static str)],
    dry_run: bool,
}

/// `families` × `per_family` revisions; one service per family (PRIMARY on the newest, an
/// ACTIVE deployment on the one before), standalone tasks, two rules and two schedules.
fn account(families: u32, per_family: u32, start: Start) -> State {
    let mut st = State::new(NOW);
    st.page = 100;
    st.clusters.push("batch".into());
    for f in 0..families {
        let family = format!("app-{f:02}");
        st.family(&family, per_family);
        let cluster = if f % 2 == 0 { "web" } else { "workers" };
        st.service(
            cluster,
            &family,
            &[(&family, per_family), (&family, per_family - 1)],
        );
        if f < 5 {
            st.tasks.push((
                "batch".into(),
                format!("task-{f}"),
                td_arn(&family, per_family - 15),
            ));
        }
    }
    let n = per_family;
    st.rules
        .push(("default".into(), "nightly".into(), td_arn("app-00", n - 25)));
    st.rules
        .push(("ops".into(), "latest".into(), "app-01".into()));
    st.schedules
        .push(("default".into(), "weekly".into(), td_arn("app-02", n - 35)));
    st.schedules
        .push(("reports".into(), "monthly".into(), td_arn("app-03", n - 45)));
    // What the first run kept: the window, and what is in use.
    let mut used: std::collections::BTreeSet<String> = st
        .services
        .iter()
        .flat_map(|s| s.deployments.iter().map(|d| d.2.clone()))
        .collect();
    used.extend(st.tasks.iter().map(|t| t.2.clone()));
    used.extend(st.rules.iter().chain(&st.schedules).map(|r| r.2.clone()));
    let keys: Vec<(String, u32)> = st.tds.keys().cloned().collect();
    for (family, r) in keys {
        if r > per_family - 10 || used.contains(&td_arn(&family, r)) {
            continue;
        }
        match start {
            Start::Fresh => {}
            Start::Deregistered { days } => {
                let td = st.tds.get_mut(&(family, r)).expect("registered");
                td.active = false;
                td.deregistered_at = Some(NOW - days * DAY);
            }
            Start::Clean => {
                st.tds.remove(&(family, r));
            }
        }
    }
    st.enforce_limits(READ, MODIFY, DELETE);
    st
}

#[derive(Default)]
struct Measured {
    invocations: u32,
    busy: Duration,
    calls: BTreeMap<&'static str, u64>,
    deregistered: usize,
    deleted: usize,
    throttled: u64,
    failures: usize,
    complete: bool,
}

impl Measured {
    fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
}

fn settings(env: &[(&str, &str)]) -> Settings {
    Settings::from_env(&Env::from_pairs(env.iter().copied())).expect("bench settings")
}

/// The janitor: invocations of 15 minutes until it reports nothing remaining (at most 10).
async fn janitor(state: &sim::Shared, sc: &Scenario) -> Measured {
    let clients = sim::clients(state);
    let settings = settings(sc.env);
    let now = DateTime::from_timestamp(NOW, 0).expect("time");
    let mut m = Measured::default();
    for _ in 0..10 {
        let t = tokio::time::Instant::now();
        let r = taskdef_janitor::run(&clients, &settings, sc.dry_run, now, INVOCATION)
            .await
            .expect("run");
        m.busy += t.elapsed();
        m.invocations += 1;
        m.deregistered += r.deregistered.len();
        m.deleted += r.deleted.len();
        m.failures += r.failures.len();
        if r.complete || sc.dry_run {
            m.complete = r.complete;
            break;
        }
        tokio::time::sleep(GAP).await;
    }
    let st = state.lock().expect("state");
    m.calls = st.calls.clone();
    m.throttled = st.throttled;
    m
}

/// The reference: the same discovery and plan, then one call at a time — describe every
/// revision, then for each retired one deregister and delete it (one per call).
async fn reference(state: &sim::Shared, sc: &Scenario) -> Measured {
    let clients = sim::clients(state);
    let settings = settings(sc.env);
    let now = DateTime::from_timestamp(NOW, 0).expect("time");
    let mut m = Measured::default();
    for _ in 0..10 {
        let t = tokio::time::Instant::now();
        let pacer = Pacer::new(READ, MODIFY, DELETE);
        let calls = Calls::default();
        let cx = Ctx {
            clients: &clients,
            pacer: &pacer,
            calls: &calls,
            deadline: Deadline::new(INVOCATION, settings.deadline_margin, DELETE),
        };
        let Ok(mut fleet) = discovery::fleet(&cx, &settings).await else {
            break;
        };
        let Ok((in_use, _)) = discovery::in_use(&cx).await else {
            break;
        };
        let ecs = &clients.ecs;
        let mut out_of_time = false;
        for rev in fleet.revisions.iter_mut() {
            if pacer.read.take(cx.deadline.producers).await.is_err() {
                out_of_time = true;
                break;
            }
            let arn = &fleet.arns[&rev.id];
            if let Ok(o) = ecs
                .describe_task_definition()
                .task_definition(arn)
                .send()
                .await
            {
                let td = o.task_definition();
                rev.deregistered_at = td
                    .and_then(|t| t.deregistered_at())
                    .and_then(shared::aws::to_utc);
                rev.findings = Some(vec![]);
            }
        }
        let plan = planner::plan(&fleet.revisions, &in_use, &settings.policy, now);
        for (id, d) in &plan {
            if out_of_time {
                break;
            }
            let arn = &fleet.arns[id];
            if matches!(d, Decision::Deregister | Decision::DeregisterThenDelete(_)) {
                if sc.dry_run {
                    continue;
                }
                if pacer.modify.take(cx.deadline.producers).await.is_err() {
                    out_of_time = true;
                    break;
                }
                if ecs
                    .deregister_task_definition()
                    .task_definition(arn)
                    .send()
                    .await
                    .is_ok()
                {
                    m.deregistered += 1;
                }
            }
            if d.deletes() && !sc.dry_run {
                if pacer.delete.take(cx.deadline.flush).await.is_err() {
                    out_of_time = true;
                    break;
                }
                if ecs
                    .delete_task_definitions()
                    .task_definitions(arn)
                    .send()
                    .await
                    .is_ok()
                {
                    m.deleted += 1;
                }
            }
        }
        m.busy += t.elapsed();
        m.invocations += 1;
        if !out_of_time || sc.dry_run {
            m.complete = !out_of_time;
            break;
        }
        tokio::time::sleep(GAP).await;
    }
    let st = state.lock().expect("state");
    m.calls = st.calls.clone();
    m.throttled = st.throttled;
    m
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 120.0 {
        format!("{s:.0} s ({:.1} min)", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let (families, per_family) = if smoke { (4, 50) } else { (20, 100) };
    let scenarios = [
        Scenario {
            name: "first run, defaults (KEEP_REVISIONS=10, DELETE_AFTER_DAYS=7)",
            start: Start::Fresh,
            env: &[],
            dry_run: false,
        },
        Scenario {
            name: "first run, dry run",
            start: Start::Fresh,
            env: &[],
            dry_run: true,
        },
        Scenario {
            name: "first run, DELETE_AFTER_DAYS=0 (deregister then delete)",
            start: Start::Fresh,
            env: &[("DELETE_AFTER_DAYS", "0")],
            dry_run: false,
        },
        Scenario {
            name: "a week later: delete what the first run deregistered",
            start: Start::Deregistered { days: 8 },
            env: &[],
            dry_run: false,
        },
        Scenario {
            name: "steady state: nothing to do",
            start: Start::Clean,
            env: &[],
            dry_run: false,
        },
    ];

    let mut md = String::new();
    let _ = writeln!(
        md,
        "{} revisions over {families} families ({} services, 5 standalone tasks, 2 rules, 2 schedules); \
         ECS limits enforced server-side (reads 50 + 20/s, modify 20 + 1/s, delete 5 + 1/s); \
         invocations of 15 min, {} s apart; simulated time (paused clock), API latency not modelled.\n",
        families * per_family,
        families,
        GAP.as_secs()
    );
    let _ = writeln!(
        md,
        "| scenario | invocations | simulated time | API calls | DescribeTaskDefinition | Deregister | DeleteTaskDefinitions calls | deregistered | deleted | throttled | reference: time | reference: calls | speed-up |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for sc in &scenarios {
        let ours = Arc::new(Mutex::new(account(families, per_family, sc.start)));
        let m = janitor(&ours, sc).await;
        let theirs = Arc::new(Mutex::new(account(families, per_family, sc.start)));
        let r = reference(&theirs, sc).await;
        let get = |k: &str| m.calls.get(k).copied().unwrap_or(0);
        assert_eq!(m.failures, 0, "{}: failures", sc.name);
        assert_eq!(m.throttled, 0, "{}: throttled", sc.name);
        let speedup = r.busy.as_secs_f64() / m.busy.as_secs_f64().max(1e-9);
        let _ = writeln!(
            md,
            "| {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2}× |",
            sc.name,
            m.invocations,
            if m.complete { "" } else { " (incomplete)" },
            secs(m.busy),
            m.total_calls(),
            get("ecs:DescribeTaskDefinition"),
            get("ecs:DeregisterTaskDefinition"),
            get("ecs:DeleteTaskDefinitions"),
            m.deregistered,
            m.deleted,
            m.throttled,
            secs(r.busy),
            r.total_calls(),
            speedup
        );
    }
    println!("{md}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or(std::path::Path::new("."));
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("bench");
    let path = dir.join(if smoke {
        "taskdef-janitor-smoke.md"
    } else {
        "taskdef-janitor.md"
    });
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, &md)) {
        eprintln!("write {}: {e}", path.display());
        std::process::exit(1);
    }
    eprintln!("written to {}", path.display());
}
