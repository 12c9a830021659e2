//! The backup diff: previous snapshot + this run's progress + directory walk → what to do.
//!
//! Pure: no I/O. A file is unchanged when its size, mtime and inode match the entry it is
//! compared with (the checkpoint of this run first, then the previous snapshot); its content
//! is then carried over (same SHA-256, same S3 version), unless it comes from the previous
//! snapshot and this run may have written `files/<path>` since (a `pending` path: that version
//! may no longer be current), in which case it is read again and its version checked. The
//! checkpoint's entries are current by construction (an invocation drops from it every path
//! it is about to upload, before it writes anything). Whatever lies under a path that could
//! not be read keeps its stored entries: nothing is deleted for want of a look. Mode, uid and
//! gid are always taken from the walk, since they don't need new content.
//!
//! At a million files every copy counts: the previous snapshot comes in as a stream in path
//! order (never held decoded), the walk is sorted once and becomes the carried list in place,
//! and the three are merged like sorted lists, with no map of paths.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::manifest::{Entry, Kind};

/// One file whose content must be read (and uploaded unless it hashes the same as before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upload {
    /// The file as walked (no hash or version yet).
    pub entry: Entry,
    /// The stored entry at the same path with the same size, if any: when the content hashes
    /// to the same SHA-256 and its version is still the current one of `files/<path>`, the
    /// version is reused and nothing is uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Entry>,
}

/// What a backup run does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct BackupPlan {
    /// Entries that go into the manifest as they are, in path order: directories, symlinks,
    /// unchanged files, and the stored entries under paths that could not be read.
    pub carried: Vec<Entry>,
    /// Files to read and upload, in path order.
    pub uploads: Vec<Upload>,
    /// Paths whose object `files/<path>` gets a delete marker: stored before, gone now (in
    /// path order).
    pub deletes: Vec<String>,
    /// Stored entries kept as they were because their path could not be read (in `carried`).
    pub kept: u64,
    /// Files in the previous snapshot.
    pub previous_files: u64,
}

impl BackupPlan {
    /// Bytes the uploads will read.
    pub fn upload_bytes(&self) -> u64 {
        self.uploads.iter().map(|u| u.entry.size).sum()
    }
}

/// What the run knows besides the walk and the previous snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    /// Files this run already stored (from its checkpoint), sorted by path, no path twice;
    /// their versions are current.
    pub done: &'a [Entry],
    /// Paths this run may have written since the previous snapshot (uploads and delete
    /// markers it planned in any invocation): their stored versions may no longer be current.
    pub pending: &'a BTreeSet<String>,
    /// Folders and files the walk could not read (`""`: it is not known what was missed).
    pub unreadable: &'a [String],
    /// Every path counts as pending (a rescan: what the run may have written is not known).
    pub rescan: bool,
}

fn same_content(stored: &Entry, seen: &Entry) -> bool {
    stored.is_stored_file()
        && seen.kind == Kind::File
        && stored.size == seen.size
        && stored.mtime_ns == seen.mtime_ns
        && (stored.ino == 0 || seen.ino == 0 || stored.ino == seen.ino)
}

/// Moves an entry out, leaving an empty one (no allocation) to be dropped.
fn take_entry(e: &mut Entry) -> Entry {
    std::mem::replace(
        e,
        Entry {
            path: String::new(),
            kind: Kind::File,
            target: None,
            size: 0,
            mtime_ns: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            ino: 0,
            sha256: None,
            version_id: None,
        },
    )
}

/// Whether `path` is `under` or inside it (`""` holds everything).
pub fn is_under(path: &str, under: &str) -> bool {
    under.is_empty()
        || path == under
        || (path.starts_with(under) && path.as_bytes().get(under.len()) == Some(&b'/'))
}

/// The stored entries (checkpoint and previous snapshot), merged path by path.
struct Stored<'a, I, E> {
    done: &'a [Entry],
    previous: I,
    /// The previous snapshot's next entry, read ahead.
    next: Option<Entry>,
    error: Option<E>,
    previous_files: u64,
}

/// The stored entries at one path: the checkpoint's, the previous snapshot's.
type AtPath<'a> = (Option<&'a Entry>, Option<Entry>);

impl<'a, I: Iterator<Item = Result<Entry, E>>, E> Stored<'a, I, E> {
    fn peek_previous(&mut self) -> Option<&str> {
        if self.next.is_none() && self.error.is_none() {
            match self.previous.next() {
                Some(Ok(e)) => {
                    if e.kind == Kind::File {
                        self.previous_files += 1;
                    }
                    self.next = Some(e);
                }
                Some(Err(e)) => self.error = Some(e),
                None => {}
            }
        }
        self.next.as_ref().map(|e| e.path.as_str())
    }

    /// The stored entries at the smallest stored path below `bound` (no bound: any), taken.
    fn next_below(&mut self, bound: Option<&str>) -> Option<AtPath<'a>> {
        let done = self.done.first().map(|e| e.path.as_str());
        let path = match (done, self.peek_previous()) {
            (Some(d), Some(p)) => d.min(p),
            (Some(d), None) => d,
            (None, Some(p)) => p,
            (None, None) => return None,
        };
        if bound.is_some_and(|b| path >= b) {
            return None;
        }
        let path = path.to_string();
        Some(self.take_at(&path))
    }

    /// The stored entries at `path` (every smaller path already taken), taken.
    fn take_at(&mut self, path: &str) -> AtPath<'a> {
        let done = match self.done.split_first() {
            Some((d, rest)) if d.path == path => {
                self.done = rest;
                Some(d)
            }
            _ => None,
        };
        let previous = if self.peek_previous() == Some(path) {
            self.next.take()
        } else {
            None
        };
        (done, previous)
    }
}

/// Plans a backup of what was `walked` (hashes and versions unset) against the `previous`
/// snapshot's entries (strictly increasing paths, as manifests hold them; empty on the first
/// run) and what else is `known`. An error reading `previous` is returned as it is.
pub fn plan_backup<E>(
    known: Known<'_>,
    previous: impl IntoIterator<Item = Result<Entry, E>>,
    walked: Vec<Entry>,
) -> Result<BackupPlan, E> {
    debug_assert!(known.done.is_sorted_by(|a, b| a.path < b.path));
    let mut walked = walked;
    // Unstable: no scratch buffer (half the walk again); the walk never repeats a path.
    walked.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    walked.dedup_by(|a, b| a.path == b.path);
    let mut stored = Stored {
        done: known.done,
        previous: previous.into_iter(),
        next: None,
        error: None,
        previous_files: 0,
    };
    let mut plan = BackupPlan::default();
    let mut kept = Vec::new();
    let stored_file_at = |at: &AtPath<'_>| {
        at.0.into_iter()
            .chain(at.1.as_ref())
            .any(|e| e.kind == Kind::File && e.version_id.is_some())
    };
    // Stored entries that were not seen: kept when they could not be looked at, else gone.
    let mut unseen = |at: AtPath<'_>, plan: &mut BackupPlan| {
        let gone = stored_file_at(&at);
        let (done, previous) = at;
        let Some(path) = done.map(|e| &e.path).or(previous.as_ref().map(|e| &e.path)) else {
            return;
        };
        if known.unreadable.iter().any(|u| is_under(path, u)) {
            kept.extend(done.cloned().or(previous));
        } else if gone {
            plan.deletes.push(path.clone());
        }
    };
    // The walk's buffer becomes the carried list in place (no second copy of a million
    // entries); uploads are taken out of it.
    walked.retain_mut(|seen| {
        while let Some(at) = stored.next_below(Some(&seen.path)) {
            unseen(at, &mut plan);
        }
        let at = stored.take_at(&seen.path);
        if seen.kind != Kind::File {
            if stored_file_at(&at) {
                // A stored file replaced by a folder or a symlink.
                plan.deletes.push(seen.path.clone());
            }
            seen.sha256 = None;
            seen.version_id = None;
            return true;
        }
        let (done, mut previous) = at;
        let from_done = done.filter(|d| d.is_stored_file());
        let from_previous = previous.as_mut().filter(|p| p.is_stored_file());
        match (from_done, from_previous) {
            (Some(s), _) if same_content(s, seen) => {
                seen.sha256 = s.sha256.clone();
                seen.version_id = s.version_id.clone();
                true
            }
            (None, Some(s))
                if same_content(s, seen)
                    && !known.rescan
                    && !known.pending.contains(seen.path.as_str()) =>
            {
                // Moved, not copied: the previous snapshot's entry is dropped here.
                seen.sha256 = s.sha256.take();
                seen.version_id = s.version_id.take();
                true
            }
            _ => {
                let candidate = match done {
                    Some(d) if d.is_stored_file() && d.size == seen.size => Some(d.clone()),
                    _ => previous.filter(|p| p.is_stored_file() && p.size == seen.size),
                };
                plan.uploads.push(Upload {
                    entry: take_entry(seen),
                    candidate,
                });
                false
            }
        }
    });
    while let Some(at) = stored.next_below(None) {
        unseen(at, &mut plan);
    }
    if let Some(e) = stored.error {
        return Err(e);
    }
    walked.shrink_to_fit();
    plan.carried = walked;
    plan.kept = kept.len() as u64;
    plan.previous_files = stored.previous_files;
    if !kept.is_empty() {
        plan.carried.extend(kept);
        plan.carried.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(path: &str, size: u64, mtime: i64) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            target: None,
            size,
            mtime_ns: mtime,
            mode: 0o644,
            uid: 33,
            gid: 33,
            ino: 1,
            sha256: None,
            version_id: None,
        }
    }

    fn stored(e: &Entry, v: &str) -> Entry {
        Entry {
            sha256: Some(format!("sha-{v}")),
            version_id: Some(v.into()),
            ..e.clone()
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            kind: Kind::Dir,
            size: 0,
            ..file(path, 0, 5)
        }
    }

    /// Plans over plain vectors: the previous snapshot and the checkpoint sorted as the
    /// bucket holds them.
    fn plan_with(known: Known<'_>, previous: &[Entry], walked: Vec<Entry>) -> BackupPlan {
        let mut previous = previous.to_vec();
        previous.sort_by(|a, b| a.path.cmp(&b.path));
        let mut done = known.done.to_vec();
        done.sort_by(|a, b| a.path.cmp(&b.path));
        let known = Known {
            done: &done,
            ..known
        };
        let p = plan_backup(known, previous.into_iter().map(Ok::<_, ()>), walked).unwrap();
        assert!(p.carried.is_sorted_by(|a, b| a.path < b.path));
        assert!(p.uploads.is_sorted_by(|a, b| a.entry.path < b.entry.path));
        assert!(p.deletes.is_sorted_by(|a, b| a < b));
        p
    }

    fn plan(previous: &[Entry], done: &[Entry], walked: Vec<Entry>) -> BackupPlan {
        let known = Known {
            done,
            pending: &BTreeSet::new(),
            unreadable: &[],
            rescan: false,
        };
        plan_with(known, previous, walked)
    }

    fn paths(v: &[Upload]) -> Vec<&str> {
        v.iter().map(|u| u.entry.path.as_str()).collect()
    }

    #[test]
    fn first_run_uploads_every_file() {
        let walked = vec![file("b", 1, 1), dir("a"), file("a/x", 2, 1)];
        let p = plan(&[], &[], walked);
        assert_eq!(paths(&p.uploads), ["a/x", "b"]);
        assert_eq!(p.carried, vec![dir("a")]);
        assert!(p.deletes.is_empty());
        assert_eq!(p.upload_bytes(), 3);
    }

    #[test]
    fn unchanged_files_carry_hash_and_version_with_new_metadata() {
        let prev = vec![stored(&file("a", 1, 1), "v1")];
        let mut now = file("a", 1, 1);
        now.mode = 0o600;
        let p = plan(&prev, &[], vec![now.clone()]);
        assert!(p.uploads.is_empty());
        assert_eq!(p.carried, vec![stored(&now, "v1")]);
    }

    #[test]
    fn modified_added_deleted_renamed_replaced() {
        let prev = vec![
            stored(&file("same", 1, 1), "v1"),
            stored(&file("touched", 4, 1), "v2"),
            stored(&file("grown", 4, 1), "v3"),
            stored(&file("gone", 1, 1), "v4"),
            stored(&file("old-name", 9, 1), "v5"),
            stored(&file("now-dir", 1, 1), "v6"),
        ];
        let mut replaced = file("same", 1, 1);
        replaced.ino = 2; // same size and mtime, new inode: atomically replaced
        let walked = vec![
            replaced,
            file("touched", 4, 2),
            file("grown", 5, 1),
            file("new-name", 9, 1),
            dir("now-dir"),
            file("added", 3, 3),
        ];
        let p = plan(&prev, &[], walked);
        assert_eq!(
            paths(&p.uploads),
            ["added", "grown", "new-name", "same", "touched"]
        );
        let touched = p
            .uploads
            .iter()
            .find(|u| u.entry.path == "touched")
            .unwrap();
        assert_eq!(
            touched.candidate,
            Some(prev[1].clone()),
            "same size: hash may match"
        );
        let grown = p.uploads.iter().find(|u| u.entry.path == "grown").unwrap();
        assert_eq!(grown.candidate, None);
        assert_eq!(p.deletes, ["gone", "now-dir", "old-name"]);
    }

    #[test]
    fn checkpoint_entries_are_not_uploaded_again() {
        let prev = vec![stored(&file("a", 1, 1), "v1")];
        let done = vec![
            stored(&file("a", 2, 2), "v2"),
            stored(&file("b", 1, 1), "v3"),
        ];
        let p = plan(
            &prev,
            &done,
            vec![file("a", 2, 2), file("b", 1, 1), file("c", 1, 1)],
        );
        assert_eq!(paths(&p.uploads), ["c"]);
        assert_eq!(p.carried[0].version_id.as_deref(), Some("v2"));
        // Stored by the run, then deleted before it finished: delete marker too.
        let p = plan(&prev, &done, vec![file("a", 2, 2)]);
        assert_eq!(p.deletes, ["b"]);
    }

    #[test]
    fn a_path_this_run_may_have_written_is_read_again_and_checked() {
        // S1 holds `a` as v1; an interrupted invocation of this run planned (and may have
        // uploaded) `a` again, so v1 may no longer be current: `a` is not carried.
        let prev = vec![
            stored(&file("a", 1, 1), "v1"),
            stored(&file("b", 1, 1), "v2"),
        ];
        let pending = BTreeSet::from(["a".to_string()]);
        let known = Known {
            done: &[],
            pending: &pending,
            unreadable: &[],
            rescan: false,
        };
        let p = plan_with(known, &prev, vec![file("a", 1, 1), file("b", 1, 1)]);
        assert_eq!(paths(&p.uploads), ["a"]);
        assert_eq!(p.uploads[0].candidate, Some(prev[0].clone()));
        assert_eq!(p.carried, vec![prev[1].clone()]);
        // The checkpoint's own entry is current (dropped from it before any rewrite): carried.
        let done = vec![stored(&file("a", 1, 1), "v3")];
        let p = plan_with(
            Known {
                done: &done,
                ..known
            },
            &prev,
            vec![file("a", 1, 1)],
        );
        assert!(p.uploads.is_empty());
        assert_eq!(p.carried, done);
        // A rescan (the checkpoint was unreadable): every stored version is checked again.
        let rescan = Known {
            pending: &BTreeSet::new(),
            rescan: true,
            ..known
        };
        let p = plan_with(rescan, &prev, vec![file("a", 1, 1), file("b", 1, 1)]);
        assert_eq!(paths(&p.uploads), ["a", "b"]);
        assert!(p.uploads.iter().all(|u| u.candidate.is_some()));
        assert!(p.carried.is_empty());
    }

    #[test]
    fn what_could_not_be_read_keeps_its_stored_entries() {
        let prev = vec![
            dir("a"),
            stored(&file("a/x", 1, 1), "v1"),
            dir("a/sub"),
            stored(&file("a/sub/y", 1, 1), "v2"),
            stored(&file("ab", 1, 1), "v3"),
            stored(&file("f", 1, 1), "v4"),
            stored(&file("gone", 1, 1), "v5"),
        ];
        let unreadable = ["a".to_string(), "f".to_string()];
        let known = Known {
            done: &[],
            pending: &BTreeSet::new(),
            unreadable: &unreadable,
            rescan: false,
        };
        // The folder `a` was seen (its stat worked) but not listed; `f` could not be stat-ed.
        let p = plan_with(known, &prev, vec![dir("a"), file("ab", 1, 1)]);
        assert!(p.uploads.is_empty());
        assert_eq!(p.deletes, ["gone"]);
        assert_eq!(p.kept, 4);
        let carried: Vec<&str> = p.carried.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(carried, ["a", "a/sub", "a/sub/y", "a/x", "ab", "f"]);
        // Not knowing what the walk missed deletes nothing.
        let everything = [String::new()];
        let known = Known {
            unreadable: &everything,
            ..known
        };
        let p = plan_with(known, &prev, vec![]);
        assert!(p.deletes.is_empty());
        assert_eq!(p.carried.len(), prev.len());
        assert!(is_under("a/x", "a") && !is_under("ab", "a") && is_under("a", "a"));
    }

    fn arb_tree() -> impl Strategy<Value = Vec<(u8, u8, u8)>> {
        // (name, size, mtime) over a small name space so trees overlap.
        prop::collection::vec((0u8..24, 0u8..4, 0u8..4), 0..24)
    }

    fn to_entries(t: &[(u8, u8, u8)]) -> Vec<Entry> {
        t.iter()
            .map(|(n, s, m)| file(&format!("d/{n}"), *s as u64, *m as i64))
            .collect()
    }

    proptest! {
        #[test]
        fn every_walked_path_is_planned_once(prev in arb_tree(), now in arb_tree()) {
            let prev: Vec<Entry> = {
                let mut v = to_entries(&prev);
                v.sort_by(|a, b| a.path.cmp(&b.path));
                v.dedup_by(|a, b| a.path == b.path);
                v.iter().map(|e| stored(e, "v")).collect()
            };
            let walked = to_entries(&now);
            let p = plan(&prev, &[], walked.clone());
            let mut planned: Vec<&str> = p.carried.iter().map(|e| e.path.as_str())
                .chain(p.uploads.iter().map(|u| u.entry.path.as_str())).collect();
            planned.sort();
            let mut expected: Vec<&str> = walked.iter().map(|e| e.path.as_str()).collect();
            expected.sort();
            expected.dedup();
            prop_assert_eq!(&planned, &expected);
            // Deletes are exactly the stored paths no longer present.
            for d in &p.deletes {
                prop_assert!(!expected.contains(&d.as_str()));
                prop_assert!(prev.iter().any(|e| &e.path == d));
            }
            for e in &prev {
                prop_assert_eq!(expected.contains(&e.path.as_str()), !p.deletes.contains(&e.path));
            }
            // Every carried file keeps a hash and a version.
            prop_assert!(p.carried.iter().all(|e| e.kind != Kind::File || e.is_stored_file()));
        }

        #[test]
        fn no_pending_path_is_carried_and_nothing_unreadable_is_deleted(
            prev in arb_tree(),
            done in arb_tree(),
            now in arb_tree(),
            pending in prop::collection::btree_set(0u8..24, 0..8),
            unreadable in prop::collection::vec(0u8..24, 0..4),
        ) {
            let store = |t: &[(u8, u8, u8)], v: &str| -> Vec<Entry> {
                let mut e = to_entries(t);
                e.sort_by(|a, b| a.path.cmp(&b.path));
                e.dedup_by(|a, b| a.path == b.path);
                e.iter().map(|e| stored(e, v)).collect()
            };
            let (prev, done) = (store(&prev, "v1"), store(&done, "v2"));
            let pending: BTreeSet<String> = pending.iter().map(|n| format!("d/{n}")).collect();
            let unreadable: Vec<String> = unreadable.iter().map(|n| format!("d/{n}")).collect();
            let walked = to_entries(&now);
            let known = Known { done: &done, pending: &pending, unreadable: &unreadable, rescan: false };
            let p = plan_with(known, &prev, walked.clone());
            let walked_paths: BTreeSet<&str> = walked.iter().map(|e| e.path.as_str()).collect();
            for e in &p.carried {
                // A previous snapshot's version at a path this run may have written is never
                // taken on trust (the checkpoint's are current).
                let walked_pending = pending.contains(&e.path) && walked_paths.contains(e.path.as_str());
                prop_assert!(!(walked_pending && e.version_id.as_deref() == Some("v1")));
            }
            for d in &p.deletes {
                prop_assert!(!unreadable.contains(d));
                prop_assert!(!walked_paths.contains(d.as_str()));
            }
            for e in prev.iter().chain(&done) {
                let planned = p.carried.iter().any(|c| c.path == e.path)
                    || p.uploads.iter().any(|u| u.entry.path == e.path)
                    || p.deletes.contains(&e.path);
                prop_assert!(planned, "{} was forgotten", e.path);
            }
        }

        #[test]
        fn a_tree_backed_up_and_unchanged_plans_nothing(now in arb_tree()) {
            let walked = to_entries(&now);
            let first = plan(&[], &[], walked.clone());
            let manifest: Vec<Entry> = first.uploads.iter().map(|u| stored(&u.entry, "v"))
                .chain(first.carried.clone()).collect();
            let again = plan(&manifest, &[], walked);
            prop_assert!(again.uploads.is_empty());
            prop_assert!(again.deletes.is_empty());
        }
    }

    /// The planner as it was before the merge (maps of paths over decoded vectors): the
    /// merge must plan exactly what it planned.
    fn reference_plan(
        previous: &[Entry],
        done: &[Entry],
        pending: &BTreeSet<String>,
        unreadable: &[String],
        walked: Vec<Entry>,
    ) -> BackupPlan {
        use std::collections::HashMap;
        let prev: HashMap<&str, &Entry> = previous.iter().map(|e| (e.path.as_str(), e)).collect();
        let done_map: HashMap<&str, &Entry> = done.iter().map(|e| (e.path.as_str(), e)).collect();
        let stored_at = |path: &str| {
            [done_map.get(path), prev.get(path)]
                .into_iter()
                .flatten()
                .copied()
        };
        let mut plan = BackupPlan {
            previous_files: previous.iter().filter(|e| e.kind == Kind::File).count() as u64,
            ..Default::default()
        };
        let mut walked = walked;
        walked.sort_by(|a, b| a.path.cmp(&b.path));
        walked.dedup_by(|a, b| a.path == b.path);
        let mut kept = Vec::new();
        let walked_kind: HashMap<&str, Kind> =
            walked.iter().map(|e| (e.path.as_str(), e.kind)).collect();
        let mut unseen_files = BTreeSet::new();
        let mut kept_paths = BTreeSet::new();
        for e in done.iter().chain(previous) {
            if let Some(kind) = walked_kind.get(e.path.as_str()) {
                if *kind != Kind::File && e.kind == Kind::File && e.version_id.is_some() {
                    unseen_files.insert(e.path.clone());
                }
                continue;
            }
            if kept_paths.contains(e.path.as_str()) {
                continue;
            }
            if unreadable.iter().any(|u| is_under(&e.path, u)) {
                kept_paths.insert(e.path.as_str());
                kept.push(e.clone());
            } else if e.kind == Kind::File && e.version_id.is_some() {
                unseen_files.insert(e.path.clone());
            }
        }
        plan.deletes = unseen_files.into_iter().collect();
        for mut seen in walked {
            if seen.kind != Kind::File {
                seen.sha256 = None;
                seen.version_id = None;
                plan.carried.push(seen);
                continue;
            }
            let from_done = done_map.get(seen.path.as_str()).copied();
            let stored = stored_at(&seen.path).find(|s| s.is_stored_file());
            let trusted = |s: &Entry| {
                from_done.is_some_and(|d| std::ptr::eq(d, s)) || !pending.contains(&seen.path)
            };
            match stored {
                Some(s) if same_content(s, &seen) && trusted(s) => {
                    seen.sha256 = s.sha256.clone();
                    seen.version_id = s.version_id.clone();
                    plan.carried.push(seen);
                }
                _ => {
                    let candidate = stored_at(&seen.path)
                        .find(|s| s.is_stored_file() && s.size == seen.size)
                        .cloned();
                    plan.uploads.push(Upload {
                        entry: seen,
                        candidate,
                    });
                }
            }
        }
        plan.kept = kept.len() as u64;
        plan.carried.extend(kept);
        plan.carried.sort_by(|a, b| a.path.cmp(&b.path));
        plan
    }

    /// Entries of every kind over a small name space, two levels deep, some of them files
    /// stored with a version, some without one.
    fn arb_entries(version: &'static str) -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec(
            (0u8..6, prop::option::of(0u8..4), 0u8..5, 0u8..3, 0u8..3),
            0..20,
        )
        .prop_map(move |t| {
            let mut v: Vec<Entry> = t
                .into_iter()
                .map(|(a, b, kind, size, ino)| {
                    let path = match b {
                        Some(b) => format!("{a}/{b}"),
                        None => a.to_string(),
                    };
                    let mut e = file(&path, size as u64, 1);
                    e.ino = ino as u64;
                    match kind {
                        0 => e.kind = Kind::Dir,
                        1 => e.kind = Kind::Symlink,
                        2 => {}
                        _ if version.is_empty() => {}
                        _ => e = stored(&e, version),
                    }
                    e
                })
                .collect();
            v.sort_by(|a, b| a.path.cmp(&b.path));
            v.dedup_by(|a, b| a.path == b.path);
            v
        })
    }

    proptest! {
        #[test]
        fn the_merge_plans_what_the_maps_planned(
            prev in arb_entries("v1"),
            done in arb_entries("v2"),
            walked in arb_entries(""),
            pending in prop::collection::btree_set(0u8..6, 0..4),
            unreadable in prop::collection::vec((0u8..7, prop::option::of(0u8..4)), 0..3),
        ) {
            let pending: BTreeSet<String> = pending.iter().map(|n| format!("{n}/1")).chain(pending.iter().map(|n| n.to_string())).collect();
            let unreadable: Vec<String> = unreadable.iter().map(|(a, b)| match (a, b) {
                (6, _) => String::new(),
                (a, Some(b)) => format!("{a}/{b}"),
                (a, None) => a.to_string(),
            }).collect();
            let known = Known { done: &done, pending: &pending, unreadable: &unreadable, rescan: false };
            let merged = plan_with(known, &prev, walked.clone());
            let expected = reference_plan(&prev, &done, &pending, &unreadable, walked);
            prop_assert_eq!(merged, expected);
        }
    }

    #[test]
    fn an_unreadable_previous_snapshot_is_an_error_not_a_plan() {
        let prev = vec![Ok(stored(&file("a", 1, 1), "v1")), Err("truncated")];
        let known = Known {
            done: &[],
            pending: &BTreeSet::new(),
            unreadable: &[],
            rescan: false,
        };
        let r = plan_backup(known, prev, vec![file("a", 1, 1), file("b", 1, 1)]);
        assert_eq!(r, Err("truncated"));
    }
}
