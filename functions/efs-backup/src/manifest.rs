//! Snapshot manifests: what a snapshot holds, and where things live in the bucket.
//!
//! A manifest is gzip-compressed JSON lines: a [`Header`] line, then one [`Entry`] per
//! file, directory and symlink, sorted by path. File content lives at `files/<path>`; an
//! entry names the S3 version id that holds its bytes and their SHA-256.

use std::io::{BufRead, BufReader, Read, Write};

use chrono::{DateTime, NaiveDateTime, Utc};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

/// The manifest format this code writes.
pub const FORMAT: &str = "efs-backup/1";

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// One file, directory or symlink, as observed on the file system or recorded in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the source directory, `/`-separated, never empty.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// A symlink's target, as stored in the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Bytes (files; 0 otherwise).
    #[serde(default)]
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Inode number when observed (a replaced file gets a new one); 0 when unknown.
    #[serde(default)]
    pub ino: u64,
    /// Hex SHA-256 of the content (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The S3 version id of `files/<path>` that holds the content (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

impl Entry {
    /// A regular file whose content is recorded (hash and version known).
    pub fn is_stored_file(&self) -> bool {
        self.kind == Kind::File && self.sha256.is_some() && self.version_id.is_some()
    }
}

/// The first line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub snapshot_id: String,
    /// When the run that made the snapshot started (the point in time it stands for).
    pub created_at: DateTime<Utc>,
    /// When the manifest was written.
    pub completed_at: DateTime<Utc>,
    pub source_dir: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub exclude: Vec<String>,
    /// The snapshot the run compared against.
    #[serde(default)]
    pub previous: Option<String>,
}

/// A snapshot as stored: its header decoded, its entries kept gzip-compressed (about 15 bytes
/// an entry) and decoded one at a time, in path order ([`Manifest::entries`]), so that a
/// million-entry snapshot is never held decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The object it was read from (named in errors).
    pub key: String,
    pub header: Header,
    /// The gzip bytes, header line included.
    pub bytes: Vec<u8>,
}

impl Manifest {
    /// The entries, decoded one at a time in strictly increasing path order; an error names
    /// the manifest and ends the stream.
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry, shared::Error>> + '_ {
        entries(&self.bytes).map(|r| {
            r.map_err(|e| {
                shared::Error::Rejected(format!("manifest {} is unreadable: {e}", self.key))
            })
        })
    }
}

/// Summary counts of a list of entries: (files, dirs, symlinks, bytes).
pub fn counts<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> (u64, u64, u64, u64) {
    let mut c = (0, 0, 0, 0);
    for e in entries {
        match e.kind {
            Kind::File => {
                c.0 += 1;
                c.3 += e.size;
            }
            Kind::Dir => c.1 += 1,
            Kind::Symlink => c.2 += 1,
        }
    }
    c
}

/// Writes a header (any serialisable first line) and entries as gzip JSON lines.
pub fn encode<'a, H: Serialize>(
    header: &H,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<Vec<u8>, std::io::Error> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::new(6));
    serde_json::to_writer(&mut gz, header)?;
    gz.write_all(b"\n")?;
    // A sync flush: the header decodes from the first bytes alone (ranged reads in `list`).
    gz.flush()?;
    for e in entries {
        serde_json::to_writer(&mut gz, e)?;
        gz.write_all(b"\n")?;
    }
    gz.finish()
}

/// Reads gzip JSON lines: the header, then the entries.
pub fn decode<H: for<'de> Deserialize<'de>>(
    bytes: &[u8],
) -> Result<(H, Vec<Entry>), std::io::Error> {
    let mut lines = BufReader::new(GzDecoder::new(bytes)).lines();
    let first = lines
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "empty manifest"))??;
    let header: H = serde_json::from_str(&first)?;
    let mut entries = Vec::new();
    for line in lines {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_str(&line)?;
        check_path(&e.path).map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidData, m))?;
        entries.push(e);
    }
    // A million entries: the doubling growth would keep up to half as much again unused.
    entries.shrink_to_fit();
    Ok((header, entries))
}

/// The entries of gzip JSON lines (the header line skipped), one at a time, so that a
/// million-entry manifest is never held decoded. Paths must be in strictly increasing byte
/// order, as [`encode`]'s callers write them: an entry out of order is an error
/// (`InvalidData`), never silently misplanned.
pub fn entries(bytes: &[u8]) -> EntryStream<'_> {
    EntryStream {
        lines: BufReader::new(GzDecoder::new(bytes)),
        line: String::new(),
        last: None,
        started: false,
        failed: false,
    }
}

/// See [`entries`].
pub struct EntryStream<'a> {
    lines: BufReader<GzDecoder<&'a [u8]>>,
    line: String,
    /// The previous entry's path (its buffer reused).
    last: Option<String>,
    started: bool,
    failed: bool,
}

impl EntryStream<'_> {
    fn next_line(&mut self) -> Result<bool, std::io::Error> {
        self.line.clear();
        Ok(self.lines.read_line(&mut self.line)? > 0)
    }

    fn next_entry(&mut self) -> Result<Option<Entry>, std::io::Error> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        if !self.started {
            self.started = true;
            if !self.next_line()? {
                return Err(invalid("empty manifest".into()));
            }
        }
        loop {
            if !self.next_line()? {
                return Ok(None);
            }
            let text = self.line.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                continue;
            }
            let e: Entry = serde_json::from_str(text)?;
            check_path(&e.path).map_err(invalid)?;
            match &mut self.last {
                Some(last) if last.as_str() >= e.path.as_str() => {
                    return Err(invalid(format!(
                        "entries are not in path order: {:?} after {last:?}",
                        e.path
                    )));
                }
                Some(last) => {
                    last.clear();
                    last.push_str(&e.path);
                }
                None => self.last = Some(e.path.clone()),
            }
            return Ok(Some(e));
        }
    }
}

impl Iterator for EntryStream<'_> {
    type Item = Result<Entry, std::io::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.next_entry();
        self.failed = r.is_err();
        r.transpose()
    }
}

/// Reads only the header line of a (possibly truncated) manifest.
pub fn decode_header<H: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<H, std::io::Error> {
    let mut line = Vec::new();
    let mut dec = GzDecoder::new(bytes);
    let mut buf = [0u8; 4096];
    loop {
        let n = match dec.read(&mut buf) {
            Ok(n) => n,
            // A ranged read ends mid-stream: whatever decoded so far is usable.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(i) = line.iter().position(|&b| b == b'\n') {
            line.truncate(i);
            break;
        }
    }
    Ok(serde_json::from_slice(&line)?)
}

/// A relative path is safe to join under a directory: no `..`, no `.`, no empty parts.
pub fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.contains('\0') {
        return Err(format!("unsafe path in manifest: {p:?}"));
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("unsafe path in manifest: {p:?}"));
    }
    Ok(())
}

/// A new snapshot id for a run that starts at `t`: sortable, e.g. `20261129T070000.123Z`.
pub fn snapshot_id(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// The time a snapshot id stands for.
pub fn parse_snapshot_id(id: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%S%.3fZ")
        .ok()
        .map(|n| n.and_utc())
}

/// Where everything lives in the bucket, under `BACKUP_PREFIX`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub prefix: String,
}

impl Layout {
    /// The object holding a file's content: `<prefix>files/<path>`.
    pub fn file_key(&self, path: &str) -> String {
        format!("{}files/{path}", self.prefix)
    }
    /// Prefix under which manifests are listed.
    pub fn snapshots_prefix(&self) -> String {
        format!("{}snapshots/", self.prefix)
    }
    /// A snapshot's manifest: `<prefix>snapshots/<id>.jsonl.gz`.
    pub fn manifest_key(&self, id: &str) -> String {
        format!("{}snapshots/{id}.jsonl.gz", self.prefix)
    }
    /// The snapshot id of a manifest key, if it is one.
    pub fn id_of_manifest_key(&self, key: &str) -> Option<String> {
        key.strip_prefix(&self.snapshots_prefix())?
            .strip_suffix(".jsonl.gz")
            .filter(|id| parse_snapshot_id(id).is_some())
            .map(str::to_string)
    }
    /// The pointer to the newest complete snapshot.
    pub fn latest_key(&self) -> String {
        format!("{}latest.json", self.prefix)
    }
    /// The progress of an unfinished run.
    pub fn checkpoint_key(&self) -> String {
        format!("{}checkpoint.jsonl.gz", self.prefix)
    }
    /// Prefix under which recovery points are listed.
    pub fn recovery_points_prefix(&self) -> String {
        format!("{}recovery-points/", self.prefix)
    }
    /// A complete recovery point: `<prefix>recovery-points/<id>.json`.
    pub fn recovery_point_key(&self, id: &str) -> String {
        format!("{}recovery-points/{id}.json", self.prefix)
    }
    /// The restore in place under way (one at a time).
    pub fn in_place_key(&self) -> String {
        format!("{}recovery-points/in-place.json", self.prefix)
    }
    /// The recovery point being taken (one at a time).
    pub fn pending_point_key(&self) -> String {
        format!("{}recovery-points/pending.json", self.prefix)
    }
    /// The lease of the run that may write (one at a time).
    pub fn lease_key(&self) -> String {
        format!("{}lease.json", self.prefix)
    }
}

/// An entry for tests: 3 bytes, mtime 10, mode 644, hash `x`, version `v`; a symlink points
/// to `t`.
#[cfg(test)]
pub(crate) fn test_entry(path: &str, kind: Kind) -> Entry {
    Entry {
        path: path.into(),
        kind,
        target: (kind == Kind::Symlink).then(|| "t".to_string()),
        size: 3,
        mtime_ns: 10,
        mode: 0o644,
        uid: 0,
        gid: 0,
        ino: 0,
        sha256: Some("x".into()),
        version_id: Some("v".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            target: None,
            size: 3,
            mtime_ns: 1_700_000_000_123_456_789,
            mode: 0o644,
            uid: 33,
            gid: 33,
            ino: 7,
            sha256: Some("ab".into()),
            version_id: Some("v1".into()),
        }
    }

    #[test]
    fn roundtrip_and_header_only() {
        let t = DateTime::from_timestamp(1_800_000_000, 5_000_000).unwrap();
        let h = Header {
            format: FORMAT.into(),
            snapshot_id: snapshot_id(t),
            created_at: t,
            completed_at: t,
            source_dir: "/mnt/wiki".into(),
            files: 1,
            dirs: 0,
            symlinks: 0,
            bytes: 3,
            exclude: vec![],
            previous: None,
        };
        let entries: Vec<Entry> = (0..2000).map(|i| entry(&format!("a/ab/{i}.png"))).collect();
        let bytes = encode(&h, &entries).unwrap();
        let (h2, e2): (Header, _) = decode(&bytes).unwrap();
        assert_eq!(h2, h);
        assert_eq!(e2, entries);
        let only: Header = decode_header(&bytes[..200.min(bytes.len())]).unwrap();
        assert_eq!(only, h);
    }

    #[test]
    fn entries_stream_in_path_order_and_refuse_any_other() {
        let h = serde_json::json!({"format": FORMAT});
        let entries: Vec<Entry> = (0..3000).map(|i| entry(&format!("a/{i:05}.png"))).collect();
        let bytes = encode(&h, &entries).unwrap();
        let streamed: Vec<Entry> = super::entries(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(streamed, entries);
        assert_eq!(super::entries(&encode(&h, &[]).unwrap()).count(), 0);
        for bad in [
            vec![entry("b"), entry("a")],
            vec![entry("a"), entry("a")],
            vec![entry("a"), entry("../x")],
        ] {
            let bytes = encode(&h, &bad).unwrap();
            let r: Result<Vec<Entry>, _> = super::entries(&bytes).collect();
            let e = r.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            // The stream ends at its first error.
            assert_eq!(super::entries(&bytes).filter(Result::is_err).count(), 1);
        }
        let truncated = &bytes[..bytes.len() / 2];
        assert!(super::entries(truncated).any(|r| r.is_err()));
        assert!(super::entries(b"").next().unwrap().is_err());
    }

    #[test]
    fn ids_sort_by_time_and_parse_back() {
        let a = DateTime::from_timestamp(1_800_000_000, 5_000_000).unwrap();
        let b = a + chrono::Duration::milliseconds(1);
        assert!(snapshot_id(a) < snapshot_id(b));
        assert_eq!(parse_snapshot_id(&snapshot_id(a)), Some(a));
        let l = Layout {
            prefix: "efs/".into(),
        };
        let k = l.manifest_key(&snapshot_id(a));
        assert_eq!(l.id_of_manifest_key(&k), Some(snapshot_id(a)));
        assert_eq!(l.id_of_manifest_key("efs/snapshots/junk.jsonl.gz"), None);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for p in ["", "/etc/passwd", "a/../b", "..", "a//b", "./a", "a/"] {
            assert!(check_path(p).is_err(), "{p}");
        }
        assert!(check_path("a/ab/Foo bar.png").is_ok());
    }
}
