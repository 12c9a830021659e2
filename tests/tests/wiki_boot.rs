//! The wiki container's boot program, run as ECS runs it, against moto S3, a stub of the
//! task metadata endpoint and the bench MariaDB. `APACHE_COMMAND` points at a script that
//! prints its pid, arguments and environment, so the tests see what Apache would get.

#[path = "wiki_support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wikiops_tests::{MariaDb, Moto};

const LOCAL_SETTINGS: &[u8] = include_bytes!("../../wiki/config/LocalSettings.php");
const LONG: Duration = Duration::from_secs(60);

/// A stand-in for `apache2-foreground`: prints its pid, arguments and environment.
fn apache_stub(dir: &Path) -> PathBuf {
    let p = dir.join("apache-stub");
    std::fs::write(
        &p,
        "#!/bin/sh\necho \"apache-stub pid=$$ args=$*\"\nenv | sort\n",
    )
    .expect("write stub");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod stub");
    p
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[tokio::test]
async fn pulls_the_config_then_execs_apache_with_the_task_identity() {
    let (moto, db) = tokio::join!(Moto::start(), MariaDb::start());
    bucket_with(
        &moto,
        "wiki-config",
        &[
            ("prod/", b""),
            ("prod/LocalSettings.php", LOCAL_SETTINGS),
            ("prod/extra/Branding.php", b"<?php $wgLogos = [];\n"),
            ("prod/extra/", b""),
            ("prod/.wikiops/last-good/LocalSettings.php", b"<?php old"),
            (".wikiops/state.json", b"{}"),
            ("staging/LocalSettings.php", b"<?php other"),
        ],
    )
    .await;
    let web = open_tempdir();
    let scratch = tempfile::tempdir().unwrap();
    let stub = apache_stub(scratch.path());
    // The image's own files stay; a file from S3 replaces the image's copy.
    std::fs::write(web.path().join("index.php"), "<?php // MediaWiki").unwrap();
    std::fs::write(web.path().join("LocalSettings.php"), "<?php // baked in").unwrap();
    let (meta, _server) = metadata_stub(200, fargate_task().to_string()).await;

    // The schema task's work, as far as serve checks it: MediaWiki's page table exists.
    let mut conn = db.admin().await;
    conn.query_drop("CREATE TABLE wiki.page (page_id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();

    let mut env = task_env(&moto, "wiki-config", "prod", web.path());
    set(&mut env, "DB_PORT", &db.port.to_string());
    set(&mut env, "DB_PASSWORD", &db.admin_password);
    set(&mut env, "DB_CA_BUNDLE", &db.ca_path.display().to_string());
    set(&mut env, "ECS_CONTAINER_METADATA_URI_V4", &meta);
    set(
        &mut env,
        "APACHE_COMMAND",
        &format!("{} -DFOREGROUND", stub.display()),
    );
    let run = run_boot(&[], &env, LONG).await;

    assert_eq!(run.code, Some(0), "{}", run.logs());
    // exec: the stub runs in the boot program's own process, with the arguments given.
    assert!(
        run.stdout
            .contains(&format!("apache-stub pid={} args=-DFOREGROUND", run.pid)),
        "{}",
        run.stdout
    );
    for want in [
        format!("WIKI_TASK_ARN={TASK_ARN}"),
        format!("WIKI_TASK_ID={TASK_ID}"),
        format!("WIKI_AVAILABILITY_ZONE={TASK_AZ}"),
        format!("WIKI_PRIVATE_IP={TASK_IP}"),
        "WIKI_CLUSTER=arn:aws:ecs:us-east-1:123456789012:cluster/wiki".to_string(),
        format!("WEB_ROOT={}", web.path().display()),
        "VPC_CIDR=127.0.0.0/8".to_string(),
        "WIKI_SERVER=https://wiki.test".to_string(),
    ] {
        assert!(
            run.stdout.lines().any(|l| l == want),
            "Apache's environment lacks {want}:\n{}",
            run.stdout
        );
    }

    assert_eq!(
        files_under(web.path()),
        vec!["LocalSettings.php", "extra/Branding.php", "index.php"],
        "bookkeeping, markers and other prefixes are not copied"
    );
    let ls = web.path().join("LocalSettings.php");
    assert_eq!(std::fs::read(&ls).unwrap(), LOCAL_SETTINGS);
    assert_eq!(mode(&ls), 0o644, "readable by Apache's user");
    assert_eq!(
        std::fs::read_to_string(web.path().join("extra/Branding.php")).unwrap(),
        "<?php $wgLogos = [];\n"
    );
    // The boot program's own log: what it printed before Apache (the stub) took over.
    let stub_at = run
        .stdout
        .find("apache-stub pid=")
        .unwrap_or(run.stdout.len());
    let logs = format!("{}\n{}", &run.stdout[..stub_at], run.stderr);
    assert!(logs.contains("database is ready"), "{logs}");
    assert!(logs.contains("configuration file installed"), "{logs}");
    for secret in [db.admin_password.as_str(), "wiki-s3cr3t-key"] {
        assert!(!logs.contains(secret), "a secret reached the log: {logs}");
    }
}

#[tokio::test]
async fn check_prints_the_plan_and_pull_writes_it() {
    let moto = Moto::start().await;
    bucket_with(
        &moto,
        "wiki-config",
        &[
            ("prod/LocalSettings.php", LOCAL_SETTINGS),
            ("prod/extra/Branding.php", b"<?php"),
            ("prod/.wikiops/state.json", b"{}"),
        ],
    )
    .await;
    let web = open_tempdir();
    let env = task_env(&moto, "wiki-config", "prod", web.path());
    let run = run_boot(&["check"], &env, LONG).await;
    assert_eq!(run.code, Some(0), "{}", run.logs());
    let plan: serde_json::Value = run
        .stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON plan on stdout");
    assert_eq!(plan["bucket"], "wiki-config");
    assert_eq!(plan["prefix"], "prod/");
    assert_eq!(
        plan["files"],
        serde_json::json!([
            // No release yet (a fresh stack): the latest objects, each checked when pulled.
            {"key": "prod/LocalSettings.php", "relative": "LocalSettings.php", "version_id": null, "place": "web_root"},
            {"key": "prod/extra/Branding.php", "relative": "extra/Branding.php", "version_id": null, "place": "web_root"},
        ])
    );
    assert!(
        files_under(web.path()).is_empty(),
        "a dry run writes nothing"
    );
    assert!(!run.logs().contains("s3cr3t"));

    // `pull` does the writing, and stops there.
    let run = run_boot(&["pull"], &env, LONG).await;
    assert_eq!(run.code, Some(0), "{}", run.logs());
    assert_eq!(
        files_under(web.path()),
        vec!["LocalSettings.php", "extra/Branding.php"]
    );
    assert!(!run.logs().contains("database"), "{}", run.logs());
}

/// A configuration object that may hold a credential (JSON, .ini, a key) never lands in
/// Apache's document root: only PHP and public web assets do; the rest goes to CONFIG_DIR.
#[tokio::test]
async fn only_what_must_be_served_lands_in_the_document_root() {
    let moto = Moto::start().await;
    bucket_with(
        &moto,
        "wiki-config",
        &[
            ("prod/LocalSettings.php", LOCAL_SETTINGS),
            ("prod/logo.png", b"png"),
            ("prod/secrets.json", b"{\"smtp_password\": \"s3cr3t\"}"),
            ("prod/extra/db.ini", b"password=s3cr3t\n"),
        ],
    )
    .await;
    let web = open_tempdir();
    let env = task_env(&moto, "wiki-config", "prod", web.path());
    let config_dir = PathBuf::from(format!("{}-config", web.path().display()));
    let run = run_boot(&["pull"], &env, LONG).await;
    assert_eq!(run.code, Some(0), "{}", run.logs());
    assert_eq!(
        files_under(web.path()),
        vec!["LocalSettings.php", "logo.png"],
        "only PHP and public assets in the document root"
    );
    assert_eq!(
        files_under(&config_dir),
        vec!["extra/db.ini", "secrets.json"]
    );
    let _ = std::fs::remove_dir_all(&config_dir);
}

#[tokio::test]
async fn a_missing_required_object_stops_before_apache() {
    let moto = Moto::start().await;
    bucket_with(
        &moto,
        "wiki-config",
        &[
            ("prod/logo.png", b"png"),
            ("prod/.wikiops/last-good/LocalSettings.php", b"<?php"),
            ("LocalSettings.php", b"<?php // another prefix"),
        ],
    )
    .await;
    let web = open_tempdir();
    let scratch = tempfile::tempdir().unwrap();
    let mut env = task_env(&moto, "wiki-config", "prod/", web.path());
    set(
        &mut env,
        "APACHE_COMMAND",
        &apache_stub(scratch.path()).display().to_string(),
    );
    let run = run_boot(&["serve"], &env, LONG).await;
    assert_eq!(run.code, Some(1));
    let logs = run.logs();
    assert!(
        logs.contains("required configuration object prod/LocalSettings.php is missing"),
        "{logs}"
    );
    assert!(logs.contains("NotFound"), "{logs}");
    assert!(!logs.contains("apache-stub"), "Apache started: {logs}");
    assert!(
        files_under(web.path()).is_empty(),
        "nothing is written when the config is incomplete"
    );

    // A second required file (REQUIRED_CONFIG) is checked the same way.
    bucket_with(&moto, "other", &[("LocalSettings.php", b"<?php")]).await;
    set(&mut env, "CONFIG_BUCKET", "other");
    set(&mut env, "CONFIG_PREFIX", "");
    set(
        &mut env,
        "REQUIRED_CONFIG",
        "LocalSettings.php,extensions.php",
    );
    let run = run_boot(&[], &env, LONG).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.logs()
            .contains("required configuration object extensions.php is missing"),
        "{}",
        run.logs()
    );

    // A bucket that does not exist: S3's own error.
    set(&mut env, "CONFIG_BUCKET", "no-such-bucket");
    let run = run_boot(&[], &env, LONG).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.logs().contains("S3 GetObject failed: NoSuchBucket"),
        "{}",
        run.logs()
    );
}

#[tokio::test]
async fn a_missing_setting_is_named_and_no_secret_is_logged() {
    let moto = Moto::start().await;
    let web = open_tempdir();
    for name in [
        "CONFIG_BUCKET",
        "WIKI_SERVER",
        "DB_HOST",
        "DB_PASSWORD",
        "WIKI_SECRET_KEY",
        "VPC_CIDR",
    ] {
        let mut env = task_env(&moto, "wiki-config", "prod", web.path());
        env.retain(|(k, _)| k != name);
        let run = run_boot(&[], &env, LONG).await;
        assert_eq!(run.code, Some(1), "{name}");
        let logs = run.logs();
        assert!(
            logs.contains(&format!("missing environment variable {name}")),
            "{name}: {logs}"
        );
        assert!(logs.contains("error_type=\"Settings\""), "{logs}");
        assert!(!logs.contains("s3cr3t"), "{logs}");
    }
    let mut env = task_env(&moto, "wiki-config", "prod", web.path());
    set(&mut env, "WIKI_SERVER", "wiki.test");
    let run = run_boot(&[], &env, LONG).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.logs()
            .contains("environment variable WIKI_SERVER is malformed"),
        "{}",
        run.logs()
    );

    let run = run_boot(&["migrate"], &env, LONG).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.logs().contains("unknown command \"migrate\""),
        "{}",
        run.logs()
    );
}

/// A proxy in front of moto that cuts the body of every `GET` of `cut` in half (and closes
/// the connection), as a dropped connection does; everything else passes through.
async fn cutting_proxy(upstream: u16, cut: &'static str) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 8192];
                let head_end = loop {
                    let Ok(n) = client.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&req[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while req.len() < head_end + len {
                    let Ok(n) = client.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let mut new_head: Vec<&str> = head
                    .trim_end()
                    .lines()
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                    .collect();
                new_head.push("Connection: close");
                let mut forward = new_head.join("\r\n").into_bytes();
                forward.extend_from_slice(b"\r\n\r\n");
                forward.extend_from_slice(&req[head_end..]);
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                if up.write_all(&forward).await.is_err() {
                    return;
                }
                let mut resp = Vec::new();
                let _ = up.read_to_end(&mut resp).await;
                let first = head.lines().next().unwrap_or_default();
                if first.starts_with("GET ") && first.contains(cut) {
                    let body_at = resp
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|i| i + 4)
                        .unwrap_or(resp.len());
                    let keep = body_at + (resp.len() - body_at) / 2;
                    resp.truncate(keep);
                }
                let _ = client.write_all(&resp).await;
                let _ = client.shutdown().await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_cut_download_leaves_the_web_root_as_it_was() {
    let moto = Moto::start().await;
    let mut big = LOCAL_SETTINGS.to_vec();
    big.extend(std::iter::repeat_n(b'#', 64 * 1024));
    bucket_with(
        &moto,
        "wiki-config",
        &[
            ("prod/LocalSettings.php", &big),
            ("prod/extra/Branding.php", b"<?php // complete"),
        ],
    )
    .await;
    let (proxy, _task) = cutting_proxy(moto.port, "/LocalSettings.php").await;
    let web = open_tempdir();
    std::fs::write(web.path().join("LocalSettings.php"), "<?php // previous").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut env = task_env(&moto, "wiki-config", "prod", web.path());
    set(
        &mut env,
        "AWS_ENDPOINT_URL",
        &format!("http://127.0.0.1:{proxy}"),
    );
    set(
        &mut env,
        "APACHE_COMMAND",
        &apache_stub(scratch.path()).display().to_string(),
    );
    let run = run_boot(&[], &env, LONG).await;
    assert_eq!(run.code, Some(1), "{}", run.logs());
    let logs = run.logs();
    assert!(
        logs.contains("download of s3://wiki-config/prod/LocalSettings.php was cut short")
            || logs.contains("s3://wiki-config/prod/LocalSettings.php: received"),
        "{logs}"
    );
    assert!(
        logs.contains("retrying"),
        "a cut download is retried: {logs}"
    );
    assert!(!logs.contains("apache-stub"), "Apache started: {logs}");
    // All or nothing: the complete object was not installed either, no temp file is left.
    assert_eq!(files_under(web.path()), vec!["LocalSettings.php"]);
    assert_eq!(
        std::fs::read_to_string(web.path().join("LocalSettings.php")).unwrap(),
        "<?php // previous"
    );
}

#[tokio::test]
async fn bad_task_metadata_stops_before_apache() {
    let moto = Moto::start().await;
    bucket_with(
        &moto,
        "wiki-config",
        &[("LocalSettings.php", LOCAL_SETTINGS)],
    )
    .await;
    let web = open_tempdir();
    let scratch = tempfile::tempdir().unwrap();
    let stub = apache_stub(scratch.path());

    let mut no_az = fargate_task();
    no_az.as_object_mut().unwrap().remove("AvailabilityZone");
    let mut no_ip = fargate_task();
    no_ip["Containers"][0]["Networks"] = serde_json::json!([]);
    let cases = [
        (
            200,
            no_az.to_string(),
            "ECS task metadata: AvailabilityZone is missing",
        ),
        (
            200,
            no_ip.to_string(),
            "ECS task metadata: no container network has an IPv4 address",
        ),
        (
            200,
            "<html>502</html>".to_string(),
            "ECS task metadata: not a task document",
        ),
        (
            404,
            "not found".to_string(),
            "ECS task metadata: the endpoint answered 404 Not Found",
        ),
    ];
    for (status, body, want) in cases {
        let (meta, server) = metadata_stub(status, body).await;
        let mut env = task_env(&moto, "wiki-config", "", web.path());
        set(&mut env, "ECS_CONTAINER_METADATA_URI_V4", &meta);
        set(&mut env, "APACHE_COMMAND", &stub.display().to_string());
        let run = run_boot(&[], &env, LONG).await;
        server.abort();
        assert_eq!(run.code, Some(1), "{want}");
        let logs = run.logs();
        assert!(logs.contains(want), "{want}: {logs}");
        assert!(!logs.contains("apache-stub"), "Apache started: {logs}");
    }

    // An endpoint that does not answer: a bounded number of tries, then a clear refusal.
    let closed = wikiops_tests::free_port();
    let mut env = task_env(&moto, "wiki-config", "", web.path());
    set(
        &mut env,
        "ECS_CONTAINER_METADATA_URI_V4",
        &format!("http://127.0.0.1:{closed}/v4/x"),
    );
    set(&mut env, "APACHE_COMMAND", &stub.display().to_string());
    let started = Instant::now();
    let run = run_boot(&[], &env, LONG).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.logs()
            .contains("unreachable: ECS task metadata endpoint after 5 attempts"),
        "{}",
        run.logs()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn the_database_wait_is_bounded_and_verifies_tls() {
    let (moto, db) = peers_with_example_config("wiki-config").await;
    let web = open_tempdir();
    let scratch = tempfile::tempdir().unwrap();
    let stub = apache_stub(scratch.path());

    // Nothing listens: refused after DB_WAIT_SECONDS, with the cause.
    let mut env = task_env(&moto, "wiki-config", "", web.path());
    set(&mut env, "DB_PORT", &wikiops_tests::free_port().to_string());
    set(&mut env, "DB_WAIT_SECONDS", "3");
    set(&mut env, "APACHE_COMMAND", &stub.display().to_string());
    let started = Instant::now();
    let run = run_boot(&[], &env, LONG).await;
    let took = started.elapsed();
    assert_eq!(run.code, Some(1));
    assert!(
        run.logs().contains("not ready after 3 tries"),
        "{}",
        run.logs()
    );
    assert!(run.logs().contains("database not ready"), "{}", run.logs());
    // Bounded by DB_WAIT_SECONDS (3 s of sleeps), not the default 180 s: the program reports
    // the time it waited (process start and the S3 listing are outside the wait).
    let waited: u64 = run
        .logs()
        .split("not ready after 3 tries in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the wait's duration");
    assert!((3..=6).contains(&waited), "waited {waited} s");
    assert!(took < LONG, "{took:?}");

    // A server whose certificate another CA signed is not trusted.
    let other = wikiops_tests::tls::Ca::new("someone else");
    let other_ca = scratch.path().join("other-ca.pem");
    std::fs::write(&other_ca, &other.cert_pem).unwrap();
    set(&mut env, "DB_PORT", &db.port.to_string());
    set(&mut env, "DB_PASSWORD", &db.admin_password);
    set(&mut env, "DB_CA_BUNDLE", &other_ca.display().to_string());
    set(&mut env, "DB_WAIT_SECONDS", "1");
    let run = run_boot(&[], &env, LONG).await;
    assert_eq!(run.code, Some(1));
    assert!(!run.logs().contains("apache-stub"));

    // The database answers but the schema task has not installed MediaWiki yet: not ready.
    set(&mut env, "DB_CA_BUNDLE", &db.ca_path.display().to_string());
    let run = run_boot(&[], &env, LONG).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.logs()
            .contains("MediaWiki's tables are not installed yet"),
        "{}",
        run.logs()
    );
    assert!(!run.logs().contains("apache-stub"));

    // Wrong password: the server's own error, never the password.
    set(&mut env, "DB_PASSWORD", "wrong-s3cr3t");
    let run = run_boot(&[], &env, LONG).await;
    assert_eq!(run.code, Some(1));
    assert!(run.logs().contains("server error 1045"), "{}", run.logs());
    assert!(!run.logs().contains("wrong-s3cr3t"));

    // A maintenance script that hangs is killed after SCHEMA_TIMEOUT_SECONDS, and the schema
    // lock goes with the connection.
    let hang = scratch.path().join("php-hangs");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 120\n").unwrap();
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
    set(&mut env, "DB_PASSWORD", &db.admin_password);
    set(&mut env, "PHP_COMMAND", &hang.display().to_string());
    set(&mut env, "SCHEMA_TIMEOUT_SECONDS", "2");
    let started = Instant::now();
    let run = run_boot(&["schema"], &env, LONG).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.logs()
            .contains("maintenance/install.php did not finish within 2 s (killed)"),
        "{}",
        run.logs()
    );
    assert!(started.elapsed() < LONG);
    let mut conn = db.admin().await;
    let free: Option<Option<i64>> = conn
        .query_first("SELECT IS_FREE_LOCK('wikiops-schema:wiki')")
        .await
        .unwrap();
    assert_eq!(free.flatten(), Some(1), "the schema lock was released");
    conn.disconnect().await.unwrap();
}

/// Every version (oldest last as S3 lists them) of `key`, and whether a delete marker is current.
async fn versions_of(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> (Vec<String>, bool) {
    let out = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(key)
        .send()
        .await
        .expect("ListObjectVersions");
    let versions = out
        .versions()
        .iter()
        .filter_map(|v| v.version_id().map(str::to_string))
        .collect();
    let deleted = out
        .delete_markers()
        .iter()
        .any(|m| m.is_latest() == Some(true));
    (versions, deleted)
}

async fn body_of(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("GetObject");
    out.body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec()
}

#[tokio::test]
async fn schema_seeds_the_example_into_a_fresh_prefix_once_and_never_again() {
    let moto = Moto::start().await;
    let s3 = moto.s3().await;
    bucket_with(&moto, "wiki-config", &[]).await;
    moto.versioned_bucket("wiki-config")
        .await
        .expect("versioning");
    let examples = wikiops_tests::paths::root().join("wiki/config");
    let key = "prod/LocalSettings.php";

    // A fresh stack: two tasks' schema steps at once. The database is unreachable, so each
    // stops after the seed and the pull; the seed is what is checked.
    let web = [open_tempdir(), open_tempdir()];
    // The image bundles one extension and one skin (a folder each; a file is not one).
    for w in &web {
        std::fs::create_dir_all(w.path().join("extensions/Cite")).unwrap();
        std::fs::create_dir_all(w.path().join("skins/Vector")).unwrap();
        std::fs::write(w.path().join("extensions/README"), "").unwrap();
    }
    let envs: Vec<_> = web
        .iter()
        .map(|w| {
            let mut env = task_env(&moto, "wiki-config", "prod", w.path());
            set(&mut env, "CONFIG_SEED_DIR", &examples.display().to_string());
            set(&mut env, "DB_WAIT_SECONDS", "1");
            env
        })
        .collect();
    let (a, b) = tokio::join!(
        run_boot(&["schema"], &envs[0], LONG),
        run_boot(&["schema"], &envs[1], LONG)
    );
    for run in [&a, &b] {
        assert!(
            run.logs().contains("configuration pulled"),
            "{}",
            run.logs()
        );
    }
    let (versions, _) = versions_of(&s3, "wiki-config", key).await;
    assert_eq!(
        versions.len(),
        1,
        "created once, however many tasks seed: {versions:?}"
    );
    assert_eq!(body_of(&s3, "wiki-config", key).await, LOCAL_SETTINGS);
    // What the image bundles is published for config-redeploy's check.
    let list: serde_json::Value =
        serde_json::from_slice(&body_of(&s3, "wiki-config", "prod/.wikiops/image.json").await)
            .unwrap();
    assert_eq!(
        list,
        serde_json::json!({"extensions": ["Cite"], "skins": ["Vector"]})
    );
    assert!(
        a.logs().contains("example configuration seeded")
            ^ b.logs().contains("example configuration seeded"),
        "exactly one task uploads:\n{}\n{}",
        a.logs(),
        b.logs()
    );
    for w in &web {
        assert_eq!(
            std::fs::read(w.path().join("LocalSettings.php")).unwrap(),
            LOCAL_SETTINGS
        );
    }

    // The operator's edit is never replaced by a later deployment's seed.
    let edited = b"<?php // the operator's own\n";
    s3.put_object()
        .bucket("wiki-config")
        .key(key)
        .body(edited.to_vec().into())
        .send()
        .await
        .expect("PutObject");
    let run = run_boot(&["schema"], &envs[0], LONG).await;
    assert!(
        run.logs().contains("already used: no seed"),
        "{}",
        run.logs()
    );
    assert_eq!(body_of(&s3, "wiki-config", key).await, edited);
    assert_eq!(versions_of(&s3, "wiki-config", key).await.0.len(), 2);

    // Nor is a prefix the operator emptied on purpose filled again.
    s3.delete_object()
        .bucket("wiki-config")
        .key(key)
        .send()
        .await
        .expect("DeleteObject");
    let run = run_boot(&["schema"], &envs[0], LONG).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.logs().contains("already used: no seed"),
        "{}",
        run.logs()
    );
    assert!(run.logs().contains("is missing"), "{}", run.logs());
    let (versions, deleted) = versions_of(&s3, "wiki-config", key).await;
    assert_eq!((versions.len(), deleted), (2, true));

    // serve and jobs never seed: only the schema step (the first container of a web task) does.
    bucket_with(&moto, "fresh", &[]).await;
    let mut env = task_env(&moto, "fresh", "prod", web[0].path());
    set(&mut env, "CONFIG_SEED_DIR", &examples.display().to_string());
    let run = run_boot(&[], &env, LONG).await;
    assert_eq!(run.code, Some(1));
    assert!(
        versions_of(&s3, "fresh", key).await.0.is_empty(),
        "{}",
        run.logs()
    );
}

#[tokio::test]
async fn the_wiki_user_is_created_right_under_no_backslash_escapes() {
    let (moto, db) = tokio::join!(Moto::start(), MariaDb::start());
    bucket_with(
        &moto,
        "wiki-config",
        &[("LocalSettings.php", LOCAL_SETTINGS)],
    )
    .await;
    let mut conn = db.admin().await;
    conn.query_drop("SET GLOBAL sql_mode = CONCAT(@@GLOBAL.sql_mode, ',NO_BACKSLASH_ESCAPES')")
        .await
        .unwrap();
    // MediaWiki's tables exist: the schema step is `update.php`, here a no-op PHP.
    conn.query_drop("CREATE TABLE wiki.page (page_id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();

    // Quotes, backslashes and surrounding spaces: the password PHP will read, byte for byte.
    let password = " it's a \\\"pass\\word\\' ";
    let web = open_tempdir();
    let mut env = task_env(&moto, "wiki-config", "", web.path());
    set(&mut env, "DB_PORT", &db.port.to_string());
    set(&mut env, "DB_CA_BUNDLE", &db.ca_path.display().to_string());
    set(&mut env, "DB_USER", "wiki_app");
    set(&mut env, "DB_PASSWORD", password);
    set(&mut env, "DB_ADMIN_USER", &db.admin_user);
    set(&mut env, "DB_ADMIN_PASSWORD", &db.admin_password);
    set(&mut env, "PHP_COMMAND", "true");
    let run = run_boot(&["schema"], &env, LONG).await;
    assert_eq!(run.code, Some(0), "{}", run.logs());
    assert!(run.logs().contains("NoBackslash"), "{}", run.logs());
    assert!(
        !run.logs().contains("pass\\word"),
        "the password reached the log"
    );

    let mut wiki = db
        .try_connect("wiki_app", password)
        .await
        .expect("the wiki user logs in with exactly the password it was given");
    let mode: String = wiki
        .query_first("SELECT @@SESSION.sql_mode")
        .await
        .unwrap()
        .unwrap();
    assert!(mode.contains("NO_BACKSLASH_ESCAPES"), "{mode}");
    wiki.disconnect().await.unwrap();
    assert!(
        db.try_connect("wiki_app", password.trim()).await.is_err(),
        "a trimmed password is another password"
    );
}
