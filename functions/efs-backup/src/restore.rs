//! Restore: a snapshot (or some of its paths) into a directory, byte-identical.
//!
//! [`plan_restore`] is pure: the selected entries and what already exists at the target →
//! directories to create, files and symlinks to write, entries already in place, conflicts.
//! Nothing existing is replaced unless `overwrite` is set, and directories never are. A file
//! already at the target with the snapshot's size, mtime and mode counts as restored (with
//! `overwrite`, its SHA-256 must match too), so a restore that ran out of time is resumed by
//! sending the same event again. Without `overwrite`, a file is put in place by a link that
//! fails if something appeared at the target meanwhile: nothing is ever replaced.
//!
//! At a million files the snapshot is never held decoded: [`run`] streams the manifest, in
//! path order, through the same rules ([`Selection`], [`decide`]) into a [`Planner`] that
//! keeps the directories and one bit per file (write it or not), then streams it again to
//! download what the bits name.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};
use shared::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::manifest::{Entry, Kind, Manifest};
use crate::store::Store;

/// What is at a target path now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    Missing,
    File {
        size: u64,
        mtime_ns: i64,
        mode: u32,
        /// Hex SHA-256 of the content, when it was read (only to check a file in place).
        sha256: Option<String>,
    },
    Dir,
    Symlink {
        target: String,
    },
    Other,
}

/// What a restore does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestorePlan {
    /// Directories, parents first (created if missing; metadata applied at the end).
    pub dirs: Vec<Entry>,
    /// Files to download.
    pub files: Vec<Entry>,
    /// Symlinks to create.
    pub symlinks: Vec<Entry>,
    /// Paths already restored (same size, mtime and mode, and with `overwrite` the same
    /// SHA-256; same link target).
    pub in_place: Vec<String>,
    /// Paths where something else exists and would be replaced.
    pub conflicts: Vec<String>,
}

/// Which entries a restore of some path prefixes takes: those under a prefix, and the
/// directories above a prefix that holds anything (all entries when there is no prefix).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The prefixes that hold at least one entry.
    prefixes: Vec<String>,
    /// The directories above them.
    ancestors: BTreeSet<String>,
    all: bool,
}

/// Whether `path` is `prefix` or inside it.
fn is_under(path: &str, prefix: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

impl Selection {
    /// The selection of `prefixes` (`/` trimmed; none or only empty ones: everything) in a
    /// snapshot whose entries have the given `paths` (read once, only when there is a
    /// prefix). An error reading `paths` is returned as it is.
    pub fn new<P: AsRef<str>, E>(
        prefixes: &[String],
        paths: impl IntoIterator<Item = Result<P, E>>,
    ) -> Result<Selection, E> {
        let mut wanted: Vec<(&str, bool)> = prefixes
            .iter()
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .map(|p| (p, false))
            .collect();
        if wanted.is_empty() {
            return Ok(Selection {
                all: true,
                ..Default::default()
            });
        }
        for path in paths {
            let path = path?;
            for (p, hit) in wanted.iter_mut().filter(|(_, hit)| !hit) {
                *hit = is_under(path.as_ref(), p);
            }
        }
        let prefixes: Vec<String> = wanted
            .into_iter()
            .filter(|(_, hit)| *hit)
            .map(|(p, _)| p.to_string())
            .collect();
        let mut ancestors = BTreeSet::new();
        for p in &prefixes {
            let mut a = p.as_str();
            while let Some(i) = a.rfind('/') {
                a = &a[..i];
                ancestors.insert(a.to_string());
            }
        }
        Ok(Selection {
            prefixes,
            ancestors,
            all: false,
        })
    }

    /// Whether the restore takes `e`.
    pub fn takes(&self, e: &Entry) -> bool {
        self.all
            || self.prefixes.iter().any(|p| is_under(&e.path, p))
            || (e.kind == Kind::Dir && self.ancestors.contains(&e.path))
    }
}

/// Entries under any of `prefixes` (all when empty), with the directories that contain them.
pub fn select<'a>(entries: &'a [Entry], prefixes: &[String]) -> Vec<&'a Entry> {
    let paths = entries
        .iter()
        .map(|e| Ok::<_, std::convert::Infallible>(e.path.as_str()));
    let Ok(selection) = Selection::new(prefixes, paths);
    entries.iter().filter(|e| selection.takes(e)).collect()
}

/// What a restore does with one selected entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A directory: created if missing, its metadata applied at the end.
    Dir,
    /// A file or symlink to write.
    Write,
    /// Already restored.
    InPlace,
    /// Something else exists there and would be replaced.
    Conflict,
}

/// What to do with `e` given what is at its target path `now`.
pub fn decide(e: &Entry, now: &Existing, overwrite: bool) -> Action {
    match (e.kind, now) {
        (Kind::Dir, Existing::Missing | Existing::Dir) => Action::Dir,
        (Kind::Dir, _) | (_, Existing::Dir) => Action::Conflict,
        (
            Kind::File,
            Existing::File {
                size,
                mtime_ns,
                mode,
                sha256,
            },
        ) if *size == e.size
            && *mtime_ns == e.mtime_ns
            && *mode == e.mode
            && (!overwrite || sha256.is_some() && *sha256 == e.sha256) =>
        {
            Action::InPlace
        }
        (Kind::Symlink, Existing::Symlink { target }) if Some(target) == e.target.as_ref() => {
            Action::InPlace
        }
        (_, Existing::Missing) => Action::Write,
        (_, Existing::File { .. } | Existing::Symlink { .. }) if overwrite => Action::Write,
        _ => Action::Conflict,
    }
}

/// Plans a restore of `selected` given what exists at each target path (`existing` reads a
/// file's content when asked to and its size, mtime and mode match the entry's).
pub fn plan_restore(
    selected: &[&Entry],
    existing: impl Fn(&Entry, bool) -> Existing,
    overwrite: bool,
) -> RestorePlan {
    let mut planner = Planner::new(usize::MAX);
    for e in selected {
        let now = existing(e, overwrite);
        planner.add((*e).clone(), decide(e, &now, overwrite));
    }
    planner.finish();
    planner.listed
}

/// A restore plan built entry by entry, in manifest order, without keeping the files: the
/// directories, and for each selected file or symlink (in order) whether it is written.
#[derive(Debug, Clone, Default)]
pub struct Planner {
    /// Every selected directory, in path order once finished.
    pub dirs: Vec<Entry>,
    /// For each selected file or symlink, in manifest order: written (`true`) or not.
    pub write: Vec<bool>,
    pub selected: u64,
    pub files: u64,
    pub bytes: u64,
    pub symlinks: u64,
    pub in_place: u64,
    pub conflicts: u64,
    /// The plan's lists, each up to the limit given to [`Planner::new`] (the first
    /// [`MAX_LISTED`] conflicts are always listed).
    pub listed: RestorePlan,
    limit: usize,
}

/// Conflicts named in a refusal, and entries of each list in a dry run's plan.
pub const MAX_LISTED: usize = 1000;

impl Planner {
    /// A planner that lists up to `limit` entries of each kind in [`Planner::listed`].
    pub fn new(limit: usize) -> Planner {
        Planner {
            limit,
            ..Default::default()
        }
    }

    /// Adds the next selected entry, decided.
    pub fn add(&mut self, e: Entry, action: Action) {
        self.selected += 1;
        let room = |n: usize, limit: usize| n < limit;
        match action {
            Action::Dir => {
                if room(self.listed.dirs.len(), self.limit) {
                    self.listed.dirs.push(e.clone());
                }
                self.dirs.push(e);
            }
            Action::Write => {
                self.write.push(true);
                if e.kind == Kind::File {
                    self.files += 1;
                    self.bytes += e.size;
                    if room(self.listed.files.len(), self.limit) {
                        self.listed.files.push(e);
                    }
                } else {
                    self.symlinks += 1;
                    if room(self.listed.symlinks.len(), self.limit) {
                        self.listed.symlinks.push(e);
                    }
                }
            }
            Action::InPlace => {
                self.write.push(false);
                self.in_place += 1;
                if room(self.listed.in_place.len(), self.limit) {
                    self.listed.in_place.push(e.path);
                }
            }
            Action::Conflict => {
                if e.kind != Kind::Dir {
                    self.write.push(false);
                }
                self.conflicts += 1;
                if room(self.listed.conflicts.len(), self.limit.max(MAX_LISTED)) {
                    self.listed.conflicts.push(e.path);
                }
            }
        }
    }

    /// Sorts the directories by path (parents first).
    pub fn finish(&mut self) {
        self.dirs.sort_by(|a, b| a.path.cmp(&b.path));
        self.listed.dirs.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

/// What is at `path` now, for `wanted`; with `check_content`, a file that matches its size,
/// mtime and mode is read and hashed.
pub fn existing(path: &Path, wanted: &Entry, check_content: bool) -> Existing {
    match std::fs::symlink_metadata(path) {
        Err(_) => Existing::Missing,
        Ok(md) if md.is_dir() => Existing::Dir,
        Ok(md) if md.is_file() => {
            let (size, mode) = (md.size(), md.mode() & 0o7777);
            let mtime_ns = md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec();
            let same = size == wanted.size && mtime_ns == wanted.mtime_ns && mode == wanted.mode;
            Existing::File {
                size,
                mtime_ns,
                mode,
                sha256: (check_content && same)
                    .then(|| sha256_of_file(path))
                    .flatten(),
            }
        }
        Ok(md) if md.file_type().is_symlink() => Existing::Symlink {
            target: std::fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default(),
        },
        Ok(_) => Existing::Other,
    }
}

/// Hex SHA-256 of a file's content; `None` when it cannot be read.
fn sha256_of_file(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf).ok()? {
            0 => return Some(hex::encode(h.finalize())),
            n => h.update(&buf[..n]),
        }
    }
}

/// Puts `tmp` at `target` unless something exists there (then `AlreadyExists`, and `tmp`
/// stays): a hard link, which never replaces, then the temporary name is removed. (NFS, and
/// so EFS, has no `RENAME_NOREPLACE`; it has links.)
pub fn place_new(tmp: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::hard_link(tmp, target)?;
    std::fs::remove_file(tmp)
}

/// The answer to a restore.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreOutput {
    pub action: &'static str,
    /// `complete`, `incomplete` (send the same event again) or `dry_run`.
    pub status: &'static str,
    pub snapshot_id: String,
    pub target_dir: String,
    pub files_restored: u64,
    pub bytes_restored: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub already_in_place: u64,
    pub files_remaining: u64,
    /// Owner changes refused (the function is not root): uid/gid left as created.
    pub ownership_not_restored: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<RestorePlan>,
    pub duration_ms: u64,
}

/// Restore options from the event.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub target_dir: String,
    pub paths: Vec<String>,
    pub overwrite: bool,
    pub dry_run: bool,
}

/// Restores `manifest` (the selected paths) under `req.target_dir`: plans it all first (any
/// conflict refuses the restore with nothing written), then writes.
pub async fn run(
    store: &Store,
    manifest: &Manifest,
    req: &RestoreRequest,
    concurrency: usize,
    stop_at: Instant,
) -> Result<RestoreOutput, Error> {
    let started = Instant::now();
    let root = PathBuf::from(&req.target_dir);
    let selection = Selection::new(&req.paths, manifest.entries().map(|r| r.map(|e| e.path)))?;
    let limit = if req.dry_run { MAX_LISTED } else { 0 };
    let plan = plan_streamed(manifest, &selection, &root, req.overwrite, limit).await?;
    if plan.selected == 0 {
        return Err(Error::NotFound(format!(
            "no entries under {:?} in snapshot {}",
            req.paths, manifest.header.snapshot_id
        )));
    }
    let mut out = RestoreOutput {
        action: "restore",
        snapshot_id: manifest.header.snapshot_id.clone(),
        target_dir: req.target_dir.clone(),
        already_in_place: plan.in_place,
        ..Default::default()
    };
    if plan.conflicts > 0 {
        let shown: Vec<&String> = plan.listed.conflicts.iter().take(10).collect();
        return Err(Error::Rejected(format!(
            "{} path(s) already exist in {} and differ from the snapshot (send \"overwrite\":true to replace files; directories are never replaced): {:?}",
            plan.conflicts, req.target_dir, shown
        )));
    }
    if req.dry_run {
        out.status = "dry_run";
        out.files_remaining = plan.files;
        out.plan = Some(plan.listed);
        out.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(out);
    }

    tokio::fs::create_dir_all(&root)
        .await
        .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    for d in &plan.dirs {
        let p = root.join(&d.path);
        tokio::fs::create_dir_all(&p)
            .await
            .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
    }
    let symlinks = write_files(
        store,
        manifest,
        &selection,
        &plan,
        &root,
        req.overwrite,
        concurrency,
        stop_at,
        &mut out,
    )
    .await?;
    for s in &symlinks {
        restore_symlink(&root, s, req.overwrite, &mut out)?;
    }
    if out.files_remaining == 0 {
        // Directory metadata last, deepest first: writing children changes a directory's mtime.
        for d in plan.dirs.iter().rev() {
            let p = root.join(&d.path);
            if !set_owner(&p, d, false) {
                out.ownership_not_restored += 1;
            }
            set_mode(&p, d.mode)?;
            let t = filetime_of(d);
            filetime::set_file_times(&p, t, t)
                .map_err(|e| Error::io(format!("setting times of {}", p.display()), e))?;
            out.dirs += 1;
        }
    }
    out.status = if out.files_remaining == 0 {
        "complete"
    } else {
        "incomplete"
    };
    out.duration_ms = started.elapsed().as_millis() as u64;
    metrics::counter!("FilesRestored").increment(out.files_restored);
    metrics::counter!("BytesRestored").increment(out.bytes_restored);
    Ok(out)
}

/// Entries looked at per blocking task while planning.
const PLAN_BATCH: usize = 2048;

/// Plans the restore of `manifest`'s selected entries as they stream, looking at the target
/// (blocking calls, a batch at a time, off the async threads); lists up to `limit` entries.
async fn plan_streamed(
    manifest: &Manifest,
    selection: &Selection,
    root: &Path,
    overwrite: bool,
    limit: usize,
) -> Result<Planner, Error> {
    let mut planner = Planner::new(limit);
    let mut entries = manifest
        .entries()
        .filter(|r| r.as_ref().map_or(true, |e| selection.takes(e)));
    loop {
        let batch = entries
            .by_ref()
            .take(PLAN_BATCH)
            .collect::<Result<Vec<Entry>, Error>>()?;
        if batch.is_empty() {
            break;
        }
        let r = root.to_path_buf();
        let decided = tokio::task::spawn_blocking(move || {
            batch
                .into_iter()
                .map(|e| {
                    let now = existing(&r.join(&e.path), &e, overwrite);
                    let action = decide(&e, &now, overwrite);
                    (e, action)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::Partial(format!("restore planning failed: {e}")))?;
        for (e, action) in decided {
            planner.add(e, action);
        }
    }
    planner.finish();
    Ok(planner)
}

/// Downloads the files `plan` writes, streaming `manifest` again, `concurrency` at a time,
/// until `stop_at` (the rest counts in `files_remaining`); returns the symlinks to create.
#[allow(clippy::too_many_arguments)]
async fn write_files(
    store: &Store,
    manifest: &Manifest,
    selection: &Selection,
    plan: &Planner,
    root: &Path,
    replace: bool,
    concurrency: usize,
    stop_at: Instant,
    out: &mut RestoreOutput,
) -> Result<Vec<Entry>, Error> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut tasks: JoinSet<Result<(u64, bool), Error>> = JoinSet::new();
    let mut first_error = None;
    let mut symlinks = Vec::new();
    let mut written = plan.write.iter();
    for e in manifest.entries() {
        let e = e?;
        if !selection.takes(&e) || e.kind == Kind::Dir {
            continue;
        }
        if !written.next().copied().unwrap_or(false) {
            continue;
        }
        if e.kind == Kind::Symlink {
            symlinks.push(e);
            continue;
        }
        if first_error.is_some() || Instant::now() >= stop_at {
            out.files_remaining += 1;
            continue;
        }
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Partial("closed".into()))?;
        while let Some(r) = tasks.try_join_next() {
            tally(r, out, &mut first_error);
        }
        let store = store.clone();
        let root = root.to_path_buf();
        tasks.spawn(async move {
            let _p = permit;
            restore_file(&store, &root, &e, replace).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        tally(r, out, &mut first_error);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(symlinks),
    }
}

/// Creates one symlink of the plan, with its owner and mtime.
fn restore_symlink(
    root: &Path,
    s: &Entry,
    replace: bool,
    out: &mut RestoreOutput,
) -> Result<(), Error> {
    let p = root.join(&s.path);
    let target = s.target.clone().unwrap_or_default();
    match place_symlink(&target, &p, replace) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Rejected(format!(
                "{} appeared while restoring and was left as it is (send \"overwrite\":true to replace it)",
                p.display()
            )));
        }
        Err(e) => return Err(Error::io(format!("creating symlink {}", p.display()), e)),
    }
    if !set_owner(&p, s, true) {
        out.ownership_not_restored += 1;
    }
    let t = filetime_of(s);
    filetime::set_symlink_file_times(&p, t, t)
        .map_err(|e| Error::io(format!("setting times of {}", p.display()), e))?;
    out.symlinks += 1;
    Ok(())
}

fn tally(
    r: Result<Result<(u64, bool), Error>, tokio::task::JoinError>,
    out: &mut RestoreOutput,
    first_error: &mut Option<Error>,
) {
    match r {
        Ok(Ok((bytes, owner_ok))) => {
            out.files_restored += 1;
            out.bytes_restored += bytes;
            if !owner_ok {
                out.ownership_not_restored += 1;
            }
        }
        Ok(Err(e)) => {
            first_error.get_or_insert(e);
        }
        Err(e) => {
            first_error.get_or_insert(Error::Partial(format!("restore task failed: {e}")));
        }
    }
}

fn filetime_of(e: &Entry) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        e.mtime_ns.div_euclid(1_000_000_000),
        e.mtime_ns.rem_euclid(1_000_000_000) as u32,
    )
}

fn set_mode(p: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting mode of {}", p.display()), e))
}

/// Sets uid/gid; `false` when not permitted (the function does not run as root).
fn set_owner(p: &Path, e: &Entry, symlink: bool) -> bool {
    let r = if symlink {
        std::os::unix::fs::lchown(p, Some(e.uid), Some(e.gid))
    } else {
        std::os::unix::fs::chown(p, Some(e.uid), Some(e.gid))
    };
    match r {
        Ok(()) => true,
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            // Already right (e.g. restoring one's own files) counts as done.
            std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == e.uid && m.gid() == e.gid)
        }
        Err(_) => false,
    }
}

/// A temporary name in `target`'s folder: `.efs-restore-<32 hex>`, 45 bytes whatever the
/// target's name, so a target up to NAME_MAX (255 bytes) still has one.
pub fn temp_beside(target: &Path) -> PathBuf {
    target.with_file_name(format!(
        "{}{}",
        crate::walk::RESTORE_TEMP_MARK,
        uuid::Uuid::new_v4().simple()
    ))
}

/// Creates the symlink `p` → `target`. With `replace`, whatever file or symlink is at `p` is
/// replaced in one rename (a directory never is); without, nothing that exists is touched:
/// `AlreadyExists` when something appeared at `p` since the plan.
pub fn place_symlink(target: &str, p: &Path, replace: bool) -> std::io::Result<()> {
    if !replace {
        return std::os::unix::fs::symlink(target, p);
    }
    let tmp = temp_beside(p);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, p).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Downloads one file version into a temporary file beside its target, checks its SHA-256,
/// applies mode, owner and mtime, then renames it into place (`replace`), or else links it
/// there only if nothing appeared at the target since the plan.
async fn restore_file(
    store: &Store,
    root: &Path,
    e: &Entry,
    replace: bool,
) -> Result<(u64, bool), Error> {
    let target = root.join(&e.path);
    let key = store.layout.file_key(&e.path);
    let tmp = temp_beside(&target);
    let res = async {
        let obj = store
            .s3
            .get_object()
            .bucket(&store.bucket)
            .key(&key)
            .set_version_id(e.version_id.clone())
            .send()
            .await
            .map_err(|err| Error::aws("S3", "GetObject", err))?;
        let mut body = obj.body;
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|err| Error::io(format!("creating {}", tmp.display()), err))?;
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| {
                Error::Unreachable(format!(
                    "S3 GetObject {key}: reading the body failed: {err}"
                ))
            })?;
            hasher.update(&chunk);
            n += chunk.len() as u64;
            f.write_all(&chunk)
                .await
                .map_err(|err| Error::io(format!("writing {}", tmp.display()), err))?;
        }
        f.flush()
            .await
            .map_err(|err| Error::io(format!("writing {}", tmp.display()), err))?;
        f.sync_all()
            .await
            .map_err(|err| Error::io(format!("syncing {}", tmp.display()), err))?;
        drop(f);
        let sha = hex::encode(hasher.finalize());
        if Some(sha.as_str()) != e.sha256.as_deref() || n != e.size {
            return Err(Error::Rejected(format!(
                "{} (version {}) does not match the snapshot: sha256 {sha}, {n} bytes",
                key,
                e.version_id.as_deref().unwrap_or("?")
            )));
        }
        let owner = set_owner(&tmp, e, false);
        set_mode(&tmp, e.mode)?;
        let t = filetime_of(e);
        filetime::set_file_times(&tmp, t, t)
            .map_err(|err| Error::io(format!("setting times of {}", tmp.display()), err))?;
        if replace {
            tokio::fs::rename(&tmp, &target)
                .await
                .map_err(|err| Error::io(format!("renaming into {}", target.display()), err))?;
        } else {
            let (t, d) = (tmp.clone(), target.clone());
            let placed = tokio::task::spawn_blocking(move || place_new(&t, &d))
                .await
                .map_err(|err| Error::Partial(format!("placing a file failed: {err}")))?;
            match placed {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::Rejected(format!(
                        "{} appeared while restoring and was left as it is (send \"overwrite\":true to replace it)",
                        target.display()
                    )));
                }
                Err(err) => {
                    return Err(Error::io(format!("linking into {}", target.display()), err));
                }
            }
        }
        Ok((n, owner))
    }
    .await;
    if res.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, kind: Kind) -> Entry {
        crate::manifest::test_entry(path, kind)
    }

    /// The selection as it was made before the manifest streamed (the model).
    fn select_whole<'a>(entries: &'a [Entry], prefixes: &[String]) -> Vec<&'a Entry> {
        let prefixes: Vec<&str> = prefixes
            .iter()
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .collect();
        if prefixes.is_empty() {
            return entries.iter().collect();
        }
        let under = |p: &str| prefixes.iter().any(|x| is_under(p, x));
        let mut ancestors = BTreeSet::new();
        for e in entries.iter().filter(|e| under(&e.path)) {
            let mut p = e.path.as_str();
            while let Some(i) = p.rfind('/') {
                p = &p[..i];
                ancestors.insert(p);
            }
        }
        entries
            .iter()
            .filter(|e| {
                under(&e.path) || (e.kind == Kind::Dir && ancestors.contains(e.path.as_str()))
            })
            .collect()
    }

    /// The plan as it was made before the manifest streamed (the model).
    fn plan_whole(
        selected: &[&Entry],
        existing: impl Fn(&Entry, bool) -> Existing,
        overwrite: bool,
    ) -> RestorePlan {
        let mut plan = RestorePlan::default();
        for e in selected {
            let now = existing(e, overwrite);
            match (e.kind, &now) {
                (Kind::Dir, Existing::Missing | Existing::Dir) => plan.dirs.push((*e).clone()),
                (Kind::Dir, _) => plan.conflicts.push(e.path.clone()),
                (_, Existing::Dir) => plan.conflicts.push(e.path.clone()),
                (
                    Kind::File,
                    Existing::File {
                        size,
                        mtime_ns,
                        mode,
                        sha256,
                    },
                ) if *size == e.size
                    && *mtime_ns == e.mtime_ns
                    && *mode == e.mode
                    && (!overwrite || sha256.is_some() && *sha256 == e.sha256) =>
                {
                    plan.in_place.push(e.path.clone())
                }
                (Kind::Symlink, Existing::Symlink { target })
                    if Some(target) == e.target.as_ref() =>
                {
                    plan.in_place.push(e.path.clone())
                }
                (_, Existing::Missing) | (_, Existing::File { .. } | Existing::Symlink { .. })
                    if matches!(now, Existing::Missing) || overwrite =>
                {
                    if e.kind == Kind::File {
                        plan.files.push((*e).clone())
                    } else {
                        plan.symlinks.push((*e).clone())
                    }
                }
                _ => plan.conflicts.push(e.path.clone()),
            }
        }
        plan.dirs.sort_by(|a, b| a.path.cmp(&b.path));
        plan
    }

    /// What a test's target holds at an entry's path: choice `c` among the cases that matter.
    fn existing_case(c: u8, check: bool) -> Existing {
        let file = |size, sha: Option<&str>| Existing::File {
            size,
            mtime_ns: 10,
            mode: 0o644,
            sha256: if check { sha.map(str::to_string) } else { None },
        };
        match c % 9 {
            0 | 1 => Existing::Missing,
            2 => file(3, Some("x")),
            3 => file(3, Some("damaged")),
            4 => file(3, None),
            5 => file(4, Some("x")),
            6 => Existing::Dir,
            7 => Existing::Symlink {
                target: if c > 100 {
                    "t".into()
                } else {
                    "elsewhere".into()
                },
            },
            _ => Existing::Other,
        }
    }

    proptest::proptest! {
        /// The streamed selection and planner decide as the whole-manifest ones did.
        #[test]
        fn the_streamed_plan_is_the_whole_one(
            paths in proptest::collection::btree_set("[a-]{1,2}(/[a-]{1,2}){0,2}", 0..40),
            kinds in proptest::collection::vec(0u8..3, 40),
            cases in proptest::collection::vec(proptest::prelude::any::<u8>(), 40),
            prefixes in proptest::collection::vec("/?[a-]{1,2}(/[a-]{1,2}){0,1}/?", 0..3),
            overwrite in proptest::prelude::any::<bool>(),
        ) {
            let entries: Vec<Entry> = paths
                .iter()
                .zip(&kinds)
                .map(|(p, k)| e(p, [Kind::File, Kind::Dir, Kind::Symlink][*k as usize]))
                .collect();
            let case_of = |e: &Entry| {
                cases[entries.iter().position(|x| x.path == e.path).unwrap_or(0)]
            };
            let existing = |e: &Entry, check: bool| existing_case(case_of(e), check);
            let model_selected = select_whole(&entries, &prefixes);
            proptest::prop_assert_eq!(&select(&entries, &prefixes), &model_selected);
            let model = plan_whole(&model_selected, existing, overwrite);
            proptest::prop_assert_eq!(&plan_restore(&model_selected, existing, overwrite), &model);

            // As `run` streams it: a selection from the paths, then entry by entry.
            let selection = Selection::new(
                &prefixes,
                entries.iter().map(|e| Ok::<_, ()>(e.path.clone())),
            ).unwrap();
            let mut planner = Planner::new(usize::MAX);
            for x in entries.iter().filter(|x| selection.takes(x)) {
                planner.add(x.clone(), decide(x, &existing(x, overwrite), overwrite));
            }
            planner.finish();
            proptest::prop_assert_eq!(&planner.listed, &model);
            proptest::prop_assert_eq!(planner.dirs, model.dirs.clone());
            proptest::prop_assert_eq!(planner.selected as usize, model_selected.len());
            // The bits name exactly the files and symlinks the model writes, in order.
            let written: Vec<Entry> = model_selected
                .iter()
                .filter(|x| x.kind != Kind::Dir)
                .zip(&planner.write)
                .filter(|(_, w)| **w)
                .map(|(x, _)| (*x).clone())
                .collect();
            let mut want = model.files.clone();
            want.extend(model.symlinks.clone());
            want.sort_by(|a, b| a.path.cmp(&b.path));
            proptest::prop_assert_eq!(written, want);
            proptest::prop_assert_eq!(
                planner.write.len(),
                model_selected.iter().filter(|x| x.kind != Kind::Dir).count()
            );
            proptest::prop_assert_eq!(
                (planner.files, planner.symlinks, planner.in_place, planner.conflicts),
                (
                    model.files.len() as u64,
                    model.symlinks.len() as u64,
                    model.in_place.len() as u64,
                    model.conflicts.len() as u64
                )
            );
        }
    }

    #[test]
    fn a_planner_lists_only_up_to_its_limit_but_counts_everything() {
        let mut p = Planner::new(2);
        for i in 0..5 {
            p.add(e(&format!("f{i}"), Kind::File), Action::Write);
            p.add(e(&format!("c{i}"), Kind::File), Action::Conflict);
        }
        p.finish();
        assert_eq!((p.files, p.conflicts, p.write.len()), (5, 5, 10));
        assert_eq!(p.listed.files.len(), 2);
        assert_eq!(
            p.listed.conflicts.len(),
            5,
            "conflicts are listed up to MAX_LISTED"
        );
        let mut p = Planner::new(0);
        p.add(e("f", Kind::File), Action::Write);
        assert!(p.listed.files.is_empty());
    }

    /// Restores each `(path, stored bytes, snapshot bytes)` with `restore_file` from a mocked
    /// bucket into `root`; returns each result.
    async fn restore_files(
        root: &Path,
        files: &[(&str, Vec<u8>, Vec<u8>)],
        replace: bool,
    ) -> Vec<Result<(u64, bool), Error>> {
        use aws_sdk_s3::Client;
        use aws_sdk_s3::operation::get_object::GetObjectOutput;
        use aws_sdk_s3::primitives::ByteStream;
        use aws_smithy_mocks::{RuleMode, mock, mock_client};
        let rules: Vec<_> = files
            .iter()
            .map(|(path, stored, _)| {
                let (key, stored) = (format!("files/{path}"), stored.clone());
                mock!(Client::get_object)
                    .match_requests(move |r| r.key() == Some(key.as_str()))
                    .then_output(move || {
                        GetObjectOutput::builder()
                            .body(ByteStream::from(stored.clone()))
                            .build()
                    })
            })
            .collect();
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules.iter());
        let store = Store {
            s3,
            bucket: "b".into(),
            layout: crate::manifest::Layout {
                prefix: String::new(),
            },
        };
        let mut out = Vec::new();
        for (path, _, snapshot) in files {
            let entry = Entry {
                size: snapshot.len() as u64,
                sha256: Some(hex::encode(Sha256::digest(snapshot))),
                mode: 0o640,
                ..e(path, Kind::File)
            };
            out.push(restore_file(&store, root, &entry, replace).await);
        }
        out
    }

    #[tokio::test]
    async fn a_file_is_placed_only_whole_checked_and_never_over_what_appeared() {
        let d = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..(9u64 << 20) + 3).map(|i| (i % 251) as u8).collect();
        std::fs::write(d.path().join("appeared"), b"uploaded meanwhile").unwrap();
        let r = restore_files(
            d.path(),
            &[
                ("small", b"abc".to_vec(), b"abc".to_vec()),
                ("big", big.clone(), big.clone()),
                ("damaged", b"abX".to_vec(), b"abc".to_vec()),
                ("longer", b"abcd".to_vec(), b"abc".to_vec()),
                ("appeared", b"abc".to_vec(), b"abc".to_vec()),
            ],
            false,
        )
        .await;
        assert_eq!(r[0].as_ref().unwrap().0, 3);
        assert_eq!(std::fs::read(d.path().join("small")).unwrap(), b"abc");
        let md = std::fs::metadata(d.path().join("small")).unwrap();
        assert_eq!((md.mode() & 0o7777, md.mtime_nsec()), (0o640, 10));
        assert_eq!(std::fs::read(d.path().join("big")).unwrap(), big);
        for (i, name) in [(2, "damaged"), (3, "longer")] {
            let err = r[i].as_ref().unwrap_err();
            assert_eq!(err.error_type(), "Rejected", "{err}");
            assert!(!d.path().join(name).exists(), "{name} was placed");
        }
        assert_eq!(r[4].as_ref().unwrap_err().error_type(), "Rejected");
        assert_eq!(
            std::fs::read(d.path().join("appeared")).unwrap(),
            b"uploaded meanwhile"
        );
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["appeared", "big", "small"],
            "no temporary file is left"
        );
        // With overwrite, what is there is replaced.
        let r = restore_files(
            d.path(),
            &[("appeared", b"abc".to_vec(), b"abc".to_vec())],
            true,
        )
        .await;
        assert!(r[0].is_ok());
        assert_eq!(std::fs::read(d.path().join("appeared")).unwrap(), b"abc");
    }

    #[test]
    fn selects_prefixes_with_their_parent_directories() {
        let all = vec![
            e("a", Kind::Dir),
            e("a/ab", Kind::Dir),
            e("a/ab/Foo.png", Kind::File),
            e("a/abc", Kind::File),
            e("b", Kind::Dir),
            e("b/x", Kind::File),
        ];
        let paths = |v: Vec<&Entry>| v.into_iter().map(|e| e.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(select(&all, &[])).len(), 6);
        assert_eq!(
            paths(select(&all, &["a/ab/".into()])),
            ["a", "a/ab", "a/ab/Foo.png"]
        );
        assert_eq!(paths(select(&all, &["b/x".into()])), ["b", "b/x"]);
        assert!(select(&all, &["zzz".into()]).is_empty());
    }

    #[test]
    fn never_replaces_without_overwrite_and_never_replaces_directories() {
        let f = e("f", Kind::File);
        let l = e("l", Kind::Symlink);
        let d = e("d", Kind::Dir);
        let sel = vec![&f, &l, &d];
        // Nothing there: everything is written.
        let p = plan_restore(&sel, |_, _| Existing::Missing, false);
        assert_eq!((p.files.len(), p.symlinks.len(), p.dirs.len()), (1, 1, 1));
        // Already restored: nothing to do.
        let p = plan_restore(
            &sel,
            |e, _| match e.path.as_str() {
                "f" => Existing::File {
                    size: 3,
                    mtime_ns: 10,
                    mode: 0o644,
                    sha256: None,
                },
                "l" => Existing::Symlink { target: "t".into() },
                _ => Existing::Dir,
            },
            false,
        );
        assert_eq!(p.in_place, ["f", "l"]);
        assert!(p.files.is_empty() && p.conflicts.is_empty());
        // Something different: conflict, unless overwrite.
        let other = |e: &Entry, _| match e.path.as_str() {
            "f" => Existing::File {
                size: 4,
                mtime_ns: 10,
                mode: 0o644,
                sha256: None,
            },
            "l" => Existing::Symlink {
                target: "elsewhere".into(),
            },
            _ => Existing::File {
                size: 1,
                mtime_ns: 1,
                mode: 0o644,
                sha256: None,
            },
        };
        let p = plan_restore(&sel, other, false);
        assert_eq!(p.conflicts, ["f", "l", "d"]);
        let p = plan_restore(&sel, other, true);
        assert_eq!(
            p.conflicts,
            ["d"],
            "a file is never replaced by a directory"
        );
        assert_eq!(p.files.len(), 1);
        let p = plan_restore(&[&f], |_, _| Existing::Dir, true);
        assert_eq!(p.conflicts, ["f"], "a directory is never replaced");
    }

    #[test]
    fn overwrite_checks_the_content_of_a_file_that_looks_in_place() {
        let f = e("f", Kind::File);
        let at = |sha: Option<&str>| {
            let sha = sha.map(str::to_string);
            move |_: &Entry, check: bool| Existing::File {
                size: 3,
                mtime_ns: 10,
                mode: 0o644,
                sha256: if check { sha.clone() } else { None },
            }
        };
        // Damaged with size, mtime and mode intact: only overwrite looks, and repairs it.
        let p = plan_restore(&[&f], at(Some("damaged")), false);
        assert_eq!(p.in_place, ["f"]);
        let p = plan_restore(&[&f], at(Some("damaged")), true);
        assert_eq!(p.files, vec![f.clone()]);
        let p = plan_restore(&[&f], at(None), true);
        assert_eq!(p.files.len(), 1, "unreadable content is not in place");
        let p = plan_restore(&[&f], at(Some("x")), true);
        assert_eq!(p.in_place, ["f"]);
    }

    #[test]
    fn a_symlink_never_replaces_what_appeared_meanwhile_unless_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("Logo.png");
        std::fs::write(&p, b"uploaded after the plan").unwrap();
        let err = place_symlink("a/ab/Logo.png", &p, false).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"uploaded after the plan");
        place_symlink("a/ab/Logo.png", &p, true).unwrap();
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new("a/ab/Logo.png"));
        let dir = d.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("x"), b"x").unwrap();
        assert!(
            place_symlink("t", &dir, true).is_err(),
            "a directory is never replaced"
        );
        assert!(dir.join("x").exists());
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary name is left behind");
    }

    #[test]
    fn a_name_of_255_bytes_has_a_temporary_name_that_fits() {
        let d = tempfile::tempdir().unwrap();
        let name = format!("20261201000000!{}.png", "A".repeat(255 - 19));
        assert_eq!(name.len(), 255);
        let target = d.path().join(&name);
        let tmp = temp_beside(&target);
        let tmp_name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(tmp_name.len() <= 255, "{}", tmp_name.len());
        assert!(crate::walk::is_restore_temp(tmp_name));
        std::fs::write(&tmp, b"x").unwrap();
        place_new(&tmp, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"x");
    }

    #[test]
    fn a_file_that_appeared_meanwhile_is_never_replaced() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, target) = (d.path().join(".t.efs-restore-1"), d.path().join("t"));
        std::fs::write(&tmp, b"restored").unwrap();
        std::fs::write(&target, b"uploaded meanwhile").unwrap();
        let err = place_new(&tmp, &target).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"uploaded meanwhile");
        std::fs::remove_file(&target).unwrap();
        place_new(&tmp, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"restored");
        assert!(!tmp.exists());
    }
}
