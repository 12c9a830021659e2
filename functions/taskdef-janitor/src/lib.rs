//! taskdef-janitor: retires stale ECS task-definition revisions and purges plaintext
//! secrets, never touching a revision in use.
//!
//! A run: read the settings and the event → list the selected families' revisions and find
//! every revision in use (fail closed) → plan ([`planner`], pure) → apply ([`apply`]: paced
//! by client-side token buckets, stopping before the deadline) → report ([`report`]).
//! Runs are stateless: the next one recomputes everything and carries on.

pub mod apply;
pub mod asl;
pub mod clients;
pub mod discovery;
pub mod pacing;
pub mod plaintext;
pub mod planner;
pub mod refs;
pub mod report;
pub mod settings;
pub mod workflows;

use std::time::Duration;

use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use shared::{Env, Error};

pub use clients::{Calls, Clients};
use discovery::{Ctx, Halt};
use pacing::{Deadline, Pacer};
pub use report::Report;
pub use settings::Settings;

/// Reads `dry_run` from the event: a scheduled event (no such field), `{}` or
/// `{"dry_run": true}`; EventBridge constant input may also put it under `detail`.
pub fn event_dry_run(event: &Value) -> Result<bool, Error> {
    let obj = match event {
        Value::Null => return Ok(false),
        Value::Object(o) => o,
        _ => {
            return Err(Error::InvalidEvent(
                "expected a JSON object (a scheduled event or {\"dry_run\": true})".into(),
            ));
        }
    };
    let field = obj
        .get("dry_run")
        .or_else(|| obj.get("detail").and_then(|d| d.get("dry_run")));
    match field {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Error::InvalidEvent("dry_run must be true or false".into())),
    }
}

/// One run with explicit settings, time and time budget (the handler's core; the benchmark
/// drives it with simulated clients and a paused clock).
pub async fn run(
    clients: &Clients,
    settings: &Settings,
    dry_run: bool,
    now: DateTime<Utc>,
    budget: Duration,
) -> Result<Report, Error> {
    let pacer = Pacer::new(
        settings.read_rate,
        settings.modify_rate,
        settings.delete_rate,
    );
    let calls = Calls::default();
    let cx = Ctx {
        clients,
        pacer: &pacer,
        calls: &calls,
        deadline: Deadline::new(budget, settings.deadline_margin, settings.delete_rate),
    };
    let discovered = async {
        let fleet = discovery::fleet(&cx, settings).await?;
        let (in_use, scanned) = discovery::in_use(&cx).await?;
        Ok::<_, Halt>((fleet, in_use, scanned))
    }
    .await;
    let (fleet, in_use, scanned) = match discovered {
        Ok(d) => d,
        Err(Halt::Failed(e)) => {
            tracing::error!(error = %e, "discovery failed: nothing was changed");
            return Err(e);
        }
        Err(Halt::OutOfTime) => {
            tracing::warn!("the deadline came during discovery: nothing was changed");
            return Ok(Report {
                dry_run,
                stopped: Some("deadline during discovery"),
                api_calls: calls.snapshot(),
                ..Report::default()
            });
        }
    };
    let out = apply::run(
        &cx,
        fleet.revisions,
        &fleet.arns,
        &in_use,
        settings.policy,
        now,
        dry_run,
    )
    .await;
    let mut report = report::build(&out, &in_use, &settings.policy, now, dry_run);
    report.families = fleet.families.len();
    report.scanned = scanned;
    report.api_calls = calls.snapshot();
    report.paced_ms = report::Paced {
        read: pacer.read.waited().as_millis() as u64,
        modify: pacer.modify.waited().as_millis() as u64,
        delete: pacer.delete.waited().as_millis() as u64,
    };
    Ok(report)
}

/// Time left before the invocation deadline (epoch milliseconds, from the Runtime API).
fn budget(deadline_ms: u64) -> Duration {
    let now_ms = Utc::now().timestamp_millis().max(0) as u64;
    Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// The Lambda handler: one run per event; a run with failed actions is an error
/// (`PartialFailure`) after its report is logged.
pub async fn handler(clients: &Clients, event: LambdaEvent<Value>) -> Result<Report, Error> {
    let dry_run_event = event_dry_run(&event.payload)?;
    let settings = Settings::from_env(&Env::from_process())?;
    let dry_run = settings.dry_run || dry_run_event;
    let report = run(
        clients,
        &settings,
        dry_run,
        Utc::now(),
        budget(event.context.deadline),
    )
    .await?;
    report::record_metrics(&report);
    for f in &report.plaintext_findings {
        let names: Vec<&str> = f.variables.iter().map(|v| v.variable.as_str()).collect();
        tracing::warn!(
            task_definition = %f.task_definition,
            variables = ?names,
            outcome = f.outcome,
            "plaintext credentials in a task definition"
        );
    }
    let remaining = report.remaining.as_ref().map_or(-1, |r| r.total as i64);
    tracing::info!(
        dry_run,
        deregistered = report.deregistered.len(),
        deleted = report.deleted.len(),
        kept_in_use = report.kept_in_use.len(),
        kept_recent = report.kept_recent.len(),
        plaintext_findings = report.plaintext_findings.len(),
        remaining,
        failures = report.failures.len(),
        "run finished"
    );
    if !report.failures.is_empty() {
        let json = serde_json::to_string(&report).unwrap_or_default();
        tracing::info!(report = %json, "report of the failed run");
        let first = &report.failures[0];
        return Err(Error::Partial(format!(
            "{} of {} planned actions failed; first: {} {}: {}",
            report.failures.len(),
            report.planned.deregister.len() + report.planned.delete.len(),
            first.operation,
            first.task_definition,
            first.error
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dry_run_from_the_event() {
        assert!(!event_dry_run(&Value::Null).unwrap());
        assert!(!event_dry_run(&json!({})).unwrap());
        assert!(event_dry_run(&json!({"dry_run": true})).unwrap());
        assert!(!event_dry_run(&json!({"dry_run": false})).unwrap());
        assert!(
            event_dry_run(&json!({"detail-type": "Scheduled Event", "detail": {"dry_run": true}}))
                .unwrap()
        );
        assert!(!event_dry_run(&json!({"detail-type": "Scheduled Event", "detail": {}})).unwrap());
        assert_eq!(
            event_dry_run(&json!({"dry_run": "yes"}))
                .unwrap_err()
                .error_type(),
            "InvalidEvent"
        );
        assert_eq!(
            event_dry_run(&json!([1])).unwrap_err().error_type(),
            "InvalidEvent"
        );
    }
}
