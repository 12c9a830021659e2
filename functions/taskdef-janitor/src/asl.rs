//! Which task definitions a Step Functions state machine runs, read from its Amazon States
//! Language definition (pure: a JSON string in, references out).
//!
//! Every `Task` state whose `Resource` starts ECS tasks (`arn:<partition>:states:::ecs:runTask`,
//! `.sync`, `.waitForTaskToken`, or the SDK integrations `aws-sdk:ecs:runTask`/`startTask`) is
//! found, at any depth (`Parallel` branches, `Map` iterators and item processors). Its
//! `TaskDefinition` is a literal (JSONPath `Parameters`, JSONata `Arguments`) or is chosen at run
//! time (`TaskDefinition.$`, a `{% … %}` expression, an `Arguments` expression): a reference of
//! the second kind cannot be resolved, and the caller fails closed on it.

use serde_json::{Map, Value};

/// What a state passes as `TaskDefinition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskDefinition {
    /// A literal: an ARN, `family:revision` or `family`.
    Literal(String),
    /// Chosen at run time; the expression (a JSONPath or JSONata string, or a description).
    Dynamic(String),
}

/// One state that starts ECS tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsState {
    /// The state's name, with the names of the `Parallel`/`Map` states around it
    /// (`Fan out/branch 1/Run job`).
    pub path: String,
    pub task_definition: TaskDefinition,
}

/// Whether a Task state's `Resource` starts ECS tasks.
pub fn runs_ecs(resource: &str) -> bool {
    let Some((_, service)) = resource.split_once(":states:::") else {
        return false;
    };
    let action = service
        .strip_prefix("aws-sdk:ecs:")
        .or_else(|| service.strip_prefix("ecs:"));
    let Some(action) = action else {
        return false;
    };
    let base = action.split('.').next().unwrap_or(action);
    base == "runTask" || (service.starts_with("aws-sdk:") && base == "startTask")
}

/// The ECS-running states of a definition. `Err` names why the definition could not be read
/// (not JSON, no `States`), which the caller treats as a failure.
pub fn ecs_states(definition: &str) -> Result<Vec<EcsState>, String> {
    let root: Value = serde_json::from_str(definition)
        .map_err(|e| format!("the definition is not JSON ({e})"))?;
    let root = root
        .as_object()
        .ok_or_else(|| "the definition is not a JSON object".to_string())?;
    let jsonata = query_language(root, false);
    let mut out = vec![];
    walk(root, "", jsonata, &mut out)?;
    Ok(out)
}

/// `QueryLanguage` of an object, or the inherited one.
fn query_language(obj: &Map<String, Value>, inherited: bool) -> bool {
    match obj.get("QueryLanguage").and_then(Value::as_str) {
        Some("JSONata") => true,
        Some(_) => false,
        None => inherited,
    }
}

/// Walks the `States` of a state machine or of a branch/iterator.
fn walk(
    machine: &Map<String, Value>,
    prefix: &str,
    jsonata: bool,
    out: &mut Vec<EcsState>,
) -> Result<(), String> {
    let states = machine
        .get("States")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("no States object at '{}'", display(prefix)))?;
    for (name, state) in states {
        let Some(state) = state.as_object() else {
            continue;
        };
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let jsonata = query_language(state, jsonata);
        match state.get("Type").and_then(Value::as_str) {
            Some("Task") => {
                if let Some(td) = task(state, jsonata) {
                    out.push(EcsState {
                        path,
                        task_definition: td,
                    });
                }
            }
            Some("Parallel") => {
                let branches = state.get("Branches").and_then(Value::as_array);
                for (i, branch) in branches.into_iter().flatten().enumerate() {
                    if let Some(b) = branch.as_object() {
                        walk(b, &format!("{path}/branch {}", i + 1), jsonata, out)?;
                    }
                }
            }
            Some("Map") => {
                for key in ["ItemProcessor", "Iterator"] {
                    if let Some(inner) = state.get(key).and_then(Value::as_object) {
                        walk(inner, &path, query_language(inner, jsonata), out)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn display(prefix: &str) -> &str {
    if prefix.is_empty() {
        "top level"
    } else {
        prefix
    }
}

fn is_jsonata_expression(s: &str) -> bool {
    let s = s.trim();
    s.starts_with("{%") && s.ends_with("%}")
}

/// The task definition of a Task state that starts ECS tasks (`None` for other Task states,
/// and for one that names no task definition at all: ECS refuses to run it).
fn task(state: &Map<String, Value>, jsonata: bool) -> Option<TaskDefinition> {
    let resource = state.get("Resource").and_then(Value::as_str)?;
    if !runs_ecs(resource) {
        return None;
    }
    // JSONata states take `Arguments`, JSONPath states `Parameters`; read both, whichever is set.
    let args = state.get("Arguments").or_else(|| state.get("Parameters"));
    let args = match args {
        None => return None,
        Some(Value::Object(o)) => o,
        Some(Value::String(s)) => {
            return Some(TaskDefinition::Dynamic(format!("Arguments {s}")));
        }
        Some(_) => return None,
    };
    if let Some(path) = args.get("TaskDefinition.$") {
        return Some(TaskDefinition::Dynamic(match path {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
    }
    match args.get("TaskDefinition")? {
        Value::String(s) if jsonata && is_jsonata_expression(s) => {
            Some(TaskDefinition::Dynamic(s.clone()))
        }
        Value::String(s) => Some(TaskDefinition::Literal(s.clone())),
        other => Some(TaskDefinition::Dynamic(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn literal(path: &str, td: &str) -> EcsState {
        EcsState {
            path: path.into(),
            task_definition: TaskDefinition::Literal(td.into()),
        }
    }

    fn dynamic(path: &str, expr: &str) -> EcsState {
        EcsState {
            path: path.into(),
            task_definition: TaskDefinition::Dynamic(expr.into()),
        }
    }

    #[test]
    fn recognises_every_ecs_integration() {
        for r in [
            "arn:aws:states:::ecs:runTask",
            "arn:aws:states:::ecs:runTask.sync",
            "arn:aws:states:::ecs:runTask.waitForTaskToken",
            "arn:aws-cn:states:::ecs:runTask.sync",
            "arn:aws:states:::aws-sdk:ecs:runTask",
            "arn:aws:states:::aws-sdk:ecs:startTask",
            "arn:aws:states:::aws-sdk:ecs:runTask.waitForTaskToken",
        ] {
            assert!(runs_ecs(r), "{r}");
        }
        for r in [
            "arn:aws:states:::lambda:invoke",
            "arn:aws:states:::aws-sdk:ecs:describeTasks",
            "arn:aws:states:::aws-sdk:ecs:registerTaskDefinition",
            "arn:aws:states:::ecs:startTask",
            "arn:aws:lambda:us-east-1:123456789012:function:ecs:runTask",
        ] {
            assert!(!runs_ecs(r), "{r}");
        }
    }

    #[test]
    fn finds_pinned_and_family_references_at_any_depth() {
        let def = json!({
            "StartAt": "Run",
            "States": {
                "Run": {"Type": "Task", "Resource": "arn:aws:states:::ecs:runTask.sync",
                        "Parameters": {"Cluster": "wiki", "TaskDefinition": "wiki-jobs:3"}, "Next": "Fan"},
                "Fan": {"Type": "Parallel", "Next": "Each", "Branches": [
                    {"StartAt": "A", "States": {"A": {"Type": "Task",
                        "Resource": "arn:aws:states:::ecs:runTask.waitForTaskToken",
                        "Parameters": {"TaskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition/wiki-web:7"},
                        "End": true}}},
                    {"StartAt": "B", "States": {"B": {"Type": "Pass", "End": true}}}
                ]},
                "Each": {"Type": "Map", "End": true,
                    "ItemProcessor": {"StartAt": "C", "States": {"C": {"Type": "Task",
                        "Resource": "arn:aws:states:::aws-sdk:ecs:runTask",
                        "Parameters": {"TaskDefinition": "other-app"}, "End": true}}}},
                "Old": {"Type": "Map", "End": true,
                    "Iterator": {"StartAt": "D", "States": {"D": {"Type": "Task",
                        "Resource": "arn:aws:states:::ecs:runTask",
                        "Parameters": {"TaskDefinition": "legacy:1"}, "End": true}}}},
                "Other": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                          "Parameters": {"TaskDefinition": "not-ecs:1"}, "End": true}
            }
        });
        let mut found = ecs_states(&def.to_string()).unwrap();
        found.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            found,
            vec![
                literal("Each/C", "other-app"),
                literal(
                    "Fan/branch 1/A",
                    "arn:aws:ecs:us-east-1:123456789012:task-definition/wiki-web:7"
                ),
                literal("Old/D", "legacy:1"),
                literal("Run", "wiki-jobs:3"),
            ]
        );
    }

    #[test]
    fn jsonata_literals_count_and_expressions_are_dynamic() {
        let def = json!({
            "QueryLanguage": "JSONata",
            "StartAt": "Lit",
            "States": {
                "Lit": {"Type": "Task", "Resource": "arn:aws:states:::ecs:runTask.sync",
                        "Arguments": {"TaskDefinition": "wiki-jobs:4"}, "Next": "Expr"},
                "Expr": {"Type": "Task", "Resource": "arn:aws:states:::ecs:runTask",
                         "Arguments": {"TaskDefinition": "{% $states.input.td %}"}, "Next": "Whole"},
                "Whole": {"Type": "Task", "Resource": "arn:aws:states:::ecs:runTask",
                          "Arguments": "{% $states.input %}", "Next": "Path"},
                "Path": {"Type": "Task", "QueryLanguage": "JSONPath",
                         "Resource": "arn:aws:states:::ecs:runTask",
                         "Parameters": {"TaskDefinition.$": "$.td"}, "End": true}
            }
        });
        let mut found = ecs_states(&def.to_string()).unwrap();
        found.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            found,
            vec![
                dynamic("Expr", "{% $states.input.td %}"),
                literal("Lit", "wiki-jobs:4"),
                dynamic("Path", "$.td"),
                dynamic("Whole", "Arguments {% $states.input %}"),
            ]
        );
    }

    #[test]
    fn a_jsonpath_state_takes_braces_literally_and_a_jsonata_state_inside_a_map_inherits() {
        let def = json!({
            "StartAt": "M",
            "States": {"M": {"Type": "Map", "QueryLanguage": "JSONata", "End": true,
                "ItemProcessor": {"StartAt": "R", "States": {"R": {"Type": "Task",
                    "Resource": "arn:aws:states:::ecs:runTask",
                    "Arguments": {"TaskDefinition": "{% $states.input %}"}, "End": true}}}}}
        });
        assert_eq!(
            ecs_states(&def.to_string()).unwrap(),
            vec![dynamic("M/R", "{% $states.input %}")]
        );
    }

    #[test]
    fn an_unreadable_definition_is_an_error() {
        assert!(ecs_states("not json").is_err());
        assert!(ecs_states("[]").is_err());
        assert!(ecs_states(r#"{"StartAt": "x"}"#).is_err());
        let no_states = json!({"StartAt": "P", "States": {"P": {"Type": "Parallel",
            "Branches": [{"StartAt": "x"}], "End": true}}});
        assert!(ecs_states(&no_states.to_string()).is_err());
        assert_eq!(
            ecs_states(r#"{"StartAt":"x","States":{}}"#).unwrap(),
            vec![]
        );
    }
}
