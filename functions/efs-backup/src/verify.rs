//! `list` and `verify`.
//!
//! [`sample`] is pure: it picks the files `verify` re-reads, streaming the manifest.

use std::collections::BinaryHeap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use shared::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::manifest::{Entry, Kind, Manifest};
use crate::retention::{SnapshotRef, plan_retention};
use crate::settings::Settings;
use crate::store::Store;

/// The snapshots the retention rule offers now (newest first).
pub async fn offered(store: &Store, settings: &Settings) -> Result<Vec<SnapshotRef>, Error> {
    let all = store.list_snapshots().await?;
    let latest = store.latest().await?.map(|l| l.snapshot_id);
    let plan = plan_retention(
        &all,
        settings.keep_snapshots,
        settings.retention_days,
        Utc::now(),
        &latest.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut kept: Vec<SnapshotRef> = all
        .into_iter()
        .filter(|s| plan.keep.contains(&s.id))
        .collect();
    kept.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    Ok(kept)
}

/// One snapshot in `list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub snapshot_id: String,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub files: Option<u64>,
    pub bytes: Option<u64>,
    pub manifest_key: String,
}

/// The answer to `list`.
#[derive(Debug, Clone, Serialize)]
pub struct ListOutput {
    pub action: &'static str,
    pub status: &'static str,
    pub latest: Option<String>,
    pub snapshots: Vec<Listed>,
    /// A backup run in progress (its checkpoint), if any.
    pub in_progress: Option<String>,
}

/// Lists the snapshots on offer, newest first, with their headers' counts.
pub async fn list(store: &Store, settings: &Settings) -> Result<ListOutput, Error> {
    let snaps = offered(store, settings).await?;
    let mut tasks = JoinSet::new();
    for (i, s) in snaps.iter().enumerate() {
        let store = store.clone();
        let id = s.id.clone();
        tasks.spawn(async move { (i, store.manifest_header(&id).await) });
    }
    let mut headers = vec![None; snaps.len()];
    while let Some(r) = tasks.join_next().await {
        let (i, h) = r.map_err(|e| Error::Partial(format!("list task failed: {e}")))?;
        headers[i] = h?;
    }
    let latest = store.latest().await?.map(|l| l.snapshot_id);
    let in_progress = store.checkpoint().await?.map(|(h, _)| h.snapshot_id);
    Ok(ListOutput {
        action: "list",
        status: "complete",
        latest,
        snapshots: snaps
            .into_iter()
            .zip(headers)
            .map(|(s, h)| Listed {
                manifest_key: store.layout.manifest_key(&s.id),
                snapshot_id: s.id,
                created_at: s.created_at,
                completed_at: h.as_ref().map(|h| h.completed_at),
                files: h.as_ref().map(|h| h.files),
                bytes: h.as_ref().map(|h| h.bytes),
            })
            .collect(),
        in_progress,
    })
}

/// A file whose stored content does not match the snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub path: String,
    pub version_id: Option<String>,
    pub problem: String,
}

/// The answer to `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyOutput {
    pub action: &'static str,
    pub status: &'static str,
    pub snapshot_id: String,
    pub files_in_snapshot: u64,
    pub checked: u64,
    pub bytes_checked: u64,
    pub failed: Vec<Mismatch>,
}

/// A file in the sample, ordered by its salted hash, then by its position in the manifest (as
/// a stable sort would order equal hashes).
struct Picked {
    key: (Vec<u8>, u64),
    entry: Entry,
}

impl PartialEq for Picked {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Picked {}
impl PartialOrd for Picked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Picked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// Picks up to `n` files at random (a random salt orders them by hash), in that order: the
/// `n` smallest salted hashes, kept in a heap of `n` while the entries stream by, so a
/// million-entry snapshot is never held. An error reading `entries` is returned as it is.
pub fn sample<E>(
    entries: impl IntoIterator<Item = Result<Entry, E>>,
    n: usize,
    salt: &[u8],
) -> Result<Vec<Entry>, E> {
    let mut heap: BinaryHeap<Picked> = BinaryHeap::new();
    for (i, e) in entries.into_iter().enumerate() {
        let e = e?;
        if e.kind != Kind::File || n == 0 {
            continue;
        }
        let mut h = Sha256::new();
        h.update(salt);
        h.update(e.path.as_bytes());
        let key = (h.finalize().to_vec(), i as u64);
        if heap.len() < n {
            heap.push(Picked { key, entry: e });
        } else if heap.peek().is_some_and(|top| top.key > key) {
            heap.pop();
            heap.push(Picked { key, entry: e });
        }
    }
    Ok(heap
        .into_sorted_vec()
        .into_iter()
        .map(|p| p.entry)
        .collect())
}

/// Re-reads `n` sampled objects of a snapshot and checks size and SHA-256.
///
/// Any mismatch or missing version is a `PartialFailure` error listing them.
pub async fn verify(
    store: &Store,
    m: &Manifest,
    n: usize,
    concurrency: usize,
) -> Result<VerifyOutput, Error> {
    let picked = sample(m.entries(), n, uuid::Uuid::new_v4().as_bytes())?;
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut tasks: JoinSet<Result<(u64, Option<Mismatch>), Error>> = JoinSet::new();
    for e in picked {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Partial("closed".into()))?;
        let store = store.clone();
        tasks.spawn(async move {
            let _p = permit;
            check(&store, &e).await
        });
    }
    let mut out = VerifyOutput {
        action: "verify",
        status: "complete",
        snapshot_id: m.header.snapshot_id.clone(),
        files_in_snapshot: m.header.files,
        checked: 0,
        bytes_checked: 0,
        failed: Vec::new(),
    };
    while let Some(r) = tasks.join_next().await {
        let (bytes, mismatch) =
            r.map_err(|e| Error::Partial(format!("verify task failed: {e}")))??;
        out.checked += 1;
        out.bytes_checked += bytes;
        out.failed.extend(mismatch);
    }
    metrics::counter!("FilesVerified").increment(out.checked);
    metrics::counter!("VerifyFailures").increment(out.failed.len() as u64);
    if !out.failed.is_empty() {
        let shown: Vec<String> = out
            .failed
            .iter()
            .take(10)
            .map(|f| format!("{}: {}", f.path, f.problem))
            .collect();
        return Err(Error::Partial(format!(
            "verify {}: {} of {} checked files do not match: {}",
            out.snapshot_id,
            out.failed.len(),
            out.checked,
            shown.join("; ")
        )));
    }
    Ok(out)
}

async fn check(store: &Store, e: &Entry) -> Result<(u64, Option<Mismatch>), Error> {
    let key = store.layout.file_key(&e.path);
    let mismatch = |problem: String| Mismatch {
        path: e.path.clone(),
        version_id: e.version_id.clone(),
        problem,
    };
    let res = store
        .s3
        .get_object()
        .bucket(&store.bucket)
        .key(&key)
        .set_version_id(e.version_id.clone())
        .send()
        .await;
    let obj = match res {
        Ok(o) => o,
        Err(err) => {
            let err = Error::aws("S3", "GetObject", err);
            return match err.aws_code() {
                Some("NoSuchKey" | "NoSuchVersion" | "InvalidArgument" | "NotFound") => {
                    Ok((0, Some(mismatch(format!("missing: {err}")))))
                }
                _ => Err(err),
            };
        }
    };
    let mut body = obj.body;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|err| Error::Unreachable(format!("S3 GetObject {key}: {err}")))?;
        h.update(&chunk);
        n += chunk.len() as u64;
    }
    let sha = hex::encode(h.finalize());
    if n != e.size {
        return Ok((n, Some(mismatch(format!("{n} bytes, expected {}", e.size)))));
    }
    if Some(sha.as_str()) != e.sha256.as_deref() {
        return Ok((
            n,
            Some(mismatch(format!(
                "sha256 {sha}, expected {}",
                e.sha256.as_deref().unwrap_or("?")
            ))),
        ));
    }
    Ok((n, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(path: String, kind: Kind) -> Entry {
        crate::manifest::test_entry(&path, kind)
    }

    /// The sample as it was taken before it streamed: every file hashed, sorted, the first `n`.
    fn sample_whole(entries: &[Entry], n: usize, salt: &[u8]) -> Vec<Entry> {
        let mut files: Vec<(Vec<u8>, &Entry)> = entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| {
                let mut h = Sha256::new();
                h.update(salt);
                h.update(e.path.as_bytes());
                (h.finalize().to_vec(), e)
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files.into_iter().take(n).map(|(_, e)| e.clone()).collect()
    }

    proptest! {
        #[test]
        fn the_streamed_sample_is_the_whole_sorted_one(
            paths in prop::collection::btree_set("[a-c]{1,3}(/[a-c]{1,3}){0,2}", 0..60),
            dirs in prop::collection::vec(any::<bool>(), 60),
            n in 0usize..70,
            salt in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            let entries: Vec<Entry> = paths
                .into_iter()
                .zip(&dirs)
                .map(|(p, d)| file(p, if *d { Kind::Dir } else { Kind::File }))
                .collect();
            let streamed =
                sample(entries.iter().cloned().map(Ok::<_, ()>), n, &salt).unwrap();
            prop_assert_eq!(streamed, sample_whole(&entries, n, &salt));
        }
    }

    #[test]
    fn a_stream_error_is_returned() {
        let entries = vec![Ok(file("a".into(), Kind::File)), Err("corrupt")];
        assert_eq!(sample(entries, 5, b"s"), Err("corrupt"));
    }
}
