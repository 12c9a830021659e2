//! Reads one file and stores it at `files/<path>`, hashing while streaming.
//!
//! The file is `lstat`ed before and after it is read; if size, mtime, ctime or inode moved,
//! or fewer/more bytes than expected were read, the upload is dropped (a multipart upload is
//! aborted, never completed) and the read retried. Files up to one part are read in one go and
//! sent with `PutObject`; bigger ones are streamed as a multipart upload with part size
//! `max(8 MiB, size / 10,000)`, a few parts in flight, each part's memory counted against a
//! shared budget. Every request carries a SHA-256 checksum that S3 verifies. A stored version
//! is reused for a file that hashes the same only while it is the current version of
//! `files/<path>` (older ones expire). An object S3 refuses for good (a key too long, access
//! denied) is reported and skipped, never retried forever.

use std::num::NonZeroU32;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use shared::Error;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::manifest::Entry;
use crate::plan::Upload;
use crate::store::Store;
use crate::walk::entry_from_metadata;

/// The smallest part, and the largest file sent with one `PutObject`.
pub const MIN_PART: u64 = 8 * 1024 * 1024;
/// S3's limit on parts per upload.
pub const MAX_PARTS: u64 = 10_000;
/// Attempts at reading a file that keeps changing.
pub const ATTEMPTS: usize = 3;
/// S3's limit on the length of an object key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// S3 error codes that mean the object will not be accepted as it is, however often it is sent.
const REFUSED: &[&str] = &[
    "AccessDenied",
    "KeyTooLongError",
    "InvalidArgument",
    "EntityTooLarge",
];
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
const MIB: u64 = 1024 * 1024;

/// The part size for a file of `size` bytes: `max(8 MiB, size / 10,000)`, whole MiB.
pub fn part_size(size: u64) -> u64 {
    let p = MIN_PART.max(size.div_ceil(MAX_PARTS));
    p.div_ceil(MIB) * MIB
}

/// What uploading one file came to.
#[derive(Debug)]
pub enum Outcome {
    /// Stored (or found identical to the stored candidate): the manifest entry.
    Stored { entry: Entry, uploaded: bool },
    /// Changed on every attempt while being read.
    Unstable(String),
    /// Gone before it could be read.
    Vanished(String),
    /// Could not be read (permissions, I/O); the reason.
    Unreadable(String, String),
    /// Refused by S3 for good (key too long, access denied); the reason.
    Refused(String, String),
    /// Stopped for the deadline before it was stored.
    Cancelled(Upload),
}

/// What every upload shares.
pub struct Uploader {
    pub store: Store,
    pub root: PathBuf,
    /// Memory budget, in MiB, for file contents and parts being uploaded.
    pub memory: Arc<Semaphore>,
    pub memory_mib: u32,
    /// Optional cap on reads, in KiB per second.
    pub limiter: Option<DefaultDirectRateLimiter>,
    read_kib_per_s: u32,
    /// Set when the deadline is near: multipart uploads stop between parts.
    pub stop: Arc<AtomicBool>,
}

impl Uploader {
    /// An uploader with room for `concurrency` parts in memory and an optional read cap.
    pub fn new(
        store: Store,
        root: PathBuf,
        concurrency: usize,
        read_mib_per_s: Option<u32>,
    ) -> Uploader {
        let memory_mib = (concurrency as u64 * (MIN_PART / MIB)).min(u32::MAX as u64) as u32;
        let limiter = read_mib_per_s.and_then(|m| {
            NonZeroU32::new(m.saturating_mul(1024))
                .map(|kib| RateLimiter::direct(Quota::per_second(kib)))
        });
        Uploader {
            store,
            root,
            memory: Arc::new(Semaphore::new(memory_mib as usize)),
            memory_mib,
            limiter,
            read_kib_per_s: read_mib_per_s.unwrap_or(0).saturating_mul(1024),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Waits until `bytes` may be read under the read cap; `false` when stopped meanwhile.
    async fn throttle(&self, bytes: u64) -> bool {
        let Some(l) = &self.limiter else {
            return !self.stop.load(Ordering::Relaxed);
        };
        let mut kib = bytes.div_ceil(1024).max(1);
        // Never ask for more than one second's budget at once.
        let bite = u64::from(self.read_kib_per_s.max(1));
        while kib > 0 {
            let n = kib.min(bite) as u32;
            let cells = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
            loop {
                if self.stop.load(Ordering::Relaxed) {
                    return false;
                }
                tokio::select! {
                    _ = l.until_n_ready(cells) => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                }
            }
            kib -= u64::from(n);
        }
        true
    }

    /// Reads and stores one planned file, retrying while it changes under the read.
    pub async fn upload(self: Arc<Self>, up: Upload) -> Result<Outcome, Error> {
        let path = self.root.join(&up.entry.path);
        let key_len = self.store.layout.file_key(&up.entry.path).len();
        if key_len > MAX_KEY_BYTES {
            return Ok(Outcome::Refused(
                up.entry.path,
                format!("its object key is {key_len} bytes; S3 takes at most {MAX_KEY_BYTES}"),
            ));
        }
        for attempt in 1..=ATTEMPTS {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(Outcome::Cancelled(up));
            }
            let before = match tokio::fs::symlink_metadata(&path).await {
                Ok(md) if md.is_file() => md,
                Ok(_) => return Ok(Outcome::Vanished(up.entry.path.clone())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Outcome::Vanished(up.entry.path.clone()));
                }
                Err(e) => return Ok(Outcome::Unreadable(up.entry.path.clone(), e.to_string())),
            };
            let res = if before.size() <= MIN_PART {
                self.clone().put_small(&up, &path, &before).await?
            } else {
                self.clone().put_multipart(&up, &path, &before).await?
            };
            match res {
                Attempt::Done(o) => return Ok(*o),
                Attempt::Changed => {
                    tracing::info!(path = %up.entry.path, attempt, "file changed while being read");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt as u64))
                        .await;
                }
                Attempt::Cancelled => return Ok(Outcome::Cancelled(up)),
            }
        }
        Ok(Outcome::Unstable(up.entry.path))
    }

    async fn put_small(
        self: Arc<Self>,
        up: &Upload,
        path: &Path,
        before: &std::fs::Metadata,
    ) -> Result<Attempt, Error> {
        let mib = (before.size().div_ceil(MIB) as u32).clamp(1, self.memory_mib);
        let _permit = self.memory.acquire_many(mib).await.map_err(closed)?;
        if !self.throttle(before.size()).await {
            return Ok(Attempt::Cancelled);
        }
        let p = path.to_path_buf();
        let size = before.size();
        let read = tokio::task::spawn_blocking(move || read_small(&p, size))
            .await
            .map_err(|e| Error::Partial(format!("read task failed: {e}")))?;
        let (bytes, after) = match read {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Attempt::Done(Box::new(Outcome::Vanished(
                    up.entry.path.clone(),
                ))));
            }
            Err(e) => {
                return Ok(Attempt::Done(Box::new(Outcome::Unreadable(
                    up.entry.path.clone(),
                    e.to_string(),
                ))));
            }
        };
        if changed(before, &after, bytes.len() as u64) || relinked(path, before).await {
            return Ok(Attempt::Changed);
        }
        let digest = Sha256::digest(&bytes);
        let sha_hex = hex::encode(digest);
        let mut entry = entry_from_metadata(up.entry.path.clone(), before, None);
        let key = self.store.layout.file_key(&up.entry.path);
        if let Some(c) = &up.candidate
            && c.sha256.as_deref() == Some(sha_hex.as_str())
            && c.version_id.is_some()
            && self.store.current_version(&key).await? == c.version_id
        {
            entry.sha256 = c.sha256.clone();
            entry.version_id = c.version_id.clone();
            return Ok(Attempt::Done(Box::new(Outcome::Stored {
                entry,
                uploaded: false,
            })));
        }
        let out = self
            .store
            .s3
            .put_object()
            .bucket(&self.store.bucket)
            .key(&key)
            .checksum_sha256(base64::engine::general_purpose::STANDARD.encode(digest))
            .body(ByteStream::from(bytes))
            // S3 verifies the SHA-256 checksum header: signing the payload too would hash it twice.
            .customize()
            .disable_payload_signing()
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => return refused_or_error(&up.entry.path, "PutObject", e),
        };
        entry.sha256 = Some(sha_hex);
        entry.version_id = Some(version_or_null(out.version_id()));
        Ok(Attempt::Done(Box::new(Outcome::Stored {
            entry,
            uploaded: true,
        })))
    }

    async fn put_multipart(
        self: Arc<Self>,
        up: &Upload,
        path: &Path,
        before: &std::fs::Metadata,
    ) -> Result<Attempt, Error> {
        let mut file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Attempt::Done(Box::new(Outcome::Vanished(
                    up.entry.path.clone(),
                ))));
            }
            Err(e) => {
                return Ok(Attempt::Done(Box::new(Outcome::Unreadable(
                    up.entry.path.clone(),
                    e.to_string(),
                ))));
            }
        };
        let key = self.store.layout.file_key(&up.entry.path);
        let size = before.size();
        let part = part_size(size);
        let created = self
            .store
            .s3
            .create_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await;
        let created = match created {
            Ok(c) => c,
            Err(e) => return refused_or_error(&up.entry.path, "CreateMultipartUpload", e),
        };
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let mpu = Mpu {
            store: self.store.clone(),
            key: key.clone(),
            upload_id: upload_id.clone(),
        };
        let result = self.clone().stream_parts(&mpu, &mut file, part).await;
        let (sha, read, parts) = match result {
            Ok(Streamed::Done { sha, read, parts }) => (sha, read, parts),
            Ok(Streamed::Cancelled) => {
                mpu.abort().await;
                return Ok(Attempt::Cancelled);
            }
            Ok(Streamed::ReadError(e)) => {
                mpu.abort().await;
                return Ok(Attempt::Done(Box::new(Outcome::Unreadable(
                    up.entry.path.clone(),
                    e,
                ))));
            }
            Err(e) => {
                mpu.abort().await;
                return Err(e);
            }
        };
        let after = match file.metadata().await {
            Ok(m) => m,
            Err(_) => {
                mpu.abort().await;
                return Ok(Attempt::Changed);
            }
        };
        if changed(before, &after, read) || relinked(path, before).await {
            mpu.abort().await;
            return Ok(Attempt::Changed);
        }
        let done = self
            .store
            .s3
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        let done = match done {
            Ok(d) => d,
            Err(e) => {
                mpu.abort().await;
                return Err(Error::aws("S3", "CompleteMultipartUpload", e));
            }
        };
        let mut entry = entry_from_metadata(up.entry.path.clone(), before, None);
        entry.sha256 = Some(sha);
        entry.version_id = Some(version_or_null(done.version_id()));
        Ok(Attempt::Done(Box::new(Outcome::Stored {
            entry,
            uploaded: true,
        })))
    }

    async fn stream_parts(
        self: Arc<Self>,
        mpu: &Mpu,
        file: &mut tokio::fs::File,
        part: u64,
    ) -> Result<Streamed, Error> {
        let mut whole = Sha256::new();
        let mut read_total = 0u64;
        let mut in_flight: JoinSet<Result<CompletedPart, Error>> = JoinSet::new();
        let mut parts = Vec::new();
        let part_mib = (part / MIB).min(u64::from(self.memory_mib)) as u32;
        for number in 1..=(MAX_PARTS as i32) {
            if self.stop.load(Ordering::Relaxed) {
                in_flight.shutdown().await;
                return Ok(Streamed::Cancelled);
            }
            while in_flight.len() >= PARTS_IN_FLIGHT {
                if let Some(r) = in_flight.join_next().await {
                    parts.push(r.map_err(|e| Error::Partial(format!("part task failed: {e}")))??);
                }
            }
            let permit = self
                .memory
                .clone()
                .acquire_many_owned(part_mib.max(1))
                .await
                .map_err(closed)?;
            let mut buf = Vec::with_capacity(part as usize);
            while (buf.len() as u64) < part {
                let want = (part - buf.len() as u64).min(MIB) as usize;
                if !self.throttle(want as u64).await {
                    in_flight.shutdown().await;
                    return Ok(Streamed::Cancelled);
                }
                let start = buf.len();
                buf.resize(start + want, 0);
                match file.read(&mut buf[start..]).await {
                    Ok(0) => {
                        buf.truncate(start);
                        break;
                    }
                    Ok(n) => buf.truncate(start + n),
                    Err(e) => {
                        in_flight.shutdown().await;
                        return Ok(Streamed::ReadError(e.to_string()));
                    }
                }
            }
            if buf.is_empty() && number > 1 {
                break;
            }
            whole.update(&buf);
            read_total += buf.len() as u64;
            let last = (buf.len() as u64) < part;
            let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&buf));
            let s3 = mpu.store.s3.clone();
            let (bucket, key, id) = (
                mpu.store.bucket.clone(),
                mpu.key.clone(),
                mpu.upload_id.clone(),
            );
            in_flight.spawn(async move {
                let _permit = permit;
                let out = s3
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(number)
                    .checksum_sha256(&checksum)
                    .body(ByteStream::from(buf))
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|e| Error::aws("S3", "UploadPart", e))?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .checksum_sha256(out.checksum_sha256().unwrap_or(&checksum))
                    .build())
            });
            if last {
                break;
            }
        }
        while let Some(r) = in_flight.join_next().await {
            parts.push(r.map_err(|e| Error::Partial(format!("part task failed: {e}")))??);
        }
        parts.sort_by_key(|p| p.part_number());
        Ok(Streamed::Done {
            sha: hex::encode(whole.finalize()),
            read: read_total,
            parts,
        })
    }
}

enum Attempt {
    Done(Box<Outcome>),
    Changed,
    Cancelled,
}

enum Streamed {
    Done {
        sha: String,
        read: u64,
        parts: Vec<CompletedPart>,
    },
    Cancelled,
    ReadError(String),
}

struct Mpu {
    store: Store,
    key: String,
    upload_id: String,
}

impl Mpu {
    /// Best effort: the bucket's lifecycle rule aborts what this misses after a day.
    async fn abort(&self) {
        let r = self
            .store
            .s3
            .abort_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
        if let Err(e) = r {
            let e = Error::aws("S3", "AbortMultipartUpload", e);
            tracing::warn!(key = %self.key, error = %e, "could not abort multipart upload");
        }
    }
}

/// A refusal S3 will repeat for this object becomes [`Outcome::Refused`]; anything else
/// (throttling, outages, credentials) stops the run.
fn refused_or_error<E, R>(
    path: &str,
    operation: &'static str,
    e: SdkError<E, R>,
) -> Result<Attempt, Error>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let refused = e.code().is_some_and(|c| REFUSED.contains(&c));
    let err = Error::aws("S3", operation, e);
    if refused {
        Ok(Attempt::Done(Box::new(Outcome::Refused(
            path.to_string(),
            err.to_string(),
        ))))
    } else {
        Err(err)
    }
}

/// Versioning is checked before a run; an unversioned answer is recorded as S3's "null" id.
fn version_or_null(v: Option<&str>) -> String {
    v.unwrap_or("null").to_string()
}

fn closed(_: tokio::sync::AcquireError) -> Error {
    Error::Partial("upload budget closed".into())
}

/// A file's content, at most `size + 1` bytes (one more tells a grown file without reading
/// all of it), and its metadata after the read.
pub fn read_small(path: &Path, size: u64) -> std::io::Result<(Vec<u8>, std::fs::Metadata)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(size as usize + 1);
    (&mut f).take(size + 1).read_to_end(&mut buf)?;
    let after = f.metadata()?;
    Ok((buf, after))
}

/// Whether a file moved between two stats (or the bytes read disagree with its size).
pub fn changed(before: &std::fs::Metadata, after: &std::fs::Metadata, read: u64) -> bool {
    before.size() != after.size()
        || read != before.size()
        || before.mtime() != after.mtime()
        || before.mtime_nsec() != after.mtime_nsec()
        || before.ctime() != after.ctime()
        || before.ctime_nsec() != after.ctime_nsec()
        || before.ino() != after.ino()
}

/// Whether the path now names another file than the one read (replaced by a rename).
async fn relinked(path: &Path, before: &std::fs::Metadata) -> bool {
    match tokio::fs::symlink_metadata(path).await {
        Ok(now) => now.ino() != before.ino() || now.dev() != before.dev(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_grown_since_its_stat_is_read_one_byte_past_its_size() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, vec![1u8; 1000]).unwrap();
        let (buf, after) = read_small(&p, 10).unwrap();
        assert_eq!(buf.len(), 11);
        assert_eq!(after.size(), 1000);
        let (buf, _) = read_small(&p, 1000).unwrap();
        assert_eq!(buf.len(), 1000);
    }

    #[test]
    fn part_size_is_at_least_8_mib_and_fits_10000_parts() {
        assert_eq!(part_size(0), MIN_PART);
        assert_eq!(part_size(9 * MIB), MIN_PART);
        assert_eq!(part_size(80_000 * MIB), 8 * MIB);
        assert_eq!(part_size(80_001 * MIB), 9 * MIB);
        let five_tib = 5 * 1024 * 1024 * MIB;
        assert!(part_size(five_tib) * MAX_PARTS >= five_tib);
        assert_eq!(part_size(five_tib) % MIB, 0);
    }
}
