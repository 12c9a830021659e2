//! What the wiki tests share (included with `#[path]` by `wiki_boot.rs`, `wiki_e2e.rs`,
//! `wiki_upgrade.rs`, `wiki_recovery.rs` and `config_redeploy.rs`):
//! running the real `wiki-boot` binary as a container would, a stub of the ECS task metadata
//! endpoint, and S3 arrangement in moto.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::io::AsyncReadExt;
use wikiops_tests::wiki::{self, BootProcess};
use wikiops_tests::{MariaDb, Moto};

/// The task ARN and address the metadata stub reports.
pub const TASK_ID: &str = "0f5b1c7e2d4a4f8e9b3c6d1a2e7f8091";
pub const TASK_ARN: &str =
    "arn:aws:ecs:us-east-1:123456789012:task/wiki/0f5b1c7e2d4a4f8e9b3c6d1a2e7f8091";
pub const TASK_IP: &str = "10.0.2.106";
pub const TASK_AZ: &str = "us-east-1b";

/// A Fargate `/task` document, as the metadata endpoint v4 answers it.
pub fn fargate_task() -> serde_json::Value {
    serde_json::json!({
        "Cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/wiki",
        "TaskARN": TASK_ARN,
        "Family": "wiki-web",
        "Revision": "7",
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "Limits": {"CPU": 0.5, "Memory": 1024},
        "PullStartedAt": "2026-11-29T07:00:00.000000001Z",
        "AvailabilityZone": TASK_AZ,
        "LaunchType": "FARGATE",
        "Containers": [{
            "DockerId": "0f5b1c7e2d4a4f8e9b3c6d1a2e7f8091-2495160603",
            "Name": "wiki",
            "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/wiki:latest",
            "Labels": {"com.amazonaws.ecs.task-arn": TASK_ARN},
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "Networks": [{
                "NetworkMode": "awsvpc",
                "IPv4Addresses": [TASK_IP],
                "AttachmentIndex": 0,
                "IPv4SubnetCIDRBlock": "10.0.2.0/24",
                "PrivateDNSName": "ip-10-0-2-106.ec2.internal",
                "SubnetGatewayIpv4Address": "10.0.2.1/24"
            }]
        }]
    })
}

/// A metadata endpoint answering `/v4/<id>/task` with `status` and `body`; returns the
/// value of `ECS_CONTAINER_METADATA_URI_V4` (the container URI, without `/task`).
pub async fn metadata_stub(status: u16, body: String) -> (String, tokio::task::JoinHandle<()>) {
    let status = StatusCode::from_u16(status).expect("status");
    let app = Router::new().route(
        "/v4/wiki-container/task",
        get(move || {
            let body = body.clone();
            async move { (status, body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind metadata stub");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v4/wiki-container"), server)
}

/// Creates `bucket` in moto and puts `objects` (key, body) into it.
pub async fn bucket_with(moto: &Moto, bucket: &str, objects: &[(&str, &[u8])]) {
    let s3 = moto.s3().await;
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("CreateBucket");
    for (key, body) in objects {
        s3.put_object()
            .bucket(bucket)
            .key(*key)
            .body(body.to_vec().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutObject {key}: {e:?}"));
    }
}

/// The settings a wiki task gets from the template (DB values are placeholders unless given).
/// Moto and MariaDB, started together, with `bucket` holding the example LocalSettings.php at
/// the bucket's root.
pub async fn peers_with_example_config(bucket: &str) -> (Moto, MariaDb) {
    let (moto, db) = tokio::join!(Moto::start(), MariaDb::start());
    let settings =
        std::fs::read(wikiops_tests::paths::root().join("wiki/config/LocalSettings.php"))
            .expect("wiki/config/LocalSettings.php");
    bucket_with(&moto, bucket, &[("LocalSettings.php", &settings)]).await;
    (moto, db)
}

pub fn task_env(moto: &Moto, bucket: &str, prefix: &str, web_root: &Path) -> Vec<(String, String)> {
    let mut env = moto.env();
    env.extend(
        [
            ("CONFIG_BUCKET", bucket),
            ("CONFIG_PREFIX", prefix),
            ("WEB_ROOT", &web_root.display().to_string()),
            // Beside the web root, never in it (wiki-boot refuses that).
            ("CONFIG_DIR", &format!("{}-config", web_root.display())),
            ("WIKI_SERVER", "https://wiki.test"),
            ("DB_HOST", "127.0.0.1"),
            ("DB_PORT", "1"),
            ("DB_NAME", "wiki"),
            ("DB_USER", "admin"),
            ("DB_PASSWORD", "db-s3cr3t-password"),
            (
                "WIKI_SECRET_KEY",
                "wiki-s3cr3t-key-0123456789abcdef0123456789abcdef",
            ),
            ("VPC_CIDR", "127.0.0.0/8"),
            ("DB_WAIT_SECONDS", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    env
}

/// Replaces (or adds) `name` in `env`.
pub fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.to_string(), value.to_string()));
}

/// What a finished `wiki-boot` run left.
pub struct Run {
    pub code: Option<i32>,
    pub pid: u32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together (the task's log stream).
    pub fn logs(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// The `wiki-boot` binary (built on first use).
pub fn boot_binary() -> PathBuf {
    wikiops_tests::paths::binary("wiki-boot")
}

/// A `wiki-boot` command with exactly `env` (plus `PATH`), as ECS starts the container.
pub fn boot_command(args: &[&str], env: &[(String, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(boot_binary());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, as PID 1 of a container has: Apache signals its whole group
        // when it stops, which must not include the test runner.
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Runs `wiki-boot <args>` to its end (killed after `timeout`).
pub async fn run_boot(args: &[&str], env: &[(String, String)], timeout: Duration) -> Run {
    let mut child = boot_command(args, env).spawn().expect("start wiki-boot");
    let pid = child.id().expect("pid");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let read_out = tokio::spawn(async move {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s).await;
        s
    });
    let read_err = tokio::spawn(async move {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s).await;
        s
    });
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => s.expect("wait wiki-boot"),
        Err(_) => {
            // The whole group: wiki-boot and whatever it started (PHP, Apache).
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let _ = child.kill().await;
            let stderr = read_err.await.unwrap_or_default();
            panic!("wiki-boot {args:?} did not finish within {timeout:?}\n{stderr}");
        }
    };
    let run = Run {
        code: status.code(),
        pid,
        stdout: read_out.await.unwrap_or_default(),
        stderr: read_err.await.unwrap_or_default(),
    };
    eprintln!("[wiki-boot {args:?}] exit {:?}\n{}", run.code, run.logs());
    run
}

/// A directory readable by Apache's user (tempdirs are 0700).
pub fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// Every file under `dir` (relative paths), sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(
                    p.strip_prefix(base)
                        .expect("under base")
                        .display()
                        .to_string(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

// --- A wiki "revision" (task) of the upgrade and recovery rehearsals ---------------------------

pub const LONG: Duration = Duration::from_secs(300);

/// One "revision" of the wiki service: a task directory whose web root links to `code`, its Apache config and the
/// environment its containers get (the schema container's with the admin).
pub struct Revision {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub conf: PathBuf,
    pub port: u16,
    pub env: Vec<(String, String)>,
    pub schema_env: Vec<(String, String)>,
}

pub fn revision(code: &Path, uploads: &Path, moto: &Moto, db: &MariaDb) -> Revision {
    let dir = open_tempdir();
    let root = wiki::web_root_of(code, dir.path(), uploads).expect("web root");
    let port = wikiops_tests::free_port();
    let conf = wiki::apache_conf(dir.path(), &root, port, "localhost").expect("apache conf");
    let mut env = task_env(moto, "wiki-config", "", &root);
    env.extend(wiki::local_env(&root, &conf));
    for (k, v) in [
        ("DB_PORT", db.port.to_string()),
        ("DB_USER", "wiki".to_string()),
        ("DB_PASSWORD", "wiki-upgrade-Passw0rd".to_string()),
        ("DB_CA_BUNDLE", db.ca_path.display().to_string()),
        ("DB_WAIT_SECONDS", "30".to_string()),
        ("WIKI_SERVER", format!("http://localhost:{port}")),
        ("WIKI_ADMIN_PASSWORD", "upgrade-Admin-pass-1c9e".to_string()),
    ] {
        set(&mut env, k, &v);
    }
    let mut schema_env = env.clone();
    set(&mut schema_env, "DB_ADMIN_USER", &db.admin_user);
    set(&mut schema_env, "DB_ADMIN_PASSWORD", &db.admin_password);
    Revision {
        dir,
        root,
        conf,
        port,
        env,
        schema_env,
    }
}

/// Runs a maintenance script of `rev` as its task would (the task's environment).
pub async fn maintenance(
    rev: &Revision,
    script: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("php")
        .arg(rev.root.join("maintenance").join(script))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(rev.env.iter().cloned())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("php");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let out = tokio::time::timeout(LONG, child.wait_with_output())
        .await
        .expect("maintenance script in time")
        .expect("maintenance script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    text
}

/// The schema container of `rev`: must exit 0 before anything of `rev` serves.
pub async fn schema_step(rev: &Revision) -> String {
    let run = run_boot(&["schema"], &rev.schema_env, LONG).await;
    assert_eq!(run.code, Some(0), "schema step failed:\n{}", run.logs());
    run.logs()
}

/// The web container of `rev`, once it is healthy.
pub async fn serve(rev: &Revision) -> BootProcess {
    let mut boot = BootProcess::start(&[], &rev.env, &rev.conf.display().to_string())
        .expect("start wiki-boot");
    for _ in 0..240 {
        if wiki::healthy(rev.port).await {
            return boot;
        }
        assert!(
            !boot.exited(),
            "the web container stopped:\n{}",
            boot.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("never healthy:\n{}", boot.logs());
}
