//! efs-backup through its real binary, against moto S3 (a versioned bucket), with a local
//! directory standing in for the EFS mount.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wikiops_tests::{Lambda, Moto, events};

const BUCKET: &str = "wiki-backup";
const PREFIX: &str = "efs/";

/// One entry of a tree as compared after a restore: kind, mode, mtime, content hash or target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    mtime_ns: i64,
    uid: u32,
    gid: u32,
    content: String,
}

/// Everything under `root` (not following symlinks), keyed by relative path.
fn tree(root: &Path) -> BTreeMap<String, Seen> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, Seen>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            let (kind, content) = if md.is_dir() {
                go(root, &p, out);
                ("dir", String::new())
            } else if md.file_type().is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&p).unwrap().display().to_string(),
                )
            } else {
                (
                    "file",
                    hex::encode(Sha256::digest(std::fs::read(&p).unwrap())),
                )
            };
            out.insert(
                rel,
                Seen {
                    kind,
                    // A symlink's mode is always 0777 on Linux and not settable.
                    mode: md.mode() & 0o7777,
                    mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                    uid: md.uid(),
                    gid: md.gid(),
                    content,
                },
            );
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.to_le_bytes()).to_vec();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    out.truncate(len);
    out
}

/// A MediaWiki-shaped `images/` tree: hashed folders, a symlink, an empty folder, excluded
/// transient folders.
fn wiki_tree(root: &Path) {
    for i in 0..24u64 {
        let h = hex::encode(Sha256::digest(i.to_le_bytes()));
        let rel = format!("{}/{}/File_{i}.png", &h[..1], &h[..2]);
        write(root, &rel, &bytes(i, 500 + (i as usize * 997) % 20_000));
    }
    write(
        root,
        "archive/0/01/20260101000000!Old.png",
        &bytes(99, 1234),
    );
    write(root, "thumb/0/01/Old.png/120px-Old.png", b"thumbnail");
    write(root, "temp/upload.tmp", b"half an upload");
    write(root, "lockdir/lock", b"");
    std::fs::create_dir_all(root.join("deleted")).unwrap();
    std::os::unix::fs::symlink("archive/0/01", root.join("latest-archive")).unwrap();
    std::fs::set_permissions(
        root.join("archive/0/01/20260101000000!Old.png"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

async fn versioned_bucket(moto: &Moto) -> Client {
    moto.versioned_bucket(BUCKET).await.unwrap();
    moto.s3().await
}

fn env(moto: &Moto, source: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = moto.env();
    env.extend(
        [
            ("SOURCE_DIR", source.to_str().unwrap()),
            ("BACKUP_BUCKET", BUCKET),
            ("BACKUP_PREFIX", PREFIX),
            ("UPLOAD_CONCURRENCY", "8"),
            ("DEADLINE_MARGIN_MS", "1000"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    env
}

/// Current objects (latest version not deleted) under `files/`: path → sha256 of content.
async fn mirror(s3: &Client) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let list = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(format!("{PREFIX}files/"))
        .send()
        .await
        .unwrap();
    for o in list.contents() {
        let key = o.key().unwrap();
        let body = s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        let data = body.body.collect().await.unwrap().into_bytes();
        out.insert(
            key.strip_prefix(&format!("{PREFIX}files/"))
                .unwrap()
                .to_string(),
            hex::encode(Sha256::digest(&data)),
        );
    }
    out
}

/// Number of object versions per key under `files/` (delete markers not counted).
async fn versions(s3: &Client) -> HashMap<String, usize> {
    let out = s3
        .list_object_versions()
        .bucket(BUCKET)
        .prefix(format!("{PREFIX}files/"))
        .send()
        .await
        .unwrap();
    let mut n = HashMap::new();
    for v in out.versions() {
        *n.entry(v.key().unwrap().to_string()).or_insert(0) += 1;
    }
    n
}

fn files_of(t: &BTreeMap<String, Seen>) -> BTreeMap<String, String> {
    t.iter()
        .filter(|(_, s)| s.kind == "file")
        .map(|(p, s)| (p.clone(), s.content.clone()))
        .collect()
}

fn without_excluded(mut t: BTreeMap<String, Seen>) -> BTreeMap<String, Seen> {
    t.retain(|p, _| {
        !["thumb", "temp", "lockdir"]
            .iter()
            .any(|x| p == x || p.starts_with(&format!("{x}/")))
    });
    t
}

async fn restore(lambda: &Lambda, snapshot: &str, target: &Path) -> Value {
    lambda
        .invoke(
            json!({"action":"restore","snapshot":snapshot,"target_dir":target.to_str().unwrap()}),
        )
        .await
        .unwrap_or_else(|e| panic!("restore {snapshot}: {e}"))
}

#[tokio::test]
async fn incremental_backups_mirror_the_tree_and_restore_byte_identical() {
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    wiki_tree(&src);
    // A file larger than one part: a multipart upload of 3 parts.
    write(
        &src,
        "f/f0/Big_video.webm",
        &bytes(7, 8 * 1024 * 1024 * 2 + 12345),
    );
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &[])).await;

    // Full backup.
    let first = lambda
        .invoke(events::load("efs-backup-backup"))
        .await
        .unwrap();
    assert_eq!(first["status"], "complete", "{first}");
    let expected = without_excluded(tree(&src));
    let n_files = files_of(&expected).len() as u64;
    assert_eq!(first["files_total"], n_files, "{first}");
    assert_eq!(first["files_uploaded"], n_files, "{first}");
    assert_eq!(first["symlinks_total"], 1);
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(
        mirror(&s3).await,
        files_of(&expected),
        "the bucket mirrors the tree"
    );

    // Unchanged: nothing uploaded (a scheduled event is a backup too).
    let again = lambda
        .invoke(events::load("efs-backup-scheduled"))
        .await
        .unwrap();
    assert_eq!(again["status"], "complete", "{again}");
    assert_eq!(again["files_uploaded"], 0, "{again}");
    assert_eq!(again["bytes_uploaded"], 0, "{again}");
    assert_eq!(again["files_unchanged"], n_files, "{again}");
    assert_eq!(again["previous_snapshot"], first_id.as_str());

    // Modify, add, delete, rename, symlink, empty directory, chmod.
    let t0 = tree(&src);
    write(&src, "archive/0/01/20260101000000!Old.png", b"rewritten");
    write(&src, "9/9a/New_upload.jpg", &bytes(1000, 4321));
    let (first_png, _) = files_of(&t0)
        .into_iter()
        .find(|(p, _)| p.ends_with("File_0.png"))
        .unwrap();
    std::fs::remove_file(src.join(&first_png)).unwrap();
    let (second_png, _) = files_of(&t0)
        .into_iter()
        .find(|(p, _)| p.ends_with("File_1.png"))
        .unwrap();
    std::fs::rename(src.join(&second_png), src.join("f/f0/Renamed.png")).unwrap();
    std::os::unix::fs::symlink("../f/f0/Renamed.png", src.join("deleted/link-to-renamed")).unwrap();
    std::fs::create_dir_all(src.join("e/e1/empty")).unwrap();
    std::fs::set_permissions(
        src.join("f/f0/Big_video.webm"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let third = lambda
        .invoke(events::load("efs-backup-backup"))
        .await
        .unwrap();
    assert_eq!(third["status"], "complete", "{third}");
    // The rewritten file, the new one and the renamed one; chmod needs no upload.
    assert_eq!(third["files_uploaded"], 3, "{third}");
    assert_eq!(third["files_deleted"], 2, "{third}");
    let expected3 = without_excluded(tree(&src));
    assert_eq!(mirror(&s3).await, files_of(&expected3));
    let third_id = third["snapshot_id"].as_str().unwrap().to_string();

    // Both snapshots restore byte-identical: contents, modes, mtimes, owners, symlinks, empty dirs.
    let r1 = dir.path().join("restore-1");
    let out = restore(&lambda, &first_id, &r1).await;
    assert_eq!(out["status"], "complete", "{out}");
    assert_eq!(out["files_restored"], n_files, "{out}");
    assert_eq!(tree(&r1), expected);
    let r3 = dir.path().join("restore-3");
    let out = restore(&lambda, "latest", &r3).await;
    assert_eq!(out["snapshot_id"], third_id.as_str(), "{out}");
    assert_eq!(tree(&r3), expected3);
    assert!(tree(&r3)["e/e1/empty"].kind == "dir");

    // An existing target is never overwritten unless asked; nothing is changed when refused.
    let before = tree(&r1);
    let err = lambda
        .invoke(json!({"action":"restore","snapshot":third_id,"target_dir":r1.to_str().unwrap()}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "Rejected", "{err}");
    assert!(err.error_message.contains("overwrite"), "{err}");
    assert_eq!(tree(&r1), before, "a refused restore changed the target");
    // Sending the same restore again finds everything in place (a resumed restore).
    let out = restore(&lambda, &first_id, &r1).await;
    assert_eq!(out["files_restored"], 0, "{out}");
    assert!(out["already_in_place"].as_u64().unwrap() > 0, "{out}");
    let out = lambda
        .invoke(json!({"action":"restore","snapshot":third_id,"target_dir":r1.to_str().unwrap(),"overwrite":true}))
        .await
        .unwrap();
    assert_eq!(out["status"], "complete", "{out}");
    // Overwrite replaces what differs, and leaves what the snapshot lacks.
    let r1_now = tree(&r1);
    for (p, want) in &expected3 {
        assert_eq!(r1_now.get(p), Some(want), "{p}");
    }
    assert!(r1_now.contains_key(&first_png), "overwrite deleted a file");

    // Restore of some paths only.
    let rp = dir.path().join("restore-part");
    let out = lambda
        .invoke(json!({"action":"restore","snapshot":"latest","target_dir":rp.to_str().unwrap(),"paths":["f/f0"]}))
        .await
        .unwrap();
    let mut want = expected3.clone();
    want.retain(|p, _| p == "f" || p == "f/f0" || p.starts_with("f/f0/"));
    assert!(want.contains_key("f/f0/Renamed.png"));
    assert_eq!(out["files_restored"], want.len() as u64 - 2, "{out}");
    assert_eq!(tree(&rp), want);

    // List and verify.
    let list = lambda
        .invoke(events::load("efs-backup-list"))
        .await
        .unwrap();
    let ids: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{list}");
    assert_eq!(ids[0], third_id, "newest first: {list}");
    assert_eq!(list["latest"], third_id.as_str());
    assert_eq!(
        list["snapshots"][0]["files"],
        files_of(&expected3).len() as u64,
        "{list}"
    );
    let v = lambda
        .invoke(json!({"action":"verify","snapshot":first_id,"sample":1000}))
        .await
        .unwrap();
    assert_eq!(v["checked"], n_files, "{v}");
    assert_eq!(v["failed"], json!([]));

    // Someone overwrites a backed-up object: the snapshot's own version is untouched.
    let key = format!("{PREFIX}files/f/f0/Renamed.png");
    s3.put_object()
        .bucket(BUCKET)
        .key(&key)
        .body(b"corrupt".to_vec().into())
        .send()
        .await
        .unwrap();
    let v = lambda
        .invoke(json!({"action":"verify","snapshot":third_id,"sample":1000}))
        .await
        .unwrap();
    assert_eq!(v["failed"], json!([]), "{v}");

    // EMF metrics were emitted.
    let logs = lambda.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("\"_aws\"") && l.contains("FilesUploaded")),
        "no EMF document: {logs}"
    );
}

#[tokio::test]
async fn resumes_after_a_forced_early_deadline_without_uploading_again() {
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    const N: u64 = 80;
    for i in 0..N {
        write(
            &src,
            &format!("{:x}/{:02x}/F{i}.png", i % 16, i),
            &bytes(i, 64 * 1024),
        );
    }
    // 5 MiB at 1 MiB/s (the limiter lets 1 MiB through at once, so at least 4 s): an invocation
    // with a 2.5 s deadline (1 s margin) cannot finish.
    let lambda = Lambda::start(
        "efs-backup",
        env(
            &moto,
            &src,
            &[
                ("MAX_READ_MIB_PER_SECOND", "1"),
                ("CHECKPOINT_INTERVAL_SECONDS", "1"),
            ],
        ),
    )
    .await;
    let first = lambda
        .invoke_with_deadline(json!({"action":"backup"}), Duration::from_millis(2500))
        .await
        .unwrap();
    assert_eq!(first["status"], "incomplete", "{first}");
    let up1 = first["files_uploaded"].as_u64().unwrap();
    assert!(up1 > 0 && up1 < N, "{first}");
    assert_eq!(
        first["files_remaining"].as_u64().unwrap(),
        N - up1,
        "{first}"
    );
    let list = lambda
        .invoke(events::load("efs-backup-list"))
        .await
        .unwrap();
    assert_eq!(
        list["snapshots"],
        json!([]),
        "no snapshot before completion: {list}"
    );
    assert_eq!(list["in_progress"], first["snapshot_id"]);

    // The continuation (what the Step Functions loop does): same event, finishes.
    let second = lambda
        .invoke_with_deadline(json!({"action":"backup"}), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(second["status"], "complete", "{second}");
    assert_eq!(second["snapshot_id"], first["snapshot_id"], "the same run");
    assert_eq!(
        second["files_uploaded"].as_u64().unwrap(),
        N - up1,
        "{second}"
    );
    assert_eq!(second["files_total"], N);
    let v = versions(&s3).await;
    assert_eq!(v.len() as u64, N);
    assert!(
        v.values().all(|n| *n == 1),
        "a file was uploaded twice: {v:?}"
    );
    let r = dir.path().join("restored");
    restore(&lambda, "latest", &r).await;
    assert_eq!(tree(&r), tree(&src));
}

#[tokio::test]
async fn a_deadline_during_multipart_uploads_aborts_them_and_resumes() {
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    for i in 0..3u64 {
        write(
            &src,
            &format!("v/v{i}/Video_{i}.webm"),
            &bytes(50 + i, 20 * 1024 * 1024),
        );
    }
    // Both slots hold a 20 MiB multipart upload read at 4 MiB/s when the deadline comes.
    let lambda = Lambda::start(
        "efs-backup",
        env(
            &moto,
            &src,
            &[
                ("MAX_READ_MIB_PER_SECOND", "4"),
                ("UPLOAD_CONCURRENCY", "2"),
            ],
        ),
    )
    .await;
    let t = std::time::Instant::now();
    let first = lambda
        .invoke_with_deadline(json!({"action":"backup"}), Duration::from_millis(3000))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(3000),
        "answered after the deadline"
    );
    assert_eq!(first["status"], "incomplete", "{first}");
    assert_eq!(first["files_remaining"], 3, "{first}");
    assert!(
        versions(&s3).await.is_empty(),
        "an interrupted upload was completed"
    );
    let uploads = s3
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "multipart uploads left open: {uploads:?}"
    );
    let second = lambda
        .invoke_with_deadline(json!({"action":"backup"}), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(second["status"], "complete", "{second}");
    assert_eq!(second["files_uploaded"], 3, "{second}");
    let r = dir.path().join("restored");
    restore(&lambda, "latest", &r).await;
    assert_eq!(tree(&r), tree(&src));
}

#[tokio::test]
async fn a_file_changing_while_read_is_retried_then_reported() {
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    write(&src, "a/a1/Stable.png", &bytes(1, 1000));
    // Read at 4 MiB/s (shared), each of these takes over a second to read.
    write(
        &src,
        "b/b1/Always_changing.log",
        &bytes(2, 10 * 1024 * 1024),
    );
    write(&src, "c/c1/Changes_once.webm", &bytes(3, 10 * 1024 * 1024));
    let lambda = Lambda::start(
        "efs-backup",
        env(
            &moto,
            &src,
            &[
                ("MAX_READ_MIB_PER_SECOND", "4"),
                ("UPLOAD_CONCURRENCY", "4"),
            ],
        ),
    )
    .await;
    // One file changes all the time, the other during the first second only (its first read).
    let stop = Arc::new(AtomicBool::new(false));
    let mutator = {
        let stop = stop.clone();
        let always = src.join("b/b1/Always_changing.log");
        let once = src.join("c/c1/Changes_once.webm");
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&always)
                    .unwrap();
                f.set_modified(SystemTime::now()).unwrap();
                if start.elapsed() < Duration::from_millis(1000) {
                    let f = std::fs::OpenOptions::new().write(true).open(&once).unwrap();
                    f.set_modified(SystemTime::now()).unwrap();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    mutator.join().unwrap();
    assert_eq!(out["status"], "complete", "{out}");
    assert_eq!(
        out["changed_during_read"],
        json!(["b/b1/Always_changing.log"]),
        "{out}"
    );
    assert_eq!(out["files_total"], 2, "{out}");
    let v = versions(&s3).await;
    assert_eq!(
        v.get(&format!("{PREFIX}files/b/b1/Always_changing.log")),
        None,
        "an inconsistent read was stored: {v:?}"
    );
    assert_eq!(
        v.get(&format!("{PREFIX}files/c/c1/Changes_once.webm")),
        Some(&1),
        "{v:?}"
    );
    let logs = lambda.logs();
    for f in ["Changes_once.webm", "Always_changing.log"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("file changed while being read") && l.contains(f)),
            "{f} was not retried: {logs}"
        );
    }
    // The one that settled is stored as it is now.
    let r = dir.path().join("restored");
    restore(&lambda, "latest", &r).await;
    let got = tree(&r);
    let want = tree(&src);
    assert_eq!(
        got["c/c1/Changes_once.webm"],
        want["c/c1/Changes_once.webm"]
    );
    assert!(!got.contains_key("b/b1/Always_changing.log"));
}

#[tokio::test]
async fn exclude_rules_skip_transient_folders() {
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    wiki_tree(&src);
    write(
        &src,
        "transcoded/a/ab/Clip.webm/Clip.webm.480p.vp9.webm",
        b"derived",
    );
    write(&src, "a/ab/cache.tmp", b"x");
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &[])).await;
    lambda.invoke(json!({"action":"backup"})).await.unwrap();
    let keys = mirror(&s3).await;
    assert!(
        keys.keys().all(|k| !k.starts_with("thumb/")
            && !k.starts_with("temp/")
            && !k.starts_with("transcoded/")
            && !k.starts_with("lockdir/")),
        "{keys:?}"
    );
    assert!(keys.contains_key("a/ab/cache.tmp"));

    // A custom EXCLUDE replaces the defaults; `*` stays within one folder, `**` crosses them.
    let lambda = Lambda::start(
        "efs-backup",
        env(
            &moto,
            &src,
            &[("EXCLUDE", "**/*.tmp,thumb"), ("BACKUP_PREFIX", "custom/")],
        ),
    )
    .await;
    let dry = lambda
        .invoke(events::load("efs-backup-backup-dry-run"))
        .await
        .unwrap();
    assert_eq!(dry["status"], "dry_run", "{dry}");
    let planned: Vec<&str> = dry["plan"]["upload_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        !planned.contains(&"temp/upload.tmp") && !planned.contains(&"a/ab/cache.tmp"),
        "{dry}"
    );
    assert!(
        planned.iter().any(|p| p.starts_with("transcoded/")),
        "{dry}"
    );
    assert!(planned.iter().all(|p| !p.starts_with("thumb/")), "{dry}");
    let list = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("custom/")
        .send()
        .await
        .unwrap();
    assert_eq!(list.key_count(), Some(0), "a dry run wrote something");
}

#[tokio::test]
async fn retention_never_orphans_a_kept_snapshot() {
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    let lambda = Lambda::start(
        "efs-backup",
        env(
            &moto,
            &src,
            &[("KEEP_SNAPSHOTS", "3"), ("RETENTION_DAYS", "30")],
        ),
    )
    .await;
    // Four runs, the same file changed each time.
    let mut trees = Vec::new();
    let mut ids = Vec::new();
    for run in 0..4u64 {
        write(&src, "a/ab/Logo.png", &bytes(run, 3000 + run as usize));
        write(
            &src,
            &format!("b/b{run}/Added_{run}.png"),
            &bytes(100 + run, 100),
        );
        let out = lambda.invoke(json!({"action":"backup"})).await.unwrap();
        assert_eq!(out["status"], "complete", "{out}");
        ids.push(out["snapshot_id"].as_str().unwrap().to_string());
        trees.push(tree(&src));
    }
    // KEEP_SNAPSHOTS=3: the oldest of four is gone.
    let list = lambda
        .invoke(events::load("efs-backup-list"))
        .await
        .unwrap();
    let listed = |list: &Value| -> Vec<String> {
        list["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["snapshot_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        listed(&list),
        [ids[3].clone(), ids[2].clone(), ids[1].clone()]
    );

    // Age the kept snapshots: move their manifests to ids 40, 20 and 10 days in the past.
    let aged = |id: &str, days: i64| -> String {
        let t = chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%S%.3fZ")
            .unwrap()
            .and_utc()
            - chrono::Duration::days(days);
        t.format("%Y%m%dT%H%M%S%.3fZ").to_string()
    };
    let moves = [
        (ids[1].clone(), aged(&ids[1], 40)),
        (ids[2].clone(), aged(&ids[2], 20)),
        (ids[3].clone(), aged(&ids[3], 10)),
    ];
    s3.put_object()
        .bucket(BUCKET)
        .key(format!("{PREFIX}latest.json"))
        .body(serde_json::to_vec(&json!({"snapshot_id": moves[2].1, "manifest_key": format!("{PREFIX}snapshots/{}.jsonl.gz", moves[2].1), "manifest_version_id": null})).unwrap().into())
        .send()
        .await
        .unwrap();
    for (from, to) in &moves {
        s3.copy_object()
            .bucket(BUCKET)
            .copy_source(format!("{BUCKET}/{PREFIX}snapshots/{from}.jsonl.gz"))
            .key(format!("{PREFIX}snapshots/{to}.jsonl.gz"))
            .send()
            .await
            .unwrap();
        s3.delete_object()
            .bucket(BUCKET)
            .key(format!("{PREFIX}snapshots/{from}.jsonl.gz"))
            .send()
            .await
            .unwrap();
    }
    // A snapshot older than RETENTION_DAYS is no longer offered, even before pruning.
    let list = lambda
        .invoke(events::load("efs-backup-list"))
        .await
        .unwrap();
    assert_eq!(
        listed(&list),
        [moves[2].1.clone(), moves[1].1.clone()],
        "{list}"
    );

    // The next backup prunes: the 40-day-old snapshot goes, the newest three stay... within 30 days.
    write(&src, "a/ab/Logo.png", &bytes(77, 999));
    let out = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(out["retention"]["delete"], json!([moves[0].1]), "{out}");
    let newest = out["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(
        out["retention"]["keep"],
        json!([newest, moves[2].1, moves[1].1]),
        "{out}"
    );

    // Every kept snapshot still restores byte-identical and verifies: nothing it references
    // was removed, although its files were overwritten since.
    for (i, id) in [(2usize, &moves[1].1), (3, &moves[2].1)] {
        let v = lambda
            .invoke(json!({"action":"verify","snapshot":id,"sample":100}))
            .await
            .unwrap();
        assert_eq!(v["failed"], json!([]), "{v}");
        let r = dir.path().join(format!("r-{i}"));
        restore(&lambda, id, &r).await;
        assert_eq!(tree(&r), trees[i], "snapshot {id}");
    }
    // The pruned one is gone for good.
    let err = lambda
        .invoke(json!({"action":"restore","snapshot":moves[0].1,"target_dir":dir.path().join("x").to_str().unwrap()}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "NotFound", "{err}");
    // The newest snapshot's versions are all current: the lifecycle rule cannot touch them.
    let m = mirror(&s3).await;
    assert_eq!(m, files_of(&tree(&src)));
}

#[tokio::test]
async fn bad_input_and_settings_change_nothing() {
    let moto = Moto::start().await;
    let s3 = moto.s3().await;
    s3.create_bucket()
        .bucket("unversioned")
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    write(&src, "a/ab/X.png", b"x");

    // Missing setting: one error naming it.
    let mut e = env(&moto, &src, &[]);
    e.retain(|(k, _)| k != "BACKUP_BUCKET");
    let lambda = Lambda::start("efs-backup", e).await;
    let err = lambda.invoke(json!({"action":"backup"})).await.unwrap_err();
    assert_eq!(err.error_type, "Settings");
    assert_eq!(
        err.error_message,
        "missing environment variable BACKUP_BUCKET"
    );
    drop(lambda);

    // An unversioned bucket is refused before anything is written.
    let lambda = Lambda::start(
        "efs-backup",
        env(&moto, &src, &[("BACKUP_BUCKET", "unversioned")]),
    )
    .await;
    let err = lambda.invoke(json!({"action":"backup"})).await.unwrap_err();
    assert_eq!(err.error_type, "Rejected", "{err}");
    assert!(err.error_message.contains("versioning"), "{err}");
    let list = s3
        .list_objects_v2()
        .bucket("unversioned")
        .send()
        .await
        .unwrap();
    assert_eq!(list.key_count(), Some(0));
    let err = lambda
        .invoke(json!({"action":"explode"}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent");
    drop(lambda);

    // An empty source (the mount missing) does not erase a backup.
    let s3 = versioned_bucket(&moto).await;
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &[])).await;
    lambda.invoke(json!({"action":"backup"})).await.unwrap();
    std::fs::remove_dir_all(src.join("a")).unwrap();
    let err = lambda.invoke(json!({"action":"backup"})).await.unwrap_err();
    assert_eq!(err.error_type, "Rejected", "{err}");
    assert_eq!(mirror(&s3).await.len(), 1, "a delete marker was written");
    let out = lambda
        .invoke(json!({"action":"backup","allow_empty":true}))
        .await
        .unwrap();
    assert_eq!(out["files_deleted"], 1, "{out}");
    std::fs::remove_dir_all(&src).unwrap();
    let err = lambda.invoke(json!({"action":"backup"})).await.unwrap_err();
    assert_eq!(err.error_type, "Io", "{err}");
    assert!(err.error_message.contains("SOURCE_DIR"), "{err}");
    let err = lambda
        .invoke(json!({"action":"restore","snapshot":"yesterday","target_dir":"/tmp/x"}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent", "{err}");
}

#[tokio::test]
async fn every_sample_event_is_understood() {
    let moto = Moto::start().await;
    versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    write(&src, "a/ab/X.png", b"x");
    wiki_database_and_release(&moto).await;
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &recovery_env(&[]))).await;
    lambda.invoke(json!({"action":"backup"})).await.unwrap();
    // The restore in place's sample names a point: this bucket's.
    let rp = lambda
        .invoke(json!({"action":"recovery-point"}))
        .await
        .unwrap();
    let rp_id = rp["recovery_point"]["id"].as_str().unwrap().to_string();
    let names: Vec<String> = events::all()
        .into_iter()
        .filter(|n| n.starts_with("efs-backup-"))
        .collect();
    assert!(names.len() >= 6, "{names:?}");
    let target = dir.path().join("restore");
    for name in names {
        let e = events::load_with(
            &name,
            &[
                ("/mnt/wiki/.efs-restore", target.to_str().unwrap()),
                ("20261208T030000.000Z", &rp_id),
            ],
        );
        let out = lambda
            .invoke(e)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            ["complete", "dry_run"].contains(&out["status"].as_str().unwrap_or_default()),
            "{name}: {out}"
        );
    }
    assert_eq!(tree(&target).len(), 3, "a, a/ab, a/ab/X.png");
}

/// What the bucket's lifecycle rule does once `RETENTION_DAYS + 1` days have passed: every
/// noncurrent version (and noncurrent delete marker) under `files/` is gone.
async fn expire_noncurrent(s3: &Client) {
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(BUCKET)
            .prefix(format!("{PREFIX}files/"))
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .unwrap();
        let old = page
            .versions()
            .iter()
            .filter(|v| v.is_latest() == Some(false))
            .map(|v| (v.key(), v.version_id()))
            .chain(
                page.delete_markers()
                    .iter()
                    .filter(|m| m.is_latest() == Some(false))
                    .map(|m| (m.key(), m.version_id())),
            );
        for (key, version) in old {
            s3.delete_object()
                .bucket(BUCKET)
                .key(key.unwrap())
                .set_version_id(version.map(str::to_string))
                .send()
                .await
                .unwrap();
        }
        if page.is_truncated() != Some(true) {
            return;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
}

/// Restores the latest snapshot after the lifecycle rule expired every noncurrent version:
/// it succeeds only if the snapshot references current versions alone.
async fn restore_after_expiry(lambda: &Lambda, s3: &Client, target: &Path) -> Value {
    expire_noncurrent(s3).await;
    let _ = std::fs::remove_dir_all(target);
    restore(lambda, "latest", target).await
}

/// Runs a backup reading at 1 MiB/s and kills it once `files/<p>` has `n` versions (before
/// its checkpoint records the upload). Its lease holds until its deadline, 8 s, with no grace:
/// the next run waits for it and takes it over.
async fn killed_once_uploaded(moto: &Moto, s3: &Client, src: &Path, p: &str, n: usize) {
    let slow = Lambda::start(
        "efs-backup",
        env(
            moto,
            src,
            &[
                ("MAX_READ_MIB_PER_SECOND", "1"),
                ("UPLOAD_CONCURRENCY", "1"),
                ("LEASE_GRACE_SECONDS", "0"),
            ],
        ),
    )
    .await;
    {
        let run = slow.invoke_with_deadline(json!({"action":"backup"}), Duration::from_secs(8));
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => panic!("the run ended before it was killed: {r:?}"),
            _ = wait_for_versions(s3, p, n) => {}
        }
    }
    slow.stop().await;
}

/// Removes the backup lease a killed run left.
async fn release_lease(s3: &Client) {
    s3.delete_object()
        .bucket(BUCKET)
        .key(format!("{PREFIX}lease.json"))
        .send()
        .await
        .unwrap();
}

/// Waits until `files/<rel>` has `n` versions (delete markers not counted).
async fn wait_for_versions(s3: &Client, rel: &str, n: usize) {
    let key = format!("{PREFIX}files/{rel}");
    for _ in 0..600 {
        if versions(s3).await.get(&key).copied().unwrap_or(0) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{key} never reached {n} versions");
}

/// The file a revert puts back, and a big file read after it.
const REVERTED: &str = "a/a1/Reverted.png";
const VIDEO: &str = "z/z1/Video.webm";

/// S1 of the revert scene: [`REVERTED`] (3000 bytes) and [`VIDEO`] (4 MiB) backed up; returns
/// the function and the mtime [`REVERTED`] has in S1.
async fn first_snapshot_of_the_revert_scene(moto: &Moto, src: &Path) -> (Lambda, SystemTime) {
    write(src, REVERTED, &bytes(1, 3000));
    write(src, VIDEO, &bytes(2, 4 * 1024 * 1024));
    let lambda = Lambda::start("efs-backup", env(moto, src, &[])).await;
    let s1 = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(s1["status"], "complete", "{s1}");
    let mtime = std::fs::metadata(src.join(REVERTED))
        .unwrap()
        .modified()
        .unwrap();
    (lambda, mtime)
}

#[tokio::test]
async fn a_reverted_file_never_references_a_version_the_lifecycle_rule_expires() {
    // The sequence: S1 holds `p` as v1; `p` changes and a run uploads it as v2, then
    // is killed before its checkpoint; `p` is put back to S1's bytes ("revert file"); the next
    // run must not record v1, noncurrent since v2 and expired later.
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    let (p, big) = (REVERTED, VIDEO);
    let (lambda, s1_mtime) = first_snapshot_of_the_revert_scene(&moto, &src).await;
    lambda.stop().await;

    // `p` changes (another size) and so does the video, which is read at 1 MiB/s after `p`.
    write(&src, p, &bytes(3, 2000));
    write(&src, big, &bytes(4, 4 * 1024 * 1024));
    killed_once_uploaded(&moto, &s3, &src, p, 2).await;

    // Reverted to S1's bytes; a second case: a restore of S1 that also puts its mtime back.
    write(&src, p, &bytes(1, 3000));
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &[])).await;
    let s2 = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(s2["status"], "complete", "{s2}");
    let r = dir.path().join("restored");
    restore_after_expiry(&lambda, &s3, &r).await;
    assert_eq!(tree(&r), tree(&src));

    write(&src, p, &bytes(5, 3000));
    write(&src, big, &bytes(6, 4 * 1024 * 1024));
    let before = versions(&s3).await[&format!("{PREFIX}files/{p}")];
    killed_once_uploaded(&moto, &s3, &src, p, before + 1).await;
    write(&src, p, &bytes(1, 3000));
    std::fs::File::options()
        .write(true)
        .open(src.join(p))
        .unwrap()
        .set_modified(s1_mtime)
        .unwrap();
    let s3_run = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(s3_run["status"], "complete", "{s3_run}");
    restore_after_expiry(&lambda, &s3, &r).await;
    assert_eq!(tree(&r), tree(&src));
}

/// Opens `root` to everyone (the tempdir is 0700), as a wiki's uploads folder is.
fn open_to_all(root: &Path) {
    for (rel, seen) in tree(root) {
        let mode = if seen.kind == "dir" { 0o755 } else { 0o644 };
        if seen.kind != "symlink" {
            std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
    }
    let mut p = root.to_path_buf();
    while let Some(parent) = p.parent() {
        let md = std::fs::metadata(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(md.mode() | 0o005)).unwrap();
        p = parent.to_path_buf();
    }
}

#[tokio::test]
async fn what_cannot_be_read_keeps_its_stored_copy_and_is_reported() {
    // Run as `nobody` against a folder and a file only root may read (the test runs as root).
    const NOBODY: u32 = 65534;
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    wiki_tree(&src);
    write(&src, "locked/l1/Secret.png", &bytes(70, 5000));
    write(&src, "locked/l2/Other.png", &bytes(71, 6000));
    write(&src, "b/b1/Private.png", &bytes(72, 7000));
    open_to_all(&src);
    let as_root = Lambda::start("efs-backup", env(&moto, &src, &[])).await;
    let s1 = as_root.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(s1["status"], "complete", "{s1}");
    let before = mirror(&s3).await;

    std::fs::set_permissions(src.join("locked"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        src.join("b/b1/Private.png"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // The file changed too, so it must be read (and cannot be).
    filetime_touch(&src.join("b/b1/Private.png"));
    let lambda = Lambda::start_as("efs-backup", env(&moto, &src, &[]), NOBODY, NOBODY).await;
    let out = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(out["status"], "partial", "{out}");
    assert_eq!(out["files_deleted"], 0, "{out}");
    assert_eq!(out["unreadable_total"], 2, "{out}");
    let named: Vec<&str> = out["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["path"].as_str().unwrap())
        .collect();
    assert!(named.contains(&"locked"), "{out}");
    assert!(named.contains(&"b/b1/Private.png"), "{out}");
    assert!(
        out["unreadable"]
            .to_string()
            .to_lowercase()
            .contains("permission denied"),
        "the cause is named: {out}"
    );
    assert_eq!(out["files_total"], s1["files_total"], "{out}");
    assert_eq!(
        mirror(&s3).await,
        before,
        "no delete marker, no new version"
    );
    let logs = lambda.logs();
    assert!(logs.contains("\"UnreadablePaths\""), "EMF metric: {logs}");

    // The snapshot still holds every file: a restore (as root) brings them all back.
    let r = dir.path().join("restored");
    restore(&as_root, "latest", &r).await;
    assert_eq!(
        files_of(&tree(&r)),
        files_of(&without_excluded(tree(&src))),
        "what could not be read was restored from its stored copy"
    );
}

/// Moves a file's mtime one second forward (a change the planner must look at).
fn filetime_touch(p: &Path) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    let t = f.metadata().unwrap().modified().unwrap() + Duration::from_secs(1);
    f.set_modified(t).unwrap();
}

#[tokio::test]
async fn an_object_s3_refuses_is_reported_and_the_rest_is_backed_up() {
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    wiki_tree(&src);
    // A path whose key is over S3's 1,024 bytes (each name within the 255 a file system takes).
    let long: Vec<String> = (0..5).map(|i| format!("{i}").repeat(220)).collect();
    let long_path = format!("{}/Long.png", long.join("/"));
    write(&src, &long_path, b"too long a name");
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &[])).await;
    for round in 0..2 {
        let out = lambda.invoke(json!({"action":"backup"})).await.unwrap();
        assert_eq!(out["status"], "partial", "round {round}: {out}");
        assert_eq!(out["refused_total"], 1, "{out}");
        assert_eq!(out["refused"][0]["path"], long_path.as_str(), "{out}");
        assert!(
            out["refused"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("1024"),
            "{out}"
        );
        assert!(lambda.logs().contains("\"FilesRefused\""));
    }
    let mut expected = files_of(&without_excluded(tree(&src)));
    expected.remove(&long_path);
    assert_eq!(mirror(&s3).await, expected);
}

#[tokio::test]
async fn a_restores_temporary_files_are_never_backed_up() {
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    wiki_tree(&src);
    // What a restore killed mid-file leaves beside its target.
    write(
        &src,
        "a/a1/.Photo.png.efs-restore-0123456789abcdef",
        b"half a file",
    );
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &[])).await;
    let out = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(out["status"], "complete", "{out}");
    assert!(
        !mirror(&s3)
            .await
            .keys()
            .any(|k| k.contains(".efs-restore-")),
        "a restore's temporary file was uploaded"
    );
    // Removed once it is an hour old (a restore still writing it is left alone).
    assert!(
        src.join("a/a1/.Photo.png.efs-restore-0123456789abcdef")
            .exists()
    );
}

#[tokio::test]
async fn overwrite_repairs_a_damaged_file_whose_size_mtime_and_mode_match() {
    let moto = Moto::start().await;
    versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    wiki_tree(&src);
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &[])).await;
    let out = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(out["status"], "complete", "{out}");
    let r = dir.path().join("restored");
    restore(&lambda, "latest", &r).await;
    let good = tree(&r);
    // Bit rot: one byte flipped, size, mtime and mode as they were.
    let (victim, _) = files_of(&good).into_iter().next().unwrap();
    let p = r.join(&victim);
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    let mut content = std::fs::read(&p).unwrap();
    content[0] ^= 0xff;
    std::fs::write(&p, &content).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_ne!(tree(&r), good);
    let out = lambda
        .invoke(json!({"action":"restore","snapshot":"latest","target_dir":r.to_str().unwrap(),"overwrite":true}))
        .await
        .unwrap();
    assert_eq!(out["status"], "complete", "{out}");
    assert_eq!(out["files_restored"], 1, "only the damaged file: {out}");
    assert_eq!(tree(&r), good);
}

/// A seeded pseudo-random sequence (splitmix64): the fault suite replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// One state of a fault-suite file: content seed, length, mtime.
type FileState = (u64, usize, SystemTime);

/// The fault suite's tree: `FAULT_PATHS` files whose every past state is remembered, so a
/// change can also put an old state back, as "revert file" and restores do.
struct FaultTree {
    root: std::path::PathBuf,
    history: Vec<Vec<FileState>>,
    /// What each file holds now (`None`: deleted).
    current: Vec<Option<FileState>>,
}

const FAULT_PATHS: usize = 12;

impl FaultTree {
    fn path(i: usize) -> String {
        format!("{:x}/{:02x}/File_{i}.png", i % 4, i)
    }

    /// One change to file `i`: new content, an old state (its mtime too), an old content with a
    /// new mtime, or a deletion.
    fn change(&mut self, rng: &mut Rng, i: usize) {
        let old = (!self.history[i].is_empty())
            .then(|| self.history[i][rng.range(0, self.history[i].len() as u64) as usize]);
        match (rng.range(0, 4), old) {
            (1, Some(state)) => self.set(i, Some(state), true),
            (2, Some(state)) => self.set(i, Some(state), false),
            (3, _) => self.set(i, None, false),
            _ => {
                let len = rng.range(256, 1024) as usize * 1024;
                self.set(i, Some((rng.next(), len, SystemTime::now())), false);
            }
        }
    }

    /// Writes state `to` of file `i` (`None` deletes it), with its recorded mtime if
    /// `keep_mtime`.
    fn set(&mut self, i: usize, to: Option<FileState>, keep_mtime: bool) {
        let p = self.root.join(Self::path(i));
        let Some((seed, len, mtime)) = to else {
            let _ = std::fs::remove_file(&p);
            self.current[i] = None;
            return;
        };
        write(&self.root, &Self::path(i), &bytes(seed, len));
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        if keep_mtime {
            f.set_modified(mtime).unwrap();
        }
        let state = (seed, len, f.metadata().unwrap().modified().unwrap());
        self.history[i].push(state);
        self.current[i] = Some(state);
    }
}

#[tokio::test]
async fn killed_at_random_points_every_trial_converges_to_a_restorable_snapshot() {
    const TRIALS: usize = 30;
    const SEED: u64 = 16;
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    let mut rng = Rng(SEED);
    let mut t = FaultTree {
        root: src.clone(),
        history: vec![Vec::new(); FAULT_PATHS],
        current: vec![None; FAULT_PATHS],
    };
    for i in 0..FAULT_PATHS {
        let len = rng.range(256, 1024) as usize * 1024;
        t.set(i, Some((rng.next(), len, SystemTime::now())), false);
    }
    let env = env(
        &moto,
        &src,
        &[
            ("MAX_READ_MIB_PER_SECOND", "1"),
            ("CHECKPOINT_INTERVAL_SECONDS", "1"),
            ("UPLOAD_CONCURRENCY", "4"),
        ],
    );
    let (mut kills, mut max_runs, mut converged) = (0, 0, 0);
    let r = dir.path().join("restored");
    for trial in 0..TRIALS {
        // The states the latest snapshot holds: a killed run's uploads are put back to them.
        let snapshotted = t.current.clone();
        let mut changed = Vec::new();
        if trial > 0 {
            for _ in 0..rng.range(2, 7) {
                let i = rng.range(0, FAULT_PATHS as u64) as usize;
                t.change(&mut rng, i);
                changed.push(i);
            }
        }
        let mut runs = 0;
        let last = loop {
            runs += 1;
            assert!(runs <= 30, "trial {trial} did not converge in 30 runs");
            let lambda = Lambda::start("efs-backup", env.clone()).await;
            // Killed in most of the first runs: at a random time, or once a random number of
            // new versions is stored (between an upload and the checkpoint that records it).
            let kill = (runs <= 5 && rng.range(0, 10) < 8).then(|| {
                (
                    rng.range(0, 2) == 0,
                    rng.range(1, 4) as usize,
                    Duration::from_millis(rng.range(0, 2500)),
                )
            });
            let stored_before: usize = versions(&s3).await.values().sum();
            let ended = {
                let run = lambda.invoke(json!({"action":"backup"}));
                tokio::pin!(run);
                match kill {
                    Some((by_progress, n, after)) => tokio::select! {
                        r = &mut run => Some(r),
                        _ = async {
                            if by_progress {
                                while versions(&s3).await.values().sum::<usize>() < stored_before + n {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                            } else {
                                tokio::time::sleep(after).await;
                            }
                        } => None,
                    },
                    None => Some(run.await),
                }
            };
            match ended {
                Some(out) => {
                    let out = out.unwrap_or_else(|e| panic!("trial {trial} run {runs}: {e}"));
                    if out["status"] == "complete" {
                        break lambda;
                    }
                    assert_eq!(out["status"], "incomplete", "{out}");
                }
                None => {
                    kills += 1;
                    lambda.stop().await;
                    // Its lease would hold until its deadline (a minute): the process is dead,
                    // so it is given back here rather than waited for (the reverted-file test
                    // waits for one).
                    release_lease(&s3).await;
                    // The tree moves on while the backup is down: a file just changed is often
                    // put back as it was.
                    match (rng.range(0, 3), changed.is_empty()) {
                        (0, false) => {
                            let i = changed[rng.range(0, changed.len() as u64) as usize];
                            let keep_mtime = rng.range(0, 2) == 0;
                            t.set(i, snapshotted[i], keep_mtime);
                        }
                        (1, _) => {
                            let i = rng.range(0, FAULT_PATHS as u64) as usize;
                            t.change(&mut rng, i);
                            changed.push(i);
                        }
                        _ => {}
                    }
                }
            }
        };
        max_runs = max_runs.max(runs);
        // Every referenced version is current: the restore survives the lifecycle rule.
        restore_after_expiry(&last, &s3, &r).await;
        assert_eq!(tree(&r), tree(&src), "trial {trial}: restore differs");
        converged += 1;
    }
    eprintln!(
        "fault suite (seed {SEED}): trials {TRIALS}, converged {converged}, kills {kills}, max runs to converge {max_runs}"
    );
}

#[tokio::test]
async fn two_runs_at_once_one_backs_up_and_the_other_changes_nothing() {
    // Two processes invoked together (a Step Functions retry while the first call still runs,
    // a manual invoke meeting the schedule) on a tree that changed since the last snapshot.
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    wiki_tree(&src);
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &[])).await;
    let first = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(first["status"], "complete", "{first}");
    for i in 0..6u64 {
        write(
            &src,
            &format!("c/c{i}/Changed_{i}.png"),
            &bytes(200 + i, 300_000),
        );
    }
    let slow = [
        ("MAX_READ_MIB_PER_SECOND", "1"),
        ("UPLOAD_CONCURRENCY", "2"),
    ];
    let (a, b) = tokio::join!(
        Lambda::start("efs-backup", env(&moto, &src, &slow)),
        Lambda::start("efs-backup", env(&moto, &src, &slow)),
    );
    let (ra, rb) = tokio::join!(
        a.invoke(json!({"action":"backup"})),
        b.invoke(json!({"action":"backup"}))
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let mut statuses = [ra["status"].as_str(), rb["status"].as_str()];
    statuses.sort();
    assert_eq!(statuses, [Some("busy"), Some("complete")], "{ra}\n{rb}");
    let busy = if ra["status"] == "busy" { &ra } else { &rb };
    assert!(busy["busy"]["expires_at"].is_string(), "{busy}");
    assert_eq!(busy["files_uploaded"], 0, "{busy}");
    // Every version the snapshot references survives the lifecycle rule, and so does the
    // next (no-change) snapshot's.
    let r = dir.path().join("restored");
    let out = restore_after_expiry(&lambda, &s3, &r).await;
    assert_eq!(out["status"], "complete", "{out}");
    assert_eq!(tree(&r), without_excluded(tree(&src)));
    let again = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(again["status"], "complete", "{again}");
    assert_eq!(again["files_uploaded"], 0, "{again}");
    let v = lambda
        .invoke(json!({"action":"verify","sample":1000}))
        .await
        .unwrap();
    assert_eq!(v["failed"], json!([]), "{v}");
    // The lease was given back: nothing left under its key.
    let lease = s3
        .head_object()
        .bucket(BUCKET)
        .key(format!("{PREFIX}lease.json"))
        .send()
        .await;
    assert!(lease.is_err(), "the lease was not released");
}

#[tokio::test]
async fn names_of_255_bytes_back_up_verify_and_restore() {
    // MediaWiki accepts titles up to 240 bytes; archived versions add `timestamp!`. NAME_MAX
    // is 255 bytes, and a restore must not need more.
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    let long = format!("{}.png", "Ä".repeat(125)); // 254 bytes
    let longest = format!("20261201000000!{}.png", "B".repeat(255 - 19));
    assert_eq!((long.len(), longest.len()), (254, 255));
    write(&src, &format!("a/ab/{long}"), &bytes(1, 5000));
    write(&src, &format!("archive/a/ab/{longest}"), &bytes(2, 7000));
    std::os::unix::fs::symlink(format!("a/ab/{long}"), src.join(&longest)).unwrap();
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &[])).await;
    let out = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(out["status"], "complete", "{out}");
    let v = lambda
        .invoke(json!({"action":"verify","sample":10}))
        .await
        .unwrap();
    assert_eq!(v["failed"], json!([]), "{v}");
    let r = dir.path().join("restored");
    let out = restore(&lambda, "latest", &r).await;
    assert_eq!(out["status"], "complete", "{out}");
    assert_eq!(tree(&r), tree(&src));
    // In place, with overwrite: the same names, replaced through their temporary names.
    write(&src, &format!("a/ab/{long}"), b"damaged");
    let out = lambda
        .invoke(json!({"action":"restore","target_dir":src.to_str().unwrap(),"overwrite":true}))
        .await
        .unwrap();
    assert_eq!(out["status"], "complete", "{out}");
    assert_eq!(tree(&src), tree(&r));
    drop(s3);
}

#[tokio::test]
async fn an_unreadable_checkpoint_stops_the_run_until_a_rescan() {
    // The killed-then-reverted sequence again, with the killed run's checkpoint damaged: its
    // list of the paths that run may have written is lost with it.
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    let (p, big) = (REVERTED, VIDEO);
    let (lambda, s1_mtime) = first_snapshot_of_the_revert_scene(&moto, &src).await;
    write(&src, p, &bytes(3, 2000));
    write(&src, big, &bytes(4, 4 * 1024 * 1024));
    killed_once_uploaded(&moto, &s3, &src, p, 2).await;
    let ck = format!("{PREFIX}checkpoint.jsonl.gz");
    s3.put_object()
        .bucket(BUCKET)
        .key(&ck)
        .body(b"\x1f\x8b not a gzip stream".to_vec().into())
        .send()
        .await
        .unwrap();
    write(&src, p, &bytes(1, 3000));
    std::fs::File::options()
        .write(true)
        .open(src.join(p))
        .unwrap()
        .set_modified(s1_mtime)
        .unwrap();
    let latest_before = mirror_latest(&s3).await;
    let err = lambda.invoke(json!({"action":"backup"})).await.unwrap_err();
    assert_eq!(err.error_type, "Rejected", "{err:?}");
    assert!(err.error_message.contains("checkpoint"), "{err:?}");
    assert!(err.error_message.contains("\"rescan\":true"), "{err:?}");
    assert_eq!(mirror_latest(&s3).await, latest_before, "latest moved");
    let out = lambda
        .invoke(json!({"action":"backup","rescan":true}))
        .await
        .unwrap();
    assert_eq!(out["status"], "complete", "{out}");
    let r = dir.path().join("restored");
    let out = restore_after_expiry(&lambda, &s3, &r).await;
    assert_eq!(out["status"], "complete", "{out}");
    assert_eq!(tree(&r), tree(&src));
}

/// The `latest` pointer's content.
async fn mirror_latest(s3: &Client) -> Value {
    let o = s3
        .get_object()
        .bucket(BUCKET)
        .key(format!("{PREFIX}latest.json"))
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&o.body.collect().await.unwrap().into_bytes()).unwrap()
}

#[tokio::test]
async fn retention_never_prunes_the_snapshot_latest_names() {
    // A run on a clock two days ahead left a snapshot with a later id than the next run's.
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    wiki_tree(&src);
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &[("KEEP_SNAPSHOTS", "1")])).await;
    let s1 = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    let id = s1["snapshot_id"].as_str().unwrap();
    let ahead = (chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%S%.3fZ")
        .unwrap()
        .and_utc()
        + chrono::Duration::days(2))
    .format("%Y%m%dT%H%M%S%.3fZ")
    .to_string();
    s3.copy_object()
        .bucket(BUCKET)
        .copy_source(format!("{BUCKET}/{PREFIX}snapshots/{id}.jsonl.gz"))
        .key(format!("{PREFIX}snapshots/{ahead}.jsonl.gz"))
        .send()
        .await
        .unwrap();
    write(&src, "a/ab/New.png", &bytes(7, 900));
    let s2 = lambda.invoke(json!({"action":"backup"})).await.unwrap();
    assert_eq!(s2["status"], "complete", "{s2}");
    let named = mirror_latest(&s3).await["snapshot_id"].clone();
    assert_eq!(named, s2["snapshot_id"]);
    assert!(
        s2["retention"]["keep"].as_array().unwrap().contains(&named),
        "{s2}"
    );
    let r = dir.path().join("restored");
    let out = restore(&lambda, "latest", &r).await;
    assert_eq!(out["status"], "complete", "{out}");
    assert_eq!(tree(&r), without_excluded(tree(&src)));
}

/// The wiki's database instance in moto, and a configuration bucket with a release pointer.
async fn wiki_database_and_release(moto: &Moto) -> (aws_sdk_rds::Client, Value) {
    let rds = moto.rds().await;
    rds.create_db_instance()
        .db_instance_identifier("wiki-db")
        .db_instance_class("db.t4g.micro")
        .engine("mysql")
        .master_username("admin")
        .master_user_password("not-a-real-password")
        .allocated_storage(20)
        .send()
        .await
        .unwrap();
    moto.versioned_bucket("wiki-config").await.unwrap();
    let release = json!({"release": {"created_at": "2026-12-01T00:00:00Z",
        "objects": {"config/LocalSettings.php": "v1"}}});
    moto.s3()
        .await
        .put_object()
        .bucket("wiki-config")
        .key("config/.wikiops/release.json")
        .body(serde_json::to_vec(&release).unwrap().into())
        .send()
        .await
        .unwrap();
    (rds, release)
}

/// A wiki tree, a versioned backup bucket, the database instance and a release in moto, and
/// efs-backup set for recovery points (plus `extra`): the scene of the recovery-point tests.
struct RecoveryScene {
    moto: Moto,
    rds: aws_sdk_rds::Client,
    release: Value,
    dir: tempfile::TempDir,
    src: std::path::PathBuf,
    lambda: Lambda,
}

async fn recovery_scene(extra: &[(&str, &str)]) -> RecoveryScene {
    let moto = Moto::start().await;
    versioned_bucket(&moto).await;
    let (rds, release) = wiki_database_and_release(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    wiki_tree(&src);
    let lambda = Lambda::start("efs-backup", env(&moto, &src, &recovery_env(extra))).await;
    RecoveryScene {
        moto,
        rds,
        release,
        dir,
        src,
        lambda,
    }
}

fn recovery_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("DB_INSTANCE_ID", "wiki-db"),
        ("CONFIG_BUCKET", "wiki-config"),
        ("CONFIG_PREFIX", "config/"),
    ];
    env.extend_from_slice(extra);
    env
}

#[tokio::test]
async fn a_recovery_point_ties_pages_files_and_release_and_restores_beside() {
    let scene = recovery_scene(&[("KEEP_SNAPSHOTS", "1")]).await;
    let RecoveryScene {
        rds,
        release,
        src,
        lambda,
        ..
    } = &scene;
    let at_point = without_excluded(tree(src));
    let out = lambda
        .invoke(events::load("efs-backup-recovery-point"))
        .await
        .unwrap();
    assert_eq!(out["status"], "complete", "{out}");
    let rp = &out["recovery_point"];
    let id = rp["id"].as_str().unwrap().to_string();
    // The consistency rule: the pages are not later than the walk of the files.
    let point = rp["database"]["point"].as_str().unwrap();
    let walk = rp["files"]["walk_started_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(point).unwrap()
            <= chrono::DateTime::parse_from_rfc3339(walk).unwrap(),
        "{rp}"
    );
    assert_eq!(rp["config"]["release"], release["release"], "{rp}");
    let db_snapshot = rp["database"]["snapshot"].as_str().unwrap().to_string();
    let described = rds
        .describe_db_snapshots()
        .db_snapshot_identifier(&db_snapshot)
        .send()
        .await
        .unwrap();
    assert_eq!(described.db_snapshots().len(), 1);
    let listed = lambda.invoke(json!({"action":"list"})).await.unwrap();
    assert_eq!(listed["recovery_points"][0]["recovery_point"], id.as_str());
    assert!(listed["recovery_points"][0]["age_hours"].as_f64().unwrap() < 1.0);

    // The wiki moves on; the live tree is never touched by a restore beside.
    std::fs::remove_file(src.join("archive/0/01/20260101000000!Old.png")).unwrap();
    write(src, "a/ab/After.png", &bytes(77, 500));
    let live = tree(src);
    let beside = lambda
        .invoke(json!({"action":"restore-beside","recovery_point":"latest"}))
        .await
        .unwrap();
    assert_eq!(beside["status"], "complete", "{beside}");
    assert_eq!(beside["recovery_point"], id.as_str());
    let files_dir = std::path::PathBuf::from(beside["files_dir"].as_str().unwrap());
    assert!(files_dir.starts_with(src.join(".efs-restore")));
    assert_eq!(tree(&files_dir), at_point);
    let mut now = tree(src);
    now.retain(|p, _| !p.starts_with(".efs-restore"));
    assert_eq!(now, live, "restore beside changed the live tree");
    let instance = beside["db_instance"].as_str().unwrap();
    let restored = rds
        .describe_db_instances()
        .db_instance_identifier(instance)
        .send()
        .await
        .unwrap();
    assert_eq!(restored.db_instances().len(), 1, "{beside}");
    assert_eq!(beside["config"]["release"], release["release"]);
    // Again: the same instance and folder, nothing restored twice.
    let again = lambda
        .invoke(json!({"action":"restore-beside","recovery_point":id}))
        .await
        .unwrap();
    assert_eq!(again["db_instance"], beside["db_instance"]);
    assert_eq!(again["files"]["files_restored"], 0, "{again}");

    // A second point with KEEP_SNAPSHOTS=1: the first goes, DB snapshot first.
    let second = lambda
        .invoke(json!({"action":"recovery-point"}))
        .await
        .unwrap();
    assert_eq!(second["status"], "complete", "{second}");
    assert_eq!(second["pruned"]["delete"], json!([id]), "{second}");
    let gone = rds
        .describe_db_snapshots()
        .db_snapshot_identifier(&db_snapshot)
        .send()
        .await;
    assert!(
        gone.is_err(),
        "the pruned point's DB snapshot is left: {gone:?}"
    );
    let listed = lambda.invoke(json!({"action":"list"})).await.unwrap();
    assert_eq!(listed["recovery_points"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_recovery_point_whose_db_snapshot_vanished_is_given_up_and_named() {
    let scene = recovery_scene(&[]).await;
    let RecoveryScene {
        moto, src, lambda, ..
    } = &scene;
    // A point started (its pending record and DB snapshot), then the snapshot deleted.
    let s3 = moto.s3().await;
    let id = "20261208T030000.000Z";
    let snapshot = "wiki-db-rp-20261208t030000000z";
    let pending = json!({"id": id, "created_at": "2026-12-08T03:00:00Z", "status": "pending",
        "database": {"instance": "wiki-db", "snapshot": snapshot}});
    s3.put_object()
        .bucket(BUCKET)
        .key(format!("{PREFIX}recovery-points/pending.json"))
        .body(serde_json::to_vec(&pending).unwrap().into())
        .send()
        .await
        .unwrap();
    let err = lambda
        .invoke(json!({"action":"recovery-point"}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "Rejected", "{err:?}");
    assert!(err.error_message.contains(snapshot), "{err:?}");
    // The next invocation starts a new point and completes it.
    let out = lambda
        .invoke(json!({"action":"recovery-point"}))
        .await
        .unwrap();
    assert_eq!(out["status"], "complete", "{out}");
    assert_ne!(out["recovery_point"]["id"], id);
    // Without the instance setting the action names what is missing and changes nothing.
    let plain = Lambda::start("efs-backup", env(moto, src, &[])).await;
    let err = plain
        .invoke(json!({"action":"recovery-point"}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "Settings", "{err:?}");
    assert!(err.error_message.contains("DB_INSTANCE_ID"), "{err:?}");
}

#[tokio::test]
async fn a_restore_in_place_puts_a_point_back_under_the_live_names() {
    let scene = recovery_scene(&[]).await;
    let RecoveryScene {
        rds, src, lambda, ..
    } = &scene;
    let rp = lambda
        .invoke(json!({"action":"recovery-point"}))
        .await
        .unwrap();
    let id = rp["recovery_point"]["id"].as_str().unwrap().to_string();
    let at_point = without_excluded(tree(src));
    // The wiki moves on: a file deleted, one overwritten, one added.
    std::fs::remove_file(src.join("archive/0/01/20260101000000!Old.png")).unwrap();
    let (first, _) = files_of(&at_point).into_iter().next().unwrap();
    write(src, &first, b"vandalised");
    write(src, "z/zz/Added_later.png", &bytes(9, 700));

    // Without the confirmation nothing happens.
    let err = lambda
        .invoke(json!({"action":"restore-in-place","recovery_point":id}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent", "{err:?}");
    assert!(err.error_message.contains(&id), "{err:?}");
    let out = lambda
        .invoke(json!({"action":"restore-in-place","recovery_point":id,"confirm":id}))
        .await
        .unwrap();
    assert_eq!(out["status"], "complete", "{out}");
    assert!(out["safety_point"].is_string(), "{out}");
    assert!(out["next"].as_str().unwrap().contains("rotate"), "{out}");
    // The live name is the restored instance; the replaced one is kept under its new name.
    let replaced = out["replaced_instance"].as_str().unwrap();
    for name in ["wiki-db", replaced] {
        let d = rds
            .describe_db_instances()
            .db_instance_identifier(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(d.db_instances().len(), 1);
    }
    // The point's files are back byte for byte; what came later stays (nothing is deleted).
    let mut now = without_excluded(tree(src));
    assert!(now.remove("z/zz/Added_later.png").is_some());
    now.retain(|p, _| p != "z/zz" && p != "z");
    assert_eq!(files_of(&now), files_of(&at_point));
    // Two points now: the target and the one of the replaced state.
    let listed = lambda.invoke(json!({"action":"list"})).await.unwrap();
    assert_eq!(
        listed["recovery_points"].as_array().unwrap().len(),
        2,
        "{listed}"
    );
    // Done: the next invocation starts over, and asks for the confirmation again.
    let again = lambda
        .invoke(json!({"action":"restore-in-place","recovery_point":id}))
        .await
        .unwrap_err();
    assert_eq!(again.error_type, "InvalidEvent", "{again:?}");
}

#[tokio::test]
async fn two_recovery_point_invocations_at_once_take_one_point() {
    // A manual invoke meeting the schedule: two processes, the same moment.
    let scene = recovery_scene(&[]).await;
    let other = Lambda::start(
        "efs-backup",
        env(&scene.moto, &scene.src, &recovery_env(&[])),
    )
    .await;
    let (a, b) = tokio::join!(
        scene.lambda.invoke(json!({"action":"recovery-point"})),
        other.invoke(json!({"action":"recovery-point"}))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        [&a, &b].iter().any(|o| o["status"] == "complete"),
        "{a}\n{b}"
    );
    for o in [&a, &b] {
        assert!(
            ["complete", "busy", "waiting", "incomplete"].contains(&o["status"].as_str().unwrap()),
            "{o}"
        );
    }
    // Both took part in one point: one DB snapshot, the point listed, nothing left pending.
    let named: BTreeSet<&str> = [&a, &b]
        .iter()
        .filter_map(|o| o["recovery_point"]["id"].as_str())
        .collect();
    assert_eq!(named.len(), 1, "one point, whoever finished it:\n{a}\n{b}");
    let again = scene.lambda.invoke(json!({"action":"list"})).await.unwrap();
    let points = again["recovery_points"].as_array().unwrap();
    let snapshots = scene
        .rds
        .describe_db_snapshots()
        .db_instance_identifier("wiki-db")
        .snapshot_type("manual")
        .send()
        .await
        .unwrap();
    assert_eq!(points.len(), 1, "{a}\n{b}\n{again}");
    let ids: Vec<_> = snapshots
        .db_snapshots()
        .iter()
        .filter_map(|s| s.db_snapshot_identifier())
        .collect();
    assert_eq!(
        ids,
        [points[0]["db_snapshot"].as_str().unwrap()],
        "a DB snapshot no point references: {again}"
    );
    drop(scene.dir);
}

#[tokio::test]
async fn a_run_whose_lease_was_taken_over_writes_no_snapshot() {
    // The lease rewritten under a running backup (what a taker does once a holder's lease has
    // expired): the run must not write its manifest or move `latest`.
    let moto = Moto::start().await;
    let s3 = versioned_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wiki");
    let (lambda, _) = first_snapshot_of_the_revert_scene(&moto, &src).await;
    let latest_before = mirror_latest(&s3).await;
    write(&src, VIDEO, &bytes(8, 4 * 1024 * 1024));
    let slow = Lambda::start(
        "efs-backup",
        env(&moto, &src, &[("MAX_READ_MIB_PER_SECOND", "1")]),
    )
    .await;
    let run = slow.invoke(json!({"action":"backup"}));
    let take_over = async {
        let key = format!("{PREFIX}lease.json");
        for _ in 0..200 {
            if s3
                .head_object()
                .bucket(BUCKET)
                .key(&key)
                .send()
                .await
                .is_ok()
            {
                let body = json!({"holder": "a later run", "expires_at": "2099-01-01T00:00:00Z"});
                s3.put_object()
                    .bucket(BUCKET)
                    .key(&key)
                    .body(serde_json::to_vec(&body).unwrap().into())
                    .send()
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the run never took the lease");
    };
    let (out, ()) = tokio::join!(run, take_over);
    let err = out.unwrap_err();
    assert_eq!(err.error_type, "Rejected", "{err:?}");
    assert!(err.error_message.contains("took over"), "{err:?}");
    assert_eq!(mirror_latest(&s3).await, latest_before, "latest moved");
    drop(lambda);
}
