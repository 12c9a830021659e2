//! Redeploy an ECS service, once.
//!
//! ECS starts new tasks (which re-read configuration and secrets) when a service is updated
//! with `forceNewDeployment`. Delivery of the events that ask for it is at least once, so
//! before redeploying the service's deployments are read: when the PRIMARY deployment was
//! created after the change that asks for a redeploy, that change is already rolling out.
//! [`decide`] is the pure rule; [`redeploy`] applies it.

use aws_sdk_ecs::Client;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::aws::to_utc;
use crate::error::Error;

/// One deployment of a service, as ECS reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployment {
    pub id: String,
    /// `PRIMARY`, `ACTIVE` or `INACTIVE`.
    pub status: String,
    pub created_at: Option<DateTime<Utc>>,
    pub task_definition: Option<String>,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`, when reported.
    pub rollout_state: Option<String>,
}

/// What a redeploy decision needs to know about a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceState {
    pub cluster: String,
    pub service: String,
    /// `ACTIVE`, `DRAINING` or `INACTIVE`.
    pub status: String,
    pub deployments: Vec<Deployment>,
}

impl ServiceState {
    /// The PRIMARY deployment, if any.
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.status == "PRIMARY")
    }
}

/// The decision for one redeploy request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Start a new deployment.
    Redeploy,
    /// The PRIMARY deployment started after the change: it already carries it.
    AlreadyRollingOut { deployment_id: String },
    /// The service is not ACTIVE; nothing can be deployed.
    NotActive { status: String },
}

/// Decides whether a change made at `changed_at` still needs a new deployment.
///
/// Without a change time every request redeploys.
pub fn decide(state: &ServiceState, changed_at: Option<DateTime<Utc>>) -> Decision {
    if state.status != "ACTIVE" {
        return Decision::NotActive {
            status: state.status.clone(),
        };
    }
    match (state.primary(), changed_at) {
        (Some(p), Some(changed)) if p.created_at.is_some_and(|c| c > changed) => {
            Decision::AlreadyRollingOut {
                deployment_id: p.id.clone(),
            }
        }
        _ => Decision::Redeploy,
    }
}

/// The result of [`redeploy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Redeployed {
    /// A new deployment was started.
    Started {
        cluster: String,
        service: String,
        deployment_id: String,
    },
    /// A deployment that already carries the change is rolling out.
    AlreadyRollingOut {
        cluster: String,
        service: String,
        deployment_id: String,
    },
}

/// Reads a service's status and deployments.
///
/// A service that does not exist is [`Error::NotFound`].
pub async fn describe(
    client: &Client,
    cluster: &str,
    service: &str,
) -> Result<ServiceState, Error> {
    let out = client
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .map_err(|e| Error::aws("ECS", "DescribeServices", e))?;
    let Some(svc) = out.services().first() else {
        let reason = out
            .failures()
            .first()
            .and_then(|f| f.reason())
            .unwrap_or("MISSING");
        return Err(Error::NotFound(format!(
            "ECS service {service} in cluster {cluster} ({reason})"
        )));
    };
    Ok(ServiceState {
        cluster: cluster.to_string(),
        service: service.to_string(),
        status: svc.status().unwrap_or("UNKNOWN").to_string(),
        deployments: svc
            .deployments()
            .iter()
            .map(|d| Deployment {
                id: d.id().unwrap_or_default().to_string(),
                status: d.status().unwrap_or_default().to_string(),
                created_at: d.created_at().and_then(to_utc),
                task_definition: d.task_definition().map(str::to_string),
                rollout_state: d.rollout_state().map(|s| s.as_str().to_string()),
            })
            .collect(),
    })
}

/// Starts a new deployment (`UpdateService` with `forceNewDeployment`) and returns its id.
///
/// A service that is missing or not ACTIVE is [`Error::NotFound`] (UpdateService refuses it).
pub async fn force_new_deployment(
    client: &Client,
    cluster: &str,
    service: &str,
) -> Result<String, Error> {
    let out = client
        .update_service()
        .cluster(cluster)
        .service(service)
        .force_new_deployment(true)
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            Some(s) if s.is_service_not_found_exception() => Error::NotFound(format!(
                "ECS service {service} in cluster {cluster} (ServiceNotFoundException)"
            )),
            Some(s) if s.is_service_not_active_exception() => Error::NotFound(format!(
                "ECS service {service} in cluster {cluster} is not ACTIVE (ServiceNotActiveException)"
            )),
            _ => Error::aws("ECS", "UpdateService", e),
        })?;
    let id = out
        .service()
        .and_then(|s| {
            s.deployments()
                .iter()
                .find(|d| d.status() == Some("PRIMARY"))
        })
        .and_then(|d| d.id())
        .unwrap_or_default()
        .to_string();
    Ok(id)
}

/// Redeploys a service unless a deployment started after `changed_at` already carries the change.
///
/// A service that is missing or not ACTIVE is an error ([`Error::NotFound`]).
pub async fn redeploy(
    client: &Client,
    cluster: &str,
    service: &str,
    changed_at: Option<DateTime<Utc>>,
) -> Result<Redeployed, Error> {
    // Without a change time every ACTIVE service redeploys: UpdateService alone, which refuses
    // a missing or inactive service itself (one call fewer than reading the service first).
    if changed_at.is_some() {
        let state = describe(client, cluster, service).await?;
        match decide(&state, changed_at) {
            Decision::NotActive { status } => {
                return Err(Error::NotFound(format!(
                    "ECS service {service} in cluster {cluster} is {status}"
                )));
            }
            Decision::AlreadyRollingOut { deployment_id } => {
                tracing::info!(
                    cluster,
                    service,
                    deployment_id,
                    "change already rolling out"
                );
                return Ok(Redeployed::AlreadyRollingOut {
                    cluster: cluster.to_string(),
                    service: service.to_string(),
                    deployment_id,
                });
            }
            Decision::Redeploy => {}
        }
    }
    let deployment_id = force_new_deployment(client, cluster, service).await?;
    tracing::info!(cluster, service, deployment_id, "new deployment started");
    Ok(Redeployed::Started {
        cluster: cluster.to_string(),
        service: service.to_string(),
        deployment_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(status: &str, primary_created: Option<i64>) -> ServiceState {
        ServiceState {
            cluster: "c".into(),
            service: "s".into(),
            status: status.into(),
            deployments: primary_created
                .map(|t| Deployment {
                    id: "ecs-svc/1".into(),
                    status: "PRIMARY".into(),
                    created_at: DateTime::from_timestamp(t, 0),
                    task_definition: None,
                    rollout_state: None,
                })
                .into_iter()
                .collect(),
        }
    }

    fn at(t: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(t, 0)
    }

    #[test]
    fn skips_when_primary_started_after_the_change() {
        assert_eq!(
            decide(&state("ACTIVE", Some(100)), at(99)),
            Decision::AlreadyRollingOut {
                deployment_id: "ecs-svc/1".into()
            }
        );
    }

    #[test]
    fn redeploys_when_change_is_newer_or_unknown() {
        assert_eq!(
            decide(&state("ACTIVE", Some(100)), at(100)),
            Decision::Redeploy
        );
        assert_eq!(
            decide(&state("ACTIVE", Some(100)), at(101)),
            Decision::Redeploy
        );
        assert_eq!(
            decide(&state("ACTIVE", Some(100)), None),
            Decision::Redeploy
        );
        assert_eq!(decide(&state("ACTIVE", None), at(1)), Decision::Redeploy);
    }

    #[test]
    fn inactive_service_is_never_redeployed() {
        assert_eq!(
            decide(&state("INACTIVE", Some(1)), at(5)),
            Decision::NotActive {
                status: "INACTIVE".into()
            }
        );
    }

    proptest! {
        #[test]
        fn skip_iff_primary_is_strictly_newer(created in 0i64..1_000_000, changed in 0i64..1_000_000) {
            let d = decide(&state("ACTIVE", Some(created)), at(changed));
            prop_assert_eq!(matches!(d, Decision::AlreadyRollingOut { .. }), created > changed);
        }
    }
}
