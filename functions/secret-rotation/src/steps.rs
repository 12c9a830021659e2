//! The four steps: observe, plan (see [`crate::plan`]), apply. Nothing is kept between
//! steps or invocations; every step is safe to run again.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use shared::Error;
use shared::ecs::Redeployed;

use crate::Clients;
use crate::db::{
    self, ConnectOptions, DbError, Endpoint, Hosts, MISSING_CURRENT_PASSWORD, Session,
};
use crate::event::{RotationEvent, Step};
use crate::failure::Cause;
use crate::in_use;
use crate::plan::{self, AWSCURRENT, AWSPENDING, AWSPREVIOUS, CreatePlan, FinishPlan, Gate, Which};
use crate::secret::{DbSecret, Password};
use crate::secrets::{self, Stamp};
use crate::settings::{Settings, Strategy};
use crate::sql::{Account, Statement};

/// Runs one step and returns its summary (never a secret).
pub async fn run(
    clients: &Clients,
    settings: &Settings,
    event: &RotationEvent,
) -> Result<Value, Error> {
    let sm = &clients.secretsmanager;
    // DescribeSecret decides whether the step may run; the step's first reads change nothing,
    // go out with it, and count only when it may (the gate's error comes first).
    let (meta, reads) = tokio::join!(
        secrets::describe(sm, &event.secret_id),
        first_reads(clients, event)
    );
    let meta = meta?;
    let gate = plan::gate(&event.secret_id, &meta, &event.token)?;
    let mut summary = json!({
        "step": event.step.name(),
        "secretId": event.secret_id,
        "token": event.token,
        "dryRun": event.dry_run,
    });
    if gate == Gate::AlreadyCurrent && event.step != Step::Finish {
        summary["outcome"] = json!("already_current");
        return Ok(summary);
    }
    let detail = match reads {
        Reads::Create(r) => create(clients, settings, event, r).await?,
        Reads::Set { current, pending } => {
            set(clients, settings, event, &gate, current?, pending?).await?
        }
        Reads::Test(pending) => test(settings, event, pending?).await?,
        Reads::Finish(pending) => finish(clients, settings, event, &gate, pending).await?,
    };
    if let (Value::Object(s), Value::Object(d)) = (&mut summary, detail) {
        s.extend(d);
    }
    Ok(summary)
}

/// What each step reads first (Secrets Manager only, nothing changed).
enum Reads {
    Create(CreateReads),
    Set {
        /// AWSCURRENT with its stamp: the in-use check compares tasks with its creation date.
        current: Result<(DbSecret, Stamp), Error>,
        pending: Result<DbSecret, Error>,
    },
    Test(Result<DbSecret, Error>),
    /// Needed only to move AWSCURRENT (not on a retry after the move).
    Finish(Result<DbSecret, Error>),
}

/// createSecret's reads.
struct CreateReads {
    current: Result<DbSecret, Error>,
    pending: Result<Option<Password>, Error>,
}

async fn first_reads(clients: &Clients, event: &RotationEvent) -> Reads {
    let sm = &clients.secretsmanager;
    match event.step {
        Step::Create => {
            let (current, pending) = tokio::join!(
                current(clients, event),
                secrets::value(sm, &event.secret_id, Some(&event.token), AWSPENDING),
            );
            Reads::Create(CreateReads { current, pending })
        }
        Step::Set => {
            let current = secrets::require_stamped_db_secret(
                &clients.secretsmanager,
                &event.secret_id,
                None,
                AWSCURRENT,
            );
            let (current, pending) = tokio::join!(current, pending(clients, event));
            Reads::Set { current, pending }
        }
        Step::Test => Reads::Test(pending(clients, event).await),
        Step::Finish => Reads::Finish(pending(clients, event).await),
    }
}

fn endpoint(secret: &DbSecret) -> Result<Endpoint, Error> {
    Ok(Endpoint {
        host: secret
            .require_host()
            .map_err(|e| Cause::SecretMissingKey.error(e))?
            .to_string(),
        port: secret.port,
        tls: secret.ssl != Some(false),
    })
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Alternating => "alternating",
        Strategy::Single => "single",
    }
}

async fn current(clients: &Clients, event: &RotationEvent) -> Result<DbSecret, Error> {
    secrets::require_db_secret(&clients.secretsmanager, &event.secret_id, None, AWSCURRENT).await
}

async fn pending(clients: &Clients, event: &RotationEvent) -> Result<DbSecret, Error> {
    secrets::require_db_secret(
        &clients.secretsmanager,
        &event.secret_id,
        Some(&event.token),
        AWSPENDING,
    )
    .await
}

async fn create(
    clients: &Clients,
    settings: &Settings,
    event: &RotationEvent,
    reads: CreateReads,
) -> Result<Value, Error> {
    let sm = &clients.secretsmanager;
    let current = reads.current?;
    let strategy = plan::strategy(settings.strategy, &current)?;
    let exists = reads.pending?.is_some();
    let plan = plan::plan_create(&current, strategy, exists)?;
    if event.dry_run {
        return Ok(
            json!({"strategy": strategy_name(strategy), "outcome": "planned", "plan": plan}),
        );
    }
    match &plan {
        CreatePlan::PendingExists => {
            tracing::info!(secret_id = %event.secret_id, token = %event.token, "AWSPENDING already has a value");
            Ok(json!({"strategy": strategy_name(strategy), "outcome": "pending_exists"}))
        }
        CreatePlan::Generate { username } => {
            let next = current.with_credentials(username, settings.password.draw());
            secrets::put_pending(
                sm,
                &event.secret_id,
                &event.token,
                &next.to_secret_string(),
                event.rotation_token.as_deref(),
            )
            .await?;
            metrics::counter!("PendingSecretsCreated").increment(1);
            tracing::info!(secret_id = %event.secret_id, token = %event.token, username, "AWSPENDING version created");
            Ok(
                json!({"strategy": strategy_name(strategy), "outcome": "created", "username": username}),
            )
        }
    }
}

async fn set(
    clients: &Clients,
    settings: &Settings,
    event: &RotationEvent,
    gate: &Gate,
    (current, stamp): (DbSecret, Stamp),
    pending: DbSecret,
) -> Result<Value, Error> {
    let strategy = plan::strategy(settings.strategy, &current)?;
    plan::check_pending(&current, &pending, strategy)?;
    let options = ConnectOptions::load(settings.ca_bundle.as_deref(), settings.connect_timeout)?;
    match strategy {
        Strategy::Alternating => {
            let Gate::Proceed { current: version } = gate else {
                return Err(Error::Rejected("setSecret of a finished rotation".into()));
            };
            // The AWSCURRENT read above reports its version's creation date: the in-use check
            // needs no read of its own unless AWSCURRENT moved between the two reads.
            let retired = Retired {
                user: &pending.username,
                current_version: version,
                current_created: stamp.created_if(version),
            };
            set_alternating(
                clients, settings, event, &current, &pending, retired, &options,
            )
            .await
        }
        Strategy::Single => set_single(clients, event, &current, &pending, &options).await,
    }
}

/// The user an alternating setSecret changes: the one the AWSCURRENT version retired.
struct Retired<'a> {
    user: &'a str,
    current_version: &'a str,
    /// When that version was created, if already read.
    current_created: Option<DateTime<Utc>>,
}

async fn set_alternating(
    clients: &Clients,
    settings: &Settings,
    event: &RotationEvent,
    current: &DbSecret,
    pending: &DbSecret,
    retired: Retired<'_>,
    options: &ConnectOptions,
) -> Result<Value, Error> {
    let master_arn = current.masterarn.as_deref().ok_or_else(|| {
        Error::Rejected("the alternating strategy needs `masterarn` in the secret".into())
    })?;
    let login = async {
        let master =
            secrets::require_db_secret(&clients.secretsmanager, master_arn, None, AWSCURRENT)
                .await?;
        plan::check_not_protected(&pending.username, &master.username)?;
        // A master secret that RDS manages holds only the user name and password: the rotated
        // secret's endpoint, when it is the one the deployment pins.
        let target = plan::master_endpoint(settings.db_endpoint.as_ref(), &master, current)?;
        db::connect(&target, &master.username, &master.password, None, options)
            .await
            .map_err(|e| with_context(e, &format!("login as master user {}", master.username)))
    };
    // The in-use check's reads (ECS, the AWSCURRENT version's creation) change nothing: they go
    // out while the master user logs in, and count only if the retired user has an account.
    let (session, tasks) = tokio::join!(login, observe_use(clients, settings, event, &retired));
    let mut session = session?;
    let result = async {
        let hosts = session
            .hosts_of(&current.username, &pending.username)
            .await?;
        check_not_in_use(settings, &retired, &hosts.pending, tasks)?;
        clone_accounts(&mut session, current, pending, &hosts, event.dry_run).await
    }
    .await;
    session.close().await;
    let cloned = result?;
    Ok(json!({
        "strategy": "alternating",
        "outcome": if event.dry_run { "planned" } else { "password_set" },
        "username": pending.username,
        "accounts": cloned.accounts,
        "dropped": cloned.dropped,
        "statements": cloned.statements,
    }))
}

/// What [`observe_use`] read: the AWSCURRENT version's creation and what the tasks use.
type Observed = Option<Result<(DateTime<Utc>, in_use::InUse), Error>>;

/// What the in-use check compares: when the AWSCURRENT version was created, and what each
/// `ECS_SERVICE` and `ECS_TASK_FAMILY` runs. `None` without `ECS_CLUSTER` (no check).
async fn observe_use(
    clients: &Clients,
    settings: &Settings,
    event: &RotationEvent,
    retired: &Retired<'_>,
) -> Observed {
    let cluster = settings.cluster.as_ref()?;
    let observe = async {
        let version = retired.current_version;
        let created = async {
            match retired.current_created {
                Some(c) => Ok(Some(c)),
                None => {
                    secrets::version_created(&clients.secretsmanager, &event.secret_id, version)
                        .await
                }
            }
        };
        let services = in_use::observe(
            clients.ecs.get(),
            cluster,
            &settings.services,
            &settings.task_families,
        );
        let (created, services) = tokio::join!(created, services);
        let changed_at = created?.ok_or_else(|| {
            Cause::UserStillInUse.error(format!(
                "AWSCURRENT version {version} has no creation date to compare tasks with"
            ))
        })?;
        Ok((changed_at, services?))
    };
    Some(observe.await)
}

/// Fails with `UserStillInUse`, changing nothing, when a task of the `ECS_SERVICE` services or
/// the `ECS_TASK_FAMILY` families may still log in as the retired user: it has an account and
/// a deployment or task predates the AWSCURRENT version (see [`in_use`]). A user with no account yet is used by nobody, and what
/// [`observe_use`] found (or failed to read) does not matter then.
fn check_not_in_use(
    settings: &Settings,
    retired: &Retired<'_>,
    retired_hosts: &[String],
    observed: Observed,
) -> Result<(), Error> {
    let Some(observed) = observed else {
        return Ok(());
    };
    if settings.cluster.is_none() || retired_hosts.is_empty() {
        return Ok(());
    }
    let (changed_at, observed) = observed?;
    let version = retired.current_version;
    let found = in_use::blocker(&observed, changed_at);
    tracing::info!(
        user = retired.user,
        changed_at = %changed_at,
        services = %serde_json::to_string(&observed.services).unwrap_or_default(),
        families = %serde_json::to_string(&observed.families).unwrap_or_default(),
        blocked = found.is_some(),
        "checked the tasks that may still use the retired user"
    );
    match found {
        None => Ok(()),
        Some(b) => Err(Cause::UserStillInUse.error(format!(
            "{b}, from before AWSCURRENT (version {version}) was created at {}, so it may still \
             log in as {}; {} was not changed",
            changed_at.to_rfc3339(),
            retired.user,
            retired.user
        ))),
    }
}

/// What setSecret did to the other user's accounts.
struct Cloned {
    /// Set from the current user's account on the same host.
    accounts: Vec<String>,
    /// Dropped: on a host where the current user has no account.
    dropped: Vec<String>,
    statements: Vec<Statement>,
}

/// Makes the other user's accounts the current user's, host for host, with the AWSPENDING
/// password: stale accounts dropped first, then each host's account cloned.
async fn clone_accounts(
    session: &mut Session,
    current: &DbSecret,
    pending: &DbSecret,
    hosts: &Hosts,
    dry_run: bool,
) -> Result<Cloned, Error> {
    if hosts.current.is_empty() {
        return Err(Error::Rejected(format!(
            "the AWSCURRENT user {} has no account on the server",
            current.username
        )));
    }
    let mut all = Vec::new();
    let mut accounts = Vec::new();
    let mut dropped = Vec::new();
    for stale in plan::stale_accounts(&pending.username, &hosts.current, &hosts.pending) {
        let statement = plan::plan_drop(&stale);
        if !dry_run {
            session
                .execute(&statement)
                .await
                .map_err(|e| with_context(e, &statement.to_string()))?;
            tracing::info!(account = %stale, "stale account dropped: the current user has no account on its host");
        }
        dropped.push(stale.to_string());
        all.push(statement);
    }
    for host in &hosts.current {
        let source = session
            .observe(&Account::new(&current.username, host))
            .await?;
        let target = Account::new(&pending.username, host);
        let target_rows = if hosts.pending.contains(host) {
            Some(session.grant_rows(&target).await?)
        } else {
            None
        };
        let statements = plan::plan_clone(
            &source,
            &target,
            target_rows.as_deref(),
            &pending.password,
            session.escaping,
        )?;
        if !dry_run {
            for s in &statements {
                session
                    .execute(s)
                    .await
                    .map_err(|e| with_context(e, &s.to_string()))?;
            }
            tracing::info!(account = %target, copied_from = %source.account, statements = statements.len(), "account set");
        }
        accounts.push(target.to_string());
        all.extend(statements);
    }
    if !dry_run {
        metrics::counter!("PasswordsSet").increment(1);
    }
    Ok(Cloned {
        accounts,
        dropped,
        statements: all,
    })
}

/// Adds what was being done to a database error, keeping the server's code and message.
fn with_context(e: DbError, what: &str) -> Error {
    match e {
        DbError::LoginRefused { code, message } => {
            Cause::DbLoginRefused.error(format!("database error {code}: {message} ({what})"))
        }
        DbError::Server { code, message } => Error::Database {
            code,
            message: format!("{message} ({what})"),
        },
        DbError::Named(cause, detail) => cause.error(format!("{detail} ({what})")),
        DbError::Unreachable(m) => Error::Unreachable(m),
    }
}

async fn set_single(
    clients: &Clients,
    event: &RotationEvent,
    current: &DbSecret,
    pending: &DbSecret,
    options: &ConnectOptions,
) -> Result<Value, Error> {
    let sm = &clients.secretsmanager;
    let target = endpoint(pending)?;
    let meta = secrets::describe(sm, &event.secret_id).await?;
    let previous = match meta.version_with(AWSPREVIOUS) {
        Some(v) => secrets::db_secret(sm, &event.secret_id, Some(v), AWSPREVIOUS)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let mut refused = Vec::new();
    for which in plan::single_user_attempts(pending, current, previous.as_ref()) {
        let login = match which {
            Which::Pending => pending,
            Which::Previous => previous.as_ref().unwrap_or(current),
            _ => current,
        };
        if let Some(done) = single_login(event, &target, which, login, pending, options).await? {
            return Ok(done);
        }
        refused.push(format!("{which:?}"));
    }
    // Last resort: versions without a label (newest first) that hold this user's password.
    let labelled: Vec<&String> = meta
        .versions
        .keys()
        .filter(|v| !meta.versions[*v].is_empty())
        .collect();
    let tried = [&pending.password, &current.password];
    let mut unlabelled = 0;
    for id in secrets::version_ids(sm, &event.secret_id).await? {
        if labelled.contains(&&id) || unlabelled >= plan::MAX_UNLABELLED_TRIES {
            continue;
        }
        unlabelled += 1;
        let Ok(Some(old)) = secrets::db_secret_version(sm, &event.secret_id, &id).await else {
            continue;
        };
        if old.username != pending.username
            || tried.contains(&&old.password)
            || previous
                .as_ref()
                .is_some_and(|p| p.password == old.password)
        {
            continue;
        }
        if let Some(done) =
            single_login(event, &target, Which::Unlabelled, &old, pending, options).await?
        {
            return Ok(done);
        }
    }
    Err(Cause::DbLoginRefused.error(format!(
        "user {} logs in with none of the stored passwords (tried {} and {unlabelled} unlabelled versions)",
        pending.username,
        refused.join(", ")
    )))
}

/// Logs in with `login`; with the pending password that means done, with another one the
/// user changes its own password to the pending one. `None`: the login was refused.
async fn single_login(
    event: &RotationEvent,
    target: &Endpoint,
    which: Which,
    login: &DbSecret,
    pending: &DbSecret,
    options: &ConnectOptions,
) -> Result<Option<Value>, Error> {
    let dbname = pending.dbname.as_deref();
    let mut session =
        match db::connect(target, &login.username, &login.password, dbname, options).await {
            Ok(s) => s,
            Err(DbError::LoginRefused { code, message }) => {
                tracing::info!(login = ?which, code, message, "login refused");
                return Ok(None);
            }
            Err(other) => return Err(other.into()),
        };
    if which == Which::Pending {
        session.close().await;
        return Ok(Some(
            json!({"strategy": "single", "outcome": "password_already_set"}),
        ));
    }
    let statement =
        plan::own_password_change(session.flavor, &pending.password, None, session.escaping)?;
    if event.dry_run {
        session.close().await;
        return Ok(Some(
            json!({"strategy": "single", "outcome": "planned", "login": which, "statements": [statement]}),
        ));
    }
    let mut result = session.execute(&statement).await;
    if result.as_ref().err().and_then(DbError::code) == Some(MISSING_CURRENT_PASSWORD) {
        let statement = plan::own_password_change(
            session.flavor,
            &pending.password,
            Some(&login.password),
            session.escaping,
        )?;
        result = session.execute(&statement).await;
    }
    session.close().await;
    result.map_err(|e| with_context(e, "changing the user's own password"))?;
    metrics::counter!("PasswordsSet").increment(1);
    tracing::info!(secret_id = %event.secret_id, username = %pending.username, login = ?which, "password changed");
    Ok(Some(
        json!({"strategy": "single", "outcome": "password_set", "login": which}),
    ))
}

async fn test(
    settings: &Settings,
    event: &RotationEvent,
    pending: DbSecret,
) -> Result<Value, Error> {
    let target = endpoint(&pending)?;
    let options = ConnectOptions::load(settings.ca_bundle.as_deref(), settings.connect_timeout)?;
    if event.dry_run {
        return Ok(
            json!({"outcome": "planned", "login": pending.username, "endpoint": target.to_string(), "tls": target.tls}),
        );
    }
    let session = db::connect(
        &target,
        &pending.username,
        &pending.password,
        pending.dbname.as_deref(),
        &options,
    )
    .await
    .map_err(|e| {
        with_context(
            e,
            &format!("login as {} with the AWSPENDING password", pending.username),
        )
    })?;
    // The login ran its first query (`SELECT VERSION(), @@SESSION.sql_mode`): the test passed.
    session.close().await;
    metrics::counter!("PendingSecretsTested").increment(1);
    tracing::info!(secret_id = %event.secret_id, username = %pending.username, tls = target.tls, "AWSPENDING logs in");
    Ok(json!({"outcome": "tested", "username": pending.username, "tls": target.tls}))
}

#[derive(Serialize)]
struct RedeployFailure {
    service: String,
    error_type: &'static str,
    error: String,
}

async fn finish(
    clients: &Clients,
    settings: &Settings,
    event: &RotationEvent,
    gate: &Gate,
    pending: Result<DbSecret, Error>,
) -> Result<Value, Error> {
    let sm = &clients.secretsmanager;
    let plan = plan::plan_finish(gate);
    if event.dry_run {
        return Ok(
            json!({"plan": plan, "services": settings.services, "cluster": settings.cluster}),
        );
    }
    // After the stage move every service redeploys; on a retry (already AWSCURRENT) a service
    // whose PRIMARY deployment started after the version was created is left alone.
    let since: Option<DateTime<Utc>> = match &plan {
        FinishPlan::MoveCurrent { from } => {
            // Never make a version without a usable value AWSCURRENT (finishSecret invoked
            // by hand, or before createSecret).
            pending?;
            secrets::move_current(sm, &event.secret_id, &event.token, from).await?;
            metrics::counter!("RotationsFinished").increment(1);
            tracing::info!(secret_id = %event.secret_id, token = %event.token, previous = %from, "AWSCURRENT moved");
            None
        }
        FinishPlan::AlreadyCurrent => {
            if settings.services.is_empty() {
                return Ok(json!({"outcome": "already_current"}));
            }
            secrets::version_created(sm, &event.secret_id, &event.token).await?
        }
    };
    let mut redeployed: Vec<Redeployed> = Vec::new();
    let mut failed: Vec<RedeployFailure> = Vec::new();
    if let Some(cluster) = &settings.cluster {
        for service in &settings.services {
            match shared::ecs::redeploy(clients.ecs.get(), cluster, service, since).await {
                Ok(r) => {
                    if matches!(r, Redeployed::Started { .. }) {
                        metrics::counter!("ServicesRedeployed").increment(1);
                    }
                    redeployed.push(r)
                }
                Err(e) => failed.push(RedeployFailure {
                    service: service.clone(),
                    error_type: e.error_type(),
                    error: e.to_string(),
                }),
            }
        }
    }
    let outcome = match plan {
        FinishPlan::MoveCurrent { .. } => "finished",
        FinishPlan::AlreadyCurrent => "already_current",
    };
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|f| format!("{}: {}", f.service, f.error))
            .collect();
        return Err(Error::Partial(format!(
            "AWSCURRENT of {} is version {}, but redeploying failed for {}",
            event.secret_id,
            event.token,
            list.join("; ")
        )));
    }
    Ok(json!({"outcome": outcome, "redeployed": redeployed}))
}
