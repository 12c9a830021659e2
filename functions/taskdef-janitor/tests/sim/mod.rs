//! A simulated account for the adapter tests and the benchmark: ECS task definitions,
//! services, tasks, EventBridge rules and Scheduler schedules behind real SDK clients
//! (aws-smithy-mocks), with ECS's server-side token buckets on tokio's clock. Run it under a
//! paused tokio clock: no I/O happens, so simulated time is exact.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use aws_sdk_ecs::types as ecs_t;
use aws_smithy_mocks::{MockResponse, MockResponseInterceptor, Rule, RuleMode, mock};
use aws_smithy_types::error::ErrorMetadata;
use taskdef_janitor::Clients;
use taskdef_janitor::pacing::{Bucket, Rate};

pub const ACCOUNT: &str = "123456789012";

pub fn td_arn(family: &str, revision: u32) -> String {
    format!("arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/{family}:{revision}")
}

fn cluster_arn(name: &str) -> String {
    format!("arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/{name}")
}

#[derive(Debug, Clone)]
pub struct Td {
    pub active: bool,
    /// Seconds since the epoch.
    pub deregistered_at: Option<i64>,
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub cluster: String,
    pub name: String,
    pub task_definition: String,
    pub deployments: Vec<(String, String, String)>, // id, status, task definition
}

/// A Step Functions state machine: its current definition, published versions, aliases and
/// running executions (each with the definition it started with).
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub name: String,
    pub definition: String,
    /// (version number, definition)
    pub versions: Vec<(u32, String)>,
    /// (alias name, version number)
    pub aliases: Vec<(String, u32)>,
    /// (execution name, definition)
    pub executions: Vec<(String, String)>,
}

pub fn machine_arn(name: &str) -> String {
    format!("arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{name}")
}

/// A definition with one `ecs:runTask.sync` state on `task_definition`.
pub fn run_task_definition(task_definition: &str) -> String {
    serde_json::json!({"StartAt": "Run", "States": {"Run": {"Type": "Task",
        "Resource": "arn:aws:states:::ecs:runTask.sync",
        "Parameters": {"Cluster": "batch", "TaskDefinition": task_definition}, "End": true}}})
    .to_string()
}

/// The account's state, and what the simulation counts.
#[derive(Default)]
pub struct State {
    pub tds: BTreeMap<(String, u32), Td>,
    pub clusters: Vec<String>,
    pub services: Vec<Service>,
    /// (cluster, task id, task definition ARN)
    pub tasks: Vec<(String, String, String)>,
    /// (bus, rule, task definition reference)
    pub rules: Vec<(String, String, String)>,
    /// (group, name, task definition reference)
    pub schedules: Vec<(String, String, String)>,
    pub state_machines: Vec<Machine>,
    /// (name, target ARN, task definition reference)
    pub pipes: Vec<(String, String, String)>,
    /// Page size of every paginated list (capped by the request's maxResults).
    pub page: usize,
    /// Operations that fail with this error code.
    pub failing: BTreeMap<&'static str, &'static str>,
    /// DescribeServices reports this failure reason for every service.
    pub describe_services_failure: Option<&'static str>,
    /// DeleteTaskDefinitions reports these ARNs in failures[] with this reason.
    pub delete_failures: BTreeMap<String, String>,
    pub now: i64,
    pub calls: BTreeMap<&'static str, u64>,
    pub throttled: u64,
    /// The largest DescribeServices / DeleteTaskDefinitions request seen.
    pub max_describe_services: usize,
    pub max_delete_batch: usize,
    read: Option<Bucket>,
    modify: Option<Bucket>,
    delete: Option<Bucket>,
}

pub type Shared = Arc<Mutex<State>>;

impl State {
    pub fn new(now: i64) -> State {
        State {
            page: 100,
            now,
            ..State::default()
        }
    }

    /// Registers revisions `1..=n` of `family`, ACTIVE.
    pub fn family(&mut self, family: &str, n: u32) {
        for r in 1..=n {
            self.tds.insert(
                (family.to_string(), r),
                Td {
                    active: true,
                    deregistered_at: None,
                    env: vec![("MW_SITE_NAME".into(), "Wiki".into())],
                },
            );
        }
    }

    pub fn service(&mut self, cluster: &str, name: &str, deployments: &[(&str, u32)]) {
        if !self.clusters.iter().any(|c| c == cluster) {
            self.clusters.push(cluster.to_string());
        }
        let (family, rev) = deployments[0];
        self.services.push(Service {
            cluster: cluster.to_string(),
            name: name.to_string(),
            task_definition: td_arn(family, rev),
            deployments: deployments
                .iter()
                .enumerate()
                .map(|(i, (f, r))| {
                    (
                        format!("ecs-svc/{name}{i}"),
                        if i == 0 { "PRIMARY" } else { "ACTIVE" }.to_string(),
                        td_arn(f, *r),
                    )
                })
                .collect(),
        });
    }

    /// ECS's server-side buckets: calls beyond them fail with ThrottlingException.
    pub fn enforce_limits(&mut self, read: Rate, modify: Rate, delete: Rate) {
        self.read = Some(Bucket::new(read));
        self.modify = Some(Bucket::new(modify));
        self.delete = Some(Bucket::new(delete));
    }

    pub fn active(&self, family: &str) -> BTreeSet<u32> {
        self.revisions(family, true)
    }

    pub fn inactive(&self, family: &str) -> BTreeSet<u32> {
        self.revisions(family, false)
    }

    fn revisions(&self, family: &str, active: bool) -> BTreeSet<u32> {
        self.tds
            .iter()
            .filter(|((f, _), t)| f == family && t.active == active)
            .map(|((_, r), _)| *r)
            .collect()
    }

    /// Counts the call; `Some(error)` when it must fail (injected, or throttled).
    fn call(&mut self, op: &'static str, bucket: Option<char>) -> Option<ErrorMetadata> {
        *self.calls.entry(op).or_default() += 1;
        if let Some(code) = self.failing.get(op) {
            return Some(
                ErrorMetadata::builder()
                    .code(*code)
                    .message("injected by the simulation")
                    .build(),
            );
        }
        let b = match bucket {
            Some('r') => self.read.as_ref(),
            Some('m') => self.modify.as_ref(),
            Some('d') => self.delete.as_ref(),
            _ => None,
        };
        if b.is_some_and(|b| !b.try_take()) {
            self.throttled += 1;
            return Some(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            );
        }
        None
    }
}

/// A page of `items` from `token` (an offset), at most `max` long.
fn page<T: Clone>(
    items: &[T],
    token: Option<&str>,
    max: Option<i32>,
    size: usize,
) -> (Vec<T>, Option<String>) {
    let start: usize = token.and_then(|t| t.parse().ok()).unwrap_or(0);
    let n = size
        .min(max.map_or(usize::MAX, |m| m.max(1) as usize))
        .max(1);
    let end = (start + n).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    (items.get(start..end).unwrap_or_default().to_vec(), next)
}

macro_rules! fail_or {
    ($state:expr, $op:expr, $bucket:expr, $err:ty) => {
        if let Some(meta) = $state.call($op, $bucket) {
            return MockResponse::Error(<$err>::generic(meta));
        }
    };
}

fn td_of(
    family: &str,
    rev: u32,
    td: &Td,
    status: ecs_t::TaskDefinitionStatus,
) -> ecs_t::TaskDefinition {
    let mut c = ecs_t::ContainerDefinition::builder()
        .name("wiki")
        .image("mediawiki:1.43");
    for (k, v) in &td.env {
        c = c.environment(ecs_t::KeyValuePair::builder().name(k).value(v).build());
    }
    let mut b = ecs_t::TaskDefinition::builder()
        .task_definition_arn(td_arn(family, rev))
        .family(family)
        .revision(rev as i32)
        .status(status)
        .container_definitions(c.build());
    if let Some(t) = td.deregistered_at {
        b = b.deregistered_at(aws_smithy_types::DateTime::from_secs(t));
    }
    b.build()
}

fn parse_arn(arn: &str) -> Option<(String, u32)> {
    let name = arn.rsplit('/').next()?;
    let (f, r) = name.split_once(':')?;
    Some((f.to_string(), r.parse().ok()?))
}

fn ecs_rules(s: &Shared) -> Vec<Rule> {
    use aws_sdk_ecs::Client as C;
    use aws_sdk_ecs::operation as op;
    let mut rules = vec![];

    let st = s.clone();
    rules.push(
        mock!(C::list_task_definition_families).then_compute_response(move |req| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "ecs:ListTaskDefinitionFamilies",
                Some('r'),
                op::list_task_definition_families::ListTaskDefinitionFamiliesError
            );
            let fams: BTreeSet<String> = st
                .tds
                .keys()
                .map(|(f, _)| f.clone())
                .filter(|f| req.family_prefix().is_none_or(|p| f.starts_with(p)))
                .collect();
            let fams: Vec<String> = fams.into_iter().collect();
            let (items, next) = page(&fams, req.next_token(), req.max_results(), st.page);
            MockResponse::Output(
                op::list_task_definition_families::ListTaskDefinitionFamiliesOutput::builder()
                    .set_families(Some(items))
                    .set_next_token(next)
                    .build(),
            )
        }),
    );

    let st = s.clone();
    rules.push(
        mock!(C::list_task_definitions).then_compute_response(move |req| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "ecs:ListTaskDefinitions",
                Some('r'),
                op::list_task_definitions::ListTaskDefinitionsError
            );
            let want_active = req
                .status()
                .is_none_or(|s| *s == ecs_t::TaskDefinitionStatus::Active);
            let arns: Vec<String> = st
                .tds
                .iter()
                .filter(|((f, _), t)| {
                    req.family_prefix().is_none_or(|p| p == f) && t.active == want_active
                })
                .map(|((f, r), _)| td_arn(f, *r))
                .collect();
            let (items, next) = page(&arns, req.next_token(), req.max_results(), st.page);
            MockResponse::Output(
                op::list_task_definitions::ListTaskDefinitionsOutput::builder()
                    .set_task_definition_arns(Some(items))
                    .set_next_token(next)
                    .build(),
            )
        }),
    );

    let st = s.clone();
    rules.push(
        mock!(C::describe_task_definition).then_compute_response(move |req| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "ecs:DescribeTaskDefinition",
                Some('r'),
                op::describe_task_definition::DescribeTaskDefinitionError
            );
            let key = parse_arn(req.task_definition().unwrap_or_default()).unwrap_or_default();
            match st.tds.get(&key) {
                Some(td) => {
                    let status = if td.active {
                        ecs_t::TaskDefinitionStatus::Active
                    } else {
                        ecs_t::TaskDefinitionStatus::Inactive
                    };
                    MockResponse::Output(
                        op::describe_task_definition::DescribeTaskDefinitionOutput::builder()
                            .task_definition(td_of(&key.0, key.1, td, status))
                            .build(),
                    )
                }
                None => MockResponse::Error(
                    op::describe_task_definition::DescribeTaskDefinitionError::generic(
                        ErrorMetadata::builder()
                            .code("ClientException")
                            .message("Unable to describe task definition.")
                            .build(),
                    ),
                ),
            }
        }),
    );

    let st = s.clone();
    rules.push(
        mock!(C::deregister_task_definition).then_compute_response(move |req| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "ecs:DeregisterTaskDefinition",
                Some('m'),
                op::deregister_task_definition::DeregisterTaskDefinitionError
            );
            let key = parse_arn(req.task_definition().unwrap_or_default()).unwrap_or_default();
            let now = st.now;
            match st.tds.get_mut(&key) {
                Some(td) => {
                    if td.active {
                        td.active = false;
                        td.deregistered_at = Some(now);
                    }
                    let td = td.clone();
                    MockResponse::Output(
                        op::deregister_task_definition::DeregisterTaskDefinitionOutput::builder()
                            .task_definition(td_of(
                                &key.0,
                                key.1,
                                &td,
                                ecs_t::TaskDefinitionStatus::Inactive,
                            ))
                            .build(),
                    )
                }
                None => MockResponse::Error(
                    op::deregister_task_definition::DeregisterTaskDefinitionError::generic(
                        ErrorMetadata::builder()
                            .code("ClientException")
                            .message("Unable to describe task definition.")
                            .build(),
                    ),
                ),
            }
        }),
    );

    let st = s.clone();
    rules.push(
        mock!(C::delete_task_definitions).then_compute_response(move |req| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "ecs:DeleteTaskDefinitions",
                Some('d'),
                op::delete_task_definitions::DeleteTaskDefinitionsError
            );
            let arns = req.task_definitions();
            st.max_delete_batch = st.max_delete_batch.max(arns.len());
            if arns.is_empty() || arns.len() > 10 {
                return MockResponse::Error(
                    op::delete_task_definitions::DeleteTaskDefinitionsError::generic(
                        ErrorMetadata::builder()
                            .code("InvalidParameterException")
                            .message("between 1 and 10 task definitions")
                            .build(),
                    ),
                );
            }
            let mut out = op::delete_task_definitions::DeleteTaskDefinitionsOutput::builder();
            for arn in arns {
                let key = parse_arn(arn).unwrap_or_default();
                let reason = if let Some(r) = st.delete_failures.get(arn) {
                    Some(r.clone())
                } else {
                    match st.tds.get(&key) {
                        None => Some("The specified task definition does not exist.".to_string()),
                        Some(td) if td.active => Some(
                            "The specified task definition is still in ACTIVE status.".to_string(),
                        ),
                        Some(_) => None,
                    }
                };
                match reason {
                    Some(r) => {
                        out = out.failures(ecs_t::Failure::builder().arn(arn).reason(r).build())
                    }
                    None => {
                        let td = st.tds.remove(&key).unwrap();
                        out = out.task_definitions(td_of(
                            &key.0,
                            key.1,
                            &td,
                            ecs_t::TaskDefinitionStatus::DeleteInProgress,
                        ));
                    }
                }
            }
            MockResponse::Output(out.build())
        }),
    );

    let st = s.clone();
    rules.push(mock!(C::list_clusters).then_compute_response(move |req| {
        let mut st = st.lock().unwrap();
        fail_or!(
            st,
            "ecs:ListClusters",
            Some('r'),
            op::list_clusters::ListClustersError
        );
        let arns: Vec<String> = st.clusters.iter().map(|c| cluster_arn(c)).collect();
        let (items, next) = page(&arns, req.next_token(), req.max_results(), st.page);
        MockResponse::Output(
            op::list_clusters::ListClustersOutput::builder()
                .set_cluster_arns(Some(items))
                .set_next_token(next)
                .build(),
        )
    }));

    let st = s.clone();
    rules.push(mock!(C::list_services).then_compute_response(move |req| {
        let mut st = st.lock().unwrap();
        fail_or!(
            st,
            "ecs:ListServices",
            Some('r'),
            op::list_services::ListServicesError
        );
        let cluster = req
            .cluster()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let arns: Vec<String> = st
            .services
            .iter()
            .filter(|s| s.cluster == cluster)
            .map(|s| {
                format!(
                    "arn:aws:ecs:us-east-1:{ACCOUNT}:service/{}/{}",
                    s.cluster, s.name
                )
            })
            .collect();
        let (items, next) = page(&arns, req.next_token(), req.max_results(), st.page);
        MockResponse::Output(
            op::list_services::ListServicesOutput::builder()
                .set_service_arns(Some(items))
                .set_next_token(next)
                .build(),
        )
    }));

    let st = s.clone();
    rules.push(
        mock!(C::describe_services).then_compute_response(move |req| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "ecs:DescribeServices",
                Some('r'),
                op::describe_services::DescribeServicesError
            );
            let names = req.services();
            st.max_describe_services = st.max_describe_services.max(names.len());
            if names.len() > 10 {
                return MockResponse::Error(op::describe_services::DescribeServicesError::generic(
                    ErrorMetadata::builder()
                        .code("InvalidParameterException")
                        .message("at most 10 services")
                        .build(),
                ));
            }
            let mut out = op::describe_services::DescribeServicesOutput::builder();
            for arn in names {
                let name = arn.rsplit('/').next().unwrap_or_default();
                if let Some(reason) = st.describe_services_failure {
                    out = out.failures(ecs_t::Failure::builder().arn(arn).reason(reason).build());
                    continue;
                }
                if let Some(svc) = st.services.iter().find(|s| s.name == name) {
                    let mut b = ecs_t::Service::builder()
                        .service_name(&svc.name)
                        .status("ACTIVE")
                        .task_definition(&svc.task_definition);
                    for (id, status, td) in &svc.deployments {
                        b = b.deployments(
                            ecs_t::Deployment::builder()
                                .id(id)
                                .status(status)
                                .task_definition(td)
                                .build(),
                        );
                    }
                    out = out.services(b.build());
                }
            }
            MockResponse::Output(out.build())
        }),
    );

    let st = s.clone();
    rules.push(mock!(C::list_tasks).then_compute_response(move |req| {
        let mut st = st.lock().unwrap();
        fail_or!(
            st,
            "ecs:ListTasks",
            Some('r'),
            op::list_tasks::ListTasksError
        );
        let cluster = req
            .cluster()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let arns: Vec<String> = st
            .tasks
            .iter()
            .filter(|(c, _, _)| *c == cluster)
            .map(|(c, id, _)| format!("arn:aws:ecs:us-east-1:{ACCOUNT}:task/{c}/{id}"))
            .collect();
        let (items, next) = page(&arns, req.next_token(), req.max_results(), st.page);
        MockResponse::Output(
            op::list_tasks::ListTasksOutput::builder()
                .set_task_arns(Some(items))
                .set_next_token(next)
                .build(),
        )
    }));

    let st = s.clone();
    rules.push(mock!(C::describe_tasks).then_compute_response(move |req| {
        let mut st = st.lock().unwrap();
        fail_or!(
            st,
            "ecs:DescribeTasks",
            Some('r'),
            op::describe_tasks::DescribeTasksError
        );
        let mut out = op::describe_tasks::DescribeTasksOutput::builder();
        for arn in req.tasks() {
            let id = arn.rsplit('/').next().unwrap_or_default();
            if let Some((_, _, td)) = st.tasks.iter().find(|(_, t, _)| t == id) {
                out = out.tasks(
                    ecs_t::Task::builder()
                        .task_arn(arn)
                        .task_definition_arn(td)
                        .last_status("RUNNING")
                        .build(),
                );
            }
        }
        MockResponse::Output(out.build())
    }));
    rules
}

fn eventbridge_rules(s: &Shared) -> Vec<Rule> {
    use aws_sdk_eventbridge::Client as C;
    use aws_sdk_eventbridge::operation as op;
    use aws_sdk_eventbridge::types as t;
    let mut rules = vec![];
    let st = s.clone();
    rules.push(mock!(C::list_event_buses).then_compute_response(move |_| {
        let mut st = st.lock().unwrap();
        fail_or!(
            st,
            "events:ListEventBuses",
            None,
            op::list_event_buses::ListEventBusesError
        );
        let buses: BTreeSet<String> = std::iter::once("default".to_string())
            .chain(st.rules.iter().map(|r| r.0.clone()))
            .collect();
        let mut out = op::list_event_buses::ListEventBusesOutput::builder();
        for b in buses {
            out = out.event_buses(t::EventBus::builder().name(b).build());
        }
        MockResponse::Output(out.build())
    }));
    let st = s.clone();
    rules.push(mock!(C::list_rules).then_compute_response(move |req| {
        let mut st = st.lock().unwrap();
        fail_or!(st, "events:ListRules", None, op::list_rules::ListRulesError);
        let bus = req.event_bus_name().unwrap_or("default");
        let mut out = op::list_rules::ListRulesOutput::builder();
        for (_, name, _) in st.rules.iter().filter(|r| r.0 == bus) {
            out = out.rules(t::Rule::builder().name(name).build());
        }
        MockResponse::Output(out.build())
    }));
    let st = s.clone();
    rules.push(
        mock!(C::list_targets_by_rule).then_compute_response(move |req| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "events:ListTargetsByRule",
                None,
                op::list_targets_by_rule::ListTargetsByRuleError
            );
            let mut out = op::list_targets_by_rule::ListTargetsByRuleOutput::builder();
            for (_, _, td) in st.rules.iter().filter(|r| Some(r.1.as_str()) == req.rule()) {
                out = out.targets(
                    t::Target::builder()
                        .id("ecs")
                        .arn(cluster_arn("batch"))
                        .ecs_parameters(
                            t::EcsParameters::builder()
                                .task_definition_arn(td)
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                );
            }
            MockResponse::Output(out.build())
        }),
    );
    rules
}

fn scheduler_rules(s: &Shared) -> Vec<Rule> {
    use aws_sdk_scheduler::Client as C;
    use aws_sdk_scheduler::operation as op;
    use aws_sdk_scheduler::types as t;
    let mut rules = vec![];
    let st = s.clone();
    rules.push(mock!(C::list_schedules).then_compute_response(move |_| {
        let mut st = st.lock().unwrap();
        fail_or!(
            st,
            "scheduler:ListSchedules",
            None,
            op::list_schedules::ListSchedulesError
        );
        let mut out =
            op::list_schedules::ListSchedulesOutput::builder().set_schedules(Some(vec![]));
        for (group, name, _) in &st.schedules {
            out = out.schedules(
                t::ScheduleSummary::builder()
                    .group_name(group)
                    .name(name)
                    .target(
                        t::TargetSummary::builder()
                            .arn(cluster_arn("batch"))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            );
        }
        MockResponse::Output(out.build().unwrap())
    }));
    let st = s.clone();
    rules.push(mock!(C::get_schedule).then_compute_response(move |req| {
        let mut st = st.lock().unwrap();
        fail_or!(
            st,
            "scheduler:GetSchedule",
            None,
            op::get_schedule::GetScheduleError
        );
        let td = st
            .schedules
            .iter()
            .find(|s| Some(s.1.as_str()) == req.name())
            .map(|s| s.2.clone())
            .unwrap_or_default();
        MockResponse::Output(
            op::get_schedule::GetScheduleOutput::builder()
                .name(req.name().unwrap_or_default())
                .target(
                    t::Target::builder()
                        .arn(cluster_arn("batch"))
                        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/scheduler"))
                        .ecs_parameters(
                            t::EcsParameters::builder()
                                .task_definition_arn(td)
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                )
                .build(),
        )
    }));
    rules
}

fn sfn_rules(s: &Shared) -> Vec<Rule> {
    use aws_sdk_sfn::Client as C;
    use aws_sdk_sfn::operation as op;
    use aws_sdk_sfn::types as t;
    let epoch = aws_smithy_types::DateTime::from_secs(0);
    let mut rules = vec![];
    let st = s.clone();
    rules.push(
        mock!(C::list_state_machines).then_compute_response(move |_| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "states:ListStateMachines",
                None,
                op::list_state_machines::ListStateMachinesError
            );
            let items = st
                .state_machines
                .iter()
                .map(|m| {
                    t::StateMachineListItem::builder()
                        .state_machine_arn(machine_arn(&m.name))
                        .name(&m.name)
                        .r#type(t::StateMachineType::Standard)
                        .creation_date(epoch)
                        .build()
                        .unwrap()
                })
                .collect();
            MockResponse::Output(
                op::list_state_machines::ListStateMachinesOutput::builder()
                    .set_state_machines(Some(items))
                    .build()
                    .unwrap(),
            )
        }),
    );
    let st = s.clone();
    rules.push(
        mock!(C::describe_state_machine).then_compute_response(move |req| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "states:DescribeStateMachine",
                None,
                op::describe_state_machine::DescribeStateMachineError
            );
            let arn = req.state_machine_arn().unwrap_or_default();
            let name = arn.split(":stateMachine:").nth(1).unwrap_or_default();
            let (name, version) = match name.split_once(':') {
                Some((n, v)) => (n, v.parse::<u32>().ok()),
                None => (name, None),
            };
            let m = st.state_machines.iter().find(|m| m.name == name);
            let definition = m.and_then(|m| match version {
                None => Some(m.definition.clone()),
                Some(v) => m.versions.iter().find(|x| x.0 == v).map(|x| x.1.clone()),
            });
            let Some(definition) = definition else {
                return MockResponse::Error(
                    op::describe_state_machine::DescribeStateMachineError::StateMachineDoesNotExist(
                        t::error::StateMachineDoesNotExist::builder().build(),
                    ),
                );
            };
            MockResponse::Output(
                op::describe_state_machine::DescribeStateMachineOutput::builder()
                    .state_machine_arn(arn)
                    .name(name)
                    .definition(definition)
                    .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/sfn"))
                    .r#type(t::StateMachineType::Standard)
                    .creation_date(epoch)
                    .build()
                    .unwrap(),
            )
        }),
    );
    let st = s.clone();
    rules.push(
        mock!(C::list_state_machine_aliases).then_compute_response(move |req| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "states:ListStateMachineAliases",
                None,
                op::list_state_machine_aliases::ListStateMachineAliasesError
            );
            let arn = req.state_machine_arn().unwrap_or_default();
            let items = st
                .state_machines
                .iter()
                .filter(|m| machine_arn(&m.name) == arn)
                .flat_map(|m| m.aliases.iter())
                .map(|(alias, _)| {
                    t::StateMachineAliasListItem::builder()
                        .state_machine_alias_arn(format!("{arn}:{alias}"))
                        .creation_date(epoch)
                        .build()
                        .unwrap()
                })
                .collect();
            MockResponse::Output(
                op::list_state_machine_aliases::ListStateMachineAliasesOutput::builder()
                    .set_state_machine_aliases(Some(items))
                    .build()
                    .unwrap(),
            )
        }),
    );
    let st = s.clone();
    rules.push(
        mock!(C::describe_state_machine_alias).then_compute_response(move |req| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "states:DescribeStateMachineAlias",
                None,
                op::describe_state_machine_alias::DescribeStateMachineAliasError
            );
            let arn = req.state_machine_alias_arn().unwrap_or_default();
            let mut out =
                op::describe_state_machine_alias::DescribeStateMachineAliasOutput::builder()
                    .state_machine_alias_arn(arn);
            for m in &st.state_machines {
                for (alias, version) in &m.aliases {
                    if format!("{}:{alias}", machine_arn(&m.name)) == arn {
                        out = out.routing_configuration(
                            t::RoutingConfigurationListItem::builder()
                                .state_machine_version_arn(format!(
                                    "{}:{version}",
                                    machine_arn(&m.name)
                                ))
                                .weight(100)
                                .build()
                                .unwrap(),
                        );
                    }
                }
            }
            MockResponse::Output(out.build())
        }),
    );
    let st = s.clone();
    rules.push(mock!(C::list_executions).then_compute_response(move |req| {
        let mut st = st.lock().unwrap();
        fail_or!(
            st,
            "states:ListExecutions",
            None,
            op::list_executions::ListExecutionsError
        );
        let arn = req.state_machine_arn().unwrap_or_default();
        let items = st
            .state_machines
            .iter()
            .filter(|m| machine_arn(&m.name) == arn)
            .flat_map(|m| {
                m.executions.iter().map(move |(id, _)| {
                    t::ExecutionListItem::builder()
                        .execution_arn(format!(
                            "arn:aws:states:us-east-1:{ACCOUNT}:execution:{}:{id}",
                            m.name
                        ))
                        .state_machine_arn(machine_arn(&m.name))
                        .name(id)
                        .status(t::ExecutionStatus::Running)
                        .start_date(epoch)
                        .build()
                        .unwrap()
                })
            })
            .collect();
        MockResponse::Output(
            op::list_executions::ListExecutionsOutput::builder()
                .set_executions(Some(items))
                .build()
                .unwrap(),
        )
    }));
    let st = s.clone();
    rules.push(
        mock!(C::describe_state_machine_for_execution).then_compute_response(move |req| {
            let mut st = st.lock().unwrap();
            fail_or!(
                st,
                "states:DescribeStateMachineForExecution",
                None,
                op::describe_state_machine_for_execution::DescribeStateMachineForExecutionError
            );
            let arn = req.execution_arn().unwrap_or_default();
            let definition = st
                .state_machines
                .iter()
                .flat_map(|m| {
                    m.executions
                        .iter()
                        .filter(move |(id, _)| {
                            format!("arn:aws:states:us-east-1:{ACCOUNT}:execution:{}:{id}", m.name)
                                == arn
                        })
                        .map(|(_, d)| d.clone())
                })
                .next()
                .unwrap_or_default();
            MockResponse::Output(
                op::describe_state_machine_for_execution::DescribeStateMachineForExecutionOutput::builder()
                    .state_machine_arn(machine_arn("x"))
                    .name("x")
                    .definition(definition)
                    .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/sfn"))
                    .update_date(epoch)
                    .build()
                    .unwrap(),
            )
        }),
    );
    rules
}

fn pipes_rules(s: &Shared) -> Vec<Rule> {
    use aws_sdk_pipes::Client as C;
    use aws_sdk_pipes::operation as op;
    use aws_sdk_pipes::types as t;
    let mut rules = vec![];
    let st = s.clone();
    rules.push(mock!(C::list_pipes).then_compute_response(move |_| {
        let mut st = st.lock().unwrap();
        fail_or!(st, "pipes:ListPipes", None, op::list_pipes::ListPipesError);
        let mut out = op::list_pipes::ListPipesOutput::builder().set_pipes(Some(vec![]));
        for (name, target, _) in &st.pipes {
            out = out.pipes(t::Pipe::builder().name(name).target(target).build());
        }
        MockResponse::Output(out.build())
    }));
    let st = s.clone();
    rules.push(mock!(C::describe_pipe).then_compute_response(move |req| {
        let mut st = st.lock().unwrap();
        fail_or!(
            st,
            "pipes:DescribePipe",
            None,
            op::describe_pipe::DescribePipeError
        );
        let Some((name, target, td)) = st
            .pipes
            .iter()
            .find(|p| Some(p.0.as_str()) == req.name())
            .cloned()
        else {
            return MockResponse::Error(op::describe_pipe::DescribePipeError::NotFoundException(
                t::error::NotFoundException::builder().build(),
            ));
        };
        MockResponse::Output(
            op::describe_pipe::DescribePipeOutput::builder()
                .name(name)
                .target(target)
                .target_parameters(
                    t::PipeTargetParameters::builder()
                        .ecs_task_parameters(
                            t::PipeTargetEcsTaskParameters::builder()
                                .task_definition_arn(td)
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build(),
        )
    }));
    rules
}

fn interceptor(rules: Vec<Rule>) -> MockResponseInterceptor {
    rules.iter().fold(
        MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
        |i, r| i.with_rule(r),
    )
}

/// Clients that talk to the simulation (no retries: a throttled call shows as a failure).
pub fn clients(s: &Shared) -> Clients {
    let region = aws_config::Region::new("us-east-1");
    let creds = aws_sdk_ecs::config::Credentials::new("sim", "sim", None, None, "sim");
    let retry = aws_config::retry::RetryConfig::disabled();
    let bv = aws_config::BehaviorVersion::latest();
    Clients {
        ecs: aws_sdk_ecs::Client::from_conf(
            aws_sdk_ecs::Config::builder()
                .behavior_version(bv)
                .region(region.clone())
                .credentials_provider(creds.clone())
                .retry_config(retry.clone())
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor(ecs_rules(s)))
                .build(),
        ),
        eventbridge: aws_sdk_eventbridge::Client::from_conf(
            aws_sdk_eventbridge::Config::builder()
                .behavior_version(bv)
                .region(region.clone())
                .credentials_provider(creds.clone())
                .retry_config(retry.clone())
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor(eventbridge_rules(s)))
                .build(),
        ),
        scheduler: aws_sdk_scheduler::Client::from_conf(
            aws_sdk_scheduler::Config::builder()
                .behavior_version(bv)
                .region(region.clone())
                .credentials_provider(creds.clone())
                .retry_config(retry.clone())
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor(scheduler_rules(s)))
                .build(),
        ),
        sfn: aws_sdk_sfn::Client::from_conf(
            aws_sdk_sfn::Config::builder()
                .behavior_version(bv)
                .region(region.clone())
                .credentials_provider(creds.clone())
                .retry_config(retry.clone())
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor(sfn_rules(s)))
                .build(),
        ),
        pipes: aws_sdk_pipes::Client::from_conf(
            aws_sdk_pipes::Config::builder()
                .behavior_version(bv)
                .region(region)
                .credentials_provider(creds)
                .retry_config(retry)
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor(pipes_rules(s)))
                .build(),
        ),
    }
}
