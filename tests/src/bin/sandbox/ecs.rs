//! What ECS and the load balancer do for the wiki service, played locally: when the service's
//! PRIMARY deployment changes (config-redeploy or secret-rotation forced a new one), start a
//! new task from the task definition (secrets resolved from Secrets Manager, as the execution
//! role would), wait for its health check, switch the load balancer to it and stop the old
//! one. A task that never gets healthy fails the deployment, as the circuit breaker does.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use wikiops_tests::http::Http;
use wikiops_tests::wiki::{self, BootProcess};

use crate::world::{CLUSTER, SERVICE, World};

/// How long the load balancer drains an old task before ECS stops it.
const DRAIN: Duration = Duration::from_secs(3);

/// The target group's health check path (the template's).
const HEALTH_CHECK: &str = "/api.php?action=query&meta=siteinfo&format=json";
/// Consecutive failed health checks that make a task unhealthy.
const UNHEALTHY_THRESHOLD: u32 = 3;

/// One running wiki task.
pub struct Task {
    pub id: u32,
    pub port: u16,
    /// The DB user the task got from the secret at start.
    pub db_user: String,
    pub boot: BootProcess,
    pub dir: PathBuf,
    /// The environment it started with (for maintenance scripts run "in" the task).
    pub env: Vec<(String, String)>,
}

/// A started `wiki-boot` and what it was started with.
pub struct Launched {
    pub boot: BootProcess,
    pub port: u16,
    pub id: u32,
    pub db_user: String,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

/// The outcome of one reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Nothing changed.
    Steady,
    /// A new task of this deployment serves the wiki.
    Completed { deployment_id: String, task: u32 },
    /// The new task never got healthy; the old one keeps serving.
    Failed {
        deployment_id: String,
        reason: String,
    },
}

/// The service's tasks and the load balancer in front of them.
pub struct Service {
    tasks: Vec<Task>,
    seen: Option<String>,
    target: Arc<AtomicU16>,
    next_id: u32,
}

/// Accepts connections on the wiki's public port and forwards each to the current task.
pub async fn load_balancer(port: u16, target: Arc<AtomicU16>) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("listen on 127.0.0.1:{port}: {e}"))?;
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = target.load(Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(())
}

/// The health check of the template's target group.
pub async fn healthy(port: u16) -> bool {
    let mut http = Http::new(format!("http://127.0.0.1:{port}"));
    matches!(
        http.api_get(&[("action", "query"), ("meta", "siteinfo")]).await,
        Ok(v) if v["query"]["general"]["sitename"].is_string()
    )
}

impl Service {
    /// No tasks yet; the load balancer forwards to `target`.
    pub fn new(target: Arc<AtomicU16>) -> Service {
        Service {
            tasks: Vec::new(),
            seen: None,
            target,
            next_id: 1,
        }
    }

    /// The task serving now.
    pub fn current(&self) -> Option<&Task> {
        self.tasks.last()
    }

    /// The environment a task of the service's current task definition starts with.
    pub async fn task_env(
        &self,
        world: &World,
        root: &std::path::Path,
        conf: &std::path::Path,
    ) -> Result<(Vec<(String, String)>, String), String> {
        let ecs = world.moto.ecs().await;
        let svc = ecs
            .describe_services()
            .cluster(CLUSTER)
            .services(SERVICE)
            .send()
            .await
            .map_err(|e| format!("DescribeServices: {e:?}"))?;
        let td_arn = svc
            .services()
            .first()
            .and_then(|s| s.task_definition())
            .ok_or("the service has no task definition")?
            .to_string();
        let td = ecs
            .describe_task_definition()
            .task_definition(&td_arn)
            .send()
            .await
            .map_err(|e| format!("DescribeTaskDefinition: {e:?}"))?;
        let container = td
            .task_definition()
            .and_then(|t| t.container_definitions().first())
            .ok_or("the task definition has no container")?;
        let mut env: Vec<(String, String)> = container
            .environment()
            .iter()
            .filter_map(|kv| Some((kv.name()?.to_string(), kv.value()?.to_string())))
            .collect();
        let sm = world.moto.secretsmanager().await;
        let mut db_user = String::new();
        for s in container.secrets() {
            // valueFrom: <secret arn>[:<json key>:<version stage>:<version id>]
            let from = s.value_from();
            let (arn, key) = match from.find(":secret:") {
                Some(i) => {
                    let rest = &from[i + 8..];
                    let mut parts = rest.splitn(3, ':');
                    let name = parts.next().unwrap_or_default();
                    let key = parts.next().filter(|k| !k.is_empty());
                    (format!("{}{name}", &from[..i + 8]), key)
                }
                None => (from.to_string(), None),
            };
            let value = sm
                .get_secret_value()
                .secret_id(&arn)
                .version_stage("AWSCURRENT")
                .send()
                .await
                .map_err(|e| format!("GetSecretValue for {}: {e:?}", s.name()))?
                .secret_string()
                .unwrap_or_default()
                .to_string();
            let value = match key {
                None => value,
                Some(k) => serde_json::from_str::<Value>(&value)
                    .ok()
                    .and_then(|v| match &v[k] {
                        Value::String(s) => Some(s.clone()),
                        Value::Null => None,
                        other => Some(other.to_string()),
                    })
                    .ok_or_else(|| format!("secret for {} has no key {k}", s.name()))?,
            };
            if s.name() == "DB_USER" {
                db_user = value.clone();
            }
            env.push((s.name().to_string(), value));
        }
        env.extend(world.moto.env());
        env.extend(wiki::local_env(root, conf));
        env.push(("DB_WAIT_SECONDS".into(), "30".into()));
        env.push(("SANDBOX_DIR".into(), world.dir.display().to_string()));
        env.push(("WIKI_ADMIN_PASSWORD".into(), world.admin_password.clone()));
        Ok((env, db_user))
    }

    /// Prepares a task's directory and environment and starts `wiki-boot <args>` in it.
    pub async fn launch(&mut self, world: &World, args: &[&str]) -> Result<Launched, String> {
        let id = self.next_id;
        self.next_id += 1;
        let dir = world.dir.join(format!("tasks/{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = wikiops_tests::free_port();
        let root = wiki::web_root(&dir, &world.uploads).map_err(|e| format!("web root: {e}"))?;
        let conf = wiki::apache_conf(&dir, &root, port, "localhost")
            .map_err(|e| format!("apache conf: {e}"))?;
        let (env, db_user) = self.task_env(world, &root, &conf).await?;
        let boot = BootProcess::start(args, &env, &conf.display().to_string())
            .map_err(|e| format!("start wiki-boot: {e}"))?;
        Ok(Launched {
            boot,
            port,
            id,
            db_user,
            dir,
            env,
        })
    }

    /// Starts a task for a deployment and waits up to `timeout` for its health check.
    async fn start_task(&mut self, world: &World, timeout: Duration) -> Result<Task, String> {
        let Launched {
            mut boot,
            port,
            id,
            db_user,
            dir,
            env,
        } = self.launch(world, &[]).await?;
        let start = Instant::now();
        // Like the target group: a task that answers, but not 200, this many times in a row
        // is unhealthy (one that does not answer yet is still starting).
        let mut unhealthy = 0;
        loop {
            let mut probe = Http::new(format!("http://127.0.0.1:{port}"));
            match probe.get(HEALTH_CHECK).await {
                Ok(r) if r.status != 200 => unhealthy += 1,
                _ => unhealthy = 0,
            }
            if unhealthy == 0 && healthy(port).await {
                return Ok(Task {
                    id,
                    port,
                    db_user,
                    boot,
                    dir,
                    env,
                });
            }
            if boot.exited() || unhealthy >= UNHEALTHY_THRESHOLD || start.elapsed() > timeout {
                let why = match probe.get(HEALTH_CHECK).await {
                    Ok(r) => format!("health check answered HTTP {}", r.status),
                    Err(e) => format!("health check failed: {e}"),
                };
                let logs = boot.logs();
                boot.stop().await;
                let last = logs
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default()
                    .to_string();
                return Err(format!("{why}; task log: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Compares the service's PRIMARY deployment with the one its tasks run and rolls out
    /// a new task when they differ.
    pub async fn reconcile(&mut self, world: &World) -> Result<Rollout, String> {
        let state = shared::ecs::describe(&world.moto.ecs().await, CLUSTER, SERVICE)
            .await
            .map_err(|e| e.to_string())?;
        let primary = state.primary().map(|d| d.id.clone()).unwrap_or_default();
        if self.seen.as_deref() == Some(primary.as_str()) {
            return Ok(Rollout::Steady);
        }
        self.seen = Some(primary.clone());
        match self.start_task(world, Duration::from_secs(60)).await {
            Ok(task) => {
                self.target.store(task.port, Ordering::SeqCst);
                let id = task.id;
                let old: Vec<Task> = self.tasks.drain(..).collect();
                self.tasks.push(task);
                if !old.is_empty() {
                    // The target group's deregistration delay: requests in flight on the old
                    // task finish before ECS stops it.
                    tokio::time::sleep(DRAIN).await;
                }
                for t in old {
                    t.boot.stop().await;
                    let _ = std::fs::remove_dir_all(&t.dir);
                }
                Ok(Rollout::Completed {
                    deployment_id: primary,
                    task: id,
                })
            }
            Err(reason) => Ok(Rollout::Failed {
                deployment_id: primary,
                reason,
            }),
        }
    }

    /// Scale out: one more task of the current deployment, healthy, behind the serving one
    /// (it boots whatever configuration release is current now). Returns its port.
    pub async fn scale_out(&mut self, world: &World) -> Result<u16, String> {
        let task = self.start_task(world, Duration::from_secs(60)).await?;
        let port = task.port;
        self.tasks.insert(0, task);
        Ok(port)
    }

    /// What ECS's circuit breaker does to a failed deployment: it starts its own rollback
    /// deployment (the same task definition), so ECS no longer reports the failed one as the
    /// PRIMARY in progress. Its tasks are not started here: config-redeploy's answer supersedes it.
    pub async fn circuit_breaker_rollback(&mut self, world: &World) -> Result<String, String> {
        let ecs = world.moto.ecs().await;
        let id = shared::ecs::force_new_deployment(&ecs, CLUSTER, SERVICE)
            .await
            .map_err(|e| e.to_string())?;
        self.seen = Some(id.clone());
        Ok(id)
    }

    /// Stops every task.
    pub async fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.boot.stop().await;
        }
    }
}
