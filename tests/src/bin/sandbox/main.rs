//! The local sandbox: the whole system on one machine, no AWS account.
//!
//! ```text
//! sandbox up [--once]            start the stand-ins, provision, boot the wiki, play the tour;
//!                                then keep running (Ctrl-C or `sandbox stop`), or stop (--once)
//! sandbox invoke FN EVENT_FILE   invoke one function with an event against the running sandbox
//! sandbox stop                   stop a running sandbox
//! ```
//!
//! Everything lives in the working folder `.sandbox/` (set `TMPDIR` inside it too: the
//! bench's MariaDB makes its datadir there). `scripts/demo` drives this binary.

mod ecs;
mod timeline;
mod tour;
mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU16;
use std::time::Duration;

use serde_json::{Value, json};
use wikiops_tests::{Lambda, wiki};

use crate::ecs::Service;
use crate::timeline::Timeline;
use crate::tour::Sandbox;
use crate::world::World;

fn workdir() -> PathBuf {
    std::env::var_os("SANDBOX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| wikiops_tests::paths::root().join(".sandbox"))
}

fn usage() -> ! {
    eprintln!("usage: sandbox up [--once] | sandbox invoke FUNCTION EVENT_FILE | sandbox stop");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("up") => up(args.iter().any(|a| a == "--once")).await,
        Some("invoke") if args.len() == 3 => invoke(&args[1], Path::new(&args[2])).await,
        Some("stop") => stop().await,
        _ => usage(),
    };
    std::process::exit(code);
}

async fn up(once: bool) -> i32 {
    let dir = workdir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("sandbox: create {}: {e}", dir.display());
        return 1;
    }
    if !wiki::available() {
        eprintln!(
            "sandbox: Debian's mediawiki, apache2 and libapache2-mod-php are needed (scripts/demo installs them)"
        );
        return 1;
    }
    let port: u16 = match std::env::var("SANDBOX_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        Some(p) => p,
        None if once => wikiops_tests::free_port(),
        None => 8080,
    };
    let _ = std::fs::remove_file(dir.join("timeline.log"));
    let timeline = Arc::new(Timeline::new(&dir.join("timeline.log")));
    timeline.section("stand-ins");
    timeline.doing("starting moto (AWS APIs) and MariaDB with TLS (RDS), provisioning what the template creates");
    let world = match World::start(&dir, port).await {
        Ok(w) => w,
        Err(e) => {
            timeline.fail(&e);
            return 1;
        }
    };
    timeline.ok(&format!(
        "moto at {}; MariaDB on 127.0.0.1:{} (TLS)",
        world.moto.endpoint, world.db.port
    ));
    timeline.ok(&format!(
        "buckets {} (empty: the first schema step seeds it) and {}; ECS {}/{}; secrets wiki/db (+ master), wiki/secret-key",
        world::CONFIG_BUCKET,
        world::BACKUP_BUCKET,
        world::CLUSTER,
        world::SERVICE
    ));
    let target = Arc::new(AtomicU16::new(0));
    if let Err(e) = ecs::load_balancer(port, target.clone()).await {
        timeline.fail(&e);
        return 1;
    }
    let mut sandbox = Sandbox {
        world,
        service: Service::new(target),
        timeline: timeline.clone(),
    };
    let result = run_tour(&mut sandbox, &dir).await;
    if let Err(e) = &result {
        timeline.fail(&format!("tour failed: {e}"));
    }
    if once {
        sandbox.service.stop().await;
        timeline.info("stopped everything (--once)");
        return i32::from(result.is_err());
    }
    // Keep running for exploration; "ECS" keeps watching the service's deployments.
    timeline.section("the sandbox is running");
    timeline.info(&format!(
        "wiki: {}   (admin user: Admin, password in .sandbox/state.json)",
        sandbox.world.url()
    ));
    timeline.info("invoke a function: make invoke FN=config-redeploy EVENT=events/config-redeploy-s3-put.json");
    timeline.info("stop: make demo-stop (or Ctrl-C)");
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            timeline.fail(&format!("signal handler: {e}"));
            return 1;
        }
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                match sandbox.service.reconcile(&sandbox.world).await {
                    Ok(ecs::Rollout::Steady) => {}
                    Ok(r) => timeline.info(&format!("ECS: {r:?}")),
                    Err(e) => timeline.fail(&format!("ECS: {e}")),
                }
            }
        }
    }
    timeline.info("stopping");
    sandbox.service.stop().await;
    let _ = std::fs::remove_file(dir.join("state.json"));
    i32::from(result.is_err())
}

async fn run_tour(sandbox: &mut Sandbox, dir: &Path) -> Result<(), String> {
    let t = sandbox.timeline.clone();
    t.section("the wiki");
    t.doing("first task: container schema (seeds the empty config bucket, installs the schema; takes a minute), then wiki");
    match sandbox.reconcile().await? {
        ecs::Rollout::Completed { .. } => {}
        other => return Err(format!("the first task did not start: {other:?}")),
    }
    t.ok(&format!("the wiki answers at {}", sandbox.world.url()));
    write_state(sandbox, dir)?;

    sandbox.config_tour().await?;
    sandbox.rotation_tour().await?;
    sandbox.backup_tour().await?;
    sandbox.janitor_tour().await?;
    t.section("tour complete: every outcome checked");
    Ok(())
}

/// What `sandbox invoke` and `sandbox stop` need to find the running sandbox.
fn write_state(sandbox: &Sandbox, dir: &Path) -> Result<(), String> {
    let w = &sandbox.world;
    let functions: serde_json::Map<String, Value> = [
        "config-redeploy",
        "secret-rotation",
        "efs-backup",
        "taskdef-janitor",
    ]
    .iter()
    .map(|f| (f.to_string(), json!(w.function_env(f))))
    .collect();
    let state = json!({
        "pid": std::process::id(),
        "wiki": w.url(),
        "admin_password": w.admin_password,
        "moto": w.moto.endpoint,
        "mariadb_port": w.db.port,
        "functions": functions,
        "replacements": w.event_replacements(),
    });
    let p = dir.join("state.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&state).unwrap_or_default())
        .map_err(|e| format!("write {}: {e}", p.display()))
}

fn read_state() -> Result<Value, String> {
    let p = workdir().join("state.json");
    let text = std::fs::read_to_string(&p)
        .map_err(|_| "no sandbox is running (start one with: make demo)".to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

async fn invoke(function: &str, event_file: &Path) -> i32 {
    let run = async {
        let state = read_state()?;
        let env: Vec<(String, String)> = serde_json::from_value(state["functions"][function].clone())
            .map_err(|_| format!("unknown function {function} (config-redeploy, secret-rotation, efs-backup, taskdef-janitor)"))?;
        let mut text = std::fs::read_to_string(event_file)
            .map_err(|e| format!("read {}: {e}", event_file.display()))?;
        if let Some(reps) = state["replacements"].as_object() {
            for (from, to) in reps {
                text = text.replace(from, to.as_str().unwrap_or_default());
            }
        }
        let event: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", event_file.display()))?;
        let lambda = Lambda::start(function, env).await;
        let out = lambda.invoke(event).await;
        lambda.stop().await;
        out.map_err(|e| e.to_string())
    };
    match run.await {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            0
        }
        Err(e) => {
            eprintln!("sandbox invoke: {e}");
            1
        }
    }
}

async fn stop() -> i32 {
    let Ok(state) = read_state() else {
        eprintln!("sandbox: nothing to stop");
        return 0;
    };
    let Some(pid) = state["pid"].as_u64() else {
        eprintln!("sandbox: state.json has no pid");
        return 1;
    };
    let _ = tokio::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .await;
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            println!("sandbox stopped");
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("sandbox: process {pid} did not stop");
    1
}
