//! End to end on a real MediaWiki: Debian's `mediawiki` package (1.39) served by a
//! test-owned Apache with `mod_php`, the bench MariaDB (TLS), moto S3 holding
//! `wiki/config/LocalSettings.php`, and the real `wiki-boot` doing what the image's `CMD`
//! does. The Apache and PHP settings are the files the Dockerfile installs
//! (`wiki/apache/wikiops.conf`, `wiki/php/wikiops.ini`).
//!
//! Two `wiki-boot schema` runs at once: one installs the wiki, the other waits for the lock
//! and only upgrades; `wiki-boot`
//! (serve) pulls the config, reads the task metadata stub, waits for the database and execs
//! Apache; the test then talks to the wiki as the load balancer would (X-Forwarded-For,
//! X-Forwarded-Proto: https, Host of `WIKI_SERVER`): siteinfo, login with the installer's
//! administrator, an edit read back, an upload larger than PHP's default limit landing on
//! the "EFS" directory, the job queue drained by `wiki-boot jobs`, SIGTERM reaching Apache.

#[path = "wiki_support.rs"]
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::*;
use wikiops_tests::http::{Http, Response, multipart};
use wikiops_tests::{MariaDb, Moto};

const LOCAL_SETTINGS: &[u8] = include_bytes!("../../wiki/config/LocalSettings.php");
const ADMIN_PASSWORD: &str = "e2e-Admin-pass-7f3c9a1d";
const CLIENT_IP: &str = "203.0.113.7";
const HOST: &str = "wiki.test";
const WWW_DATA: u32 = 33;

/// A web root like Debian's /var/lib/mediawiki (links to the code) with the "EFS" images/
/// directory and a local cache/ owned by www-data, as in the image.
fn web_root(dir: &Path) -> PathBuf {
    let root = dir.join("html");
    std::fs::create_dir(&root).unwrap();
    let mediawiki = wikiops_tests::wiki::mediawiki();
    for e in std::fs::read_dir(&mediawiki).expect("Debian's mediawiki package is installed") {
        let e = e.unwrap();
        let name = e.file_name();
        if ["LocalSettings.php", "images", "cache"]
            .iter()
            .any(|n| name == *n)
        {
            continue;
        }
        std::os::unix::fs::symlink(e.path(), root.join(&name)).unwrap();
    }
    for d in ["images", "cache"] {
        let p = root.join(d);
        std::fs::create_dir(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    }
    root
}

/// The wiki's answer; Apache must answer within two minutes.
fn answer(r: Result<Response, String>) -> Response {
    r.unwrap_or_else(|e| panic!("no answer from the wiki: {e}"))
}

/// A PNG of random pixels stored without compression: about 3.2 MB, over PHP's default
/// upload_max_filesize (2M), so it goes through only with wiki/php/wikiops.ini in effect.
fn big_png(path: &Path) {
    let script = r#"
import os, struct, sys, zlib
w, h = 1040, 1024
raw = b"".join(b"\x00" + os.urandom(w * 3) for _ in range(h))
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
"#;
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .status()
        .expect("python3");
    assert!(status.success());
}

fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Stops whatever is left of the test's Apache (only processes started with its config).
struct ApacheGuard(String);

impl Drop for ApacheGuard {
    fn drop(&mut self) {
        for pid in processes_mentioning(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

#[tokio::test]
async fn boot_installs_and_serves_a_real_mediawiki() {
    let (moto, db) = tokio::join!(Moto::start(), MariaDb::start());
    bucket_with(
        &moto,
        "wiki-config",
        &[
            ("prod/LocalSettings.php", LOCAL_SETTINGS),
            ("prod/.wikiops/last-good/LocalSettings.php", b"<?php exit;"),
        ],
    )
    .await;

    let dir = open_tempdir();
    let root = web_root(dir.path());
    let port = wikiops_tests::free_port();
    let conf =
        wikiops_tests::wiki::apache_conf(dir.path(), &root, port, HOST).expect("apache conf");
    let _guard = ApacheGuard(conf.display().to_string());
    let (meta, _server) = metadata_stub(200, fargate_task().to_string()).await;

    // As the template sets them: the web and jobs tasks get the wiki's own user (created by the
    // schema task); only the schema task gets the admin (the RDS master user).
    let wiki_password = format!("wiki-{}", uuid::Uuid::new_v4().simple());
    let mut env = task_env(&moto, "wiki-config", "prod", &root);
    for (k, v) in [
        ("DB_PORT", db.port.to_string()),
        ("DB_USER", "wiki".to_string()),
        ("DB_PASSWORD", wiki_password.clone()),
        ("DB_CA_BUNDLE", db.ca_path.display().to_string()),
        ("DB_WAIT_SECONDS", "30".to_string()),
        // Well inside the test's own time limit, so wiki-boot stops a hung script itself.
        ("SCHEMA_TIMEOUT_SECONDS", "200".to_string()),
        ("JOBS_MAX_SECONDS", "60".to_string()),
        ("WIKI_NAME", "Wikiops E2E".to_string()),
        ("WIKI_ADMIN_USER", "Admin".to_string()),
        ("WIKI_ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
        ("WIKI_CACHE_DIR", root.join("cache").display().to_string()),
        // Debian's MediaWiki finds its code in /usr/share/mediawiki; the config is ours.
        (
            "MW_CONFIG_FILE",
            root.join("LocalSettings.php").display().to_string(),
        ),
        // The image installs wikiops.ini into PHP's conf.d; here it is scanned after Debian's.
        (
            "PHP_INI_SCAN_DIR",
            format!(
                ":{}",
                wikiops_tests::paths::root().join("wiki/php").display()
            ),
        ),
        ("ECS_CONTAINER_METADATA_URI_V4", meta.clone()),
        (
            "APACHE_COMMAND",
            format!("apache2 -f {} -DFOREGROUND", conf.display()),
        ),
    ] {
        set(&mut env, k, &v);
    }

    let mut schema_env = env.clone();
    set(&mut schema_env, "DB_ADMIN_USER", &db.admin_user);
    set(&mut schema_env, "DB_ADMIN_PASSWORD", &db.admin_password);

    // --- schema: two deployments' runs at once on an empty database: the lock lets one install
    // while the other waits, then finds the tables and only upgrades ------------------------
    let limit = Duration::from_secs(240);
    let (a, b) = tokio::join!(
        run_boot(&["schema"], &schema_env, limit),
        run_boot(&["schema"], &schema_env, limit)
    );
    for run in [&a, &b] {
        assert_eq!(run.code, Some(0), "schema run failed:\n{}", run.logs());
        for secret in [
            db.admin_password.as_str(),
            wiki_password.as_str(),
            ADMIN_PASSWORD,
            "wiki-s3cr3t-key",
        ] {
            assert!(!run.logs().contains(secret), "a secret reached the log");
        }
    }
    let (install, upgrade) = if a.logs().contains("has_tables=false") {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(
        install.logs().contains("has_tables=false"),
        "{}",
        install.logs()
    );
    assert!(
        upgrade.logs().contains("has_tables=true"),
        "one run installs, the other upgrades:\n{}",
        upgrade.logs()
    );
    assert!(
        !upgrade.logs().contains("install.php"),
        "{}",
        upgrade.logs()
    );
    let mut conn = db.admin().await;
    let tables: Vec<String> = conn
        .query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'wiki'")
        .await
        .unwrap();
    for t in ["page", "revision", "user", "objectcache", "job"] {
        assert!(tables.iter().any(|x| x == t), "no {t} table: {tables:?}");
    }
    // The wiki's user may change data, not the schema.
    let grants: Vec<String> = conn.query("SHOW GRANTS FOR 'wiki'@'%'").await.unwrap();
    let on_wiki = grants
        .iter()
        .find(|g| g.contains("`wiki`.*"))
        .unwrap_or_else(|| panic!("no grant on the wiki database: {grants:?}"));
    assert!(
        on_wiki.contains("SELECT, INSERT, UPDATE, DELETE"),
        "{on_wiki}"
    );
    for ddl in ["ALL PRIVILEGES", "CREATE,", "ALTER", "DROP"] {
        assert!(!on_wiki.contains(ddl), "{on_wiki}");
    }

    // --- serve: boot execs Apache -------------------------------------------------------------
    let mut child = boot_command(&[], &env)
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start wiki-boot");
    let boot_pid = child.id().expect("pid");
    wikiops_tests::wait_for_port(port, Duration::from_secs(60), "Apache (via wiki-boot)").await;
    let pid_file = dir.path().join("apache.pid");
    let started = Instant::now();
    while !pid_file.exists() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let apache_pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("Apache wrote its pid file")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(apache_pid, boot_pid, "wiki-boot execs Apache: same process");

    // As the load balancer forwards a request, and straight to Apache (no ALB).
    let origin = format!("http://127.0.0.1:{port}");
    let mut c = Http::new(&origin)
        .with_header("host", HOST)
        .with_header("x-forwarded-for", CLIENT_IP)
        .with_header("x-forwarded-proto", "https")
        .with_header("x-forwarded-port", "443");
    let mut direct = Http::new(&origin).with_header("host", HOST);
    let site = answer(
        c.get("/api.php?action=query&meta=siteinfo&siprop=general|statistics&format=json")
            .await,
    );
    assert_eq!(site.status, 200, "{}", site.text());
    assert_eq!(
        site.header("x-served-by"),
        Some(format!("{TASK_ID} {TASK_AZ}").as_str()),
        "PHP sees the task identity"
    );
    let site = site.json().unwrap();
    let general = &site["query"]["general"];
    assert!(general.is_object(), "{site}");
    assert_eq!(general["sitename"], "Wikiops E2E");
    assert_eq!(
        general["server"], "https://wiki.test",
        "$wgServer from WIKI_SERVER"
    );
    assert_eq!(general["maxuploadsize"], 100 * 1024 * 1024);
    // the MediaWiki this run was given (Debian's 1.39, or WIKIOPS_MEDIAWIKI's, e.g. 1.43)
    let version = wikiops_tests::wiki::mediawiki_version().expect("MW_VERSION");
    assert_eq!(general["generator"], format!("MediaWiki {version}"));
    eprintln!("wiki_e2e: {}", general["generator"]);

    // The client's address from X-Forwarded-For (the proxy is in VPC_CIDR).
    let me = c
        .api_get(&[("action", "query"), ("meta", "userinfo")])
        .await
        .unwrap();
    assert_eq!(me["query"]["userinfo"]["name"], CLIENT_IP, "{me}");

    // Plain HTTP straight to Apache (no ALB): redirected to the https origin.
    let plain = answer(direct.get("/index.php?title=Main_Page").await);
    assert!(
        matches!(plain.status, 301 | 302),
        "{}: {:?}",
        plain.status,
        plain.headers
    );
    assert!(
        plain
            .header("location")
            .is_some_and(|l| l.starts_with("https://wiki.test/")),
        "{:?}",
        plain.headers
    );

    // --- log in (sessions in the database), edit, read back --------------------------------
    let login_token = c.token("login").await.unwrap();
    let login = c
        .api_post(&[
            ("action", "clientlogin"),
            ("username", "Admin"),
            ("password", ADMIN_PASSWORD),
            ("logintoken", &login_token),
            ("loginreturnurl", "https://wiki.test/"),
        ])
        .await
        .unwrap();
    assert_eq!(login["clientlogin"]["status"], "PASS", "{login}");
    let sessions: i64 = conn
        .query_first("SELECT COUNT(*) FROM wiki.objectcache WHERE keyname LIKE '%MWSession%'")
        .await
        .unwrap()
        .unwrap();
    assert!(sessions > 0, "sessions live in the shared database cache");

    let csrf = c.token("csrf").await.unwrap();
    let text = "Written through the API by the wikiops end-to-end test.";
    let edit = c
        .api_post(&[
            ("action", "edit"),
            ("title", "Wikiops E2E"),
            ("text", text),
            ("summary", "e2e"),
            ("token", &csrf),
        ])
        .await
        .unwrap();
    assert_eq!(edit["edit"]["result"], "Success", "{edit}");
    let read = c
        .api_get(&[
            ("action", "query"),
            ("prop", "revisions"),
            ("rvprop", "content|user"),
            ("rvslots", "main"),
            ("titles", "Wikiops E2E"),
            ("formatversion", "2"),
        ])
        .await
        .unwrap();
    let rev = &read["query"]["pages"][0]["revisions"][0];
    assert_eq!(rev["slots"]["main"]["content"], text, "{read}");
    assert_eq!(rev["user"], "Admin", "{read}");

    // --- an upload over PHP's default 2M limit, onto the "EFS" directory --------------------
    let png = dir.path().join("big.png");
    big_png(&png);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 3 * 1024 * 1024);
    let mut form = multipart::Form::default();
    for (k, v) in [
        ("action", "upload"),
        ("filename", "Wikiops-e2e.png"),
        ("ignorewarnings", "1"),
        ("format", "json"),
        ("token", csrf.as_str()),
    ] {
        form.add_text(k, v.to_string());
    }
    form.add_file("file", &png).unwrap();
    let up = answer(c.post_multipart("/api.php", form).await);
    assert_eq!(up.status, 200, "{}", up.text());
    let up = up.json().unwrap();
    assert_eq!(up["upload"]["result"], "Success", "{up}");
    let stored: Vec<String> = files_under(&root.join("images"))
        .into_iter()
        .filter(|f| f.ends_with("Wikiops-e2e.png") && !f.starts_with("thumb"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let meta_file = std::fs::metadata(root.join("images").join(&stored[0])).unwrap();
    assert_eq!(meta_file.len(), bytes.len() as u64);
    assert_eq!(meta_file.uid(), WWW_DATA, "uploads are owned by www-data");
    // Uploaded files are never run as PHP.
    std::fs::write(root.join("images/probe.php"), "<?php echo 'ran'.'-php';").unwrap();
    let probe = answer(c.get("/images/probe.php").await);
    assert!(!probe.text().contains("ran-php"), "PHP ran in images/");

    // --- jobs: queued by the edit and the upload, run only by `wiki-boot jobs` ---------------
    let queued: i64 = conn
        .query_first("SELECT COUNT(*) FROM wiki.job")
        .await
        .unwrap()
        .unwrap();
    assert!(queued > 0, "web requests run no jobs ($wgJobRunRate = 0)");
    let run = run_boot(&["jobs"], &env, Duration::from_secs(200)).await;
    assert_eq!(run.code, Some(0), "{}", run.logs());
    let left: i64 = conn
        .query_first("SELECT COUNT(*) FROM wiki.job WHERE job_token = ''")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left, 0, "the job run drained the queue");
    conn.disconnect().await.unwrap();

    // --- SIGTERM (what ECS sends) reaches Apache, which stops with its children --------------
    let status = std::process::Command::new("kill")
        .args(["-TERM", &boot_pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("Apache stopped after SIGTERM")
        .unwrap();
    let started = Instant::now();
    while !processes_mentioning(&conf.display().to_string()).is_empty()
        && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        processes_mentioning(&conf.display().to_string()).is_empty(),
        "Apache children left behind"
    );
    eprintln!("Apache exited with {exited:?} after SIGTERM");
}
