//! The backup diff: previous snapshot + this run's progress + directory walk → what to do.
//!
//! Pure: no I/O. A file is unchanged when its size, mtime and inode match the entry it is
//! compared with (the checkpoint of this run first, then the previous snapshot); its content
//! is then carried over (same SHA-256, same S3 version). Mode, uid and gid are always taken
//! from the walk, since they don't need new content.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::manifest::{Entry, Kind};

/// One file whose content must be read (and uploaded unless it hashes the same as before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upload {
    /// The file as walked (no hash or version yet).
    pub entry: Entry,
    /// The stored entry at the same path with the same size, if any: when the content hashes
    /// to the same SHA-256 its version is reused and nothing is uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Entry>,
}

/// What a backup run does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct BackupPlan {
    /// Entries that go into the manifest as they are: directories, symlinks, unchanged files.
    pub carried: Vec<Entry>,
    /// Files to read and upload, in path order.
    pub uploads: Vec<Upload>,
    /// Paths whose object `files/<path>` gets a delete marker: stored before, gone now.
    pub deletes: Vec<String>,
}

impl BackupPlan {
    /// Bytes the uploads will read.
    pub fn upload_bytes(&self) -> u64 {
        self.uploads.iter().map(|u| u.entry.size).sum()
    }
}

fn same_content(stored: &Entry, seen: &Entry) -> bool {
    stored.is_stored_file()
        && seen.kind == Kind::File
        && stored.size == seen.size
        && stored.mtime_ns == seen.mtime_ns
        && (stored.ino == 0 || seen.ino == 0 || stored.ino == seen.ino)
}

/// Plans a backup.
///
/// - `previous`: the entries of the newest complete snapshot (empty on the first run);
/// - `done`: files this run already stored (from its checkpoint);
/// - `walked`: what the walk found, hashes and versions unset.
pub fn plan_backup(previous: &[Entry], done: &[Entry], walked: Vec<Entry>) -> BackupPlan {
    let prev: HashMap<&str, &Entry> = previous.iter().map(|e| (e.path.as_str(), e)).collect();
    let done_map: HashMap<&str, &Entry> = done.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut plan = BackupPlan::default();
    let mut files_now = BTreeSet::new();
    let mut walked = walked;
    walked.sort_by(|a, b| a.path.cmp(&b.path));
    walked.dedup_by(|a, b| a.path == b.path);
    for seen in walked {
        if seen.kind != Kind::File {
            plan.carried.push(Entry {
                sha256: None,
                version_id: None,
                ..seen
            });
            continue;
        }
        files_now.insert(seen.path.clone());
        let stored = [
            done_map.get(seen.path.as_str()),
            prev.get(seen.path.as_str()),
        ]
        .into_iter()
        .flatten()
        .copied()
        .find(|s| s.is_stored_file());
        match stored {
            Some(s) if same_content(s, &seen) => plan.carried.push(Entry {
                sha256: s.sha256.clone(),
                version_id: s.version_id.clone(),
                ..seen
            }),
            _ => {
                let candidate = [
                    done_map.get(seen.path.as_str()),
                    prev.get(seen.path.as_str()),
                ]
                .into_iter()
                .flatten()
                .find(|s| s.is_stored_file() && s.size == seen.size)
                .map(|s| (*s).clone());
                plan.uploads.push(Upload {
                    entry: seen,
                    candidate,
                });
            }
        }
    }
    let stored_before: BTreeSet<&str> = previous
        .iter()
        .chain(done.iter())
        .filter(|e| e.kind == Kind::File && e.version_id.is_some())
        .map(|e| e.path.as_str())
        .collect();
    plan.deletes = stored_before
        .into_iter()
        .filter(|p| !files_now.contains(*p))
        .map(str::to_string)
        .collect();
    plan
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

    fn paths(v: &[Upload]) -> Vec<&str> {
        v.iter().map(|u| u.entry.path.as_str()).collect()
    }

    #[test]
    fn first_run_uploads_every_file() {
        let walked = vec![file("b", 1, 1), dir("a"), file("a/x", 2, 1)];
        let p = plan_backup(&[], &[], walked);
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
        let p = plan_backup(&prev, &[], vec![now.clone()]);
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
        let p = plan_backup(&prev, &[], walked);
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
        let p = plan_backup(
            &prev,
            &done,
            vec![file("a", 2, 2), file("b", 1, 1), file("c", 1, 1)],
        );
        assert_eq!(paths(&p.uploads), ["c"]);
        assert_eq!(p.carried[0].version_id.as_deref(), Some("v2"));
        // Stored by the run, then deleted before it finished: delete marker too.
        let p = plan_backup(&prev, &done, vec![file("a", 2, 2)]);
        assert_eq!(p.deletes, ["b"]);
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
            let p = plan_backup(&prev, &[], walked.clone());
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
        fn a_tree_backed_up_and_unchanged_plans_nothing(now in arb_tree()) {
            let walked = to_entries(&now);
            let first = plan_backup(&[], &[], walked.clone());
            let manifest: Vec<Entry> = first.uploads.iter().map(|u| stored(&u.entry, "v"))
                .chain(first.carried.clone()).collect();
            let again = plan_backup(&manifest, &[], walked);
            prop_assert!(again.uploads.is_empty());
            prop_assert!(again.deletes.is_empty());
        }
    }
}
