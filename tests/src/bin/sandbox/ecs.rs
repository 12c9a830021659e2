//! What ECS and the load balancer do for the wiki service, played locally: when the service's
//! PRIMARY deployment changes (config-redeploy or secret-rotation forced a new one), start a
//! new task from the task definition (secrets resolved from Secrets Manager, as the execution
//! role would), wait for its health check, switch the load balancer to it and stop the old
//! one. A task that never gets healthy fails the deployment, as the circuit breaker does.
//!
//! A task's containers start in the order their `dependsOn` gives ([`start_order`], pure): a
//! container another one waits for with condition `SUCCESS` runs to completion first, and only
//! an exit status of 0 lets the dependent start; anything else stops the task before it serves,
//! as ECS does (the wiki's `schema` container before `wiki`).

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
/// How long a `SUCCESS` dependency (the schema step: an install takes a minute here) may run.
const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(900);
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

/// One container definition, as far as start order goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub essential: bool,
    /// `(container, condition)` pairs of its `dependsOn`.
    pub depends_on: Vec<(String, String)>,
}

/// How a task starts: containers run to completion (each must exit 0), then the one that serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartOrder {
    pub run_to_success: Vec<String>,
    pub serve: String,
}

/// Decides the start order of a task's containers: the one essential container serves (the
/// load balancer's target); every container it depends on must use condition `SUCCESS` and be
/// non-essential (ECS refuses an essential container as a SUCCESS dependency), and runs first.
/// Other conditions, chains and extra essential containers are not part of the wiki's task
/// definitions: refused, so the emulation never passes what ECS would do differently.
pub fn start_order(containers: &[ContainerSpec]) -> Result<StartOrder, String> {
    let essential: Vec<&ContainerSpec> = containers.iter().filter(|c| c.essential).collect();
    let [serve] = essential.as_slice() else {
        return Err(format!(
            "{} essential containers: the sandbox serves exactly one",
            essential.len()
        ));
    };
    let mut run_to_success = Vec::new();
    for (name, condition) in &serve.depends_on {
        let dep = containers.iter().find(|c| &c.name == name).ok_or_else(|| {
            format!(
                "{} depends on {name}, which the task does not have",
                serve.name
            )
        })?;
        if condition != "SUCCESS" {
            return Err(format!(
                "dependsOn {name} {condition}: only SUCCESS is emulated"
            ));
        }
        if dep.essential {
            return Err(format!(
                "{name} is essential: it cannot be a SUCCESS dependency"
            ));
        }
        if !dep.depends_on.is_empty() {
            return Err(format!("{name} has dependencies of its own: not emulated"));
        }
        run_to_success.push(name.clone());
    }
    for c in containers {
        if !c.essential && !run_to_success.contains(&c.name) {
            return Err(format!(
                "{}: a container nothing waits for is not emulated",
                c.name
            ));
        }
    }
    Ok(StartOrder {
        run_to_success,
        serve: serve.name.clone(),
    })
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

pub use wikiops_tests::wiki::healthy;

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

    /// The service's current task definition.
    async fn task_definition(world: &World) -> Result<aws_sdk_ecs::types::TaskDefinition, String> {
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
        td.task_definition
            .ok_or_else(|| "DescribeTaskDefinition returned none".to_string())
    }

    /// The start order of the service's current task definition, and its containers.
    async fn plan(
        world: &World,
    ) -> Result<(StartOrder, Vec<aws_sdk_ecs::types::ContainerDefinition>), String> {
        let td = Self::task_definition(world).await?;
        let containers = td.container_definitions().to_vec();
        let specs: Vec<ContainerSpec> = containers
            .iter()
            .map(|c| ContainerSpec {
                name: c.name().unwrap_or_default().to_string(),
                essential: c.essential().unwrap_or(true),
                depends_on: c
                    .depends_on()
                    .iter()
                    .map(|d| {
                        (
                            d.container_name().to_string(),
                            d.condition().as_str().to_string(),
                        )
                    })
                    .collect(),
            })
            .collect();
        Ok((start_order(&specs)?, containers))
    }

    /// The environment a container of the service's current task definition starts with.
    pub async fn task_env(
        &self,
        world: &World,
        container: &aws_sdk_ecs::types::ContainerDefinition,
        root: &std::path::Path,
        conf: &std::path::Path,
    ) -> Result<(Vec<(String, String)>, String), String> {
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

    /// Prepares a task's directory and starts its containers as the task definition orders them
    /// (`dependsOn SUCCESS` first, each to an exit status of 0), then `wiki-boot` of the serving
    /// container. A dependency that fails stops the task before it serves.
    pub async fn launch(&mut self, world: &World) -> Result<Launched, String> {
        let id = self.next_id;
        self.next_id += 1;
        let dir = world.dir.join(format!("tasks/{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = wikiops_tests::free_port();
        let root = wiki::web_root(&dir, &world.uploads).map_err(|e| format!("web root: {e}"))?;
        let conf = wiki::apache_conf(&dir, &root, port, "localhost")
            .map_err(|e| format!("apache conf: {e}"))?;
        let (order, containers) = Self::plan(world).await?;
        let container = |name: &str| {
            containers
                .iter()
                .find(|c| c.name() == Some(name))
                .ok_or_else(|| format!("no container {name}"))
        };
        for name in &order.run_to_success {
            let def = container(name)?;
            let (env, _) = self.task_env(world, def, &root, &conf).await?;
            // the command after the program (`["wiki-boot","schema"]` → `schema`)
            let args: Vec<&str> = def.command().iter().skip(1).map(String::as_str).collect();
            let mut run = BootProcess::start(&args, &env, &conf.display().to_string())
                .map_err(|e| format!("start {name}: {e}"))?;
            let code = tokio::time::timeout(DEPENDENCY_TIMEOUT, run.wait()).await;
            if code != Ok(Some(0)) {
                let logs = run.logs();
                run.stop().await;
                let _ = std::fs::remove_dir_all(&dir);
                let last = logs
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default();
                return Err(format!(
                    "container {name} exited {code:?}, so {} never started; {name} log: {last}",
                    order.serve
                ));
            }
        }
        let (env, db_user) = self
            .task_env(world, container(&order.serve)?, &root, &conf)
            .await?;
        let boot = BootProcess::start(&[], &env, &conf.display().to_string())
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
        } = self.launch(world).await?;
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

    /// What ECS's circuit breaker does to a failed deployment: it lists it as FAILED and starts
    /// its own rollback deployment (the same task definition). Its tasks are not started here:
    /// config-redeploy's answer supersedes it.
    pub async fn circuit_breaker_rollback(&mut self, world: &World) -> Result<String, String> {
        let id = world.moto.trip_circuit_breaker(CLUSTER, SERVICE).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, essential: bool, deps: &[(&str, &str)]) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            essential,
            depends_on: deps
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_schema_step_runs_to_success_before_the_web_container() {
        let order = start_order(&[
            spec("schema", false, &[]),
            spec("wiki", true, &[("schema", "SUCCESS")]),
        ])
        .unwrap();
        assert_eq!(
            order,
            StartOrder {
                run_to_success: vec!["schema".into()],
                serve: "wiki".into()
            }
        );
        assert_eq!(
            start_order(&[spec("wiki", true, &[])])
                .unwrap()
                .run_to_success,
            Vec::<String>::new()
        );
    }

    #[test]
    fn what_ecs_would_do_differently_is_refused() {
        for (containers, why) in [
            (
                vec![
                    spec("schema", false, &[]),
                    spec("wiki", true, &[("schema", "START")]),
                ],
                "only SUCCESS",
            ),
            (
                vec![
                    spec("schema", true, &[]),
                    spec("wiki", true, &[("schema", "SUCCESS")]),
                ],
                "essential containers",
            ),
            (
                vec![spec("wiki", true, &[("schema", "SUCCESS")])],
                "does not have",
            ),
            (
                vec![spec("sidecar", false, &[]), spec("wiki", true, &[])],
                "nothing waits for",
            ),
            (vec![spec("wiki", false, &[])], "0 essential"),
        ] {
            let e = start_order(&containers).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
