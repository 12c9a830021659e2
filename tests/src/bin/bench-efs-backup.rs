//! The efs-backup benchmark: full and no-change backups of a generated MediaWiki-shaped tree,
//! side by side with `rclone sync` and `aws s3 sync` on the same tree and the same local S3
//! server (`s3s-fs`; moto when it is not installed), then restores of that tree into empty
//! folders from efs-backup's bucket: efs-backup's own, `rclone copy` and `aws s3 sync` of its
//! `files/`. Run through `scripts/bench-efs-backup`.
//!
//! Prints a markdown table and writes it to `--out` (default `target/bench/efs-backup.md`,
//! `efs-backup-smoke.md` with `--smoke`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wikiops_tests::{Lambda, Moto, measure, paths};

struct Args {
    smoke: bool,
    out: PathBuf,
    bin_dir: Option<PathBuf>,
    files: usize,
    concurrency: usize,
    runs: usize,
}

fn args() -> Args {
    let mut a = Args {
        smoke: false,
        out: paths::bench_dir().join("efs-backup.md"),
        bin_dir: None,
        files: 10_000,
        concurrency: 16,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    let mut out_given = false;
    while let Some(x) = it.next() {
        match x.as_str() {
            "--smoke" => {
                a.smoke = true;
                a.files = 300;
                a.runs = 1;
                // A smoke run keeps the real figures (efs-backup.md) intact.
                if !out_given {
                    a.out = paths::bench_dir().join("efs-backup-smoke.md");
                }
            }
            "--out" => {
                a.out = PathBuf::from(it.next().expect("--out PATH"));
                out_given = true;
            }
            "--bin-dir" => a.bin_dir = Some(PathBuf::from(it.next().expect("--bin-dir DIR"))),
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--files" => a.files = it.next().and_then(|v| v.parse().ok()).expect("--files N"),
            "--concurrency" => {
                a.concurrency = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--concurrency N")
            }
            other => panic!(
                "unknown argument {other}; usage: bench-efs-backup [--smoke] [--files N] [--concurrency N] [--out PATH] [--bin-dir DIR]"
            ),
        }
    }
    a
}

/// A MediaWiki `images/` tree: `a/ab/` hashed folders, many small files (most 5–100 KB, a
/// tail up to 2 MB), an `archive/` of old versions, and a few large media files.
fn generate(root: &Path, files: usize, smoke: bool) -> (usize, u64) {
    let marker = root.join(".bench-complete");
    let mut block = Vec::with_capacity(4 << 20);
    let mut h = Sha256::digest(b"wikiops").to_vec();
    while block.len() < (4 << 20) {
        block.extend_from_slice(&h);
        h = Sha256::digest(&h).to_vec();
    }
    let mut count = 0;
    let mut bytes = 0u64;
    let fresh = !marker.exists();
    if fresh {
        let _ = std::fs::remove_dir_all(root);
    }
    let mut put = |rel: String, len: usize, seed: u64| {
        let p = root.join(&rel);
        if fresh {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let mut data = Vec::with_capacity(len);
            data.extend_from_slice(&Sha256::digest(seed.to_le_bytes()));
            let off = (seed as usize * 7919) % (block.len() / 2);
            while data.len() < len {
                let take = (len - data.len()).min(block.len() - off);
                data.extend_from_slice(&block[off..off + take]);
            }
            data.truncate(len);
            std::fs::write(&p, &data).unwrap();
        }
        count += 1;
        bytes += len as u64;
    };
    for i in 0..files as u64 {
        let name = format!("File_{i}.{}", ["png", "jpg", "svg", "pdf"][i as usize % 4]);
        let md5 = hex::encode(Sha256::digest(name.as_bytes()));
        // Sizes: mostly 5–100 KB, every 50th up to 2 MB.
        let r = u64::from_le_bytes(Sha256::digest(i.to_be_bytes())[..8].try_into().unwrap());
        let len = if i % 50 == 0 {
            100_000 + r % 1_900_000
        } else {
            5_000 + r % 95_000
        };
        let dir = if i % 10 == 9 { "archive/" } else { "" };
        put(
            format!("{dir}{}/{}/{name}", &md5[..1], &md5[..2]),
            len as usize,
            i,
        );
    }
    let large: &[(&str, usize)] = if smoke {
        &[("Intro_video.webm", 9 << 20)]
    } else {
        &[
            ("Intro_video.webm", 96 << 20),
            ("Scan_2019.tiff", 64 << 20),
            ("Talk.ogg", 40 << 20),
        ]
    };
    for (i, (name, len)) in large.iter().enumerate() {
        let md5 = hex::encode(Sha256::digest(name.as_bytes()));
        put(
            format!("{}/{}/{name}", &md5[..1], &md5[..2]),
            *len,
            1_000_000 + i as u64,
        );
    }
    if fresh {
        std::fs::write(&marker, b"").unwrap();
    }
    (count, bytes)
}

/// The local S3 server under test.
enum Server {
    /// The server and its data directory.
    S3sFs(std::process::Child, PathBuf),
    Moto(#[allow(dead_code)] Moto),
}

impl Server {
    /// Frees the disk space of a bucket once measured (the machine's disk is shared).
    fn discard(&self, bucket: &str) {
        if let Server::S3sFs(_, data) = self {
            let _ = std::fs::remove_dir_all(data.join(bucket));
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Server::S3sFs(..) => "s3s-fs",
            Server::Moto(_) => "moto",
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::S3sFs(c, data) = self {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_dir_all(data);
        }
    }
}

const KEY: &str = "benchkey";
const SECRET: &str = "benchsecret";

async fn start_server(dir: &Path) -> (Server, String) {
    let s3s = paths::target_dir().join("tools/bin/s3s-fs");
    if s3s.exists() {
        let data = dir.join("s3");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let port = wikiops_tests::free_port();
        let child = Command::new(&s3s)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        wikiops_tests::wait_for_port(port, Duration::from_secs(20), "s3s-fs").await;
        (
            Server::S3sFs(child, data),
            format!("http://127.0.0.1:{port}"),
        )
    } else {
        let moto = Moto::start().await;
        let url = moto.endpoint.clone();
        (Server::Moto(moto), url)
    }
}

fn creds(server: &Server) -> (&'static str, &'static str) {
    match server {
        Server::S3sFs(..) => (KEY, SECRET),
        Server::Moto(_) => ("testing", "testing"),
    }
}

async fn create_buckets(endpoint: &str, server: &Server, buckets: &[String]) {
    let (k, s) = creds(server);
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            k, s, None, None, "bench",
        ))
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    );
    for b in buckets {
        s3.create_bucket()
            .bucket(b)
            .send()
            .await
            .expect("CreateBucket");
    }
    if let Server::Moto(_) = server {
        wikiops_tests::moto::enable_versioning(&s3, &buckets[0])
            .await
            .expect("PutBucketVersioning");
    }
}

/// One tool's run.
struct Run {
    wall: Duration,
    peak_rss_kib: Option<u64>,
    uploads: Option<u64>,
}

async fn run_ours(binary: &Path, env: &[(String, String)]) -> Run {
    let (run, out) = invoke_ours(binary, env, json!({"action":"backup"})).await;
    Run {
        uploads: out["files_uploaded"].as_u64(),
        ..run
    }
}

/// One invocation of efs-backup's release binary, timed from the event to the answer (the
/// process is started first), which must be `complete`.
async fn invoke_ours(binary: &Path, env: &[(String, String)], event: Value) -> (Run, Value) {
    let lambda = Lambda::start_program("efs-backup", binary, env.iter().cloned()).await;
    lambda
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("efs-backup did not start");
    let t = Instant::now();
    let out = lambda
        .invoke_with_deadline(event.clone(), Duration::from_secs(900))
        .await
        .unwrap_or_else(|e| panic!("efs-backup {event} failed: {e}"));
    let wall = t.elapsed();
    assert_eq!(out["status"], "complete", "{out}");
    let rss = lambda.pid().and_then(measure::peak_rss_kib);
    lambda.stop().await;
    let run = Run {
        wall,
        peak_rss_kib: rss,
        uploads: None,
    };
    (run, out)
}

/// efs-backup restoring its latest snapshot into `target` (which must not exist).
async fn restore_ours(binary: &Path, env: &[(String, String)], target: &Path) -> Run {
    let event = json!({"action":"restore","target_dir":target.to_str().unwrap()});
    let (run, out) = invoke_ours(binary, env, event).await;
    Run {
        uploads: out["files_restored"].as_u64(),
        ..run
    }
}

/// `rclone copy` of `bucket_prefix` (`bucket/prefix`) into `target`.
fn rclone_restore(
    endpoint: &str,
    server: &Server,
    concurrency: usize,
    bucket_prefix: &str,
    target: &Path,
) -> Option<Run> {
    // The trailing slash: without it rclone first HEADs the prefix as if it were a file,
    // which s3s-fs answers with a 500 that rclone retries for over a minute.
    let from = format!("bench:{bucket_prefix}/");
    rclone_run(
        endpoint,
        server,
        concurrency,
        &["copy".as_ref(), from.as_ref(), target.as_os_str()],
    )
}

/// `aws s3 sync` of `bucket_prefix` (`bucket/prefix`) into `target`.
fn aws_restore(endpoint: &str, server: &Server, bucket_prefix: &str, target: &Path) -> Option<Run> {
    let mut c = aws_command(endpoint, server)?;
    c.arg(format!("s3://{bucket_prefix}/")).arg(target);
    let (wall, rss, text) = timed(c);
    let downloads = text.lines().filter(|l| l.starts_with("download:")).count() as u64;
    Some(Run {
        wall,
        peak_rss_kib: rss,
        uploads: Some(downloads),
    })
}

/// Regular files under `dir` and their bytes.
fn files_under(dir: &Path) -> (u64, u64) {
    let mut n = (0, 0);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            let (f, b) = files_under(&e.path());
            n = (n.0 + f, n.1 + b);
        } else if t.is_file() {
            n = (n.0 + 1, n.1 + e.metadata().map(|m| m.len()).unwrap_or(0));
        }
    }
    n
}

/// Runs `cmd` under GNU time; returns wall time, peak RSS and the lines it printed.
fn timed(cmd: Command) -> (Duration, Option<u64>, String) {
    let metrics = tempfile::NamedTempFile::new().unwrap();
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(metrics.path())
        .args(["-f", "%M"])
        .arg(&program)
        .args(&args)
        // A CA bundle from the environment would make rclone/awscli load it for plain HTTP.
        .env_remove("AWS_CA_BUNDLE")
        .envs(envs)
        .output()
        .expect("run /usr/bin/time");
    let wall = t.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program:?} failed: {text}");
    let rss = std::fs::read_to_string(metrics.path())
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()));
    (wall, rss, text)
}

fn which(name: &str, preferred: &Path) -> Option<PathBuf> {
    if preferred.exists() {
        return Some(preferred.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    })
}

/// rclone (`args`, then the bench's flags) against the remote `bench:` on the server; `None`
/// when rclone is not installed. Counts the files copied.
fn rclone_run(
    endpoint: &str,
    server: &Server,
    concurrency: usize,
    args: &[&std::ffi::OsStr],
) -> Option<Run> {
    let bin = which("rclone", Path::new("/usr/bin/rclone"))?;
    let (k, s) = creds(server);
    let mut c = Command::new(bin);
    c.args(args)
        .args([
            "--transfers",
            &concurrency.to_string(),
            "--checkers",
            &concurrency.to_string(),
        ])
        .args(["--log-level", "INFO", "--stats", "0"])
        .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
        .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
        .env("RCLONE_CONFIG_BENCH_ENDPOINT", endpoint)
        .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", k)
        .env("RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY", s)
        .env("RCLONE_CONFIG_BENCH_REGION", "us-east-1")
        .env("RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE", "true");
    let (wall, rss, text) = timed(c);
    let copied = text.lines().filter(|l| l.contains(": Copied (")).count() as u64;
    Some(Run {
        wall,
        peak_rss_kib: rss,
        uploads: Some(copied),
    })
}

fn rclone(
    tree: &Path,
    endpoint: &str,
    server: &Server,
    concurrency: usize,
    bucket: &str,
) -> Option<Run> {
    // Bucket roots: s3s-fs answers 500 to a HEAD on a "folder" key (rclone's first call).
    let to = format!("bench:{bucket}");
    rclone_run(
        endpoint,
        server,
        concurrency,
        &["sync".as_ref(), tree.as_os_str(), to.as_ref()],
    )
}

/// `aws s3 sync` on the server, its source and destination to add.
fn aws_command(endpoint: &str, server: &Server) -> Option<Command> {
    let bin = which(
        "aws",
        &paths::target_dir().join("tools/awscli-venv/bin/aws"),
    )?;
    let (k, s) = creds(server);
    let mut c = Command::new(bin);
    // s3s-fs sometimes leaves a PutObject sent with `Expect: 100-continue` unanswered; a short
    // read timeout makes botocore retry it after 5 s instead of 60 s.
    c.args([
        "--endpoint-url",
        endpoint,
        "--cli-read-timeout",
        "5",
        "s3",
        "sync",
        "--no-progress",
    ])
    .env("AWS_ACCESS_KEY_ID", k)
    .env("AWS_SECRET_ACCESS_KEY", s)
    .env("AWS_DEFAULT_REGION", "us-east-1")
    .env("AWS_CONFIG_FILE", "/dev/null")
    .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    Some(c)
}

fn aws(tree: &Path, endpoint: &str, server: &Server, bucket: &str) -> Option<Run> {
    let mut c = aws_command(endpoint, server)?;
    c.arg(tree).arg(format!("s3://{bucket}"));
    let (wall, rss, text) = timed(c);
    let uploads = text.lines().filter(|l| l.starts_with("upload:")).count() as u64;
    Some(Run {
        wall,
        peak_rss_kib: rss,
        uploads: Some(uploads),
    })
}

/// Median wall time with its range, e.g. `12.03 (11.80–13.10)`.
fn spread(r: &Summary) -> String {
    if r.min == r.max {
        format!("{:.2}", r.wall.as_secs_f64())
    } else {
        format!(
            "{:.2} ({:.2}–{:.2})",
            r.wall.as_secs_f64(),
            r.min.as_secs_f64(),
            r.max.as_secs_f64()
        )
    }
}

/// Rounds of one tool, summarized.
struct Summary {
    /// Median.
    wall: Duration,
    min: Duration,
    max: Duration,
    peak_rss_kib: Option<u64>,
    /// The largest count seen.
    uploads: Option<u64>,
}

fn summarize(rounds: &[(Run, Run)]) -> Option<(Summary, Summary)> {
    if rounds.is_empty() {
        return None;
    }
    let full: Vec<&Run> = rounds.iter().map(|r| &r.0).collect();
    let again: Vec<&Run> = rounds.iter().map(|r| &r.1).collect();
    Some((summary(&full), summary(&again)))
}

/// Median, range, largest peak RSS and count of one tool's runs (at least one).
fn summary(runs: &[&Run]) -> Summary {
    let mut walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    walls.sort();
    Summary {
        wall: walls[walls.len() / 2],
        min: walls[0],
        max: walls[walls.len() - 1],
        peak_rss_kib: runs.iter().filter_map(|r| r.peak_rss_kib).max(),
        uploads: runs.iter().filter_map(|r| r.uploads).max(),
    }
}

fn mib(k: Option<u64>) -> String {
    k.map(|k| format!("{:.0}", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".into())
}

/// The restore table and its ratios (time relative to rclone's and awscli's).
fn restore_table(restores: &[Vec<Run>; 3], files: usize, bytes: u64, concurrency: usize) -> String {
    let names = [
        format!("efs-backup restore (UPLOAD_CONCURRENCY={concurrency})"),
        format!("rclone copy (--transfers {0} --checkers {0})", concurrency),
        "aws s3 sync (defaults)".to_string(),
    ];
    let sums: Vec<Option<Summary>> = restores
        .iter()
        .map(|r| (!r.is_empty()).then(|| summary(&r.iter().collect::<Vec<_>>())))
        .collect();
    let mut md = String::from(
        "\nRestore of the latest snapshot into an empty folder, all three from efs-backup's bucket (its `files/` prefix):\n\n| tool | restore (s) | files/s | MiB/s | peak RSS (MiB) |\n|---|---:|---:|---:|---:|\n",
    );
    for (name, sum) in names.iter().zip(&sums) {
        if let Some(r) = sum {
            let secs = r.wall.as_secs_f64();
            md.push_str(&format!(
                "| {name} | {} | {:.0} | {:.0} | {} |\n",
                spread(r),
                files as f64 / secs,
                bytes as f64 / 1048576.0 / secs,
                mib(r.peak_rss_kib)
            ));
        }
    }
    md.push('\n');
    if let Some(ours) = &sums[0] {
        for (i, name, goal) in [(1, "rclone copy", " (goal ≤ 1.0)"), (2, "aws s3 sync", "")] {
            if let Some(r) = &sums[i] {
                md.push_str(&format!(
                    "- restore vs {name}: efs-backup takes {:.2}× its time{goal}\n",
                    ours.wall.as_secs_f64() / r.wall.as_secs_f64()
                ));
            }
        }
    }
    md
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = paths::bench_dir().join("efs-backup");
    std::fs::create_dir_all(&dir).unwrap();
    let tree = dir.join(if a.smoke {
        "tree-smoke".to_string()
    } else {
        format!("tree-{}", a.files)
    });
    eprintln!("generating {} …", tree.display());
    let (files, bytes) = generate(&tree, a.files, a.smoke);
    // The marker file is part of the tree for every tool.
    let files = files + 1;
    let binary = match &a.bin_dir {
        Some(d) => d.join("efs-backup"),
        None => paths::binary("efs-backup"),
    };

    let (server, endpoint) = start_server(&dir).await;
    let (k, s) = creds(&server);
    let env_for = |bucket: &str| -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", k),
            ("AWS_SECRET_ACCESS_KEY", s),
            ("S3_FORCE_PATH_STYLE", "true"),
            ("SOURCE_DIR", tree.to_str().unwrap()),
            ("BACKUP_BUCKET", bucket),
            ("BACKUP_PREFIX", "efs-backup/"),
            ("EXCLUDE", "none"),
            ("UPLOAD_CONCURRENCY", &a.concurrency.to_string()),
            (
                "ALLOW_UNVERSIONED_BUCKET",
                if matches!(server, Server::S3sFs(..)) {
                    "true"
                } else {
                    "false"
                },
            ),
            ("AWS_LAMBDA_LOG_LEVEL", "warn"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };

    // Each round: every tool, full then no-change, into fresh buckets; the order rotates so
    // that noise from the shared machine spreads over all three.
    let mut ours: Vec<(Run, Run)> = Vec::new();
    let mut rclones: Vec<(Run, Run)> = Vec::new();
    let mut awss: Vec<(Run, Run)> = Vec::new();
    // efs-backup, rclone copy, aws s3 sync.
    let mut restores: [Vec<Run>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..a.runs {
        let buckets = [
            format!("efs-backup-{round}"),
            format!("rclone-{round}"),
            format!("aws-{round}"),
        ];
        create_buckets(&endpoint, &server, &buckets).await;
        for step in 0..3 {
            match (round + step) % 3 {
                0 => {
                    eprintln!("round {round}: efs-backup full / no-change …");
                    let env = env_for(&buckets[0]);
                    let full = run_ours(&binary, &env).await;
                    let again = run_ours(&binary, &env).await;
                    ours.push((full, again));
                    // Restores from this bucket, each into an empty folder, the order rotating.
                    let files_prefix = format!("{}/efs-backup/files", buckets[0]);
                    for tool in 0..3 {
                        let target = dir.join(format!("restore-{round}-{tool}"));
                        let _ = std::fs::remove_dir_all(&target);
                        let run = match (round + tool) % 3 {
                            0 => {
                                eprintln!("round {round}: efs-backup restore …");
                                Some((0, restore_ours(&binary, &env, &target).await))
                            }
                            1 => {
                                eprintln!("round {round}: rclone copy restore …");
                                rclone_restore(
                                    &endpoint,
                                    &server,
                                    a.concurrency,
                                    &files_prefix,
                                    &target,
                                )
                                .map(|r| (1, r))
                            }
                            _ => {
                                eprintln!("round {round}: aws s3 sync restore …");
                                aws_restore(&endpoint, &server, &files_prefix, &target)
                                    .map(|r| (2, r))
                            }
                        };
                        if let Some((i, r)) = run {
                            assert_eq!(
                                files_under(&target),
                                (files as u64, bytes),
                                "restore {i} into {} is not the whole tree",
                                target.display()
                            );
                            restores[i].push(r);
                        }
                        let _ = std::fs::remove_dir_all(&target);
                    }
                    server.discard(&buckets[0]);
                }
                1 => {
                    eprintln!("round {round}: rclone sync full / no-change …");
                    let b = &buckets[1];
                    if let Some(full) = rclone(&tree, &endpoint, &server, a.concurrency, b) {
                        let again = rclone(&tree, &endpoint, &server, a.concurrency, b).unwrap();
                        rclones.push((full, again));
                        server.discard(&buckets[1]);
                    }
                }
                _ => {
                    eprintln!("round {round}: aws s3 sync full / no-change …");
                    let b = &buckets[2];
                    if let Some(full) = aws(&tree, &endpoint, &server, b) {
                        let again = aws(&tree, &endpoint, &server, b).unwrap();
                        awss.push((full, again));
                        server.discard(&buckets[2]);
                    }
                }
            }
        }
    }
    let server_label = match &server {
        Server::S3sFs(..) => "s3s-fs 0.14".to_string(),
        Server::Moto(_) => format!("{} (s3s-fs not installed)", server.name()),
    };
    drop(server);
    let ours_sum = summarize(&ours).expect("efs-backup ran");
    let rclone_sum = summarize(&rclones);
    let aws_sum = summarize(&awss);
    let (ours_full, ours_again) = (&ours_sum.0, &ours_sum.1);
    let rclone_runs = rclone_sum.as_ref().map(|(f, n)| (f, n));
    let aws_runs = aws_sum.as_ref().map(|(f, n)| (f, n));

    let mut rows = vec![("efs-backup".to_string(), ours_full, ours_again)];
    if let Some((f, n)) = &rclone_runs {
        rows.push((
            format!(
                "rclone sync (--transfers {0} --checkers {0})",
                a.concurrency
            ),
            *f,
            *n,
        ));
    }
    if let Some((f, n)) = &aws_runs {
        rows.push(("aws s3 sync (defaults)".to_string(), *f, *n));
    }
    let mut md = String::new();
    md.push_str(&format!(
        "### efs-backup benchmark{}\n\n{} files, {:.0} MiB (MediaWiki-shaped: `a/ab/` folders, most files 5–100 KB, {} large); server: {} on 127.0.0.1; efs-backup UPLOAD_CONCURRENCY={}; {} cores; median of {} round(s) (min–max), peak RSS the largest.\n\n",
        if a.smoke { " (smoke)" } else { "" },
        files,
        bytes as f64 / 1048576.0,
        if a.smoke { 1 } else { 3 },
        server_label,
        a.concurrency,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        a.runs,
    ));
    md.push_str("| tool | full backup (s) | files/s | peak RSS (MiB) | no-change run (s) | no-change uploads | no-change peak RSS (MiB) |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for (name, f, n) in &rows {
        md.push_str(&format!(
            "| {name} | {} | {:.0} | {} | {} | {} | {} |\n",
            spread(f),
            files as f64 / f.wall.as_secs_f64(),
            mib(f.peak_rss_kib),
            spread(n),
            n.uploads
                .map(|u| u.to_string())
                .unwrap_or_else(|| "?".into()),
            mib(n.peak_rss_kib),
        ));
    }
    md.push('\n');
    let ratio = |x: Duration, y: Duration| y.as_secs_f64() / x.as_secs_f64();
    if let Some((f, n)) = &rclone_runs {
        md.push_str(&format!(
            "- vs rclone: full {:.2}× as fast, no-change {:.2}× as fast\n",
            ratio(ours_full.wall, f.wall),
            ratio(ours_again.wall, n.wall)
        ));
    }
    if let Some((f, n)) = &aws_runs {
        md.push_str(&format!(
            "- vs aws s3 sync: full {:.2}× as fast (goal ≥ 2), no-change {:.2}× as fast (goal ≥ 10)\n",
            ratio(ours_full.wall, f.wall),
            ratio(ours_again.wall, n.wall)
        ));
    }
    md.push_str(&restore_table(&restores, files, bytes, a.concurrency));
    if rclone_runs.is_none() || aws_runs.is_none() {
        md.push_str("- references not installed were skipped (scripts/bench-efs-backup installs them outside --smoke)\n");
    }
    print!("{md}");
    std::fs::create_dir_all(a.out.parent().unwrap()).unwrap();
    std::fs::write(&a.out, &md).unwrap();
    eprintln!("written to {}", a.out.display());
    assert_eq!(
        ours_again.uploads,
        Some(0),
        "the no-change run uploaded files"
    );
    assert_eq!(
        ours_full.uploads,
        Some(files as u64),
        "the full run did not upload every file"
    );
}
