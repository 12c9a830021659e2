//! Reading ECS task definitions of template.yaml (as rendered JSON): their containers, the
//! names each one gets, the secrets it reads. Pure functions over `serde_json::Value`.

use std::collections::BTreeSet;

use serde_json::Value;

/// The container definitions of an `AWS::ECS::TaskDefinition` resource.
pub fn containers(task_definition: &Value) -> Vec<&Value> {
    task_definition["Properties"]["ContainerDefinitions"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// The container called `name`, if any.
pub fn container<'a>(task_definition: &'a Value, name: &str) -> Option<&'a Value> {
    containers(task_definition)
        .into_iter()
        .find(|c| c["Name"] == name)
}

fn names(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v["Name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Names of a container's plain `Environment` variables.
pub fn environment(container: &Value) -> BTreeSet<String> {
    names(&container["Environment"])
}

/// Names of a container's `Secrets` (variables ECS fills from Secrets Manager).
pub fn secret_names(container: &Value) -> BTreeSet<String> {
    names(&container["Secrets"])
}

/// The logical ids of the secrets a container's `ValueFrom`s name: `{"Ref": id}` or
/// `{"Fn::Sub": "${id}:key::"}`.
pub fn secret_ids(container: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in container["Secrets"].as_array().into_iter().flatten() {
        let from = &s["ValueFrom"];
        if let Some(id) = from["Ref"].as_str() {
            out.insert(id.to_string());
        } else if let Some(id) = from["Fn::Sub"]
            .as_str()
            .and_then(|sub| sub.strip_prefix("${"))
            .and_then(|r| r.split('}').next())
        {
            out.insert(id.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_containers_environment_and_secrets() {
        let td = json!({"Properties": {"ContainerDefinitions": [
            {"Name": "schema", "Environment": [{"Name": "DB_HOST", "Value": "x"}],
             "Secrets": [{"Name": "DB_ADMIN_USER", "ValueFrom": {"Fn::Sub": "${DbMasterSecret}:username::"}},
                         {"Name": "WIKI_ADMIN_PASSWORD", "ValueFrom": {"Ref": "WikiAdminPassword"}}]},
            {"Name": "wiki"}
        ]}});
        assert_eq!(containers(&td).len(), 2);
        let schema = container(&td, "schema").unwrap();
        assert_eq!(environment(schema), BTreeSet::from(["DB_HOST".to_string()]));
        assert_eq!(
            secret_names(schema),
            BTreeSet::from([
                "DB_ADMIN_USER".to_string(),
                "WIKI_ADMIN_PASSWORD".to_string()
            ])
        );
        assert_eq!(
            secret_ids(schema),
            BTreeSet::from([
                "DbMasterSecret".to_string(),
                "WikiAdminPassword".to_string()
            ])
        );
        assert!(secret_ids(container(&td, "wiki").unwrap()).is_empty());
        assert!(container(&td, "jobs").is_none());
    }
}
