//! Walks the source directory in parallel (the `ignore` crate's walker), skipping `EXCLUDE`.
//!
//! A folder that cannot be listed or an entry that cannot be stat-ed is reported as
//! unreadable (never as gone): the planner keeps what was stored under it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc;

use globset::GlobSet;
use ignore::{WalkBuilder, WalkState};
use serde::Serialize;

use crate::manifest::{Entry, Kind};

/// Something the walk could not record, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Walked {
    /// Files, directories and symlinks, in no particular order.
    pub entries: Vec<Entry>,
    /// Entries that are never backed up (sockets, FIFOs, devices, names that are not UTF-8).
    pub skipped: Vec<Skipped>,
    /// Folders that could not be listed and entries that could not be stat-ed (`""`: the walk
    /// failed somewhere it could not name).
    pub unreadable: Vec<Skipped>,
    /// Temporary files an interrupted restore left (`.name.efs-restore-…`), to remove.
    pub restore_temps: Vec<String>,
}

/// The name of a temporary file restore writes beside its target (`.name.efs-restore-…`):
/// never backed up, and removed by the next backup.
pub fn is_restore_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(RESTORE_TEMP_MARK)
}

/// What a restore's temporary file names carry after the target's name.
pub const RESTORE_TEMP_MARK: &str = ".efs-restore-";

/// An entry built from `lstat` metadata (no hash, no version).
pub fn entry_from_metadata(path: String, md: &std::fs::Metadata, target: Option<String>) -> Entry {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::File
    };
    Entry {
        path,
        kind,
        target,
        size: if kind == Kind::File { md.size() } else { 0 },
        mtime_ns: md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec(),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        ino: md.ino(),
        sha256: None,
        version_id: None,
    }
}

/// Walks `root` (not following symlinks) with `threads` threads.
///
/// `root` itself is not an entry. Excluded paths (matched relative to `root`) are skipped
/// with their whole subtree. Sockets, FIFOs, devices and non-UTF-8 names are reported as
/// skipped.
pub fn walk(root: &Path, exclude: &GlobSet, threads: usize) -> Result<Walked, std::io::Error> {
    let md = std::fs::metadata(root)?;
    if !md.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    let root_owned = root.to_path_buf();
    let exclude = exclude.clone();
    let mut builder = WalkBuilder::new(root);
    builder
        .standard_filters(false)
        .follow_links(false)
        .threads(threads)
        .filter_entry(move |e| {
            match e
                .path()
                .strip_prefix(&root_owned)
                .ok()
                .and_then(Path::to_str)
            {
                Some("") | None => true,
                Some(rel) => !exclude.is_match(rel),
            }
        });
    let (tx, rx) = mpsc::channel::<Visit>();
    // Collected while the walk runs: a million entries never wait in the channel all at once
    // (they would, and then again in the vector).
    let out = std::thread::scope(|scope| {
        let collector = scope.spawn(move || {
            let mut out = Walked::default();
            for item in rx {
                match item {
                    Visit::Entry(e) => out.entries.push(e),
                    Visit::Skipped(s) => out.skipped.push(s),
                    Visit::Unreadable(s) => out.unreadable.push(s),
                    Visit::RestoreTemp(p) => out.restore_temps.push(p),
                }
            }
            out
        });
        builder.build_parallel().run(|| {
            let tx = tx.clone();
            Box::new(move |res| {
                if let Some(item) = visit(root, res) {
                    let _ = tx.send(item);
                }
                WalkState::Continue
            })
        });
        drop(tx);
        collector.join()
    });
    out.map_err(|_| std::io::Error::other("the walk's collector thread panicked"))
}

enum Visit {
    Entry(Entry),
    Skipped(Skipped),
    Unreadable(Skipped),
    RestoreTemp(String),
}

/// The path an `ignore` error is about, if it names one.
fn error_path(e: &ignore::Error) -> Option<&Path> {
    match e {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Loop { child, .. } => Some(child),
        ignore::Error::Partial(errs) => errs.iter().find_map(error_path),
        _ => None,
    }
}

fn visit(root: &Path, res: Result<ignore::DirEntry, ignore::Error>) -> Option<Visit> {
    let dent = match res {
        Ok(d) => d,
        Err(e) => {
            let path = error_path(&e)
                .and_then(|p| p.strip_prefix(root).ok())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Some(Visit::Unreadable(Skipped {
                path,
                reason: e.to_string(),
            }));
        }
    };
    if dent.depth() == 0 {
        return None;
    }
    let rel = dent.path().strip_prefix(root).ok()?;
    let Some(rel) = rel.to_str() else {
        return Some(Visit::Skipped(Skipped {
            path: rel.to_string_lossy().into_owned(),
            reason: "name is not UTF-8".into(),
        }));
    };
    let md = match std::fs::symlink_metadata(dent.path()) {
        Ok(md) => md,
        // Removed between listing and stat: not part of this snapshot.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(Visit::Unreadable(Skipped {
                path: rel.to_string(),
                reason: e.to_string(),
            }));
        }
    };
    let ft = md.file_type();
    if ft.is_file() && dent.file_name().to_str().is_some_and(is_restore_temp) {
        return Some(Visit::RestoreTemp(rel.to_string()));
    }
    let target = if ft.is_symlink() {
        match std::fs::read_link(dent.path()) {
            Ok(t) => match t.into_os_string().into_string() {
                Ok(t) => Some(t),
                Err(_) => {
                    return Some(Visit::Skipped(Skipped {
                        path: rel.to_string(),
                        reason: "symlink target is not UTF-8".into(),
                    }));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                return Some(Visit::Unreadable(Skipped {
                    path: rel.to_string(),
                    reason: e.to_string(),
                }));
            }
        }
    } else if ft.is_file() || ft.is_dir() {
        None
    } else {
        return Some(Visit::Skipped(Skipped {
            path: rel.to_string(),
            reason: "not a regular file, directory or symlink".into(),
        }));
    };
    Some(Visit::Entry(entry_from_metadata(
        rel.to_string(),
        &md,
        target,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::build_globset;

    #[test]
    fn walks_with_excludes_symlinks_and_empty_dirs() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/ab")).unwrap();
        std::fs::create_dir_all(r.join("thumb/a/ab")).unwrap();
        std::fs::create_dir_all(r.join("empty")).unwrap();
        std::fs::write(r.join("a/ab/Foo.png"), b"png").unwrap();
        std::fs::write(r.join("a/ab/x.tmp"), b"t").unwrap();
        std::fs::write(r.join("thumb/a/ab/Foo.png"), b"thumb").unwrap();
        std::os::unix::fs::symlink("a/ab/Foo.png", r.join("link")).unwrap();
        let ex = build_globset(&["**/thumb".into(), "**/*.tmp".into()]).unwrap();
        let w = walk(r, &ex, 2).unwrap();
        let mut got: Vec<(String, Kind, Option<String>)> = w
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.kind, e.target.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("a".into(), Kind::Dir, None),
                ("a/ab".into(), Kind::Dir, None),
                ("a/ab/Foo.png".into(), Kind::File, None),
                ("empty".into(), Kind::Dir, None),
                ("link".into(), Kind::Symlink, Some("a/ab/Foo.png".into())),
            ]
        );
        assert!(w.skipped.is_empty(), "{:?}", w.skipped);
        let f = w.entries.iter().find(|e| e.path == "a/ab/Foo.png").unwrap();
        assert_eq!(f.size, 3);
        assert!(f.mtime_ns > 0);
        assert!(walk(&r.join("a/ab/Foo.png"), &ex, 1).is_err());
    }
}
