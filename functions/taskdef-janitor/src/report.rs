//! The JSON the function returns (and logs), and its EMF metrics.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::apply::{Failure, Outcome};
use crate::discovery::Scanned;
use crate::plaintext::Finding;
use crate::planner::{self, Decision, InUse, Policy, Status};

/// Users listed per kept revision before "… and N more".
const MAX_USERS: usize = 10;

/// The result of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// Everything planned was done (dry run: planned), and every revision was scanned.
    pub complete: bool,
    /// Why the run stopped early (`deadline`, `deadline during discovery`), if it did.
    pub stopped: Option<&'static str>,
    pub families: usize,
    pub revisions: usize,
    pub scanned: Scanned,
    /// ARNs deregistered by this run.
    pub deregistered: Vec<String>,
    /// ARNs deleted by this run.
    pub deleted: Vec<String>,
    /// Found already INACTIVE or DELETE_IN_PROGRESS when acted on (done, not an error).
    pub already_done: usize,
    /// The plan: everything this run deregistered and deleted or, in a dry run, would have.
    pub planned: Planned,
    pub kept_in_use: Vec<KeptInUse>,
    pub kept_recent: Vec<String>,
    pub plaintext_findings: Vec<PlaintextFinding>,
    /// Left for the next run; `null` when discovery itself did not finish.
    pub remaining: Option<Remaining>,
    pub failures: Vec<Failure>,
    /// API calls made, by IAM action.
    pub api_calls: BTreeMap<&'static str, u64>,
    /// Time spent waiting for tokens, per ECS bucket.
    pub paced_ms: Paced,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Planned {
    pub deregister: Vec<String>,
    pub delete: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeptInUse {
    pub task_definition: String,
    pub used_by: Vec<String>,
}

/// A revision holding plaintext credentials: the variable names, never the values.
#[derive(Debug, Clone, Serialize)]
pub struct PlaintextFinding {
    pub task_definition: String,
    /// Its status when the run listed it.
    pub status: Status,
    pub in_use: bool,
    /// `deleted`, `deregistered`, `would_delete`, `would_deregister`, `kept_in_use`,
    /// `kept_recent`, `kept_inactive` or `pending` (left for the next run).
    pub outcome: &'static str,
    pub variables: Vec<Finding>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Remaining {
    pub deregister: usize,
    pub delete: usize,
    /// Revisions not described (not scanned for plaintext, age unknown).
    pub undescribed: usize,
    pub total: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Paced {
    pub read: u64,
    pub modify: u64,
    pub delete: u64,
}

/// Builds the report from the outcome of a run.
pub fn build(
    out: &Outcome,
    in_use: &InUse,
    policy: &Policy,
    now: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
) -> Report {
    let arn = |id: &crate::refs::RevisionId| out.entries[id].arn.clone();
    let mut r = Report {
        dry_run,
        revisions: out.entries.len(),
        families: out.ctxs.len(),
        deregistered: out.deregistered.iter().map(arn).collect(),
        deleted: out.deleted.iter().map(arn).collect(),
        already_done: out.already_done,
        planned: Planned {
            deregister: out.planned_deregister.iter().map(arn).collect(),
            delete: out.planned_delete.iter().map(arn).collect(),
        },
        failures: out.failures.clone(),
        ..Report::default()
    };
    let mut remaining = Remaining::default();
    for (id, e) in &out.entries {
        let ctx = &out.ctxs[&id.family];
        let d = (!e.gone).then(|| planner::decide(&e.rev, ctx, in_use, policy, now));
        let users = in_use.users(id, ctx);
        match d {
            Some(Decision::KeepInUse) => {
                let mut used_by: Vec<String> = users.iter().take(MAX_USERS).cloned().collect();
                if users.len() > MAX_USERS {
                    used_by.push(format!("… and {} more", users.len() - MAX_USERS));
                }
                r.kept_in_use.push(crate::report::KeptInUse {
                    task_definition: e.arn.clone(),
                    used_by,
                });
            }
            Some(Decision::KeepRecent) => r.kept_recent.push(e.arn.clone()),
            Some(Decision::Deregister | Decision::DeregisterThenDelete(_))
                if e.rev.status == Status::Active =>
            {
                remaining.deregister += 1;
                remaining.delete += usize::from(d.is_some_and(|d| d.deletes()));
            }
            Some(Decision::Delete(_)) => remaining.delete += 1,
            _ => {}
        }
        if !e.gone && e.rev.findings.is_none() {
            remaining.undescribed += 1;
        }
        if let Some(findings) = e.rev.findings.as_ref().filter(|f| !f.is_empty()) {
            let planned_delete = out.planned_delete.contains(id);
            let planned_deregister = out.planned_deregister.contains(id);
            let outcome = match d {
                _ if e.deleted_now => "deleted",
                _ if dry_run && planned_delete => "would_delete",
                _ if dry_run && planned_deregister => "would_deregister",
                Some(Decision::KeepInUse) => "kept_in_use",
                Some(Decision::KeepRecent) => "kept_recent",
                Some(d) if d.touches() => "pending",
                _ if e.deregistered_now => "deregistered",
                _ => "kept_inactive",
            };
            r.plaintext_findings.push(PlaintextFinding {
                task_definition: e.arn.clone(),
                status: e.listed_status,
                in_use: !users.is_empty(),
                outcome,
                variables: findings.clone(),
            });
        }
    }
    remaining.total = remaining.deregister + remaining.delete + remaining.undescribed;
    r.complete = remaining.total == 0;
    if out.out_of_time {
        r.stopped = Some("deadline");
    }
    r.remaining = Some(remaining);
    r
}

/// Records the run's EMF metrics (flushed by the runtime once per invocation).
pub fn record_metrics(r: &Report) {
    let n = |v: usize| v as u64;
    metrics::counter!("Deregistered").increment(n(r.deregistered.len()));
    metrics::counter!("Deleted").increment(n(r.deleted.len()));
    metrics::counter!("KeptInUse").increment(n(r.kept_in_use.len()));
    metrics::counter!("KeptRecent").increment(n(r.kept_recent.len()));
    metrics::counter!("PlaintextFindings").increment(n(r.plaintext_findings.len()));
    metrics::counter!("Failures").increment(n(r.failures.len()));
    metrics::counter!("ApiCalls").increment(r.api_calls.values().sum());
    metrics::gauge!("Remaining").set(r.remaining.as_ref().map_or(-1.0, |x| x.total as f64));
    metrics::gauge!("Revisions").set(r.revisions as f64);
}
