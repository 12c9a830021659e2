//! Observing the account: the selected families and their revisions, and every revision in use.
//!
//! Fail closed: any call that fails stops the run before anything is changed. Every list is
//! paginated to its end; ECS calls draw from the read bucket.

use aws_sdk_ecs::error::SdkError;
use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ecs::types::{DesiredStatus, TaskDefinitionFamilyStatus, TaskDefinitionStatus};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::Serialize;
use shared::Error;

use crate::clients::{Calls, Clients};
use crate::pacing::{Deadline, OutOfTime, Pacer};
use crate::planner::{InUse, Revision, Status};
use crate::refs::{self, RevisionId};
use crate::settings::Settings;

/// Why discovery stopped.
#[derive(Debug)]
pub enum Halt {
    /// A call failed: nothing may be changed.
    Failed(Error),
    /// The deadline came first.
    OutOfTime,
}

impl From<OutOfTime> for Halt {
    fn from(_: OutOfTime) -> Self {
        Halt::OutOfTime
    }
}

/// What a run reads and paces its calls with.
pub struct Ctx<'a> {
    pub clients: &'a Clients,
    pub pacer: &'a Pacer,
    pub calls: &'a Calls,
    pub deadline: Deadline,
}

impl Ctx<'_> {
    /// Before an ECS read: a read token, and the count.
    async fn ecs_read(&self, action: &'static str) -> Result<(), OutOfTime> {
        self.pacer.read.take(self.deadline.producers).await?;
        self.calls.add(action);
        Ok(())
    }

    /// Before an EventBridge or Scheduler read (their own, generous limits): the count.
    pub(crate) fn other_read(&self, action: &'static str) -> Result<(), OutOfTime> {
        if tokio::time::Instant::now() >= self.deadline.producers {
            return Err(OutOfTime);
        }
        self.calls.add(action);
        Ok(())
    }
}

pub(crate) fn failed<E, R>(
    service: &'static str,
    operation: &'static str,
    err: SdkError<E, R>,
) -> Halt
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    Halt::Failed(match Error::aws(service, operation, err) {
        Error::Aws {
            service,
            operation,
            code,
            message,
        } => Error::Aws {
            service,
            operation,
            code,
            message: format!("{message} (discovery failed closed: nothing was changed)"),
        },
        other => other,
    })
}

/// How much discovery looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scanned {
    pub clusters: usize,
    pub services: usize,
    pub tasks: usize,
    pub rules: usize,
    pub schedules: usize,
    /// State machines, aliases and running executions whose definitions were read.
    pub state_machines: usize,
    pub pipes: usize,
}

/// The selected families' revisions and their ARNs.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub families: Vec<String>,
    pub revisions: Vec<Revision>,
    pub arns: BTreeMap<RevisionId, String>,
}

/// The families selected by `FAMILY_PREFIXES` and `EXCLUDE_FAMILIES`, and their ACTIVE and
/// INACTIVE revisions.
pub async fn fleet(cx: &Ctx<'_>, settings: &Settings) -> Result<Fleet, Halt> {
    let ecs = &cx.clients.ecs;
    let prefixes: Vec<Option<&str>> = if settings.family_prefixes.is_empty() {
        vec![None]
    } else {
        settings
            .family_prefixes
            .iter()
            .map(|p| Some(p.as_str()))
            .collect()
    };
    let mut families = BTreeSet::new();
    for prefix in prefixes {
        let mut token = None;
        loop {
            cx.ecs_read("ecs:ListTaskDefinitionFamilies").await?;
            let page = ecs
                .list_task_definition_families()
                .set_family_prefix(prefix.map(str::to_string))
                .status(TaskDefinitionFamilyStatus::All)
                .max_results(100)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| failed("ECS", "ListTaskDefinitionFamilies", e))?;
            families.extend(
                page.families()
                    .iter()
                    .filter(|f| prefix.is_none_or(|p| f.starts_with(p)))
                    .filter(|f| !settings.excluded(f))
                    .cloned(),
            );
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
    }
    let mut fleet = Fleet {
        families: families.iter().cloned().collect(),
        ..Fleet::default()
    };
    for family in &families {
        for (status, listed) in [
            (TaskDefinitionStatus::Active, Status::Active),
            (TaskDefinitionStatus::Inactive, Status::Inactive),
        ] {
            let mut token = None;
            loop {
                cx.ecs_read("ecs:ListTaskDefinitions").await?;
                let page = ecs
                    .list_task_definitions()
                    .family_prefix(family)
                    .status(status.clone())
                    .max_results(100)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| failed("ECS", "ListTaskDefinitions", e))?;
                for arn in page.task_definition_arns() {
                    // familyPrefix matches whole family names; checked anyway.
                    let Some(id) = refs::revision_of(arn).filter(|id| &id.family == family) else {
                        continue;
                    };
                    if fleet.arns.insert(id.clone(), arn.clone()).is_none() {
                        fleet.revisions.push(Revision {
                            id,
                            status: listed,
                            deregistered_at: None,
                            findings: None,
                        });
                    }
                }
                token = page.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
    }
    Ok(fleet)
}

fn last_segment(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Every revision in use: services (their task definition, every deployment and task set),
/// running and pending tasks in every cluster, EventBridge rule targets on every bus,
/// EventBridge Scheduler schedules that run ECS tasks, Step Functions state machines (their
/// definition, the versions their aliases route to, running executions) and EventBridge Pipes
/// with ECS targets.
pub async fn in_use(cx: &Ctx<'_>) -> Result<(InUse, Scanned), Halt> {
    let mut in_use = InUse::default();
    let mut scanned = Scanned::default();
    for cluster in clusters(cx).await? {
        scanned.clusters += 1;
        scanned.services += services(cx, &cluster, &mut in_use).await?;
        scanned.tasks += tasks(cx, &cluster, &mut in_use).await?;
    }
    scanned.rules = rules(cx, &mut in_use).await?;
    scanned.schedules = schedules(cx, &mut in_use).await?;
    scanned.state_machines = crate::workflows::state_machines(cx, &mut in_use).await?;
    scanned.pipes = crate::workflows::pipes(cx, &mut in_use).await?;
    Ok((in_use, scanned))
}

pub(crate) fn add(in_use: &mut InUse, reference: Option<&str>, user: impl FnOnce() -> String) {
    if let Some(r) = reference.and_then(refs::parse) {
        in_use.add(r, user());
    }
}

async fn clusters(cx: &Ctx<'_>) -> Result<Vec<String>, Halt> {
    let ecs = &cx.clients.ecs;
    let mut out = vec![];
    let mut token = None;
    loop {
        cx.ecs_read("ecs:ListClusters").await?;
        let page = ecs
            .list_clusters()
            .max_results(100)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| failed("ECS", "ListClusters", e))?;
        out.extend(page.cluster_arns().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// Failures other than MISSING (gone since it was listed) fail the discovery.
fn check_failures(
    failures: &[aws_sdk_ecs::types::Failure],
    operation: &'static str,
) -> Result<(), Halt> {
    match failures.iter().find(|f| f.reason() != Some("MISSING")) {
        None => Ok(()),
        Some(f) => Err(Halt::Failed(Error::Aws {
            service: "ECS",
            operation,
            code: f.reason().map(str::to_string),
            message: format!(
                "{} for {} (discovery failed closed: nothing was changed)",
                f.reason().unwrap_or("failure"),
                f.arn().unwrap_or("?")
            ),
        })),
    }
}

async fn services(cx: &Ctx<'_>, cluster: &str, in_use: &mut InUse) -> Result<usize, Halt> {
    let ecs = &cx.clients.ecs;
    let cluster_name = last_segment(cluster);
    let mut arns = vec![];
    let mut token = None;
    loop {
        cx.ecs_read("ecs:ListServices").await?;
        let page = ecs
            .list_services()
            .cluster(cluster)
            .max_results(100)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| failed("ECS", "ListServices", e))?;
        arns.extend(page.service_arns().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    for chunk in arns.chunks(10) {
        cx.ecs_read("ecs:DescribeServices").await?;
        let out = ecs
            .describe_services()
            .cluster(cluster)
            .set_services(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| failed("ECS", "DescribeServices", e))?;
        check_failures(out.failures(), "DescribeServices")?;
        for svc in out.services() {
            let name = svc.service_name().unwrap_or("?");
            let who = format!("service {cluster_name}/{name}");
            add(in_use, svc.task_definition(), || who.clone());
            for d in svc.deployments() {
                add(in_use, d.task_definition(), || {
                    format!(
                        "{who} deployment {} ({})",
                        d.id().unwrap_or("?"),
                        d.status().unwrap_or("?")
                    )
                });
            }
            for ts in svc.task_sets() {
                add(in_use, ts.task_definition(), || {
                    format!("{who} task set {}", ts.id().unwrap_or("?"))
                });
            }
        }
    }
    Ok(arns.len())
}

async fn tasks(cx: &Ctx<'_>, cluster: &str, in_use: &mut InUse) -> Result<usize, Halt> {
    let ecs = &cx.clients.ecs;
    let cluster_name = last_segment(cluster);
    let mut arns = vec![];
    let mut token = None;
    // Desired status RUNNING covers PROVISIONING, PENDING, ACTIVATING and RUNNING tasks.
    loop {
        cx.ecs_read("ecs:ListTasks").await?;
        let page = ecs
            .list_tasks()
            .cluster(cluster)
            .desired_status(DesiredStatus::Running)
            .max_results(100)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| failed("ECS", "ListTasks", e))?;
        arns.extend(page.task_arns().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    for chunk in arns.chunks(100) {
        cx.ecs_read("ecs:DescribeTasks").await?;
        let out = ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| failed("ECS", "DescribeTasks", e))?;
        check_failures(out.failures(), "DescribeTasks")?;
        for t in out.tasks() {
            add(in_use, t.task_definition_arn(), || {
                format!(
                    "task {cluster_name}/{} ({})",
                    last_segment(t.task_arn().unwrap_or("?")),
                    t.last_status().unwrap_or("?")
                )
            });
        }
    }
    Ok(arns.len())
}

async fn rules(cx: &Ctx<'_>, in_use: &mut InUse) -> Result<usize, Halt> {
    let eventbridge = &cx.clients.eventbridge;
    let mut buses = vec![];
    let mut token = None;
    loop {
        cx.other_read("events:ListEventBuses")?;
        let page = eventbridge
            .list_event_buses()
            .limit(100)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| failed("EventBridge", "ListEventBuses", e))?;
        buses.extend(
            page.event_buses()
                .iter()
                .filter_map(|b| b.name())
                .map(str::to_string),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    if buses.is_empty() {
        buses.push("default".to_string());
    }
    let mut count = 0;
    for bus in &buses {
        let mut names = vec![];
        let mut token = None;
        loop {
            cx.other_read("events:ListRules")?;
            let page = eventbridge
                .list_rules()
                .event_bus_name(bus)
                .limit(100)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| failed("EventBridge", "ListRules", e))?;
            names.extend(
                page.rules()
                    .iter()
                    .filter_map(|r| r.name())
                    .map(str::to_string),
            );
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        for rule in &names {
            count += 1;
            let mut token = None;
            loop {
                cx.other_read("events:ListTargetsByRule")?;
                let page = match eventbridge
                    .list_targets_by_rule()
                    .rule(rule)
                    .event_bus_name(bus)
                    .limit(100)
                    .set_next_token(token)
                    .send()
                    .await
                {
                    Ok(p) => p,
                    // Deleted since it was listed: it runs nothing.
                    Err(e) if e.code() == Some("ResourceNotFoundException") => break,
                    Err(e) => return Err(failed("EventBridge", "ListTargetsByRule", e)),
                };
                for t in page.targets() {
                    add(
                        in_use,
                        t.ecs_parameters().map(|p| p.task_definition_arn()),
                        || format!("rule {bus}/{rule} target {}", t.id()),
                    );
                }
                token = page.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
    }
    Ok(count)
}

/// A schedule target that starts ECS tasks: a cluster (templated target) or the universal
/// target `arn:<partition>:scheduler:::aws-sdk:ecs:<action>`.
fn runs_ecs(target_arn: &str) -> bool {
    (target_arn.contains(":ecs:") && target_arn.contains(":cluster/"))
        || target_arn.contains(":scheduler:::aws-sdk:ecs:")
}

/// The task definition a universal-target input names (`TaskDefinition`, as the API spells it).
fn input_task_definition(input: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(input).ok()?;
    ["TaskDefinition", "taskDefinition"]
        .iter()
        .find_map(|k| v.get(*k).and_then(|t| t.as_str()).map(str::to_string))
}

async fn schedules(cx: &Ctx<'_>, in_use: &mut InUse) -> Result<usize, Halt> {
    let scheduler = &cx.clients.scheduler;
    let mut ecs_schedules = vec![];
    let mut count = 0;
    let mut token = None;
    loop {
        cx.other_read("scheduler:ListSchedules")?;
        let page = scheduler
            .list_schedules()
            .max_results(100)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| failed("Scheduler", "ListSchedules", e))?;
        for s in page.schedules() {
            count += 1;
            if s.target().is_some_and(|t| runs_ecs(t.arn())) {
                ecs_schedules.push((
                    s.group_name().unwrap_or("default").to_string(),
                    s.name().unwrap_or_default().to_string(),
                ));
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    for (group, name) in ecs_schedules {
        cx.other_read("scheduler:GetSchedule")?;
        let s = match scheduler
            .get_schedule()
            .group_name(&group)
            .name(&name)
            .send()
            .await
        {
            Ok(s) => s,
            Err(e) if e.code() == Some("ResourceNotFoundException") => continue,
            Err(e) => return Err(failed("Scheduler", "GetSchedule", e)),
        };
        let Some(target) = s.target() else { continue };
        let who = || format!("schedule {group}/{name}");
        add(
            in_use,
            target.ecs_parameters().map(|p| p.task_definition_arn()),
            who,
        );
        if let Some(td) = target.input().and_then(input_task_definition) {
            add(in_use, Some(&td), who);
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_schedules_that_run_ecs_tasks() {
        assert!(runs_ecs("arn:aws:ecs:us-east-1:123456789012:cluster/wiki"));
        assert!(runs_ecs("arn:aws:scheduler:::aws-sdk:ecs:runTask"));
        assert!(runs_ecs("arn:aws-cn:scheduler:::aws-sdk:ecs:startTask"));
        assert!(!runs_ecs(
            "arn:aws:lambda:us-east-1:123456789012:function:f"
        ));
        assert!(!runs_ecs("arn:aws:scheduler:::aws-sdk:sqs:sendMessage"));
    }

    #[test]
    fn reads_the_task_definition_of_a_universal_target() {
        assert_eq!(
            input_task_definition(r#"{"Cluster":"wiki","TaskDefinition":"jobs:4"}"#),
            Some("jobs:4".to_string())
        );
        assert_eq!(
            input_task_definition(r#"{"taskDefinition":"jobs"}"#),
            Some("jobs".into())
        );
        assert_eq!(input_task_definition("not json"), None);
        assert_eq!(input_task_definition(r#"{"Cluster":"wiki"}"#), None);
    }
}
