//! The recovery rehearsal on a real MediaWiki (the image's line, 1.43): pages and uploads
//! added, a recovery point taken by efs-backup's real binary, then pages edited and deleted and
//! an upload deleted; the point restored beside the live wiki, and a second wiki booted on the
//! restored pair serves the earlier pages and byte-identical uploads, with nothing missing by
//! MediaWiki's own `findMissingFiles.php`, the live wiki untouched. Then the point restored in
//! place: the live wiki serves the earlier pages and uploads.
//!
//! What is emulated: moto answers the RDS API (the instance, the manual DB snapshot, the
//! instance restored from it); behind it, a stand-in for RDS's storage made of MariaDB's own
//! tools: when moto reports the point's DB snapshot, the wiki database is dumped
//! (`mariadb-dump --single-transaction`, nothing writes to the wiki in between here), and when
//! moto reports the instance restored beside, a second MariaDB server (TLS, as RDS) is started
//! and the dump loaded into it; when efs-backup has renamed the instances for a restore in
//! place, the dump is loaded into the server behind the live name. The uploads folder stands in
//! for EFS, as in the other tests.

#[path = "wiki_support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};
use support::*;
use wikiops_tests::http::Http;
use wikiops_tests::{Lambda, MariaDb, wiki};

/// A PNG of `n` bytes of pixels (distinct per seed).
fn png(seed: u8, n: usize) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    out
}

/// `mariadb-dump` or `mariadb` against `db` as its admin, over TLS.
fn client(program: &str, db: &MariaDb) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    c.args([
        "--protocol=TCP",
        "-h127.0.0.1",
        &format!("-P{}", db.port),
        &format!("-u{}", db.admin_user),
        &format!("-p{}", db.admin_password),
        "--ssl",
        &format!("--ssl-ca={}", db.ca_path.display()),
    ]);
    c
}

/// The stand-in's DB snapshot: the wiki database, dumped.
fn dump(db: &MariaDb, to: &Path) {
    let out = client("mariadb-dump", db)
        .args(["--single-transaction", "--databases", "wiki"])
        .output()
        .expect("mariadb-dump");
    assert!(
        out.status.success(),
        "mariadb-dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(to, out.stdout).unwrap();
}

/// Loads a dump into `db` (its tables replace the ones there).
fn load(db: &MariaDb, dump: &Path) {
    let out = client("mariadb", db)
        .stdin(std::fs::File::open(dump).unwrap())
        .output()
        .expect("mariadb");
    assert!(
        out.status.success(),
        "loading the dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stand-in's restored instance: a new server holding the dump.
async fn restored_instance(dump: &Path) -> MariaDb {
    let db = MariaDb::start().await;
    load(&db, dump);
    db
}

/// A page's wikitext as the wiki serves it.
async fn raw(http: &mut Http, title: &str) -> (u16, String) {
    let r = http
        .get(&format!("/index.php?title={title}&action=raw"))
        .await
        .unwrap();
    (r.status, r.text().trim_end().to_string())
}

/// An upload's bytes as the wiki serves them (`None`: the wiki has no such file).
async fn served_file(http: &mut Http, name: &str) -> Option<Vec<u8>> {
    let info = http
        .api_get(&[
            ("action", "query"),
            ("titles", &format!("File:{name}")),
            ("prop", "imageinfo"),
            ("iiprop", "url"),
        ])
        .await
        .unwrap();
    let page = info["query"]["pages"]
        .as_object()
        .and_then(|p| p.values().next())
        .cloned()
        .unwrap_or_default();
    let url = page["imageinfo"][0]["url"].as_str()?;
    let (_, path) = url.split_once("/images/")?;
    let r = http.get(&format!("/images/{path}")).await.unwrap();
    (r.status == 200).then(|| r.body.to_vec())
}

#[tokio::test]
async fn a_recovery_point_boots_beside_the_live_wiki_with_its_pages_and_uploads() {
    let code = wiki::mediawiki();
    assert!(
        wiki::php_module().is_some() && code.join("index.php").exists(),
        "Apache's mod_php and MediaWiki are missing: run scripts/setup"
    );
    let (moto, db) = peers_with_example_config("wiki-config").await;
    let uploads = open_tempdir();
    let images = uploads.path().join("images");
    let live = revision(&code, &images, &moto, &db);
    schema_step(&live).await;

    // --- the wiki at the recovery point: two pages, two uploads ---------------------------------
    let kept_v1 = "First version, at the recovery point.";
    let doomed = "A page deleted after the recovery point.";
    maintenance(
        &live,
        "edit.php",
        &["--summary=rp", "Kept_page"],
        Some(kept_v1),
    )
    .await;
    maintenance(
        &live,
        "edit.php",
        &["--summary=rp", "Doomed_page"],
        Some(doomed),
    )
    .await;
    let scratch = open_tempdir();
    let (kept_png, doomed_png) = (png(1, 4000), png(2, 6000));
    std::fs::write(scratch.path().join("Kept.png"), &kept_png).unwrap();
    std::fs::write(scratch.path().join("Doomed.png"), &doomed_png).unwrap();
    maintenance(
        &live,
        "importImages.php",
        &[&scratch.path().display().to_string()],
        None,
    )
    .await;
    let live_web = serve(&live).await;

    // --- the recovery point: efs-backup's real binary, RDS in moto ------------------------------
    let rds = moto.rds().await;
    rds.create_db_instance()
        .db_instance_identifier("wiki-db")
        .db_instance_class("db.t4g.micro")
        .engine("mysql")
        .master_username(&db.admin_user)
        .master_user_password(&db.admin_password)
        .allocated_storage(20)
        .send()
        .await
        .unwrap();
    moto.versioned_bucket("wiki-backup").await.unwrap();
    let mut env = moto.env();
    env.extend(
        [
            ("SOURCE_DIR", images.to_str().unwrap()),
            ("BACKUP_BUCKET", "wiki-backup"),
            ("DB_INSTANCE_ID", "wiki-db"),
            ("CONFIG_BUCKET", "wiki-config"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let efs = Lambda::start("efs-backup", env).await;
    let rp = efs
        .invoke(json!({"action":"recovery-point"}))
        .await
        .unwrap();
    assert_eq!(rp["status"], "complete", "{rp}");
    let snapshot = rp["recovery_point"]["database"]["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let dumps = open_tempdir();
    let dump_file = dumps.path().join(format!("{snapshot}.sql"));
    dump(&db, &dump_file);

    // --- the wiki moves on: an edit, a page and an upload deleted -------------------------------
    maintenance(
        &live,
        "edit.php",
        &["--summary=later", "Kept_page"],
        Some("Second version, after the point."),
    )
    .await;
    maintenance(
        &live,
        "deleteBatch.php",
        &["-r", "after the recovery point"],
        Some("Doomed_page\nFile:Doomed.png\n"),
    )
    .await;
    let mut live_http = Http::new(format!("http://127.0.0.1:{}", live.port));
    assert_eq!(raw(&mut live_http, "Doomed_page").await.0, 404);
    assert_eq!(served_file(&mut live_http, "Doomed.png").await, None);

    // --- restore beside: a new instance and a fresh folder; a second wiki on the pair ----------
    let started = Instant::now();
    let beside = efs
        .invoke(json!({"action":"restore-beside","recovery_point":"latest"}))
        .await
        .unwrap();
    assert_eq!(beside["status"], "complete", "{beside}");
    let instance = beside["db_instance"].as_str().unwrap();
    let described = rds
        .describe_db_instances()
        .db_instance_identifier(instance)
        .send()
        .await
        .unwrap();
    assert_eq!(described.db_instances().len(), 1);
    let db2 = restored_instance(&dump_file).await;
    let files_dir = PathBuf::from(beside["files_dir"].as_str().unwrap());
    let pair = revision(&code, &files_dir, &moto, &db2);
    let logs = schema_step(&pair).await;
    assert!(
        logs.contains("has_tables=true"),
        "the restored pages, not a new wiki:\n{logs}"
    );
    let pair_web = serve(&pair).await;
    let mut http = Http::new(format!("http://127.0.0.1:{}", pair.port));
    assert_eq!(
        raw(&mut http, "Kept_page").await,
        (200, kept_v1.to_string())
    );
    let recovered = started.elapsed();
    eprintln!(
        "time to recover (restore-beside request -> first page served from the restored pair): {:.1} s",
        recovered.as_secs_f64()
    );
    assert_eq!(
        raw(&mut http, "Doomed_page").await,
        (200, doomed.to_string())
    );
    assert_eq!(
        served_file(&mut http, "Kept.png").await,
        Some(kept_png.clone())
    );
    assert_eq!(
        served_file(&mut http, "Doomed.png").await,
        Some(doomed_png.clone())
    );
    let missing = maintenance(&pair, "findMissingFiles.php", &[], None).await;
    assert_eq!(
        missing.trim(),
        "",
        "findMissingFiles.php on the restored pair"
    );

    // The live wiki is untouched.
    assert_eq!(
        raw(&mut live_http, "Kept_page").await,
        (200, "Second version, after the point.".to_string())
    );
    assert_eq!(served_file(&mut live_http, "Doomed.png").await, None);
    let listed: Value = efs.invoke(json!({"action":"list"})).await.unwrap();
    assert_eq!(listed["recovery_points"].as_array().unwrap().len(), 1);
    pair_web.stop().await;

    // --- restore in place: the point back under the live names ----------------------------------
    let id = rp["recovery_point"]["id"].as_str().unwrap();
    let in_place = efs
        .invoke(json!({"action":"restore-in-place","recovery_point":id,"confirm":id}))
        .await
        .unwrap();
    assert_eq!(in_place["status"], "complete", "{in_place}");
    // The stand-in: the instance under the live name now holds the point's database. The
    // rotation the answer asks for redeploys the wiki: its web container starts again.
    assert!(in_place["next"].as_str().unwrap().contains("rotate"));
    load(&db, &dump_file);
    live_web.stop().await;
    let live_web = serve(&live).await;
    let mut live_http = Http::new(format!("http://127.0.0.1:{}", live.port));
    assert_eq!(
        raw(&mut live_http, "Kept_page").await,
        (200, kept_v1.to_string())
    );
    assert_eq!(
        raw(&mut live_http, "Doomed_page").await,
        (200, doomed.to_string())
    );
    assert_eq!(
        served_file(&mut live_http, "Kept.png").await,
        Some(kept_png)
    );
    assert_eq!(
        served_file(&mut live_http, "Doomed.png").await,
        Some(doomed_png)
    );
    let missing = maintenance(&live, "findMissingFiles.php", &[], None).await;
    assert_eq!(
        missing.trim(),
        "",
        "findMissingFiles.php on the wiki restored in place"
    );
    live_web.stop().await;
}
