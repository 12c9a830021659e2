//! secret-rotation side by side with AWS's own rotation function, the anchor:
//! `SecretsManagerRDSMySQLRotationMultiUser` (aws-samples/aws-secrets-manager-rotation-lambdas)
//! under `python -m awslambdaric`, through the same Runtime API harness, against the same moto
//! and MariaDB with TLS.
//!
//! Its code stays out of the repository: `scripts/fetch-rotation-anchor DIR SNAPSHOT` puts the
//! function in `DIR/SecretsManagerRDSMySQLRotationMultiUser` and a pinned venv (awslambdaric,
//! pymysql, boto3) in `DIR/venv`; `bench-report --rotation-anchor DIR` measures it. Without the
//! option, only this function's row is measured.
//!
//! Each round starts a new process of each contender (alternating which goes first) and
//! measures: init (process start to its first `next`), cold (the first four-step rotation of
//! that process: what a monthly rotation gets, since an execution environment is never kept a
//! month), warm (later rotations in the same process) and peak RSS. Every rotation is of a
//! secret in the state a previous rotation leaves (both users exist; the services were redeployed
//! after it), so this function runs all its checks: the pinned endpoint, the RDS-CA-style trust
//! (the test CA through `DB_CA_BUNDLE`), and the ECS in-use check before it changes the user.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wikiops_tests::measure::{Samples, peak_rss_kib};
use wikiops_tests::{Lambda, MariaDb, Moto};

/// The anchor's folder inside the `--rotation-anchor` directory.
pub const ANCHOR_FUNCTION: &str = "SecretsManagerRDSMySQLRotationMultiUser";
const SHIM: &str = include_str!("anchor_shim.py");
const CLUSTER: &str = "h2h";
const SERVICE: &str = "h2h-web";
const ROTATION_LAMBDA: &str = "arn:aws:lambda:us-east-1:123456789012:function:rotation";

/// One program that rotates secrets.
struct Contender {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// One contender's figures.
#[derive(Default)]
pub struct Figures {
    pub name: String,
    pub init_ms: Samples,
    pub cold_ms: Samples,
    pub warm_ms: Samples,
    /// Each step's time (createSecret, setSecret, testSecret, finishSecret) in cold rotations.
    pub cold_steps_ms: [Samples; 4],
    /// The same in warm rotations.
    pub warm_steps_ms: [Samples; 4],
    pub rss_kib: Samples,
    pub errors: Vec<String>,
}

/// What the side-by-side run found: this function, then the anchor when it was given.
pub struct Outcome {
    pub rounds: usize,
    pub warm_per_round: usize,
    pub ours: Figures,
    pub anchor: Option<Figures>,
    /// The anchor's commit (`anchor-commit`, written by `scripts/fetch-rotation-anchor`).
    pub anchor_commit: Option<String>,
}

fn s(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

fn ours(bin: &Path, moto: &Moto, db: &MariaDb) -> Contender {
    let mut env = moto.env();
    env.extend([
        s("DB_CA_BUNDLE", db.ca_path.display().to_string()),
        s("DB_ENDPOINT", format!("localhost:{}", db.port)),
        s("ROTATION_STRATEGY", "alternating"),
        s("ECS_CLUSTER", CLUSTER),
        s("ECS_SERVICE", SERVICE),
    ]);
    Contender {
        name: "secret-rotation",
        program: bin.to_path_buf(),
        args: Vec::new(),
        env,
    }
}

fn anchor(dir: &Path, shim_dir: &Path, moto: &Moto, db: &MariaDb) -> Result<Contender, String> {
    let function = dir.join(ANCHOR_FUNCTION);
    let python = dir.join("venv/bin/python");
    if !function.join("lambda_function.py").is_file() || !python.exists() {
        return Err(format!(
            "{} holds no {ANCHOR_FUNCTION}/lambda_function.py and venv/bin/python: run scripts/fetch-rotation-anchor {} first",
            dir.display(),
            dir.display()
        ));
    }
    let mut env = moto.env();
    env.extend([
        s("SECRETS_MANAGER_ENDPOINT", moto.endpoint.clone()),
        s(
            "PYTHONPATH",
            format!("{}:{}", shim_dir.display(), function.display()),
        ),
        // Lambda's code folder is read-only: the handler module is compiled at every start.
        s("PYTHONDONTWRITEBYTECODE", "1"),
        s("AWS_EXECUTION_ENV", "AWS_Lambda_python3.11"),
        s("ANCHOR_DB_CA", db.ca_path.display().to_string()),
    ]);
    Ok(Contender {
        name: "AWS MultiUser (Python)",
        program: python,
        args: ["-m", "awslambdaric", "bench_anchor.lambda_handler"]
            .map(String::from)
            .to_vec(),
        env,
    })
}

/// A user with a grant, its secret and a master secret with its own endpoint (the shape both
/// functions accept: `engine` mysql, the master's `host`; `ssl` true, so neither may fall back to
/// plaintext: with `ssl` absent the anchor retries a failed TLS login in clear), then one rotation by `primer` so both
/// users exist, as after any earlier rotation.
async fn prepare(moto: &Moto, db: &MariaDb, primer: &Lambda, tag: &str) -> Result<String, String> {
    use mysql_async::prelude::Queryable;
    // At most 10 characters: the anchor refuses user names over 16 with `_clone`.
    let user = format!("h{tag}");
    let mut admin = db.admin().await;
    for q in [
        format!("CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY 'Bench_pw.1' REQUIRE SSL"),
        format!("GRANT SELECT, INSERT ON wiki.* TO '{user}'@'%'"),
    ] {
        admin.query_drop(q).await.map_err(|e| e.to_string())?;
    }
    let _ = admin.disconnect().await;
    let sm = moto.secretsmanager().await;
    let master = sm
        .create_secret()
        .name(format!("h2h-master-{tag}"))
        .secret_string(
            json!({"engine": "mysql", "host": "localhost", "port": db.port, "ssl": true,
                   "username": db.admin_user, "password": db.admin_password})
            .to_string(),
        )
        .send()
        .await
        .map_err(|e| format!("CreateSecret: {e}"))?;
    let secret = sm
        .create_secret()
        .name(format!("h2h/db-{tag}"))
        .secret_string(
            json!({"engine": "mysql", "host": "localhost", "port": db.port, "ssl": true,
                   "username": user, "password": "Bench_pw.1", "dbname": "wiki",
                   "masterarn": master.arn()})
            .to_string(),
        )
        .send()
        .await
        .map_err(|e| format!("CreateSecret: {e}"))?;
    let arn = secret.arn().unwrap_or_default().to_string();
    rotate(moto, primer, &arn)
        .await
        .map_err(|e| format!("priming rotation: {e}"))?;
    Ok(arn)
}

/// The four steps, in order.
const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// One rotation's wall time and each step's.
struct Timed {
    total: Duration,
    steps: [Duration; 4],
}

impl Timed {
    fn push(&self, total: &mut Samples, steps: &mut [Samples; 4]) {
        total.push_ms(self.total);
        for (s, d) in steps.iter_mut().zip(self.steps) {
            s.push_ms(d);
        }
    }
}

/// One four-step rotation of `arn` by `lambda`: its wall time, checked to have moved AWSCURRENT
/// to a new version for the other user. Starting it (RotateSecret) is not timed.
async fn rotate(moto: &Moto, lambda: &Lambda, arn: &str) -> Result<Timed, String> {
    let sm = moto.secretsmanager().await;
    let current = |v: aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput| {
        let user = v
            .secret_string()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|j| j["username"].as_str().map(str::to_string));
        (v.version_id().unwrap_or_default().to_string(), user)
    };
    let before = sm
        .get_secret_value()
        .secret_id(arn)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .map(current)
        .map_err(|e| format!("GetSecretValue: {e}"))?;
    // What Secrets Manager does once a rotation completes: AWSPENDING leaves the new version.
    let versions = sm
        .list_secret_version_ids()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| format!("ListSecretVersionIds: {e}"))?;
    for v in versions.versions() {
        if v.version_stages().iter().any(|s| s == "AWSPENDING") {
            sm.update_secret_version_stage()
                .secret_id(arn)
                .version_stage("AWSPENDING")
                .set_remove_from_version_id(v.version_id().map(str::to_string))
                .send()
                .await
                .map_err(|e| format!("UpdateSecretVersionStage: {e}"))?;
        }
    }
    let token = moto.start_rotation(arn, ROTATION_LAMBDA).await;
    let event = |step: &str| json!({"Step": step, "SecretId": arn, "ClientRequestToken": token});
    let t = Instant::now();
    let mut steps = [Duration::ZERO; 4];
    for (step, took) in STEPS.into_iter().zip(&mut steps) {
        let s = Instant::now();
        lambda
            .invoke_with_deadline(event(step), Duration::from_secs(60))
            .await
            .map_err(|e| format!("{step}: {e}"))?;
        *took = s.elapsed();
    }
    let took = Timed {
        total: t.elapsed(),
        steps,
    };
    let after = sm
        .get_secret_value()
        .secret_id(arn)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .map(current)
        .map_err(|e| format!("GetSecretValue: {e}"))?;
    if after.0 != token || after.1.is_none() || after.1 == before.1 {
        return Err(format!(
            "the rotation did not move AWSCURRENT to a new version for the other user (before {:?}, after {:?}, token {token})",
            before, after
        ));
    }
    Ok(took)
}

/// One process of `c`: init, a cold rotation, `warm` warm ones, peak RSS.
async fn measure(
    c: &Contender,
    moto: &Moto,
    db: &MariaDb,
    primer: &Lambda,
    tag: &str,
    warm: usize,
    f: &mut Figures,
) {
    let arn = match prepare(moto, db, primer, tag).await {
        Ok(a) => a,
        Err(e) => return f.errors.push(format!("{tag}: {e}")),
    };
    let lambda = Lambda::start_command(c.name, &c.program, &c.args, c.env.clone()).await;
    let Some(init) = lambda.wait_ready(Duration::from_secs(60)).await else {
        f.errors.push(format!("{tag}: no init: {}", lambda.logs()));
        lambda.stop().await;
        return;
    };
    let cold = match rotate(moto, &lambda, &arn).await {
        Ok(d) => d,
        Err(e) => {
            f.errors.push(format!("{tag}: cold rotation: {e}"));
            lambda.stop().await;
            return;
        }
    };
    f.init_ms.push_ms(init);
    cold.push(&mut f.cold_ms, &mut f.cold_steps_ms);
    for i in 0..warm {
        match rotate(moto, &lambda, &arn).await {
            Ok(d) => d.push(&mut f.warm_ms, &mut f.warm_steps_ms),
            Err(e) => f.errors.push(format!("{tag}: warm rotation {i}: {e}")),
        }
    }
    if let Some(k) = lambda.pid().and_then(peak_rss_kib) {
        f.rss_kib.push(k as f64);
    }
    lambda.stop().await;
}

/// The side-by-side run: `rounds` rounds, each a new process of each contender.
pub async fn run(
    bin: &Path,
    anchor_dir: Option<&Path>,
    moto: &Moto,
    db: &MariaDb,
    rounds: usize,
    warm: usize,
) -> Outcome {
    moto.ecs_service(CLUSTER, SERVICE, SERVICE).await;
    let shim_dir = tempfile::tempdir().expect("shim dir");
    let mut contenders = vec![ours(bin, moto, db)];
    let mut anchor_figures = None;
    if let Some(dir) = anchor_dir {
        match std::fs::write(shim_dir.path().join("bench_anchor.py"), SHIM)
            .map_err(|e| format!("write the shim: {e}"))
            .and_then(|()| anchor(dir, shim_dir.path(), moto, db))
        {
            Ok(c) => {
                contenders.push(c);
            }
            Err(e) => {
                anchor_figures = Some(Figures {
                    name: "AWS MultiUser (Python)".into(),
                    errors: vec![e],
                    ..Figures::default()
                });
            }
        }
    }
    let mut figures: Vec<Figures> = contenders
        .iter()
        .map(|c| Figures {
            name: c.name.to_string(),
            ..Figures::default()
        })
        .collect();
    // This function, kept running, brings each new secret to the state after a rotation.
    let primer_c = ours(bin, moto, db);
    let primer = Lambda::start_command("primer", &primer_c.program, &[], primer_c.env).await;
    for round in 0..rounds {
        eprintln!(
            "bench-report: rotation side by side, round {} of {rounds}",
            round + 1
        );
        let mut order: Vec<usize> = (0..contenders.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let tag = format!("{round}{}", ["o", "a"][i.min(1)]);
            measure(
                &contenders[i],
                moto,
                db,
                &primer,
                &tag,
                warm,
                &mut figures[i],
            )
            .await;
        }
    }
    primer.stop().await;
    let mut figures = figures.into_iter();
    let ours = figures.next().unwrap_or_default();
    Outcome {
        rounds,
        warm_per_round: warm,
        ours,
        anchor: figures.next().or(anchor_figures),
        anchor_commit: anchor_dir
            .and_then(|d| std::fs::read_to_string(d.join("anchor-commit")).ok())
            .map(|c| c.trim().to_string()),
    }
}

fn ratio(a: &Samples, b: &Samples) -> f64 {
    a.median() / b.median()
}

fn mib(s: &Samples) -> Samples {
    Samples(s.0.iter().map(|k| k / 1024.0).collect())
}

/// The report's section: the table, the ratios and the goals.
pub fn section(o: &Outcome) -> String {
    let mut s = format!(
        "{} round(s), each a new process of each contender, alternating which starts first; median (min–max). \
         Init = process start to its first Runtime API `next`; cold = the first four-step rotation of that process \
         (createSecret to finishSecret, alternating users, both existing; what a monthly rotation gets); warm = the \
         {} rotations after it in the same process; peak RSS = VmHWM after them. Against moto and MariaDB with TLS; \
         secret-rotation with its checks (pinned endpoint, CA trust, ECS in-use check and redeploy of one service).\n\n",
        o.rounds, o.warm_per_round
    );
    s.push_str(
        "| function | init (ms) | cold rotation (ms) | warm rotation (ms) | peak RSS (MiB) |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|\n");
    let row = |f: &Figures| {
        format!(
            "| {} | {} | {} | {} | {} |\n",
            f.name,
            f.init_ms.show(1),
            f.cold_ms.show(1),
            f.warm_ms.show(1),
            mib(&f.rss_kib).show(1)
        )
    };
    s.push_str(&row(&o.ours));
    match &o.anchor {
        Some(a) if !a.cold_ms.0.is_empty() => {
            s.push_str(&row(a));
            let (init, cold, warm, rss) = (
                ratio(&o.ours.init_ms, &a.init_ms),
                ratio(&o.ours.cold_ms, &a.cold_ms),
                ratio(&o.ours.warm_ms, &a.warm_ms),
                ratio(&o.ours.rss_kib, &a.rss_kib),
            );
            s.push_str(&format!(
                "| ratio | {init:.3}× | {cold:.2}× | {warm:.2}× | {rss:.2}× |\n\n"
            ));
            let met = |ok: bool| if ok { "met" } else { "**missed**" };
            s.push_str(&format!(
                "Goals: cold ≤ 0.3× the anchor: {}; warm ≤ 0.5×: {}; peak RSS ≤ 0.5×: {}\n",
                met(cold <= 0.3),
                met(warm <= 0.5),
                met(rss <= 0.5)
            ));
            if let Some(c) = &o.anchor_commit {
                s.push_str(&format!(
                    "\nThe anchor: `{ANCHOR_FUNCTION}` of aws-samples/aws-secrets-manager-rotation-lambdas at {c}, unchanged, \
                     under `python -m awslambdaric`.\n"
                ));
            }
        }
        Some(_) => {}
        None => s.push_str(
            "\nThe anchor (AWS's SecretsManagerRDSMySQLRotationMultiUser) was not measured: give its folder with \
             `--rotation-anchor DIR` (`scripts/fetch-rotation-anchor DIR SNAPSHOT` makes one).\n",
        ),
    }
    s.push_str(&steps_table(o));
    for f in std::iter::once(&o.ours).chain(o.anchor.as_ref()) {
        for e in &f.errors {
            s.push_str(&format!("- {} error: {e}\n", f.name));
        }
    }
    s
}

/// Where each rotation spends its time: every step's median, cold and warm.
fn steps_table(o: &Outcome) -> String {
    let mut s =
        String::from("\nEach step's median (ms), cold and warm:\n\n| function | rotation |");
    for step in STEPS {
        s.push_str(&format!(" {step} |"));
    }
    s.push_str("\n|---|---|---:|---:|---:|---:|\n");
    for f in std::iter::once(&o.ours).chain(o.anchor.as_ref()) {
        for (which, steps) in [("cold", &f.cold_steps_ms), ("warm", &f.warm_steps_ms)] {
            if steps[0].0.is_empty() {
                continue;
            }
            s.push_str(&format!("| {} | {which} |", f.name));
            for step in steps {
                s.push_str(&format!(" {:.1} |", step.median()));
            }
            s.push('\n');
        }
    }
    s
}

/// Whether the run failed: a contender asked for measured nothing or hit an error.
pub fn failed(o: &Outcome) -> bool {
    std::iter::once(&o.ours)
        .chain(o.anchor.as_ref())
        .any(|f| f.cold_ms.0.is_empty() || !f.errors.is_empty())
}
