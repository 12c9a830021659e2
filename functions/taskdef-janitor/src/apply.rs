//! The adapter: applies the plan, paced and deadline-aware, and re-plans a revision each
//! time something new is learnt about it.
//!
//! Three workers run at once, each on its own ECS bucket:
//!
//! - **describe** (read bucket): `DescribeTaskDefinition` for every revision, delete
//!   candidates first; learns the deregistration time and the plaintext findings;
//! - **deregister** (modify bucket): `DeregisterTaskDefinition` for what the plan retires;
//! - **delete** (delete bucket): `DeleteTaskDefinitions` in batches of 10.
//!
//! Every decision comes from [`planner::decide`]; a revision is queued for an action at most
//! once per run. State only moves forward (ACTIVE → INACTIVE → gone), so a late description
//! never undoes a deregistration. In a dry run the changes are simulated in the ledger and
//! no mutating call is made.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::discovery::Ctx;
use crate::plaintext::{self, Finding};
use crate::planner::{self, Decision, FamilyContext, InUse, Policy, Revision, Status};
use crate::refs::{self, RevisionId};

/// DeleteTaskDefinitions takes at most 10 revisions per call.
pub const DELETE_BATCH: usize = 10;

/// One revision's state during the run.
#[derive(Debug, Clone)]
pub struct Entry {
    pub rev: Revision,
    pub arn: String,
    /// The status when the run listed it.
    pub listed_status: Status,
    /// Deleted (by this run or before it): nothing more to do.
    pub gone: bool,
    pub deregistered_now: bool,
    pub deleted_now: bool,
    queued_modify: bool,
    queued_delete: bool,
}

/// A call that failed after discovery (the run goes on; the next run retries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub task_definition: String,
    pub operation: &'static str,
    pub error: String,
}

/// What the run did and learnt.
#[derive(Debug, Default)]
pub struct Outcome {
    pub entries: BTreeMap<RevisionId, Entry>,
    pub ctxs: BTreeMap<String, FamilyContext>,
    pub deregistered: Vec<RevisionId>,
    pub deleted: Vec<RevisionId>,
    /// Found already INACTIVE or DELETE_IN_PROGRESS by the call that was to make it so.
    pub already_done: usize,
    pub planned_deregister: BTreeSet<RevisionId>,
    pub planned_delete: BTreeSet<RevisionId>,
    pub failures: Vec<Failure>,
    pub out_of_time: bool,
}

struct Ledger {
    out: Outcome,
    modify_q: VecDeque<RevisionId>,
    delete_q: VecDeque<RevisionId>,
    describing: bool,
    modifying: bool,
}

struct Exec<'a> {
    cx: &'a Ctx<'a>,
    in_use: &'a InUse,
    policy: Policy,
    now: DateTime<Utc>,
    dry_run: bool,
    ledger: Mutex<Ledger>,
    notify: Notify,
}

impl Ledger {
    /// Re-plans `id` and queues what the decision asks for (once).
    fn route(&mut self, id: &RevisionId, in_use: &InUse, policy: &Policy, now: DateTime<Utc>) {
        let Some(e) = self.out.entries.get_mut(id) else {
            return;
        };
        if e.gone {
            return;
        }
        let Some(ctx) = self.out.ctxs.get(&id.family) else {
            return;
        };
        let d = planner::decide(&e.rev, ctx, in_use, policy, now);
        match d {
            Decision::Deregister | Decision::DeregisterThenDelete(_)
                if e.rev.status == Status::Active && !e.queued_modify =>
            {
                e.queued_modify = true;
                self.modify_q.push_back(id.clone());
                self.out.planned_deregister.insert(id.clone());
                if d.deletes() {
                    self.out.planned_delete.insert(id.clone());
                }
            }
            Decision::Delete(_) if e.rev.status == Status::Inactive && !e.queued_delete => {
                e.queued_delete = true;
                self.delete_q.push_back(id.clone());
                self.out.planned_delete.insert(id.clone());
            }
            _ => {}
        }
    }

    fn entry(&mut self, id: &RevisionId) -> Option<&mut Entry> {
        self.out.entries.get_mut(id)
    }

    fn fail(&mut self, id: &RevisionId, operation: &'static str, error: String) {
        let task_definition = self
            .out
            .entries
            .get(id)
            .map(|e| e.arn.clone())
            .unwrap_or_default();
        self.out.failures.push(Failure {
            task_definition,
            operation,
            error,
        });
    }
}

fn error_text<E: ProvideErrorMetadata + std::error::Error>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
    }
}

/// The revision no longer exists (deleted, or being deleted).
fn is_gone(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("unable to describe task definition")
        || t.contains("does not exist")
        || t.contains("delete_in_progress")
        || t.contains("not found")
}

/// The revision was already deregistered.
fn is_inactive(text: &str) -> bool {
    text.to_ascii_lowercase().contains("inactive")
}

/// Runs the three workers over `revisions` until the plan is done or the deadline comes.
pub async fn run(
    cx: &Ctx<'_>,
    revisions: Vec<Revision>,
    arns: &BTreeMap<RevisionId, String>,
    in_use: &InUse,
    policy: Policy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Outcome {
    let ctxs = planner::contexts(&revisions, policy.keep_revisions);
    let entries: BTreeMap<RevisionId, Entry> = revisions
        .into_iter()
        .map(|rev| {
            let arn = arns
                .get(&rev.id)
                .cloned()
                .unwrap_or_else(|| rev.id.to_string());
            let e = Entry {
                listed_status: rev.status,
                arn,
                rev,
                gone: false,
                deregistered_now: false,
                deleted_now: false,
                queued_modify: false,
                queued_delete: false,
            };
            (e.rev.id.clone(), e)
        })
        .collect();
    // Interleave families: every family's oldest revisions first.
    let mut order: Vec<RevisionId> = entries.keys().cloned().collect();
    order.sort_by(|a, b| (a.revision, &a.family).cmp(&(b.revision, &b.family)));

    let mut ledger = Ledger {
        out: Outcome {
            entries,
            ctxs,
            ..Outcome::default()
        },
        modify_q: VecDeque::new(),
        delete_q: VecDeque::new(),
        describing: true,
        modifying: true,
    };
    for id in &order {
        ledger.route(id, in_use, &policy, now);
    }
    // Describe what may become deletable first, then what the purge may reach, then the rest.
    let rank = |id: &RevisionId| -> u8 {
        let e = &ledger.out.entries[id];
        let d = planner::decide(&e.rev, &ledger.out.ctxs[&id.family], in_use, &policy, now);
        match (d, e.rev.status) {
            (Decision::NeedsDetails, Status::Inactive) => 0,
            (Decision::NeedsDetails, Status::Active) => 1,
            (Decision::Deregister, _) if policy.purge_plaintext => 2,
            _ => 3,
        }
    };
    let mut describe: Vec<(u8, RevisionId)> =
        order.iter().map(|id| (rank(id), id.clone())).collect();
    describe.sort_by_key(|(r, _)| *r);

    let exec = Exec {
        cx,
        in_use,
        policy,
        now,
        dry_run,
        ledger: Mutex::new(ledger),
        notify: Notify::new(),
    };
    tokio::join!(
        exec.describe_worker(describe.into_iter().map(|(_, id)| id).collect()),
        exec.modify_worker(),
        exec.delete_worker()
    );
    exec.ledger
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .out
}

impl Exec<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn route(&self, ledger: &mut Ledger, id: &RevisionId) {
        ledger.route(id, self.in_use, &self.policy, self.now);
    }

    async fn describe_worker(&self, order: Vec<RevisionId>) {
        let ecs = &self.cx.clients.ecs;
        for id in order {
            let arn = match self.lock().out.entries.get(&id) {
                Some(e) if !e.gone => e.arn.clone(),
                _ => continue,
            };
            if self
                .cx
                .pacer
                .read
                .take(self.cx.deadline.producers)
                .await
                .is_err()
            {
                self.lock().out.out_of_time = true;
                break;
            }
            self.cx.calls.add("ecs:DescribeTaskDefinition");
            let res = ecs
                .describe_task_definition()
                .task_definition(&arn)
                .send()
                .await;
            let mut ledger = self.lock();
            match res {
                Ok(out) => {
                    let Some(td) = out.task_definition() else {
                        ledger.fail(
                            &id,
                            "DescribeTaskDefinition",
                            "no task definition in the response".into(),
                        );
                        continue;
                    };
                    // Values are classified here and dropped; only names are kept.
                    let findings: Vec<Finding> = td
                        .container_definitions()
                        .iter()
                        .flat_map(|c| {
                            plaintext::scan(
                                c.name().unwrap_or("?"),
                                c.environment()
                                    .iter()
                                    .filter_map(|kv| Some((kv.name()?, kv.value()?))),
                            )
                        })
                        .collect();
                    let status = td.status().map(|s| s.as_str().to_string());
                    let deregistered_at = td.deregistered_at().and_then(shared::aws::to_utc);
                    if let Some(e) = ledger.entry(&id) {
                        e.rev.findings = Some(findings);
                        if deregistered_at.is_some() {
                            e.rev.deregistered_at = deregistered_at;
                        }
                        match status.as_deref() {
                            Some("INACTIVE") => e.rev.status = Status::Inactive,
                            Some("DELETE_IN_PROGRESS") => e.gone = true,
                            _ => {}
                        }
                    }
                    self.route(&mut ledger, &id);
                }
                Err(e) => {
                    let text = error_text(&e);
                    if is_gone(&text) {
                        if let Some(e) = ledger.entry(&id) {
                            e.gone = true;
                        }
                    } else {
                        ledger.fail(&id, "DescribeTaskDefinition", text);
                    }
                }
            }
            drop(ledger);
            self.notify.notify_waiters();
        }
        self.lock().describing = false;
        self.notify.notify_waiters();
    }

    async fn modify_worker(&self) {
        let ecs = &self.cx.clients.ecs;
        loop {
            let next = loop {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let mut ledger = self.lock();
                    if let Some(id) = ledger.modify_q.pop_front() {
                        break Some(id);
                    }
                    if !ledger.describing {
                        break None;
                    }
                }
                notified.await;
            };
            let Some(id) = next else { break };
            let arn = self.lock().out.entries[&id].arn.clone();
            if self.dry_run {
                let mut ledger = self.lock();
                if let Some(e) = ledger.entry(&id) {
                    e.rev.status = Status::Inactive;
                    e.rev.deregistered_at = Some(self.now);
                }
                self.route(&mut ledger, &id);
                drop(ledger);
                self.notify.notify_waiters();
                continue;
            }
            if self
                .cx
                .pacer
                .modify
                .take(self.cx.deadline.producers)
                .await
                .is_err()
            {
                let mut ledger = self.lock();
                ledger.modify_q.push_front(id);
                ledger.out.out_of_time = true;
                break;
            }
            self.cx.calls.add("ecs:DeregisterTaskDefinition");
            let res = ecs
                .deregister_task_definition()
                .task_definition(&arn)
                .send()
                .await;
            let mut ledger = self.lock();
            match res {
                Ok(out) => {
                    let at = out
                        .task_definition()
                        .and_then(|t| t.deregistered_at())
                        .and_then(shared::aws::to_utc)
                        .unwrap_or_else(Utc::now);
                    if let Some(e) = ledger.entry(&id) {
                        e.rev.status = Status::Inactive;
                        e.rev.deregistered_at = Some(at);
                        e.deregistered_now = true;
                    }
                    ledger.out.deregistered.push(id.clone());
                    tracing::info!(task_definition = %arn, "deregistered");
                }
                Err(err) => {
                    let text = error_text(&err);
                    if is_gone(&text) {
                        if let Some(e) = ledger.entry(&id) {
                            e.gone = true;
                        }
                        ledger.out.already_done += 1;
                    } else if is_inactive(&text) {
                        if let Some(e) = ledger.entry(&id) {
                            e.rev.status = Status::Inactive;
                        }
                        ledger.out.already_done += 1;
                    } else {
                        tracing::warn!(task_definition = %arn, error = %text, "deregister failed");
                        ledger.fail(&id, "DeregisterTaskDefinition", text);
                    }
                }
            }
            self.route(&mut ledger, &id);
            drop(ledger);
            self.notify.notify_waiters();
        }
        self.lock().modifying = false;
        self.notify.notify_waiters();
    }

    /// Waits for a full batch, or takes what is queued once the producers are done (or
    /// out of time). `None`: nothing more will come.
    async fn next_batch(&self) -> Option<Vec<RevisionId>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut ledger = self.lock();
                let producers_done = !ledger.describing && !ledger.modifying;
                let late = Instant::now() >= self.cx.deadline.producers;
                let q = &mut ledger.delete_q;
                if q.len() >= DELETE_BATCH || ((producers_done || late) && !q.is_empty()) {
                    let n = q.len().min(DELETE_BATCH);
                    return Some(q.drain(..n).collect());
                }
                if producers_done {
                    return None;
                }
            }
            if Instant::now() < self.cx.deadline.producers {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(self.cx.deadline.producers) => {}
                }
            } else {
                notified.await;
            }
        }
    }

    async fn delete_worker(&self) {
        let ecs = &self.cx.clients.ecs;
        while let Some(batch) = self.next_batch().await {
            if self.dry_run {
                let mut ledger = self.lock();
                for id in &batch {
                    if let Some(e) = ledger.entry(id) {
                        e.gone = true;
                    }
                }
                continue;
            }
            if self
                .cx
                .pacer
                .delete
                .take(self.cx.deadline.flush)
                .await
                .is_err()
            {
                let mut ledger = self.lock();
                for id in batch.into_iter().rev() {
                    ledger.delete_q.push_front(id);
                }
                ledger.out.out_of_time = true;
                break;
            }
            let arns: Vec<String> = {
                let ledger = self.lock();
                batch
                    .iter()
                    .map(|id| ledger.out.entries[id].arn.clone())
                    .collect()
            };
            self.cx.calls.add("ecs:DeleteTaskDefinitions");
            let res = ecs
                .delete_task_definitions()
                .set_task_definitions(Some(arns.clone()))
                .send()
                .await;
            let mut ledger = self.lock();
            match res {
                Ok(out) => {
                    let mut settled = BTreeSet::new();
                    for td in out.task_definitions() {
                        let Some(id) = td.task_definition_arn().and_then(refs::revision_of) else {
                            continue;
                        };
                        if let Some(e) = ledger.entry(&id) {
                            e.gone = true;
                            e.deleted_now = true;
                            tracing::info!(task_definition = %e.arn, "deleted");
                        }
                        ledger.out.deleted.push(id.clone());
                        settled.insert(id);
                    }
                    for f in out.failures() {
                        let Some(id) = f.arn().and_then(refs::revision_of) else {
                            continue;
                        };
                        let text = format!(
                            "{}{}",
                            f.reason().unwrap_or("failure"),
                            f.detail().map(|d| format!(": {d}")).unwrap_or_default()
                        );
                        if is_gone(&text) {
                            if let Some(e) = ledger.entry(&id) {
                                e.gone = true;
                            }
                            ledger.out.already_done += 1;
                        } else {
                            tracing::warn!(task_definition = f.arn().unwrap_or("?"), error = %text, "delete failed");
                            ledger.fail(&id, "DeleteTaskDefinitions", text);
                        }
                        settled.insert(id);
                    }
                    for id in batch.iter().filter(|id| !settled.contains(*id)) {
                        ledger.fail(id, "DeleteTaskDefinitions", "not in the response".into());
                    }
                }
                Err(err) => {
                    let text = error_text(&err);
                    tracing::warn!(error = %text, batch = batch.len(), "delete batch failed");
                    for id in &batch {
                        ledger.fail(id, "DeleteTaskDefinitions", text.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_done_from_error_texts() {
        assert!(is_gone(
            "ClientException: Unable to describe task definition."
        ));
        assert!(is_gone(
            "The specified task definition does not exist. Specify a valid account, family, revision and try again."
        ));
        assert!(is_gone("TASK_DEFINITION_DELETE_IN_PROGRESS"));
        assert!(!is_gone("ThrottlingException: Rate exceeded"));
        assert!(is_inactive(
            "ClientException: The task definition is INACTIVE"
        ));
        assert!(!is_inactive("ThrottlingException: Rate exceeded"));
    }
}
