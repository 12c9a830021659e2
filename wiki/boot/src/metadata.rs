//! The task's identity, from the ECS task metadata endpoint v4.
//!
//! `GET ${ECS_CONTAINER_METADATA_URI_V4}/task` answers the task ARN, its Availability Zone
//! and, for each container, its networks (`awsvpc`: every container shares the task's ENI
//! address). [`parse`] is the pure part; [`fetch`] asks the endpoint with a short, bounded
//! retry (the agent answers from the first instant on Fargate, but a restart may race).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::Deserialize;
use shared::Error;

/// What PHP learns about the task it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskIdentity {
    pub task_arn: String,
    /// The last part of the ARN (`e9028f8d…`).
    pub task_id: String,
    pub availability_zone: String,
    pub private_ip: String,
    /// The cluster ARN or name, when reported.
    pub cluster: Option<String>,
}

impl TaskIdentity {
    /// The environment PHP reads: `WIKI_TASK_ARN`, `WIKI_TASK_ID`, `WIKI_AVAILABILITY_ZONE`,
    /// `WIKI_PRIVATE_IP` and, when known, `WIKI_CLUSTER`.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("WIKI_TASK_ARN".to_string(), self.task_arn.clone()),
            ("WIKI_TASK_ID".to_string(), self.task_id.clone()),
            (
                "WIKI_AVAILABILITY_ZONE".to_string(),
                self.availability_zone.clone(),
            ),
            ("WIKI_PRIVATE_IP".to_string(), self.private_ip.clone()),
        ];
        if let Some(c) = &self.cluster {
            v.push(("WIKI_CLUSTER".to_string(), c.clone()));
        }
        v
    }
}

#[derive(Deserialize)]
struct Task {
    #[serde(rename = "TaskARN")]
    task_arn: Option<String>,
    #[serde(rename = "AvailabilityZone")]
    availability_zone: Option<String>,
    #[serde(rename = "Cluster")]
    cluster: Option<String>,
    #[serde(rename = "Containers", default)]
    containers: Vec<Container>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(rename = "Networks", default)]
    networks: Vec<Network>,
}

#[derive(Deserialize)]
struct Network {
    #[serde(rename = "IPv4Addresses", default)]
    ipv4: Vec<String>,
}

fn bad(reason: impl std::fmt::Display) -> Error {
    Error::Rejected(format!("ECS task metadata: {reason}"))
}

/// Reads the identity from a `/task` response body.
pub fn parse(body: &[u8]) -> Result<TaskIdentity, Error> {
    let task: Task =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a task document ({e})")))?;
    let task_arn = task
        .task_arn
        .filter(|a| a.starts_with("arn:") && a.contains(":task/"))
        .ok_or_else(|| bad("TaskARN is missing or not a task ARN"))?;
    let task_id = task_arn
        .rsplit('/')
        .next()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad("TaskARN has no task id"))?
        .to_string();
    let availability_zone = task
        .availability_zone
        .filter(|z| !z.trim().is_empty())
        .ok_or_else(|| bad("AvailabilityZone is missing"))?;
    let private_ip = task
        .containers
        .iter()
        .flat_map(|c| &c.networks)
        .flat_map(|n| &n.ipv4)
        .find_map(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
        .ok_or_else(|| bad("no container network has an IPv4 address"))?
        .to_string();
    Ok(TaskIdentity {
        task_arn,
        task_id,
        availability_zone,
        private_ip,
        cluster: task.cluster.filter(|c| !c.is_empty()),
    })
}

const ATTEMPTS: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(2);

async fn get(uri: &hyper::Uri) -> Result<(hyper::StatusCode, Bytes), String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let fut = async {
        let res = client.get(uri.clone()).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
}

/// Asks `<base>/task` for the task's identity. Unreachable or failing endpoints are retried
/// a few times; a malformed answer is refused at once.
pub async fn fetch(base: &str) -> Result<TaskIdentity, Error> {
    let uri: hyper::Uri = format!("{base}/task").parse().map_err(|_| {
        Error::Settings(shared::SettingsError::malformed(
            "ECS_CONTAINER_METADATA_URI_V4",
            "not an http:// URI",
        ))
    })?;
    if uri.scheme_str() != Some("http") {
        return Err(Error::Settings(shared::SettingsError::malformed(
            "ECS_CONTAINER_METADATA_URI_V4",
            "not an http:// URI",
        )));
    }
    let mut attempt = 1;
    loop {
        let failure = match get(&uri).await {
            Ok((status, body)) if status.is_success() => return parse(&body),
            Ok((status, _)) if status.is_client_error() => {
                return Err(bad(format!("the endpoint answered {status}")));
            }
            Ok((status, _)) => format!("the endpoint answered {status}"),
            Err(e) => e,
        };
        if attempt >= ATTEMPTS {
            return Err(Error::Unreachable(format!(
                "ECS task metadata endpoint after {attempt} attempts: {failure}"
            )));
        }
        tracing::warn!(attempt, error = %failure, "task metadata not available yet");
        tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Fargate `/task` answer, as documented for metadata v4 (trimmed).
    pub const FARGATE_TASK: &str = r#"{
      "Cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/wiki",
      "TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/wiki/e9028f8d5d8e4f258373e7b93ce9a3c3",
      "Family": "wiki-web", "Revision": "7",
      "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING",
      "Limits": {"CPU": 0.5, "Memory": 1024},
      "AvailabilityZone": "us-east-1b",
      "LaunchType": "FARGATE",
      "Containers": [{
        "DockerId": "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603",
        "Name": "wiki", "Image": "mediawiki:1.43",
        "Networks": [{
          "NetworkMode": "awsvpc",
          "IPv4Addresses": ["10.0.2.106"],
          "IPv4SubnetCIDRBlock": "10.0.2.0/24",
          "PrivateDNSName": "ip-10-0-2-106.ec2.internal"
        }]
      }]
    }"#;

    #[test]
    fn reads_a_fargate_task() {
        let t = parse(FARGATE_TASK.as_bytes()).unwrap();
        assert_eq!(t.task_id, "e9028f8d5d8e4f258373e7b93ce9a3c3");
        assert_eq!(t.availability_zone, "us-east-1b");
        assert_eq!(t.private_ip, "10.0.2.106");
        assert_eq!(
            t.cluster.as_deref(),
            Some("arn:aws:ecs:us-east-1:123456789012:cluster/wiki")
        );
        let env = t.env();
        assert!(env.contains(&("WIKI_PRIVATE_IP".into(), "10.0.2.106".into())));
        assert!(env.contains(&("WIKI_TASK_ARN".into(), t.task_arn.clone())));
    }

    #[test]
    fn refuses_malformed_documents() {
        let mut missing_az: serde_json::Value = serde_json::from_str(FARGATE_TASK).unwrap();
        missing_az
            .as_object_mut()
            .unwrap()
            .remove("AvailabilityZone");
        let mut no_ip: serde_json::Value = serde_json::from_str(FARGATE_TASK).unwrap();
        no_ip["Containers"][0]["Networks"][0]["IPv4Addresses"] = serde_json::json!([]);
        let mut bad_arn: serde_json::Value = serde_json::from_str(FARGATE_TASK).unwrap();
        bad_arn["TaskARN"] = serde_json::json!("e9028f8d");
        for (what, body) in [
            ("html", "<html>bad gateway</html>".to_string()),
            ("array", "[]".to_string()),
            ("arn type", r#"{"TaskARN": 5}"#.to_string()),
            ("az", missing_az.to_string()),
            ("ip", no_ip.to_string()),
            ("arn", bad_arn.to_string()),
        ] {
            let err = parse(body.as_bytes()).unwrap_err();
            assert!(
                err.to_string().starts_with("rejected: ECS task metadata"),
                "{what}: {err}"
            );
        }
    }
}
