//! Revisions that Step Functions state machines and EventBridge Pipes run (adapter; the ASL
//! reading is [`crate::asl`], pure).
//!
//! A state machine runs its current definition, the versions its aliases route to, and, for
//! each running execution, the definition that execution started with: all three are read.
//! A `TaskDefinition` chosen at run time cannot be resolved, so it fails the run, as a failed
//! call does: nothing is changed. Deleted-since-listed resources run nothing and are skipped.

use std::collections::BTreeSet;

use aws_sdk_sfn::types::{ExecutionStatus, StateMachineType};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use shared::Error;

use crate::asl::{self, TaskDefinition};
use crate::discovery::{Ctx, Halt, add, failed};
use crate::planner::InUse;

/// Error codes that mean "deleted since it was listed".
const GONE: [&str; 4] = [
    "StateMachineDoesNotExist",
    "ExecutionDoesNotExist",
    "ResourceNotFound",
    "NotFoundException",
];

fn gone(code: Option<&str>) -> bool {
    code.is_some_and(|c| GONE.contains(&c))
}

/// The `errorType` of a reference the janitor cannot resolve.
pub const UNRESOLVED: &str = "UnresolvedTaskDefinition";

fn unresolved(who: &str, expression: &str) -> Halt {
    Halt::Failed(Error::Named {
        error_type: UNRESOLVED,
        message: format!(
            "{who} chooses its task definition at run time ({expression}): the revisions it \
             runs cannot be known, so nothing was changed. Name the task definition in it \
             (family:revision or family), or run the janitor where it cannot see it"
        ),
    })
}

/// Records every ECS task definition `definition` runs, as used by `who`.
fn read_definition(in_use: &mut InUse, who: &str, definition: &str) -> Result<(), Halt> {
    let states = asl::ecs_states(definition).map_err(|e| {
        Halt::Failed(Error::Named {
            error_type: UNRESOLVED,
            message: format!("{who}: {e}; nothing was changed"),
        })
    })?;
    for s in states {
        match s.task_definition {
            TaskDefinition::Literal(td) => {
                add(in_use, Some(&td), || format!("{who} state {}", s.path));
            }
            TaskDefinition::Dynamic(expr) => {
                return Err(unresolved(&format!("{who} state {}", s.path), &expr));
            }
        }
    }
    Ok(())
}

/// The last `:`-separated part of a state machine (or alias, version, execution) ARN.
fn short(arn: &str) -> &str {
    arn.split(":stateMachine:")
        .nth(1)
        .or_else(|| arn.split(":execution:").nth(1))
        .unwrap_or(arn)
}

/// Every state machine: its definition, its aliases' versions, its running executions'
/// definitions. Returns how many definitions were read.
pub async fn state_machines(cx: &Ctx<'_>, in_use: &mut InUse) -> Result<usize, Halt> {
    let sfn = &cx.clients.sfn;
    let mut machines = vec![];
    let mut token = None;
    loop {
        cx.other_read("states:ListStateMachines")?;
        let page = sfn
            .list_state_machines()
            .max_results(1000)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| failed("Step Functions", "ListStateMachines", e))?;
        machines.extend(page.state_machines().iter().map(|m| {
            (
                m.state_machine_arn().to_string(),
                *m.r#type() == StateMachineType::Standard,
            )
        }));
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let mut read = 0;
    for (arn, standard) in &machines {
        let mut versions = BTreeSet::from([arn.clone()]);
        versions.extend(alias_versions(cx, arn).await?);
        for version in &versions {
            cx.other_read("states:DescribeStateMachine")?;
            let out = match sfn
                .describe_state_machine()
                .state_machine_arn(version)
                .send()
                .await
            {
                Ok(o) => o,
                Err(e) if gone(e.code()) => continue,
                Err(e) => return Err(failed("Step Functions", "DescribeStateMachine", e)),
            };
            read += 1;
            let who = format!("state machine {}", short(version));
            read_definition(in_use, &who, out.definition())?;
        }
        if *standard {
            read += running_executions(cx, arn, in_use).await?;
        }
    }
    Ok(read)
}

/// The version ARNs the aliases of `machine` route to.
async fn alias_versions(cx: &Ctx<'_>, machine: &str) -> Result<Vec<String>, Halt> {
    let sfn = &cx.clients.sfn;
    let mut aliases = vec![];
    let mut token = None;
    loop {
        cx.other_read("states:ListStateMachineAliases")?;
        let page = match sfn
            .list_state_machine_aliases()
            .state_machine_arn(machine)
            .max_results(100)
            .set_next_token(token)
            .send()
            .await
        {
            Ok(p) => p,
            Err(e) if gone(e.code()) => return Ok(vec![]),
            Err(e) => return Err(failed("Step Functions", "ListStateMachineAliases", e)),
        };
        aliases.extend(
            page.state_machine_aliases()
                .iter()
                .map(|a| a.state_machine_alias_arn().to_string()),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let mut versions = vec![];
    for alias in aliases {
        cx.other_read("states:DescribeStateMachineAlias")?;
        let out = match sfn
            .describe_state_machine_alias()
            .state_machine_alias_arn(&alias)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if gone(e.code()) => continue,
            Err(e) => return Err(failed("Step Functions", "DescribeStateMachineAlias", e)),
        };
        versions.extend(
            out.routing_configuration()
                .iter()
                .map(|r| r.state_machine_version_arn().to_string()),
        );
    }
    Ok(versions)
}

/// The definitions the running executions of a standard state machine started with.
async fn running_executions(
    cx: &Ctx<'_>,
    machine: &str,
    in_use: &mut InUse,
) -> Result<usize, Halt> {
    let sfn = &cx.clients.sfn;
    let mut executions = vec![];
    let mut token = None;
    loop {
        cx.other_read("states:ListExecutions")?;
        let page = match sfn
            .list_executions()
            .state_machine_arn(machine)
            .status_filter(ExecutionStatus::Running)
            .max_results(1000)
            .set_next_token(token)
            .send()
            .await
        {
            Ok(p) => p,
            Err(e) if gone(e.code()) => return Ok(0),
            Err(e) => return Err(failed("Step Functions", "ListExecutions", e)),
        };
        executions.extend(
            page.executions()
                .iter()
                .map(|x| x.execution_arn().to_string()),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let mut read = 0;
    for execution in executions {
        cx.other_read("states:DescribeStateMachineForExecution")?;
        let out = match sfn
            .describe_state_machine_for_execution()
            .execution_arn(&execution)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if gone(e.code()) => continue,
            Err(e) => {
                return Err(failed(
                    "Step Functions",
                    "DescribeStateMachineForExecution",
                    e,
                ));
            }
        };
        read += 1;
        let who = format!("execution {}", short(&execution));
        read_definition(in_use, &who, out.definition())?;
    }
    Ok(read)
}

/// A pipe target that runs ECS tasks: a cluster.
fn pipe_runs_ecs(target: &str) -> bool {
    target.contains(":ecs:") && target.contains(":cluster/")
}

/// Every pipe whose target is an ECS cluster: its `EcsTaskParameters.TaskDefinitionArn`.
/// Returns how many pipes were listed.
pub async fn pipes(cx: &Ctx<'_>, in_use: &mut InUse) -> Result<usize, Halt> {
    let pipes = &cx.clients.pipes;
    let mut ecs_pipes = vec![];
    let mut count = 0;
    let mut token = None;
    loop {
        cx.other_read("pipes:ListPipes")?;
        let page = pipes
            .list_pipes()
            .limit(100)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| failed("Pipes", "ListPipes", e))?;
        for p in page.pipes() {
            count += 1;
            if p.target().is_some_and(pipe_runs_ecs)
                && let Some(name) = p.name()
            {
                ecs_pipes.push(name.to_string());
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    for name in ecs_pipes {
        cx.other_read("pipes:DescribePipe")?;
        let out = match pipes.describe_pipe().name(&name).send().await {
            Ok(o) => o,
            Err(e) if gone(e.code()) => continue,
            Err(e) => return Err(failed("Pipes", "DescribePipe", e)),
        };
        let td = out
            .target_parameters()
            .and_then(|p| p.ecs_task_parameters())
            .map(|e| e.task_definition_arn());
        let who = format!("pipe {name}");
        // A dynamic path parameter (`$.detail.td`) is resolved per event.
        if let Some(td) = td.filter(|t| t.trim_start().starts_with('$')) {
            return Err(unresolved(&who, td));
        }
        add(in_use, td, || who.clone());
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_machines_versions_and_executions_shortly() {
        assert_eq!(
            short("arn:aws:states:us-east-1:123456789012:stateMachine:jobs"),
            "jobs"
        );
        assert_eq!(
            short("arn:aws:states:us-east-1:123456789012:stateMachine:jobs:3"),
            "jobs:3"
        );
        assert_eq!(
            short("arn:aws:states:us-east-1:123456789012:execution:jobs:run-1"),
            "jobs:run-1"
        );
    }

    #[test]
    fn a_dynamic_reference_fails_closed_and_names_the_state() {
        let def = r#"{"StartAt":"R","States":{"R":{"Type":"Task",
            "Resource":"arn:aws:states:::ecs:runTask.sync",
            "Parameters":{"TaskDefinition.$":"$.td"},"End":true}}}"#;
        let mut in_use = InUse::default();
        let Err(Halt::Failed(e)) = read_definition(&mut in_use, "state machine jobs", def) else {
            panic!("a dynamic reference must fail the run");
        };
        assert_eq!(e.error_type(), UNRESOLVED);
        let msg = e.to_string();
        assert!(msg.contains("state machine jobs state R"), "{msg}");
        assert!(
            msg.contains("$.td") && msg.contains("nothing was changed"),
            "{msg}"
        );
    }

    #[test]
    fn pinned_and_family_references_are_recorded_with_their_state() {
        let def = r#"{"StartAt":"R","States":{
            "R":{"Type":"Task","Resource":"arn:aws:states:::ecs:runTask.sync",
                 "Parameters":{"TaskDefinition":"wiki-jobs:3"},"Next":"L"},
            "L":{"Type":"Task","Resource":"arn:aws:states:::ecs:runTask",
                 "Parameters":{"TaskDefinition":"arn:aws:ecs:us-east-1:1:task-definition/other"},"End":true}}}"#;
        let mut in_use = InUse::default();
        assert!(read_definition(&mut in_use, "state machine jobs", def).is_ok());
        let pinned = &in_use.pinned[&crate::refs::RevisionId::new("wiki-jobs", 3)];
        assert!(pinned.contains("state machine jobs state R"));
        assert!(in_use.latest["other"].contains("state machine jobs state L"));
    }

    #[test]
    fn recognises_pipes_with_ecs_targets() {
        assert!(pipe_runs_ecs(
            "arn:aws:ecs:us-east-1:123456789012:cluster/wiki"
        ));
        assert!(!pipe_runs_ecs("arn:aws:sqs:us-east-1:123456789012:q"));
        assert!(!pipe_runs_ecs("arn:aws:lambda:us-east-1:1:function:ecs"));
    }
}
