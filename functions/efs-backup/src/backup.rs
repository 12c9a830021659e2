//! A backup run: walk, plan, upload with a deadline watch, then manifest, `latest`, retention.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;
use shared::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::lease::RunLease;
use crate::manifest::{self, Entry, Header, Kind};
use crate::plan::{BackupPlan, Known, Upload, plan_backup};
use crate::retention::{RetentionPlan, plan_retention};
use crate::settings::Settings;
use crate::store::{CheckpointHeader, Latest, Store, StoredManifest};
use crate::upload::{Outcome, Uploader};
use crate::walk::{Skipped, walk};

/// Options from the event.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Print the plan; change nothing.
    pub dry_run: bool,
    /// Allow a snapshot of an empty source when the previous one had files.
    pub allow_empty: bool,
    /// Start over without the checkpoint, checking every stored version before reuse.
    pub rescan: bool,
}

/// The answer to a backup invocation.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BackupOutput {
    pub action: &'static str,
    /// `complete`, `partial` (a snapshot was written, but some paths could not be read or
    /// were refused by S3: `unreadable`, `refused`), `incomplete` (invoke again to resume),
    /// `busy` (another run holds the lease: nothing was done) or `dry_run`.
    pub status: &'static str,
    pub snapshot_id: String,
    pub previous_snapshot: Option<String>,
    /// When this invocation's walk of the tree began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walk_started_at: Option<chrono::DateTime<Utc>>,
    pub files_total: u64,
    pub dirs_total: u64,
    pub symlinks_total: u64,
    pub bytes_total: u64,
    /// Files uploaded by this invocation.
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    /// Files whose content was already stored (unchanged, or same hash).
    pub files_unchanged: u64,
    /// Files that disappeared since the previous snapshot (delete markers placed).
    pub files_deleted: u64,
    /// Files left for the next invocation (when incomplete).
    pub files_remaining: u64,
    pub bytes_remaining: u64,
    /// Files that changed on every attempt while being read (not in this snapshot).
    pub changed_during_read: Vec<String>,
    /// Entries that are never backed up (sockets, FIFOs, non-UTF-8 names), and why (first 100).
    pub skipped: Vec<Skipped>,
    pub skipped_total: u64,
    /// Folders and files that could not be read, and why (first 100): what was stored under
    /// them is kept in the snapshot as it was.
    pub unreadable: Vec<Skipped>,
    pub unreadable_total: u64,
    /// Files S3 refused for good (key too long, access denied), and why (first 100): a stored
    /// copy is kept, if any.
    pub refused: Vec<Skipped>,
    pub refused_total: u64,
    /// Stored entries kept as they were because their path could not be read or stored.
    pub entries_kept: u64,
    /// Temporary files of interrupted restores removed (`.name.efs-restore-…`).
    pub restore_temps_removed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPlan>,
    /// With status `busy`: the lease another run holds (who, and until when).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy: Option<shared::lease::Body>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSummary>,
    pub duration_ms: u64,
}

/// A dry run's plan, abridged.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PlanSummary {
    pub uploads: u64,
    pub upload_bytes: u64,
    pub deletes: u64,
    pub carried: u64,
    /// The first 100 paths to upload and delete.
    pub upload_paths: Vec<String>,
    pub delete_paths: Vec<String>,
}

const MAX_LISTED: usize = 100;

/// Runs (or resumes) a backup until done or until the deadline is near, holding the backup
/// lease ([`crate::lease`]); answers `busy`, having changed nothing, when another run holds it.
pub async fn run(
    store: &Store,
    settings: &Settings,
    deadline: Instant,
    opts: &BackupOptions,
) -> Result<BackupOutput, Error> {
    if opts.dry_run {
        return backup(store, settings, deadline, opts, None).await;
    }
    let stop_at = stop_time(settings, deadline);
    let mut lease = match RunLease::take(store, deadline, stop_at, settings.lease_grace).await? {
        Ok(lease) => lease,
        Err(holder) => return Ok(busy(holder)),
    };
    let result = backup(store, settings, deadline, opts, Some(&mut lease)).await;
    lease.release(store).await;
    result
}

/// When work stops to answer in time: `DEADLINE_MARGIN_MS` before the deadline.
pub fn stop_time(settings: &Settings, deadline: Instant) -> Instant {
    deadline
        .checked_sub(settings.deadline_margin)
        .unwrap_or_else(Instant::now)
}

/// The answer when another run holds the lease.
fn busy(holder: shared::lease::Body) -> BackupOutput {
    tracing::info!(?holder, "another backup run holds the lease; nothing done");
    BackupOutput {
        action: "backup",
        status: "busy",
        busy: Some(holder),
        ..Default::default()
    }
}

/// The backup itself; `lease` is held unless this is a dry run.
async fn backup(
    store: &Store,
    settings: &Settings,
    deadline: Instant,
    opts: &BackupOptions,
    lease: Option<&mut RunLease>,
) -> Result<BackupOutput, Error> {
    let started = Instant::now();
    let stop_at = stop_time(settings, deadline);

    let latest = store.latest().await?;
    // Kept compressed (about 15 bytes an entry) and read as a stream, in path order.
    let previous: Option<StoredManifest> = match &latest {
        Some(l) => Some(
            store
                .manifest_stream(&l.snapshot_id)
                .await?
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "the latest snapshot {} has no manifest at {}",
                        l.snapshot_id, l.manifest_key
                    ))
                })?,
        ),
        None => None,
    };
    let previous_id = previous.as_ref().map(|m| m.header.snapshot_id.clone());
    // A rescan replaces the checkpoint (readable or not): every path then counts as pending.
    let checkpoint = if opts.rescan {
        None
    } else {
        store.checkpoint().await?
    };
    let resumed = checkpoint.is_some();
    let (ck_header, mut done) = match checkpoint {
        Some((h, d)) => {
            tracing::info!(snapshot_id = %h.snapshot_id, files = d.len(), "resuming from checkpoint");
            (h, d)
        }
        None => {
            let now = Utc::now();
            (
                CheckpointHeader {
                    format: manifest::FORMAT.into(),
                    snapshot_id: manifest::snapshot_id(now),
                    created_at: now,
                    previous: previous_id.clone(),
                    pending: Default::default(),
                    rescan: opts.rescan,
                },
                Vec::new(),
            )
        }
    };

    // Written in path order from a map; sorted in case (the planner merges sorted lists).
    if !done.is_sorted_by(|a, b| a.path < b.path) {
        done.sort_by(|a, b| a.path.cmp(&b.path));
        done.dedup_by(|a, b| a.path == b.path);
    }

    let walk_started_at = Utc::now();
    let root = PathBuf::from(&settings.source_dir);
    let exclude = settings.exclude_set();
    let threads = settings.walk_threads;
    let walk_root = root.clone();
    let walked = tokio::task::spawn_blocking(move || walk(&walk_root, &exclude, threads))
        .await
        .map_err(|e| Error::Partial(format!("walk task failed: {e}")))?
        .map_err(|e| Error::io(format!("reading SOURCE_DIR {}", root.display()), e))?;
    let walk_ms = started.elapsed().as_millis();
    let entries_seen = walked.entries.len();
    let unreadable_paths: Vec<String> = walked.unreadable.iter().map(|u| u.path.clone()).collect();
    let mut ck_header = ck_header;
    let plan = plan_backup(
        Known {
            done: &done,
            pending: &ck_header.pending,
            unreadable: &unreadable_paths,
            rescan: ck_header.rescan,
        },
        previous.iter().flat_map(StoredManifest::entries),
        walked.entries,
    )?;
    tracing::info!(
        walk_ms,
        entries = entries_seen,
        uploads = plan.uploads.len(),
        upload_bytes = plan.upload_bytes(),
        deletes = plan.deletes.len(),
        "planned"
    );

    let mut out = BackupOutput {
        action: "backup",
        snapshot_id: ck_header.snapshot_id.clone(),
        previous_snapshot: previous_id.clone(),
        walk_started_at: Some(walk_started_at),
        skipped_total: walked.skipped.len() as u64,
        skipped: walked.skipped.into_iter().take(MAX_LISTED).collect(),
        entries_kept: plan.kept,
        ..Default::default()
    };
    for u in walked.unreadable {
        tracing::warn!(path = %u.path, reason = %u.reason, "could not be read; its stored entries are kept");
        out.note_unreadable(u);
    }

    if opts.dry_run {
        out.status = "dry_run";
        out.plan = Some(summary(&plan));
        fill_totals(
            &mut out,
            plan.carried
                .iter()
                .chain(plan.uploads.iter().map(|u| &u.entry)),
        );
        out.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(out);
    }
    let prev_files = plan.previous_files;
    let files_now =
        plan.carried.iter().filter(|e| e.kind == Kind::File).count() + plan.uploads.len();
    if files_now == 0 && prev_files > 0 && !opts.allow_empty {
        return Err(Error::Rejected(format!(
            "SOURCE_DIR {} has no files but snapshot {} has {prev_files}; is the file system mounted? \
             (send \"allow_empty\":true to record an empty snapshot)",
            settings.source_dir,
            previous_id.unwrap_or_default()
        )));
    }

    out.restore_temps_removed =
        remove_restore_temps(&root, walked.restore_temps, RESTORE_TEMP_MIN_AGE_SECONDS).await;

    // Every path this invocation may write is saved before the first write, and its
    // checkpoint entry dropped, so that a later invocation never takes a version stored there
    // on trust (it may have been replaced): the checkpoint's entries stay current.
    let pending_before = ck_header.pending.len();
    let writes: std::collections::HashSet<&str> = plan
        .uploads
        .iter()
        .map(|u| u.entry.path.as_str())
        .chain(plan.deletes.iter().map(String::as_str))
        .collect();
    ck_header
        .pending
        .extend(writes.iter().map(|p| p.to_string()));
    let (superseded, done): (Vec<Entry>, Vec<Entry>) = done
        .into_iter()
        .partition(|e| writes.contains(e.path.as_str()));
    drop(writes);
    if !resumed {
        store
            .start_run(&ck_header, settings.allow_unversioned)
            .await?;
    } else if ck_header.pending.len() > pending_before || !superseded.is_empty() {
        store.put_checkpoint(&ck_header, &done).await?;
    }

    // Upload, watching the deadline and saving progress now and then.
    let uploader = Arc::new(Uploader::new(
        store.clone(),
        root,
        settings.upload_concurrency,
        settings.max_read_mib_per_second,
    ));
    let files_in_flight = Arc::new(Semaphore::new(settings.upload_concurrency));
    let mut progress = Progress {
        stored: done.into_iter().map(|e| (e.path.clone(), e)).collect(),
        superseded: superseded
            .into_iter()
            .map(|e| (e.path.clone(), e))
            .collect(),
        ..Default::default()
    };
    let carried = plan.carried;
    let mut tasks: JoinSet<Result<Outcome, Error>> = JoinSet::new();
    let mut last_checkpoint = Instant::now();
    let mut uploads = plan.uploads.into_iter();

    // The deadline is watched while waiting for a slot and while draining too: multipart
    // uploads stop between parts once `stop` is set.
    let stop_timer = tokio::time::sleep_until(tokio::time::Instant::from_std(stop_at));
    tokio::pin!(stop_timer);
    let mut stopping = false;
    loop {
        if !stopping && Instant::now() >= stop_at {
            stopping = true;
            uploader.stop.store(true, Ordering::Relaxed);
        }
        let next = if stopping || progress.failure.is_some() {
            None
        } else {
            uploads.next()
        };
        let Some(up) = next else {
            // Drain what is in flight.
            tokio::select! {
                r = tasks.join_next() => match r {
                    Some(r) => {
                        progress.absorb(r, &mut out);
                        continue;
                    }
                    None => break,
                },
                _ = &mut stop_timer, if !stopping => {
                    stopping = true;
                    uploader.stop.store(true, Ordering::Relaxed);
                    continue;
                }
            }
        };
        // Wait for a slot, handling finished uploads meanwhile.
        let permit = loop {
            while let Some(r) = tasks.try_join_next() {
                progress.absorb(r, &mut out);
            }
            tokio::select! {
                p = files_in_flight.clone().acquire_owned() => break p.ok(),
                Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                    progress.absorb(r, &mut out);
                }
                _ = &mut stop_timer, if !stopping => {
                    stopping = true;
                    uploader.stop.store(true, Ordering::Relaxed);
                    break None;
                }
            }
        };
        let Some(permit) = permit else {
            progress.remaining.push(up);
            continue;
        };
        let u = uploader.clone();
        tasks.spawn(async move {
            let _permit = permit;
            u.upload(up).await
        });
        if last_checkpoint.elapsed() >= settings.checkpoint_interval {
            store
                .put_checkpoint(&ck_header, progress.stored.values())
                .await?;
            last_checkpoint = Instant::now();
        }
    }
    let Progress {
        mut stored,
        mut remaining,
        vanished,
        keep,
        failure,
        ..
    } = progress;
    remaining.extend(uploads);

    if let Some(e) = failure {
        // Save what was stored so a retry does not upload it again.
        store.put_checkpoint(&ck_header, stored.values()).await?;
        return Err(e);
    }
    if !remaining.is_empty() {
        store.put_checkpoint(&ck_header, stored.values()).await?;
        out.status = "incomplete";
        out.files_remaining = remaining.len() as u64;
        out.bytes_remaining = remaining.iter().map(|u| u.entry.size).sum();
        fill_totals(
            &mut out,
            carried
                .iter()
                .chain(stored.values())
                .chain(remaining.iter().map(|u| &u.entry)),
        );
        out.duration_ms = started.elapsed().as_millis() as u64;
        metrics::counter!("BackupIncomplete").increment(1);
        record_metrics(&out);
        return Ok(out);
    }

    // The previous snapshot's files at the paths that need one (rarely any: the manifest is
    // then read again, as a stream).
    let previous_at = {
        let wanted: BTreeSet<&str> = keep
            .iter()
            .chain(vanished.iter().map(|(p, _)| p))
            .map(String::as_str)
            .collect();
        previous_files_at(previous.as_ref(), &wanted)?
    };
    // A file that could not be read or stored keeps the copy stored before, if any.
    keep_stored(&mut stored, &keep, &previous_at);
    out.entries_kept += keep.iter().filter(|p| stored.contains_key(*p)).count() as u64;

    // Delete markers for files that are gone, so the bucket mirrors the tree.
    let mut deletes: Vec<String> = plan.deletes;
    // Files that vanished or kept changing are not in the snapshot; a stored copy of a
    // vanished file gets a delete marker, an unstable one stays.
    deletes.extend(
        vanished
            .into_iter()
            .filter(|(p, in_checkpoint)| *in_checkpoint || previous_at.contains_key(p))
            .map(|(p, _)| p),
    );
    drop(previous);
    deletes.retain(|p| in_snapshot(&carried, &stored, p).is_none_or(|e| e.kind != Kind::File));
    let deletes_total = deletes.len();
    let mut del_tasks: JoinSet<Result<(), Error>> = JoinSet::new();
    let del_sem = Arc::new(Semaphore::new(settings.upload_concurrency));
    for path in deletes {
        let permit = del_sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Partial("closed".into()))?;
        let store = store.clone();
        del_tasks.spawn(async move {
            let _p = permit;
            store.delete(&store.layout.file_key(&path)).await
        });
    }
    while let Some(r) = del_tasks.join_next().await {
        r.map_err(|e| Error::Partial(format!("delete task failed: {e}")))??;
    }
    out.files_deleted = deletes_total as u64;

    // The manifest, written last: the snapshot exists once it does; only by the lease's holder.
    if let Some(lease) = lease {
        lease.confirm(store).await?;
    }
    let (files, dirs, symlinks, bytes) = manifest::counts(snapshot_entries(&carried, &stored));
    let header = Header {
        format: manifest::FORMAT.into(),
        snapshot_id: ck_header.snapshot_id.clone(),
        created_at: ck_header.created_at,
        completed_at: Utc::now(),
        source_dir: settings.source_dir.clone(),
        files,
        dirs,
        symlinks,
        bytes,
        exclude: settings.exclude.clone(),
        previous: previous_id,
    };
    // Written from the two sorted lists, never concatenated.
    let version = store
        .put_manifest(&header, snapshot_entries(&carried, &stored))
        .await?;
    store
        .set_latest(&Latest {
            snapshot_id: header.snapshot_id.clone(),
            manifest_key: store.layout.manifest_key(&header.snapshot_id),
            manifest_version_id: version,
        })
        .await?;
    store.delete(&store.layout.checkpoint_key()).await?;
    out.status = if out.unreadable_total + out.refused_total > 0 {
        "partial"
    } else {
        "complete"
    };
    out.files_total = files;
    out.dirs_total = dirs;
    out.symlinks_total = symlinks;
    out.bytes_total = bytes;
    out.files_unchanged = files.saturating_sub(out.files_uploaded);

    // Retention, by the rule shared with list/restore/verify.
    out.retention = Some(prune(store, settings, false).await?);
    out.duration_ms = started.elapsed().as_millis() as u64;
    record_metrics(&out);
    Ok(out)
}

/// The `prune` action: applies the retention rule under the backup lease (`None`: another
/// run holds it), or only plans it.
pub async fn prune_now(
    store: &Store,
    settings: &Settings,
    deadline: Instant,
    dry_run: bool,
) -> Result<Option<RetentionPlan>, Error> {
    if dry_run {
        return prune(store, settings, true).await.map(Some);
    }
    let stop_at = stop_time(settings, deadline);
    let Ok(lease) = RunLease::take(store, deadline, stop_at, settings.lease_grace).await? else {
        return Ok(None);
    };
    let result = prune(store, settings, false).await;
    lease.release(store).await;
    result.map(Some)
}

/// Applies the retention rule now (or only plans it).
pub async fn prune(
    store: &Store,
    settings: &Settings,
    dry_run: bool,
) -> Result<RetentionPlan, Error> {
    let snapshots = store.list_snapshots().await?;
    // `latest` is read after the listing: a run finishing meanwhile names a snapshot the
    // listing does not hold, which is then not deleted either.
    let latest = store.latest().await?.map(|l| l.snapshot_id);
    let plan = plan_retention(
        &snapshots,
        settings.keep_snapshots,
        settings.retention_days,
        Utc::now(),
        &latest.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    if !dry_run {
        for id in &plan.delete {
            store.delete(&store.layout.manifest_key(id)).await?;
            tracing::info!(snapshot_id = %id, "snapshot pruned");
        }
        metrics::counter!("SnapshotsPruned").increment(plan.delete.len() as u64);
    }
    Ok(plan)
}

/// What the uploads came to so far.
#[derive(Default)]
struct Progress {
    /// Files stored by this run (checkpoint included), by path.
    stored: BTreeMap<String, Entry>,
    /// Uploads not done for the deadline.
    remaining: Vec<Upload>,
    /// Files gone before they could be read, and whether this run's checkpoint had them.
    vanished: Vec<(String, bool)>,
    /// Files that could not be read or were refused: their stored copy stays.
    keep: Vec<String>,
    /// Checkpoint entries of files this invocation uploads again: back in `stored` when the
    /// upload ends without a write (changing, unreadable, refused, stopped).
    superseded: std::collections::HashMap<String, Entry>,
    failure: Option<Error>,
}

impl Progress {
    fn absorb(
        &mut self,
        r: Result<Result<Outcome, Error>, tokio::task::JoinError>,
        out: &mut BackupOutput,
    ) {
        let o = match r {
            Err(e) => {
                self.failure
                    .get_or_insert(Error::Partial(format!("upload task failed: {e}")));
                return;
            }
            Ok(Err(e)) => {
                self.failure.get_or_insert(e);
                return;
            }
            Ok(Ok(o)) => o,
        };
        match o {
            Outcome::Stored { entry, uploaded } => {
                if uploaded {
                    out.files_uploaded += 1;
                    out.bytes_uploaded += entry.size;
                }
                self.stored.insert(entry.path.clone(), entry);
            }
            Outcome::Unstable(p) => {
                self.unsuperseded(&p);
                tracing::warn!(path = %p, "file kept changing while being read; not in this snapshot");
                out.changed_during_read.push(p);
            }
            Outcome::Vanished(p) => {
                let had = self.stored.remove(&p).is_some() | self.superseded.remove(&p).is_some();
                self.vanished.push((p, had));
            }
            Outcome::Unreadable(path, reason) => {
                self.unsuperseded(&path);
                tracing::warn!(path = %path, reason, "file could not be read; its stored copy is kept");
                self.keep.push(path.clone());
                out.note_unreadable(Skipped { path, reason });
            }
            Outcome::Refused(path, reason) => {
                self.unsuperseded(&path);
                tracing::warn!(path = %path, reason, "S3 refused the file; its stored copy is kept");
                self.keep.push(path.clone());
                out.refused_total += 1;
                if out.refused.len() < MAX_LISTED {
                    out.refused.push(Skipped { path, reason });
                }
            }
            Outcome::Cancelled(u) => {
                self.unsuperseded(&u.entry.path);
                self.remaining.push(u);
            }
        }
    }

    /// An upload of `path` ended without writing: its checkpoint entry is current again.
    fn unsuperseded(&mut self, path: &str) {
        if let Some(e) = self.superseded.remove(path) {
            self.stored.insert(e.path.clone(), e);
        }
    }
}

impl BackupOutput {
    fn note_unreadable(&mut self, u: Skipped) {
        self.unreadable_total += 1;
        if self.unreadable.len() < MAX_LISTED {
            self.unreadable.push(u);
        }
    }
}

/// The new snapshot's entries, in path order: the carried list (sorted by path, no path
/// twice) merged with what this run stored; at a path both hold, the carried entry.
fn snapshot_entries<'a>(
    carried: &'a [Entry],
    stored: &'a BTreeMap<String, Entry>,
) -> impl Iterator<Item = &'a Entry> {
    let mut carried = carried.iter().peekable();
    let mut stored = stored.values().peekable();
    std::iter::from_fn(move || match (carried.peek(), stored.peek()) {
        (Some(c), Some(s)) if s.path < c.path => stored.next(),
        (Some(c), Some(s)) => {
            if s.path == c.path {
                stored.next();
            }
            carried.next()
        }
        (Some(_), None) => carried.next(),
        (None, _) => stored.next(),
    })
}

/// The new snapshot's entry at `path`, if any (see [`snapshot_entries`]).
fn in_snapshot<'a>(
    carried: &'a [Entry],
    stored: &'a BTreeMap<String, Entry>,
    path: &str,
) -> Option<&'a Entry> {
    match carried.binary_search_by(|e| e.path.as_str().cmp(path)) {
        Ok(i) => Some(&carried[i]),
        Err(_) => stored.get(path),
    }
}

/// The previous snapshot's files at the `wanted` paths, read as a stream (nothing to read
/// when none is wanted).
fn previous_files_at(
    previous: Option<&StoredManifest>,
    wanted: &BTreeSet<&str>,
) -> Result<BTreeMap<String, Entry>, Error> {
    let mut found = BTreeMap::new();
    let Some(previous) = previous.filter(|_| !wanted.is_empty()) else {
        return Ok(found);
    };
    for e in previous.entries() {
        let e = e?;
        if e.kind == Kind::File && wanted.contains(e.path.as_str()) {
            found.insert(e.path.clone(), e);
        }
    }
    Ok(found)
}

/// Puts back the previous snapshot's entry of each `keep` path this run did not store.
fn keep_stored(
    stored: &mut BTreeMap<String, Entry>,
    keep: &[String],
    previous: &BTreeMap<String, Entry>,
) {
    for p in keep {
        if let Some(e) = previous.get(p)
            && e.is_stored_file()
            && !stored.contains_key(p)
        {
            stored.insert(p.clone(), e.clone());
        }
    }
}

/// Removes temporary files interrupted restores left (unchanged for an hour, so a restore
/// still writing one is left alone); returns how many.
async fn remove_restore_temps(root: &std::path::Path, temps: Vec<String>, min_age_s: i64) -> u64 {
    let mut removed = 0;
    for rel in temps {
        let p = root.join(&rel);
        let old = tokio::fs::symlink_metadata(&p).await.is_ok_and(|md| {
            use std::os::unix::fs::MetadataExt;
            let age = Utc::now().timestamp() - md.ctime();
            md.is_file() && age >= min_age_s
        });
        if !old {
            continue;
        }
        match tokio::fs::remove_file(&p).await {
            Ok(()) => {
                tracing::info!(path = %rel, "removed a temporary file of an interrupted restore");
                removed += 1;
            }
            Err(e) => {
                tracing::warn!(path = %rel, error = %e, "could not remove a restore's temporary file")
            }
        }
    }
    removed
}

/// How long a restore's temporary file must be left unchanged before a backup removes it.
const RESTORE_TEMP_MIN_AGE_SECONDS: i64 = 3600;

fn fill_totals<'a>(out: &mut BackupOutput, entries: impl Iterator<Item = &'a Entry>) {
    for e in entries {
        match e.kind {
            Kind::File => {
                out.files_total += 1;
                out.bytes_total += e.size;
            }
            Kind::Dir => out.dirs_total += 1,
            Kind::Symlink => out.symlinks_total += 1,
        }
    }
}

fn summary(plan: &BackupPlan) -> PlanSummary {
    PlanSummary {
        uploads: plan.uploads.len() as u64,
        upload_bytes: plan.upload_bytes(),
        deletes: plan.deletes.len() as u64,
        carried: plan.carried.len() as u64,
        upload_paths: plan
            .uploads
            .iter()
            .take(MAX_LISTED)
            .map(|u| u.entry.path.clone())
            .collect(),
        delete_paths: plan.deletes.iter().take(MAX_LISTED).cloned().collect(),
    }
}

fn record_metrics(out: &BackupOutput) {
    metrics::counter!("FilesUploaded").increment(out.files_uploaded);
    metrics::counter!("BytesUploaded").increment(out.bytes_uploaded);
    metrics::counter!("FilesDeleted").increment(out.files_deleted);
    metrics::counter!("FilesChangedDuringRead").increment(out.changed_during_read.len() as u64);
    metrics::counter!("EntriesSkipped").increment(out.skipped_total);
    metrics::counter!("UnreadablePaths").increment(out.unreadable_total);
    metrics::counter!("FilesRefused").increment(out.refused_total);
    metrics::gauge!("FilesTotal").set(out.files_total as f64);
    metrics::gauge!("BytesTotal").set(out.bytes_total as f64);
    metrics::gauge!("FilesRemaining").set(out.files_remaining as f64);
    metrics::histogram!("BackupDurationMs").record(out.duration_ms as f64);
}

#[cfg(test)]
mod tests {
    //! Failure paths moto cannot produce: S3 failing in the middle of a multipart upload.
    use super::*;
    use aws_sdk_s3::Client;
    use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadOutput;
    use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
    use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectOutput};
    use aws_sdk_s3::operation::upload_part::UploadPartError;
    use aws_sdk_s3::types::error::NoSuchKey;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;
    use shared::Env;

    fn settings_for(dir: &std::path::Path) -> Settings {
        Settings::from_env(&Env::from_pairs([
            ("SOURCE_DIR", dir.to_str().unwrap()),
            ("BACKUP_BUCKET", "b"),
        ]))
        .unwrap()
    }

    fn store_of(s3: Client) -> Store {
        Store {
            s3,
            bucket: "b".into(),
            layout: crate::manifest::Layout {
                prefix: String::new(),
            },
        }
    }

    #[tokio::test]
    async fn a_file_s3_denies_is_skipped_and_reported_and_the_snapshot_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.png"), b"png").unwrap();
        std::fs::write(dir.path().join("denied.png"), b"no").unwrap();
        let get = mock!(Client::get_object)
            .then_error(|| GetObjectError::NoSuchKey(NoSuchKey::builder().build()));
        let deny = mock!(Client::put_object)
            .match_requests(|r| r.key() == Some("files/denied.png"))
            .then_error(|| {
                PutObjectError::generic(
                    ErrorMetadata::builder()
                        .code("AccessDenied")
                        .message("denied by a bucket policy")
                        .build(),
                )
            });
        let put = mock!(Client::put_object)
            .then_output(|| PutObjectOutput::builder().version_id("v1").build());
        let delete = mock!(Client::delete_object).then_output(|| {
            aws_sdk_s3::operation::delete_object::DeleteObjectOutput::builder().build()
        });
        let list = mock!(Client::list_objects_v2).then_output(|| {
            aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output::builder().build()
        });
        let s3 = mock_client!(
            aws_sdk_s3,
            RuleMode::MatchAny,
            [&get, &deny, &put, &delete, &list]
        );
        let deadline = Instant::now() + std::time::Duration::from_secs(600);
        let out = run(
            &store_of(s3),
            &settings_for(dir.path()),
            deadline,
            &BackupOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(out.status, "partial");
        assert_eq!(out.refused_total, 1);
        assert_eq!(out.refused[0].path, "denied.png");
        assert!(out.refused[0].reason.contains("AccessDenied"), "{out:?}");
        assert_eq!(out.files_total, 1);
        assert_eq!(out.files_uploaded, 1);
        // The lease, the run's start, ok.png, the manifest and latest.
        assert_eq!(put.num_calls(), 5);
    }

    #[tokio::test]
    async fn a_restores_old_temporary_files_are_removed_and_fresh_ones_left() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".a.efs-restore-1"), b"x").unwrap();
        let temps = vec![".a.efs-restore-1".to_string()];
        assert_eq!(
            remove_restore_temps(dir.path(), temps.clone(), 3600).await,
            0
        );
        assert!(dir.path().join(".a.efs-restore-1").exists());
        assert_eq!(remove_restore_temps(dir.path(), temps, 0).await, 1);
        assert!(!dir.path().join(".a.efs-restore-1").exists());
    }

    #[tokio::test]
    async fn a_failed_part_aborts_the_upload_and_saves_progress() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("small.png"), b"png").unwrap();
        std::fs::write(dir.path().join("big.webm"), vec![7u8; 9 * 1024 * 1024]).unwrap();
        let get = mock!(Client::get_object)
            .then_error(|| GetObjectError::NoSuchKey(NoSuchKey::builder().build()));
        let put = mock!(Client::put_object)
            .then_output(|| PutObjectOutput::builder().version_id("v1").build());
        let create = mock!(Client::create_multipart_upload).then_output(|| {
            CreateMultipartUploadOutput::builder()
                .upload_id("u1")
                .build()
        });
        let part = mock!(Client::upload_part).then_error(|| {
            UploadPartError::generic(
                ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("denied")
                    .build(),
            )
        });
        let complete = mock!(Client::complete_multipart_upload)
            .then_output(|| CompleteMultipartUploadOutput::builder().build());
        let abort = mock!(Client::abort_multipart_upload)
            .then_output(|| AbortMultipartUploadOutput::builder().build());
        let release = mock!(Client::delete_object).then_output(|| {
            aws_sdk_s3::operation::delete_object::DeleteObjectOutput::builder().build()
        });
        let s3 = mock_client!(
            aws_sdk_s3,
            RuleMode::MatchAny,
            [&get, &put, &create, &part, &complete, &abort, &release]
        );
        let settings = Settings::from_env(&Env::from_pairs([
            ("SOURCE_DIR", dir.path().to_str().unwrap()),
            ("BACKUP_BUCKET", "b"),
        ]))
        .unwrap();
        let store = Store {
            s3,
            bucket: "b".into(),
            layout: crate::manifest::Layout {
                prefix: String::new(),
            },
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(600);
        let err = run(&store, &settings, deadline, &BackupOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "AwsApi", "{err}");
        assert!(err.to_string().contains("UploadPart"), "{err}");
        assert_eq!(abort.num_calls(), 1, "the multipart upload was not aborted");
        assert_eq!(complete.num_calls(), 0, "a failed upload was completed");
        // The lease, the run's start, the small file and the checkpoint saved on failure; no
        // manifest; the lease given back.
        assert_eq!(put.num_calls(), 4);
        assert_eq!(release.num_calls(), 1);
    }
}
